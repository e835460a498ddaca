//! Amount parsing against an independent oracle (SPEC rule 1, issue 7 "bad
//! input"): any string either parses to exactly the decimal it denotes, within
//! the credit system's scale and the 10^12 whole-unit bound, and formats back
//! to its canonical form, or is refused with the reason the oracle gives. It
//! never panics, whatever the input: arbitrary Unicode, huge digit strings,
//! values at the bound.
//!
//! The oracle reads the grammar `-? digit+ ( . digit+ )?` character by
//! character and computes the value in u128 with checked arithmetic, so it
//! shares no code with `Amount::parse` (which bounds by length first and
//! works in i64).

use credstack_core::amount::{Amount, AmountError, MAX_WHOLE_UNITS, Scale};
use proptest::prelude::*;

fn scale(places: u8) -> Scale {
    Scale::new(places).expect("0 to 6 places")
}

/// What a decimal string denotes at `places`: its atomic units, or why it
/// must be refused, in the order the parser reports them (malformed, then
/// too precise, then too large).
fn oracle(text: &str, places: u8) -> Result<i64, AmountError> {
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let mut whole = String::new();
    let mut fraction: Option<String> = None;
    for character in unsigned.chars() {
        match (character, &mut fraction) {
            ('0'..='9', None) => whole.push(character),
            ('0'..='9', Some(digits)) => digits.push(character),
            ('.', None) => fraction = Some(String::new()),
            _ => return Err(AmountError::Malformed),
        }
    }
    if whole.is_empty() || fraction.as_ref().is_some_and(String::is_empty) {
        return Err(AmountError::Malformed);
    }
    let fraction = fraction.unwrap_or_default();
    if fraction.len() > usize::from(places) {
        return Err(AmountError::TooPrecise);
    }
    let padded = format!("{whole}{fraction:0<width$}", width = usize::from(places));
    let mut magnitude: u128 = 0;
    for digit in padded.bytes() {
        magnitude = magnitude
            .checked_mul(10)
            .and_then(|m| m.checked_add(u128::from(digit - b'0')))
            .ok_or(AmountError::TooLarge)?;
    }
    let bound = u128::try_from(MAX_WHOLE_UNITS).unwrap() * 10u128.pow(u32::from(places));
    if magnitude > bound {
        return Err(AmountError::TooLarge);
    }
    let magnitude = i64::try_from(magnitude).expect("the bound fits in i64");
    Ok(if negative { -magnitude } else { magnitude })
}

/// The canonical form of a value the oracle accepted: no leading zeros, no
/// trailing fractional zeros, no `.` for whole values, no `-0`.
fn canonical(atomic: i64, places: u8) -> String {
    let unit = 10u64.pow(u32::from(places));
    let magnitude = atomic.unsigned_abs();
    let sign = if atomic < 0 { "-" } else { "" };
    let (whole, fraction) = (magnitude / unit, magnitude % unit);
    if fraction == 0 {
        return format!("{sign}{whole}");
    }
    let digits = format!("{fraction:0width$}", width = usize::from(places));
    format!("{sign}{whole}.{}", digits.trim_end_matches('0'))
}

/// Checks one string at one scale against the oracle, including formatting
/// and the positive / non-negative variants.
fn check(text: &str, places: u8) -> Result<(), TestCaseError> {
    let scale = scale(places);
    let parsed = Amount::parse(text, scale).map(Amount::atomic);
    let expected = oracle(text, places);
    prop_assert_eq!(parsed, expected, "{:?} at scale {}", text, places);
    match expected {
        Ok(atomic) => {
            let amount = Amount::from_atomic(atomic);
            let formatted = amount.format(scale);
            prop_assert_eq!(&formatted, &canonical(atomic, places));
            prop_assert_eq!(Amount::parse(&formatted, scale), Ok(amount));
            let positive = Amount::parse_positive(text, scale).map(Amount::atomic);
            prop_assert_eq!(
                positive,
                if atomic > 0 {
                    Ok(atomic)
                } else {
                    Err(AmountError::NotPositive)
                }
            );
            let non_negative = Amount::parse_non_negative(text, scale).map(Amount::atomic);
            prop_assert_eq!(
                non_negative,
                if atomic >= 0 {
                    Ok(atomic)
                } else {
                    Err(AmountError::Negative)
                }
            );
        }
        Err(error) => {
            prop_assert_eq!(Amount::parse_positive(text, scale), Err(error));
            prop_assert_eq!(Amount::parse_non_negative(text, scale), Err(error));
        }
    }
    Ok(())
}

/// Strings shaped like amounts: sign, leading zeros, whole digits up to 40
/// long, a fraction up to 9 long, so every branch of the grammar, the scale
/// and the bound is reached often.
fn amount_like() -> impl Strategy<Value = String> {
    (
        prop_oneof![Just(""), Just("-"), Just("+"), Just("--")],
        "0{0,3}",
        "[0-9]{0,40}",
        prop::option::of("[0-9]{0,9}"),
        prop_oneof![8 => Just(""), 1 => Just(" "), 1 => Just("e3")],
    )
        .prop_map(|(sign, zeros, whole, fraction, suffix)| {
            let fraction = fraction.map_or(String::new(), |f| format!(".{f}"));
            format!("{sign}{zeros}{whole}{fraction}{suffix}")
        })
}

/// Values at and around the 10^12 bound, in the scale's own units.
fn near_bound() -> impl Strategy<Value = (String, u8)> {
    (0u8..=6, -3i64..=3, any::<bool>()).prop_map(|(places, offset, negative)| {
        let bound = MAX_WHOLE_UNITS * 10i64.pow(u32::from(places));
        let atomic = bound + offset;
        let text = canonical(atomic, places);
        (if negative { format!("-{text}") } else { text }, places)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn any_unicode_string_parses_as_the_oracle_says(text in "\\PC{0,30}", places in 0u8..=6) {
        check(&text, places)?;
    }

    #[test]
    fn any_string_of_decimal_characters_parses_as_the_oracle_says(text in "[-+.0-9٠-٩０-９e ]{0,30}", places in 0u8..=6) {
        check(&text, places)?;
    }

    #[test]
    fn amount_shaped_strings_parse_as_the_oracle_says(text in amount_like(), places in 0u8..=6) {
        check(&text, places)?;
    }

    #[test]
    fn values_at_the_bound_parse_as_the_oracle_says((text, places) in near_bound()) {
        check(&text, places)?;
    }

    #[test]
    fn every_value_in_range_formats_and_parses_back(atomic in any::<i64>(), places in 0u8..=6) {
        let bound = scale(places).max_magnitude();
        let atomic = atomic % (bound + 1);
        let text = canonical(atomic, places);
        prop_assert_eq!(Amount::parse(&text, scale(places)).map(Amount::atomic), Ok(atomic));
        check(&text, places)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Huge inputs are refused by length, quickly, never parsed digit by
    /// digit into an overflow.
    #[test]
    fn huge_digit_strings_are_too_large(digit in 1u8..=9, length in 14usize..20_000, zeros in 0usize..5_000, places in 0u8..=6) {
        let text = format!("{}{}", "0".repeat(zeros), char::from(b'0' + digit).to_string().repeat(length));
        prop_assert_eq!(Amount::parse(&text, scale(places)), Err(AmountError::TooLarge));
        check(&text, places)?;
    }
}

/// The oracle itself, on cases worked by hand, so a wrong oracle cannot
/// agree with a wrong parser.
#[test]
fn the_oracle_agrees_with_hand_worked_cases() {
    let cases: [(&str, u8, Result<i64, AmountError>); 14] = [
        ("0", 0, Ok(0)),
        ("-0", 2, Ok(0)),
        ("100.5", 2, Ok(10_050)),
        ("0007.10", 2, Ok(710)),
        ("1000000000000", 0, Ok(1_000_000_000_000)),
        ("1000000000000.000001", 6, Err(AmountError::TooLarge)),
        ("-1000000000000.000000", 6, Ok(-1_000_000_000_000_000_000)),
        ("1.5", 0, Err(AmountError::TooPrecise)),
        (
            "99999999999999999999999999999999999999999.5",
            0,
            Err(AmountError::TooPrecise),
        ),
        ("1e3", 2, Err(AmountError::Malformed)),
        ("١", 0, Err(AmountError::Malformed)),
        ("+1", 0, Err(AmountError::Malformed)),
        ("1.", 2, Err(AmountError::Malformed)),
        ("", 2, Err(AmountError::Malformed)),
    ];
    for (text, places, expected) in cases {
        assert_eq!(oracle(text, places), expected, "{text:?}");
        assert_eq!(
            Amount::parse(text, scale(places)).map(Amount::atomic),
            expected,
            "{text:?}"
        );
    }
    assert_eq!(canonical(-25, 2), "-0.25");
    assert_eq!(canonical(10_050, 2), "100.5");
}
