//! Property tests of the card-data guard: generated card numbers are found in any format and
//! anywhere in a body, redaction removes them, and ordinary values pass.

use parkd_payments::guard::{
    CardDataKind, contains_card_number, find_card_data, redact_json, redact_text,
};
use proptest::prelude::*;
use serde_json::{Value, json};

/// A Luhn-valid card number: a network's first digit (2 to 6), 13 to 19 digits.
fn card_number() -> impl Strategy<Value = Vec<u8>> {
    (2u8..=6, 13usize..=19)
        .prop_flat_map(|(first, len)| (Just(first), prop::collection::vec(0u8..=9, len - 2)))
        .prop_map(|(first, middle)| {
            let mut digits = vec![first];
            digits.extend(middle);
            let check = luhn_check_digit(&digits);
            digits.push(check);
            digits
        })
}

fn luhn_check_digit(payload: &[u8]) -> u8 {
    // Doubling starts at the digit left of the check digit.
    let sum: u32 = payload
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let mut v = u32::from(d);
            if i % 2 == 0 {
                v *= 2;
                if v > 9 {
                    v -= 9;
                }
            }
            v
        })
        .sum();
    ((10 - sum % 10) % 10) as u8
}

/// The digits written plainly, in groups of four with spaces, or with dashes.
fn formatted(digits: &[u8], style: u8) -> String {
    let mut out = String::new();
    for (i, d) in digits.iter().enumerate() {
        if i > 0 && i % 4 == 0 {
            match style % 3 {
                1 => out.push(' '),
                2 => out.push('-'),
                _ => {}
            }
        }
        out.push(char::from(b'0' + d));
    }
    out
}

/// Text around a number that does not extend its digit run.
fn filler() -> impl Strategy<Value = String> {
    "[a-zA-Z:,;/()]{0,12}"
}

/// Puts `value` somewhere inside a small JSON document.
fn nest(value: Value, depth: u8, key: String) -> Value {
    match depth % 4 {
        0 => value,
        1 => json!({ key: value, "amount": 100 }),
        2 => json!({"items": [1, "x", { key: value }]}),
        _ => json!({"payment": {"details": [{ key: value }]}}),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn card_numbers_are_found_in_any_format(
        digits in card_number(), style in 0u8..3, before in filler(), after in filler(),
    ) {
        let text = format!("{before} {} {after}", formatted(&digits, style));
        prop_assert!(contains_card_number(&text), "{}", text);
        let redacted = redact_text(&text);
        prop_assert!(!contains_card_number(&redacted), "{}", redacted);
        let digit_string: String = digits.iter().map(|d| char::from(b'0' + d)).collect();
        prop_assert!(!redacted.contains(&digit_string));
    }

    #[test]
    fn a_single_wrong_digit_is_not_a_card_number(
        digits in card_number(), position in any::<prop::sample::Index>(), delta in 1u8..=9,
    ) {
        let mut digits = digits;
        let at = position.index(digits.len());
        if at == 0 {
            // Keep the first digit in the networks' range; change the second instead.
            digits[1] = (digits[1] + delta) % 10;
        } else {
            digits[at] = (digits[at] + delta) % 10;
        }
        // Luhn catches every single-digit error.
        prop_assert!(!contains_card_number(&formatted(&digits, 0)));
    }

    #[test]
    fn card_data_is_found_anywhere_in_a_body_and_redaction_removes_it(
        digits in card_number(), style in 0u8..3, depth in 0u8..4, as_number in any::<bool>(),
        key in "[a-z]{1,8}",
    ) {
        prop_assume!(!parkd_payments::guard::is_security_code_key(&key));
        prop_assume!(!parkd_payments::guard::is_card_number_key(&key));
        let value = if as_number && digits.len() <= 19 {
            let text: String = digits.iter().map(|d| char::from(b'0' + d)).collect();
            match text.parse::<u64>() {
                Ok(n) => json!(n),
                Err(_) => json!(text),
            }
        } else {
            json!(formatted(&digits, style))
        };
        let mut body = nest(value, depth, key);
        let found = find_card_data(&body);
        prop_assert!(found.is_some());
        let found = found.unwrap();
        prop_assert_eq!(found.kind, CardDataKind::CardNumber);
        prop_assert!(!found.to_string().contains(&formatted(&digits, style)));
        redact_json(&mut body);
        prop_assert_eq!(find_card_data(&body), None);
    }

    #[test]
    fn security_codes_are_found_under_any_spelling_of_their_key(
        name in prop::sample::select(vec!["cvc", "cvv", "cvv2", "security_code", "cvc2", "card_verification_value"]),
        upper in any::<bool>(), dash in any::<bool>(), code in 100u32..10_000,
    ) {
        let mut key = name.to_owned();
        if upper { key = key.to_uppercase(); }
        if dash { key = key.replace('_', "-"); }
        let mut body = json!({"card": { key.clone(): code.to_string() }});
        let found = find_card_data(&body).unwrap();
        prop_assert_eq!(found.kind, CardDataKind::SecurityCode);
        prop_assert_eq!(found.path, format!("$.card.{key}"));
        redact_json(&mut body);
        prop_assert_eq!(find_card_data(&body), None);
        prop_assert!(!body.to_string().contains(&code.to_string()));
    }

    #[test]
    fn short_digit_runs_never_trip_the_guard(
        text in "([a-z.,:;/]{1,4}[0-9]{0,12}){0,8}",
    ) {
        prop_assert!(!contains_card_number(&text));
        prop_assert_eq!(find_card_data(&json!({"note": text})), None);
    }
}
