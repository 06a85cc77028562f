//! [`Secret`]: a credential (a provider's API key, a webhook signing secret, a broker
//! password) that never prints.
//!
//! `Debug`, `Display` and `Serialize` all write [`REDACTED`], so a secret inside a config
//! struct cannot reach a log line, an error message or `parkd config print`. The value is
//! read only through [`Secret::expose`], at the one place that uses it. It deserializes from
//! a plain string.
//!
//! It lives here, in the crate every other one depends on, so that the payments crate and
//! the `parkd` binary's configuration share one type and one redaction text.

use std::fmt;

use serde::{Deserialize, Serialize, Serializer};

/// What a [`Secret`] prints as. The same text replaces a password inside a printed database
/// URL, so `parkd config print` shows one spelling.
pub const REDACTED: &str = "<redacted>";

/// A value that must never reach a log, a terminal or an error message.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; call only where it is sent or used as a key.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the secret is empty (an unset key in a config file).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_its_value() {
        let secret = Secret::new("sk_test_supersecret");
        assert_eq!(format!("{secret:?}"), REDACTED);
        assert_eq!(format!("{secret}"), REDACTED);
        assert_eq!(format!("{secret:#?}"), REDACTED);
        assert_eq!(
            serde_json::to_string(&secret).unwrap(),
            format!("\"{REDACTED}\"")
        );
        assert_eq!(secret.expose(), "sk_test_supersecret");
    }

    #[test]
    fn deserializes_from_a_plain_string() {
        let secret: Secret = serde_json::from_str("\"whsec_abc\"").unwrap();
        assert_eq!(secret.expose(), "whsec_abc");
        assert!(!secret.is_empty());
        assert!(Secret::default().is_empty());
        assert_eq!(Secret::from("x".to_owned()), Secret::from("x"));
    }
}
