//! An OpenTelemetry trace receiver on loopback, for the cases that check what the shims (and
//! containerd) export: the OTLP collector's trace service over both transports a client may
//! choose with `OTEL_EXPORTER_OTLP_PROTOCOL`, built on the official protobuf definitions
//! (`opentelemetry-proto`):
//! - OTLP/gRPC (`grpc`): `opentelemetry.proto.collector.trace.v1.TraceService/Export`, a tonic
//!   server on `127.0.0.1:<free port>`;
//! - OTLP/HTTP with protobuf bodies (`http/protobuf`): `POST /v1/traces` with
//!   `Content-Type: application/x-protobuf` and an `ExportTraceServiceRequest` body, answered
//!   with 200 and an encoded `ExportTraceServiceResponse`, a hyper server on another port.
//!
//! Both run on a tokio runtime of the receiver's own thread, so a case uses the receiver from
//! blocking code: start it, point containerd's environment at [`Receiver::grpc_endpoint`] or
//! [`Receiver::http_endpoint`], and read what arrived with [`Receiver::spans`] or
//! [`Receiver::wait_for`]. Every span is flattened into a [`Span`] (ids in hex, attributes as
//! strings, the resource's `service.name`); requests the receiver could not take (another
//! path, content type or encoding, a body that does not decode) are answered with an error and
//! kept, for failure messages ([`Receiver::rejected`]).

use std::collections::BTreeMap;
use std::fmt;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message;
use tokio::sync::watch;

/// How a span reached the receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// OTLP/gRPC (`OTEL_EXPORTER_OTLP_PROTOCOL=grpc`).
    Grpc,
    /// OTLP/HTTP with protobuf bodies (`OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf`).
    Http,
}

impl Protocol {
    pub const ALL: [Protocol; 2] = [Protocol::Grpc, Protocol::Http];

    /// The value of `OTEL_EXPORTER_OTLP_PROTOCOL` that selects it.
    pub fn env_value(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::Http => "http/protobuf",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.env_value())
    }
}

/// One received span, flattened.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// 16 lowercase hex digits.
    pub span_id: String,
    /// 16 lowercase hex digits; empty for a root span (no parent, or an all-zero one).
    pub parent_span_id: String,
    pub name: String,
    /// `internal`, `server`, `client`, `producer`, `consumer` or `unspecified`.
    pub kind: String,
    /// The resource's `service.name` (empty when it has none).
    pub service_name: String,
    /// The instrumentation scope's name.
    pub scope: String,
    /// The span's attributes, each value rendered as a string (see [`render`]).
    pub attributes: BTreeMap<String, String>,
    /// The resource's attributes, rendered the same way.
    pub resource: BTreeMap<String, String>,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    /// The spans this one links to: (trace id, span id) each, in hex.
    pub links: Vec<(String, String)>,
    pub via: Protocol,
}

impl Span {
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }

    pub fn is_root(&self) -> bool {
        self.parent_span_id.is_empty()
    }

    /// Whether this span's start and end lie within `outer`'s.
    pub fn within(&self, outer: &Span) -> bool {
        outer.start_unix_nano <= self.start_unix_nano
            && self.start_unix_nano <= self.end_unix_nano
            && self.end_unix_nano <= outer.end_unix_nano
    }

    /// How long the span lasted.
    pub fn duration(&self) -> Duration {
        Duration::from_nanos(self.end_unix_nano.saturating_sub(self.start_unix_nano))
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} [{}] ({}, {}) trace {} span {} parent {} {:?} {:?}",
            self.name,
            self.service_name,
            self.kind,
            self.via,
            self.trace_id,
            self.span_id,
            if self.parent_span_id.is_empty() {
                "-"
            } else {
                &self.parent_span_id
            },
            self.duration(),
            self.attributes
        )
    }
}

/// A request the receiver answered with an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub via: Protocol,
    /// `POST /v1/traces`, say.
    pub request: String,
    pub reason: String,
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.via, self.request, self.reason)
    }
}

/// What has arrived so far.
#[derive(Debug, Default)]
struct Received {
    spans: Vec<Span>,
    /// Export requests taken, empty ones included, by protocol.
    grpc_requests: usize,
    http_requests: usize,
    rejected: Vec<Rejected>,
}

#[derive(Debug, Default)]
struct Store {
    received: Mutex<Received>,
    changed: Condvar,
}

impl Store {
    fn lock(&self) -> MutexGuard<'_, Received> {
        // A panic elsewhere while holding the lock leaves the data usable: keep going.
        self.received
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn take(&self, via: Protocol, request: &ExportTraceServiceRequest) {
        let spans = flatten(request, via);
        let mut received = self.lock();
        match via {
            Protocol::Grpc => received.grpc_requests += 1,
            Protocol::Http => received.http_requests += 1,
        }
        received.spans.extend(spans);
        drop(received);
        self.changed.notify_all();
    }

    fn reject(&self, via: Protocol, request: String, reason: String) {
        self.lock().rejected.push(Rejected {
            via,
            request,
            reason,
        });
        self.changed.notify_all();
    }
}

/// A running receiver; dropping it stops both servers.
pub struct Receiver {
    grpc_addr: SocketAddr,
    http_addr: SocketAddr,
    store: Arc<Store>,
    stop: Option<watch::Sender<bool>>,
    thread: Option<JoinHandle<()>>,
}

impl Receiver {
    /// Starts both servers on free loopback ports.
    pub fn start() -> Result<Self> {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        Self::start_at(loopback, loopback)
    }

    /// Starts the gRPC server on `grpc` and the HTTP one on `http` (port 0: a free one); fails
    /// if either address cannot be bound. The servers take requests once this returns.
    pub fn start_at(grpc: SocketAddr, http: SocketAddr) -> Result<Self> {
        let grpc_listener = TcpListener::bind(grpc)
            .with_context(|| format!("binding the OTLP/gRPC port {grpc}"))?;
        let http_listener = TcpListener::bind(http)
            .with_context(|| format!("binding the OTLP/HTTP port {http}"))?;
        for listener in [&grpc_listener, &http_listener] {
            listener.set_nonblocking(true)?;
        }
        let grpc_addr = grpc_listener.local_addr()?;
        let http_addr = http_listener.local_addr()?;
        let store = Arc::new(Store::default());
        let (stop, stopped) = watch::channel(false);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("building the OTLP receiver's runtime")?;
        let thread_store = Arc::clone(&store);
        let thread = std::thread::Builder::new()
            .name("otlp-receiver".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let grpc =
                        serve_grpc(grpc_listener, Arc::clone(&thread_store), stopped.clone());
                    let http = serve_http(http_listener, thread_store, stopped.clone());
                    let servers = async { tokio::join!(grpc, http) };
                    // tonic's graceful shutdown waits for its clients to hang up: give them a
                    // moment, then drop whatever is left with the runtime.
                    let grace = async {
                        stopped_signal(stopped).await;
                        tokio::time::sleep(Duration::from_secs(2)).await;
                    };
                    tokio::select! {
                        (grpc, http) = servers => {
                            for (what, result) in [("OTLP/gRPC", grpc), ("OTLP/HTTP", http)] {
                                if let Err(e) = result {
                                    eprintln!("the {what} receiver stopped: {e:#}");
                                }
                            }
                        }
                        () = grace => {}
                    }
                });
            })
            .context("starting the OTLP receiver's thread")?;
        Ok(Self {
            grpc_addr,
            http_addr,
            store,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// `http://127.0.0.1:<gRPC port>`: the value of `OTEL_EXPORTER_OTLP_ENDPOINT` for `grpc`.
    pub fn grpc_endpoint(&self) -> String {
        format!("http://{}", self.grpc_addr)
    }

    /// `http://127.0.0.1:<HTTP port>`: the value of `OTEL_EXPORTER_OTLP_ENDPOINT` for
    /// `http/protobuf` (exporters append `/v1/traces`).
    pub fn http_endpoint(&self) -> String {
        format!("http://{}", self.http_addr)
    }

    /// The endpoint for `protocol`.
    pub fn endpoint(&self, protocol: Protocol) -> String {
        match protocol {
            Protocol::Grpc => self.grpc_endpoint(),
            Protocol::Http => self.http_endpoint(),
        }
    }

    /// Every span received so far, in order of arrival.
    pub fn spans(&self) -> Vec<Span> {
        self.store.lock().spans.clone()
    }

    /// How many export requests arrived (empty ones too), over both protocols; rejected ones
    /// are not counted (see [`Receiver::rejected`]).
    pub fn requests(&self) -> usize {
        let received = self.store.lock();
        received.grpc_requests + received.http_requests
    }

    /// How many export requests arrived over `protocol`.
    pub fn requests_via(&self, protocol: Protocol) -> usize {
        let received = self.store.lock();
        match protocol {
            Protocol::Grpc => received.grpc_requests,
            Protocol::Http => received.http_requests,
        }
    }

    /// The requests answered with an error.
    pub fn rejected(&self) -> Vec<Rejected> {
        self.store.lock().rejected.clone()
    }

    /// Forgets what has arrived so far.
    pub fn clear(&self) {
        *self.store.lock() = Received::default();
    }

    /// Waits until `pred` holds for the spans received so far; returns them. Fails after
    /// `timeout` with a listing of what did arrive (and of rejected requests).
    pub fn wait_for(&self, pred: impl Fn(&[Span]) -> bool, timeout: Duration) -> Result<Vec<Span>> {
        let deadline = Instant::now() + timeout;
        let mut received = self.store.lock();
        loop {
            if pred(&received.spans) {
                return Ok(received.spans.clone());
            }
            let now = Instant::now();
            if now >= deadline {
                bail!(
                    "the OTLP receiver did not get the expected spans within {timeout:?}; it got {}",
                    describe(&received)
                );
            }
            received = self
                .store
                .changed
                .wait_timeout(received, deadline - now)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }

    /// What arrived so far, one span a line, for failure messages.
    pub fn describe(&self) -> String {
        describe(&self.store.lock())
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn describe(received: &Received) -> String {
    let mut text = format!(
        "{} span(s) in {} gRPC and {} HTTP request(s)",
        received.spans.len(),
        received.grpc_requests,
        received.http_requests
    );
    for span in &received.spans {
        text.push_str(&format!("\n  {span}"));
    }
    for rejected in &received.rejected {
        text.push_str(&format!("\n  rejected: {rejected}"));
    }
    text
}

/// Resolves once the receiver is told to stop.
async fn stopped_signal(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

struct GrpcService {
    store: Arc<Store>,
}

#[tonic::async_trait]
impl TraceService for GrpcService {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> std::result::Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.store.take(Protocol::Grpc, request.get_ref());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

async fn serve_grpc(
    listener: TcpListener,
    store: Arc<Store>,
    stop: watch::Receiver<bool>,
) -> Result<()> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let incoming = tonic::transport::server::TcpIncoming::from_listener(listener, true, None)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(GrpcService { store }))
        .serve_with_incoming_shutdown(incoming, stopped_signal(stop))
        .await
        .context("serving OTLP/gRPC")
}

/// The largest request body the HTTP server reads.
const MAX_BODY: usize = 64 << 20;

async fn serve_http(
    listener: TcpListener,
    store: Arc<Store>,
    stop: watch::Receiver<bool>,
) -> Result<()> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let stopping = stopped_signal(stop);
    tokio::pin!(stopping);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => accepted?,
            () = &mut stopping => return Ok(()),
        };
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let store = Arc::clone(&store);
                async move { Ok::<_, std::convert::Infallible>(answer_http(&store, request).await) }
            });
            // Connections end with the runtime when the receiver stops.
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer_http(
    store: &Store,
    request: hyper::Request<Incoming>,
) -> hyper::Response<Full<Bytes>> {
    let line = format!("{} {}", request.method(), request.uri().path());
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_ascii_lowercase())
    };
    let content_type = header("content-type").unwrap_or_default();
    let encoding = header("content-encoding").unwrap_or_default();
    let problem = if request.uri().path() != "/v1/traces" {
        Some((
            StatusCode::NOT_FOUND,
            "not the OTLP traces path /v1/traces".to_string(),
        ))
    } else if request.method() != Method::POST {
        Some((
            StatusCode::METHOD_NOT_ALLOWED,
            "OTLP/HTTP takes POST only".to_string(),
        ))
    } else if content_type.split(';').next().map(str::trim) != Some("application/x-protobuf") {
        Some((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "Content-Type {content_type:?}: this receiver takes application/x-protobuf only"
            ),
        ))
    } else if !encoding.is_empty() && encoding != "identity" {
        Some((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Encoding {encoding:?}: this receiver takes uncompressed bodies only"),
        ))
    } else {
        None
    };
    if let Some((status, reason)) = problem {
        store.reject(Protocol::Http, line, reason.clone());
        return plain(status, reason);
    }
    let body = match Limited::new(request.into_body(), MAX_BODY).collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) => {
            let reason = format!("reading the body: {e}");
            store.reject(Protocol::Http, line, reason.clone());
            return plain(StatusCode::BAD_REQUEST, reason);
        }
    };
    match ExportTraceServiceRequest::decode(body) {
        Ok(export) => {
            store.take(Protocol::Http, &export);
            let answer = ExportTraceServiceResponse {
                partial_success: None,
            };
            let mut response = hyper::Response::new(Full::new(Bytes::from(answer.encode_to_vec())));
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/x-protobuf"),
            );
            response
        }
        Err(e) => {
            let reason = format!("the body is not an ExportTraceServiceRequest: {e}");
            store.reject(Protocol::Http, line, reason.clone());
            plain(StatusCode::BAD_REQUEST, reason)
        }
    }
}

fn plain(status: StatusCode, text: String) -> hyper::Response<Full<Bytes>> {
    let mut response = hyper::Response::new(Full::new(Bytes::from(text)));
    *response.status_mut() = status;
    response
}

/// Every span of `request`, flattened.
pub fn flatten(request: &ExportTraceServiceRequest, via: Protocol) -> Vec<Span> {
    let mut spans = Vec::new();
    for resource_spans in &request.resource_spans {
        let resource = resource_spans
            .resource
            .as_ref()
            .map(|r| attributes(&r.attributes))
            .unwrap_or_default();
        let service_name = resource.get("service.name").cloned().unwrap_or_default();
        for scope_spans in &resource_spans.scope_spans {
            let scope = scope_spans
                .scope
                .as_ref()
                .map(|s| s.name.clone())
                .unwrap_or_default();
            for span in &scope_spans.spans {
                let parent = if span.parent_span_id.iter().all(|b| *b == 0) {
                    String::new()
                } else {
                    hex(&span.parent_span_id)
                };
                spans.push(Span {
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: parent,
                    name: span.name.clone(),
                    kind: kind_name(span.kind).to_string(),
                    service_name: service_name.clone(),
                    scope: scope.clone(),
                    attributes: attributes(&span.attributes),
                    resource: resource.clone(),
                    start_unix_nano: span.start_time_unix_nano,
                    end_unix_nano: span.end_time_unix_nano,
                    links: span
                        .links
                        .iter()
                        .map(|link| (hex(&link.trace_id), hex(&link.span_id)))
                        .collect(),
                    via,
                });
            }
        }
    }
    spans
}

fn kind_name(kind: i32) -> &'static str {
    match kind {
        1 => "internal",
        2 => "server",
        3 => "client",
        4 => "producer",
        5 => "consumer",
        _ => "unspecified",
    }
}

fn attributes(pairs: &[KeyValue]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|kv| {
            (
                kv.key.clone(),
                kv.value.as_ref().map(render).unwrap_or_default(),
            )
        })
        .collect()
}

/// An attribute value as a string: strings as they are, numbers and booleans as Rust prints
/// them, bytes in hex, arrays as `[a, b]` and key-value lists as `{k=v, ...}`.
pub fn render(value: &AnyValue) -> String {
    match &value.value {
        None => String::new(),
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BytesValue(b)) => hex(b),
        Some(any_value::Value::ArrayValue(array)) => format!(
            "[{}]",
            array
                .values
                .iter()
                .map(render)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Some(any_value::Value::KvlistValue(list)) => format!(
            "{{{}}}",
            list.values
                .iter()
                .map(|kv| format!(
                    "{}={}",
                    kv.key,
                    kv.value.as_ref().map(render).unwrap_or_default()
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{Request, send};
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, InstrumentationScope};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, span};

    const TIMEOUT: Duration = Duration::from_secs(10);

    fn string(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(value.into())),
            }),
        }
    }

    fn value(key: &str, value: any_value::Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
        }
    }

    /// A request from `service` with a root span `Create` and its child `read spec`.
    fn request(service: &str, trace: u8) -> ExportTraceServiceRequest {
        let span = |name: &str, id: u8, parent: Vec<u8>, start: u64, end: u64| {
            opentelemetry_proto::tonic::trace::v1::Span {
                trace_id: vec![trace; 16],
                span_id: vec![id; 8],
                parent_span_id: parent,
                name: name.into(),
                kind: span::SpanKind::Server as i32,
                start_time_unix_nano: start,
                end_time_unix_nano: end,
                attributes: vec![
                    string("container.id", "c1"),
                    value("n", any_value::Value::IntValue(-3)),
                    value("ok", any_value::Value::BoolValue(true)),
                    value(
                        "list",
                        any_value::Value::ArrayValue(ArrayValue {
                            values: vec![
                                AnyValue {
                                    value: Some(any_value::Value::StringValue("a".into())),
                                },
                                AnyValue {
                                    value: Some(any_value::Value::DoubleValue(1.5)),
                                },
                            ],
                        }),
                    ),
                ],
                ..Default::default()
            }
        };
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![string("service.name", service)],
                    dropped_attributes_count: 0,
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "wasmrunner-test".into(),
                        ..Default::default()
                    }),
                    spans: vec![
                        span("Create", 0xab, vec![0; 8], 100, 500),
                        span("read spec", 0xcd, vec![0xab; 8], 200, 300),
                    ],
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        }
    }

    fn check(spans: &[Span], service: &str, trace: u8, via: Protocol) {
        assert_eq!(spans.len(), 2, "{spans:?}");
        let create = &spans[0];
        let child = &spans[1];
        assert_eq!(create.trace_id, format!("{trace:02x}").repeat(16));
        assert_eq!(create.span_id, "abababababababab");
        assert_eq!(create.parent_span_id, "", "an all-zero parent is no parent");
        assert!(create.is_root());
        assert_eq!(create.name, "Create");
        assert_eq!(create.kind, "server");
        assert_eq!(create.service_name, service);
        assert_eq!(create.scope, "wasmrunner-test");
        assert_eq!(create.via, via);
        assert_eq!((create.start_unix_nano, create.end_unix_nano), (100, 500));
        assert_eq!(create.attribute("container.id"), Some("c1"));
        assert_eq!(create.attribute("n"), Some("-3"));
        assert_eq!(create.attribute("ok"), Some("true"));
        assert_eq!(create.attribute("list"), Some("[a, 1.5]"));
        assert_eq!(child.parent_span_id, create.span_id);
        assert_eq!(child.trace_id, create.trace_id);
        assert!(child.within(create) && !create.within(child));
    }

    #[test]
    fn takes_spans_over_http() -> Result<()> {
        let receiver = Receiver::start()?;
        assert_eq!(
            receiver.http_endpoint(),
            format!("http://127.0.0.1:{}", receiver.http_addr().port())
        );
        let body = request("containerd-shim-test-v1", 7).encode_to_vec();
        let response = send(
            receiver.http_addr(),
            &Request::post("/v1/traces", body).header("content-type", "application/x-protobuf"),
            TIMEOUT,
        )?;
        assert_eq!(response.status, 200, "{response}");
        assert_eq!(
            response.header("content-type"),
            Some("application/x-protobuf")
        );
        let answer = ExportTraceServiceResponse::decode(response.body.as_slice())?;
        assert_eq!(answer.partial_success, None);
        let spans = receiver.wait_for(|spans| spans.len() == 2, TIMEOUT)?;
        check(&spans, "containerd-shim-test-v1", 7, Protocol::Http);
        assert_eq!(receiver.requests_via(Protocol::Http), 1);
        assert_eq!(receiver.requests_via(Protocol::Grpc), 0);
        assert!(receiver.rejected().is_empty());
        Ok(())
    }

    #[test]
    fn takes_spans_over_grpc() -> Result<()> {
        let receiver = Receiver::start()?;
        let endpoint = receiver.grpc_endpoint();
        assert_eq!(
            endpoint,
            format!("http://127.0.0.1:{}", receiver.grpc_addr().port())
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let answer = runtime.block_on(async {
            let mut client = TraceServiceClient::connect(endpoint).await?;
            let answer = client.export(request("containerd", 9)).await?;
            anyhow::Ok(answer.into_inner())
        })?;
        assert_eq!(answer.partial_success, None);
        let spans = receiver.wait_for(|spans| spans.len() == 2, TIMEOUT)?;
        check(&spans, "containerd", 9, Protocol::Grpc);
        assert_eq!(receiver.requests(), 1);
        Ok(())
    }

    #[test]
    fn rejects_what_is_not_otlp_protobuf_and_says_why() -> Result<()> {
        let receiver = Receiver::start()?;
        let addr = receiver.http_addr();
        let cases = [
            (
                Request::post("/v1/traces", b"{}".to_vec())
                    .header("content-type", "application/json"),
                415,
            ),
            (
                Request::post("/v1/traces", vec![0xff, 0xff, 0xff])
                    .header("content-type", "application/x-protobuf"),
                400,
            ),
            (
                Request::post("/v1/traces", Vec::new())
                    .header("content-type", "application/x-protobuf")
                    .header("content-encoding", "gzip"),
                415,
            ),
            (
                Request::post("/v1/traces/v1/traces", Vec::new())
                    .header("content-type", "application/x-protobuf"),
                404,
            ),
            (Request::get("/v1/traces"), 405),
        ];
        for (request, status) in &cases {
            let response = send(addr, request, TIMEOUT)?;
            assert_eq!(response.status, *status, "{request:?}: {response}");
        }
        let rejected = receiver.rejected();
        assert_eq!(rejected.len(), cases.len(), "{rejected:?}");
        assert!(
            rejected[0].reason.contains("application/json"),
            "{rejected:?}"
        );
        assert!(
            rejected[3].request.contains("/v1/traces/v1/traces"),
            "{rejected:?}"
        );
        assert_eq!(receiver.requests(), 0);
        // An empty (but well-formed) export counts as a request with no spans.
        let response = send(
            addr,
            &Request::post("/v1/traces", Vec::new())
                .header("content-type", "application/x-protobuf"),
            TIMEOUT,
        )?;
        assert_eq!(response.status, 200);
        assert_eq!(receiver.requests(), 1);
        assert!(receiver.spans().is_empty());
        let err = receiver
            .wait_for(|spans| !spans.is_empty(), Duration::from_millis(200))
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("rejected: http/protobuf POST /v1/traces"),
            "{err:#}"
        );
        Ok(())
    }

    #[test]
    fn stops_when_dropped() -> Result<()> {
        let receiver = Receiver::start()?;
        let (grpc, http) = (receiver.grpc_addr(), receiver.http_addr());
        drop(receiver);
        for addr in [grpc, http] {
            assert!(
                std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(),
                "{addr} still accepts connections"
            );
        }
        Ok(())
    }
}
