//! Serving a `wasi:http/incoming-handler` component (the `wasi:http/proxy` world) over
//! HTTP/1.1 (and HTTP/2 without TLS, h2c, for a client that starts with its preface), as
//! `wasmtime serve` does, from the container's init process.
//!
//! - **Which components.** One that exports `wasi:http/incoming-handler@0.2.x` is served,
//!   whether or not it also exports `wasi:cli/run` (its `run` is then not called: a pod is a
//!   server or a command, and a component that offers a handler was built to be served).
//! - **Where.** `0.0.0.0:8080`, or the container's [`HTTP_ADDRESS_ENV`] (runwasi's name; the
//!   guest does not see it), or `wasmrunner.dev/http-address`, which wins. The listening socket is this process's, made in the
//!   container's network namespace and cgroup: the guest never holds it, it only sees each
//!   request as a `wasi:http` resource and answers through the response outparam. The
//!   address must lie inside the pod's network grant (`listen=PORT`), as a socket the guest
//!   opened itself would.
//! - **Each request** gets a fresh instance of one pre-instantiated component, in its own
//!   store (its own memory, its own WASI context with the workload's args, env and
//!   preopens), from Wasmtime's pooling allocator where this host can reserve its address
//!   space (else from on-demand allocation). Nothing of one request survives into the next.
//! - **Limits.** At most [`Settings::concurrency`] requests run guest code at once; the others
//!   wait for a slot in arrival order (none is refused for being one too many). A request has
//!   [`Settings::timeout`] from arrival to the end of its response, its wait for a slot
//!   included: past it its instance is dropped (a guest computing without end yields at
//!   every epoch tick, so it is stopped too) and the client gets a 504, or a 503 if it never
//!   got a slot. A trapping request gets a 500; the server keeps serving.
//! - **Logs.** The guest's stdout and stderr are the container's (`kubectl logs`), one
//!   write each; what goes wrong with a request is one line on stderr.
//! - **SIGTERM** stops accepting, lets the requests in flight finish (each within its
//!   timeout), then exits 0. SIGKILL (after a pod's grace period) ends it at once.

mod outgoing;
mod request;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Notify, Semaphore};
use wasmrunner_shim::capabilities::{Key, SocketUse};
use wasmrunner_shim::{HTTP_ADDRESS_ENV, Workload, WorkloadError};
use wasmtime::component::Component;
use wasmtime::{Engine, PoolingAllocationConfig};

use crate::engine::INFO;
use request::Handler;

/// The address a served component listens on unless the container says otherwise.
pub const DEFAULT_ADDRESS: &str = "0.0.0.0:8080";
/// Requests running guest code at once, unless `wasmrunner.dev/http-concurrency` says.
pub const DEFAULT_CONCURRENCY: u32 = 100;
/// One request's time, unless `wasmrunner.dev/http-timeout` says.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the engine's epoch moves while requests are in flight: a guest computing
/// without end yields this often, so its timeout can stop it.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Whether `component` is a `wasi:http` server: it exports the p2 incoming handler.
pub fn is_server(engine: &Engine, component: &Component) -> bool {
    component
        .component_type()
        .exports(engine)
        .any(|(name, _)| name.starts_with("wasi:http/incoming-handler@0.2"))
}

/// How a workload is served: read from its container's env and capabilities.
#[derive(Debug, Clone)]
pub struct Settings {
    pub address: SocketAddr,
    pub concurrency: u32,
    pub timeout: Duration,
}

impl Settings {
    pub fn of(workload: &Workload<'_>) -> Result<Self, WorkloadError> {
        let caps = &workload.capabilities;
        let address = match (caps.http_address, workload.http_address.as_deref()) {
            (Some(address), _) => address,
            (None, text) => {
                let text = text.unwrap_or(DEFAULT_ADDRESS);
                text.parse::<SocketAddr>().map_err(|e| {
                    WorkloadError::Policy(format!(
                        "{HTTP_ADDRESS_ENV}={text:?} is not an ADDRESS:PORT to serve on: {e}"
                    ))
                })?
            }
        };
        if !caps.network.allows(address, SocketUse::Listen) {
            return Err(WorkloadError::Policy(format!(
                "{} is served on {address}, and {} = {} does not allow listening on port {}",
                workload.name,
                Key::Network.annotation(),
                caps.network,
                address.port()
            )));
        }
        if let Some(deadline) = caps.cpu_deadline {
            return Err(WorkloadError::Policy(format!(
                "{} = {deadline:?} limits a command's CPU time; {} is served, and its requests \
                 are limited by {} instead",
                Key::CpuDeadline.annotation(),
                workload.name,
                Key::HttpTimeout.annotation()
            )));
        }
        Ok(Self {
            address,
            concurrency: caps.http_concurrency.unwrap_or(DEFAULT_CONCURRENCY),
            timeout: caps.http_timeout.unwrap_or(DEFAULT_TIMEOUT),
        })
    }
}

/// Serves `component` until SIGTERM; returns the container's exit status. `engine` is the
/// one the component was loaded with; the server moves it to a pooling engine if it can.
pub async fn serve(
    engine: &Engine,
    component: Component,
    workload: &Workload<'_>,
) -> Result<i32, WorkloadError> {
    let settings = Settings::of(workload)?;
    let load_error = |e: wasmtime::Error| WorkloadError::Load {
        what: workload.name.clone(),
        reason: format!("{e:#}"),
    };
    let (engine, component) = match pooling_engine(settings.concurrency) {
        Ok(pooling) => {
            let code = component.serialize().map_err(load_error)?;
            // SAFETY: `code` is what `Component::serialize` just wrote for a component this
            // process loaded with the same code settings (`crate::engine::config`); the
            // pooling engine differs only in how it allocates instances.
            let moved = unsafe { Component::deserialize(&pooling, &code) }.map_err(load_error)?;
            (pooling, moved)
        }
        Err(err) => {
            eprintln!(
                "wasmrunner ({}): note: serving without the pooling allocator: {err:#}",
                INFO.name
            );
            (engine.clone(), component)
        }
    };
    let handler = Handler::new(&engine, &component, workload, &settings).map_err(load_error)?;
    let listener =
        std::net::TcpListener::bind(settings.address).map_err(|e| WorkloadError::Load {
            what: workload.name.clone(),
            reason: format!("cannot listen on {}: {e}", settings.address),
        })?;
    listener
        .set_nonblocking(true)
        .map_err(|e| WorkloadError::Load {
            what: workload.name.clone(),
            reason: format!("cannot listen on {}: {e}", settings.address),
        })?;
    // SIGTERM drains (below) instead of ending the process as for a command.
    wasmrunner_shim::release_sigterm().map_err(|e| WorkloadError::Load {
        what: workload.name.clone(),
        reason: format!("cannot take over SIGTERM: {e}"),
    })?;
    // The server is about to take its first request.
    workload.ready_to_run();

    // The guest runs on every core the container may use; this thread only waits.
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .map_err(|e| WorkloadError::Load {
            what: workload.name.clone(),
            reason: format!("cannot start the server's runtime: {e}"),
        })?;
    let server = Server {
        handler: Arc::new(handler),
        ticker: Arc::new(Ticker::new(engine)),
        slots: Arc::new(Semaphore::new(settings.concurrency as usize)),
        concurrency: settings.concurrency,
    };
    let served = tokio::task::spawn_blocking(move || runtime.block_on(server.run(listener)))
        .await
        .map_err(|e| WorkloadError::Load {
            what: workload.name.clone(),
            reason: format!("the server stopped: {e}"),
        })?;
    served.map_err(|e| WorkloadError::Load {
        what: workload.name.clone(),
        reason: format!("the server stopped: {e}"),
    })
}

/// The engine for serving: the container's code settings, instances from a pool sized for
/// `concurrency` requests at once.
fn pooling_engine(concurrency: u32) -> wasmtime::Result<Engine> {
    let at_least =
        |floor: u32, per_request: u32| floor.max(concurrency.saturating_mul(per_request));
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(concurrency)
        .total_core_instances(at_least(1000, 8))
        .total_memories(at_least(1000, 2))
        .total_tables(at_least(1000, 8))
        .total_stacks(at_least(1000, 1));
    let mut config = crate::engine::container_config();
    config.allocation_strategy(pool);
    Engine::new(&config)
}

struct Server {
    handler: Arc<Handler>,
    ticker: Arc<Ticker>,
    slots: Arc<Semaphore>,
    concurrency: u32,
}

impl Server {
    /// The connection's service: each request handled by the guest, under the server's
    /// slots and ticker.
    fn service(
        &self,
    ) -> impl hyper::service::Service<
        hyper::Request<hyper::body::Incoming>,
        Response = hyper::Response<request::Body>,
        Error = std::convert::Infallible,
        Future: Send,
    > + use<> {
        let (handler, ticker, slots) = (
            self.handler.clone(),
            self.ticker.clone(),
            self.slots.clone(),
        );
        hyper::service::service_fn(move |req| {
            let (handler, ticker, slots) = (handler.clone(), ticker.clone(), slots.clone());
            async move { Ok(handler.handle(req, slots, ticker).await) }
        })
    }

    async fn run(self, listener: std::net::TcpListener) -> std::io::Result<i32> {
        let listener = TcpListener::from_std(listener)?;
        let mut terminate = signal(SignalKind::terminate())?;
        tokio::spawn(self.ticker.clone().run());
        let graceful = GracefulShutdown::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _peer)) => {
                        let _ = stream.set_nodelay(true);
                        let (service, watcher) = (self.service(), graceful.watcher());
                        tokio::spawn(async move {
                            // HTTP/1.1 with keep-alive, or HTTP/2 without TLS (h2c) for a
                            // client that starts with its preface.
                            let mut builder = auto::Builder::new(TokioExecutor::new());
                            builder.http1().timer(TokioTimer::new()).keep_alive(true);
                            builder.http2().timer(TokioTimer::new());
                            let connection =
                                builder.serve_connection(TokioIo::new(stream), service);
                            // A client that goes away mid-request is its own business.
                            let _ = watcher.watch(connection).await;
                        });
                    }
                    // Out of descriptors or memory for a moment: the next accept may do.
                    Err(err) => {
                        eprintln!("wasmrunner ({}): accepting a connection: {err}", INFO.name);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                _ = terminate.recv() => break,
            }
        }
        drop(listener);
        graceful.shutdown().await;
        // A guest may still be writing a body the client stopped reading: it holds its slot
        // until its instance is gone.
        let _all = self.slots.acquire_many(self.concurrency).await;
        Ok(0)
    }
}

/// Moves the engine's epoch on every [`EPOCH_TICK`] while a request is in flight, and not at
/// all while the server is idle (a thousand idle HTTP pods wake nobody).
pub(crate) struct Ticker {
    engine: Engine,
    busy: AtomicUsize,
    wake: Notify,
}

impl Ticker {
    fn new(engine: Engine) -> Self {
        Self {
            engine,
            busy: AtomicUsize::new(0),
            wake: Notify::new(),
        }
    }

    /// Marks a request in flight until the guard is dropped.
    pub(crate) fn busy(self: &Arc<Self>) -> Busy {
        if self.busy.fetch_add(1, Ordering::AcqRel) == 0 {
            self.wake.notify_one();
        }
        Busy(self.clone())
    }

    async fn run(self: Arc<Self>) {
        loop {
            while self.busy.load(Ordering::Acquire) == 0 {
                self.wake.notified().await;
            }
            tokio::time::sleep(EPOCH_TICK).await;
            self.engine.increment_epoch();
        }
    }
}

pub(crate) struct Busy(Arc<Ticker>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}
