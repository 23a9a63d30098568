//! OpenMetrics / Prometheus text exposition: read, then put every series on a grid.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prescale::series::{read_openmetrics, ResampleOptions};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(all) = read_openmetrics(text) {
        for raw in all {
            let _ = raw.resample(&ResampleOptions::default());
        }
    }
});
