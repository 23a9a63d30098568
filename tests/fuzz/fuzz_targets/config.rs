//! The YAML config file: parse and validate.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prescale::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = Config::from_yaml(text);
});
