//! The types a provider is called with and answers: amounts, keys, ids, the card reference,
//! payment intents and refunds. Currencies are parkd's one [`Currency`]
//! (`parkd_core::tariff`, ISO 4217 upper case); a provider's own spelling is its adapter's
//! business (Stripe's lower case: `stripe::wire`).
//!
//! Every identifier is validated when built, so a value that reaches a URL path or a header
//! is known to be safe there. There is no type for a card number or a security code: the only
//! card type, [`PaymentMethodRef`], holds the provider's token, brand, last four digits and
//! expiry, and refuses unknown fields when deserialized.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use parkd_core::tariff::Currency;
use serde::{Deserialize, Serialize};

use crate::Secret;
use crate::guard;

/// A value that does not fit its type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what}: {reason}")]
pub struct InvalidValue {
    /// What was being built (`idempotency key`, `metadata`, ...).
    pub what: &'static str,
    /// Why it was refused (never the value itself).
    pub reason: &'static str,
}

fn invalid(what: &'static str, reason: &'static str) -> InvalidValue {
    InvalidValue { what, reason }
}

fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Defines a string id: letters, digits and `_` only (safe in a URL path), 1 to 255 long.
macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates a provider id: 1 to 255 ASCII letters, digits or `_`.
            pub fn parse(value: impl Into<String>) -> Result<Self, InvalidValue> {
                let value = value.into();
                if value.is_empty() || value.len() > 255 {
                    return Err(invalid($what, "must be 1 to 255 characters"));
                }
                if !value.chars().all(is_id_char) {
                    return Err(invalid($what, "may hold only letters, digits and _"));
                }
                Ok(Self(value))
            }

            /// The id as the provider spells it.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidValue;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

string_id!(
    /// A payment intent's id at the provider (`pi_...`).
    IntentId,
    "intent id"
);
string_id!(
    /// A refund's id at the provider (`re_...`).
    RefundId,
    "refund id"
);
string_id!(
    /// A webhook event's id at the provider (`evt_...`): the key for de-duplication.
    EventId,
    "event id"
);

/// Our idempotency key for one provider operation: the same key with the same parameters
/// gets the same answer, whatever happened to the first request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// 1 to 255 visible ASCII characters (it travels in an HTTP header).
    pub fn parse(value: impl Into<String>) -> Result<Self, InvalidValue> {
        let value = value.into();
        if value.is_empty() || value.len() > 255 {
            return Err(invalid("idempotency key", "must be 1 to 255 characters"));
        }
        if !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid(
                "idempotency key",
                "may hold only visible ASCII characters",
            ));
        }
        Ok(Self(value))
    }

    /// The key as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for IdempotencyKey {
    type Error = InvalidValue;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(value)
    }
}

impl From<IdempotencyKey> for String {
    fn from(value: IdempotencyKey) -> String {
        value.0
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Key/value pairs stored with an intent or refund at the provider (reservation id, parking
/// session id...). Stripe's limits apply: at most 50 keys, keys up to 40 characters without
/// `[` or `]`, values up to 500 characters; no value may hold card data.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    try_from = "BTreeMap<String, String>",
    into = "BTreeMap<String, String>"
)]
pub struct Metadata(BTreeMap<String, String>);

impl Metadata {
    /// No metadata.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one pair, checking the limits.
    pub fn insert(
        &mut self,
        key: impl Into<String>,
        value: impl Into<String>,
    ) -> Result<(), InvalidValue> {
        let (key, value) = (key.into(), value.into());
        check_metadata_pair(&key, &value)?;
        if !self.0.contains_key(&key) && self.0.len() >= 50 {
            return Err(invalid("metadata", "holds at most 50 keys"));
        }
        self.0.insert(key, value);
        Ok(())
    }

    /// Builder form of [`Metadata::insert`].
    pub fn with(
        mut self,
        key: impl Into<String>,
        value: impl Into<String>,
    ) -> Result<Self, InvalidValue> {
        self.insert(key, value)?;
        Ok(self)
    }

    /// The value under `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// The pairs in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Whether there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn check_metadata_pair(key: &str, value: &str) -> Result<(), InvalidValue> {
    if key.is_empty() || key.chars().count() > 40 {
        return Err(invalid("metadata", "keys must be 1 to 40 characters"));
    }
    if key.contains(['[', ']']) {
        return Err(invalid("metadata", "keys may not contain [ or ]"));
    }
    if value.chars().count() > 500 {
        return Err(invalid("metadata", "values must be at most 500 characters"));
    }
    if guard::contains_card_number(key) || guard::contains_card_number(value) {
        return Err(invalid("metadata", "may not hold a card number"));
    }
    if guard::is_security_code_key(key) || guard::is_card_number_key(key) {
        return Err(invalid("metadata", "may not hold card data"));
    }
    Ok(())
}

impl TryFrom<BTreeMap<String, String>> for Metadata {
    type Error = InvalidValue;
    fn try_from(map: BTreeMap<String, String>) -> Result<Self, Self::Error> {
        let mut metadata = Self::new();
        for (key, value) in map {
            metadata.insert(key, value)?;
        }
        Ok(metadata)
    }
}

impl From<Metadata> for BTreeMap<String, String> {
    fn from(value: Metadata) -> Self {
        value.0
    }
}

/// The provider's token for a payment method (`pm_...` at Stripe, `tok_test_...` for the
/// test provider). Never a card number: a value that contains one is refused.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PaymentMethodToken(String);

impl PaymentMethodToken {
    /// A letter first, then letters, digits and `_`; 1 to 255 long; no card number inside.
    pub fn parse(value: impl Into<String>) -> Result<Self, InvalidValue> {
        let value = value.into();
        if value.is_empty() || value.len() > 255 {
            return Err(invalid(
                "payment method token",
                "must be 1 to 255 characters",
            ));
        }
        if !value.starts_with(|c: char| c.is_ascii_alphabetic()) || !value.chars().all(is_id_char) {
            return Err(invalid(
                "payment method token",
                "must start with a letter and hold only letters, digits and _",
            ));
        }
        if guard::contains_card_number(&value) {
            return Err(invalid(
                "payment method token",
                "looks like a card number; send the provider's token",
            ));
        }
        Ok(Self(value))
    }

    /// The token as the provider issued it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for PaymentMethodToken {
    type Error = InvalidValue;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(value)
    }
}

impl From<PaymentMethodToken> for String {
    fn from(value: PaymentMethodToken) -> String {
        value.0
    }
}

impl fmt::Display for PaymentMethodToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The card network, as far as the provider says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CardBrand {
    /// Visa.
    Visa,
    /// Mastercard.
    Mastercard,
    /// American Express.
    Amex,
    /// Discover.
    Discover,
    /// Diners Club.
    Diners,
    /// JCB.
    Jcb,
    /// UnionPay.
    Unionpay,
    /// Any other network.
    Unknown,
}

impl CardBrand {
    /// Stripe's brand names (`visa`, `mastercard`, `amex`...); anything else is `Unknown`.
    pub fn from_provider(name: &str) -> Self {
        match name {
            "visa" => Self::Visa,
            "mastercard" => Self::Mastercard,
            "amex" => Self::Amex,
            "discover" => Self::Discover,
            "diners" => Self::Diners,
            "jcb" => Self::Jcb,
            "unionpay" => Self::Unionpay,
            _ => Self::Unknown,
        }
    }

    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Visa => "visa",
            Self::Mastercard => "mastercard",
            Self::Amex => "amex",
            Self::Discover => "discover",
            Self::Diners => "diners",
            Self::Jcb => "jcb",
            Self::Unionpay => "unionpay",
            Self::Unknown => "unknown",
        }
    }
}

/// The last four digits of a card: exactly four ASCII digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Last4(String);

impl Last4 {
    /// Exactly four ASCII digits.
    pub fn parse(value: impl Into<String>) -> Result<Self, InvalidValue> {
        let value = value.into();
        if value.len() != 4 || !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid("last4", "must be exactly four digits"));
        }
        Ok(Self(value))
    }

    /// The four digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Last4 {
    type Error = InvalidValue;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(value)
    }
}

impl From<Last4> for String {
    fn from(value: Last4) -> String {
        value.0
    }
}

impl fmt::Display for Last4 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Everything parkd keeps about a card: the provider's token, the brand, the last four
/// digits and, optionally, the expiry. There is deliberately no field for a card number or a
/// security code, and unknown fields are refused when deserializing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "PaymentMethodRefFields")]
pub struct PaymentMethodRef {
    /// The provider's token.
    pub token: PaymentMethodToken,
    /// The network.
    pub brand: CardBrand,
    /// The last four digits.
    pub last4: Last4,
    /// Expiry month, 1 to 12.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp_month: Option<u8>,
    /// Expiry year, four digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp_year: Option<u16>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PaymentMethodRefFields {
    token: PaymentMethodToken,
    brand: CardBrand,
    last4: Last4,
    #[serde(default)]
    exp_month: Option<u8>,
    #[serde(default)]
    exp_year: Option<u16>,
}

impl TryFrom<PaymentMethodRefFields> for PaymentMethodRef {
    type Error = InvalidValue;
    fn try_from(fields: PaymentMethodRefFields) -> Result<Self, Self::Error> {
        Self::new(
            fields.token,
            fields.brand,
            fields.last4,
            fields.exp_month.zip(fields.exp_year),
        )
    }
}

impl PaymentMethodRef {
    /// A card reference; `expiry` is (month 1..=12, year 2000..=2199).
    pub fn new(
        token: PaymentMethodToken,
        brand: CardBrand,
        last4: Last4,
        expiry: Option<(u8, u16)>,
    ) -> Result<Self, InvalidValue> {
        if let Some((month, year)) = expiry {
            if !(1..=12).contains(&month) {
                return Err(invalid("card expiry", "month must be 1 to 12"));
            }
            if !(2000..=2199).contains(&year) {
                return Err(invalid("card expiry", "year must have four digits"));
            }
        }
        Ok(Self {
            token,
            brand,
            last4,
            exp_month: expiry.map(|(month, _)| month),
            exp_year: expiry.map(|(_, year)| year),
        })
    }
}

/// Where a payment intent stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntentStatus {
    /// Created, not yet confirmed with a payment method (Stripe: `requires_payment_method`
    /// without a failed attempt, `requires_confirmation`).
    Created,
    /// The customer must act (3-D Secure...); see the intent's `next_action`.
    RequiresAction,
    /// The provider is working on it; the outcome arrives by webhook or retrieval (Stripe:
    /// `processing`, and `requires_capture` which parkd's automatic capture passes through).
    Processing,
    /// Paid. Terminal.
    Succeeded,
    /// The last attempt failed (declined); another payment method may be tried (Stripe:
    /// `requires_payment_method` with a `last_payment_error`).
    Failed,
    /// Cancelled; nothing was or will be charged. Terminal.
    Cancelled,
}

impl IntentStatus {
    /// Whether no further change can happen.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Cancelled)
    }

    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::RequiresAction => "requires_action",
            Self::Processing => "processing",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for IntentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the customer must do next for an intent in `requires_action`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum NextAction {
    /// Send the customer to this URL (a 3-D Secure page); they come back to `return_url`.
    RedirectToUrl {
        /// Where to send the customer.
        url: String,
        /// Where the provider sends them back, if set.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        return_url: Option<String>,
    },
    /// The provider's browser SDK handles it with the intent's client secret (Stripe:
    /// `use_stripe_sdk`).
    UseProviderSdk,
    /// Another kind of action, by the provider's name for it.
    Other {
        /// The provider's name of the action.
        kind: String,
    },
}

/// A stable reason for a declined payment, independent of the provider's wording.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeclineReason {
    /// Declined without a more specific reason.
    GenericDecline,
    /// Not enough money on the account.
    InsufficientFunds,
    /// Reported lost.
    LostCard,
    /// Reported stolen.
    StolenCard,
    /// Past its expiry date.
    ExpiredCard,
    /// The security code was wrong (checked by the provider; parkd never sees it).
    IncorrectCvc,
    /// The card number was wrong (checked by the provider).
    IncorrectNumber,
    /// The issuer or network failed; trying again may work.
    ProcessingError,
    /// Refused as suspected fraud.
    Fraudulent,
    /// Too many attempts or too much spent.
    CardVelocityExceeded,
    /// The card does not support this purchase or currency.
    CardNotSupported,
    /// The issuer wants strong customer authentication the payment cannot do now.
    AuthenticationRequired,
    /// The issuer says to try again later.
    TryAgainLater,
}

impl DeclineReason {
    /// The snake_case code, stable for clients and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::GenericDecline => "generic_decline",
            Self::InsufficientFunds => "insufficient_funds",
            Self::LostCard => "lost_card",
            Self::StolenCard => "stolen_card",
            Self::ExpiredCard => "expired_card",
            Self::IncorrectCvc => "incorrect_cvc",
            Self::IncorrectNumber => "incorrect_number",
            Self::ProcessingError => "processing_error",
            Self::Fraudulent => "fraudulent",
            Self::CardVelocityExceeded => "card_velocity_exceeded",
            Self::CardNotSupported => "card_not_supported",
            Self::AuthenticationRequired => "authentication_required",
            Self::TryAgainLater => "try_again_later",
        }
    }

    /// From Stripe's `decline_code` (preferred, more specific) and `code`; an unknown code
    /// is a generic decline.
    pub fn from_provider(decline_code: Option<&str>, code: Option<&str>) -> Self {
        decline_code
            .and_then(Self::from_code)
            .or_else(|| code.and_then(Self::from_code))
            .unwrap_or(Self::GenericDecline)
    }

    fn from_code(code: &str) -> Option<Self> {
        Some(match code {
            "insufficient_funds" => Self::InsufficientFunds,
            "lost_card" => Self::LostCard,
            "stolen_card" => Self::StolenCard,
            "expired_card" => Self::ExpiredCard,
            "incorrect_cvc" | "invalid_cvc" => Self::IncorrectCvc,
            "incorrect_number" | "invalid_number" => Self::IncorrectNumber,
            "processing_error" => Self::ProcessingError,
            "fraudulent" | "merchant_blacklist" => Self::Fraudulent,
            "card_velocity_exceeded" | "withdrawal_count_limit_exceeded" => {
                Self::CardVelocityExceeded
            }
            "card_not_supported" | "currency_not_supported" => Self::CardNotSupported,
            "authentication_required" => Self::AuthenticationRequired,
            "try_again_later" | "issuer_not_available" => Self::TryAgainLater,
            "generic_decline" | "do_not_honor" | "card_declined" | "call_issuer" => {
                Self::GenericDecline
            }
            _ => return None,
        })
    }
}

impl fmt::Display for DeclineReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the last attempt on an intent failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentFailure {
    /// The stable reason.
    pub reason: DeclineReason,
    /// The provider's message (card numbers blanked), fit to show the customer.
    pub message: String,
}

/// A payment intent as the provider reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PaymentIntent {
    /// The provider's id.
    pub id: IntentId,
    /// Where it stands.
    pub status: IntentStatus,
    /// The amount asked, in minor units (cents).
    pub amount_minor: u64,
    /// The amount actually received, in minor units.
    pub amount_received_minor: u64,
    /// The currency.
    pub currency: Currency,
    /// What we stored with it.
    pub metadata: Metadata,
    /// The card used, once known (token, brand, last four).
    pub payment_method: Option<PaymentMethodRef>,
    /// What the customer must do, in `requires_action`.
    pub next_action: Option<NextAction>,
    /// Why the last attempt failed, in `failed`.
    pub failure: Option<PaymentFailure>,
    /// The secret the customer's browser needs to complete an action with the provider's
    /// SDK; redacted when printed.
    pub client_secret: Option<Secret>,
    /// When the provider created it.
    pub created: DateTime<Utc>,
}

/// Creating a payment intent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateIntent {
    /// The amount in minor units; at least 1.
    pub amount_minor: u64,
    /// The currency.
    pub currency: Currency,
    /// Our key for this creation: retries send the same one.
    pub idempotency_key: IdempotencyKey,
    /// Reservation id, parking session id...
    pub metadata: Metadata,
    /// The card to charge, if already known.
    pub payment_method: Option<PaymentMethodToken>,
    /// Confirm at once (one round trip instead of two); needs `payment_method`.
    pub confirm: bool,
}

/// Confirming a payment intent: the attempt to charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfirmIntent {
    /// Our key for this confirmation: retries send the same one.
    pub idempotency_key: IdempotencyKey,
    /// The card to charge, unless the intent already has one.
    pub payment_method: Option<PaymentMethodToken>,
    /// Where the provider sends the customer back after a redirect action.
    pub return_url: Option<String>,
}

/// Why money goes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundReason {
    /// Charged twice.
    Duplicate,
    /// Fraud.
    Fraudulent,
    /// The customer asked (a cancelled reservation...).
    RequestedByCustomer,
}

impl RefundReason {
    /// Stripe's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Duplicate => "duplicate",
            Self::Fraudulent => "fraudulent",
            Self::RequestedByCustomer => "requested_by_customer",
        }
    }
}

/// Refunding a succeeded payment, fully or partly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundRequest {
    /// The payment to refund.
    pub intent_id: IntentId,
    /// How much, in minor units; `None` refunds everything not yet refunded.
    pub amount_minor: Option<u64>,
    /// Our key for this refund: retries send the same one.
    pub idempotency_key: IdempotencyKey,
    /// Why.
    pub reason: Option<RefundReason>,
    /// What to store with it.
    pub metadata: Metadata,
}

/// Where a refund stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundStatus {
    /// On its way.
    Pending,
    /// Needs an action (rare for cards).
    RequiresAction,
    /// Done.
    Succeeded,
    /// Failed; the money stayed with us.
    Failed,
    /// Cancelled before it happened.
    Cancelled,
}

impl RefundStatus {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::RequiresAction => "requires_action",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

/// A refund as the provider reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refund {
    /// The provider's id.
    pub id: RefundId,
    /// The payment refunded.
    pub intent_id: IntentId,
    /// The amount, in minor units.
    pub amount_minor: u64,
    /// The currency.
    pub currency: Currency,
    /// Where it stands.
    pub status: RefundStatus,
    /// When the provider created it.
    pub created: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_safe_in_a_path() {
        assert!(IntentId::parse("pi_3N4b2eZvKYlo2C1ab2c").is_ok());
        for bad in ["", "pi/../x", "pi 1", "pi?x=1", &"a".repeat(256)] {
            assert!(IntentId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn idempotency_keys_travel_in_headers() {
        assert!(IdempotencyKey::parse("resv-42:confirm:1").is_ok());
        assert!(IdempotencyKey::parse("with space").is_err());
        assert!(IdempotencyKey::parse("line\nbreak").is_err());
        assert!(IdempotencyKey::parse("").is_err());
    }

    #[test]
    fn a_token_is_never_a_card_number() {
        assert!(PaymentMethodToken::parse("pm_1N3T9k2eZvKYlo2C").is_ok());
        assert!(PaymentMethodToken::parse("tok_test_ok").is_ok());
        assert!(PaymentMethodToken::parse("4242424242424242").is_err());
        assert!(PaymentMethodToken::parse("tok_4242424242424242").is_err());
    }

    #[test]
    fn a_card_reference_refuses_card_data_fields() {
        let ok: PaymentMethodRef = serde_json::from_str(
            r#"{"token":"pm_123","brand":"visa","last4":"4242","exp_month":12,"exp_year":2030}"#,
        )
        .unwrap();
        assert_eq!(ok.last4.as_str(), "4242");
        for bad in [
            r#"{"token":"pm_123","brand":"visa","last4":"4242","number":"4242424242424242"}"#,
            r#"{"token":"pm_123","brand":"visa","last4":"4242","cvc":"123"}"#,
            r#"{"token":"pm_123","brand":"visa","last4":"42424"}"#,
            r#"{"token":"pm_123","brand":"visa","last4":"4242","exp_month":13,"exp_year":2030}"#,
        ] {
            assert!(
                serde_json::from_str::<PaymentMethodRef>(bad).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn metadata_keeps_stripe_limits_and_no_card_data() {
        let mut metadata = Metadata::new();
        metadata.insert("reservation_id", "r-42").unwrap();
        assert!(metadata.insert("a[b]", "x").is_err());
        assert!(metadata.insert("note", "4242 4242 4242 4242").is_err());
        assert!(metadata.insert("cvc", "123").is_err());
        assert!(metadata.insert("k".repeat(41), "x").is_err());
        for i in 0..49 {
            metadata.insert(format!("k{i}"), "v").unwrap();
        }
        assert!(metadata.insert("one_too_many", "v").is_err());
    }

    #[test]
    fn decline_reasons_prefer_the_specific_code() {
        assert_eq!(
            DeclineReason::from_provider(Some("insufficient_funds"), Some("card_declined")),
            DeclineReason::InsufficientFunds
        );
        assert_eq!(
            DeclineReason::from_provider(None, Some("expired_card")),
            DeclineReason::ExpiredCard
        );
        assert_eq!(
            DeclineReason::from_provider(Some("something_new"), Some("card_declined")),
            DeclineReason::GenericDecline
        );
    }
}
