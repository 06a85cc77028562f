//! Device authentication against the registry.
//!
//! A device logs in with username = its device id = its MQTT client id, and the secret the
//! platform generated for it. Secrets are 256 random bits, so the registry keeps their SHA-256
//! (a slow password hash buys nothing against a brute force of 2^256 and would make a
//! reconnect storm of thousands of sensors cost minutes of CPU). The comparison is constant
//! time.
//!
//! A successful login records the device's [`Grant`] in [`Sessions`], where the protocol guard
//! finds it to check every later PUBLISH and SUBSCRIBE. The will announced in CONNECT is
//! checked here too, since this is the first point where the grant is known.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use dashmap::DashMap;
use parkd_core::ids::DeviceId;
use parkd_core::throttle::LogThrottle;
use parkd_core::topic::Grant;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::metrics::BrokerMetrics;

/// What the registry knows about a device, as far as the broker cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceCredential {
    /// What the device may publish and subscribe to.
    pub grant: Grant,
    /// SHA-256 of its secret; `None` means it cannot log in.
    pub secret_sha256: Option<[u8; 32]>,
    /// A disabled device is refused.
    pub disabled: bool,
}

/// Where credentials come from (the store, in production).
#[async_trait]
pub trait CredentialSource: Send + Sync + std::fmt::Debug {
    /// Looks a device up; `Err` when the registry cannot be reached (the login is refused).
    async fn credential(&self, device: &DeviceId) -> Result<Option<DeviceCredential>, String>;
}

/// SHA-256 of a device secret, as stored.
pub fn hash_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// State shared between the authenticator and every connection's guard.
#[derive(Debug, Default)]
pub struct Sessions {
    /// Grant of each client id that logged in with credentials.
    pub(crate) grants: DashMap<String, Grant>,
    /// Will topic announced in CONNECT, waiting for the login check.
    pub(crate) pending_wills: DashMap<String, String>,
}

/// Checks logins; cloned into rumqttd's auth handler.
#[derive(Debug, Clone)]
pub struct Authenticator {
    source: Arc<dyn CredentialSource>,
    sessions: Arc<Sessions>,
    metrics: BrokerMetrics,
    throttle: Arc<LogThrottle>,
    allow_anonymous: bool,
}

impl Authenticator {
    /// An authenticator over `source`.
    pub fn new(
        source: Arc<dyn CredentialSource>,
        sessions: Arc<Sessions>,
        metrics: BrokerMetrics,
        allow_anonymous: bool,
    ) -> Self {
        Self {
            source,
            sessions,
            metrics,
            throttle: Arc::new(LogThrottle::new(Duration::from_secs(5))),
            allow_anonymous,
        }
    }

    fn refuse(&self, client_id: &str, why: &str) -> bool {
        self.metrics
            .connections_refused
            .with_label_values(&["auth_failed"])
            .inc();
        self.sessions.pending_wills.remove(client_id);
        if let Some(suppressed) = self.throttle.allow(Instant::now()) {
            tracing::warn!(client_id, why, suppressed, "mqtt login refused");
        }
        false
    }

    /// rumqttd's auth handler: `true` admits the connection.
    pub async fn authenticate(
        &self,
        client_id: String,
        username: String,
        password: String,
    ) -> bool {
        // The guard gives clients without credentials an empty login, only when anonymous
        // access is allowed, and has already checked their will.
        if username.is_empty() {
            return self.allow_anonymous || self.refuse(&client_id, "anonymous access disabled");
        }
        let Ok(device) = DeviceId::parse(&client_id) else {
            return self.refuse(&client_id, "client id is not a device id");
        };
        if username != client_id {
            return self.refuse(&client_id, "username differs from client id");
        }
        let credential = match self.source.credential(&device).await {
            Ok(Some(credential)) => credential,
            Ok(None) => return self.refuse(&client_id, "unknown device"),
            Err(error) => {
                tracing::error!(client_id, %error, "device registry unreachable; login refused");
                return self.refuse(&client_id, "registry unreachable");
            }
        };
        if credential.disabled {
            return self.refuse(&client_id, "device disabled");
        }
        let Some(expected) = credential.secret_sha256 else {
            return self.refuse(&client_id, "device has no secret");
        };
        let given = hash_secret(&password);
        if !bool::from(given.ct_eq(&expected)) {
            return self.refuse(&client_id, "wrong secret");
        }
        if let Some((_, will_topic)) = self.sessions.pending_wills.remove(&client_id)
            && let Err(denied) = credential.grant.check_publish(&will_topic)
        {
            self.metrics
                .acl_denied
                .with_label_values(&["will", denied.label()])
                .inc();
            return self.refuse(&client_id, "will topic outside the device's grant");
        }
        self.sessions.grants.insert(client_id, credential.grant);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parkd_core::ids::{LotId, SpotId};
    use prometheus::Registry;

    #[derive(Debug)]
    struct OneDevice(DeviceCredential);

    #[async_trait]
    impl CredentialSource for OneDevice {
        async fn credential(&self, device: &DeviceId) -> Result<Option<DeviceCredential>, String> {
            Ok((device.as_str() == "s1").then(|| self.0.clone()))
        }
    }

    fn authenticator(disabled: bool) -> (Authenticator, Arc<Sessions>, BrokerMetrics) {
        let metrics = BrokerMetrics::new(&Registry::new()).unwrap();
        let sessions = Arc::new(Sessions::default());
        let source = Arc::new(OneDevice(DeviceCredential {
            grant: Grant::Sensor {
                lot: LotId::parse("g").unwrap(),
                spot: SpotId::parse("1").unwrap(),
            },
            secret_sha256: Some(hash_secret("right")),
            disabled,
        }));
        (
            Authenticator::new(source, sessions.clone(), metrics.clone(), false),
            sessions,
            metrics,
        )
    }

    #[tokio::test]
    async fn admits_only_the_bound_identity_with_the_right_secret() {
        let (auth, sessions, metrics) = authenticator(false);
        let login = |c: &str, u: &str, p: &str| auth.authenticate(c.into(), u.into(), p.into());
        assert!(!login("s1", "s1", "wrong").await);
        assert!(!login("s1", "s2", "right").await);
        assert!(!login("s2", "s2", "right").await);
        assert!(!login("s/1", "s/1", "right").await);
        assert!(sessions.grants.is_empty());
        assert!(login("s1", "s1", "right").await);
        assert!(sessions.grants.contains_key("s1"));
        let refused = metrics
            .connections_refused
            .with_label_values(&["auth_failed"])
            .get();
        assert_eq!(refused, 4);
    }

    #[tokio::test]
    async fn disabled_devices_and_foreign_wills_are_refused() {
        let (auth, _, _) = authenticator(true);
        assert!(
            !auth
                .authenticate("s1".into(), "s1".into(), "right".into())
                .await
        );

        let (auth, sessions, metrics) = authenticator(false);
        sessions
            .pending_wills
            .insert("s1".into(), "parking/v1/g/spots/2/status".into());
        assert!(
            !auth
                .authenticate("s1".into(), "s1".into(), "right".into())
                .await
        );
        assert_eq!(
            metrics
                .acl_denied
                .with_label_values(&["will", "other_device"])
                .get(),
            1
        );
        sessions
            .pending_wills
            .insert("s1".into(), "parking/v1/g/spots/1/status".into());
        assert!(
            auth.authenticate("s1".into(), "s1".into(), "right".into())
                .await
        );
    }
}
