//! One request: a slot, a fresh instance in its own store, the guest's response or the
//! reason there is none.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::HeaderValue;
use tokio::sync::{Semaphore, oneshot};
use tokio::time::{Instant, timeout_at};
use wasmrunner_shim::capabilities::{Capabilities, Key};
use wasmrunner_shim::served_requests::{
    RequestContext, RequestLog, ServedRequest, TRACEPARENT, method_name,
};
use wasmrunner_shim::{Workload, WorkloadError};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, Store, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::outgoing::PolicyHooks;
use super::{Settings, Ticker};
use crate::engine::INFO;
use crate::guest::{Guest, limited_store, wasi_builder};

/// A response body: the guest's, or one of the server's own short texts.
pub type Body = HyperOutgoingBody;

/// What one request's store holds beside its limits.
pub(crate) struct Served {
    ctx: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    hooks: PolicyHooks,
}

impl WasiView for Guest<Served> {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi.ctx,
            table: &mut self.wasi.table,
        }
    }
}

impl WasiHttpView for Guest<Served> {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.wasi.http,
            table: &mut self.wasi.table,
            hooks: &mut self.wasi.hooks,
        }
    }
}

/// Everything a request needs that does not change between requests.
pub(crate) struct Handler {
    pre: ProxyPre<Guest<Served>>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    capabilities: Capabilities,
    timeout: Duration,
    concurrency: u32,
    /// Where a traced task's requests are told to the shim, a span each.
    requests: RequestLog,
}

/// How a guest's handling of one request ended, when it did not answer.
enum Ended {
    TimedOut,
    Failed(wasmtime::Error),
}

impl Handler {
    /// Links WASI and `wasi:http` for `component` once; each request then only instantiates.
    pub(crate) fn new(
        engine: &Engine,
        component: &Component,
        workload: &Workload<'_>,
        settings: &Settings,
    ) -> wasmtime::Result<Self> {
        let mut linker = Linker::new(engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        let pre = ProxyPre::new(linker.instantiate_pre(component)?)?;
        Ok(Self {
            pre,
            args: workload.args.clone(),
            env: workload.env.clone(),
            capabilities: workload.capabilities.clone(),
            timeout: settings.timeout,
            concurrency: settings.concurrency,
            requests: workload.milestones.requests().clone(),
        })
    }

    /// The response to `request`; when the task is traced, the request continues its
    /// client's trace (`wasmrunner_shim::served_requests`): the guest sees a `traceparent`
    /// naming the request's span, and the shim learns the request once its response's head is
    /// ready.
    pub(crate) async fn handle(
        &self,
        mut request: hyper::Request<hyper::body::Incoming>,
        slots: Arc<Semaphore>,
        ticker: Arc<Ticker>,
    ) -> hyper::Response<Body> {
        if !self.requests.traced() {
            return self.respond(request, slots, ticker).await;
        }
        let start = SystemTime::now();
        let headers = request.headers_mut();
        let context = RequestContext::continuing(headers.get(TRACEPARENT).map(|v| v.as_bytes()));
        if let Ok(value) = HeaderValue::from_str(&context.traceparent()) {
            headers.insert(TRACEPARENT, value);
        }
        let method = method_name(request.method().as_str());
        let response = self.respond(request, slots, ticker).await;
        self.requests.served(&ServedRequest {
            context,
            start,
            end: SystemTime::now(),
            status: response.status().as_u16(),
            method,
        });
        response
    }

    /// The response to `request`: the guest's, or the server's own 500, 503 or 504.
    async fn respond(
        &self,
        request: hyper::Request<hyper::body::Incoming>,
        slots: Arc<Semaphore>,
        ticker: Arc<Ticker>,
    ) -> hyper::Response<Body> {
        let deadline = Instant::now() + self.timeout;
        let what = format!("{} {}", request.method(), request.uri());
        let Ok(Ok(slot)) = timeout_at(deadline, slots.acquire_owned()).await else {
            return self.refuse(
                &what,
                503,
                format!(
                    "all {} request slots ({}) stayed busy for the request's {:?} ({})",
                    self.concurrency,
                    Key::HttpConcurrency.annotation(),
                    self.timeout,
                    Key::HttpTimeout.annotation()
                ),
            );
        };
        let busy = ticker.busy();
        let mut store = match self.store() {
            Ok(store) => store,
            Err(err) => return self.refuse(&what, 500, format!("{err}")),
        };
        let (sender, receiver) = oneshot::channel();
        let resources = (|| {
            let mut http = store.data_mut().http();
            let request = http.new_incoming_request(Scheme::Http, request)?;
            let outparam = http.new_response_outparam(sender)?;
            wasmtime::Result::<_>::Ok((request, outparam))
        })();
        let (request, outparam) = match resources {
            Ok(resources) => resources,
            Err(err) => return self.refuse(&what, 400, format!("{err:#}")),
        };
        let pre = self.pre.clone();
        // The guest runs in a task of its own: it may go on writing the body after it has
        // handed over the response, while this function returns the response to hyper.
        let guest = tokio::spawn(async move {
            let handle = async {
                let proxy = pre.instantiate_async(&mut store).await?;
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, request, outparam)
                    .await
            };
            let ended = match timeout_at(deadline, handle).await {
                Ok(outcome) => outcome.map_err(Ended::Failed),
                Err(_) => Err(Ended::TimedOut),
            };
            // The instance goes back to the pool before its slot frees: the pool holds as
            // many instances as there are slots.
            drop(store);
            drop((slot, busy));
            ended
        });
        match receiver.await {
            Ok(Ok(response)) => response,
            Ok(Err(code)) => self.refuse(&what, 500, format!("the handler answered {code:?}")),
            Err(_) => {
                let reason = match guest.await {
                    Ok(Ok(())) => "the handler returned without setting a response".to_string(),
                    Ok(Err(Ended::TimedOut)) => {
                        return self.refuse(
                            &what,
                            504,
                            format!(
                                "the request took longer than {:?} ({})",
                                self.timeout,
                                Key::HttpTimeout.annotation()
                            ),
                        );
                    }
                    Ok(Err(Ended::Failed(err))) => failure(&err),
                    Err(err) => format!("the request's task ended: {err}"),
                };
                self.refuse(&what, 500, reason)
            }
        }
    }

    /// A store for one request: the workload's WASI context and limits, yielding at every
    /// epoch tick so that its timeout can stop it.
    fn store(&self) -> Result<Store<Guest<Served>>, WorkloadError> {
        let served = Served {
            ctx: wasi_builder(&self.args, &self.env, &self.capabilities)?.build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            hooks: PolicyHooks::new(&self.capabilities.network),
        };
        let mut store = limited_store(self.pre.engine(), &self.capabilities, served);
        store.epoch_deadline_async_yield_and_update(1);
        Ok(store)
    }

    /// The server's own answer, logged as one line on the container's stderr.
    fn refuse(&self, what: &str, status: u16, reason: String) -> hyper::Response<Body> {
        eprintln!("wasmrunner ({}): {what}: {status}: {reason}", INFO.name);
        let body = Full::new(Bytes::from(format!("{reason}\n")))
            .map_err(|never| match never {})
            .boxed_unsync();
        let mut response = hyper::Response::new(body);
        *response.status_mut() =
            hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
        response
    }
}

/// Why a guest's handler failed, in one line: a trap's own words without the backtrace.
fn failure(err: &wasmtime::Error) -> String {
    match err.downcast_ref::<Trap>() {
        Some(trap) => format!("the guest trapped: {trap}"),
        None => format!("the handler failed: {}", err.root_cause()).replace('\n', " "),
    }
}
