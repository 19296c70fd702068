//! A bare HTTP/1.1 client on one kept-alive TCP connection.
//!
//! The exclusivity tests need to know which server instance answered: a connection
//! accepted before a restore belongs to the old instance, and the restarted one never
//! sees it. A pooled client (reqwest) hides connections and silently resends a request
//! whose connection was closed, so here a closed connection is reported, never retried.
#![allow(dead_code)] // shared by two test binaries; each uses a part

use std::net::SocketAddr;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// One request; the body is sent with a `Content-Length`.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: &'static str,
    pub path: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn new(method: &'static str, path: impl Into<String>) -> Request {
        Request { method, path: path.into(), headers: Vec::new(), body: Vec::new() }
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Request {
        self.headers.push((name, value.into()));
        self
    }

    /// `Authorization: token`, when there is a token.
    pub fn auth(self, token: Option<&str>) -> Request {
        match token {
            Some(token) => self.header("Authorization", token),
            None => self,
        }
    }

    pub fn json(self, value: &serde_json::Value) -> Request {
        let mut r = self.header("Content-Type", "application/json");
        r.body = serde_json::to_vec(value).unwrap();
        r
    }

    /// A multipart form with one `file` field.
    pub fn file(self, file_name: &str, bytes: &[u8]) -> Request {
        const BOUNDARY: &str = "pb-backups-test-boundary-7f3a";
        let mut body = format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{file_name}\"\r\n\
             Content-Type: application/zip\r\n\r\n"
        )
        .into_bytes();
        body.extend_from_slice(bytes);
        body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
        let mut r = self.header("Content-Type", format!("multipart/form-data; boundary={BOUNDARY}"));
        r.body = body;
        r
    }
}

#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body as JSON; `Null` when empty or not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// What became of a request.
#[derive(Debug)]
pub enum Sent {
    Answered(Response),
    /// The server closed the connection before any byte of an answer: it did not handle
    /// the request (hyper finishes a request it has started before closing).
    Closed,
}

pub struct Conn {
    stream: Option<BufReader<TcpStream>>,
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).await.expect("connect to the server");
        stream.set_nodelay(true).unwrap();
        Conn { stream: Some(BufReader::new(stream)) }
    }

    pub fn is_open(&self) -> bool {
        self.stream.is_some()
    }

    pub async fn send(&mut self, request: &Request) -> Sent {
        let Some(stream) = self.stream.as_mut() else { return Sent::Closed };
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n",
            request.method,
            request.path,
            request.body.len()
        );
        for (name, value) in &request.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&request.body);
        // A write into a connection the server has just closed may still succeed (the
        // kernel buffers it); the read below then sees the end.
        if stream.get_mut().write_all(&bytes).await.is_err() {
            self.stream = None;
            return Sent::Closed;
        }
        let mut status_line = String::new();
        match stream.read_line(&mut status_line).await {
            Ok(0) | Err(_) => {
                self.stream = None;
                return Sent::Closed;
            }
            Ok(_) => {}
        }
        let response = read_rest(stream, &status_line, request.method == "HEAD")
            .await
            .unwrap_or_else(|e| panic!("connection broke in the middle of an answer to {} {}: {e}", request.method, request.path));
        if response.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close")) {
            self.stream = None;
        }
        Sent::Answered(response)
    }
}

async fn read_rest(
    stream: &mut BufReader<TcpStream>,
    status_line: &str,
    head_only: bool,
) -> std::io::Result<Response> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("status line"))?;
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if stream.read_line(&mut line).await? == 0 {
            return Err(bad("end of stream in the headers"));
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').ok_or_else(|| bad("header line"))?;
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    let find = |name: &str| headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone());
    let mut body = Vec::new();
    if head_only || status == 204 || status == 304 {
        // No body.
    } else if let Some(len) = find("content-length") {
        body.resize(len.parse().map_err(|_| bad("content-length"))?, 0);
        stream.read_exact(&mut body).await?;
    } else if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size = String::new();
            stream.read_line(&mut size).await?;
            let size = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| bad("chunk size"))?;
            let start = body.len();
            body.resize(start + size, 0);
            stream.read_exact(&mut body[start..]).await?;
            let mut crlf = String::new();
            stream.read_line(&mut crlf).await?;
            if size == 0 {
                break;
            }
        }
    } else {
        stream.read_to_end(&mut body).await?;
    }
    Ok(Response { status, headers, body })
}

/// Percent-encodes a path segment: every byte but the unreserved ones.
pub fn segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
