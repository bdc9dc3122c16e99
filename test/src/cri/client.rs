//! A blocking CRI client: kubelet's gRPC calls (runtime and image services, API v1) to
//! containerd's CRI plugin over its unix socket, each bounded by a timeout.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    AuthConfig, ContainerConfig, ContainerStats, ContainerStatsRequest, ContainerStatusRequest,
    ContainerStatusResponse, CreateContainerRequest, ImageSpec, ImageStatusRequest,
    ImageStatusResponse, ListPodSandboxRequest, PodSandbox, PodSandboxConfig, PodSandboxStats,
    PodSandboxStatsRequest, PodSandboxStatusRequest, PodSandboxStatusResponse, PullImageRequest,
    RemoveContainerRequest, RemoveImageRequest, RemovePodSandboxRequest, RunPodSandboxRequest,
    StartContainerRequest, StatusRequest, StatusResponse, StopContainerRequest,
    StopPodSandboxRequest, VersionRequest, VersionResponse,
};
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// How long one call may take before the client gives up (StopContainer adds its grace period).
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// One connection to containerd's CRI services, driven by its own single-threaded runtime.
pub struct CriClient {
    runtime: tokio::runtime::Runtime,
    service: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
}

impl CriClient {
    /// Connects to the gRPC socket at `socket`.
    pub fn connect(socket: &Path) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the CRI client's runtime")?;
        let path: PathBuf = socket.to_path_buf();
        let channel = runtime
            .block_on(async move {
                // The URI is required by tonic and ignored by the connector.
                Endpoint::from_static("http://localhost")
                    .connect_with_connector(tower::service_fn(move |_: Uri| {
                        let path = path.clone();
                        async move { UnixStream::connect(path).await.map(TokioIo::new) }
                    }))
                    .await
            })
            .with_context(|| format!("connecting to CRI at {}", socket.display()))?;
        Ok(Self {
            runtime,
            service: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
        })
    }

    /// Runs one call to completion, or fails after `timeout`.
    fn call<T, F>(&self, what: &str, timeout: Duration, call: F) -> Result<T>
    where
        F: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        self.runtime
            .block_on(async { tokio::time::timeout(timeout, call).await })
            .map_err(|_| anyhow!("CRI {what} did not answer within {timeout:?}"))?
            .map(tonic::Response::into_inner)
            .map_err(|status| {
                anyhow!(
                    "CRI {what} failed: {:?}: {}",
                    status.code(),
                    status.message()
                )
            })
    }

    fn rt(&self) -> RuntimeServiceClient<Channel> {
        self.service.clone()
    }

    pub fn version(&self) -> Result<VersionResponse> {
        let request = VersionRequest {
            version: "v1".into(),
        };
        self.call("Version", CALL_TIMEOUT, self.rt().version(request))
    }

    pub fn status(&self, verbose: bool) -> Result<StatusResponse> {
        self.call(
            "Status",
            CALL_TIMEOUT,
            self.rt().status(StatusRequest { verbose }),
        )
    }

    pub fn image_status(&self, image: &str) -> Result<ImageStatusResponse> {
        let request = ImageStatusRequest {
            image: Some(ImageSpec {
                image: image.to_string(),
                ..Default::default()
            }),
            verbose: false,
        };
        self.call(
            "ImageStatus",
            CALL_TIMEOUT,
            self.images.clone().image_status(request),
        )
    }

    /// PullImage as kubelet sends it, with the pod's pull secret as `auth` (user, password);
    /// returns the image reference (its id) containerd answers with.
    pub fn pull_image(
        &self,
        image: &str,
        auth: Option<(&str, &str)>,
        sandbox: Option<&PodSandboxConfig>,
    ) -> Result<String> {
        let request = PullImageRequest {
            image: Some(ImageSpec {
                image: image.to_string(),
                ..Default::default()
            }),
            auth: auth.map(|(username, password)| AuthConfig {
                username: username.to_string(),
                password: password.to_string(),
                ..Default::default()
            }),
            sandbox_config: sandbox.cloned(),
        };
        let response = self.call(
            "PullImage",
            CALL_TIMEOUT,
            self.images.clone().pull_image(request),
        )?;
        Ok(response.image_ref)
    }

    pub fn remove_image(&self, image: &str) -> Result<()> {
        let request = RemoveImageRequest {
            image: Some(ImageSpec {
                image: image.to_string(),
                ..Default::default()
            }),
        };
        self.call(
            "RemoveImage",
            CALL_TIMEOUT,
            self.images.clone().remove_image(request),
        )?;
        Ok(())
    }

    pub fn run_pod_sandbox(&self, config: &PodSandboxConfig, handler: &str) -> Result<String> {
        let request = RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: handler.to_string(),
        };
        let response = self.call(
            "RunPodSandbox",
            CALL_TIMEOUT,
            self.rt().run_pod_sandbox(request),
        )?;
        Ok(response.pod_sandbox_id)
    }

    pub fn pod_sandbox_status(&self, id: &str, verbose: bool) -> Result<PodSandboxStatusResponse> {
        let request = PodSandboxStatusRequest {
            pod_sandbox_id: id.to_string(),
            verbose,
        };
        self.call(
            "PodSandboxStatus",
            CALL_TIMEOUT,
            self.rt().pod_sandbox_status(request),
        )
    }

    pub fn list_pod_sandboxes(&self) -> Result<Vec<PodSandbox>> {
        let response = self.call(
            "ListPodSandbox",
            CALL_TIMEOUT,
            self.rt()
                .list_pod_sandbox(ListPodSandboxRequest { filter: None }),
        )?;
        Ok(response.items)
    }

    pub fn create_container(
        &self,
        sandbox_id: &str,
        config: &ContainerConfig,
        sandbox: &PodSandboxConfig,
    ) -> Result<String> {
        let request = CreateContainerRequest {
            pod_sandbox_id: sandbox_id.to_string(),
            config: Some(config.clone()),
            sandbox_config: Some(sandbox.clone()),
        };
        let response = self.call(
            "CreateContainer",
            CALL_TIMEOUT,
            self.rt().create_container(request),
        )?;
        Ok(response.container_id)
    }

    pub fn start_container(&self, id: &str) -> Result<()> {
        let request = StartContainerRequest {
            container_id: id.to_string(),
        };
        self.call(
            "StartContainer",
            CALL_TIMEOUT,
            self.rt().start_container(request),
        )?;
        Ok(())
    }

    pub fn container_status(&self, id: &str, verbose: bool) -> Result<ContainerStatusResponse> {
        let request = ContainerStatusRequest {
            container_id: id.to_string(),
            verbose,
        };
        self.call(
            "ContainerStatus",
            CALL_TIMEOUT,
            self.rt().container_status(request),
        )
    }

    pub fn container_stats(&self, id: &str) -> Result<ContainerStats> {
        let request = ContainerStatsRequest {
            container_id: id.to_string(),
        };
        self.call(
            "ContainerStats",
            CALL_TIMEOUT,
            self.rt().container_stats(request),
        )?
        .stats
        .with_context(|| format!("ContainerStats of {id} returned no stats"))
    }

    pub fn pod_sandbox_stats(&self, id: &str) -> Result<PodSandboxStats> {
        let request = PodSandboxStatsRequest {
            pod_sandbox_id: id.to_string(),
        };
        self.call(
            "PodSandboxStats",
            CALL_TIMEOUT,
            self.rt().pod_sandbox_stats(request),
        )?
        .stats
        .with_context(|| format!("PodSandboxStats of {id} returned no stats"))
    }

    /// StopContainer with a grace period of `timeout_seconds` (SIGTERM, then SIGKILL).
    pub fn stop_container(&self, id: &str, timeout_seconds: i64) -> Result<()> {
        let request = StopContainerRequest {
            container_id: id.to_string(),
            timeout: timeout_seconds,
        };
        let grace = Duration::from_secs(timeout_seconds.max(0).unsigned_abs());
        self.call(
            "StopContainer",
            CALL_TIMEOUT + grace,
            self.rt().stop_container(request),
        )?;
        Ok(())
    }

    pub fn remove_container(&self, id: &str) -> Result<()> {
        let request = RemoveContainerRequest {
            container_id: id.to_string(),
        };
        self.call(
            "RemoveContainer",
            CALL_TIMEOUT,
            self.rt().remove_container(request),
        )?;
        Ok(())
    }

    pub fn stop_pod_sandbox(&self, id: &str) -> Result<()> {
        let request = StopPodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        };
        self.call(
            "StopPodSandbox",
            CALL_TIMEOUT,
            self.rt().stop_pod_sandbox(request),
        )?;
        Ok(())
    }

    pub fn remove_pod_sandbox(&self, id: &str) -> Result<()> {
        let request = RemovePodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        };
        self.call(
            "RemovePodSandbox",
            CALL_TIMEOUT,
            self.rt().remove_pod_sandbox(request),
        )?;
        Ok(())
    }
}
