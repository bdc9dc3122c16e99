//! What a test case sees: one engine's shim behind one private containerd, images imported
//! on first use, unique container ids, and helpers that run containers the way users do.

use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use wasmrunner_oci::Flavour;

use crate::command::{Capture, Outcome, run_command_read_slowly, wait_within};

/// How long a `ctr run --rm` of a case may take before the case fails (the slowest, a big
/// module's first compile, takes seconds).
const RUN_RM_LIMIT: Duration = Duration::from_secs(120);
use crate::containerd::{Containerd, DaemonEnv};
use crate::cri::{CriClient, K8S_NAMESPACE};
use crate::engine::{Engine, Mode};
use crate::images::TestImage;
use crate::leaks::{Trace, assert_clean};

/// What a case needs from the containerd and engine under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// The shared-manager mode (there is a manager to count, kill, or keep).
    SharedMode,
    /// The per-pod mode (each `shim start` starts a serving process of its own).
    PerPodMode,
    /// containerd that unpacks images with wasm-typed layers.
    WasmLayers,
    /// A Create that compiles on the host (see [`Env::host_compiled`]): a rootfs module into
    /// the node module cache, or else a wasm-layer artifact's module.
    HostCompile,
    /// An engine that runs WASI preview 2 components (see [`Engine::runs_components`]).
    Components,
    /// An engine that refuses components (the case checks how).
    NoComponents,
}

/// One end-to-end case: a name, what it needs, and the function that runs it.
#[derive(Clone, Copy)]
pub struct Case {
    pub name: &'static str,
    pub needs: &'static [Needs],
    pub run: fn(&Env) -> Result<()>,
}

impl Case {
    pub const fn new(name: &'static str, run: fn(&Env) -> Result<()>) -> Self {
        Self {
            name,
            needs: &[],
            run,
        }
    }

    pub const fn needs(mut self, needs: &'static [Needs]) -> Self {
        self.needs = needs;
        self
    }

    /// Why the case cannot run here, if it cannot.
    pub fn skip_reason(&self, env: &Env) -> Option<String> {
        self.needs.iter().find_map(|need| match need {
            Needs::WasmLayers if !env.containerd.version.unpacks_wasm_layers() => Some(format!(
                "containerd {} cannot unpack images with wasm-typed layers, imported or pulled (\"mismatched image rootfs and manifest layers\"; needs 1.6.25, 1.7.7 or 2.0)",
                env.containerd.version
            )),
            Needs::SharedMode if env.engine.mode != Mode::Shared => {
                Some("only the shared-manager mode has a manager".to_string())
            }
            Needs::PerPodMode if env.engine.mode != Mode::PerPod => {
                Some("a shared-mode start starts no serving process of its own".to_string())
            }
            Needs::Components if !env.engine.runs_components() => {
                Some(format!("{} runs no components", env.engine.name))
            }
            Needs::NoComponents if env.engine.runs_components() => {
                Some(format!("{} runs components", env.engine.name))
            }
            Needs::HostCompile if env.host_compiled(0).is_none() => Some(format!(
                "{} compiles on the host only wasm-layer images, which containerd {} cannot import",
                env.engine.name, env.containerd.version
            )),
            _ => None,
        })
    }
}

/// The environment every case of one run shares.
pub struct Env {
    pub containerd: Arc<Containerd>,
    pub engine: Engine,
    /// Shared with the envs of the containerds of the cases' own ([`Env::with_own_env`]), so
    /// that no two containers of one run get the same id.
    next_id: Arc<AtomicUsize>,
}

impl Env {
    pub fn new(containerd: Arc<Containerd>, engine: Engine) -> Self {
        Self {
            containerd,
            engine,
            next_id: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// A container id no other case uses, nor another run of the suite on the same host
    /// (the leak checks look for it host-wide).
    pub fn container_id(&self, label: &str) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        format!("{}-{label}-{}-{n}", self.engine.label(), std::process::id())
    }

    /// Builds and imports `image` into containerd (once), and returns its reference.
    pub fn image(&self, image: TestImage) -> Result<String> {
        self.import_outcome(image)?.ok()?;
        Ok(image.name())
    }

    /// Builds `image` into an archive and runs `ctr image import` on it (once per
    /// containerd: later calls return the first import's outcome).
    pub fn import_outcome(&self, image: TestImage) -> Result<Outcome> {
        let namespace = &self.containerd.namespace;
        self.containerd.import_once(namespace, &image.name(), || {
            self.import_into(namespace, image)
        })
    }

    /// Builds `image` into an archive and imports it into containerd namespace `namespace`,
    /// every time: [`Env::image`] and [`Env::k8s_image`] import once.
    pub fn import_into(&self, namespace: &str, image: TestImage) -> Result<Outcome> {
        let archive = self.containerd.root().join(format!(
            "{namespace}-{}.tar",
            image.name().replace(['/', ':'], "_")
        ));
        wasmrunner_oci::write_archive(&image.spec()?, &archive)
            .with_context(|| format!("building {}", image.name()))?;
        let mut args = vec!["image", "import"];
        if image.has_wasm_layers() {
            // containerd 1.6 filters out images whose platform (wasi/wasm) is not the host's.
            args.push("--all-platforms");
        }
        let path = archive.to_string_lossy().into_owned();
        args.push(&path);
        self.containerd.ctr_in(namespace, &args)
    }

    /// Builds and imports `image` into CRI's namespace, `k8s.io` (once), where pods find
    /// it without a pull; returns its reference.
    pub fn k8s_image(&self, image: TestImage) -> Result<String> {
        self.containerd
            .import_once(K8S_NAMESPACE, &image.name(), || {
                let imported = self.import_into(K8S_NAMESPACE, image)?;
                if imported.success() {
                    self.wait_until_cri_sees(&image.name())?;
                }
                Ok(imported)
            })?
            .ok()
            .with_context(|| format!("importing into {K8S_NAMESPACE}"))?;
        Ok(image.name())
    }

    /// Waits until CRI's image service lists `reference`: containerd 2.x updates it from the
    /// import's event, after `ctr image import` returns, and a pod started before then has
    /// CRI try to pull the image from its registry (which no test can reach).
    fn wait_until_cri_sees(&self, reference: &str) -> Result<()> {
        let client = self.cri_client()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if client.image_status(reference)?.image.is_some() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("CRI does not list {reference} 10 s after its import");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// An image whose Create makes the shim compile on the host for some seconds, one per
    /// `seed`: a big rootfs module for engines with the node module cache, else (containerd
    /// permitting) a module in a wasm layer, which the shim precompiles into containerd's
    /// content store (WasmEdge's LLVM takes about a minute per MiB: a small one).
    pub fn host_compiled(&self, seed: u32) -> Option<TestImage> {
        if self.engine.has_node_module_cache() {
            Some(TestImage::SlowCompile {
                flavour: Flavour::Image,
                kib: 3 << 10,
                seed,
            })
        } else if self.containerd.version.unpacks_wasm_layers() {
            Some(TestImage::SlowCompile {
                flavour: Flavour::RunwasiArtifact,
                kib: 192,
                seed,
            })
        } else {
            None
        }
    }

    /// A new connection to containerd's CRI services.
    pub fn cri_client(&self) -> Result<CriClient> {
        CriClient::connect(&self.containerd.socket())
    }

    /// `ctr run` arguments shared by every run: the runtime under test, and the platform of
    /// artifacts whose platform is not the host's.
    fn run_args(&self, image: TestImage) -> Vec<String> {
        let mut args = vec![
            "run".to_string(),
            "--runtime".to_string(),
            self.engine.runtime(),
        ];
        if let TestImage::Hello(_, Flavour::RunwasiArtifact)
        | TestImage::Recursion(Flavour::RunwasiArtifact)
        | TestImage::GarbageLayer
        | TestImage::SlowCompile {
            flavour: Flavour::RunwasiArtifact,
            ..
        } = image
        {
            args.extend(["--platform".to_string(), "wasi/wasm".to_string()]);
        }
        args
    }

    /// `ctr run --rm IMAGE ID ARGS...` in the foreground, as a user types it; then checks
    /// that the container left nothing behind.
    pub fn run_rm(&self, image: TestImage, args: &[&str]) -> Result<Outcome> {
        self.run_rm_with(image, &[], args)
    }

    /// [`Env::run_rm`] with extra `ctr run` flags (`--env K=V`, ...) before the image.
    pub fn run_rm_with(&self, image: TestImage, flags: &[&str], args: &[&str]) -> Result<Outcome> {
        self.run_rm_as(&self.container_id("run"), image, flags, args)
    }

    /// [`Env::run_rm_with`] for a container id the test chose (see [`Env::container_id`]).
    pub fn run_rm_as(
        &self,
        id: &str,
        image: TestImage,
        flags: &[&str],
        args: &[&str],
    ) -> Result<Outcome> {
        self.run_rm_read_slowly(id, image, flags, args, Duration::ZERO)
    }

    /// [`Env::run_rm_as`], with `ctr`'s stdout read by a consumer that pauses for `pause`
    /// after every 4 KiB (see [`run_command_read_slowly`]).
    pub fn run_rm_read_slowly(
        &self,
        id: &str,
        image: TestImage,
        flags: &[&str],
        args: &[&str],
        pause: Duration,
    ) -> Result<Outcome> {
        let reference = self.image(image)?;
        let mut command = self.containerd.ctr_command();
        command
            .args(self.run_args(image))
            .arg("--rm")
            .args(flags)
            .arg(&reference)
            .arg(id)
            .args(args);
        let outcome = run_command_read_slowly(&mut command, pause, RUN_RM_LIMIT)?;
        self.assert_clean(id)?;
        Ok(outcome)
    }

    /// Starts `ctr run IMAGE ID ARGS...` in the foreground, in the background of the test,
    /// and waits until the task is running and has printed `ready` on stdout.
    pub fn start_attached(&self, image: TestImage, args: &[&str]) -> Result<Attached> {
        self.start_attached_with(image, &[], args)
    }

    /// [`Env::start_attached`] with more `ctr run` flags (`--env`, say).
    pub fn start_attached_with(
        &self,
        image: TestImage,
        flags: &[&str],
        args: &[&str],
    ) -> Result<Attached> {
        let attached = self.spawn_attached(image, flags, args)?;
        attached.wait_for_stdout("ready", Duration::from_secs(20))?;
        Ok(attached)
    }

    /// Starts `ctr run FLAGS IMAGE ID ARGS...` in the foreground, in the background of the
    /// test, and waits until the task is running (a server's readiness is for its test to
    /// probe).
    pub fn spawn_attached(
        &self,
        image: TestImage,
        flags: &[&str],
        args: &[&str],
    ) -> Result<Attached> {
        let reference = self.image(image)?;
        let id = self.container_id("task");
        let mut command = self.containerd.ctr_command();
        command
            .args(self.run_args(image))
            .args(flags)
            .arg(&reference)
            .arg(&id)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().context("starting ctr run")?;
        let stdout = Capture::start(child.stdout.take());
        let stderr = Capture::start(child.stderr.take());
        let attached = Attached {
            id,
            child,
            stdout,
            stderr,
        };
        self.wait_for_status(&attached.id, "RUNNING", Duration::from_secs(20))?;
        Ok(attached)
    }

    /// Waits until `ctr task ls` shows the task in `status`.
    pub fn wait_for_status(&self, id: &str, status: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.task_status(id)?.as_deref() == Some(status) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "task {id} is not {status} after {timeout:?}: {:?}\n{}",
                    self.task_status(id)?,
                    self.containerd.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The STATUS column of `ctr task ls` for `id`, if the task is listed.
    pub fn task_status(&self, id: &str) -> Result<Option<String>> {
        let listing = self.containerd.ctr(&["task", "ls"])?.ok()?;
        Ok(listing.stdout.lines().find_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            (words.first() == Some(&id)).then(|| words.last().map(|s| s.to_string()))?
        }))
    }

    /// containerd's bundle of task `id`: `<state>/io.containerd.runtime.v2.task/<ns>/<id>`.
    pub fn bundle_of(&self, id: &str) -> PathBuf {
        self.containerd
            .state_dir()
            .join("io.containerd.runtime.v2.task")
            .join(&self.containerd.namespace)
            .join(id)
    }

    /// The host pid of task `id`'s init process, from `ctr task ls`.
    pub fn task_pid(&self, id: &str) -> Result<u32> {
        let listing = self.containerd.ctr(&["task", "ls"])?.ok()?;
        listing
            .stdout
            .lines()
            .find_map(|line| {
                let words: Vec<&str> = line.split_whitespace().collect();
                (words.first() == Some(&id)).then(|| words.get(1)?.parse().ok())?
            })
            .with_context(|| format!("task {id} is not in `ctr task ls`: {listing}"))
    }

    /// Runs `case` against a containerd of its own, for a case that breaks or restarts its
    /// containerd (or its node cache), in namespace `<suite's>-<label>-<engine>` (cgroups are
    /// host-wide); then removes what is left, stops it, and fails if containers or shims were
    /// left.
    pub fn with_own_containerd(
        &self,
        label: &str,
        case: impl FnOnce(&mut Containerd) -> Result<()>,
    ) -> Result<()> {
        self.with_own_containerd_env(label, DaemonEnv::new(), case)
    }

    /// [`Env::with_own_containerd`], with `daemon_env` applied to that containerd's
    /// environment (which its shims inherit).
    pub fn with_own_containerd_env(
        &self,
        label: &str,
        daemon_env: DaemonEnv,
        case: impl FnOnce(&mut Containerd) -> Result<()>,
    ) -> Result<()> {
        let mut containerd = self.start_own_containerd(label, daemon_env)?;
        let result = case(&mut containerd);
        finish_own_containerd(containerd, result, Vec::new())
    }

    /// Runs `case` with an [`Env`] of its own: this engine behind a containerd of its own,
    /// started with `daemon_env` applied to its environment (which its shims inherit), in
    /// namespace `<suite's>-<label>-<engine>`, so that the case uses every helper
    /// ([`Env::run_rm`], CRI pods, leak checks, ...) against it. Then removes the containers
    /// and pods left, stops it, and fails if containers, pods or shims were left.
    pub fn with_own_env(
        &self,
        label: &str,
        daemon_env: DaemonEnv,
        case: impl FnOnce(&Env) -> Result<()>,
    ) -> Result<()> {
        let containerd = Arc::new(self.start_own_containerd(label, daemon_env)?);
        let own = Env {
            containerd: Arc::clone(&containerd),
            engine: self.engine.clone(),
            next_id: Arc::clone(&self.next_id),
        };
        let result = case(&own);
        drop(own);
        let pods = remove_leftover_pods(&containerd);
        let containerd = Arc::try_unwrap(containerd)
            .map_err(|_| anyhow::anyhow!("the case still holds its containerd"))?;
        finish_own_containerd(containerd, result, pods)
    }

    fn start_own_containerd(&self, label: &str, daemon_env: DaemonEnv) -> Result<Containerd> {
        let mut containerd = Containerd::start_with_env(
            self.containerd.bin_dir(),
            std::slice::from_ref(&self.engine),
            daemon_env,
        )?;
        containerd.namespace = format!("{}-{label}-{}", containerd.namespace, self.engine.label());
        Ok(containerd)
    }

    /// Checks that nothing of container `id` is left on the host.
    pub fn assert_clean(&self, id: &str) -> Result<()> {
        let mut trace = Trace::new(id, &self.containerd.namespace);
        trace.manager = self.engine.manager_binary();
        trace.containerd_dirs = self.containerd.dirs();
        assert_clean(&trace)
    }
}

/// After a case on a containerd of its own that ended with `result`: removes the containers
/// left, waits for its shims to exit, removes its namespace's cgroup and stops it (keeping its
/// scratch dir if the case failed); fails if the case did, or if containers, `pods` (left
/// and removed before) or shims were left.
fn finish_own_containerd(
    containerd: Containerd,
    result: Result<()>,
    pods: Vec<String>,
) -> Result<()> {
    let leftovers = containerd.remove_leftover_containers().unwrap_or_default();
    let shims = containerd.wait_for_no_shims(Duration::from_secs(15));
    for failure in crate::leaks::remove_cgroup(&format!("/{}", containerd.namespace)) {
        eprintln!("{failure}");
    }
    containerd.stop(result.is_err())?;
    result?;
    anyhow::ensure!(leftovers.is_empty(), "containers left: {leftovers:?}");
    anyhow::ensure!(pods.is_empty(), "pods left: {pods:?}");
    anyhow::ensure!(shims.is_empty(), "shims still running: {shims:?}");
    Ok(())
}

/// Stops and removes the pods left in `containerd`'s CRI; returns them (name and id).
fn remove_leftover_pods(containerd: &Containerd) -> Vec<String> {
    let Ok(client) = CriClient::connect(&containerd.socket()) else {
        return Vec::new();
    };
    let pods = client.list_pod_sandboxes().unwrap_or_default();
    pods.into_iter()
        .map(|pod| {
            let _ = client.stop_pod_sandbox(&pod.id);
            let _ = client.remove_pod_sandbox(&pod.id);
            let name = pod.metadata.map(|m| m.name).unwrap_or_default();
            format!("pod {name} ({})", pod.id)
        })
        .collect()
}

/// A `ctr run` in the foreground, started by a test that will stop it.
pub struct Attached {
    pub id: String,
    child: Child,
    stdout: Capture,
    stderr: Capture,
}

impl Attached {
    /// What the task printed on stdout so far.
    pub fn stdout(&self) -> String {
        self.stdout.snapshot()
    }

    /// What the task printed on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.snapshot()
    }

    /// Waits until the task has printed a line on stderr for which `wanted` holds.
    pub fn wait_for_stderr(&self, wanted: impl Fn(&str) -> bool, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while !self.stderr.snapshot().lines().any(&wanted) {
            if Instant::now() > deadline {
                bail!(
                    "task {} did not print the expected line on stderr within {timeout:?}; stderr: {:?}",
                    self.id,
                    self.stderr.snapshot()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Waits until the task has printed `needle` on stdout.
    pub fn wait_for_stdout(&self, needle: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while !self.stdout.snapshot().contains(needle) {
            if Instant::now() > deadline {
                bail!(
                    "task {} did not print {needle:?} within {timeout:?}; stdout: {:?}, stderr: {:?}",
                    self.id,
                    self.stdout.snapshot(),
                    self.stderr.snapshot()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Ends the task with SIGKILL, checks that `ctr run` returns 137 within `timeout`, then
    /// removes the container and checks that nothing of it is left on the host.
    pub fn kill_and_remove(self, env: &Env, timeout: Duration) -> Result<()> {
        let id = self.id.clone();
        env.containerd
            .ctr(&["task", "kill", "--signal", "SIGKILL", &id])?
            .ok()?;
        self.wait(timeout)?.expect_status(137)?;
        delete_container(env, &id)?;
        env.assert_clean(&id)
    }

    /// Waits for `ctr run` to return (the task exited) and captures what it printed.
    pub fn wait(self, timeout: Duration) -> Result<Outcome> {
        let Attached {
            id,
            mut child,
            stdout,
            stderr,
        } = self;
        let Some(status) = wait_within(&mut child, timeout)? else {
            bail!("`ctr run` of {id} did not return within {timeout:?}");
        };
        Ok(Outcome {
            command: format!("ctr run ... {id}"),
            status: status.code(),
            stdout: stdout.finish(),
            stderr: stderr.finish(),
        })
    }
}

/// Removes the container record `ctr run` (without `--rm`) leaves once its task has exited
/// (ctr deletes the task itself), then checks that the task is really gone.
pub fn delete_container(env: &Env, id: &str) -> Result<()> {
    if env.task_status(id)?.is_some() {
        bail!("task {id} is still listed after `ctr run` returned");
    }
    env.containerd.ctr(&["containers", "delete", id])?.ok()?;
    Ok(())
}
