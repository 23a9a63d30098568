//! Kubernetes Quantity: the served-value formatter round trip through the one parser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prescale::quantity::{self, Quantity};

fuzz_target!(|data: &[u8]| {
    // The first 8 bytes are a value to format; the whole input is also a string to parse.
    if let Some(bytes) = data.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
        let v = f64::from_le_bytes(bytes);
        match quantity::format(v) {
            Ok(text) => match quantity::parse_f64(&text) {
                // Milli-unit rounding, plus the relative error of printing and reading back.
                Ok(back) => {
                    let tol = 0.0005 + v.abs() * 1e-12;
                    assert!((back - v).abs() <= tol, "{v:e} -> {text:?} -> {back:e}");
                }
                // Nano-units in an i128 hold about ±10^29: beyond, an overflow, never a
                // wrong number; within, every formatted value parses.
                Err(e) => assert!(
                    v.abs() > 1e28 && matches!(e, quantity::Error::Overflow { .. }),
                    "{v:e} formats as {text:?}, which does not parse: {e}"
                ),
            },
            Err(_) => assert!(!v.is_finite(), "finite {v:e} has no Quantity form"),
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(q) = Quantity::parse(text) {
            let _ = (q.milli_ceil(), q.units_ceil(), q.as_f64());
        }
        let _ = quantity::parse_millicores(text);
        let _ = quantity::parse_units(text);
    }
});
