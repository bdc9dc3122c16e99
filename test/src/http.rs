//! An HTTP/1.1 client for the serving suites: requests over one connection or several, the
//! response's status, headers and body, and when each piece of the body arrived (so a test
//! can tell a streamed body from one sent whole). Built on hyper's client connection, on a
//! runtime of its own, so a case calls it like any blocking function.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

/// One request: method, path (with query), extra headers and body.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn get(path: &str) -> Self {
        Self {
            method: "GET".to_string(),
            path: path.to_string(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn post(path: &str, body: Vec<u8>) -> Self {
        Self {
            method: "POST".to_string(),
            body,
            ..Self::get(path)
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
}

/// A response, read whole.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub version: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// When each data frame of the body arrived, from when the request was sent.
    pub frames: Vec<Duration>,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl std::fmt::Display for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:?}", self.status, self.text())
    }
}

/// Sends `request` to `addr` on a new connection, within `timeout`.
pub fn send(addr: SocketAddr, request: &Request, timeout: Duration) -> Result<Response> {
    let mut responses = send_on_one_connection(addr, std::slice::from_ref(request), timeout)?;
    responses.pop().context("no response")
}

/// `GET path` on a new connection, within 10 seconds.
pub fn get(addr: SocketAddr, path: &str) -> Result<Response> {
    send(addr, &Request::get(path), Duration::from_secs(10))
}

/// Sends `requests` one after the other on one keep-alive connection.
pub fn send_on_one_connection(
    addr: SocketAddr,
    requests: &[Request],
    timeout: Duration,
) -> Result<Vec<Response>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the HTTP client's runtime")?;
    runtime.block_on(async {
        tokio::time::timeout(timeout, async {
            let mut sender = connect(addr).await?;
            let mut responses = Vec::new();
            for request in requests {
                responses.push(exchange(&mut sender, addr, request, &request.path).await?);
            }
            Ok(responses)
        })
        .await
        .with_context(|| format!("no answer from {addr} within {timeout:?}"))?
    })
}

/// Sends `request` over HTTP/2 without TLS (h2c, "prior knowledge": the client starts with
/// the HTTP/2 preface), on a new connection.
pub fn send_h2c(addr: SocketAddr, request: &Request, timeout: Duration) -> Result<Response> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the HTTP client's runtime")?;
    runtime.block_on(async {
        tokio::time::timeout(timeout, async {
            let stream = TcpStream::connect(addr)
                .await
                .with_context(|| format!("connecting to {addr}"))?;
            let (mut sender, connection) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                    .await
                    .with_context(|| format!("HTTP/2 handshake with {addr}"))?;
            tokio::spawn(connection);
            let uri = format!("http://{addr}{}", request.path);
            exchange(&mut sender, addr, request, &uri).await
        })
        .await
        .with_context(|| format!("no answer from {addr} within {timeout:?}"))?
    })
}

/// Waits until `addr` answers `GET path` (any status), as a readiness probe does.
pub fn wait_until_serving(addr: SocketAddr, path: &str, timeout: Duration) -> Result<Response> {
    let deadline = Instant::now() + timeout;
    loop {
        match send(addr, &Request::get(path), Duration::from_secs(5)) {
            Ok(response) => return Ok(response),
            Err(err) if Instant::now() > deadline => {
                return Err(err.context(format!("{addr} did not serve within {timeout:?}")));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Whether a new connection to `addr` is refused (nothing listens there any more).
pub fn refused(addr: SocketAddr) -> bool {
    std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err()
}

async fn connect(addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .with_context(|| format!("HTTP handshake with {addr}"))?;
    tokio::spawn(connection);
    Ok(sender)
}

/// A connection's sender, HTTP/1.1 or HTTP/2.
trait Sender {
    fn send(
        &mut self,
        request: hyper::Request<Full<Bytes>>,
    ) -> impl Future<Output = hyper::Result<hyper::Response<hyper::body::Incoming>>>;
}

impl Sender for SendRequest<Full<Bytes>> {
    fn send(
        &mut self,
        request: hyper::Request<Full<Bytes>>,
    ) -> impl Future<Output = hyper::Result<hyper::Response<hyper::body::Incoming>>> {
        self.send_request(request)
    }
}

impl Sender for hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    fn send(
        &mut self,
        request: hyper::Request<Full<Bytes>>,
    ) -> impl Future<Output = hyper::Result<hyper::Response<hyper::body::Incoming>>> {
        self.send_request(request)
    }
}

/// Sends `request` to `uri` (origin-form over HTTP/1.1, absolute over HTTP/2) and reads
/// the response whole.
async fn exchange(
    sender: &mut impl Sender,
    addr: SocketAddr,
    request: &Request,
    uri: &str,
) -> Result<Response> {
    let mut builder = hyper::Request::builder()
        .method(request.method.as_str())
        .uri(uri);
    if !uri.starts_with("http") {
        builder = builder.header("host", addr.to_string());
    }
    for (name, value) in &request.headers {
        builder = builder.header(name, value);
    }
    let sent_at = Instant::now();
    let response = sender
        .send(builder.body(Full::new(Bytes::from(request.body.clone())))?)
        .await
        .with_context(|| format!("{} {} to {addr}", request.method, request.path))?;
    let status = response.status().as_u16();
    let version = format!("{:?}", response.version());
    let headers = response
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    let mut frames = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.with_context(|| {
            format!(
                "reading the body of {} {} after {} bytes",
                request.method,
                request.path,
                bytes.len()
            )
        })?;
        if let Ok(data) = frame.into_data() {
            if data.is_empty() {
                continue;
            }
            frames.push(sent_at.elapsed());
            bytes.extend_from_slice(&data);
        }
    }
    if status == 0 {
        bail!("no status");
    }
    Ok(Response {
        status,
        version,
        headers,
        body: bytes,
        frames,
    })
}
