//! CSV recordings (`record` output, `backtest`/`forecast` input): read, then put on a grid.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prescale::series::{read_csv, ResampleOptions};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(raw) = read_csv(text) {
        let _ = raw.resample(&ResampleOptions::default());
    }
});
