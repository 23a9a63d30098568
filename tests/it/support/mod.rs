//! Helpers shared by the integration tests (and, included by path, by the benches
//! that start real peers).

#![allow(dead_code)] // each bench includes it for a part

pub mod expander;
pub mod json;
pub mod peers;
pub mod pki;
pub mod prometheus;
pub mod proxy;

use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};

use prescale::series::Labels;

/// A label set from `(name, value)` pairs.
pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A child process (`prescale serve`, a peer) killed and waited for on drop.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Held by the tests that load the machine for minutes or whose bounds depend on
/// timing (the end-to-end tier, RabbitMQ, the fault and freshness walks, whole-trace
/// frontier sweeps), so that no two of them run at once. The one test binary runs two
/// tests at a time; each of these ran alone in a binary of its own before, and their
/// bounds were set there. Released on drop, also when the test panics.
pub struct Heavy(());

static HEAVY_TAKEN: AtomicBool = AtomicBool::new(false);

/// Waits until no other [`Heavy`] test runs.
pub fn heavy() -> Heavy {
    while HEAVY_TAKEN
        .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Heavy(())
}

impl Drop for Heavy {
    fn drop(&mut self) {
        HEAVY_TAKEN.store(false, Ordering::Release);
    }
}
