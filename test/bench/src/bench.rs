//! What every section shares: the private containerd, the images imported into it, container
//! ids, `ctr` helpers, and the cleanup that leaves nothing behind.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use wasmrunner_e2e::command::{Outcome, run_command};
use wasmrunner_e2e::containerd::DaemonEnv;
use wasmrunner_e2e::cri::config::LogLevel;
use wasmrunner_e2e::images::TestImage;
use wasmrunner_e2e::{Containerd, Env};
use wasmrunner_oci::ImageSpec;

use crate::Sizes;
use crate::procs;
use crate::runtime::Runtime;

pub struct Bench {
    env: Env,
    containerd: Arc<Containerd>,
    /// containerd's (and so the shims') log level.
    level: LogLevel,
    pub sizes: Sizes,
    next_id: AtomicUsize,
}

impl Bench {
    /// Starts the private containerd of `containerd_dir`, logging at debug level when `debug`.
    pub fn start(containerd_dir: &Path, sizes: Sizes, debug: bool) -> Result<Self> {
        let level = if debug {
            LogLevel::Debug
        } else {
            LogLevel::Info
        };
        Self::start_with_env(containerd_dir, sizes, level, DaemonEnv::new())
    }

    /// A second private containerd of the same build and sizes, with `extra` applied to its
    /// environment (which its shims inherit): tracing on, say.
    pub fn with_env(&self, extra: DaemonEnv) -> Result<Self> {
        Self::start_with_env(
            self.containerd.bin_dir(),
            self.sizes.clone(),
            self.level,
            extra,
        )
    }

    fn start_with_env(
        containerd_dir: &Path,
        sizes: Sizes,
        level: LogLevel,
        extra: DaemonEnv,
    ) -> Result<Self> {
        // The CRI handlers containerd's config gets; the bench itself drives containerd with
        // runtime names and does not use CRI.
        let engines = crate::runtime::engines();
        let engine = engines
            .first()
            .cloned()
            .context("WASMRUNNER_ENGINES names no engine")?;
        for engine in &engines {
            engine.binary()?;
        }
        let containerd = Arc::new(
            // Info, not the suites' debug, unless asked: logging is not what is measured.
            Containerd::start_logging_with_env(containerd_dir, &engines, level, extra)
                .with_context(|| {
                    format!("starting containerd from {}", containerd_dir.display())
                })?,
        );
        Ok(Self {
            env: Env::new(Arc::clone(&containerd), engine),
            containerd,
            level,
            sizes,
            next_id: AtomicUsize::new(0),
        })
    }

    pub fn containerd(&self) -> &Containerd {
        &self.containerd
    }

    pub fn namespace(&self) -> &str {
        &self.containerd.namespace
    }

    pub fn socket(&self) -> String {
        self.containerd.socket().to_string_lossy().into_owned()
    }

    /// A fresh container id (ids are unique within the run's containerd namespace).
    pub fn id(&self, label: &str) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        format!("{label}-{n}")
    }

    /// Builds and imports a test image (once); returns its reference.
    pub fn image(&self, image: TestImage) -> Result<String> {
        self.env.image(image)
    }

    /// A scratch file path inside containerd's scratch dir (removed with it).
    pub fn scratch(&self, name: &str) -> PathBuf {
        self.containerd.root().join(name)
    }

    /// Builds `spec` into an archive and imports it; returns its reference.
    pub fn import_spec(&self, spec: &ImageSpec, wasm_layers: bool) -> Result<String> {
        let name = spec.name.clone();
        let archive = self.scratch(&format!("{}.tar", name.replace(['/', ':'], "_")));
        wasmrunner_oci::write_archive(spec, &archive)
            .with_context(|| format!("building the archive of {name}"))?;
        let path = archive.to_string_lossy().into_owned();
        let mut args = vec!["image", "import"];
        if wasm_layers {
            args.push("--all-platforms");
        }
        args.push(&path);
        self.containerd.ctr(&args)?.ok()?;
        // The archive is in the content store now.
        std::fs::remove_file(&archive)
            .with_context(|| format!("removing {}", archive.display()))?;
        Ok(name)
    }

    /// `ctr run --rm --runtime R [FLAGS] IMAGE ID [ARGS]`, timed; fails unless it exits 0.
    pub fn run_rm(
        &self,
        runtime: &Runtime,
        flags: &[&str],
        image: &str,
        id: &str,
        args: &[&str],
    ) -> Result<(Duration, Outcome)> {
        let mut command = self.containerd.ctr_command();
        command
            .args(["run", "--rm", "--runtime"])
            .arg(runtime.runtime_name())
            .args(flags)
            .arg(image)
            .arg(id)
            .args(args);
        let started = Instant::now();
        let outcome = run_command(&mut command)?;
        let elapsed = started.elapsed();
        let outcome = outcome
            .ok()
            .with_context(|| format!("{} container {id}", runtime.label()))?;
        Ok((elapsed, outcome))
    }

    /// A `ctr` command bound to the run's containerd and namespace.
    pub fn ctr_command(&self) -> Command {
        self.containerd.ctr_command()
    }

    pub fn ctr(&self, args: &[&str]) -> Result<Outcome> {
        self.containerd.ctr(args)
    }

    /// The ids of the containers in the namespace.
    pub fn container_ids(&self) -> Result<Vec<String>> {
        let listed = self.ctr(&["containers", "ls", "-q"])?.ok()?;
        Ok(listed.stdout.lines().map(str::to_string).collect())
    }

    /// Kills and deletes containers `ids` (tasks, records and snapshots), a few at a time.
    pub fn remove_containers(&self, ids: &[String]) -> Result<()> {
        let failures: Vec<String> = std::thread::scope(|scope| {
            let chunks: Vec<&[String]> = ids.chunks(ids.len().div_ceil(4).max(1)).collect();
            let handles: Vec<_> = chunks
                .into_iter()
                .map(|chunk| {
                    scope.spawn(move || {
                        chunk
                            .iter()
                            .filter_map(|id| self.remove_container(id).err())
                            .map(|e| format!("{e:#}"))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| {
                    h.join()
                        .unwrap_or_else(|_| vec!["a thread panicked".into()])
                })
                .collect()
        });
        if !failures.is_empty() {
            bail!("removing containers: {}", failures.join("; "));
        }
        Ok(())
    }

    fn remove_container(&self, id: &str) -> Result<()> {
        // `task delete --force` kills a running task first; it fails when there is no task.
        let _ = self.ctr(&["task", "delete", "--force", id])?;
        self.ctr(&["containers", "delete", id])?
            .ok()
            .with_context(|| format!("deleting container {id}"))?;
        Ok(())
    }

    /// Keeps every shared manager up for as long as the returned guard lives: one sleeping
    /// container (`probe sleep`) per shared-mode engine, so that each manager always has a
    /// task and never reaches its idle exit. That is the state the mode is designed around (a
    /// node with pods on it); measuring without it would time manager restarts instead, since
    /// the harness's containerd gives managers a short idle time.
    pub fn keep_managers_alive(&self) -> Result<Keeper<'_>> {
        let mut keeper = Keeper {
            bench: self,
            ids: Vec::new(),
        };
        for runtime in Runtime::wasm().iter().filter(|r| r.is_shared()) {
            let (image, probe) = runtime.probe_image();
            let image = self.image(image)?;
            let id = self.id(&format!("keeper-{}", runtime.tag()));
            let mut command = self.ctr_command();
            command
                .args(["run", "-d", "--null-io", "--runtime"])
                .arg(runtime.runtime_name())
                .arg(&image)
                .arg(&id)
                .args([probe, "sleep"]);
            // Recorded first: a container whose start failed half-way is still removed.
            keeper.ids.push(id);
            run_command(&mut command)?.ok().with_context(|| {
                format!(
                    "starting the container that keeps the {} manager up",
                    runtime.label()
                )
            })?;
        }
        Ok(keeper)
    }

    /// Waits until no shim process of `runtime` serves this containerd (a shared manager
    /// exits once it has been idle for its idle time); returns the pids still there.
    pub fn wait_for_shims_to_exit(&self, binary: Option<&str>, timeout: Duration) -> Vec<u32> {
        let socket = self.socket();
        let deadline = Instant::now() + timeout;
        loop {
            let left: Vec<u32> = procs::all()
                .into_iter()
                .filter(|p| p.serves(&socket) && p.program().starts_with("containerd-shim-"))
                .filter(|p| binary.is_none_or(|b| p.program() == b))
                .map(|p| p.pid)
                .collect();
            if left.is_empty() || Instant::now() > deadline {
                return left;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Removes every container, waits for the shims and managers to go (killing those that
    /// do not), stops containerd, removes the namespace's cgroups and containerd's scratch
    /// dir. When `save_log` is given (something failed), containerd's log (which holds the
    /// shims' logs too) is copied there first.
    pub fn finish(self, save_log: Option<&Path>) -> Result<()> {
        let mut problems = Vec::new();
        match self.container_ids() {
            Ok(ids) if !ids.is_empty() => {
                eprintln!("removing {} leftover containers", ids.len());
                if let Err(e) = self.remove_containers(&ids) {
                    problems.push(format!("{e:#}"));
                }
            }
            Ok(_) => {}
            Err(e) => problems.push(format!("listing containers: {e:#}")),
        }
        let idle = std::env::var(crate::runtime::MANAGER_IDLE_ENV)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(10)
            .min(30);
        let left = self.wait_for_shims_to_exit(None, Duration::from_secs(idle + 5));
        if !left.is_empty() {
            problems.push(format!("shims still running, killed: {left:?}"));
            procs::signal(&left, libc::SIGKILL);
        }
        // Anything still in one of the namespace's cgroups was started by this run.
        let namespace = self.namespace().to_string();
        let stragglers: Vec<u32> = procs::all()
            .into_iter()
            .filter(|p| p.container(&namespace).is_some())
            .map(|p| p.pid)
            .collect();
        if !stragglers.is_empty() {
            problems.push(format!("container processes left, killed: {stragglers:?}"));
            procs::signal(&stragglers, libc::SIGKILL);
            std::thread::sleep(Duration::from_millis(500));
        }
        let save_log = save_log.map(|path| {
            let log = self.containerd.root().join("containerd.log");
            std::fs::copy(&log, path)
                .map(|_| path.to_path_buf())
                .with_context(|| format!("copying {} to {}", log.display(), path.display()))
        });
        let Bench {
            env, containerd, ..
        } = self;
        drop(env);
        let containerd = Arc::try_unwrap(containerd)
            .map_err(|_| anyhow!("containerd is still shared at the end of the run"))?;
        if let Err(e) = containerd.stop(false) {
            problems.push(format!("stopping containerd: {e:#}"));
        }
        match save_log {
            Some(Ok(path)) => eprintln!("containerd's log: {}", path.display()),
            Some(Err(e)) => problems.push(format!("{e:#}")),
            None => {}
        }
        for failure in wasmrunner_e2e::leaks::remove_cgroup(&format!("/{namespace}")) {
            problems.push(format!("cannot remove the run's cgroup: {failure}"));
        }
        // runc keeps its state under /run/containerd/runc/<namespace>, and runwasi's shim
        // (the cold-start baseline) under /run/containerd/wasmtime/<namespace>: empty once
        // every container is gone.
        for runtime_state in ["runc", "wasmtime"] {
            let state = Path::new("/run/containerd")
                .join(runtime_state)
                .join(&namespace);
            if state.is_dir() {
                let _ = std::fs::remove_dir(&state);
            }
        }
        if !problems.is_empty() {
            bail!("{}", problems.join("\n"));
        }
        Ok(())
    }
}

/// One sleeping container per shared-mode engine; removed when dropped.
pub struct Keeper<'a> {
    bench: &'a Bench,
    ids: Vec<String>,
}

impl Drop for Keeper<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.bench.remove_containers(&self.ids) {
            eprintln!("removing {:?}: {e:#}", self.ids);
        }
    }
}
