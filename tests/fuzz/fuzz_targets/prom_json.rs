//! Prometheus range-query JSON (`/api/v1/query_range` bodies): read, then put on a grid.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prescale::series::{read_prom_json, ResampleOptions};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(all) = read_prom_json(text) {
        for raw in all {
            let _ = raw.resample(&ResampleOptions::default());
        }
    }
});
