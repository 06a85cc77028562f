//! A local stand-in for api.stripe.com: records every request it receives and answers from
//! a script of documented Stripe responses. Bound to 127.0.0.1 port 0, one per test.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use parkd_payments::{Secret, StripeProvider, StripeSettings};

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub(crate) struct Recorded {
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) query: Vec<(String, String)>,
    pub(crate) headers: HeaderMap,
    pub(crate) form: Vec<(String, String)>,
}

impl Recorded {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Every value of a form field, in order.
    pub(crate) fn fields(&self, name: &str) -> Vec<&str> {
        self.form
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub(crate) fn field(&self, name: &str) -> Option<&str> {
        self.fields(name).first().copied()
    }
}

/// One scripted answer.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) body: String,
    pub(crate) headers: Vec<(&'static str, String)>,
    pub(crate) delay: Duration,
}

impl Reply {
    pub(crate) fn json(status: u16, body: impl Into<String>) -> Self {
        Self {
            status: StatusCode::from_u16(status).unwrap(),
            body: body.into(),
            headers: Vec::new(),
            delay: Duration::ZERO,
        }
    }

    pub(crate) fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_owned()));
        self
    }

    pub(crate) fn delayed(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

#[derive(Debug, Default)]
struct Inner {
    script: VecDeque<Reply>,
    last: Option<Reply>,
    requests: Vec<Recorded>,
}

/// The running mock; stops when dropped.
#[derive(Debug)]
pub(crate) struct MockStripe {
    pub(crate) base_url: String,
    inner: Arc<Mutex<Inner>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for MockStripe {
    fn drop(&mut self) {
        self.server.abort();
    }
}

pub(crate) const API_KEY: &str = "sk_test_51MockKeyThatMustNeverPrint";

impl MockStripe {
    /// Starts a server answering with `script` in order; the last answer repeats.
    pub(crate) async fn start(script: Vec<Reply>) -> Self {
        let inner = Arc::new(Mutex::new(Inner {
            script: script.into(),
            ..Inner::default()
        }));
        let app = Router::new().fallback(handle).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            base_url: format!("http://{address}"),
            inner,
            server,
        }
    }

    pub(crate) fn requests(&self) -> Vec<Recorded> {
        self.inner.lock().unwrap().requests.clone()
    }

    pub(crate) fn settings(&self) -> StripeSettings {
        StripeSettings {
            base_url: self.base_url.clone(),
            ..StripeSettings::new(Secret::new(API_KEY))
        }
    }

    pub(crate) fn provider(&self) -> StripeProvider {
        StripeProvider::new(&self.settings()).unwrap()
    }

    pub(crate) fn provider_with(&self, timeout: Duration, max_retries: u32) -> StripeProvider {
        StripeProvider::new(&StripeSettings {
            timeout,
            max_retries,
            ..self.settings()
        })
        .unwrap()
    }
}

fn pairs(text: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(text.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

async fn handle(
    State(inner): State<Arc<Mutex<Inner>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let reply = {
        let mut inner = inner.lock().unwrap();
        inner.requests.push(Recorded {
            method,
            path: uri.path().to_owned(),
            query: pairs(uri.query().unwrap_or("")),
            headers,
            form: pairs(std::str::from_utf8(&body).unwrap_or("")),
        });
        let next = inner.script.pop_front().or_else(|| inner.last.clone());
        if let Some(reply) = &next {
            inner.last = Some(reply.clone());
        }
        next
    };
    let Some(reply) = reply else {
        return (StatusCode::NOT_IMPLEMENTED, "no scripted answer").into_response();
    };
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let mut response = (reply.status, reply.body).into_response();
    response.headers_mut().insert(
        "content-type",
        axum::http::HeaderValue::from_static("application/json"),
    );
    for (name, value) in reply.headers {
        response
            .headers_mut()
            .insert(name, axum::http::HeaderValue::from_str(&value).unwrap());
    }
    response
}

/// A PaymentIntent object in the documented shape, `payment_method` expanded; `patch`'s
/// fields replace the defaults.
pub(crate) fn payment_intent(id: &str, status: &str, patch: serde_json::Value) -> String {
    let received = if status == "succeeded" { 1250 } else { 0 };
    let mut object = serde_json::json!({
        "id": id,
        "object": "payment_intent",
        "amount": 1250,
        "amount_capturable": 0,
        "amount_received": received,
        "capture_method": "automatic",
        "client_secret": format!("{id}_secret_Xq3bVx9"),
        "confirmation_method": "automatic",
        "created": 1712345678,
        "currency": "eur",
        "description": null,
        "last_payment_error": null,
        "latest_charge": null,
        "livemode": false,
        "metadata": {"reservation_id": "r-1"},
        "next_action": null,
        "payment_method": {
            "id": "pm_1PtestVisa",
            "object": "payment_method",
            "type": "card",
            "card": {"brand": "visa", "last4": "4242", "exp_month": 8, "exp_year": 2030,
                     "funding": "credit", "country": "US"}
        },
        "payment_method_types": ["card"],
        "status": status
    });
    if let (Some(object), serde_json::Value::Object(patch)) = (object.as_object_mut(), patch) {
        object.extend(patch);
    }
    object.to_string()
}

/// A documented error body; `patch`'s fields are added to the error object.
pub(crate) fn error_body(
    kind: &str,
    code: &str,
    message: &str,
    patch: serde_json::Value,
) -> String {
    let mut error = serde_json::json!({
        "type": kind,
        "code": code,
        "message": message,
        "doc_url": format!("https://stripe.com/docs/error-codes/{code}"),
    });
    if let (Some(error), serde_json::Value::Object(patch)) = (error.as_object_mut(), patch) {
        error.extend(patch);
    }
    serde_json::json!({ "error": error }).to_string()
}
