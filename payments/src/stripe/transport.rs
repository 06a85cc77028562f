//! The HTTP side of the Stripe adapter: one pooled hyper client, Stripe's headers, a time
//! budget per call, and retries only where Stripe documents them as safe.
//!
//! Every call gets one deadline (`timeout`, 1.5 s by default) that covers all its attempts
//! and the waits between them, so a caller always has an answer in time to tell its client
//! "pending" within 2 s. Retries reuse the request's idempotency key, and happen on:
//! connection errors, 409 (another request with the key is in flight), 429 (refused by the
//! rate limiter, before anything ran) and 5xx, unless Stripe answers `Stripe-Should-Retry:
//! false`; `Stripe-Should-Retry: true` makes any answer retryable. Nothing else is retried.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, USER_AGENT};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rand::Rng;
use tokio::time::Instant;

use super::wire;
use crate::Secret;
use crate::config::ConfigError;
use crate::error::ProviderError;
use crate::types::IdempotencyKey;

#[cfg(feature = "tls")]
type Connector = hyper_rustls::HttpsConnector<HttpConnector>;
#[cfg(not(feature = "tls"))]
type Connector = HttpConnector;

/// Largest response body read (Stripe's objects are a few kB).
const MAX_BODY: usize = 1024 * 1024;
/// First wait between attempts; doubles each time, with jitter, up to `MAX_BACKOFF`.
const BASE_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_millis(800);

static STRIPE_VERSION: HeaderName = HeaderName::from_static("stripe-version");
static IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
static SHOULD_RETRY: HeaderName = HeaderName::from_static("stripe-should-retry");
static RETRY_AFTER: HeaderName = HeaderName::from_static("retry-after");

/// One API call.
#[derive(Debug)]
pub(crate) struct Call<'a> {
    /// For logs: `create_intent`, `confirm_intent`...
    pub(crate) operation: &'static str,
    pub(crate) method: Method,
    /// `/v1/...`, ids already validated as path-safe.
    pub(crate) path: String,
    /// Form-encoded pairs: the body of a POST, the query of a GET.
    pub(crate) params: Vec<(String, String)>,
    pub(crate) idempotency_key: Option<&'a IdempotencyKey>,
}

/// A 2xx answer's body.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) body: Bytes,
}

/// What one attempt produced.
enum Attempt {
    Answer {
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
    },
    Network(String),
}

pub(crate) struct Transport {
    client: Client<Connector, Full<Bytes>>,
    base: String,
    authorization: HeaderValue,
    api_version: HeaderValue,
    timeout: Duration,
    max_retries: u32,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("base", &self.base)
            .field("api_version", &self.api_version)
            .field("timeout", &self.timeout)
            .field("max_retries", &self.max_retries)
            .finish_non_exhaustive()
    }
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl Transport {
    pub(crate) fn new(
        base_url: &str,
        api_key: &Secret,
        api_version: &str,
        timeout: Duration,
        max_retries: u32,
    ) -> Result<Self, ConfigError> {
        let base = base_url.trim_end_matches('/');
        let uri: Uri = base
            .parse()
            .map_err(|_| ConfigError::new("payments.stripe.base_url is not a URL"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => {
                return Err(ConfigError::new(
                    "payments.stripe.base_url must start with https://",
                ));
            }
        };
        let Some(host) = uri.host() else {
            return Err(ConfigError::new("payments.stripe.base_url has no host"));
        };
        if !https && !is_loopback(host) {
            return Err(ConfigError::new(
                "payments.stripe.base_url may use plain http only on a loopback address \
                 (the API key would travel in clear)",
            ));
        }
        if uri.query().is_some() || !matches!(uri.path(), "" | "/") {
            return Err(ConfigError::new(
                "payments.stripe.base_url must be a scheme and host only (no path or query)",
            ));
        }
        let mut authorization = HeaderValue::from_str(&format!("Bearer {}", api_key.expose()))
            .map_err(|_| {
                ConfigError::new("payments.stripe.api_key holds characters a header cannot carry")
            })?;
        authorization.set_sensitive(true);
        let api_version = HeaderValue::from_str(api_version).map_err(|_| {
            ConfigError::new("payments.stripe.api_version holds characters a header cannot carry")
        })?;

        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(timeout));
        let connector = connector(http, https)?;
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(Self {
            client,
            base: base.to_owned(),
            authorization,
            api_version,
            timeout,
            max_retries,
        })
    }

    /// Sends `call` within the time budget, retrying where safe. `Ok` is a 2xx answer.
    pub(crate) async fn send(&self, call: &Call<'_>) -> Result<Reply, ProviderError> {
        let deadline = Instant::now() + self.timeout;
        let mut attempt: u32 = 0;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(ProviderError::Timeout {
                    after: self.timeout,
                });
            }
            let outcome = match tokio::time::timeout(remaining, self.attempt(call)).await {
                Ok(outcome) => outcome,
                Err(_) => {
                    tracing::warn!(
                        operation = call.operation,
                        attempt,
                        timeout_ms = self.timeout.as_millis() as u64,
                        "payment provider did not answer in time; outcome unknown"
                    );
                    return Err(ProviderError::Timeout {
                        after: self.timeout,
                    });
                }
            };
            let (error, retryable, wait_at_least) = match outcome {
                Attempt::Answer { status, body, .. } if status.is_success() => {
                    return Ok(Reply { body });
                }
                Attempt::Answer {
                    status,
                    headers,
                    body,
                } => {
                    let retry_after = retry_after(&headers);
                    let error = wire::error(status.as_u16(), retry_after, &body);
                    (error, should_retry(status, &headers), retry_after)
                }
                Attempt::Network(message) => (ProviderError::Network { message }, true, None),
            };
            if !retryable || attempt >= self.max_retries {
                return Err(error);
            }
            let wait = backoff(attempt).max(wait_at_least.unwrap_or_default());
            if Instant::now() + wait >= deadline {
                return Err(error);
            }
            tracing::debug!(
                operation = call.operation,
                attempt,
                error = error.code(),
                wait_ms = wait.as_millis() as u64,
                "retrying payment provider call with the same idempotency key"
            );
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    async fn attempt(&self, call: &Call<'_>) -> Attempt {
        let encoded = encode(&call.params);
        let (uri, body) = if call.method == Method::GET {
            let uri = if encoded.is_empty() {
                format!("{}{}", self.base, call.path)
            } else {
                format!("{}{}?{encoded}", self.base, call.path)
            };
            (uri, Bytes::new())
        } else {
            (format!("{}{}", self.base, call.path), Bytes::from(encoded))
        };
        let mut builder = Request::builder()
            .method(call.method.clone())
            .uri(uri)
            .header(AUTHORIZATION, self.authorization.clone())
            .header(&STRIPE_VERSION, self.api_version.clone())
            .header(
                USER_AGENT,
                concat!("parkd-payments/", env!("CARGO_PKG_VERSION")),
            );
        if call.method != Method::GET {
            builder = builder.header(CONTENT_TYPE, "application/x-www-form-urlencoded");
        }
        if let Some(key) = call.idempotency_key {
            builder = builder.header(&IDEMPOTENCY_KEY, key.as_str());
        }
        let request = match builder.body(Full::new(body)) {
            Ok(request) => request,
            Err(error) => return Attempt::Network(format!("could not build the request: {error}")),
        };
        let response = match self.client.request(request).await {
            Ok(response) => response,
            Err(error) => return Attempt::Network(describe(&error)),
        };
        let (parts, body) = response.into_parts();
        match Limited::new(body, MAX_BODY).collect().await {
            Ok(collected) => Attempt::Answer {
                status: parts.status,
                headers: parts.headers,
                body: collected.to_bytes(),
            },
            Err(error) => Attempt::Network(format!("reading the answer failed: {error}")),
        }
    }
}

#[cfg(feature = "tls")]
fn connector(mut http: HttpConnector, https: bool) -> Result<Connector, ConfigError> {
    use std::sync::Arc;

    http.enforce_http(false);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    if https {
        let builder = builder
            .with_provider_and_native_roots(provider)
            .map_err(|_| {
                ConfigError::new("no usable root certificates found for HTTPS to Stripe")
            })?;
        Ok(builder.https_only().enable_http1().wrap_connector(http))
    } else {
        // Plain HTTP to a loopback mock: the TLS side is never used.
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|_| ConfigError::new("TLS setup failed"))?
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        Ok(builder
            .with_tls_config(config)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http))
    }
}

#[cfg(not(feature = "tls"))]
fn connector(http: HttpConnector, https: bool) -> Result<Connector, ConfigError> {
    if https {
        return Err(ConfigError::new(
            "parkd-payments was built without its `tls` feature: https is not available",
        ));
    }
    Ok(http)
}

fn encode(params: &[(String, String)]) -> String {
    let mut serializer = form_urlencoded::Serializer::new(String::new());
    for (key, value) in params {
        serializer.append_pair(key, value);
    }
    serializer.finish()
}

fn describe(error: &hyper_util::client::legacy::Error) -> String {
    let mut message = if error.is_connect() {
        "could not connect".to_owned()
    } else {
        "the connection failed".to_owned()
    };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

fn should_retry(status: StatusCode, headers: &HeaderMap) -> bool {
    match headers.get(&SHOULD_RETRY).and_then(|v| v.to_str().ok()) {
        Some("true") => return true,
        Some("false") => return false,
        _ => {}
    }
    status == StatusCode::CONFLICT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(&RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

fn backoff(attempt: u32) -> Duration {
    let full = BASE_BACKOFF
        .saturating_mul(2u32.saturating_pow(attempt))
        .min(MAX_BACKOFF);
    // Between half and all of it, so that many clients do not retry in step.
    full.mul_f64(rand::thread_rng().gen_range(0.5..=1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_may_use_plain_http() {
        let key = Secret::new("sk_test_x");
        let ok = |url: &str| Transport::new(url, &key, "2024-06-20", Duration::from_secs(1), 1);
        assert!(ok("http://127.0.0.1:1234").is_ok());
        assert!(ok("http://localhost:1234/").is_ok());
        assert!(ok("http://[::1]:1234").is_ok());
        assert!(ok("http://api.stripe.com").is_err());
        assert!(ok("http://10.0.0.1:80").is_err());
        assert!(ok("ftp://127.0.0.1").is_err());
        assert!(ok("http://127.0.0.1:1234/v1").is_err());
        assert!(ok("not a url").is_err());
    }

    #[test]
    fn retries_what_stripe_says_is_safe() {
        let none = HeaderMap::new();
        assert!(should_retry(StatusCode::CONFLICT, &none));
        assert!(should_retry(StatusCode::TOO_MANY_REQUESTS, &none));
        assert!(should_retry(StatusCode::INTERNAL_SERVER_ERROR, &none));
        assert!(!should_retry(StatusCode::PAYMENT_REQUIRED, &none));
        assert!(!should_retry(StatusCode::BAD_REQUEST, &none));
        let mut no = HeaderMap::new();
        no.insert(&SHOULD_RETRY, HeaderValue::from_static("false"));
        assert!(!should_retry(StatusCode::INTERNAL_SERVER_ERROR, &no));
        let mut yes = HeaderMap::new();
        yes.insert(&SHOULD_RETRY, HeaderValue::from_static("true"));
        assert!(should_retry(StatusCode::BAD_REQUEST, &yes));
    }

    #[test]
    fn backoff_grows_and_stays_bounded() {
        for attempt in 0..20 {
            let wait = backoff(attempt);
            assert!(wait <= MAX_BACKOFF);
            assert!(wait >= BASE_BACKOFF / 2);
        }
    }
}
