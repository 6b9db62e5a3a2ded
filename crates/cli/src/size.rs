//! Byte sizes with units: parsing (`512MiB`, `2GiB`, `0x1000`, `4096`) and exact display.

use std::fmt;

/// Binary units a size may carry, largest first, with their byte counts.
const UNITS: [(&str, u64); 5] = [
    ("TiB", 1 << 40),
    ("GiB", 1 << 30),
    ("MiB", 1 << 20),
    ("KiB", 1 << 10),
    ("B", 1),
];

/// Why a size could not be read. Messages escape control and formatting characters of the
/// text they quote (`\u{9}` for a tab).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    /// No digits.
    #[error("empty size")]
    Empty,
    /// The number part is not a number.
    #[error("`{}` is not a number", crate::render::escape(.0))]
    BadNumber(String),
    /// The unit is not one of B, KiB, MiB, GiB, TiB.
    #[error(
        "unknown size unit `{}` (use B, KiB, MiB, GiB or TiB; sizes are binary)",
        crate::render::escape(.unit)
    )]
    BadUnit {
        /// The unit given.
        unit: String,
    },
    /// A decimal fraction that is not a whole number of bytes (`1.3B`, `0.1KiB`).
    #[error(
        "`{}` is not a whole number of bytes (a fraction must come out exact, as in `1.5GiB`)",
        crate::render::escape(.0)
    )]
    Inexact(String),
    /// White space between the number and its unit other than one space (`1  KiB`,
    /// `4\tKiB`).
    #[error(
        "`{}`: at most one space (U+0020) goes between the number and its unit",
        crate::render::escape(.0)
    )]
    Spacing(String),
    /// The size does not fit in 64 bits.
    #[error("`{}` does not fit in 64 bits", crate::render::escape(.0))]
    TooLarge(String),
}

/// Reads a size: a decimal number with an optional binary unit (`B`, `KiB`, `MiB`, `GiB`,
/// `TiB`; one space before the unit and `_` between two digits are allowed, white space
/// around the whole is ignored), or a hexadecimal number without a unit: `0x` or `0X`, then
/// hexadecimal digits of either case, `_` allowed between two of them (`0xdead_BEEF`). A
/// decimal number
/// may have a fraction when it comes out as a whole number of bytes (`1.5GiB`, `0.25KiB`, with
/// any number of decimals, read exactly).
///
/// # Errors
/// [`SizeError`] naming what is wrong.
///
/// ```
/// use memvisor_cli::size::{SizeError, parse_size};
///
/// assert_eq!(parse_size("512MiB"), Ok(512 << 20));
/// assert_eq!(parse_size("2 GiB"), Ok(2 << 30));
/// assert_eq!(parse_size("0x1000"), Ok(4096));
/// assert_eq!(parse_size("1_000"), Ok(1000));
/// assert!(matches!(parse_size("_10MiB"), Err(SizeError::BadNumber(_))));
/// assert!(matches!(parse_size("1__0"), Err(SizeError::BadNumber(_))));
/// assert_eq!(parse_size("0X1000"), Ok(4096));
/// assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
/// assert!(matches!(parse_size("2GB"), Err(SizeError::BadUnit { .. })));
/// assert!(matches!(parse_size("1.3B"), Err(SizeError::Inexact(_))));
/// ```
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(SizeError::Empty);
    }
    if let Some(hex) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        let digits: String = hex.chars().filter(|&c| c != '_').collect();
        if digits.is_empty()
            || !digits.chars().all(|c| c.is_ascii_hexdigit())
            || !underscores_between_digits(hex)
        {
            return Err(SizeError::BadNumber(text.to_owned()));
        }
        return u64::from_str_radix(&digits, 16).map_err(|_| SizeError::TooLarge(text.to_owned()));
    }
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '_' || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits: String = whole.chars().filter(|&c| c != '_').collect();
    let decimals: String = fraction.chars().filter(|&c| c != '_').collect();
    if digits.is_empty()
        || (number.contains('.') && decimals.is_empty())
        || decimals.contains('.')
        || !underscores_between_digits(whole)
        || !underscores_between_digits(fraction)
    {
        return Err(SizeError::BadNumber(text.to_owned()));
    }
    // At most one space before the unit.
    let unit = unit.strip_prefix(' ').unwrap_or(unit);
    if unit.starts_with(char::is_whitespace) {
        return Err(SizeError::Spacing(text.to_owned()));
    }
    let multiplier = if unit.is_empty() {
        1
    } else {
        UNITS
            .iter()
            .find(|(name, _)| *name == unit)
            .map(|&(_, bytes)| bytes)
            .ok_or_else(|| SizeError::BadUnit {
                unit: unit.to_owned(),
            })?
    };
    let value: u64 = digits
        .parse()
        .map_err(|_| SizeError::TooLarge(text.to_owned()))?;
    let whole_bytes = value
        .checked_mul(multiplier)
        .ok_or_else(|| SizeError::TooLarge(text.to_owned()))?;
    if decimals.is_empty() {
        return Ok(whole_bytes);
    }
    fraction_bytes(&decimals, multiplier)
        .ok_or_else(|| SizeError::Inexact(text.to_owned()))
        .and_then(|part| {
            whole_bytes
                .checked_add(part)
                .ok_or_else(|| SizeError::TooLarge(text.to_owned()))
        })
}

/// The bytes of the decimal fraction `0.decimals` (ASCII digits, any number of them) of
/// `multiplier` (a power of two up to 2^40), or `None` when that is not a whole number.
///
/// Exact for any length without big numbers: trailing zeros change nothing, and once they are
/// gone a fraction of `n` decimals ends in a digit other than 0, so it is a whole number of
/// 2^k bytes only if it is a multiple of 5^n, hence odd, hence only if `n <= k` (at most 40
/// digits). The fraction is then doubled `k` times in decimal, digit by digit.
fn fraction_bytes(decimals: &str, multiplier: u64) -> Option<u64> {
    let k = multiplier.trailing_zeros() as usize;
    let digits = decimals.trim_end_matches('0').as_bytes();
    if digits.len() > k {
        return None;
    }
    let mut digits: Vec<u8> = digits.iter().map(|d| d - b'0').collect();
    let mut whole = 0u64;
    for _ in 0..k {
        let mut carry = 0u8;
        for d in digits.iter_mut().rev() {
            let v = *d * 2 + carry;
            *d = v % 10;
            carry = v / 10;
        }
        // Below 2^40: the fraction is below 1.
        whole = whole * 2 + u64::from(carry);
    }
    digits.iter().all(|&d| d == 0).then_some(whole)
}

/// Displays a byte count exactly, in the largest binary unit that divides it (`1 GiB`,
/// `1004 MiB`, `8 B`).
///
/// ```
/// use memvisor_cli::size::Size;
///
/// assert_eq!(Size(2 << 30).to_string(), "2 GiB");
/// assert_eq!(Size(0x3ec0_0000).to_string(), "1004 MiB");
/// assert_eq!(Size(8).to_string(), "8 B");
/// assert_eq!(Size(0).to_string(), "0 B");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Size(pub u64);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&exact(u128::from(self.0)))
    }
}

/// [`Size`]'s text for a byte count that may pass 64 bits (a total of 64-bit sizes).
///
/// ```
/// use memvisor_cli::size::exact;
///
/// assert_eq!(exact(1 << 64), "16777216 TiB");
/// assert_eq!(exact(3 << 20), "3 MiB");
/// ```
#[must_use]
pub fn exact(bytes: u128) -> String {
    let (name, unit) = UNITS
        .iter()
        .find(|&&(_, unit)| bytes != 0 && bytes.is_multiple_of(u128::from(unit)))
        .copied()
        .unwrap_or(("B", 1));
    format!("{} {name}", bytes / u128::from(unit))
}

/// Displays a byte count rounded to one decimal in the largest binary unit it reaches
/// (`23.5 GiB`), for host values that are rarely round.
///
/// ```
/// use memvisor_cli::size::approx;
///
/// assert_eq!(approx(24_684_096 * 1024), "23.5 GiB");
/// assert_eq!(approx(512), "512 B");
/// ```
#[must_use]
pub fn approx(bytes: u64) -> String {
    let Some(&(name, unit)) = UNITS.iter().find(|&&(_, unit)| bytes >= unit && unit > 1) else {
        return format!("{bytes} B");
    };
    let tenths = u128::from(bytes) * 10 / u128::from(unit);
    format!("{}.{} {name}", tenths / 10, tenths % 10)
}

/// Whether every `_` of `digits` has a digit on each side (`1_000`, not `_1`, `1__0` or `1_`).
fn underscores_between_digits(digits: &str) -> bool {
    let b = digits.as_bytes();
    b.iter().enumerate().all(|(i, &c)| {
        c != b'_'
            || (i > 0
                && b[i - 1].is_ascii_hexdigit()
                && b.get(i + 1).is_some_and(u8::is_ascii_hexdigit))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn underscores_only_between_two_digits() {
        for ok in ["1_000", "1_0.2_5KiB", "0x1_000", "0xff_ff"] {
            assert!(parse_size(ok).is_ok(), "{ok}");
        }
        for bad in [
            "_10MiB", "10_MiB", "1__0", "1_.5KiB", "1._5KiB", "0x_10", "0x10_", "_",
        ] {
            assert!(
                matches!(parse_size(bad), Err(SizeError::BadNumber(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn parse_size_units_multiply() {
        assert_eq!(parse_size("1B"), Ok(1));
        assert_eq!(parse_size("4KiB"), Ok(4096));
        assert_eq!(parse_size("3 TiB"), Ok(3 << 40));
        assert_eq!(parse_size("0x1F"), Ok(31));
    }

    #[test]
    fn hexadecimal_takes_either_prefix_and_underscores_between_digits() {
        // `0X` has been read as `0x` from the start: a spec written with it keeps its meaning.
        assert_eq!(parse_size("0X1F"), Ok(31));
        assert_eq!(parse_size(" 0X1000 "), Ok(4096));
        assert_eq!(parse_size("0Xdead_BEEF"), Ok(0xdead_beef));
        // `_` goes between two hexadecimal digits as between two decimal ones.
        assert_eq!(parse_size("0xdead_BEEF"), Ok(0xdead_beef));
        assert_eq!(parse_size(" 0x1_0 "), Ok(16));
        for bad in ["0X_1", "0x1_", "0X", "0x1__0", "0X1 MiB"] {
            assert_eq!(
                parse_size(bad),
                Err(SizeError::BadNumber(bad.into())),
                "{bad}"
            );
        }
    }

    #[test]
    fn parse_size_bad_input_errors() {
        assert_eq!(parse_size(""), Err(SizeError::Empty));
        assert_eq!(parse_size("GiB"), Err(SizeError::BadNumber("GiB".into())));
        assert_eq!(parse_size("0x"), Err(SizeError::BadNumber("0x".into())));
        assert_eq!(
            parse_size("0x10MiB"),
            Err(SizeError::BadNumber("0x10MiB".into()))
        );
        assert_eq!(
            parse_size("16777216TiB"),
            Err(SizeError::TooLarge("16777216TiB".into()))
        );
        assert_eq!(
            parse_size("1gib"),
            Err(SizeError::BadUnit { unit: "gib".into() })
        );
    }

    #[test]
    fn parse_size_takes_at_most_one_space_before_the_unit() {
        assert_eq!(parse_size("1 KiB"), Ok(1024));
        assert_eq!(parse_size("  1 KiB "), Ok(1024));
        for text in [
            "4\tKiB",
            "1  KiB",
            "1\u{a0}KiB",
            "1 \tKiB",
            "1\u{2003}B",
            "1\nKiB",
        ] {
            assert_eq!(
                parse_size(text),
                Err(SizeError::Spacing(text.to_owned())),
                "{text:?}"
            );
        }
        assert_eq!(
            SizeError::Spacing("1  KiB".into()).to_string(),
            "`1  KiB`: at most one space (U+0020) goes between the number and its unit"
        );
        assert_eq!(
            SizeError::Spacing("4\tKiB".into()).to_string(),
            "`4\\u{9}KiB`: at most one space (U+0020) goes between the number and its unit"
        );
        assert_eq!(
            SizeError::BadNumber("\u{1b}[2J".into()).to_string(),
            "`\\u{1b}[2J` is not a number"
        );
    }

    #[test]
    fn parse_size_exact_fraction_is_read() {
        assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_size("0.5 KiB"), Ok(512));
        assert_eq!(parse_size("2.25MiB"), Ok(9 << 18));
        assert_eq!(parse_size("1.0"), Ok(1));
    }

    #[test]
    fn parse_size_inexact_fraction_is_refused() {
        assert_eq!(parse_size("1.3B"), Err(SizeError::Inexact("1.3B".into())));
        assert_eq!(
            parse_size("1.5GiB").map(Size).map(|s| s.to_string()),
            Ok("1536 MiB".into())
        );
        assert_eq!(
            parse_size("0.1KiB").unwrap_err().to_string(),
            "`0.1KiB` is not a whole number of bytes (a fraction must come out exact, as in \
             `1.5GiB`)"
        );
    }

    #[test]
    fn parse_size_fraction_of_any_length_is_exact() {
        // Trailing zeros past any precision change nothing.
        assert_eq!(parse_size("1.50000000000000000000GiB"), Ok(3 << 29));
        assert_eq!(parse_size("1.00000000000000000000GiB"), Ok(1 << 30));
        let long = format!("1.5{}GiB", "0".repeat(100_000));
        assert_eq!(parse_size(&long), Ok(3 << 29));
        assert_eq!(parse_size("1.5_000_000_000_000_000_000_000 KiB"), Ok(1536));
        // 2^-40 TiB is one byte: 40 decimals, exact.
        assert_eq!(
            parse_size("0.0000000000009094947017729282379150390625TiB"),
            Ok(1)
        );
        assert_eq!(
            parse_size("1.0000000000009094947017729282379150390625TiB"),
            Ok((1 << 40) + 1)
        );
        // Half a byte, and a fraction whose last digit is far down, are not whole.
        for bad in [
            "0.00000000000045474735088646411895751953125TiB",
            "0.5000000000000000000000000000001GiB",
            "1.00000000000000000000000000000000000000000000000001TiB",
        ] {
            assert_eq!(
                parse_size(bad),
                Err(SizeError::Inexact(bad.into())),
                "{bad}"
            );
        }
    }

    #[test]
    fn parse_size_malformed_fraction_is_refused() {
        for bad in ["1.", ".5GiB", "1.2.3", "1._5GiB", "1.5_GiB"] {
            assert_eq!(
                parse_size(bad),
                Err(SizeError::BadNumber(bad.into())),
                "{bad}"
            );
        }
        assert_eq!(
            parse_size("16777215.99999TiB"),
            Err(SizeError::Inexact("16777215.99999TiB".into()))
        );
        assert_eq!(
            parse_size("16777216.5TiB"),
            Err(SizeError::TooLarge("16777216.5TiB".into()))
        );
        assert_eq!(parse_size("16777215.5TiB"), Ok(u64::MAX - (1 << 39) + 1));
    }

    #[test]
    fn size_error_display_names_unit() {
        let e = parse_size("2GB").unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown size unit `GB` (use B, KiB, MiB, GiB or TiB; sizes are binary)"
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(if cfg!(miri) { 16 } else { 1000 }))]

        #[test]
        fn size_display_parses_back(v in proptest::prelude::any::<u64>(), shift in 0u32..41) {
            let v = v >> shift << shift;
            proptest::prop_assert_eq!(parse_size(&Size(v).to_string()), Ok(v));
            proptest::prop_assert_eq!(parse_size(&format!("{v:#x}")), Ok(v));
        }
    }

    #[test]
    fn size_display_pads() {
        assert_eq!(format!("{:>8}|", Size(4096)), "   4 KiB|");
    }
}
