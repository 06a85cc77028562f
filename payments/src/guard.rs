//! The card-data guard: finds card numbers and security codes in a request so that it can be
//! refused before anything stores or logs it, and blanks them out of text that must be
//! logged anyway.
//!
//! parkd never holds card data: a card is the provider's token plus brand, last four digits
//! and expiry ([`crate::PaymentMethodRef`]). A body that carries a card number or a CVV is a
//! client bug or an attack, and the HTTP layer answers it with a refusal instead of passing
//! it on. [`find_card_data`] looks at every key and every string or number of a JSON value:
//!
//! - **card numbers**: a run of 13 to 19 digits, single spaces or dashes allowed between
//!   digits (`4242 4242 4242 4242`, `4242-4242-...`), that passes the Luhn check and starts
//!   with 2 to 6 (the card networks' ranges: Mastercard 2/5, Amex/JCB/Diners 3, Visa 4,
//!   Discover/UnionPay/Maestro 6). The first digit rule keeps millisecond timestamps (which
//!   start with 1) from being refused; a run right after `+` is a phone number, not a card;
//!   a run glued to a letter on either side is part of an identifier (a hex id such as
//!   `pay_4179c3d1e37404898764536c…` holds Luhn-valid runs about once in a few hundred ids;
//!   refusing it failed real payments in the payments benchmark).
//!   Under a key named like a card number (`card_number`, `pan`, ...) any value with 12 or
//!   more digits counts, Luhn or not: a mistyped card number is still card data.
//! - **security codes**: any non-empty value under a key named like one (`cvc`, `cvv`,
//!   `cvv2`, `security_code`, `card_verification_value`, ...; case, `_`, `-`, `.` and spaces
//!   ignored).
//!
//! What the guard reports ([`CardDataFound`]) names where the data was (a JSON path), never
//! the data; a key that is itself a card number is shown as `[redacted]` in the path.

use std::borrow::Cow;
use std::fmt;

use serde_json::Value;

/// What replaces a card number in redacted text.
pub const REDACTED_CARD_NUMBER: &str = "[redacted card number]";
/// What replaces a security code (and a card-number key's value) in redacted JSON.
pub const REDACTED_VALUE: &str = "[redacted]";

/// The kind of card data found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CardDataKind {
    /// A primary account number (the long number on the card).
    CardNumber,
    /// A card security code (CVC, CVV, CID...).
    SecurityCode,
}

impl CardDataKind {
    /// A stable name for logs and problem details.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CardNumber => "card_number",
            Self::SecurityCode => "security_code",
        }
    }
}

/// Card data found in a request: what and where, never the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardDataFound {
    /// Card number or security code.
    pub kind: CardDataKind,
    /// Where in the JSON value (`$.card.number`, `$.items[2]`); a key that is itself a card
    /// number shows as `[redacted]`.
    pub path: String,
}

impl fmt::Display for CardDataFound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            CardDataKind::CardNumber => "a card number",
            CardDataKind::SecurityCode => "a card security code",
        };
        write!(
            f,
            "the request carries {what} at {}; parkd accepts only a provider token",
            self.path
        )
    }
}

impl std::error::Error for CardDataFound {}

/// The first card number or security code anywhere in `value` (keys included), or `None`.
pub fn find_card_data(value: &Value) -> Option<CardDataFound> {
    let mut path = String::from("$");
    find_in(value, &mut path)
}

/// `Ok(())` when `value` holds no card data; the finding otherwise, for a refusal.
pub fn refuse_card_data(value: &Value) -> Result<(), CardDataFound> {
    match find_card_data(value) {
        Some(found) => Err(found),
        None => Ok(()),
    }
}

fn find_in(value: &Value, path: &mut String) -> Option<CardDataFound> {
    match value {
        Value::Null | Value::Bool(_) => None,
        Value::Number(number) => {
            number_is_card_number(number).then(|| found(CardDataKind::CardNumber, path))
        }
        Value::String(text) => {
            contains_card_number(text).then(|| found(CardDataKind::CardNumber, path))
        }
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{index}]"));
                let hit = find_in(item, path);
                path.truncate(len);
                if hit.is_some() {
                    return hit;
                }
            }
            None
        }
        Value::Object(map) => {
            for (key, item) in map {
                let len = path.len();
                push_key(path, key);
                let hit = if contains_card_number(key) {
                    Some(found(CardDataKind::CardNumber, path))
                } else if is_security_code_key(key) && !is_empty_value(item) {
                    Some(found(CardDataKind::SecurityCode, path))
                } else if is_card_number_key(key) && digit_count(item) >= 12 {
                    Some(found(CardDataKind::CardNumber, path))
                } else {
                    find_in(item, path)
                };
                path.truncate(len);
                if hit.is_some() {
                    return hit;
                }
            }
            None
        }
    }
}

fn found(kind: CardDataKind, path: &str) -> CardDataFound {
    CardDataFound {
        kind,
        path: path.to_owned(),
    }
}

fn push_key(path: &mut String, key: &str) {
    path.push('.');
    if contains_card_number(key) {
        path.push_str(REDACTED_VALUE);
    } else {
        path.push_str(key);
    }
}

/// Nothing there: null, blank, or already redacted.
fn is_empty_value(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(text) => text.trim().is_empty() || text == REDACTED_VALUE,
        _ => false,
    }
}

fn digit_count(value: &Value) -> usize {
    match value {
        Value::String(text) => text.bytes().filter(u8::is_ascii_digit).count(),
        Value::Number(number) => number
            .to_string()
            .bytes()
            .filter(u8::is_ascii_digit)
            .count(),
        _ => 0,
    }
}

fn normalized_key(key: &str) -> String {
    key.chars()
        .filter(|c| !matches!(c, '_' | '-' | '.' | ' '))
        .flat_map(char::to_lowercase)
        .collect()
}

/// Whether a JSON key names a card security code (`cvc`, `cvv2`, `security_code`, ...).
pub fn is_security_code_key(key: &str) -> bool {
    matches!(
        normalized_key(key).as_str(),
        "cvc"
            | "cvc2"
            | "cvv"
            | "cvv2"
            | "cvn"
            | "cvn2"
            | "csc"
            | "cav2"
            | "cardcode"
            | "securitycode"
            | "cardsecuritycode"
            | "cardverificationcode"
            | "cardverificationvalue"
            | "verificationcode"
            | "cardcvc"
            | "cardcvv"
    )
}

/// Whether a JSON key names a card number (`card_number`, `pan`, `cc_number`, ...).
pub fn is_card_number_key(key: &str) -> bool {
    matches!(
        normalized_key(key).as_str(),
        "pan"
            | "cardnumber"
            | "cardno"
            | "ccnumber"
            | "ccnum"
            | "creditcardnumber"
            | "debitcardnumber"
            | "primaryaccountnumber"
    )
}

/// The Luhn check over decimal digit values (each 0 to 9), rightmost digit being the check
/// digit.
pub fn luhn_valid(digits: &[u8]) -> bool {
    if digits.is_empty() {
        return false;
    }
    let mut sum = 0u32;
    for (position, &digit) in digits.iter().rev().enumerate() {
        let mut value = u32::from(digit);
        if position % 2 == 1 {
            value *= 2;
            if value > 9 {
                value -= 9;
            }
        }
        sum += value;
    }
    sum.is_multiple_of(10)
}

fn is_card_number_digits(digits: &[u8]) -> bool {
    (13..=19).contains(&digits.len()) && matches!(digits.first(), Some(2..=6)) && luhn_valid(digits)
}

/// A run of digits in a text, separators allowed inside.
struct DigitRun {
    start: usize,
    end: usize,
    digits: Vec<u8>,
}

/// The runs of digits in `text`: digits with single spaces or dashes between them.
fn digit_runs(text: &str) -> Vec<DigitRun> {
    let bytes = text.as_bytes();
    let mut runs = Vec::new();
    let mut index = 0;
    while index < bytes.len() {
        if !bytes[index].is_ascii_digit() {
            index += 1;
            continue;
        }
        let start = index;
        let mut digits = Vec::new();
        let mut end = index;
        while index < bytes.len() {
            let byte = bytes[index];
            if byte.is_ascii_digit() {
                digits.push(byte - b'0');
                index += 1;
                end = index;
            } else if (byte == b' ' || byte == b'-')
                && bytes.get(index + 1).is_some_and(u8::is_ascii_digit)
            {
                index += 1;
            } else {
                break;
            }
        }
        let after_plus = start > 0 && bytes[start - 1] == b'+';
        // Part of a word (an identifier), not a number on its own.
        let glued = (start > 0 && bytes[start - 1].is_ascii_alphabetic())
            || bytes.get(end).is_some_and(u8::is_ascii_alphabetic);
        if !after_plus && !glued {
            runs.push(DigitRun { start, end, digits });
        }
        index = end.max(index);
    }
    runs
}

/// Whether `text` contains something that looks like a card number (see the module doc).
pub fn contains_card_number(text: &str) -> bool {
    digit_runs(text)
        .iter()
        .any(|run| is_card_number_digits(&run.digits))
}

#[cfg(test)]
mod identifier_tests {
    use super::contains_card_number;

    #[test]
    fn identifiers_are_not_card_numbers_but_numbers_on_their_own_are() {
        // The id that failed a payment in the benchmark: "37404898764536" passes Luhn.
        assert!(!contains_card_number(
            "pay_4179c3d1e37404898764536c306ee0e6"
        ));
        assert!(!contains_card_number("session a4242424242424242b"));
        assert!(contains_card_number("4242 4242 4242 4242"));
        assert!(contains_card_number("PAN:4242424242424242."));
        assert!(contains_card_number("card 4242-4242-4242-4242 exp 12/34"));
    }
}

fn number_is_card_number(number: &serde_json::Number) -> bool {
    if let Some(value) = number.as_u64() {
        let digits: Vec<u8> = value.to_string().bytes().map(|b| b - b'0').collect();
        return is_card_number_digits(&digits);
    }
    false
}

/// `text` with every card number replaced by [`REDACTED_CARD_NUMBER`]; borrowed when there
/// is nothing to replace. For log lines and error messages that quote outside input.
pub fn redact_text(text: &str) -> Cow<'_, str> {
    let runs: Vec<DigitRun> = digit_runs(text)
        .into_iter()
        .filter(|run| is_card_number_digits(&run.digits))
        .collect();
    if runs.is_empty() {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for run in runs {
        out.push_str(&text[last..run.start]);
        out.push_str(REDACTED_CARD_NUMBER);
        last = run.end;
    }
    out.push_str(&text[last..]);
    Cow::Owned(out)
}

/// Blanks every card number and security code in `value`, keys included, so that the value
/// can be logged. Afterwards [`find_card_data`] finds nothing.
pub fn redact_json(value: &mut Value) {
    match value {
        Value::Null | Value::Bool(_) => {}
        Value::Number(number) => {
            if number_is_card_number(number) {
                *value = Value::String(REDACTED_CARD_NUMBER.to_owned());
            }
        }
        Value::String(text) => {
            if let Cow::Owned(redacted) = redact_text(text) {
                *text = redacted;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_json),
        Value::Object(map) => {
            let entries = std::mem::take(map);
            for (key, mut item) in entries {
                if is_security_code_key(&key) && !is_empty_value(&item)
                    || is_card_number_key(&key) && digit_count(&item) >= 12
                {
                    item = Value::String(REDACTED_VALUE.to_owned());
                } else {
                    redact_json(&mut item);
                }
                let key = redact_text(&key).into_owned();
                map.insert(key, item);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn luhn_accepts_known_test_numbers() {
        for number in ["4242424242424242", "5555555555554444", "378282246310005"] {
            let digits: Vec<u8> = number.bytes().map(|b| b - b'0').collect();
            assert!(luhn_valid(&digits), "{number}");
        }
        let digits: Vec<u8> = "4242424242424241".bytes().map(|b| b - b'0').collect();
        assert!(!luhn_valid(&digits));
        assert!(!luhn_valid(&[]));
    }

    #[test]
    fn finds_card_numbers_in_any_format() {
        for text in [
            "4242424242424242",
            "4242 4242 4242 4242",
            "4242-4242-4242-4242",
            "card: 4242 4242 4242 4242, exp 12/30",
            "3782 822463 10005",
        ] {
            assert!(contains_card_number(text), "{text}");
        }
    }

    #[test]
    fn leaves_ordinary_numbers_alone() {
        for text in [
            "4242424242424241",       // Luhn fails
            "424242424242",           // 12 digits
            "42424242424242424242",   // 20 digits
            "1712345678907",          // a millisecond timestamp (Luhn-valid, starts with 1)
            "+49 151 2345 6789 0",    // a phone number
            "4242  4242 4242 4242",   // double space breaks the run
            "pi_3N4b2eZvKYlo2C1ab2c", // a provider id
        ] {
            assert!(!contains_card_number(text), "{text}");
        }
    }

    #[test]
    fn finds_card_data_anywhere_in_json_and_names_only_the_path() {
        let body = json!({"amount": 500, "card": {"number": "4242 4242 4242 4242"}});
        let hit = find_card_data(&body).unwrap();
        assert_eq!(hit.kind, CardDataKind::CardNumber);
        assert_eq!(hit.path, "$.card.number");
        assert!(!hit.to_string().contains("4242"));

        let body = json!({"items": [1, {"x": 4242424242424242u64}]});
        assert_eq!(find_card_data(&body).unwrap().path, "$.items[1].x");

        let body = json!({"4242424242424242": true});
        let hit = find_card_data(&body).unwrap();
        assert_eq!(hit.path, "$.[redacted]");

        let body = json!({"payment": {"CVC": "123"}});
        let hit = find_card_data(&body).unwrap();
        assert_eq!(hit.kind, CardDataKind::SecurityCode);
        assert_eq!(hit.path, "$.payment.CVC");

        for key in ["cvv", "cvv2", "security_code", "Security-Code", "card_cvc"] {
            let body = json!({ key: 737 });
            assert!(find_card_data(&body).is_some(), "{key}");
        }

        let body = json!({"card_number": "4242 4242 4242 4241"});
        assert_eq!(
            find_card_data(&body).unwrap().kind,
            CardDataKind::CardNumber
        );
    }

    #[test]
    fn accepts_a_clean_body() {
        let body = json!({
            "amount_minor": 1250,
            "currency": "eur",
            "payment_method": {"token": "pm_1N3T9k2eZvKYlo2C", "brand": "visa", "last4": "4242",
                               "exp_month": 12, "exp_year": 2030},
            "cvc": null,
            "created_ms": 1712345678907u64,
            "phone": "+49 151 23456789",
        });
        assert_eq!(refuse_card_data(&body), Ok(()));
    }

    #[test]
    fn redaction_removes_what_the_guard_finds() {
        let text = "charge 4242 4242 4242 4242 failed";
        assert_eq!(
            redact_text(text),
            format!("charge {REDACTED_CARD_NUMBER} failed")
        );
        assert!(matches!(redact_text("nothing here 42"), Cow::Borrowed(_)));

        let mut body = json!({
            "card": {"number": "4242424242424242", "cvc": "123"},
            "n": 5555555555554444u64,
            "4242424242424242": 1,
            "note": "ok",
        });
        redact_json(&mut body);
        assert_eq!(find_card_data(&body), None);
        assert_eq!(body["card"]["cvc"], REDACTED_VALUE);
        assert_eq!(body["note"], "ok");
        assert!(!body.to_string().contains("4242424242424242"));
    }
}
