//! `[payments]`: parsing, validation, provider selection, and secrets that never print.

use std::sync::Arc;

use parkd_core::clock::SystemClock;
use parkd_payments::{PaymentsConfig, ProviderKind};

const API_KEY: &str = "sk_live_51VerySecretKeyValue";
const WEBHOOK_NEW: &str = "whsec_NewSigningSecretValue";
const WEBHOOK_OLD: &str = "whsec_OldSigningSecretValue";

fn stripe_toml(extra: &str) -> String {
    format!(
        r#"
provider = "stripe"

[stripe]
api_key = "{API_KEY}"
webhook_secrets = ["{WEBHOOK_NEW}", "{WEBHOOK_OLD}"]
base_url = "http://127.0.0.1:9"
timeout_ms = 1200
{extra}
"#
    )
}

fn parse(text: &str) -> Result<PaymentsConfig, toml::de::Error> {
    toml::from_str(text)
}

#[test]
fn the_default_is_the_test_provider() {
    let config = parse("").unwrap();
    assert_eq!(config.provider, ProviderKind::Test);
    assert_eq!(config.validate(), Ok(()));
    let provider = config.build_provider(Arc::new(SystemClock)).unwrap();
    assert_eq!(provider.name(), "test");
    assert_eq!(config.stripe.timeout_ms, 1500);
    assert_eq!(config.stripe.webhook_tolerance_s, 300);
    assert_eq!(config.stripe.base_url, "https://api.stripe.com");
}

#[test]
fn a_stripe_section_builds_the_stripe_provider() {
    let config = parse(&stripe_toml("")).unwrap();
    assert_eq!(config.provider, ProviderKind::Stripe);
    assert_eq!(config.stripe.webhook_secrets.len(), 2);
    assert_eq!(config.stripe.webhook_secrets[1].expose(), WEBHOOK_OLD);
    let settings = config.stripe.settings().unwrap();
    assert_eq!(settings.timeout.as_millis(), 1200);
    let provider = config.build_provider(Arc::new(SystemClock)).unwrap();
    assert_eq!(provider.name(), "stripe");
}

#[test]
fn secrets_never_print() {
    let config = parse(&stripe_toml("")).unwrap();
    let printed = [
        format!("{config:?}"),
        format!("{config:#?}"),
        toml::to_string(&config).unwrap(),
        serde_json::to_string(&config).unwrap(),
        format!(
            "{:?}",
            config.build_provider(Arc::new(SystemClock)).unwrap()
        ),
        format!("{:?}", config.stripe.settings().unwrap()),
    ];
    for text in printed {
        for secret in [API_KEY, WEBHOOK_NEW, WEBHOOK_OLD] {
            assert!(!text.contains(secret), "{text}");
        }
        assert!(
            text.contains("<redacted>") || text.contains("StripeProvider"),
            "{text}"
        );
    }
}

#[test]
fn unknown_keys_are_refused() {
    let error = parse("provder = \"stripe\"").unwrap_err();
    assert!(error.to_string().contains("provder"), "{error}");
    let error = parse(&stripe_toml("api_secret = \"x\"")).unwrap_err();
    assert!(error.to_string().contains("api_secret"), "{error}");
    assert!(parse("provider = \"paypal\"").is_err());
    assert!(parse("[test]\ndelay = 5").is_err());
}

#[test]
fn a_stripe_config_that_cannot_work_is_refused_without_showing_secrets() {
    let cases = [
        stripe_toml("").replace(&format!("api_key = \"{API_KEY}\""), ""),
        stripe_toml("").replace(API_KEY, "pk_live_publishable"),
        stripe_toml("").replace(
            &format!("webhook_secrets = [\"{WEBHOOK_NEW}\", \"{WEBHOOK_OLD}\"]"),
            "",
        ),
        stripe_toml("").replace(WEBHOOK_OLD, "not_a_whsec"),
        stripe_toml("").replace("timeout_ms = 1200", "timeout_ms = 5000"),
        stripe_toml("").replace("http://127.0.0.1:9", "http://api.stripe.com"),
        stripe_toml("max_retries = 50"),
    ];
    for text in cases {
        let config = parse(&text).unwrap();
        let error = config
            .build_provider(Arc::new(SystemClock))
            .expect_err(&text);
        let message = error.to_string();
        assert!(message.starts_with("payments.stripe."), "{message}");
        for secret in [API_KEY, WEBHOOK_NEW, WEBHOOK_OLD, "pk_live_publishable"] {
            assert!(!message.contains(secret), "{message}");
        }
    }
}

#[test]
fn the_test_provider_delay_is_configurable() {
    let config = parse("[test]\ndelay_ms = 25").unwrap();
    assert_eq!(config.test.delay_ms, 25);
    assert!(config.build_provider(Arc::new(SystemClock)).is_ok());
}
