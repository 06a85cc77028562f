//! `[payments]` in the configuration: which provider, and how to reach it.
//!
//! ```toml
//! [payments]
//! provider = "stripe"            # "test" (the default) or "stripe"
//!
//! [payments.test]
//! delay_ms = 0                   # slow every test-provider answer down (demo, tests)
//!
//! [payments.stripe]
//! api_key = "sk_live_..."        # or PARKD__PAYMENTS__STRIPE__API_KEY
//! webhook_secrets = ["whsec_new", "whsec_old"]   # every active secret during a rotation
//! base_url = "https://api.stripe.com"
//! api_version = "2024-06-20"
//! timeout_ms = 1500              # one call's budget, retries included; at most 2000
//! max_retries = 2
//! webhook_tolerance_s = 300
//! ```
//!
//! Every section refuses unknown keys; keys and secrets are [`Secret`]s, so printing the
//! configuration shows `<redacted>`.

use std::sync::Arc;
use std::time::Duration;

use parkd_core::clock::Clock;
use serde::{Deserialize, Serialize};

use crate::Provider;
use crate::Secret;
use crate::stripe::{
    DEFAULT_API_VERSION, DEFAULT_BASE_URL, DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT, StripeProvider,
    StripeSettings,
};
use crate::test_provider::TestProvider;

/// A configuration that cannot work; the message names the key, never a secret's value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

impl ConfigError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// Which provider takes payments.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// The in-process test provider (no account needed): the default.
    #[default]
    Test,
    /// Stripe.
    Stripe,
}

/// `[payments]`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PaymentsConfig {
    /// `test` or `stripe`.
    pub provider: ProviderKind,
    /// The test provider.
    pub test: TestProviderConfig,
    /// Stripe (provider = "stripe").
    pub stripe: StripeConfig,
}

/// `[payments.test]`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TestProviderConfig {
    /// Added to every answer, in milliseconds.
    pub delay_ms: u64,
}

/// `[payments.stripe]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StripeConfig {
    /// The secret (`sk_...`) or restricted (`rk_...`) API key.
    pub api_key: Option<Secret>,
    /// The webhook endpoint's signing secrets (`whsec_...`): the new and the old one during a
    /// rotation.
    pub webhook_secrets: Vec<Secret>,
    /// The API's address; plain http is accepted only on loopback (a local mock).
    pub base_url: String,
    /// `Stripe-Version`.
    pub api_version: String,
    /// One call's budget, retries included, in milliseconds (at most 2000: a payment is
    /// answered at least "pending" within 2 s).
    pub timeout_ms: u64,
    /// Retries after the first attempt, within the budget.
    pub max_retries: u32,
    /// Largest accepted distance between a webhook signature's time and now, in seconds.
    pub webhook_tolerance_s: u64,
}

impl Default for StripeConfig {
    fn default() -> Self {
        Self {
            api_key: None,
            webhook_secrets: Vec::new(),
            base_url: DEFAULT_BASE_URL.to_owned(),
            api_version: DEFAULT_API_VERSION.to_owned(),
            timeout_ms: DEFAULT_TIMEOUT.as_millis() as u64,
            max_retries: DEFAULT_MAX_RETRIES,
            webhook_tolerance_s: crate::webhook::DEFAULT_TOLERANCE.as_secs(),
        }
    }
}

impl StripeConfig {
    /// Checks the section and turns it into settings for [`StripeProvider::new`].
    pub fn settings(&self) -> Result<StripeSettings, ConfigError> {
        let Some(api_key) = self.api_key.as_ref().filter(|key| !key.is_empty()) else {
            return Err(ConfigError::new(
                "payments.stripe.api_key is required when payments.provider = \"stripe\"",
            ));
        };
        if !(api_key.expose().starts_with("sk_") || api_key.expose().starts_with("rk_")) {
            return Err(ConfigError::new(
                "payments.stripe.api_key must be a secret (sk_...) or restricted (rk_...) key",
            ));
        }
        if self.webhook_secrets.is_empty() {
            return Err(ConfigError::new(
                "payments.stripe.webhook_secrets needs at least one signing secret (whsec_...)",
            ));
        }
        if self
            .webhook_secrets
            .iter()
            .any(|secret| !secret.expose().starts_with("whsec_"))
        {
            return Err(ConfigError::new(
                "payments.stripe.webhook_secrets must all be signing secrets (whsec_...)",
            ));
        }
        if !(100..=2000).contains(&self.timeout_ms) {
            return Err(ConfigError::new(
                "payments.stripe.timeout_ms must be between 100 and 2000",
            ));
        }
        if self.max_retries > 5 {
            return Err(ConfigError::new("payments.stripe.max_retries is at most 5"));
        }
        if !(1..=3600).contains(&self.webhook_tolerance_s) {
            return Err(ConfigError::new(
                "payments.stripe.webhook_tolerance_s must be between 1 and 3600",
            ));
        }
        Ok(StripeSettings {
            api_key: api_key.clone(),
            base_url: self.base_url.clone(),
            api_version: self.api_version.clone(),
            timeout: Duration::from_millis(self.timeout_ms),
            max_retries: self.max_retries,
        })
    }

    /// The webhook tolerance as a duration.
    pub fn webhook_tolerance(&self) -> Duration {
        Duration::from_secs(self.webhook_tolerance_s)
    }
}

impl PaymentsConfig {
    /// Checks the section (without building anything).
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self.provider {
            ProviderKind::Test => Ok(()),
            ProviderKind::Stripe => self.stripe.settings().map(|_| ()),
        }
    }

    /// The configured provider. Builds no connection yet; `clock` dates the test provider's
    /// objects.
    pub fn build_provider(&self, clock: Arc<dyn Clock>) -> Result<Arc<dyn Provider>, ConfigError> {
        match self.provider {
            ProviderKind::Test => Ok(Arc::new(
                TestProvider::new(clock).with_delay(Duration::from_millis(self.test.delay_ms)),
            )),
            ProviderKind::Stripe => Ok(Arc::new(StripeProvider::new(&self.stripe.settings()?)?)),
        }
    }
}
