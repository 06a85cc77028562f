//! Accounts: roles, e-mail addresses, the password policy, vehicles and session tokens. Pure:
//! hashing (Argon2id, slow on purpose) and randomness live with their callers.
//!
//! **Passwords** (NIST SP 800-63B and OWASP ASVS): at least 12 characters, up to 256 accepted
//! unchanged (no truncation, no composition rules, spaces and any Unicode allowed, counted in
//! characters after NFC-free trimming of nothing: a password is used exactly as typed). Refused:
//! passwords on the built-in list of the most common ones, passwords made of one repeated
//! character or one short repeated pattern, keyboard or alphabet runs, and passwords that
//! contain the account's own e-mail name.
//!
//! **Session tokens**: 32 random bytes (256 bits) from the OS generator, sent to the client
//! once as 43 base64url characters; the store keeps only their SHA-256, so a leaked database
//! does not leak sessions.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::vehicle::VehicleType;

/// Shortest password accepted, in characters.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Longest password accepted, in characters.
pub const MAX_PASSWORD_CHARS: usize = 256;
/// Longest e-mail address, in bytes (RFC 5321's path limit).
pub const MAX_EMAIL_LEN: usize = 254;

/// What an account may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Role {
    /// Finds, reserves and pays for parking.
    Driver,
    /// Runs a garage: gates, spots, emergencies, reports.
    Operator,
    /// Everything, including accounts and configuration.
    Admin,
}

impl Role {
    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Driver => "driver",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// Whether this role includes `other`'s rights (admin ⊇ operator ⊇ driver).
    pub const fn includes(self, other: Role) -> bool {
        (self as u8) >= (other as u8)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = AccountError;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        match raw {
            "driver" => Ok(Role::Driver),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            other => Err(AccountError::UnknownRole(other.chars().take(32).collect())),
        }
    }
}

/// Why an account input is refused. The texts are safe to show to the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountError {
    /// Not an e-mail address.
    #[error("not a valid e-mail address")]
    InvalidEmail,
    /// Shorter than [`MIN_PASSWORD_CHARS`].
    #[error("the password must have at least {MIN_PASSWORD_CHARS} characters")]
    PasswordTooShort,
    /// Longer than [`MAX_PASSWORD_CHARS`].
    #[error("the password must have at most {MAX_PASSWORD_CHARS} characters")]
    PasswordTooLong,
    /// Common, a run or a repetition, or contains the e-mail name.
    #[error("this password is too easy to guess ({0}); choose a longer phrase of unrelated words")]
    PasswordGuessable(&'static str),
    /// Not a role.
    #[error("unknown role {0:?} (expected driver, operator or admin)")]
    UnknownRole(String),
    /// Not a plate.
    #[error("a plate has 1 to 16 letters, digits, spaces or hyphens")]
    InvalidPlate,
    /// A vehicle that is not in the table.
    #[error("a {0} cannot be an EV or carry an accessible permit here; see docs/accounts.md")]
    InvalidVehicle(&'static str),
}

/// A normalised e-mail address: trimmed, lower-cased, checked for one `@` with a dotted domain.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Email(String);

impl Email {
    /// Validates and normalises.
    pub fn parse(raw: &str) -> Result<Email, AccountError> {
        let email = raw.trim().to_lowercase();
        if email.is_empty() || email.len() > MAX_EMAIL_LEN {
            return Err(AccountError::InvalidEmail);
        }
        let Some((local, domain)) = email.rsplit_once('@') else {
            return Err(AccountError::InvalidEmail);
        };
        let local_ok = !local.is_empty()
            && local.len() <= 64
            && !local.contains('@')
            && local
                .chars()
                .all(|c| !c.is_whitespace() && !c.is_control() && !"<>()[]\\,;:\"".contains(c));
        let domain_ok = domain.len() >= 3
            && domain.contains('.')
            && !domain.starts_with(['.', '-'])
            && !domain.ends_with(['.', '-'])
            && !domain.contains("..")
            && domain
                .chars()
                .all(|c| c.is_alphanumeric() || c == '.' || c == '-');
        if local_ok && domain_ok {
            Ok(Email(email))
        } else {
            Err(AccountError::InvalidEmail)
        }
    }

    /// The address.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part before the `@`.
    pub fn local_part(&self) -> &str {
        self.0.rsplit_once('@').map_or(&self.0, |(local, _)| local)
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Email {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Email::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// Passwords people pick first, all at least [`MIN_PASSWORD_CHARS`] long (shorter ones fail
/// the length rule anyway), lower-cased. Compared after lower-casing and removing a trailing
/// run of digits and punctuation, so `Password2024!` is caught as `password`... only when the
/// rest is on this list or too short.
const COMMON: &[&str] = &[
    "password",
    "passwordpassword",
    "password1234",
    "passw0rdpassw0rd",
    "mypassword",
    "mysecretpassword",
    "letmeinletmein",
    "letmein",
    "iloveyou",
    "iloveyouforever",
    "welcome",
    "welcometo",
    "changeme",
    "changemenow",
    "administrator",
    "admin",
    "adminadmin",
    "qwertyuiop",
    "qwertyuiopasdfghjkl",
    "asdfghjkl",
    "zxcvbnm",
    "qwerty",
    "qwertzuiop",
    "azertyuiop",
    "1qaz2wsx3edc",
    "1q2w3e4r5t6y",
    "q1w2e3r4t5y6",
    "abcdefghijkl",
    "abcdefghijklmnop",
    "correcthorsebatterystaple",
    "trustno1",
    "sunshine",
    "princess",
    "football",
    "baseball",
    "basketball",
    "superman",
    "batman",
    "starwars",
    "dragon",
    "monkey",
    "shadow",
    "master",
    "michael",
    "jennifer",
    "parking",
    "parkingspot",
    "parkinglot",
    "parkd",
    "carpark",
    "garage",
    "secret",
    "topsecret",
    "default",
    "guest",
    "login",
    "access",
    "letmeinplease",
    "opensesame",
    "passphrase",
    "thisismypassword",
    "thisisapassword",
    "youshallnotpass",
    "helloworld",
    "hello",
    "summer",
    "winter",
    "spring",
    "autumn",
];

/// Keyboard rows and the alphabet, for runs like `qwertyuiop` or `abcdefghijkl`.
const RUNS: &[&str] = &[
    "abcdefghijklmnopqrstuvwxyz",
    "zyxwvutsrqponmlkjihgfedcba",
    "01234567890",
    "09876543210",
    "qwertyuiop",
    "poiuytrewq",
    "asdfghjkl",
    "lkjhgfdsa",
    "zxcvbnm",
    "mnbvcxz",
    "qwertyuiopasdfghjklzxcvbnm",
    "qwertzuiop",
    "azertyuiop",
];

/// Checks a new password against the policy (see the module documentation).
pub fn check_password(password: &str, email: Option<&Email>) -> Result<(), AccountError> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Err(AccountError::PasswordTooShort);
    }
    if chars > MAX_PASSWORD_CHARS {
        return Err(AccountError::PasswordTooLong);
    }
    let lower = password.to_lowercase();
    let core = lower.trim_end_matches(|c: char| c.is_ascii_digit() || c.is_ascii_punctuation());
    let core = core.trim_start_matches(|c: char| c.is_ascii_digit() || c.is_ascii_punctuation());
    if COMMON.contains(&lower.as_str()) || COMMON.contains(&core) {
        return Err(AccountError::PasswordGuessable("a common password"));
    }
    if core.chars().count() < 6 {
        return Err(AccountError::PasswordGuessable("mostly digits or symbols"));
    }
    if is_repetition(&lower) {
        return Err(AccountError::PasswordGuessable("a repeated pattern"));
    }
    if RUNS.iter().any(|run| run.contains(lower.as_str())) || is_run(&lower) {
        return Err(AccountError::PasswordGuessable(
            "a keyboard or alphabet run",
        ));
    }
    if let Some(email) = email {
        let local = email.local_part();
        if local.chars().count() >= 4 && lower.contains(local) {
            return Err(AccountError::PasswordGuessable(
                "it contains your e-mail name",
            ));
        }
    }
    Ok(())
}

/// `abcabcabcabc`, `xxxxxxxxxxxx`: the whole string is one short unit repeated.
fn is_repetition(password: &str) -> bool {
    let chars: Vec<char> = password.chars().collect();
    (1..=chars.len() / 3).any(|unit| {
        chars.len().is_multiple_of(unit) && chars.chunks(unit).all(|chunk| chunk == &chars[..unit])
    })
}

/// Every character one code point above (or below) the previous: `123456789012`-like runs are
/// caught by [`RUNS`]; this catches other monotone sequences such as `lmnopqrstuvw`.
fn is_run(password: &str) -> bool {
    let codes: Vec<u32> = password.chars().map(u32::from).collect();
    let steps: Vec<i64> = codes
        .windows(2)
        .map(|pair| i64::from(pair[1]) - i64::from(pair[0]))
        .collect();
    steps.iter().all(|step| *step == 1) || steps.iter().all(|step| *step == -1)
}

/// A vehicle's body, which sets the bay size it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum VehicleClass {
    /// A motorcycle or scooter.
    Motorcycle,
    /// A small car.
    Compact,
    /// An ordinary car.
    Car,
    /// A van or other large vehicle.
    Van,
}

/// What a driver registers: the body, whether it charges, whether the driver holds an
/// accessible-parking permit. [`VehicleProfile::vehicle_type`] maps it onto the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VehicleProfile {
    /// The body.
    pub class: VehicleClass,
    /// An electric vehicle that wants a charger.
    pub ev: bool,
    /// The driver holds an accessible-parking permit for it.
    pub accessible_permit: bool,
}

impl VehicleProfile {
    /// Refuses combinations the table has no place for (an EV or permit motorcycle).
    pub fn validate(&self) -> Result<(), AccountError> {
        if self.class == VehicleClass::Motorcycle && (self.ev || self.accessible_permit) {
            return Err(AccountError::InvalidVehicle("motorcycle"));
        }
        Ok(())
    }

    /// The vehicle type it asks availability and allocation for. An accessible permit wins
    /// over EV (the accessible bay is the need; it may still use any standard bay); a van
    /// stays a van (EV and accessible bays are car-sized here).
    pub fn vehicle_type(&self) -> VehicleType {
        match self.class {
            VehicleClass::Motorcycle => VehicleType::Motorcycle,
            VehicleClass::Van => VehicleType::Van,
            _ if self.accessible_permit => VehicleType::Accessible,
            _ if self.ev => VehicleType::Ev,
            VehicleClass::Compact => VehicleType::Compact,
            VehicleClass::Car => VehicleType::Car,
        }
    }
}

/// A licence plate: upper-cased, inner whitespace collapsed; compared without spaces and
/// hyphens ([`Plate::key`]), since readers and people disagree on them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Plate(String);

impl Plate {
    /// Validates and normalises.
    pub fn parse(raw: &str) -> Result<Plate, AccountError> {
        let plate = raw.split_whitespace().collect::<Vec<_>>().join(" ");
        let plate = plate.to_uppercase();
        let ok = !plate.is_empty()
            && plate.chars().count() <= 16
            && plate
                .chars()
                .all(|c| c.is_alphanumeric() || c == ' ' || c == '-')
            && plate.chars().any(char::is_alphanumeric);
        if ok {
            Ok(Plate(plate))
        } else {
            Err(AccountError::InvalidPlate)
        }
    }

    /// As shown.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// For matching: letters and digits only.
    pub fn key(&self) -> String {
        self.0.chars().filter(|c| c.is_alphanumeric()).collect()
    }
}

impl<'de> Deserialize<'de> for Plate {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Plate::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// A session token as the client holds it: 43 base64url characters (32 bytes).
pub const TOKEN_CHARS: usize = 43;

/// Encodes 32 random bytes as a session token (base64url, no padding).
pub fn encode_token(bytes: &[u8; 32]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(TOKEN_CHARS);
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for byte in bytes {
        buffer = (buffer << 8) | u32::from(*byte);
        bits += 8;
        while bits >= 6 {
            bits -= 6;
            out.push(char::from(ALPHABET[((buffer >> bits) & 63) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((buffer << (6 - bits)) & 63) as usize]));
    }
    out
}

/// Whether a presented token has the shape of one of ours (cheap pre-check before hashing).
pub fn token_shape_ok(token: &str) -> bool {
    token.len() == TOKEN_CHARS
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn email(raw: &str) -> Email {
        Email::parse(raw).unwrap()
    }

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(
            email("  Ana.Driver@Example.COM ").as_str(),
            "ana.driver@example.com"
        );
        for bad in [
            "",
            "ana",
            "ana@",
            "@example.com",
            "ana@example",
            "a b@example.com",
            "ana@exa..mple.com",
            "ana@-example.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Email::parse(&format!("{}@example.com", "a".repeat(65))).is_err());
    }

    #[test]
    fn the_password_policy() {
        let me = email("ana.driver@example.com");
        assert_eq!(
            check_password("short", None),
            Err(AccountError::PasswordTooShort)
        );
        assert_eq!(
            check_password(&"x".repeat(257), None),
            Err(AccountError::PasswordTooLong)
        );
        let long: String = (0..40).map(|i| format!("word{i:02} ")).collect();
        assert_eq!(long.chars().count(), 280);
        assert!(
            check_password(&long[..256], None).is_ok(),
            "256 characters, unchanged"
        );
        assert!(matches!(
            check_password(&"long phrase ".repeat(21), None),
            Err(AccountError::PasswordGuessable(_))
        ));
        for weak in [
            "password1234",
            "Password2024!",
            "qwertyuiopas",
            "abcdefghijkl",
            "123456789012",
            "aaaaaaaaaaaa",
            "abcabcabcabc",
            "!!2024parking",
            "correcthorsebatterystaple",
            "lmnopqrstuvw",
        ] {
            assert!(
                matches!(
                    check_password(weak, None),
                    Err(AccountError::PasswordGuessable(_))
                ),
                "{weak} accepted"
            );
        }
        assert!(matches!(
            check_password("my ana.driver secret", Some(&me)),
            Err(AccountError::PasswordGuessable(_))
        ));
        assert!(check_password("violet tram under lantern", Some(&me)).is_ok());
        assert!(
            check_password("Zürich Parkhaus 7 blau", None).is_ok(),
            "unicode and spaces"
        );
        // Counted in characters, not bytes: 12 two-byte characters pass.
        assert!(check_password("ééééééßßßßßß", None).is_ok());
    }

    #[test]
    fn vehicles_map_onto_the_table() {
        let car = |ev, accessible_permit| VehicleProfile {
            class: VehicleClass::Car,
            ev,
            accessible_permit,
        };
        assert_eq!(car(false, false).vehicle_type(), VehicleType::Car);
        assert_eq!(car(true, false).vehicle_type(), VehicleType::Ev);
        assert_eq!(car(true, true).vehicle_type(), VehicleType::Accessible);
        let van = VehicleProfile {
            class: VehicleClass::Van,
            ev: true,
            accessible_permit: false,
        };
        assert_eq!(van.vehicle_type(), VehicleType::Van);
        let bike = VehicleProfile {
            class: VehicleClass::Motorcycle,
            ev: true,
            accessible_permit: false,
        };
        assert!(bike.validate().is_err());
    }

    #[test]
    fn plates() {
        let plate = Plate::parse("  b-ab  1234 ").unwrap();
        assert_eq!(plate.as_str(), "B-AB 1234");
        assert_eq!(plate.key(), "BAB1234");
        for bad in ["", "   ", "--", "AB/12", &"A".repeat(17)] {
            assert!(Plate::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn roles_order() {
        assert!(Role::Admin.includes(Role::Operator));
        assert!(Role::Operator.includes(Role::Driver));
        assert!(!Role::Driver.includes(Role::Operator));
        assert_eq!("operator".parse::<Role>(), Ok(Role::Operator));
        assert!("root".parse::<Role>().is_err());
    }

    proptest! {
        #[test]
        fn tokens_are_43_urlsafe_characters(bytes in any::<[u8; 32]>()) {
            let token = encode_token(&bytes);
            prop_assert_eq!(token.len(), TOKEN_CHARS);
            prop_assert!(token_shape_ok(&token));
        }

        #[test]
        fn policy_and_parsers_never_panic(raw in "\\PC{0,300}") {
            let _ = check_password(&raw, None);
            let _ = Email::parse(&raw);
            let _ = Plate::parse(&raw);
        }
    }
}
