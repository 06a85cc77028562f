//! A minimal HTTP/1.1 client for the account and reservation benchmarks: one keep-alive TCP
//! connection (`TCP_NODELAY`), one request at a time, request bodies with `Content-Length`,
//! answers with `Content-Length` or chunked. Small on purpose: its CPU is part of the load
//! generator's, which shares the machine with parkd.

use std::net::SocketAddr;

use anyhow::{Context, anyhow, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An answer: the status code and the whole body.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) body: Vec<u8>,
}

impl Answer {
    /// The body as text (lossy).
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON.
    pub(crate) fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_slice(&self.body)
            .with_context(|| format!("status {}: body is not JSON: {}", self.status, self.text()))
    }

    /// The problem kind of a problem+json answer (`.../problems/{kind}`), found by a string
    /// scan (no JSON parser on the hot path).
    pub(crate) fn problem_kind(&self) -> String {
        const KEY: &[u8] = b"/problems/";
        let Some(at) = find(&self.body, KEY, 0) else {
            return "no-problem-type".to_owned();
        };
        let rest = &self.body[at + KEY.len()..];
        let end = rest.iter().position(|b| *b == b'"').unwrap_or(rest.len());
        String::from_utf8_lossy(&rest[..end]).into_owned()
    }
}

/// One keep-alive connection; reconnects on the next request after the server closed it or
/// an error.
#[derive(Debug)]
pub(crate) struct Connection {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    /// Bytes read and not yet consumed.
    buf: Vec<u8>,
    /// The request being written (reused).
    out: Vec<u8>,
    /// Connections opened (the first one included).
    pub(crate) connects: u64,
}

impl Connection {
    pub(crate) async fn open(addr: SocketAddr) -> anyhow::Result<Self> {
        let mut connection = Connection {
            addr,
            stream: None,
            buf: Vec::with_capacity(16 * 1024),
            out: Vec::with_capacity(1024),
            connects: 0,
        };
        connection.connect().await?;
        Ok(connection)
    }

    async fn connect(&mut self) -> anyhow::Result<()> {
        let stream = TcpStream::connect(self.addr)
            .await
            .with_context(|| format!("connecting to {}", self.addr))?;
        stream.set_nodelay(true)?;
        self.stream = Some(stream);
        self.buf.clear();
        self.connects += 1;
        Ok(())
    }

    /// Drops the connection (after a timeout left it mid-answer); the next request opens a
    /// new one.
    pub(crate) fn reset(&mut self) {
        self.stream = None;
        self.buf.clear();
    }

    /// Sends one request and reads its whole answer. `body` is sent as JSON when not empty.
    /// On any error the connection is dropped (the next request opens a new one).
    pub(crate) async fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> anyhow::Result<Answer> {
        let result = self.exchange(method, path, headers, body).await;
        if result.is_err() {
            self.stream = None;
        }
        result
    }

    async fn exchange(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> anyhow::Result<Answer> {
        if self.stream.is_none() {
            self.connect().await?;
        }
        self.out.clear();
        use std::io::Write as _;
        write!(
            self.out,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: parkd-bench\r\n",
            self.addr
        )?;
        for (name, value) in headers {
            write!(self.out, "{name}: {value}\r\n")?;
        }
        if !body.is_empty() || method == "POST" {
            write!(
                self.out,
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            )?;
        }
        self.out.extend_from_slice(b"\r\n");
        self.out.extend_from_slice(body);
        let stream = self
            .stream
            .as_mut()
            .ok_or_else(|| anyhow!("not connected"))?;
        stream.write_all(&self.out).await.context("writing")?;
        let (answer, close) = read_answer(stream, &mut self.buf).await?;
        if close {
            self.stream = None;
        }
        Ok(answer)
    }
}

/// Index of `needle` in `hay` at or after `from`.
fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<()> {
    let mut chunk = [0u8; 16 * 1024];
    let n = stream.read(&mut chunk).await.context("reading")?;
    if n == 0 {
        bail!("the server closed the connection");
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

/// Reads until `needle` is in `buf` at or after `from`; returns its index.
async fn wait_for(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    from: usize,
    needle: &[u8],
) -> anyhow::Result<usize> {
    loop {
        if let Some(at) = find(buf, needle, from) {
            return Ok(at);
        }
        read_more(stream, buf).await?;
    }
}

/// Reads until `buf` holds at least `len` bytes.
async fn wait_len(stream: &mut TcpStream, buf: &mut Vec<u8>, len: usize) -> anyhow::Result<()> {
    while buf.len() < len {
        read_more(stream, buf).await?;
    }
    Ok(())
}

/// One answer from `buf` (read more as needed); returns it and whether the server will close.
async fn read_answer(stream: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<(Answer, bool)> {
    let head_end = wait_for(stream, buf, 0, b"\r\n\r\n").await?;
    let head = std::str::from_utf8(&buf[..head_end]).context("HTTP head is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad status line {status_line:?}"))?;
    let mut length = None;
    let mut chunked = false;
    let mut close = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .parse::<usize>()
                    .with_context(|| format!("bad Content-Length {value:?}"))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        }
    }
    let start = head_end + 4;
    let (body, end) = if chunked {
        let mut body = Vec::new();
        let mut pos = start;
        loop {
            let line_end = wait_for(stream, buf, pos, b"\r\n").await?;
            let size_text = std::str::from_utf8(&buf[pos..line_end]).unwrap_or_default();
            let size_text = size_text.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size_text, 16)
                .with_context(|| format!("bad chunk size {size_text:?}"))?;
            pos = line_end + 2;
            if size == 0 {
                // Trailers, up to an empty line.
                loop {
                    let end = wait_for(stream, buf, pos, b"\r\n").await?;
                    let empty = end == pos;
                    pos = end + 2;
                    if empty {
                        break;
                    }
                }
                break;
            }
            wait_len(stream, buf, pos + size + 2).await?;
            body.extend_from_slice(&buf[pos..pos + size]);
            pos += size + 2;
        }
        (body, pos)
    } else {
        let length = match length {
            Some(length) => length,
            None if status == 204 || status == 304 || status < 200 => 0,
            None => bail!("status {status} without Content-Length or chunked body"),
        };
        wait_len(stream, buf, start + length).await?;
        (buf[start..start + length].to_vec(), start + length)
    };
    buf.drain(..end);
    Ok((Answer { status, body }, close))
}

#[cfg(test)]
mod tests {
    use super::{Answer, find};

    #[test]
    fn finds_and_scans() {
        assert_eq!(find(b"abc\r\n\r\nxyz", b"\r\n\r\n", 0), Some(3));
        assert_eq!(find(b"abc", b"\r\n", 0), None);
        assert_eq!(find(b"a\r\nb\r\n", b"\r\n", 2), Some(4));
        let answer = Answer {
            status: 409,
            body: br#"{"type":"https://parkd.dev/problems/no-spot-available","title":"x"}"#
                .to_vec(),
        };
        assert_eq!(answer.problem_kind(), "no-spot-available");
    }

    #[tokio::test]
    async fn reads_length_and_chunked_answers() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let mut seen = Vec::new();
            let mut chunk = [0u8; 1024];
            for answer in [
                &b"HTTP/1.1 201 Created\r\ncontent-length: 5\r\n\r\nhello"[..],
                &b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"[..],
            ] {
                loop {
                    let n = tokio::io::AsyncReadExt::read(&mut socket, &mut chunk)
                        .await
                        .expect("read");
                    seen.extend_from_slice(&chunk[..n]);
                    if super::find(&seen, b"\r\n\r\n", 0).is_some() {
                        break;
                    }
                }
                seen.clear();
                socket.write_all(answer).await.expect("write");
            }
        });
        let mut connection = super::Connection::open(addr).await.expect("open");
        let a = connection.send("POST", "/x", &[], b"{}").await.expect("a");
        assert_eq!((a.status, a.body.as_slice()), (201, &b"hello"[..]));
        let b = connection.send("GET", "/y", &[], b"").await.expect("b");
        assert_eq!((b.status, b.body.as_slice()), (200, &b"abcde"[..]));
        server.await.expect("server");
    }
}
