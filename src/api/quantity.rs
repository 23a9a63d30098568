//! Kubernetes `Quantity` strings for served values.
//!
//! The HPA reads external metric values with `MilliValue()`, so anything finer than
//! a thousandth is lost on its side anyway. Integers are written plain (`"12"`),
//! everything else in milli-units (`"850m"`), rounded to the nearest milli-unit.
//! Values beyond what an `i64` of milli-units holds (|v| ≥ 2^53, where every `f64`
//! is already an integer) are written as their exact integer digits, which is still
//! a valid Quantity.

/// Why a value cannot be written or a string cannot be read as a Quantity.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// NaN and infinities have no Quantity form.
    #[error("value {0} is not finite and has no Quantity form")]
    NotFinite(f64),
    /// The string is not a Quantity this module understands.
    #[error("{0:?} is not a quantity: expected a decimal number with an optional suffix (m, k, M, G, T, P, E, Ki..Ei, n, u) or exponent")]
    Parse(String),
}

/// Result with this module's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Above this magnitude every `f64` is an integer and milli-units overflow `i64`.
const EXACT_INTEGER_LIMIT: f64 = 9_007_199_254_740_992.0; // 2^53

/// Formats `value` as a Kubernetes Quantity string.
///
/// # Errors
/// [`Error::NotFinite`] for NaN and infinities.
pub fn format(value: f64) -> Result<String> {
    if !value.is_finite() {
        return Err(Error::NotFinite(value));
    }
    match milli(value) {
        // Exact: `{:.0}` prints the integer the f64 holds, digit for digit.
        None => Ok(format!("{value:.0}")),
        Some(milli) if milli % 1000 == 0 => Ok(format!("{}", milli / 1000)),
        Some(milli) => Ok(format!("{milli}m")),
    }
}

/// The number the Quantity [`format`] writes for `value` denotes, as an `f64`:
/// `value` rounded to the nearest milli-unit (the nearest `f64` to it that still
/// writes that quantity). What a
/// client that reads values as numbers (the KEDA scaler's `metricValueFloat`)
/// is given, so that it gets what the Quantity says.
///
/// # Errors
/// [`Error::NotFinite`] for NaN and infinities.
pub fn rounded(value: f64) -> Result<f64> {
    if !value.is_finite() {
        return Err(Error::NotFinite(value));
    }
    let Some(m) = milli(value) else {
        return Ok(value);
    };
    // The division is correctly rounded: 407000 / 1000 is 407 exactly. Past 2^53
    // milli-units (|value| above about 9e12) the nearest f64 to the quantity can
    // fall on a neighbouring milli-unit; then `value` itself, which writes exactly
    // that quantity, is the answer.
    let r = m as f64 / 1000.0;
    Ok(if milli(r) == Some(m) { r } else { value })
}

/// `value` in milli-units, rounded to the nearest; `None` at or above 2^53, where
/// `value` is an integer already. `value` is finite.
fn milli(value: f64) -> Option<i128> {
    if value.abs() >= EXACT_INTEGER_LIMIT {
        return None;
    }
    // Split off the integer part so that large values keep every digit: the
    // fraction is exact in f64 and only it is scaled. i128 holds 2^53 * 1000.
    let whole = value.trunc();
    let frac_milli = ((value - whole) * 1000.0).round(); // in [-1000, 1000]
    Some(whole as i128 * 1000 + frac_milli as i128)
}

/// Reads a Quantity string back into an `f64` (for tests and clients).
///
/// Understands decimal numbers with an optional decimal-SI suffix (`n`, `u`, `m`,
/// `k`, `M`, `G`, `T`, `P`, `E`), binary-SI suffix (`Ki` … `Ei`) or decimal
/// exponent (`1e3`, `5E-3`).
///
/// # Errors
/// [`Error::Parse`] when the string is not of that form.
pub fn parse(text: &str) -> Result<f64> {
    let err = || Error::Parse(text.to_string());
    let number_end = text
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || c == '.' || ((c == '-' || c == '+') && i == 0)))
        .map_or(text.len(), |(i, _)| i);
    let (number, suffix) = text.split_at(number_end);
    if number.is_empty() || number == "-" || number == "+" || number == "." {
        return Err(err());
    }
    let base: f64 = number.parse().map_err(|_| err())?;
    let factor = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        s if s.starts_with(['e', 'E']) => {
            let exp: i32 = s[1..].parse().map_err(|_| err())?;
            10f64.powi(exp)
        }
        _ => return Err(err()),
    };
    Ok(base * factor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn integers_are_plain() {
        assert_eq!(format(12.0).unwrap(), "12");
        assert_eq!(format(0.0).unwrap(), "0");
        assert_eq!(format(-0.0).unwrap(), "0");
        assert_eq!(format(-7.0).unwrap(), "-7");
        assert_eq!(format(1_000_000.0).unwrap(), "1000000");
    }

    #[test]
    fn fractions_are_milli() {
        assert_eq!(format(0.85).unwrap(), "850m");
        assert_eq!(format(12.5).unwrap(), "12500m");
        assert_eq!(format(-0.85).unwrap(), "-850m");
        assert_eq!(format(0.29).unwrap(), "290m");
        assert_eq!(format(1.0006).unwrap(), "1001m");
        assert_eq!(format(0.0004).unwrap(), "0");
        // Float noise that rounds to a whole number stays plain.
        assert_eq!(format(2.9999999).unwrap(), "3");
    }

    #[test]
    fn huge_values_do_not_overflow() {
        assert_eq!(format(1e20).unwrap(), "100000000000000000000");
        assert_eq!(format(-1e20).unwrap(), "-100000000000000000000");
        assert_eq!(format(f64::MAX).unwrap().len(), 309);
        // Just below the exact-integer limit the milli path still fits an i64.
        assert_eq!(format(9_007_199_254_740_991.0).unwrap(), "9007199254740991");
        assert_eq!(format(4.5e15 + 0.5).unwrap(), "4500000000000000500m");
    }

    #[test]
    fn non_finite_is_an_error() {
        assert!(matches!(format(f64::NAN), Err(Error::NotFinite(_))));
        assert!(matches!(format(f64::INFINITY), Err(Error::NotFinite(_))));
    }

    #[test]
    fn rounded_is_the_number_the_quantity_writes() {
        assert_eq!(rounded(407.0).unwrap(), 407.0);
        assert_eq!(rounded(0.85).unwrap(), 0.85);
        assert_eq!(rounded(1.0006).unwrap(), 1.001);
        assert_eq!(rounded(0.0004).unwrap(), 0.0);
        assert_eq!(rounded(1e20).unwrap(), 1e20);
        // Past 2^53 milli-units: still the same quantity (proptest found this one).
        let big = 15_193_187_578_496.613;
        assert_eq!(format(rounded(big).unwrap()).unwrap(), format(big).unwrap());
        assert!(matches!(rounded(f64::NAN), Err(Error::NotFinite(_))));
    }

    #[test]
    fn parse_reads_suffixes() {
        assert_eq!(parse("850m").unwrap(), 0.85);
        assert_eq!(parse("12").unwrap(), 12.0);
        assert_eq!(parse("-3").unwrap(), -3.0);
        assert_eq!(parse("2k").unwrap(), 2000.0);
        assert_eq!(parse("1Ki").unwrap(), 1024.0);
        assert_eq!(parse("5e-3").unwrap(), 0.005);
        assert!(parse("").is_err());
        assert!(parse("m").is_err());
        assert!(parse("1x").is_err());
        assert!(parse("1e").is_err());
    }

    proptest! {
        #[test]
        fn round_trip_within_half_a_milli(v in -1e12f64..1e12) {
            let text = format(v).unwrap();
            let back = parse(&text).unwrap();
            prop_assert!((back - v).abs() <= 0.0005 + v.abs() * 1e-12, "{v} -> {text} -> {back}");
        }

        #[test]
        fn rounded_writes_the_same_quantity(v in proptest::num::f64::NORMAL | proptest::num::f64::ZERO) {
            prop_assert_eq!(format(rounded(v).unwrap()).unwrap(), format(v).unwrap());
        }

        #[test]
        fn round_trip_any_finite(v in proptest::num::f64::NORMAL | proptest::num::f64::ZERO) {
            let text = format(v).unwrap();
            let back = parse(&text).unwrap();
            prop_assert!((back - v).abs() <= 0.0005 + v.abs() * 1e-9, "{v} -> {text} -> {back}");
        }
    }
}
