//! containerd's gRPC API, the way `ctr run` drives it: a container record (with the OCI spec
//! `ctr` generates), a snapshot prepared on the image's top layer, then the task calls.
//!
//! The spec and the snapshot parent come from a template container that `ctr containers
//! create` makes (so the spec is exactly what `ctr run` would send), read back over gRPC and
//! deleted; each task then gets a copy with its own id and cgroup path.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{
    PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
};
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::{
    Container, CreateContainerRequest, CreateTaskRequest, DeleteContainerRequest,
    DeleteTaskRequest, GetContainerRequest, KillRequest, StartRequest, WaitRequest,
};
use tonic::Request;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;

/// Where one task's time went, call by call (what the bench prints as "where the time goes").
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Phases {
    /// The container record and its snapshot (containerd only; no shim yet).
    pub record: Duration,
    /// Tasks.Create: containerd makes the bundle and fifos, starts or finds the shim, and the
    /// shim's Create.
    pub create: Duration,
    /// Tasks.Start.
    pub start: Duration,
    /// Tasks.Wait, from the end of Start to the exit.
    pub wait: Duration,
    /// Tasks.Delete: the shim's Delete and Shutdown, the bundle and mounts removed.
    pub delete: Duration,
    /// The snapshot and the record removed (containerd only).
    pub cleanup: Duration,
}

impl Phases {
    pub const NAMES: [&'static str; 6] = ["record", "create", "start", "wait", "delete", "cleanup"];

    pub fn total(&self) -> Duration {
        self.values().into_iter().sum()
    }

    /// In the order of [`Phases::NAMES`].
    pub fn values(&self) -> [Duration; 6] {
        [
            self.record,
            self.create,
            self.start,
            self.wait,
            self.delete,
            self.cleanup,
        ]
    }
}

/// The header containerd reads the namespace of a call from.
const NAMESPACE_HEADER: &str = "containerd-namespace";

/// A connection to containerd, bound to one namespace.
#[derive(Clone)]
pub struct Client {
    channel: Channel,
    namespace: MetadataValue<Ascii>,
}

impl Client {
    pub async fn connect(socket: &str, namespace: &str) -> Result<Self> {
        let channel = containerd_client::connect(socket)
            .await
            .with_context(|| format!("connecting to containerd at {socket}"))?;
        let namespace = namespace
            .parse()
            .with_context(|| format!("namespace {namespace:?} is not a header value"))?;
        Ok(Self { channel, namespace })
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request
            .metadata_mut()
            .insert(NAMESPACE_HEADER, self.namespace.clone());
        request
    }

    fn containers(&self) -> ContainersClient<Channel> {
        ContainersClient::new(self.channel.clone())
    }

    fn snapshots(&self) -> SnapshotsClient<Channel> {
        SnapshotsClient::new(self.channel.clone())
    }

    fn tasks(&self) -> TasksClient<Channel> {
        TasksClient::new(self.channel.clone())
    }

    /// Reads back the container `ctr containers create` made as `template_id`.
    pub async fn template(&self, template_id: &str) -> Result<Template> {
        let container = self
            .containers()
            .get(self.request(GetContainerRequest {
                id: template_id.to_string(),
            }))
            .await
            .with_context(|| format!("getting container {template_id}"))?
            .into_inner()
            .container
            .with_context(|| format!("containerd returned no container for {template_id}"))?;
        let info = self
            .snapshots()
            .stat(self.request(StatSnapshotRequest {
                snapshotter: container.snapshotter.clone(),
                key: container.snapshot_key.clone(),
            }))
            .await
            .with_context(|| format!("stat of snapshot {}", container.snapshot_key))?
            .into_inner()
            .info
            .with_context(|| format!("no info for snapshot {}", container.snapshot_key))?;
        let spec = container
            .spec
            .as_ref()
            .with_context(|| format!("container {template_id} has no spec"))?;
        let spec_text = String::from_utf8(spec.value.clone())
            .with_context(|| format!("the spec of {template_id} is not UTF-8 JSON"))?;
        if info.parent.is_empty() {
            bail!("snapshot {} has no parent layer", container.snapshot_key);
        }
        Ok(Template {
            template_id: template_id.to_string(),
            chain_id: info.parent,
            spec_text,
            container,
        })
    }

    /// One task's life: container record, snapshot, create, start, wait, delete, and the
    /// record and snapshot removed again. Returns how long each step took; fails unless the
    /// task exits 0.
    pub async fn run_task(&self, template: &Template, id: &str) -> Result<Phases> {
        let mut phases = Phases::default();
        let mut clock = Instant::now();
        let container = template.for_container(id);
        let snapshotter = container.snapshotter.clone();
        self.containers()
            .create(self.request(CreateContainerRequest {
                container: Some(container),
            }))
            .await
            .with_context(|| format!("creating container {id}"))?;
        let result = self
            .task_in(&snapshotter, template, id, &mut phases, &mut clock)
            .await;
        if result.is_err() {
            self.remove(&snapshotter, id).await;
        }
        result?;
        Ok(phases)
    }

    async fn task_in(
        &self,
        snapshotter: &str,
        template: &Template,
        id: &str,
        phases: &mut Phases,
        clock: &mut Instant,
    ) -> Result<()> {
        // The time since the last lap.
        let mut lap = || {
            let now = Instant::now();
            let since = now - *clock;
            *clock = now;
            since
        };
        let mounts = self
            .snapshots()
            .prepare(self.request(PrepareSnapshotRequest {
                snapshotter: snapshotter.to_string(),
                key: id.to_string(),
                parent: template.chain_id.clone(),
                labels: Default::default(),
            }))
            .await
            .with_context(|| format!("preparing the snapshot of {id}"))?
            .into_inner()
            .mounts;
        phases.record = lap();
        // Empty stdio paths: the task's output goes nowhere (`ctr run --null-io`).
        self.tasks()
            .create(self.request(CreateTaskRequest {
                container_id: id.to_string(),
                rootfs: mounts,
                ..Default::default()
            }))
            .await
            .with_context(|| format!("creating task {id}"))?;
        phases.create = lap();
        self.tasks()
            .start(self.request(StartRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
            }))
            .await
            .with_context(|| format!("starting task {id}"))?;
        phases.start = lap();
        let status = self
            .tasks()
            .wait(self.request(WaitRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
            }))
            .await
            .with_context(|| format!("waiting for task {id}"))?
            .into_inner()
            .exit_status;
        phases.wait = lap();
        self.tasks()
            .delete(self.request(DeleteTaskRequest {
                container_id: id.to_string(),
            }))
            .await
            .with_context(|| format!("deleting task {id}"))?;
        phases.delete = lap();
        if status != 0 {
            bail!("task {id} exited with status {status}");
        }
        // The snapshot first, as `ctr` does: once the record is gone, containerd's garbage
        // collector may remove the snapshot itself at any moment.
        self.snapshots()
            .remove(self.request(RemoveSnapshotRequest {
                snapshotter: snapshotter.to_string(),
                key: id.to_string(),
            }))
            .await
            .with_context(|| format!("removing the snapshot of {id}"))?;
        self.containers()
            .delete(self.request(DeleteContainerRequest { id: id.to_string() }))
            .await
            .with_context(|| format!("deleting container {id}"))?;
        phases.cleanup = lap();
        Ok(())
    }

    /// Only the container record of `id` (no snapshot, no task): what a runwasi-based shim
    /// reads back from containerd during Create (the image, for its wasm layers), for tasks
    /// driven straight over the shim's ttrpc API.
    pub async fn create_record(&self, template: &Template, id: &str) -> Result<()> {
        let mut container = template.for_container(id);
        container.snapshot_key = String::new();
        self.containers()
            .create(self.request(CreateContainerRequest {
                container: Some(container),
            }))
            .await
            .with_context(|| format!("creating container record {id}"))?;
        Ok(())
    }

    pub async fn delete_record(&self, id: &str) -> Result<()> {
        self.containers()
            .delete(self.request(DeleteContainerRequest { id: id.to_string() }))
            .await
            .with_context(|| format!("deleting container record {id}"))?;
        Ok(())
    }

    /// Best effort, after a failure: whatever of the task, record and snapshot exists goes.
    async fn remove(&self, snapshotter: &str, id: &str) {
        let _ = self
            .tasks()
            .kill(self.request(KillRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
                signal: libc::SIGKILL as u32,
                all: true,
            }))
            .await;
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            self.tasks().wait(self.request(WaitRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
            })),
        )
        .await;
        let _ = self
            .tasks()
            .delete(self.request(DeleteTaskRequest {
                container_id: id.to_string(),
            }))
            .await;
        let _ = self
            .snapshots()
            .remove(self.request(RemoveSnapshotRequest {
                snapshotter: snapshotter.to_string(),
                key: id.to_string(),
            }))
            .await;
        let _ = self
            .containers()
            .delete(self.request(DeleteContainerRequest { id: id.to_string() }))
            .await;
    }
}

/// What `ctr` would create for a container of one image and runtime.
#[derive(Debug, Clone)]
pub struct Template {
    template_id: String,
    /// The image's top layer snapshot: the parent of each container's snapshot.
    chain_id: String,
    spec_text: String,
    container: Container,
}

impl Template {
    /// The template's record for container `id`: its own snapshot key, and the template's id
    /// replaced in the spec (the cgroup path is `/<namespace>/<id>`).
    fn for_container(&self, id: &str) -> Container {
        let mut container = self.container.clone();
        container.id = id.to_string();
        container.snapshot_key = id.to_string();
        container.created_at = None;
        container.updated_at = None;
        if let Some(spec) = container.spec.as_mut() {
            spec.value = self.spec_text.replace(&self.template_id, id).into_bytes();
        }
        container
    }
}
