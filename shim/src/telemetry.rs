//! OpenTelemetry traces of the Task API: one span per call containerd makes (Create, Start,
//! Kill, Delete...), child spans for the phases of a Create and a Start, exported over OTLP.
//!
//! Off unless containerd's environment (which every shim inherits) names a collector with
//! the standard variables: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_ENDPOINT`, and `OTEL_SDK_DISABLED` is not `true`. The protocol is
//! `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` or `OTEL_EXPORTER_OTLP_PROTOCOL`: `grpc`, or
//! `http/protobuf` (the default, as the OpenTelemetry specification has it); headers and
//! timeout come from the exporter's own variables. Off, a [`Call`] is an empty value and
//! nothing is recorded: the only cost is a branch.
//!
//! A call's parent is the W3C `traceparent` containerd puts in the ttrpc metadata (containerd
//! 2.x does, when it traces itself): one trace then shows containerd's task call and the
//! shim's work under it. Without one, the shim's span is the root of a trace of its own.
//!
//! A traced task's `wasi:http` server tells the shim about each request it answers, and each
//! becomes a server span in the trace the request continues (`crate::served_requests`).
//!
//! Spans go out in batches from a task on the serving process's runtime; a per-pod shim sends
//! what it still holds before it exits ([`Telemetry::flush`]).

use std::collections::HashMap;
use std::time::SystemTime;

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{
    Link, Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId,
    TraceState, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Tracer, TracerProvider};
use opentelemetry_sdk::{Resource, runtime};

use crate::served_requests::ServedRequest;

/// What turns tracing on, in this order of precedence.
const ENDPOINT_VARS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];
const PROTOCOL_VARS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
];

/// The attribute naming the container a call is about.
pub const CONTAINER_ID: &str = "container.id";
/// The containerd namespace of that container.
pub const NAMESPACE: &str = "containerd.namespace";
/// A served request's method and its response's status (OpenTelemetry's HTTP conventions).
pub const HTTP_METHOD: &str = "http.request.method";
pub const HTTP_STATUS: &str = "http.response.status_code";

/// The serving process's tracer, or nothing when tracing is off.
pub struct Telemetry {
    exporting: Option<(TracerProvider, Tracer)>,
}

impl Telemetry {
    /// Tracing as containerd's environment sets it, exporting from `runtime`. A setting that
    /// cannot be used is logged and leaves tracing off: a shim runs with or without it.
    pub fn from_env(service: &str, runtime: &tokio::runtime::Runtime) -> Self {
        let off = Self { exporting: None };
        let disabled = std::env::var("OTEL_SDK_DISABLED")
            .is_ok_and(|value| value.trim().eq_ignore_ascii_case("true"));
        let Some(endpoint) = first_set(&ENDPOINT_VARS) else {
            return off;
        };
        if disabled {
            return off;
        }
        let protocol = first_set(&PROTOCOL_VARS).unwrap_or_else(|| "http/protobuf".to_string());
        // The exporter and its batch task need the runtime that will drive them.
        let _entered = runtime.enter();
        let exporter = match protocol.as_str() {
            "grpc" => opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .build(),
            "http/protobuf" => opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .build(),
            other => {
                tracing::warn!(
                    "tracing off: OTLP protocol {other:?} is not supported (grpc, http/protobuf)"
                );
                return off;
            }
        };
        let exporter = match exporter {
            Ok(exporter) => exporter,
            Err(err) => {
                tracing::warn!("tracing off: cannot export to {endpoint}: {err}");
                return off;
            }
        };
        // OTEL_RESOURCE_ATTRIBUTES adds to the resource, but the service is always the shim's
        // binary: containerd 1.7 and 2.x set OTEL_SERVICE_NAME=containerd in their own
        // environment, which every shim inherits. (In a merge the second resource wins.)
        let resource = Resource::default().merge(&Resource::new([
            KeyValue::new("service.name", service.to_string()),
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
        ]));
        let provider = TracerProvider::builder()
            .with_batch_exporter(exporter, runtime::Tokio)
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("wasmrunner-shim");
        tracing::info!("tracing to {endpoint} over {protocol}");
        Self {
            exporting: Some((provider, tracer)),
        }
    }

    /// Tracing off, whatever the environment says (what the benchmarks time the off path
    /// with).
    pub fn off() -> Self {
        Self { exporting: None }
    }

    /// A span for the Task API call `name` about container `id`, under the trace context in
    /// the call's ttrpc `metadata`; it ends when the [`Call`] is dropped.
    pub fn call(
        &self,
        name: &'static str,
        metadata: &HashMap<String, Vec<String>>,
        id: &str,
        namespace: &str,
    ) -> Call {
        let Some((_, tracer)) = &self.exporting else {
            return Call { span: None };
        };
        let parent = TraceContextPropagator::new().extract(&Metadata(metadata));
        let span = tracer
            .span_builder(name)
            .with_kind(SpanKind::Server)
            .with_attributes([
                KeyValue::new(CONTAINER_ID, id.to_string()),
                KeyValue::new(NAMESPACE, namespace.to_string()),
            ])
            .start_with_context(tracer, &parent);
        Call {
            span: Some(Parent {
                tracer: tracer.clone(),
                context: parent.with_span(span),
            }),
        }
    }

    /// Sends the spans not sent yet; for a process about to exit.
    pub fn flush(&self) {
        if let Some((provider, _)) = &self.exporting {
            for result in provider.force_flush() {
                if let Err(err) = result {
                    tracing::warn!("sending the last spans: {err}");
                }
            }
        }
    }
}

/// The span of one Task API call (nothing when tracing is off).
pub struct Call {
    span: Option<Parent>,
}

/// A span others can be children of, kept past its call (a Start's, for the guest's spans
/// read later).
#[derive(Clone)]
pub struct Parent {
    tracer: Tracer,
    context: Context,
}

impl Parent {
    /// Records a request that container `id`'s server answered: a server span in the trace
    /// the request continues (its client's, or one of its own), linked to this span (the
    /// Create of the container). The parent's sampling decision holds.
    pub fn served(&self, request: &ServedRequest, id: &str, namespace: &str) {
        let context = request.context;
        let flags = TraceFlags::new(context.flags);
        let trace_id = TraceId::from_bytes(context.trace_id);
        let parent = match context.parent {
            Some(parent) => Context::new().with_remote_span_context(SpanContext::new(
                trace_id,
                SpanId::from_bytes(parent),
                flags,
                true,
                TraceState::default(),
            )),
            None => Context::new(),
        };
        let mut builder = self
            .tracer
            .span_builder(request.method)
            .with_kind(SpanKind::Server)
            .with_trace_id(trace_id)
            .with_span_id(SpanId::from_bytes(context.span_id))
            .with_start_time(request.start)
            .with_attributes([
                KeyValue::new(HTTP_METHOD, request.method),
                KeyValue::new(HTTP_STATUS, i64::from(request.status)),
                KeyValue::new(CONTAINER_ID, id.to_string()),
                KeyValue::new(NAMESPACE, namespace.to_string()),
            ])
            .with_links(vec![Link::with_context(
                self.context.span().span_context().clone(),
            )]);
        if request.status >= 500 {
            builder = builder.with_status(Status::error(format!("answered {}", request.status)));
        }
        let mut span = builder.start_with_context(&self.tracer, &parent);
        span.end_with_timestamp(request.end);
    }

    /// Records `name`, from `start` to `end`, as a child span.
    pub fn phase(
        &self,
        name: &'static str,
        start: SystemTime,
        end: SystemTime,
        attributes: Vec<KeyValue>,
    ) {
        let mut span = self
            .tracer
            .span_builder(name)
            .with_start_time(start)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &self.context);
        span.end_with_timestamp(end);
    }
}

impl Call {
    /// Whether spans are recorded: callers skip work only tracing needs.
    pub fn recording(&self) -> bool {
        self.span.is_some()
    }

    /// This call's span, as a parent for spans recorded after it ends.
    pub fn parent(&self) -> Option<Parent> {
        self.span.clone()
    }

    /// Records the phase `name` of this call, from `start` to `end`, as a child span.
    pub fn phase(
        &self,
        name: &'static str,
        start: SystemTime,
        end: SystemTime,
        attributes: Vec<KeyValue>,
    ) {
        if let Some(parent) = &self.span {
            parent.phase(name, start, end, attributes);
        }
    }

    /// Adds `key = value` to the call's span.
    pub fn attribute(&self, key: &'static str, value: String) {
        if let Some(parent) = &self.span {
            parent
                .context
                .span()
                .set_attribute(KeyValue::new(key, value));
        }
    }

    /// Marks the call failed, with the message containerd gets.
    pub fn failed(&self, message: &str) {
        if let Some(parent) = &self.span {
            parent
                .context
                .span()
                .set_status(Status::error(message.to_string()));
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        if let Some(parent) = &self.span {
            parent.context.span().end();
        }
    }
}

fn first_set(names: &[&str]) -> Option<String> {
    names
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
}

/// ttrpc metadata read as a W3C trace-context carrier.
struct Metadata<'a>(&'a HashMap<String, Vec<String>>);

impl Extractor for Metadata<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(key))
            .and_then(|(_, values)| values.first())
            .map(String::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TraceContextExt;

    #[test]
    fn the_parent_comes_from_ttrpc_metadata() {
        let metadata = HashMap::from([(
            "traceparent".to_string(),
            vec!["00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_string()],
        )]);
        let parent = TraceContextPropagator::new().extract(&Metadata(&metadata));
        let span = parent.span();
        let context = span.span_context();
        assert_eq!(
            context.trace_id().to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert_eq!(context.span_id().to_string(), "b7ad6b7169203331");
        assert!(context.is_remote());
    }

    #[test]
    fn off_records_nothing() {
        let telemetry = Telemetry::off();
        let call = telemetry.call("Create", &HashMap::new(), "c1", "default");
        assert!(!call.recording());
        call.phase(
            "mount rootfs",
            SystemTime::now(),
            SystemTime::now(),
            Vec::new(),
        );
        telemetry.flush();
    }
}
