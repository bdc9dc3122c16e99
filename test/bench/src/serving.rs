//! Serving (issue #13): a `wasi:http/incoming-handler` component, the `http-hello` fixture,
//! served by wasmrunner's Wasmtime shim in each mode (a `ctr run --net-host` container on a
//! loopback port of its own, `WASMTIME_HTTP_PROXY_SOCKET_ADDR`), beside `wasmtime serve` of
//! the same Wasmtime release on the host with the same component file.
//!
//! - **Requests/s and latency** at C connections at once (1, 16, 64): keep-alive HTTP/1.1
//!   `GET /`, each connection sending its next request once the previous response is read
//!   whole. A warm-up on the same connections, then a fixed time that counts: only a 200 with
//!   the fixture's body, answered within it, is a request served; anything else (another
//!   status or body, a failed connection or exchange, no answer within 10 s) is an error, and
//!   reported. The load generator is this process: hyper's client on a tokio runtime of 2
//!   workers.
//! - **Stdout.** The fixture prints a line per request. Both sides' stdout is a pipe that a
//!   thread of this process reads and discards (wasmrunner's through the attached `ctr run`,
//!   `wasmtime serve`'s directly), so neither pays for a terminal.
//! - **CPU** of each side over the counted time (the server's processes: the container's and
//!   the shim's, or `wasmtime serve`; `ctr` relaying the container's stdout; this process).
//! - **Memory**: the PSS per idle served pod with N alive (each answered one request), per
//!   mode, as the memory section measures containers ([`crate::memory`], [`crate::procs`]).

use std::collections::BTreeMap;
use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpStream;
use wasmrunner_e2e::fixtures::{self, Target};
use wasmrunner_e2e::http::{self, Request};
use wasmrunner_e2e::images::{HTTP_HELLO, TestImage};
use wasmrunner_e2e::paths::repo_root;

use crate::bench::Bench;
use crate::memory;
use crate::procs::{self, Footprint};
use crate::report::SectionOutcome;
use crate::runtime::Runtime;
use crate::signals;

/// Where a served component listens (the runtime's setting; runwasi's name).
pub const ADDRESS_ENV: &str = "WASMTIME_HTTP_PROXY_SOCKET_ADDR";
/// The Wasmtime release wasmrunner's shim embeds, and so the `wasmtime serve` compared.
pub const WASMTIME_VERSION: &str = "48.0.8";
/// Where `wasmtime` (for `wasmtime serve`) is taken from, when set.
pub const WASMTIME_ENV: &str = "WASMRUNNER_BENCH_WASMTIME";
/// The key of `wasmtime serve` among the runtimes of the section.
pub const SERVE_KEY: &str = "wasmtime_serve";

/// How long a server has to answer its first request.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one request may take before it counts as an error (and its connection is
/// replaced).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The client's worker threads.
const CLIENT_THREADS: usize = 2;
/// How much of a server's stderr is kept for error messages.
const STDERR_TAIL: usize = 8192;

/// Where `make bench-tools` installs `wasmtime` (`cargo install wasmtime-cli@48.0.8`).
pub fn wasmtime_default() -> PathBuf {
    repo_root().join(format!(
        "target/bench-tools/wasmtime-{WASMTIME_VERSION}/bin/wasmtime"
    ))
}

/// `wasmtime` for the baseline: `flag` when given, else `WASMRUNNER_BENCH_WASMTIME`, else
/// [`wasmtime_default`].
pub fn wasmtime_path(flag: Option<&Path>) -> PathBuf {
    flag.map(Path::to_path_buf)
        .or_else(|| std::env::var_os(WASMTIME_ENV).map(PathBuf::from))
        .unwrap_or_else(wasmtime_default)
}

/// One connection count of one runtime.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub connections: usize,
    /// The counted time (after the warm-up).
    pub seconds: f64,
    /// 200s with the fixture's body, answered within the counted time.
    pub requests: u64,
    pub requests_per_s: f64,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// Requests sent within the counted time that did not get a 200 with the body.
    pub errors: u64,
    /// Errors by kind (`status 503`, `GET /: connection closed ...`, ...).
    pub error_kinds: BTreeMap<String, u64>,
    /// Errors during the warm-up (not in `errors`).
    pub warmup_errors: u64,
    /// New connections after the first of each (a connection the server closed, or one
    /// replaced after an error).
    pub reconnects: u64,
    pub cpu: Cpu,
}

/// CPU used over the counted time, in cores (CPU seconds per second).
#[derive(Debug, Clone, Serialize)]
pub struct Cpu {
    /// The server: the container's processes and the shim's (or manager's), or `wasmtime
    /// serve`.
    pub server_cores: Option<f64>,
    /// `ctr run`, which relays the container's stdout (wasmrunner only).
    pub ctr_cores: Option<f64>,
    /// This process: the load generator and the stdout drains.
    pub client_cores: f64,
}

/// One runtime's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Served {
    pub label: String,
    /// How it was started.
    pub command: String,
    /// From the start of the command until the first `GET /` was answered.
    pub ready_s: f64,
    pub points: Vec<Point>,
    /// Lines the server printed on stdout (one per request).
    pub stdout_lines: u64,
}

/// `wasmtime serve`: where it came from and its version, or why it was not measured.
#[derive(Debug, Clone, Serialize)]
pub struct Baseline {
    pub path: PathBuf,
    pub version: Option<String>,
    pub not_measured: Option<String>,
}

/// PSS of the idle served pods of one mode.
#[derive(Debug, Clone, Serialize)]
pub struct Idle {
    pub pods: usize,
    pub total_pss_kib: u64,
    pub pss_per_pod_kib: f64,
    pub footprint: Footprint,
    pub settle_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Serving {
    pub workload: &'static str,
    pub connections: Vec<usize>,
    pub warmup_s: f64,
    pub seconds: f64,
    /// By runtime key: `wasmtime_per_pod`, `wasmtime_shared`, [`SERVE_KEY`].
    pub runtimes: BTreeMap<String, Served>,
    /// The order and labels of the rows.
    pub order: Vec<(String, String)>,
    pub wasmtime_serve: Baseline,
    /// PSS per idle served pod, by runtime key.
    pub idle: BTreeMap<String, Idle>,
    /// Runtimes (or their idle-pod measure, `KEY idle`) that failed, with why.
    pub failed: BTreeMap<String, String>,
}

impl Serving {
    pub fn point(&self, key: &str, connections: usize) -> Option<&Point> {
        self.runtimes
            .get(key)?
            .points
            .iter()
            .find(|p| p.connections == connections)
    }
}

/// Runs the section: every Wasmtime mode selected, then `wasmtime` at `wasmtime` (when it is
/// there), then the idle pods.
pub fn run(bench: &Bench, wasmtime: &Path) -> Result<SectionOutcome> {
    let runtimes: Vec<Runtime> = Runtime::wasm()
        .into_iter()
        .filter(|r| matches!(r, Runtime::Wasm(e) if e.name == "wasmtime" && e.runs_components()))
        .collect();
    if runtimes.is_empty() {
        return Ok(SectionOutcome::Skipped(
            "wasi:http components are served by the Wasmtime shim, and WASMRUNNER_ENGINES or \
             WASMRUNNER_MODES selects none"
                .into(),
        ));
    }
    let sizes = &bench.sizes;
    let component = fixtures::path("http-hello", Target::WasiP2)?;
    let image = bench.image(TestImage::HttpHello)?;
    let client = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(CLIENT_THREADS)
        .enable_all()
        .build()
        .context("starting the load generator's runtime")?;
    let baseline = baseline(wasmtime);
    let mut serving = Serving {
        workload: "GET / of the http-hello fixture (wasi:http/incoming-handler component, \
                   `hello from wasi:http`, one stdout line per request), keep-alive HTTP/1.1",
        connections: sizes.serving_connections.clone(),
        warmup_s: sizes.serving_warmup_s,
        seconds: sizes.serving_secs,
        runtimes: BTreeMap::new(),
        order: runtimes.iter().map(|r| (r.key(), r.label())).collect(),
        wasmtime_serve: baseline.clone(),
        idle: BTreeMap::new(),
        failed: BTreeMap::new(),
    };
    serving
        .order
        .push((SERVE_KEY.to_string(), serve_label(&baseline)));

    for runtime in &runtimes {
        signals::check()?;
        let served = Server::container(bench, runtime, &image)
            .and_then(|server| measure(bench, &client, server));
        match served {
            Ok(served) => {
                serving.runtimes.insert(runtime.key(), served);
            }
            Err(e) => {
                eprintln!("serving: {} failed: {e:#}", runtime.label());
                serving.failed.insert(runtime.key(), format!("{e:#}"));
            }
        }
    }
    if baseline.not_measured.is_none() {
        signals::check()?;
        let served =
            Server::host(&baseline, &component).and_then(|server| measure(bench, &client, server));
        match served {
            Ok(served) => {
                serving.runtimes.insert(SERVE_KEY.to_string(), served);
            }
            Err(e) => {
                eprintln!("serving: wasmtime serve failed: {e:#}");
                serving
                    .failed
                    .insert(SERVE_KEY.to_string(), format!("{e:#}"));
            }
        }
    } else if let Some(reason) = &baseline.not_measured {
        eprintln!("serving: wasmtime serve: not measured: {reason}");
    }
    drop(client);

    for runtime in &runtimes {
        signals::check()?;
        match idle_pods(bench, runtime, &image, sizes.serving_pods) {
            Ok(idle) => {
                eprintln!(
                    "serving: {} idle, {} alive: {:.2} MiB per pod",
                    runtime.label(),
                    idle.pods,
                    idle.pss_per_pod_kib / 1024.0
                );
                serving.idle.insert(runtime.key(), idle);
            }
            Err(e) => {
                eprintln!("serving: {} idle pods failed: {e:#}", runtime.label());
                serving
                    .failed
                    .insert(format!("{} idle", runtime.key()), format!("{e:#}"));
            }
        }
    }
    Ok(SectionOutcome::Serving(serving))
}

fn serve_label(baseline: &Baseline) -> String {
    match &baseline.version {
        Some(version) => format!("wasmtime serve ({version})"),
        None => format!("wasmtime serve {WASMTIME_VERSION}"),
    }
}

/// Whether `wasmtime` is there and which release it is.
fn baseline(wasmtime: &Path) -> Baseline {
    let mut baseline = Baseline {
        path: wasmtime.to_path_buf(),
        version: None,
        not_measured: None,
    };
    if !wasmtime.is_file() {
        baseline.not_measured = Some(format!(
            "run `make bench-tools` (no wasmtime at {}; or give one with --wasmtime-serve or \
             {WASMTIME_ENV})",
            wasmtime.display()
        ));
        return baseline;
    }
    match Command::new(wasmtime).arg("--version").output() {
        Ok(out) if out.status.success() => {
            let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if !version.contains(WASMTIME_VERSION) {
                eprintln!(
                    "serving: {} is {version:?}, not Wasmtime {WASMTIME_VERSION} as the shim's \
                     engine: the comparison is between releases",
                    wasmtime.display()
                );
            }
            baseline.version = Some(version);
        }
        Ok(out) => {
            baseline.not_measured = Some(format!(
                "`{} --version` failed: {}",
                wasmtime.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Err(e) => {
            baseline.not_measured = Some(format!("cannot run {}: {e}", wasmtime.display()));
        }
    }
    baseline
}

/// Every connection count against `server`, then stops it.
fn measure(bench: &Bench, client: &tokio::runtime::Runtime, server: Server) -> Result<Served> {
    let sizes = &bench.sizes;
    let mut points = Vec::new();
    let mut result = Ok(());
    for &connections in &sizes.serving_connections {
        if let Err(e) = signals::check() {
            result = Err(e);
            break;
        }
        if let Err(e) = server.still_running() {
            result = Err(e);
            break;
        }
        let point = load(
            client,
            bench,
            &server,
            connections,
            Duration::from_secs_f64(sizes.serving_warmup_s),
            Duration::from_secs_f64(sizes.serving_secs),
        );
        eprintln!(
            "serving: {} at {connections} connections: {:.0} req/s, p50 {} ms, p99 {} ms, {} errors{}",
            server.label,
            point.requests_per_s,
            show_ms(point.p50_ms),
            show_ms(point.p99_ms),
            point.errors,
            if point.error_kinds.is_empty() {
                String::new()
            } else {
                format!(" {:?}", point.error_kinds)
            }
        );
        points.push(point);
    }
    let label = server.label.clone();
    let command = server.command.clone();
    let ready_s = server.ready_s;
    let stopped = server.stop(bench);
    result?;
    let stdout_lines = stopped?;
    Ok(Served {
        label,
        command,
        ready_s,
        points,
        stdout_lines,
    })
}

fn show_ms(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_string(), |v| format!("{v:.3}"))
}

/// Where the server runs.
enum Kind {
    /// A container of the bench's containerd, served by `shim`.
    Container { id: String, shim: String },
    /// `wasmtime serve` on the host.
    Host,
}

/// A running server: its command (attached `ctr run`, or `wasmtime serve`), with its stdout
/// read and discarded (lines counted) and the tail of its stderr kept.
struct Server {
    label: String,
    command: String,
    addr: SocketAddr,
    child: Child,
    kind: Kind,
    stdout_lines: Arc<AtomicU64>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
    started: Instant,
    ready_s: f64,
}

impl Server {
    /// `ctr run --net-host --env WASMTIME_HTTP_PROXY_SOCKET_ADDR=127.0.0.1:PORT` of the
    /// HttpHello image, attached.
    fn container(bench: &Bench, runtime: &Runtime, image: &str) -> Result<Self> {
        let addr = free_addrs(1)?[0];
        let id = bench.id(&format!("serve-{}", runtime.tag()));
        let mut command = bench.ctr_command();
        command
            .args(["run", "--net-host", "--runtime"])
            .arg(runtime.runtime_name())
            .arg("--env")
            .arg(format!("{ADDRESS_ENV}={addr}"))
            .arg(image)
            .arg(&id);
        let shown = format!(
            "ctr run --net-host --runtime {} --env {ADDRESS_ENV}={addr} {image} {id}",
            runtime.runtime_name()
        );
        let kind = Kind::Container {
            id,
            shim: runtime.shim_binary(),
        };
        Self::spawn(runtime.label(), shown, addr, command, kind)?.ready(Some(bench))
    }

    /// `wasmtime serve -S cli --addr 127.0.0.1:PORT COMPONENT`: `-S cli` gives the component
    /// the `wasi:cli` interfaces it imports (environment, stdio), which `wasmtime serve`
    /// leaves out by default.
    fn host(baseline: &Baseline, component: &Path) -> Result<Self> {
        let addr = free_addrs(1)?[0];
        let mut command = Command::new(&baseline.path);
        command
            .args(["serve", "-S", "cli", "--addr"])
            .arg(addr.to_string())
            .arg(component);
        let shown = format!(
            "{} serve -S cli --addr {addr} {}",
            baseline.path.display(),
            component.display()
        );
        Self::spawn(serve_label(baseline), shown, addr, command, Kind::Host)?.ready(None)
    }

    fn spawn(
        label: String,
        shown: String,
        addr: SocketAddr,
        mut command: Command,
        kind: Kind,
    ) -> Result<Self> {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {shown}"))?;
        let stdout_lines = Arc::new(AtomicU64::new(0));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            let lines = Arc::clone(&stdout_lines);
            readers.push(std::thread::spawn(move || count_lines(out, &lines)));
        }
        if let Some(err) = child.stderr.take() {
            let tail = Arc::clone(&stderr);
            readers.push(std::thread::spawn(move || keep_tail(err, &tail)));
        }
        Ok(Self {
            label,
            command: shown,
            addr,
            child,
            kind,
            stdout_lines,
            stderr,
            readers,
            started,
            ready_s: 0.0,
        })
    }

    /// Waits until `GET /` is answered with the fixture's body; stops the server and fails
    /// when it is not within [`READY_TIMEOUT`].
    fn ready(mut self, bench: Option<&Bench>) -> Result<Self> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let outcome = loop {
            if let Err(e) = signals::check().and_then(|()| self.still_running()) {
                break Err(e);
            }
            match http::send(self.addr, &Request::get("/"), Duration::from_secs(5)) {
                Ok(r) if r.status == 200 && r.text() == HTTP_HELLO => break Ok(()),
                Ok(r) => break Err(anyhow::anyhow!("GET / at {} answered {r}", self.addr)),
                Err(e) if Instant::now() > deadline => {
                    break Err(e.context(format!(
                        "{} did not serve at {} within {READY_TIMEOUT:?}",
                        self.label, self.addr
                    )));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        match outcome {
            Ok(()) => {
                self.ready_s = self.started.elapsed().as_secs_f64();
                Ok(self)
            }
            Err(e) => {
                let stderr = self.stderr_tail();
                let command = self.command.clone();
                if let Some(bench) = bench {
                    let _ = self.stop(bench);
                } else {
                    let _ = self.stop_host();
                }
                Err(e.context(format!("{command}; its stderr: {stderr:?}")))
            }
        }
    }

    fn stderr_tail(&self) -> String {
        let tail = self.stderr.lock().map(|t| t.clone()).unwrap_or_default();
        String::from_utf8_lossy(&tail).into_owned()
    }

    /// Fails when the server's command has exited.
    fn still_running(&self) -> Result<()> {
        // `try_wait` needs `&mut`; /proc tells without reaping.
        let pid = self.child.id();
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let zombie = state
            .rfind(')')
            .and_then(|i| state[i + 1..].split_whitespace().next())
            .is_none_or(|s| s == "Z" || s == "X");
        if zombie {
            bail!(
                "{} ({}) exited; its stderr: {:?}",
                self.label,
                self.command,
                self.stderr_tail()
            );
        }
        Ok(())
    }

    /// The processes whose CPU counts as the server's, and `ctr`'s pid (containers only).
    fn cpu_pids(&self, bench: &Bench) -> (Vec<u32>, Option<u32>) {
        match &self.kind {
            Kind::Host => (vec![self.child.id()], None),
            Kind::Container { id, shim } => {
                let all = procs::all();
                let pids = procs::members(&all, shim, &bench.socket(), bench.namespace())
                    .into_iter()
                    .filter(|(_, _, container)| container.as_ref().is_none_or(|c| c == id))
                    .map(|(pid, _, _)| pid)
                    .collect();
                (pids, Some(self.child.id()))
            }
        }
    }

    /// Stops the server (a container: killed and deleted) and waits for its command; returns
    /// the lines it printed on stdout.
    fn stop(mut self, bench: &Bench) -> Result<u64> {
        let removed = match &self.kind {
            Kind::Container { id, .. } => bench.remove_containers(std::slice::from_ref(id)),
            Kind::Host => {
                let _ = self.child.kill();
                Ok(())
            }
        };
        let waited = self.reap();
        removed?;
        waited
    }

    fn stop_host(mut self) -> Result<u64> {
        let _ = self.child.kill();
        self.reap()
    }

    /// Waits up to 20 s for the command to exit (then kills it), and for its output to be
    /// read to the end.
    fn reap(&mut self) -> Result<u64> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut problem = None;
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() > deadline => {
                    problem = Some(format!("{} did not exit; killed", self.command));
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => {
                    problem = Some(format!("waiting for {}: {e}", self.command));
                    break;
                }
            }
        }
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        if let Some(problem) = problem {
            bail!("{problem}");
        }
        Ok(self.stdout_lines.load(Ordering::Relaxed))
    }
}

/// Reads `from` to its end, counting lines and keeping nothing.
fn count_lines(mut from: impl Read, lines: &AtomicU64) {
    let mut buffer = vec![0u8; 64 * 1024];
    while let Ok(n) = from.read(&mut buffer) {
        if n == 0 {
            break;
        }
        let newlines = buffer[..n].iter().filter(|&&b| b == b'\n').count();
        lines.fetch_add(newlines as u64, Ordering::Relaxed);
    }
}

/// Reads `from` to its end, keeping its last [`STDERR_TAIL`] bytes.
fn keep_tail(mut from: impl Read, tail: &Mutex<Vec<u8>>) {
    let mut buffer = vec![0u8; 8192];
    while let Ok(n) = from.read(&mut buffer) {
        if n == 0 {
            break;
        }
        if let Ok(mut tail) = tail.lock() {
            tail.extend_from_slice(&buffer[..n]);
            let excess = tail.len().saturating_sub(STDERR_TAIL);
            tail.drain(..excess);
        }
    }
}

/// `n` distinct free loopback addresses (each port bound at once, then released).
fn free_addrs(n: usize) -> Result<Vec<SocketAddr>> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").context("finding a free port"))
        .collect::<Result<_>>()?;
    listeners
        .iter()
        .map(|l| l.local_addr().context("finding a free port"))
        .collect()
}

/// What one connection saw.
#[derive(Default)]
struct Tally {
    latencies_ms: Vec<f64>,
    requests: u64,
    errors: u64,
    warmup_errors: u64,
    reconnects: u64,
    kinds: BTreeMap<String, u64>,
}

impl Tally {
    fn error(&mut self, counted: bool, kind: String) {
        if counted {
            self.errors += 1;
            let kind: String = kind.chars().take(120).collect();
            *self.kinds.entry(kind).or_default() += 1;
        } else {
            self.warmup_errors += 1;
        }
    }
}

/// `connections` connections sending `GET /` to `server` for `warmup`, then for `seconds`
/// counted.
fn load(
    client: &tokio::runtime::Runtime,
    bench: &Bench,
    server: &Server,
    connections: usize,
    warmup: Duration,
    seconds: Duration,
) -> Point {
    let addr = server.addr;
    let counted_from = Instant::now() + warmup;
    let end = counted_from + seconds;
    let (tallies, cpu) = client.block_on(async {
        let tasks: Vec<_> = (0..connections)
            .map(|_| tokio::spawn(connection(addr, counted_from, end)))
            .collect();
        tokio::time::sleep_until(counted_from.into()).await;
        let (server_pids, ctr) = server.cpu_pids(bench);
        let before = CpuReading::take(&server_pids, ctr);
        tokio::time::sleep_until(end.into()).await;
        let after = CpuReading::take(&server_pids, ctr);
        let mut tallies = Vec::new();
        for task in tasks {
            match task.await {
                Ok(tally) => tallies.push(tally),
                Err(e) => {
                    let mut tally = Tally::default();
                    tally.error(true, format!("a connection's task failed: {e}"));
                    tallies.push(tally);
                }
            }
        }
        (tallies, before.cores_until(&after))
    });
    let mut latencies = Vec::new();
    let mut point = Point {
        connections,
        seconds: seconds.as_secs_f64(),
        requests: 0,
        requests_per_s: 0.0,
        p50_ms: None,
        p90_ms: None,
        p99_ms: None,
        max_ms: None,
        errors: 0,
        error_kinds: BTreeMap::new(),
        warmup_errors: 0,
        reconnects: 0,
        cpu,
    };
    for tally in tallies {
        latencies.extend(tally.latencies_ms);
        point.requests += tally.requests;
        point.errors += tally.errors;
        point.warmup_errors += tally.warmup_errors;
        point.reconnects += tally.reconnects;
        for (kind, n) in tally.kinds {
            *point.error_kinds.entry(kind).or_default() += n;
        }
    }
    point.requests_per_s = point.requests as f64 / seconds.as_secs_f64();
    let percentile = |f| crate::stats::Summary::percentile(&latencies, f);
    point.p50_ms = percentile(0.5);
    point.p90_ms = percentile(0.9);
    point.p99_ms = percentile(0.99);
    point.max_ms = percentile(1.0);
    point
}

/// CPU seconds so far of the server's processes, of `ctr`, and of this process.
struct CpuReading {
    at: Instant,
    server: f64,
    ctr: Option<f64>,
    client: f64,
}

impl CpuReading {
    fn take(server: &[u32], ctr: Option<u32>) -> Self {
        Self {
            at: Instant::now(),
            server: server.iter().filter_map(|&p| procs::cpu_seconds(p)).sum(),
            ctr: ctr.and_then(procs::cpu_seconds),
            client: own_cpu_seconds(),
        }
    }

    fn cores_until(&self, later: &Self) -> Cpu {
        let wall = later.at.duration_since(self.at).as_secs_f64().max(1e-6);
        Cpu {
            server_cores: Some((later.server - self.server).max(0.0) / wall),
            ctr_cores: match (self.ctr, later.ctr) {
                (Some(a), Some(b)) => Some((b - a).max(0.0) / wall),
                _ => None,
            },
            client_cores: (later.client - self.client).max(0.0) / wall,
        }
    }
}

/// This process's CPU time (every thread), in seconds.
fn own_cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// One keep-alive connection (replaced when it fails) sending `GET /` until `end`; what was
/// sent from `counted_from` counts.
async fn connection(addr: SocketAddr, counted_from: Instant, end: Instant) -> Tally {
    let host = addr.to_string();
    let mut tally = Tally::default();
    let mut sender: Option<SendRequest<Empty<Bytes>>> = None;
    let mut connected = false;
    while Instant::now() < end {
        let mut current = match sender.take() {
            Some(current) => current,
            None => {
                if connected {
                    tally.reconnects += 1;
                }
                match tokio::time::timeout(REQUEST_TIMEOUT, connect(addr)).await {
                    Ok(Ok(current)) => {
                        connected = true;
                        current
                    }
                    failed => {
                        let why = match failed {
                            Ok(Err(e)) => format!("{e:#}"),
                            _ => format!("connecting: no answer within {REQUEST_TIMEOUT:?}"),
                        };
                        tally.error(Instant::now() >= counted_from, why);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                }
            }
        };
        // A connection the server closed after its last response is replaced, not an error.
        if current.ready().await.is_err() {
            continue;
        }
        let sent = Instant::now();
        let counted = sent >= counted_from;
        let answer = tokio::time::timeout(REQUEST_TIMEOUT, exchange(&mut current, &host)).await;
        let done = Instant::now();
        match answer {
            Ok(Ok((200, body))) if body == HTTP_HELLO.as_bytes() => {
                if counted && done <= end {
                    tally.requests += 1;
                    tally
                        .latencies_ms
                        .push(done.duration_since(sent).as_secs_f64() * 1000.0);
                }
                sender = Some(current);
            }
            Ok(Ok((200, body))) => {
                tally.error(
                    counted,
                    format!(
                        "200 with body {:?}",
                        String::from_utf8_lossy(&body[..body.len().min(40)])
                    ),
                );
                sender = Some(current);
            }
            Ok(Ok((status, _))) => {
                tally.error(counted, format!("status {status}"));
                sender = Some(current);
            }
            Ok(Err(e)) => tally.error(counted, format!("{e:#}")),
            Err(_) => tally.error(counted, format!("no answer within {REQUEST_TIMEOUT:?}")),
        }
    }
    tally
}

async fn connect(addr: SocketAddr) -> Result<SendRequest<Empty<Bytes>>> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true).context("setting TCP_NODELAY")?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("HTTP handshake")?;
    tokio::spawn(connection);
    Ok(sender)
}

/// `GET /`; the status and the whole body.
async fn exchange(sender: &mut SendRequest<Empty<Bytes>>, host: &str) -> Result<(u16, Bytes)> {
    let request = hyper::Request::get("/")
        .header(hyper::header::HOST, host)
        .body(Empty::new())
        .context("building GET /")?;
    let response = sender.send_request(request).await.context("GET /")?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .context("reading the body of GET /")?
        .to_bytes();
    Ok((status, body))
}

/// `pods` served containers started with `ctr run -d --null-io` (each on a port of its own),
/// each asked `GET /` once, then their PSS once it settles; removed at the end.
fn idle_pods(bench: &Bench, runtime: &Runtime, image: &str, pods: usize) -> Result<Idle> {
    let addrs = free_addrs(pods)?;
    let ids: Vec<String> = (0..pods)
        .map(|_| bench.id(&format!("idle-{}", runtime.tag())))
        .collect();
    let address: BTreeMap<&str, SocketAddr> = ids
        .iter()
        .map(String::as_str)
        .zip(addrs.iter().copied())
        .collect();
    let measured = (|| -> Result<Idle> {
        memory::start_all(&ids, |id| {
            let mut command = bench.ctr_command();
            command
                .args(["run", "-d", "--null-io", "--net-host", "--runtime"])
                .arg(runtime.runtime_name())
                .arg("--env")
                .arg(format!("{ADDRESS_ENV}={}", address[id]))
                .arg(image)
                .arg(id);
            wasmrunner_e2e::run_command(&mut command)?
                .ok()
                .with_context(|| format!("starting {} served pod {id}", runtime.label()))?;
            Ok(())
        })?;
        for (id, addr) in &address {
            let answer = http::wait_until_serving(*addr, "/", READY_TIMEOUT)
                .with_context(|| format!("served pod {id}"))?;
            if answer.status != 200 || answer.text() != HTTP_HELLO {
                bail!("served pod {id} at {addr} answered GET / with {answer}");
            }
        }
        let settle = Instant::now();
        let footprint = memory::settled(bench, runtime, pods)?;
        let total = footprint.total_kib();
        Ok(Idle {
            pods,
            total_pss_kib: total,
            pss_per_pod_kib: total as f64 / pods as f64,
            footprint,
            settle_s: settle.elapsed().as_secs_f64(),
        })
    })();
    let removed = bench.remove_containers(&ids);
    let idle = measured?;
    removed?;
    let left = bench.wait_for_shims_to_exit(Some(&runtime.shim_binary()), Duration::from_secs(5));
    if !runtime.is_shared() && !left.is_empty() {
        bail!(
            "{} shims still running after their served pods were deleted: {left:?}",
            runtime.label()
        );
    }
    Ok(idle)
}
