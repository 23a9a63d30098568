//! Kubernetes Quantity: the served-value formatter round trip, and both parsers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prescale::api::quantity as served;
use prescale::quantity::{self, Quantity};

fuzz_target!(|data: &[u8]| {
    // The first 8 bytes are a value to format; the whole input is also a string to parse.
    if let Some(bytes) = data.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
        let v = f64::from_le_bytes(bytes);
        match served::format(v) {
            Ok(text) => {
                let back = served::parse(&text).unwrap_or_else(|e| {
                    panic!("{v:e} formats as {text:?}, which does not parse: {e}")
                });
                // Milli-unit rounding, plus the relative error of printing and reading back.
                let tol = 0.0005 + v.abs() * 1e-12;
                assert!((back - v).abs() <= tol, "{v:e} -> {text:?} -> {back:e}");
                // The exact parser agrees, within its range (±10^29, nano-units).
                if v.abs() < 1e18 {
                    let q = Quantity::parse(&text).unwrap_or_else(|e| {
                        panic!("{v:e} formats as {text:?}, rejected by Quantity: {e}")
                    });
                    assert!((q.as_f64() - v).abs() <= tol, "{v:e} -> {text:?} -> {q:?}");
                }
            }
            Err(_) => assert!(!v.is_finite(), "finite {v:e} has no Quantity form"),
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = served::parse(text);
        if let Ok(q) = Quantity::parse(text) {
            let _ = (q.milli_ceil(), q.units_ceil(), q.as_f64());
        }
        let _ = quantity::parse_millicores(text);
        let _ = quantity::parse_units(text);
    }
});
