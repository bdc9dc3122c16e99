//! A pod as kubelet runs it through CRI: RunPodSandbox with the pod's RuntimeClass handler,
//! then per container ImageStatus, CreateContainer and StartContainer; ContainerStatus,
//! the CRI log file (what `kubectl logs` reads), stats (what `kubectl top` reads); then
//! StopContainer with a grace period, RemoveContainer, StopPodSandbox, RemovePodSandbox,
//! and the pod's cgroup and files removed, as kubelet does with the cgroupfs driver.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, ContainerState, ContainerStatus, ImageSpec, KeyValue,
    LinuxContainerConfig, LinuxContainerResources, LinuxContainerSecurityContext,
    LinuxPodSandboxConfig, LinuxSandboxSecurityContext, Mount, NamespaceMode, NamespaceOption,
    PodSandboxConfig, PodSandboxMetadata, PodSandboxStatusResponse, SecurityProfile,
    security_profile::ProfileType,
};

use super::client::CriClient;
use super::config::K8S_NAMESPACE;
use crate::images::TestImage;
use crate::leaks::{Trace, assert_clean, remove_cgroup};
use crate::suite::Env;

/// The Kubernetes namespace the suite's pods are in.
pub const POD_NAMESPACE: &str = "wasmrunner-e2e";

/// The pod's network: the node's (`hostNetwork: true`) or its own, from CNI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    Host,
    Pod,
}

/// What a pod is: its name, RuntimeClass handler and network.
#[derive(Debug, Clone)]
pub struct PodSpec {
    pub name: String,
    pub handler: String,
    pub network: Network,
    /// The pod's memory limit (the sum of its containers'): makes it a Burstable pod.
    pub memory_limit: Option<i64>,
    /// The pod's own annotations (`metadata.annotations`), after kubelet's.
    pub annotations: Vec<(String, String)>,
}

impl PodSpec {
    pub fn new(name: &str, handler: &str, network: Network) -> Self {
        Self {
            name: name.to_string(),
            handler: handler.to_string(),
            network,
            memory_limit: None,
            annotations: Vec::new(),
        }
    }

    pub fn memory_limit(mut self, bytes: i64) -> Self {
        self.memory_limit = Some(bytes);
        self
    }

    /// Adds annotation `key` to the pod (its PodSandboxConfig, as kubelet sends it).
    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.annotations.push((key.to_string(), value.to_string()));
        self
    }

    fn qos_class(&self) -> &'static str {
        if self.memory_limit.is_some() {
            "burstable"
        } else {
            "besteffort"
        }
    }
}

/// One container of a pod: a name, an image, its `command` (empty: the image's entrypoint)
/// and `args`, a memory limit.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    pub name: String,
    pub image: TestImage,
    /// The pod's `command`, which replaces the image's entrypoint; an image with none (a
    /// CNCF Wasm artifact) needs one.
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub memory_limit: Option<i64>,
    /// Set in the container's env, after kubelet's own (`POD_NAME`).
    pub envs: Vec<(String, String)>,
    /// The container's annotations (its ContainerConfig's), after kubelet's own.
    pub annotations: Vec<(String, String)>,
}

impl ContainerSpec {
    pub fn new(name: &str, image: TestImage, args: &[&str]) -> Self {
        Self {
            name: name.to_string(),
            image,
            command: Vec::new(),
            args: args.iter().map(|a| a.to_string()).collect(),
            memory_limit: None,
            envs: Vec::new(),
            annotations: Vec::new(),
        }
    }

    /// Sets the pod's `command` (the image's entrypoint otherwise).
    pub fn command(mut self, command: &[&str]) -> Self {
        self.command = command.iter().map(|c| c.to_string()).collect();
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.envs.push((key.to_string(), value.to_string()));
        self
    }

    /// Adds annotation `key` to the container's ContainerConfig.
    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.annotations.push((key.to_string(), value.to_string()));
        self
    }

    pub fn memory_limit(mut self, bytes: i64) -> Self {
        self.memory_limit = Some(bytes);
        self
    }
}

/// One line of a CRI container log: `<RFC 3339 time> <stream> <P|F> <text>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub time: String,
    pub stream: String,
    /// `F` for a full line, `P` for a partial one.
    pub tag: String,
    pub text: String,
}

/// Parses a CRI log file's text; fails on a line that is not in the CRI format.
pub fn parse_log(text: &str) -> Result<Vec<LogLine>> {
    text.lines()
        .map(|line| {
            let mut words = line.splitn(4, ' ');
            let (Some(time), Some(stream), Some(tag)) = (words.next(), words.next(), words.next())
            else {
                bail!("not a CRI log line: {line:?}");
            };
            let text = words.next().unwrap_or("");
            ensure!(
                time.len() >= 20 && time.as_bytes()[4] == b'-' && time.contains('T'),
                "no RFC 3339 timestamp in CRI log line {line:?}"
            );
            ensure!(
                stream == "stdout" || stream == "stderr",
                "unknown stream in CRI log line {line:?}"
            );
            ensure!(
                tag == "F" || tag == "P",
                "unknown tag in CRI log line {line:?}"
            );
            Ok(LogLine {
                time: time.to_string(),
                stream: stream.to_string(),
                tag: tag.to_string(),
                text: text.to_string(),
            })
        })
        .collect()
}

/// The full lines a stream printed, partial lines joined.
pub fn stream_lines(lines: &[LogLine], stream: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut pending = String::new();
    for line in lines.iter().filter(|l| l.stream == stream) {
        pending.push_str(&line.text);
        if line.tag == "F" {
            out.push(std::mem::take(&mut pending));
        }
    }
    if !pending.is_empty() {
        out.push(pending);
    }
    out
}

static NEXT_POD: AtomicU64 = AtomicU64::new(0);

/// A pod UID in the UUID format kubelet gets from the API server.
fn new_uid() -> String {
    let n = NEXT_POD.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let pid = u64::from(std::process::id());
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        (nanos >> 32) as u32,
        (nanos >> 16) as u16,
        n & 0xfff,
        pid & 0xfff,
        (((nanos as u64) & 0xffff_ffff) << 16) | (n & 0xffff)
    )
}

fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// kubelet's annotations with the spec's own added (a spec's value wins).
fn with_annotations(
    mut kubelet: HashMap<String, String>,
    own: &[(String, String)],
) -> HashMap<String, String> {
    kubelet.extend(own.iter().cloned());
    kubelet
}

/// The host's memory in bytes (for kubelet's oom_score_adj of Burstable containers).
fn memory_capacity() -> i64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines().find_map(|line| {
                let kib = line.strip_prefix("MemTotal:")?.trim().strip_suffix("kB")?;
                kib.trim().parse::<i64>().ok()
            })
        })
        .map_or(24 << 30, |kib| kib * 1024)
}

/// The paths kubelet asks the runtime to mask and to make read-only in an unprivileged
/// container (its defaults for `procMount: Default`).
const MASKED_PATHS: [&str; 11] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];
const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// A pod whose sandbox runs. Remove it with [`Pod::remove`]; one dropped without that is
/// removed on a best-effort basis (a failing case must not leave pods behind).
pub struct Pod<'e> {
    env: &'e Env,
    client: CriClient,
    pub spec: PodSpec,
    pub id: String,
    pub uid: String,
    pub config: PodSandboxConfig,
    /// `<kubelet>/logs/pods/<namespace>_<name>_<uid>`, kubelet's `/var/log/pods/...`.
    pub log_dir: PathBuf,
    /// `<kubelet>/pods/<uid>`: the pod's `etc-hosts` and termination-log files.
    pub pod_dir: PathBuf,
    pub cgroup_parent: String,
    /// The sandbox's network namespace file (pod network only).
    pub netns: Option<PathBuf>,
    containers: Vec<String>,
    removed: bool,
}

impl<'e> Pod<'e> {
    /// Runs the pod's sandbox: RunPodSandbox with the handler, as kubelet does.
    pub fn run(env: &'e Env, spec: PodSpec) -> Result<Self> {
        let cri = &env.containerd.cri;
        env.k8s_image(TestImage::Pause)
            .context("importing the sandbox image")?;
        let client = env.cri_client()?;
        let uid = new_uid();
        let log_dir = cri
            .kubelet_dir
            .join("logs/pods")
            .join(format!("{POD_NAMESPACE}_{}_{uid}", spec.name));
        std::fs::create_dir_all(&log_dir)
            .with_context(|| format!("creating {}", log_dir.display()))?;
        let pod_dir = cri.kubelet_dir.join("pods").join(&uid);
        std::fs::create_dir_all(&pod_dir)
            .with_context(|| format!("creating {}", pod_dir.display()))?;
        let cgroup_parent = format!("{}/kubepods/{}/pod{uid}", cri.cgroup_root, spec.qos_class());
        let network = match spec.network {
            Network::Host => NamespaceMode::Node,
            Network::Pod => NamespaceMode::Pod,
        };
        let pod_labels = labels(&[
            ("app", &spec.name),
            ("io.kubernetes.pod.name", &spec.name),
            ("io.kubernetes.pod.namespace", POD_NAMESPACE),
            ("io.kubernetes.pod.uid", &uid),
        ]);
        let config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: spec.name.clone(),
                uid: uid.clone(),
                namespace: POD_NAMESPACE.to_string(),
                attempt: 0,
            }),
            // kubelet leaves the hostname empty for host-network pods.
            hostname: match spec.network {
                Network::Host => String::new(),
                Network::Pod => spec.name.clone(),
            },
            log_directory: log_dir.to_string_lossy().into_owned(),
            labels: pod_labels,
            annotations: with_annotations(
                labels(&[
                    ("kubernetes.io/config.source", "api"),
                    ("kubernetes.io/config.seen", "2026-01-01T00:00:00Z"),
                ]),
                &spec.annotations,
            ),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: cgroup_parent.clone(),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(namespace_options(network)),
                    seccomp: Some(unconfined_seccomp()),
                    ..Default::default()
                }),
                sysctls: HashMap::new(),
                overhead: None,
                resources: Some(LinuxContainerResources {
                    cpu_period: 100_000,
                    cpu_shares: 2,
                    memory_limit_in_bytes: spec.memory_limit.unwrap_or(0),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        };
        let id = client
            .run_pod_sandbox(&config, &spec.handler)
            .with_context(|| {
                format!(
                    "running pod {} with handler {}\n{}",
                    spec.name,
                    spec.handler,
                    env.containerd.log_tail()
                )
            })?;
        let mut pod = Self {
            env,
            client,
            spec,
            id,
            uid,
            config,
            log_dir,
            pod_dir,
            cgroup_parent,
            netns: None,
            containers: Vec::new(),
            removed: false,
        };
        let status = pod.sandbox_status(true)?;
        if pod.spec.network == Network::Pod {
            pod.netns = sandbox_netns_path(&status);
            cri.reach_pods_from_node()?;
        }
        pod.write_etc_hosts(&status)?;
        Ok(pod)
    }

    pub fn client(&self) -> &CriClient {
        &self.client
    }

    /// kubelet's `etc-hosts` file for the pod, bind-mounted on each container's `/etc/hosts`.
    fn write_etc_hosts(&self, status: &PodSandboxStatusResponse) -> Result<()> {
        let text = match self.spec.network {
            Network::Host => {
                let host = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
                format!("# Kubernetes-managed hosts file (host network).\n{host}")
            }
            Network::Pod => {
                let ip = status
                    .status
                    .as_ref()
                    .and_then(|s| s.network.as_ref())
                    .map(|n| n.ip.clone())
                    .unwrap_or_default();
                format!(
                    "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{ip}\t{}\n",
                    self.spec.name
                )
            }
        };
        let path = self.pod_dir.join("etc-hosts");
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    }

    pub fn sandbox_status(&self, verbose: bool) -> Result<PodSandboxStatusResponse> {
        self.client.pod_sandbox_status(&self.id, verbose)
    }

    /// The sandbox (pause) process's pid, from the verbose PodSandboxStatus.
    pub fn sandbox_pid(&self) -> Result<u32> {
        let status = self.sandbox_status(true)?;
        info_pid(&status.info).with_context(|| {
            format!(
                "no pid in the verbose PodSandboxStatus of {}: {:?}",
                self.id, status.info
            )
        })
    }

    /// ImageStatus until CRI knows the image (it learns of `ctr` imports from events); its id.
    fn image_id(&self, reference: &str) -> Result<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(image) = self.client.image_status(reference)?.image {
                return Ok(image.id);
            }
            if Instant::now() > deadline {
                bail!("CRI does not know image {reference} 10 s after its import");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The container config kubelet sends for `spec` (restart number `attempt`).
    fn container_config(
        &self,
        spec: &ContainerSpec,
        attempt: u32,
        image_id: &str,
        reference: &str,
    ) -> Result<ContainerConfig> {
        let termination_log = self
            .pod_dir
            .join("containers")
            .join(&spec.name)
            .join(format!("termination-{attempt}"));
        if let Some(dir) = termination_log.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(&termination_log, "")
            .with_context(|| format!("creating {}", termination_log.display()))?;
        let network = match self.spec.network {
            Network::Host => NamespaceMode::Node,
            Network::Pod => NamespaceMode::Pod,
        };
        // kubelet's oom_score_adj: 1000 for BestEffort, 1000 - 1000 * request / capacity
        // (clamped to 2..=999) for Burstable; requests default to limits.
        let oom_score_adj = match spec.memory_limit {
            None => 1000,
            Some(limit) => (1000 - 1000 * limit / memory_capacity()).clamp(2, 999),
        };
        let restart = attempt.to_string();
        Ok(ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: spec.name.clone(),
                attempt,
            }),
            image: Some(ImageSpec {
                image: image_id.to_string(),
                user_specified_image: reference.to_string(),
                ..Default::default()
            }),
            command: spec.command.clone(),
            args: spec.args.clone(),
            envs: std::iter::once(("POD_NAME".to_string(), self.spec.name.clone()))
                .chain(spec.envs.iter().cloned())
                .map(|(key, value)| KeyValue { key, value })
                .collect(),
            mounts: vec![
                Mount {
                    container_path: "/etc/hosts".into(),
                    host_path: self
                        .pod_dir
                        .join("etc-hosts")
                        .to_string_lossy()
                        .into_owned(),
                    ..Default::default()
                },
                Mount {
                    container_path: "/dev/termination-log".into(),
                    host_path: termination_log.to_string_lossy().into_owned(),
                    ..Default::default()
                },
            ],
            labels: labels(&[
                ("io.kubernetes.container.name", &spec.name),
                ("io.kubernetes.pod.name", &self.spec.name),
                ("io.kubernetes.pod.namespace", POD_NAMESPACE),
                ("io.kubernetes.pod.uid", &self.uid),
            ]),
            annotations: with_annotations(
                labels(&[
                    ("io.kubernetes.container.restartCount", &restart),
                    (
                        "io.kubernetes.container.terminationMessagePath",
                        "/dev/termination-log",
                    ),
                    ("io.kubernetes.container.terminationMessagePolicy", "File"),
                    ("io.kubernetes.pod.terminationGracePeriod", "30"),
                ]),
                &spec.annotations,
            ),
            // Relative to the sandbox's log directory, as kubelet names it.
            log_path: format!("{}/{attempt}.log", spec.name),
            linux: Some(LinuxContainerConfig {
                resources: Some(LinuxContainerResources {
                    cpu_period: 100_000,
                    cpu_shares: 2,
                    memory_limit_in_bytes: spec.memory_limit.unwrap_or(0),
                    oom_score_adj,
                    ..Default::default()
                }),
                security_context: Some(LinuxContainerSecurityContext {
                    namespace_options: Some(namespace_options(network)),
                    seccomp: Some(unconfined_seccomp()),
                    masked_paths: MASKED_PATHS.iter().map(|p| p.to_string()).collect(),
                    readonly_paths: READONLY_PATHS.iter().map(|p| p.to_string()).collect(),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        })
    }

    /// ImageStatus and CreateContainer for restart number `attempt` of `spec`.
    pub fn create_container(&mut self, spec: &ContainerSpec, attempt: u32) -> Result<String> {
        let reference = self.env.k8s_image(spec.image)?;
        self.create_container_of(spec, attempt, &reference)
    }

    /// CreateContainer and StartContainer of `spec` with an image CRI already has (pulled
    /// from a registry): `reference` instead of `spec.image`.
    pub fn run_pulled_container(
        &mut self,
        spec: &ContainerSpec,
        reference: &str,
    ) -> Result<String> {
        let id = self.create_container_of(spec, 0, reference)?;
        self.start_container(&id)?;
        Ok(id)
    }

    fn create_container_of(
        &mut self,
        spec: &ContainerSpec,
        attempt: u32,
        reference: &str,
    ) -> Result<String> {
        let image_id = self.image_id(reference)?;
        let config = self.container_config(spec, attempt, &image_id, reference)?;
        let id = self
            .client
            .create_container(&self.id, &config, &self.config)
            .with_context(|| {
                format!(
                    "creating container {} in pod {}\n{}",
                    spec.name,
                    self.spec.name,
                    self.env.containerd.log_tail()
                )
            })?;
        self.containers.push(id.clone());
        Ok(id)
    }

    pub fn start_container(&self, id: &str) -> Result<()> {
        self.client.start_container(id).with_context(|| {
            format!(
                "starting container {id} in pod {}\n{}",
                self.spec.name,
                self.env.containerd.log_tail()
            )
        })
    }

    /// CreateContainer and StartContainer: the container's first run (attempt 0).
    pub fn run_container(&mut self, spec: &ContainerSpec) -> Result<String> {
        let id = self.create_container(spec, 0)?;
        self.start_container(&id)?;
        Ok(id)
    }

    /// RemoveContainer of an exited container: the pod no longer tears it down.
    pub fn remove_container(&mut self, id: &str) -> Result<()> {
        self.client.remove_container(id)?;
        self.containers.retain(|c| c != id);
        Ok(())
    }

    pub fn status(&self, id: &str) -> Result<ContainerStatus> {
        self.client
            .container_status(id, false)?
            .status
            .with_context(|| format!("ContainerStatus of {id} returned no status"))
    }

    /// The container's init process's pid, from the verbose ContainerStatus.
    pub fn container_pid(&self, id: &str) -> Result<u32> {
        let response = self.client.container_status(id, true)?;
        info_pid(&response.info).with_context(|| {
            format!(
                "no pid in the verbose ContainerStatus of {id}: {:?}",
                response.info
            )
        })
    }

    /// Polls ContainerStatus until the container has exited.
    pub fn wait_exited(&self, id: &str, timeout: Duration) -> Result<ContainerStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.status(id)?;
            if status.state == ContainerState::ContainerExited as i32 {
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!(
                    "container {id} has not exited after {timeout:?}: {status:?}\n{}",
                    self.env.containerd.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Polls ContainerStatus until the container runs.
    pub fn wait_running(&self, id: &str, timeout: Duration) -> Result<ContainerStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.status(id)?;
            if status.state == ContainerState::ContainerRunning as i32 {
                return Ok(status);
            }
            if Instant::now() > deadline || status.state == ContainerState::ContainerExited as i32 {
                bail!(
                    "container {id} is not running after {timeout:?}: {status:?}\n{}",
                    self.env.containerd.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The CRI log file of restart `attempt` of container `name`.
    pub fn log_path(&self, name: &str, attempt: u32) -> PathBuf {
        self.log_dir.join(name).join(format!("{attempt}.log"))
    }

    /// The parsed CRI log of restart `attempt` of container `name` (empty if not written yet).
    pub fn log(&self, name: &str, attempt: u32) -> Result<Vec<LogLine>> {
        let path = self.log_path(name, attempt);
        match std::fs::read_to_string(&path) {
            Ok(text) => parse_log(&text).with_context(|| format!("reading {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Waits until the log of container `name` has a full stdout line `line`; returns
    /// the stdout lines.
    pub fn wait_for_stdout(
        &self,
        name: &str,
        attempt: u32,
        line: &str,
        timeout: Duration,
    ) -> Result<Vec<String>> {
        self.wait_for_line(name, attempt, "stdout", line, timeout)
    }

    /// Waits until the log of container `name` has a full line `line` from `stream`
    /// (`stdout` or `stderr`); returns that stream's lines.
    pub fn wait_for_line(
        &self,
        name: &str,
        attempt: u32,
        stream: &str,
        line: &str,
        timeout: Duration,
    ) -> Result<Vec<String>> {
        let deadline = Instant::now() + timeout;
        loop {
            let lines = stream_lines(&self.log(name, attempt)?, stream);
            if lines.iter().any(|l| l == line) {
                return Ok(lines);
            }
            if Instant::now() > deadline {
                bail!(
                    "container {name} (attempt {attempt}) did not log {line:?} within {timeout:?}; its CRI log {}: {:?}",
                    self.log_path(name, attempt).display(),
                    std::fs::read_to_string(self.log_path(name, attempt)).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// StopContainer with a grace period; how long it took and the status after.
    pub fn stop_container(
        &self,
        id: &str,
        grace_seconds: i64,
    ) -> Result<(Duration, ContainerStatus)> {
        let start = Instant::now();
        self.client.stop_container(id, grace_seconds)?;
        let took = start.elapsed();
        let status = self.status(id)?;
        ensure!(
            status.state == ContainerState::ContainerExited as i32,
            "container {id} is not exited after StopContainer: {status:?}"
        );
        Ok((took, status))
    }

    /// Tears the pod down in kubelet's order: StopContainer (grace 10 s) for what still runs,
    /// RemoveContainer, StopPodSandbox, RemovePodSandbox. Check what is left with
    /// [`RemovedPod::assert_clean`].
    pub fn remove(mut self) -> Result<RemovedPod<'e>> {
        for id in &self.containers {
            let status = self.status(id)?;
            if status.state != ContainerState::ContainerExited as i32 {
                self.client.stop_container(id, 10)?;
            }
            self.client.remove_container(id)?;
        }
        self.client.stop_pod_sandbox(&self.id).with_context(|| {
            format!(
                "stopping pod {}\n{}",
                self.spec.name,
                self.env.containerd.log_tail()
            )
        })?;
        self.client.remove_pod_sandbox(&self.id)?;
        self.removed = true;
        let mut ids = vec![self.id.clone()];
        ids.append(&mut self.containers);
        Ok(RemovedPod {
            env: self.env,
            name: self.spec.name.clone(),
            handler: self.spec.handler.clone(),
            ids,
            cgroup_parent: self.cgroup_parent.clone(),
            netns: self.netns.take(),
            log_dir: self.log_dir.clone(),
            pod_dir: self.pod_dir.clone(),
        })
    }
}

impl Drop for Pod<'_> {
    fn drop(&mut self) {
        if self.removed {
            return;
        }
        // A case failed half-way: RemovePodSandbox also removes the pod's containers.
        let _ = self.client.stop_pod_sandbox(&self.id);
        let _ = self.client.remove_pod_sandbox(&self.id);
        let _ = remove_cgroup(&self.cgroup_parent);
    }
}

/// A pod that CRI has removed; what is left of it on the host is checked by
/// [`RemovedPod::assert_clean`].
#[must_use = "check that the pod left nothing behind with assert_clean"]
pub struct RemovedPod<'e> {
    env: &'e Env,
    pub name: String,
    handler: String,
    /// The sandbox's id, then its containers'.
    pub ids: Vec<String>,
    cgroup_parent: String,
    netns: Option<PathBuf>,
    log_dir: PathBuf,
    pod_dir: PathBuf,
}

impl RemovedPod<'_> {
    /// Nothing of the sandbox or its containers is left (processes, mounts, cgroups,
    /// runtime and containerd state, the network namespace); then removes the pod's cgroup,
    /// log dir and files as kubelet would, which fails if a cgroup still has a process.
    pub fn assert_clean(self) -> Result<()> {
        for id in &self.ids {
            let mut trace = Trace::new(id, K8S_NAMESPACE);
            if self.handler == self.env.engine.handler() {
                trace.manager = self.env.engine.manager_binary();
            }
            trace.cgroup_parent = Some(&self.cgroup_parent);
            trace.containerd_dirs = self.env.containerd.dirs();
            trace.paths = self.netns.iter().cloned().collect();
            assert_clean(&trace).with_context(|| format!("after removing pod {}", self.name))?;
        }
        let failures = remove_cgroup(&self.cgroup_parent);
        ensure!(
            failures.is_empty(),
            "pod {}'s cgroup could not be removed: {}",
            self.name,
            failures.join("; ")
        );
        for dir in [&self.log_dir, &self.pod_dir] {
            remove_dir_if_present(dir)?;
        }
        Ok(())
    }
}

fn remove_dir_if_present(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", dir.display()))
        }
        _ => Ok(()),
    }
}

/// The JSON document of a verbose CRI status (`info["info"]`).
fn info_json(info: &HashMap<String, String>) -> Option<serde_json::Value> {
    serde_json::from_str(info.get("info")?).ok()
}

fn info_pid(info: &HashMap<String, String>) -> Option<u32> {
    let pid = info_json(info)?.get("pid")?.as_u64()?;
    u32::try_from(pid).ok().filter(|pid| *pid > 0)
}

/// The network namespace path in the sandbox's runtime spec.
fn sandbox_netns_path(status: &PodSandboxStatusResponse) -> Option<PathBuf> {
    let info = info_json(&status.info)?;
    let namespaces = info.pointer("/runtimeSpec/linux/namespaces")?.as_array()?;
    namespaces
        .iter()
        .find(|ns| ns.get("type").and_then(|t| t.as_str()) == Some("network"))?
        .get("path")?
        .as_str()
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
}

/// The network namespace of process `pid` (`net:[4026531840]`).
pub fn netns_of(pid: u32) -> Result<String> {
    let link = format!("/proc/{pid}/ns/net");
    let target = std::fs::read_link(&link).with_context(|| format!("reading {link}"))?;
    Ok(target.to_string_lossy().into_owned())
}

/// The namespaces kubelet asks for: the pod's network mode, a PID namespace per container,
/// the pod's IPC namespace.
fn namespace_options(network: NamespaceMode) -> NamespaceOption {
    NamespaceOption {
        network: network as i32,
        pid: NamespaceMode::Container as i32,
        ipc: NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

/// kubelet's default seccomp profile for pods that name none.
fn unconfined_seccomp() -> SecurityProfile {
    SecurityProfile {
        profile_type: ProfileType::Unconfined as i32,
        localhost_ref: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cri_log_lines_are_parsed_and_partials_joined() -> Result<()> {
        let text = "2026-01-02T03:04:05.123456789Z stdout F hello world\n\
                    2026-01-02T03:04:05.2Z stderr P par\n\
                    2026-01-02T03:04:05.3Z stderr F tial\n\
                    2026-01-02T03:04:05.4Z stdout F \n";
        let lines = parse_log(text)?;
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0].text, "hello world");
        assert_eq!(stream_lines(&lines, "stdout"), vec!["hello world", ""]);
        assert_eq!(stream_lines(&lines, "stderr"), vec!["partial"]);
        assert!(parse_log("hello\n").is_err());
        assert!(parse_log("2026-01-02T03:04:05Z stdin F x\n").is_err());
        Ok(())
    }

    #[test]
    fn pod_uids_look_like_uuids_and_differ() {
        let (a, b) = (new_uid(), new_uid());
        assert_ne!(a, b);
        let groups: Vec<usize> = a.split('-').map(str::len).collect();
        assert_eq!(groups, vec![8, 4, 4, 4, 12], "{a}");
    }

    #[test]
    fn the_netns_path_and_pid_come_from_the_verbose_info() {
        let info = HashMap::from([(
            "info".to_string(),
            r#"{"pid":42,"runtimeSpec":{"linux":{"namespaces":[{"type":"pid"},{"type":"network","path":"/run/netns/cni-1"}]}}}"#
                .to_string(),
        )]);
        assert_eq!(info_pid(&info), Some(42));
        let status = PodSandboxStatusResponse {
            info,
            ..Default::default()
        };
        assert_eq!(
            sandbox_netns_path(&status),
            Some(PathBuf::from("/run/netns/cni-1"))
        );
    }
}
