//! A minimal HTTP/1.1 JSON client for the simulated drivers: one request per connection
//! (`Connection: close`), bodies read to the end (plain, `Content-Length` or chunked), at most
//! [`MAX_RESPONSE`] bytes, every step under a timeout. Plain `http://` only: the simulators talk
//! to a parkd on a trusted network (the demo's own process, a test, a local deployment).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::SimError;

/// Longest response read, head and body.
pub const MAX_RESPONSE: u64 = 4 * 1024 * 1024;

/// Where parkd's HTTP API listens: `http://host:port` or `host:port` (port 80 by default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpEndpoint {
    /// Host name or IP address.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl HttpEndpoint {
    /// An endpoint from its parts.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
        }
    }
}

impl fmt::Display for HttpEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "http://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "http://{}:{}", self.host, self.port)
        }
    }
}

impl FromStr for HttpEndpoint {
    type Err = SimError;

    fn from_str(raw: &str) -> Result<Self, SimError> {
        let trimmed = raw.trim().trim_end_matches('/');
        if trimmed.starts_with("https://") {
            return Err(SimError::config(
                "https is not supported by the simulated drivers; use http://",
            ));
        }
        let rest = trimmed.strip_prefix("http://").unwrap_or(trimmed);
        let bad = || SimError::config(format!("{raw:?} is not http://host:port"));
        if rest.contains('/') {
            return Err(bad());
        }
        let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
            let (host, after) = inner.split_once(']').ok_or_else(bad)?;
            match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None if after.is_empty() => (host, None),
                None => return Err(bad()),
            }
        } else {
            match rest.rsplit_once(':') {
                Some((host, port)) if !host.contains(':') => (host, Some(port)),
                Some(_) => return Err(bad()),
                None => (rest, None),
            }
        };
        if host.is_empty() {
            return Err(bad());
        }
        let port = match port {
            Some(port) => port.parse().map_err(|_| bad())?,
            None => 80,
        };
        Ok(Self::new(host, port))
    }
}

/// An HTTP answer: the status and the JSON body (`Null` when empty or not JSON).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Answer {
    /// The problem type's last path segment (`no-spot-available`), or the status.
    pub(crate) fn problem(&self) -> String {
        self.body
            .get("type")
            .and_then(Value::as_str)
            .and_then(|kind| kind.rsplit('/').next())
            .filter(|kind| !kind.is_empty())
            .map_or_else(|| format!("http-{}", self.status), str::to_owned)
    }
}

/// One request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Call<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub token: Option<&'a str>,
    pub idempotency_key: Option<&'a str>,
    pub body: Option<&'a Value>,
}

impl<'a> Call<'a> {
    pub(crate) fn get(path: &'a str) -> Self {
        Self {
            method: "GET",
            path,
            token: None,
            idempotency_key: None,
            body: None,
        }
    }

    pub(crate) fn post(path: &'a str, body: &'a Value) -> Self {
        Self {
            method: "POST",
            path,
            token: None,
            idempotency_key: None,
            body: Some(body),
        }
    }

    pub(crate) fn token(self, token: &'a str) -> Self {
        Self {
            token: Some(token),
            ..self
        }
    }

    pub(crate) fn idempotency_key(self, key: &'a str) -> Self {
        Self {
            idempotency_key: Some(key),
            ..self
        }
    }
}

/// Sends `call` to `endpoint` and reads the answer, all within `timeout`. Errors are I/O
/// errors (refused, reset, timed out) and responses that are not HTTP/1.x.
pub(crate) async fn send(
    endpoint: &HttpEndpoint,
    call: Call<'_>,
    timeout: Duration,
) -> std::io::Result<Answer> {
    match tokio::time::timeout(timeout, exchange(endpoint, call)).await {
        Ok(result) => result,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("{} {} timed out after {timeout:?}", call.method, call.path),
        )),
    }
}

/// [`send`], repeated up to `attempts` times on timeouts, connection errors, server errors
/// and `request-in-flight` (the same call, so the same idempotency key, if any), with a short
/// backoff. The error is the last failure, described.
pub(crate) async fn send_retrying(
    endpoint: &HttpEndpoint,
    call: Call<'_>,
    timeout: Duration,
    attempts: u32,
) -> Result<Answer, String> {
    let mut last = String::new();
    for attempt in 0..attempts.max(1) {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
        }
        match send(endpoint, call, timeout).await {
            Ok(answer)
                if answer.status >= 500
                    || (answer.status == 409 && answer.problem() == "request-in-flight") =>
            {
                last = format!("{} {}: {}", call.method, call.path, answer.problem());
            }
            Ok(answer) => return Ok(answer),
            Err(error) => last = format!("{} {}: {error}", call.method, call.path),
        }
    }
    Err(last)
}

async fn exchange(endpoint: &HttpEndpoint, call: Call<'_>) -> std::io::Result<Answer> {
    let body = call.body.map(Value::to_string).unwrap_or_default();
    let host = if endpoint.host.contains(':') {
        format!("[{}]:{}", endpoint.host, endpoint.port)
    } else {
        format!("{}:{}", endpoint.host, endpoint.port)
    };
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nAccept: application/json\r\n\
         User-Agent: parkd-sim/{}\r\n",
        call.method,
        call.path,
        env!("CARGO_PKG_VERSION")
    );
    if let Some(token) = call.token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    if let Some(key) = call.idempotency_key {
        head.push_str(&format!("Idempotency-Key: {key}\r\n"));
    }
    if call.body.is_some() {
        head.push_str("Content-Type: application/json\r\n");
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut stream =
        tokio::net::TcpStream::connect((endpoint.host.as_str(), endpoint.port)).await?;
    stream.set_nodelay(true)?;
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.take(MAX_RESPONSE).read_to_end(&mut raw).await?;
    parse_response(&raw)
}

fn invalid(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned())
}

/// Parses a complete HTTP/1.x response.
fn parse_response(raw: &[u8]) -> std::io::Result<Answer> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| invalid("the response has no end of head"))?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| invalid("the head is not UTF-8"))?;
    let rest = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(invalid("not an HTTP/1.x response"));
    }
    let status: u16 = parts
        .next()
        .and_then(|code| code.parse().ok())
        .filter(|code| (100..1000).contains(code))
        .ok_or_else(|| invalid("no status code"))?;
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = value.parse::<usize>().ok();
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        }
    }
    let body = if chunked {
        dechunk(rest)?
    } else if let Some(length) = length {
        rest.get(..length)
            .ok_or_else(|| invalid("the body is shorter than its Content-Length"))?
            .to_vec()
    } else {
        rest.to_vec()
    };
    let body = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).unwrap_or(Value::Null)
    };
    Ok(Answer { status, body })
}

/// Decodes a chunked body (trailers ignored).
fn dechunk(mut rest: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| invalid("a chunk has no size line"))?;
        let size_line = std::str::from_utf8(&rest[..line_end])
            .map_err(|_| invalid("a chunk size is not UTF-8"))?;
        let size_hex = size_line.split(';').next().unwrap_or_default().trim();
        let size =
            usize::from_str_radix(size_hex, 16).map_err(|_| invalid("a chunk size is not hex"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        let chunk = rest
            .get(..size)
            .ok_or_else(|| invalid("a chunk is cut short"))?;
        body.extend_from_slice(chunk);
        rest = rest.get(size + 2..).unwrap_or_default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse() {
        let parse = |raw: &str| raw.parse::<HttpEndpoint>().unwrap();
        assert_eq!(
            parse("http://127.0.0.1:8080"),
            HttpEndpoint::new("127.0.0.1", 8080)
        );
        assert_eq!(
            parse("localhost:8080/"),
            HttpEndpoint::new("localhost", 8080)
        );
        assert_eq!(parse("parkd"), HttpEndpoint::new("parkd", 80));
        assert_eq!(parse("http://[::1]:8080"), HttpEndpoint::new("::1", 8080));
        assert_eq!(parse("[::1]:8080").to_string(), "http://[::1]:8080");
        for bad in ["", "https://x:1", "http://x:port", "x:1/api", "::1", "[::1"] {
            assert!(bad.parse::<HttpEndpoint>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn responses_parse() {
        let plain = b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\n\
                      content-length: 11\r\n\r\n{\"id\":\"r1\"}";
        let answer = parse_response(plain).unwrap();
        assert_eq!(answer.status, 201);
        assert_eq!(answer.body["id"], "r1");

        let (first, second) = (
            r#"{"type":"https:/"#,
            r#"/parkd.dev/problems/no-spot-ok"}  "#,
        );
        let chunked = format!(
            "HTTP/1.1 409 Conflict\r\nTransfer-Encoding: chunked\r\n\r\n\
             {:x}\r\n{first}\r\n{:x};ext=1\r\n{second}\r\n0\r\n\r\n",
            first.len(),
            second.len()
        );
        let answer = parse_response(chunked.as_bytes()).unwrap();
        assert_eq!(answer.status, 409);
        assert_eq!(answer.problem(), "no-spot-ok");

        let empty = b"HTTP/1.1 204 No Content\r\n\r\n";
        let answer = parse_response(empty).unwrap();
        assert_eq!(answer.status, 204);
        assert_eq!(answer.body, Value::Null);
        assert_eq!(answer.problem(), "http-204");

        assert!(parse_response(b"SSH-2.0-x\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK").is_err());
    }
}
