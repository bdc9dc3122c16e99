//! The Task API over ttrpc, served on the service's tokio runtime.
//!
//! containerd keeps one connection per task to the process serving it, and a `Wait` open on
//! each for the life of the task. ttrpc's threaded server gives every connection a reader, a
//! writer, a dispatcher and three to five workers (one of them parked in that `Wait`): about
//! nine threads per container, most of a shared manager's memory per container. Here a
//! connection is a few tokio tasks; `Wait` waits on the runtime, and every other call runs on
//! a pooled thread that ends when idle (`BLOCKING_KEEP_ALIVE`).

use std::sync::Arc;

use async_trait::async_trait;
use containerd_shim::api::{
    CloseIORequest, ConnectRequest, ConnectResponse, CreateTaskRequest, CreateTaskResponse,
    DeleteRequest, Empty, ExecProcessRequest, KillRequest, PidsRequest, PidsResponse,
    ResizePtyRequest, ShutdownRequest, StartRequest, StartResponse, StateRequest, StateResponse,
    StatsRequest, StatsResponse, UpdateTaskRequest, WaitRequest, WaitResponse,
};
use containerd_shim::protos::shim_async;
use containerd_shim::protos::ttrpc::r#async::TtrpcContext;
use containerd_shim::protos::ttrpc::asynchronous::Server;
use containerd_shim::{DeleteResponse, TtrpcResult};

use super::{TaskService, internal};
use crate::engine::Engine;

/// The listening socket containerd (or `shim start`) hands the serving process.
pub(super) const SOCKET_FD: i32 = 3;

/// How long a stopping server waits for its connections to close.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Starts serving the Task API on the socket at descriptor 3; the server runs until the
/// returned handle is shut down.
pub(super) fn serve<S: Engine>(service: Arc<TaskService<S>>) -> std::io::Result<Serving> {
    let runtime = service.runtime().handle().clone();
    let tasks: Box<dyn shim_async::Task + Send + Sync> = Box::new(TaskServer(service));
    let mut server = Server::new()
        .add_listener(SOCKET_FD)
        .map_err(std::io::Error::other)?
        .set_domain_unix()
        .register_service(shim_async::create_task(Arc::new(tasks)));
    runtime
        .block_on(server.start())
        .map_err(std::io::Error::other)?;
    Ok(Serving { server, runtime })
}

/// A running ttrpc server.
pub(super) struct Serving {
    server: Server,
    runtime: tokio::runtime::Handle,
}

impl Serving {
    /// Stops accepting and closes the connections, giving answers under way (the last
    /// Shutdown's) [`SHUTDOWN_GRACE`] to go out.
    pub(super) fn shutdown(mut self) {
        let stopped = self
            .runtime
            .block_on(async { tokio::time::timeout(SHUTDOWN_GRACE, self.server.shutdown()).await });
        match stopped {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!("stopping the ttrpc server: {err}"),
            Err(_) => tracing::warn!("ttrpc connections still open after {SHUTDOWN_GRACE:?}"),
        }
    }
}

struct TaskServer<S: Engine>(Arc<TaskService<S>>);

impl<S: Engine> TaskServer<S> {
    /// Runs `call` on a pooled thread: calls block (on the zygote, the content store, a
    /// compile), and the runtime's one worker must stay free to read the next request.
    async fn blocking<T: Send + 'static>(
        &self,
        call: impl FnOnce(&TaskService<S>) -> TtrpcResult<T> + Send + 'static,
    ) -> TtrpcResult<T> {
        let service = Arc::clone(&self.0);
        tokio::task::spawn_blocking(move || call(&service))
            .await
            .map_err(internal)?
    }
}

#[async_trait]
impl<S: Engine> shim_async::Task for TaskServer<S> {
    async fn create(
        &self,
        ctx: &TtrpcContext,
        req: CreateTaskRequest,
    ) -> TtrpcResult<CreateTaskResponse> {
        let metadata = ctx.metadata.clone();
        self.blocking(move |service| service.create(&metadata, req))
            .await
    }

    async fn start(&self, ctx: &TtrpcContext, req: StartRequest) -> TtrpcResult<StartResponse> {
        let metadata = ctx.metadata.clone();
        self.blocking(move |service| service.start(&metadata, req))
            .await
    }

    async fn state(&self, _ctx: &TtrpcContext, req: StateRequest) -> TtrpcResult<StateResponse> {
        self.0.state(req)
    }

    async fn kill(&self, ctx: &TtrpcContext, req: KillRequest) -> TtrpcResult<Empty> {
        let metadata = ctx.metadata.clone();
        self.blocking(move |service| service.kill(&metadata, req))
            .await
    }

    async fn delete(&self, ctx: &TtrpcContext, req: DeleteRequest) -> TtrpcResult<DeleteResponse> {
        let metadata = ctx.metadata.clone();
        self.blocking(move |service| service.delete(&metadata, req))
            .await
    }

    async fn pids(&self, _ctx: &TtrpcContext, req: PidsRequest) -> TtrpcResult<PidsResponse> {
        self.0.pids(req)
    }

    async fn wait(&self, _ctx: &TtrpcContext, req: WaitRequest) -> TtrpcResult<WaitResponse> {
        self.0.wait(req).await
    }

    async fn stats(&self, _ctx: &TtrpcContext, req: StatsRequest) -> TtrpcResult<StatsResponse> {
        self.blocking(move |service| service.stats(req)).await
    }

    async fn connect(
        &self,
        _ctx: &TtrpcContext,
        req: ConnectRequest,
    ) -> TtrpcResult<ConnectResponse> {
        self.0.connect(req)
    }

    async fn shutdown(&self, _ctx: &TtrpcContext, req: ShutdownRequest) -> TtrpcResult<Empty> {
        self.blocking(move |service| service.shutdown(req)).await
    }

    async fn close_io(&self, _ctx: &TtrpcContext, req: CloseIORequest) -> TtrpcResult<Empty> {
        self.0.close_io(req)
    }

    async fn resize_pty(&self, _ctx: &TtrpcContext, req: ResizePtyRequest) -> TtrpcResult<Empty> {
        self.0.resize_pty(req)
    }

    async fn exec(&self, _ctx: &TtrpcContext, req: ExecProcessRequest) -> TtrpcResult<Empty> {
        self.0.exec(req)
    }

    async fn update(&self, _ctx: &TtrpcContext, req: UpdateTaskRequest) -> TtrpcResult<Empty> {
        self.0.update(req)
    }
}
