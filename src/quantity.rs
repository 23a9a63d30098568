//! Kubernetes resource quantities ("3800m", "15Gi", "1e3") as exact numbers.
//!
//! The grammar is Kubernetes' own: an optionally signed decimal number (digits with
//! at most one point) followed by a binary-SI suffix (`Ki` … `Ei`), a decimal-SI
//! suffix (`n`, `u`, `m`, none, `k`, `M`, `G`, `T`, `P`, `E`) or a decimal exponent
//! (`e3`, `E-2`). Values are held exactly in nano-units, so conversions to
//! millicores or bytes round up the way Kubernetes does (`MilliValue`, `Value`).
//!
//! Served values go the other way: [`format`] writes an `f64` as the Quantity the
//! HPA reads, [`rounded`] is the number that Quantity denotes.

/// Why a string is not a quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The string is empty.
    #[error("empty quantity")]
    Empty,
    /// The number part is missing or malformed.
    #[error("{input:?}: expected a number like 3800, 1.5 or .5 before the suffix")]
    Number {
        /// The whole input.
        input: String,
    },
    /// The suffix is not one Kubernetes knows.
    #[error("{input:?}: unknown suffix {suffix:?} (expected Ki..Ei, n, u, m, k, M, G, T, P, E or an exponent like e3)")]
    Suffix {
        /// The whole input.
        input: String,
        /// The part after the number.
        suffix: String,
    },
    /// The value does not fit the exact representation.
    #[error("{input:?}: out of range")]
    Overflow {
        /// The whole input.
        input: String,
    },
    /// A negative value where only non-negative ones make sense.
    #[error("{input:?}: must not be negative")]
    Negative {
        /// The whole input.
        input: String,
    },
}

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A parsed quantity, exact to the nano-unit (finer digits round up, away from zero
/// for positive values, as Kubernetes rounds on parse).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Quantity {
    nanos: i128,
}

const NANOS_PER_UNIT: i128 = 1_000_000_000;
const NANOS_PER_MILLI: i128 = 1_000_000;
/// More digits than this cannot be held exactly (and no real quantity has them).
const MAX_DIGITS: usize = 30;

impl Quantity {
    /// Parses a Kubernetes quantity string.
    ///
    /// # Errors
    /// An empty string, a malformed number, an unknown suffix, or a value beyond
    /// ±10^29.
    pub fn parse(input: &str) -> Result<Self> {
        let s = input.trim();
        if s.is_empty() {
            return Err(Error::Empty);
        }
        let num_err = || Error::Number {
            input: input.to_string(),
        };
        let overflow = || Error::Overflow {
            input: input.to_string(),
        };

        let (negative, rest) = match s.as_bytes()[0] {
            b'-' => (true, &s[1..]),
            b'+' => (false, &s[1..]),
            _ => (false, s),
        };
        let num_len = rest
            .bytes()
            .position(|b| !(b.is_ascii_digit() || b == b'.'))
            .unwrap_or(rest.len());
        let (number, suffix) = rest.split_at(num_len);
        let (int_part, frac_part) = match number.split_once('.') {
            Some((i, f)) => (i, f),
            None => (number, ""),
        };
        if (int_part.is_empty() && frac_part.is_empty()) || frac_part.contains('.') {
            return Err(num_err());
        }
        let digits = format!("{int_part}{frac_part}");
        let digits = digits.trim_start_matches('0');
        if digits.len() > MAX_DIGITS {
            return Err(overflow());
        }
        let mantissa: i128 = if digits.is_empty() {
            0
        } else {
            digits.parse().map_err(|_| num_err())?
        };

        let (pow2, pow10) = suffix_powers(suffix).ok_or_else(|| Error::Suffix {
            input: input.to_string(),
            suffix: suffix.to_string(),
        })?;
        // value = mantissa × 10^-frac × 2^pow2 × 10^pow10, in nanos × 10^9.
        let frac = i32::try_from(frac_part.len()).map_err(|_| overflow())?;
        let exp10 = 9 - frac + pow10;
        let scaled = mantissa
            .checked_mul(2i128.checked_pow(pow2).ok_or_else(overflow)?)
            .ok_or_else(overflow)?;
        let nanos = if exp10 >= 0 {
            let f = 10i128
                .checked_pow(u32::try_from(exp10).map_err(|_| overflow())?)
                .ok_or_else(overflow)?;
            scaled.checked_mul(f).ok_or_else(overflow)?
        } else {
            match 10i128.checked_pow(exp10.unsigned_abs()) {
                Some(d) => ceil_div(scaled, d),
                // Smaller than a nano-unit: rounds up to one unless zero.
                None => i128::from(scaled > 0),
            }
        };
        Ok(Self {
            nanos: if negative { -nanos } else { nanos },
        })
    }

    /// The value in milli-units, rounded up (Kubernetes' `MilliValue`): cpu millicores.
    pub fn milli_ceil(&self) -> i128 {
        ceil_div_signed(self.nanos, NANOS_PER_MILLI)
    }

    /// The value in whole units, rounded up (Kubernetes' `Value`): bytes, pods.
    pub fn units_ceil(&self) -> i128 {
        ceil_div_signed(self.nanos, NANOS_PER_UNIT)
    }

    /// The value as a float (for display and scoring only).
    pub fn as_f64(&self) -> f64 {
        self.nanos as f64 / NANOS_PER_UNIT as f64
    }
}

impl std::str::FromStr for Quantity {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

/// Parses `input` as cpu in millicores (rounded up).
///
/// # Errors
/// Not a quantity, negative, or beyond u64.
pub fn parse_millicores(input: &str) -> Result<u64> {
    non_negative(input, Quantity::parse(input)?.milli_ceil())
}

/// Parses `input` as a whole number of units (bytes, pods; rounded up).
///
/// # Errors
/// Not a quantity, negative, or beyond u64.
pub fn parse_units(input: &str) -> Result<u64> {
    non_negative(input, Quantity::parse(input)?.units_ceil())
}

fn non_negative(input: &str, v: i128) -> Result<u64> {
    if v < 0 {
        return Err(Error::Negative {
            input: input.to_string(),
        });
    }
    u64::try_from(v).map_err(|_| Error::Overflow {
        input: input.to_string(),
    })
}

/// (power of two, power of ten) of a suffix; `None` when unknown.
fn suffix_powers(suffix: &str) -> Option<(u32, i32)> {
    let p = match suffix {
        "" => (0, 0),
        "Ki" => (10, 0),
        "Mi" => (20, 0),
        "Gi" => (30, 0),
        "Ti" => (40, 0),
        "Pi" => (50, 0),
        "Ei" => (60, 0),
        "n" => (0, -9),
        "u" => (0, -6),
        "m" => (0, -3),
        "k" => (0, 3),
        "M" => (0, 6),
        "G" => (0, 9),
        "T" => (0, 12),
        "P" => (0, 15),
        "E" => (0, 18),
        _ => {
            let exp = suffix
                .strip_prefix('e')
                .or_else(|| suffix.strip_prefix('E'))?;
            let digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || digits.len() > 4
            {
                return None;
            }
            (0, exp.parse().ok()?)
        }
    };
    Some(p)
}

fn ceil_div(n: i128, d: i128) -> i128 {
    // n >= 0 here (the sign is applied afterwards).
    n / d + i128::from(n % d != 0)
}

fn ceil_div_signed(n: i128, d: i128) -> i128 {
    let q = n.div_euclid(d);
    if n.rem_euclid(d) != 0 {
        q + 1
    } else {
        q
    }
}

// ---------------------------------------------------------------------------
// Served values as Quantity strings
//
// The HPA reads external metric values with `MilliValue()`, so anything finer than
// a thousandth is lost on its side anyway. Integers are written plain (`"12"`),
// everything else in milli-units (`"850m"`), rounded to the nearest milli-unit.
// Values beyond what an `i64` of milli-units holds (|v| >= 2^53, where every `f64`
// is already an integer) are written as their exact integer digits, which is still
// a valid Quantity.

/// A served value that has no Quantity form.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[error("value {0} is not finite and has no Quantity form")]
pub struct NotFinite(pub f64);

/// Above this magnitude every `f64` is an integer and milli-units overflow `i64`.
const EXACT_INTEGER_LIMIT: f64 = 9_007_199_254_740_992.0; // 2^53

/// Formats `value` as a Kubernetes Quantity string.
///
/// # Errors
/// [`NotFinite`] for NaN and infinities.
pub fn format(value: f64) -> Result<String, NotFinite> {
    if !value.is_finite() {
        return Err(NotFinite(value));
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
/// [`NotFinite`] for NaN and infinities.
pub fn rounded(value: f64) -> Result<f64, NotFinite> {
    if !value.is_finite() {
        return Err(NotFinite(value));
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

/// Reads a Quantity string as an `f64` (what clients and tests compare served
/// values with): [`Quantity::parse`], then [`Quantity::as_f64`].
///
/// # Errors
/// As [`Quantity::parse`].
pub fn parse_f64(text: &str) -> Result<f64> {
    Quantity::parse(text).map(|q| q.as_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_usual_forms() {
        assert_eq!(parse_millicores("3800m").unwrap(), 3800);
        assert_eq!(parse_millicores("8").unwrap(), 8000);
        assert_eq!(parse_millicores("0.5").unwrap(), 500);
        assert_eq!(parse_millicores(".5").unwrap(), 500);
        assert_eq!(parse_millicores("1.").unwrap(), 1000);
        assert_eq!(parse_millicores("250000u").unwrap(), 250);
        assert_eq!(
            parse_millicores("100n").unwrap(),
            1,
            "rounds up to the next millicore"
        );
        assert_eq!(parse_units("15Gi").unwrap(), 15 << 30);
        assert_eq!(parse_units("1.5Gi").unwrap(), 3 << 29);
        assert_eq!(parse_units("64Ki").unwrap(), 65536);
        assert_eq!(parse_units("1Ei").unwrap(), 1 << 60);
        assert_eq!(parse_units("129M").unwrap(), 129_000_000);
        assert_eq!(parse_units("1e3").unwrap(), 1000);
        assert_eq!(parse_units("1E3").unwrap(), 1000);
        assert_eq!(parse_units("12e-1").unwrap(), 2, "1.2 rounds up");
        assert_eq!(
            parse_units("1E").unwrap(),
            1_000_000_000_000_000_000,
            "E alone is exa"
        );
        assert_eq!(parse_units("110").unwrap(), 110);
        assert_eq!(parse_units("+7k").unwrap(), 7000);
        assert_eq!(parse_units("0").unwrap(), 0);
        assert_eq!(parse_units("000.000").unwrap(), 0);
        assert_eq!(Quantity::parse("-1500m").unwrap().milli_ceil(), -1500);
        assert_eq!(Quantity::parse("-1.5").unwrap().units_ceil(), -1);
        assert!((Quantity::parse("2.5Gi").unwrap().as_f64() - 2.5 * 1024f64.powi(3)).abs() < 1e-3);
    }

    #[test]
    fn rejects_what_kubernetes_rejects() {
        assert_eq!(Quantity::parse(""), Err(Error::Empty));
        for bad in ["abc", "m", ".", "1.2.3", "--1", "Gi"] {
            assert!(
                matches!(Quantity::parse(bad), Err(Error::Number { .. })),
                "{bad}"
            );
        }
        for bad in ["1x", "1gi", "1KiB", "1e", "1e+", "1e3.5", "1 Gi", "1mm"] {
            assert!(
                matches!(Quantity::parse(bad), Err(Error::Suffix { .. })),
                "{bad}"
            );
        }
        assert!(matches!(
            Quantity::parse("1e999"),
            Err(Error::Overflow { .. })
        ));
        assert!(matches!(
            Quantity::parse("99999999999999999999999999999999"),
            Err(Error::Overflow { .. })
        ));
        assert!(matches!(parse_units("-1"), Err(Error::Negative { .. })));
        assert!(matches!(parse_units("100Ei"), Err(Error::Overflow { .. })));
        let e = Quantity::parse("3 cores").unwrap_err();
        assert!(e.to_string().contains("unknown suffix \" cores\""), "{e}");
    }

    #[test]
    fn tiny_exponents_round_up_instead_of_overflowing() {
        assert_eq!(Quantity::parse("1e-30").unwrap().milli_ceil(), 1);
        assert_eq!(Quantity::parse("0e-30").unwrap().milli_ceil(), 0);
    }

    proptest::proptest! {
        #[test]
        fn millicores_round_trip(m in 0u64..10_000_000) {
            proptest::prop_assert_eq!(parse_millicores(&format!("{m}m")).unwrap(), m);
            proptest::prop_assert_eq!(parse_units(&format!("{m}Mi")).unwrap(), m << 20);
        }

        #[test]
        fn never_panics(s in "\\PC{0,20}") {
            let _ = Quantity::parse(&s);
        }
    }

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
        assert!(matches!(format(f64::NAN), Err(NotFinite(_))));
        assert!(matches!(format(f64::INFINITY), Err(NotFinite(_))));
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
        assert!(matches!(rounded(f64::NAN), Err(NotFinite(_))));
    }

    #[test]
    fn parse_reads_suffixes() {
        assert_eq!(parse_f64("850m").unwrap(), 0.85);
        assert_eq!(parse_f64("12").unwrap(), 12.0);
        assert_eq!(parse_f64("-3").unwrap(), -3.0);
        assert_eq!(parse_f64("2k").unwrap(), 2000.0);
        assert_eq!(parse_f64("1Ki").unwrap(), 1024.0);
        assert_eq!(parse_f64("5e-3").unwrap(), 0.005);
        assert!(parse_f64("").is_err());
        assert!(parse_f64("m").is_err());
        assert!(parse_f64("1x").is_err());
        assert!(parse_f64("1e").is_err());
    }

    proptest::proptest! {
        #[test]
        fn round_trip_within_half_a_milli(v in -1e12f64..1e12) {
            let text = format(v).unwrap();
            let back = parse_f64(&text).unwrap();
            proptest::prop_assert!((back - v).abs() <= 0.0005 + v.abs() * 1e-12, "{v} -> {text} -> {back}");
        }

        #[test]
        fn rounded_writes_the_same_quantity(v in proptest::num::f64::NORMAL | proptest::num::f64::ZERO) {
            proptest::prop_assert_eq!(format(rounded(v).unwrap()).unwrap(), format(v).unwrap());
        }

        /// Any finite value reads back, except beyond what nano-units in an `i128`
        /// hold (about 1e29), which is an overflow error, never a wrong number.
        #[test]
        fn round_trip_any_finite(v in proptest::num::f64::NORMAL | proptest::num::f64::ZERO) {
            let text = format(v).unwrap();
            match parse_f64(&text) {
                Ok(back) => proptest::prop_assert!((back - v).abs() <= 0.0005 + v.abs() * 1e-9, "{v} -> {text} -> {back}"),
                Err(e) => proptest::prop_assert!(v.abs() > 1e28 && matches!(e, Error::Overflow { .. }), "{v} -> {text}: {e}"),
            }
        }
    }
}
