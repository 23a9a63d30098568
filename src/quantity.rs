//! Kubernetes resource quantities ("3800m", "15Gi", "1e3") as exact numbers.
//!
//! The grammar is Kubernetes' own: an optionally signed decimal number (digits with
//! at most one point) followed by a binary-SI suffix (`Ki` … `Ei`), a decimal-SI
//! suffix (`n`, `u`, `m`, none, `k`, `M`, `G`, `T`, `P`, `E`) or a decimal exponent
//! (`e3`, `E-2`). Values are held exactly in nano-units, so conversions to
//! millicores or bytes round up the way Kubernetes does (`MilliValue`, `Value`).

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
}
