//! OpenTelemetry traces (issue #17): with `OTEL_EXPORTER_OTLP_ENDPOINT` and
//! `OTEL_EXPORTER_OTLP_PROTOCOL` in containerd's environment (which its shims inherit), the
//! shim exports a span per Task API call and spans for the phases of Create, to an OTLP
//! receiver the case runs on loopback (`wasmrunner_e2e::otlp`), over gRPC or HTTP; without
//! them, or with `OTEL_SDK_DISABLED=true`, it sends nothing. Each case has a containerd of its
//! own, started with the environment it needs (the harness's own `OTEL_*` left out).
//!
//! What is checked, for a `ctr run --rm` and for a CRI pod:
//! - the shim's spans have the resource's `service.name` = the shim's binary name
//!   (`containerd-shim-wasmtime-v1`, `containerd-shim-wasmtimed-v1` in shared mode);
//! - `Create`, `Start` and `Delete` spans (`Kill`, `Wait` and others may come too) carry
//!   `container.id` and `containerd.namespace`;
//! - under `Create` (its children: same trace, parent = Create's span, within its start and
//!   end) are the phases [`CREATE_PHASES`], and `compiled code` says whether the node module
//!   cache was used (`wasmrunner.cache`: `hit`, `miss` or `none`);
//! - containerd 2.x traces itself from the same environment and passes its span context to the
//!   shim in its ttrpc calls (W3C `traceparent`): the shim's Create continues containerd's
//!   trace, its parent one of containerd's spans (`containerd.task.v2.Task/Create`, a client
//!   span). containerd 1.6 and 1.7 pass no span context to shims (Debian's 1.6.20 has no
//!   tracing plugins; 1.7.24 reads no `OTEL_*` to enable them, and exported nothing here even
//!   when its config file named the endpoint): there the shim's spans are roots.
//!
//! A traced `wasi:http` server's requests are server spans of the shim's in the trace each
//! request came with (`served_requests_continue_their_traces`).
//!
//! containerd 1.7 and 2.x set `OTEL_SERVICE_NAME=containerd` in their own environment when it
//! is unset, and their shims inherit it: the shim must name itself all the same.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use wasmrunner_e2e::containerd::DaemonEnv;
use wasmrunner_e2e::cri::{ContainerSpec, Network, Pod, PodSpec};
use wasmrunner_e2e::fixtures::Target;
use wasmrunner_e2e::http::{self, Request};
use wasmrunner_e2e::images::{HELLO, TestImage};
use wasmrunner_e2e::otlp::{Protocol, Receiver, Span};
use wasmrunner_e2e::suite::Needs;
use wasmrunner_e2e::{Case, Env};
use wasmrunner_oci::Flavour;

pub fn cases() -> Vec<Case> {
    vec![
        Case::new("ctr_run_grpc", ctr_run_grpc),
        Case::new("ctr_run_http", ctr_run_http),
        Case::new("cri_pod_grpc", cri_pod_grpc),
        Case::new("cri_pod_http", cri_pod_http),
        Case::new("off_without_otel_env", off_without_otel_env),
        Case::new("off_when_sdk_disabled", off_when_sdk_disabled),
        Case::new("traced_guest_reaches_nothing", traced_guest_reaches_nothing),
        Case::new("served_requests_continue_their_traces", served_requests)
            .needs(&[Needs::Components]),
    ]
}

/// Traced, a guest still reaches nothing: the shim's exporter lives in the serving process,
/// and the guest's process holds what an untraced one does (its milestones FIFO, write-only,
/// among it) and its request FIFO, write-only, which the guest cannot reach either.
fn traced_guest_reaches_nothing(env: &Env) -> Result<()> {
    let receiver = Receiver::start()?;
    env.with_own_env(
        &label("escape", Protocol::Http),
        tracing_to(&receiver, Protocol::Http),
        |own| crate::isolation::guest_reaches_nothing(own, TestImage::Probe(Target::WasiP1), true),
    )
}

/// A traced `wasi:http` server: each request it answers is a server span of the shim's, linked
/// to the container's Create. A request that came with a `traceparent` continues that trace
/// (its parent the client's span); one without starts a trace of its own. The guest sees a
/// `traceparent` naming the request's span, so what it calls with it continues the trace.
fn served_requests(env: &Env) -> Result<()> {
    let receiver = Receiver::start()?;
    env.with_own_env(
        &label("served", Protocol::Http),
        tracing_to(&receiver, Protocol::Http),
        |own| {
            let served = crate::serving::Served::start(own, TestImage::HttpHello, &[])?;
            let asked = ask_traced_and_untraced(served.addr);
            let id = served.task.id.clone();
            served.stop(own)?;
            let handed = asked?;
            let service = own.engine.binary_name();
            let expected = Expected::new(own, &id, &own.containerd.namespace, Protocol::Http);
            let spans = wait_until(&receiver, |spans| {
                let create = expected.call(spans, "Create")?;
                let requests: Vec<&Span> = spans
                    .iter()
                    .filter(|s| s.kind == "server" && s.attribute("container.id") == Some(&id))
                    .filter(|s| s.attribute("http.request.method").is_some())
                    .collect();
                // The client's request, and the readiness probe's and the plain GET's.
                let (continued, started): (Vec<&Span>, Vec<&Span>) =
                    requests.iter().partition(|s| s.trace_id == CLIENT_TRACE);
                let ([continued], [_, _, ..]) = (&continued[..], &started[..]) else {
                    bail!(
                        "expected 1 request span in the client's trace and 2 or more of \
                         their own, got {requests:#?}"
                    );
                };
                for span in &requests {
                    ensure!(
                        span.service_name == service
                            && span.name == "GET"
                            && span.attribute("http.request.method") == Some("GET")
                            && span.attribute("http.response.status_code") == Some("200")
                            && span.attribute("containerd.namespace")
                                == Some(own.containerd.namespace.as_str())
                            && span.start_unix_nano > 0
                            && span.start_unix_nano <= span.end_unix_nano,
                        "request span: {span:#?}"
                    );
                    ensure!(
                        span.links == [(create.trace_id.clone(), create.span_id.clone())],
                        "a request span does not link to its container's Create ({}/{}): \
                         {span:#?}",
                        create.trace_id,
                        create.span_id
                    );
                }
                ensure!(
                    continued.parent_span_id == CLIENT_SPAN,
                    "the request with a traceparent is not a child of its client's span: \
                     {continued:#?}"
                );
                let handed_on = format!("00-{CLIENT_TRACE}-{}-01", continued.span_id);
                ensure!(
                    handed == handed_on,
                    "the guest saw traceparent {handed:?}, not the request's span {handed_on:?}"
                );
                let traces: HashSet<&str> = started.iter().map(|s| s.trace_id.as_str()).collect();
                ensure!(
                    started.iter().all(|s| s.is_root()) && traces.len() == started.len(),
                    "the requests without a traceparent are not traces of their own: {started:#?}"
                );
                Ok(())
            })?;
            report(own, Protocol::Http, &spans, &[&id]);
            Ok(())
        },
    )
}

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

/// `GET /headers` with the client's `traceparent`, then `GET /` without one; returns the
/// `traceparent` the guest saw in the first.
fn ask_traced_and_untraced(addr: SocketAddr) -> Result<String> {
    let traceparent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let request = Request::get("/headers").header("traceparent", &traceparent);
    let seen = http::send(addr, &request, Duration::from_secs(10))?;
    ensure!(seen.status == 200, "GET /headers: {seen}");
    let handed = seen
        .text()
        .lines()
        .find_map(|line| line.strip_prefix("traceparent: "))
        .map(str::to_string)
        .with_context(|| format!("the guest saw no traceparent: {seen}"))?;
    let plain = http::get(addr, "/")?;
    ensure!(plain.status == 200, "GET /: {plain}");
    Ok(handed)
}

const HELLO_WASM: TestImage = TestImage::Hello(Target::WasiP1, Flavour::Image);

/// The shim's spans for the phases of a Create, children of its `Create` span.
pub const CREATE_PHASES: [&str; 6] = [
    "mount rootfs",
    "read spec",
    "image content",
    "compiled code",
    "guest bundle",
    "container build",
];

/// The Task API calls every container's life has.
const TASK_CALLS: [&str; 3] = ["Create", "Start", "Delete"];

/// A Wasm guest's own spans, under its Start, in order: from the Start call to the workload
/// read, to its first instruction, to its exit (what the container's init process tells
/// the shim, see `wasmrunner_shim::milestones`).
const GUEST_PHASES: [&str; 3] = ["guest load", "guest instantiate", "guest run"];

/// What `compiled code`'s `wasmrunner.cache` may say.
const CACHE_VALUES: [&str; 3] = ["hit", "miss", "none"];

/// How long spans may take to arrive: exporters batch (containerd's every 5 s by default) and
/// a shim exports what is left when it exits.
const ARRIVAL: Duration = Duration::from_secs(30);

/// How long a case waits for a span that must not come, once the shims are gone.
const QUIET: Duration = Duration::from_secs(2);

/// containerd's environment for tracing to `receiver` over `protocol`, the harness's own
/// `OTEL_*` (`OTEL_SERVICE_NAME` among them) left out.
fn tracing_to(receiver: &Receiver, protocol: Protocol) -> DaemonEnv {
    DaemonEnv::new()
        .remove_prefixed("OTEL_")
        .set("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.endpoint(protocol))
        .set("OTEL_EXPORTER_OTLP_PROTOCOL", protocol.env_value())
}

fn label(what: &str, protocol: Protocol) -> String {
    match protocol {
        Protocol::Grpc => format!("trace-{what}-grpc"),
        Protocol::Http => format!("trace-{what}-http"),
    }
}

fn ctr_run_grpc(env: &Env) -> Result<()> {
    ctr_run(env, Protocol::Grpc)
}

fn ctr_run_http(env: &Env) -> Result<()> {
    ctr_run(env, Protocol::Http)
}

fn cri_pod_grpc(env: &Env) -> Result<()> {
    cri_pod(env, Protocol::Grpc)
}

fn cri_pod_http(env: &Env) -> Result<()> {
    cri_pod(env, Protocol::Http)
}

/// `ctr run --rm` of the hello module: the shim's spans for the container arrive over
/// `protocol`, as described at the top.
fn ctr_run(env: &Env, protocol: Protocol) -> Result<()> {
    let receiver = Receiver::start()?;
    env.with_own_env(
        &label("ctr", protocol),
        tracing_to(&receiver, protocol),
        |own| {
            let id = own.container_id("traced");
            let out = own.run_rm_as(&id, HELLO_WASM, &[], &[])?.ok()?;
            ensure!(out.stdout.trim_end() == HELLO, "unexpected output: {out}");
            let expected = Expected::new(own, &id, &own.containerd.namespace, protocol);
            let spans = wait_until(&receiver, |spans| {
                expected.full(spans)?;
                expected.guest(spans)
            })?;
            report(own, protocol, &spans, &[&id]);
            print_trace(own, &spans, &id);
            Ok(())
        },
    )
}

/// A CRI pod running the hello module: the same spans for its container (in containerd
/// namespace `k8s.io`), and the Task API spans for its sandbox (the pause container, which
/// the shim runs too).
fn cri_pod(env: &Env, protocol: Protocol) -> Result<()> {
    let receiver = Receiver::start()?;
    env.with_own_env(
        &label("cri", protocol),
        tracing_to(&receiver, protocol),
        |own| {
            let mut pod = Pod::run(
                own,
                PodSpec::new("traced", &own.engine.handler(), Network::Host),
            )?;
            let id = pod.run_container(&ContainerSpec::new("hello", HELLO_WASM, &[]))?;
            let status = pod.wait_exited(&id, Duration::from_secs(60))?;
            ensure!(
                status.exit_code == 0,
                "the container ended with {}: {status:?}",
                status.exit_code
            );
            let sandbox = pod.id.clone();
            pod.remove()?.assert_clean()?;
            let namespace = wasmrunner_e2e::cri::K8S_NAMESPACE;
            let container = Expected::new(own, &id, namespace, protocol);
            let pause = Expected::new(own, &sandbox, namespace, protocol);
            let spans = wait_until(&receiver, |spans| {
                container.full(spans)?;
                container.guest(spans)?;
                pause.task_calls(spans).map(|_| ())
            })?;
            report(own, protocol, &spans, &[&sandbox, &id]);
            Ok(())
        },
    )
}

/// What one container's spans must be.
struct Expected<'a> {
    /// The shim's `service.name`.
    service: String,
    id: &'a str,
    namespace: &'a str,
    protocol: Protocol,
    /// Whether containerd passes its span context to the shim (2.x).
    propagates: bool,
}

impl<'a> Expected<'a> {
    fn new(env: &Env, id: &'a str, namespace: &'a str, protocol: Protocol) -> Self {
        Self {
            service: env.engine.binary_name(),
            id,
            namespace,
            protocol,
            propagates: env.containerd.version.major >= 2,
        }
    }

    /// The shim's span `name` for this container: exactly one.
    fn call<'s>(&self, spans: &'s [Span], name: &str) -> Result<&'s Span> {
        let found: Vec<&Span> = spans
            .iter()
            .filter(|s| s.name == name && s.attribute("container.id") == Some(self.id))
            .collect();
        let ours: Vec<&Span> = found
            .iter()
            .copied()
            .filter(|s| s.service_name == self.service)
            .collect();
        match ours.as_slice() {
            [span] => Ok(span),
            [] if !found.is_empty() => bail!(
                "the {name} span of {} comes from service.name {:?}, not {:?}",
                self.id,
                found[0].service_name,
                self.service
            ),
            [] => bail!("no {name} span with container.id {}", self.id),
            many => bail!(
                "{} {name} spans with container.id {}: {many:?}",
                many.len(),
                self.id
            ),
        }
    }

    /// `Create`, `Start` and `Delete` for this container, from the shim, with its id and
    /// namespace, over the case's protocol; returns Create.
    fn task_calls<'s>(&self, spans: &'s [Span]) -> Result<&'s Span> {
        let mut create = None;
        for name in TASK_CALLS {
            let span = self.call(spans, name)?;
            ensure!(
                span.attribute("containerd.namespace") == Some(self.namespace),
                "{name} of {} has containerd.namespace {:?}, expected {:?}",
                self.id,
                span.attribute("containerd.namespace"),
                self.namespace
            );
            ensure!(
                span.via == self.protocol,
                "{name} of {} came over {}, containerd's environment says {}",
                self.id,
                span.via,
                self.protocol
            );
            ensure!(
                span.end_unix_nano >= span.start_unix_nano && span.start_unix_nano > 0,
                "{name} of {} has start {} and end {}",
                self.id,
                span.start_unix_nano,
                span.end_unix_nano
            );
            if name == "Create" {
                create = Some(span);
            }
        }
        create.ok_or_else(|| anyhow::anyhow!("no Create"))
    }

    /// The guest's spans under Start, one of each, in order, each starting where the one
    /// before it ends.
    fn guest(&self, spans: &[Span]) -> Result<()> {
        let start = self.call(spans, "Start")?;
        let mut previous: Option<&Span> = None;
        for phase in GUEST_PHASES {
            let found: Vec<&Span> = spans
                .iter()
                .filter(|s| s.name == phase && s.parent_span_id == start.span_id)
                .collect();
            let [span] = found.as_slice() else {
                bail!(
                    "{} {phase:?} span(s) under the Start of {}, expected one",
                    found.len(),
                    self.id
                );
            };
            ensure!(
                span.trace_id == start.trace_id && span.end_unix_nano >= span.start_unix_nano,
                "{phase:?} of {} is not a well-formed child of its Start: {span}",
                self.id
            );
            if let Some(previous) = previous {
                ensure!(
                    span.start_unix_nano == previous.end_unix_nano,
                    "{phase:?} of {} starts at {}, not where {:?} ends ({})",
                    self.id,
                    span.start_unix_nano,
                    previous.name,
                    previous.end_unix_nano
                );
            } else {
                ensure!(
                    span.start_unix_nano >= start.start_unix_nano,
                    "{phase:?} of {} starts before its Start",
                    self.id
                );
            }
            previous = Some(span);
        }
        Ok(())
    }

    /// Everything: the Task API calls, Create's phases, and Create's parent.
    fn full(&self, spans: &[Span]) -> Result<()> {
        let create = self.task_calls(spans)?;
        for phase in CREATE_PHASES {
            let children: Vec<&Span> = spans
                .iter()
                .filter(|s| s.name == phase && s.parent_span_id == create.span_id)
                .collect();
            let [child] = children.as_slice() else {
                bail!(
                    "{} {phase:?} span(s) under the Create of {} (span {}), expected one",
                    children.len(),
                    self.id,
                    create.span_id
                );
            };
            ensure!(
                child.trace_id == create.trace_id && child.service_name == self.service,
                "{phase:?} under the Create of {} is in trace {} from {:?}, Create in {} from {:?}",
                self.id,
                child.trace_id,
                child.service_name,
                create.trace_id,
                self.service
            );
            ensure!(
                child.within(create),
                "{phase:?} ({}..{}) is not within the Create of {} ({}..{})",
                child.start_unix_nano,
                child.end_unix_nano,
                self.id,
                create.start_unix_nano,
                create.end_unix_nano
            );
            if phase == "compiled code" {
                let cache = child.attribute("wasmrunner.cache");
                ensure!(
                    cache.is_some_and(|c| CACHE_VALUES.contains(&c)),
                    "`compiled code` of {} has wasmrunner.cache {cache:?}, expected one of {CACHE_VALUES:?}",
                    self.id
                );
            }
        }
        if self.propagates {
            ensure!(
                !create.is_root(),
                "the Create of {} is a root span: containerd 2.x passed its span context (traceparent) and the shim did not continue it",
                self.id
            );
            let parent = spans.iter().find(|s| s.span_id == create.parent_span_id);
            let Some(parent) = parent else {
                bail!(
                    "the Create of {} has parent {} in trace {}, and no span of that id arrived",
                    self.id,
                    create.parent_span_id,
                    create.trace_id
                );
            };
            ensure!(
                parent.trace_id == create.trace_id && parent.service_name != self.service,
                "the Create of {}'s parent is {parent}, not one of containerd's spans in its trace",
                self.id
            );
        } else {
            for name in TASK_CALLS {
                let span = self.call(spans, name)?;
                ensure!(
                    span.is_root(),
                    "the {name} of {} has parent {} under a containerd that passes no span context: {span}",
                    self.id,
                    span.parent_span_id
                );
            }
        }
        Ok(())
    }
}

/// Waits until `check` passes on what `receiver` got; fails with `check`'s last complaint
/// and everything received.
fn wait_until(receiver: &Receiver, check: impl Fn(&[Span]) -> Result<()>) -> Result<Vec<Span>> {
    match receiver.wait_for(|spans| check(spans).is_ok(), ARRIVAL) {
        Ok(spans) => Ok(spans),
        Err(_) => {
            let complaint = check(&receiver.spans())
                .err()
                .map(|e| format!("{e:#}"))
                .unwrap_or_else(|| "(it holds now)".into());
            bail!(
                "within {ARRIVAL:?}: {complaint}\nthe receiver got {}",
                receiver.describe()
            )
        }
    }
}

/// Prints what arrived, one service at a time, so a run's log shows what containerd and the
/// shim send.
fn report(env: &Env, protocol: Protocol, spans: &[Span], ids: &[&str]) {
    let mut services: Vec<&str> = spans.iter().map(|s| s.service_name.as_str()).collect();
    services.sort_unstable();
    services.dedup();
    for service in services {
        let mut names: Vec<&str> = spans
            .iter()
            .filter(|s| s.service_name == service)
            .map(|s| s.name.as_str())
            .collect();
        names.sort_unstable();
        names.dedup();
        println!(
            "tracing: {} on containerd {} over {protocol}: {service:?} sent {} span(s): {names:?}",
            env.engine.label(),
            env.containerd.version,
            spans.iter().filter(|s| s.service_name == service).count()
        );
    }
    for id in ids {
        if let Some(create) = spans
            .iter()
            .find(|s| s.name == "Create" && s.attribute("container.id") == Some(id))
        {
            let cache = spans
                .iter()
                .find(|s| s.name == "compiled code" && s.parent_span_id == create.span_id)
                .and_then(|s| s.attribute("wasmrunner.cache"));
            let parent = spans.iter().find(|s| s.span_id == create.parent_span_id);
            println!(
                "tracing: {}: Create of {id} took {:?}, wasmrunner.cache {cache:?}, parent {}",
                env.engine.label(),
                create.duration(),
                parent.map_or_else(
                    || "none".to_string(),
                    |p| format!("{:?} of {:?}", p.name, p.service_name)
                )
            );
        }
    }
}

/// Prints container `id`'s shim spans, call by call with each call's children: each
/// span's start from the Create's and its length (the cold-start trace a closing note
/// shows). containerd's calls for one `ctr run` come in traces of their own.
fn print_trace(env: &Env, spans: &[Span], id: &str) {
    let service = env.engine.binary_name();
    let mut calls: Vec<&Span> = spans
        .iter()
        .filter(|s| s.service_name == service && s.attribute("container.id") == Some(id))
        .collect();
    calls.sort_by_key(|s| s.start_unix_nano);
    let Some(first) = calls.first() else {
        return;
    };
    let origin = first.start_unix_nano;
    println!(
        "tracing: {} on containerd {}: the spans of {id}:",
        env.engine.label(),
        env.containerd.version
    );
    let line = |span: &Span, indent: &str| {
        let offset = span.start_unix_nano.saturating_sub(origin) as f64 / 1e6;
        println!(
            "tracing:   +{offset:8.2} ms {:9.2} ms  {indent}{} (trace {})",
            span.duration().as_secs_f64() * 1000.0,
            span.name,
            &span.trace_id[..8]
        );
    };
    for call in calls {
        line(call, "");
        let mut children: Vec<&Span> = spans
            .iter()
            .filter(|s| s.parent_span_id == call.span_id)
            .collect();
        children.sort_by_key(|s| s.start_unix_nano);
        for child in children {
            line(child, "  ");
        }
    }
}

/// The default OTLP ports on loopback (4317 gRPC, 4318 HTTP), where an exporter with no
/// endpoint configured sends: one case at a time binds them.
static DEFAULT_PORTS: Mutex<()> = Mutex::new(());

/// A receiver on the default OTLP ports if they are free, else on any; says which.
fn default_port_receiver() -> Result<(Receiver, bool)> {
    let at = |port| SocketAddr::from(([127, 0, 0, 1], port));
    match Receiver::start_at(at(4317), at(4318)) {
        Ok(receiver) => Ok((receiver, true)),
        Err(e) => {
            println!(
                "tracing: the default OTLP ports are taken ({e:#}): only the configured endpoint is watched"
            );
            Ok((Receiver::start()?, false))
        }
    }
}

/// Runs the hello module with `ctr run --rm`, waits for the shims to exit and a moment more,
/// and fails if `receiver` got anything (`what` says why it should not have).
fn run_and_expect_silence(env: &Env, receiver: &Receiver, what: &str) -> Result<()> {
    let out = env.run_rm(HELLO_WASM, &[])?.ok()?;
    ensure!(out.stdout.trim_end() == HELLO, "unexpected output: {out}");
    let shims = env.containerd.wait_for_no_shims(Duration::from_secs(15));
    ensure!(shims.is_empty(), "shims still running: {shims:?}");
    std::thread::sleep(QUIET);
    ensure!(
        receiver.requests() == 0 && receiver.rejected().is_empty(),
        "{what}, yet the receiver got {}",
        receiver.describe()
    );
    Ok(())
}

/// No `OTEL_*` in containerd's environment: nothing is exported, not even to the default
/// endpoints (a receiver listens on 4317 and 4318 when they are free).
fn off_without_otel_env(env: &Env) -> Result<()> {
    let _ports = DEFAULT_PORTS.lock().unwrap_or_else(|p| p.into_inner());
    let (receiver, on_defaults) = default_port_receiver()?;
    env.with_own_env(
        "trace-off",
        DaemonEnv::new().remove_prefixed("OTEL_"),
        |own| {
            run_and_expect_silence(
                own,
                &receiver,
                &format!(
                    "no OTEL_* in containerd's environment (receiver on {} and {}{})",
                    receiver.grpc_addr(),
                    receiver.http_addr(),
                    if on_defaults {
                        ", the default ports"
                    } else {
                        ""
                    }
                ),
            )
        },
    )
}

/// `OTEL_SDK_DISABLED=true` with an endpoint and protocol set: nothing is exported.
fn off_when_sdk_disabled(env: &Env) -> Result<()> {
    let receiver = Receiver::start()?;
    let daemon_env = tracing_to(&receiver, Protocol::Grpc).set("OTEL_SDK_DISABLED", "true");
    env.with_own_env("trace-disabled", daemon_env, |own| {
        run_and_expect_silence(
            own,
            &receiver,
            &format!(
                "OTEL_SDK_DISABLED=true with OTEL_EXPORTER_OTLP_ENDPOINT={}",
                receiver.grpc_endpoint()
            ),
        )
    })
}
