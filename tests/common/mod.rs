//! Helpers shared by the integration tests.

#![allow(dead_code)] // each test binary uses a different subset

pub mod json;
pub mod peers;
pub mod prometheus;

use std::process::Child;

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
