//! Validated identifiers.
//!
//! Lot, spot and gate ids appear as single MQTT topic levels, device ids are MQTT client ids.
//! Both must therefore never contain the MQTT separators and wildcards (`/`, `+`, `#`) nor the
//! `$` that marks system topics; rumqttd 0.20 also panics on such client ids (see
//! `ARCHITECTURE.md`). The grammar is deliberately narrow: 1 to 64 characters of ASCII letters,
//! digits, `-` and `_` (device ids may also use `.` and `:`, common in hardware serials).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// Longest identifier accepted, in bytes.
pub const MAX_ID_LEN: usize = 64;

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The string is empty.
    #[error("identifier is empty")]
    Empty,
    /// The string is longer than [`MAX_ID_LEN`].
    #[error("identifier is longer than {MAX_ID_LEN} bytes")]
    TooLong,
    /// The string has a character outside the grammar.
    #[error("identifier has a forbidden character {0:?} (allowed: A-Z a-z 0-9 - _{1})")]
    BadChar(char, &'static str),
}

fn validate(raw: &str, extra: &'static str) -> Result<(), IdError> {
    if raw.is_empty() {
        return Err(IdError::Empty);
    }
    if raw.len() > MAX_ID_LEN {
        return Err(IdError::TooLong);
    }
    let extra_chars = extra.trim();
    for c in raw.chars() {
        let ok = c.is_ascii_alphanumeric() || c == '-' || c == '_' || extra_chars.contains(c);
        if !ok {
            return Err(IdError::BadChar(c, extra));
        }
    }
    Ok(())
}

macro_rules! identifier {
    ($(#[$meta:meta])* $name:ident, $extra:literal) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Parses and validates an identifier.
            pub fn parse(raw: &str) -> Result<Self, IdError> {
                validate(raw, $extra)?;
                Ok(Self(raw.to_owned()))
            }

            /// The identifier as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(raw: &str) -> Result<Self, IdError> {
                Self::parse(raw)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(deserializer)?;
                Self::parse(&raw).map_err(serde::de::Error::custom)
            }
        }
    };
}

identifier!(
    /// A parking lot (one garage or surface lot).
    LotId,
    ""
);
identifier!(
    /// A spot within a lot, e.g. `L2-117`.
    SpotId,
    ""
);
identifier!(
    /// A barrier gate within a lot.
    GateId,
    ""
);
identifier!(
    /// A level (floor) of a lot, e.g. `L2`.
    LevelId,
    ""
);
identifier!(
    /// A zone of a lot (a colour, a wing, a row), e.g. `L2-east`.
    ZoneId,
    ""
);
identifier!(
    /// A device: a spot sensor, a gate controller or an observer. It is the MQTT client id.
    DeviceId,
    " .:"
);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_the_grammar() {
        assert!(LotId::parse("garage-1").is_ok());
        assert!(SpotId::parse("L2_117").is_ok());
        assert!(DeviceId::parse("sensor.00:1A:2B").is_ok());
    }

    #[test]
    fn refuses_mqtt_specials_and_junk() {
        for bad in [
            "",
            "a/b",
            "a+b",
            "a#",
            "$SYS",
            "spot 1",
            "é",
            &"x".repeat(65),
        ] {
            assert!(LotId::parse(bad).is_err(), "{bad:?} accepted as lot");
            assert!(DeviceId::parse(bad).is_err(), "{bad:?} accepted as device");
        }
        assert!(SpotId::parse("a.b").is_err());
    }

    #[test]
    fn deserialize_validates() {
        assert!(serde_json::from_str::<LotId>("\"ok\"").is_ok());
        assert!(serde_json::from_str::<LotId>("\"a/b\"").is_err());
    }

    proptest! {
        #[test]
        fn valid_ids_never_contain_mqtt_specials(raw in "\\PC{0,80}") {
            if let Ok(id) = DeviceId::parse(&raw) {
                prop_assert!(!id.as_str().contains(['/', '+', '#', '$']));
                prop_assert!(!id.as_str().is_empty() && id.as_str().len() <= MAX_ID_LEN);
            }
        }
    }
}
