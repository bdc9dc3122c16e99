//! A private containerd: its own root, state, sockets and namespace under a scratch dir, the
//! shims under test first on its `PATH`. Many can run on one host without seeing each other.
//! Its CRI plugin is on (see [`crate::cri::config`]): the `ctr` suite uses its own namespace,
//! the CRI suite CRI's `k8s.io`.

use std::collections::HashMap;
use std::fmt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::command::{Outcome, run_command};
use crate::cri::config::{CriSettings, LogLevel, containerd_config, install_runtime_handlers};
use crate::engine::Engine;
use crate::paths::{bin_dir, scratch_dir};

/// A containerd release, as `containerd --version` tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ContainerdVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl ContainerdVersion {
    /// Parses the third word of `containerd --version` (`1.6.20~ds1`, `2.1.9+unknown`, `v1.7.24`).
    pub fn parse(version_output: &str) -> Result<Self> {
        let word = version_output
            .split_whitespace()
            .nth(2)
            .with_context(|| format!("unexpected `containerd --version`: {version_output:?}"))?;
        let mut numbers = word
            .trim_start_matches('v')
            .split(|c: char| !c.is_ascii_digit())
            .map(str::parse::<u32>);
        let mut next = || -> Result<u32> {
            numbers
                .next()
                .context("missing version number")?
                .with_context(|| format!("bad version {word:?}"))
        };
        Ok(Self {
            major: next()?,
            minor: next()?,
            patch: next()?,
        })
    }

    /// Whether containerd unpacks images whose layers have wasm media types, whether `ctr`
    /// imports them or CRI pulls them: 1.6.25, 1.7.7 and 2.0 stopped rejecting them
    /// ("mismatched image rootfs and manifest layers").
    pub fn unpacks_wasm_layers(&self) -> bool {
        match (self.major, self.minor) {
            (1, 6) => self.patch >= 25,
            (1, 7) => self.patch >= 7,
            (1, minor) => minor > 7,
            (major, _) => major >= 2,
        }
    }

    /// The config file format this release reads natively.
    pub fn config_version(&self) -> u32 {
        if self.major >= 2 { 3 } else { 2 }
    }
}

impl fmt::Display for ContainerdVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// A running private containerd.
pub struct Containerd {
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    bin_dir: PathBuf,
    pub version: ContainerdVersion,
    pub namespace: String,
    /// How its CRI plugin is set up.
    pub cri: CriSettings,
    /// What the node installer did to its config (one line per action).
    pub installer_actions: Vec<String>,
    /// Images imported so far, by (namespace, reference), with how the import went: every
    /// engine's cases share this containerd and its namespaces, so each image is built and
    /// imported once (two imports of one reference at once race: the second replaces the
    /// image under the first one's containers).
    imports: Mutex<HashMap<(String, String), std::result::Result<Outcome, String>>>,
    /// What its environment (and so its shims') has besides the harness's own (kept for
    /// restarts).
    daemon_env: DaemonEnv,
    child: Child,
}

impl Containerd {
    /// The folder holding `containerd`, `ctr` and `containerd-shim-runc-v2`:
    /// `WASMRUNNER_CONTAINERD_BIN`, or wherever `containerd` is on `PATH`.
    pub fn bin_dir_from_env() -> Result<PathBuf> {
        if let Some(dir) = std::env::var_os("WASMRUNNER_CONTAINERD_BIN") {
            return Ok(PathBuf::from(dir));
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .find(|dir| dir.join("containerd").is_file())
            .context("containerd is not on PATH: install it (`apt-get install containerd runc`) or set WASMRUNNER_CONTAINERD_BIN")
    }

    /// Starts containerd from `bin_dir`, with a CRI runtime handler for each of `engines`,
    /// and waits until it answers. It and the shims log at debug level, as when a user
    /// troubleshoots: the suites then also check that the shims' logging never gets in the way.
    pub fn start(bin_dir_containerd: &Path, engines: &[Engine]) -> Result<Self> {
        Self::start_with_env(bin_dir_containerd, engines, DaemonEnv::new())
    }

    /// [`Containerd::start`] with `extra` applied to containerd's environment (which its shims
    /// inherit) after [`E2E_SHIM_ENV`]: variables to set (`OTEL_EXPORTER_OTLP_ENDPOINT`, say)
    /// and variables of the harness's own environment to leave out.
    pub fn start_with_env(
        bin_dir_containerd: &Path,
        engines: &[Engine],
        extra: DaemonEnv,
    ) -> Result<Self> {
        Self::start_with(
            bin_dir_containerd,
            engines,
            LogLevel::Debug,
            DaemonEnv::from_pairs(E2E_SHIM_ENV).and(extra),
        )
    }

    /// containerd (and the shims) logging at `log_level`, with the shims' defaults: what
    /// the benchmarks measure.
    pub fn start_logging(
        bin_dir_containerd: &Path,
        engines: &[Engine],
        log_level: LogLevel,
    ) -> Result<Self> {
        Self::start_logging_with_env(bin_dir_containerd, engines, log_level, DaemonEnv::new())
    }

    /// [`Containerd::start_logging`] with `extra` applied to containerd's environment.
    pub fn start_logging_with_env(
        bin_dir_containerd: &Path,
        engines: &[Engine],
        log_level: LogLevel,
        extra: DaemonEnv,
    ) -> Result<Self> {
        Self::start_with(bin_dir_containerd, engines, log_level, extra)
    }

    fn start_with(
        bin_dir_containerd: &Path,
        engines: &[Engine],
        log_level: LogLevel,
        daemon_env: DaemonEnv,
    ) -> Result<Self> {
        let containerd = bin_dir_containerd.join("containerd");
        let version_text = run_command(Command::new(&containerd).arg("--version"))?
            .ok()?
            .stdout;
        let version = ContainerdVersion::parse(&version_text)?;
        let dir = scratch_dir(&format!("containerd-{version}"))?;
        let root = dir.path().to_path_buf();
        let namespace = format!("wasmrunner-e2e-{}", std::process::id());
        let cri = CriSettings::new(&root);
        cri.write_cni_config()?;
        let config = root.join("config.toml");
        std::fs::write(&config, containerd_config(&root, version, &cri, log_level))
            .with_context(|| format!("writing {}", config.display()))?;
        let installer_actions = install_runtime_handlers(&config, version, engines)?;
        let child = spawn_daemon(bin_dir_containerd, &root, &daemon_env)?;
        let mut this = Self {
            dir: Some(dir),
            root,
            bin_dir: bin_dir_containerd.to_path_buf(),
            version,
            namespace,
            cri,
            installer_actions,
            imports: Mutex::new(HashMap::new()),
            daemon_env,
            child,
        };
        this.wait_ready()?;
        Ok(this)
    }

    /// Stops containerd (SIGTERM, as a service manager does) and starts it again with the
    /// same config and dirs; running tasks and their shims are left alone.
    pub fn restart(&mut self) -> Result<()> {
        self.terminate()?;
        self.child = spawn_daemon(&self.bin_dir, &self.root, &self.daemon_env)?;
        self.wait_ready()
    }

    /// Kills containerd with SIGKILL (a crash, the OOM killer: no shutdown of its own) and
    /// starts it again on the same config, root and state; returns how long it was down.
    pub fn kill_and_restart(&mut self) -> Result<Duration> {
        let down = Instant::now();
        self.child.kill().context("killing containerd")?;
        self.child.wait()?;
        self.child = spawn_daemon(&self.bin_dir, &self.root, &self.daemon_env)?;
        self.wait_ready()?;
        Ok(down.elapsed())
    }

    fn terminate(&mut self) -> Result<()> {
        // SAFETY: `kill` has no memory-safety preconditions; the pid is our own child's.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                self.child.kill()?;
                self.child.wait()?;
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("containerd exited with {status}:\n{}", self.log_tail());
            }
            if self.socket().exists() && self.ctr(&["version"])?.success() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "containerd did not answer within 20 s:\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// What containerd's environment has besides the harness's own and what every run sets.
    pub fn daemon_env(&self) -> &DaemonEnv {
        &self.daemon_env
    }

    /// The folder this containerd's binaries came from.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    pub fn socket(&self) -> PathBuf {
        self.root.join("containerd.sock")
    }

    /// Where a shim of this containerd serves the tasks of `grouping` in `namespace` (a
    /// per-pod shim: the sandbox or container id; a manager: `wasmrunner-<engine>-manager`):
    /// containerd-shim's `socket_address`, `/run/containerd/s/<sha256 of address/ns/grouping>`.
    pub fn shim_socket(&self, namespace: &str, grouping: &str) -> PathBuf {
        use sha2::{Digest, Sha256};
        let key = self.socket().join(namespace).join(grouping);
        let hash: String = Sha256::digest(key.display().to_string())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Path::new("/run/containerd/s").join(hash)
    }

    /// containerd's state dir, where each task's bundle (and rootfs mount) lives.
    pub fn state_dir(&self) -> PathBuf {
        self.root.join("state")
    }

    /// containerd's root and state dirs.
    pub fn dirs(&self) -> Vec<PathBuf> {
        vec![self.root.join("root"), self.state_dir()]
    }

    /// containerd's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last lines of containerd's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.root.join("containerd.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Where this containerd's shims keep compiled modules (`WASMRUNNER_CACHE_DIR`).
    pub fn module_cache_dir(&self) -> PathBuf {
        self.root.join(MODULE_CACHE_DIR)
    }

    /// Every compiled module in that cache: `<engine>/<cache key>/<sha256>`, lock and
    /// temporary files (dot files) left out.
    pub fn module_cache_entries(&self) -> Vec<PathBuf> {
        let children = |dir: &Path| -> Vec<PathBuf> {
            std::fs::read_dir(dir)
                .map(|entries| entries.flatten().map(|entry| entry.path()).collect())
                .unwrap_or_default()
        };
        children(&self.module_cache_dir())
            .iter()
            .flat_map(|engine| children(engine))
            .flat_map(|key| children(&key))
            .filter(|entry| {
                entry.is_file()
                    && !entry
                        .file_name()
                        .is_some_and(|name| name.to_string_lossy().starts_with('.'))
            })
            .collect()
    }

    /// Whether containerd's log (which carries the shims' logs) has `needle`.
    pub fn log_mentions(&self, needle: &str) -> bool {
        self.log_count(needle) > 0
    }

    /// How many lines of containerd's log have `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        self.log_lines_with(needle).len()
    }

    /// The lines of containerd's log that have `needle`.
    pub fn log_lines_with(&self, needle: &str) -> Vec<String> {
        std::fs::read_to_string(self.root.join("containerd.log"))
            .map(|text| {
                text.lines()
                    .filter(|line| line.contains(needle))
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A `ctr` command bound to this containerd and namespace.
    pub fn ctr_command(&self) -> Command {
        self.ctr_command_in(&self.namespace)
    }

    /// A `ctr` command bound to this containerd and containerd namespace `namespace`.
    pub fn ctr_command_in(&self, namespace: &str) -> Command {
        let mut command = Command::new(self.bin_dir.join("ctr"));
        command
            .arg("--address")
            .arg(self.socket())
            .arg("--namespace")
            .arg(namespace);
        command
    }

    /// Runs `ctr` with `args` and captures what it printed.
    pub fn ctr(&self, args: &[&str]) -> Result<Outcome> {
        run_command(self.ctr_command().args(args))
    }

    /// Runs `ctr` in containerd namespace `namespace` (`k8s.io` for CRI).
    pub fn ctr_in(&self, namespace: &str, args: &[&str]) -> Result<Outcome> {
        run_command(self.ctr_command_in(namespace).args(args))
    }

    /// Runs `import` (a `ctr image import`) for image `reference` in `namespace` unless that
    /// was done before, and returns how the first import went.
    pub fn import_once(
        &self,
        namespace: &str,
        reference: &str,
        import: impl FnOnce() -> Result<Outcome>,
    ) -> Result<Outcome> {
        let mut imports = self
            .imports
            .lock()
            .map_err(|_| anyhow::anyhow!("image import cache poisoned"))?;
        imports
            .entry((namespace.to_string(), reference.to_string()))
            .or_insert_with(|| import().map_err(|e| format!("{e:#}")))
            .clone()
            .map_err(|e| anyhow::anyhow!(e))
    }

    /// Removes whatever containers are left in the namespace; returns their ids.
    pub fn remove_leftover_containers(&self) -> Result<Vec<String>> {
        let listed = self.ctr(&["containers", "ls", "-q"])?.ok()?;
        let ids: Vec<String> = listed.stdout.lines().map(str::to_string).collect();
        for id in &ids {
            let _ = self.ctr(&["task", "kill", "--signal", "SIGKILL", id]);
            let _ = self.ctr(&["task", "delete", "--force", id]);
            let _ = self.ctr(&["containers", "delete", id]);
        }
        Ok(ids)
    }

    /// Stops containerd. The scratch dir is removed unless `keep` is set.
    pub fn stop(mut self, keep: bool) -> Result<()> {
        self.terminate()?;
        if let Some(dir) = self.dir.take() {
            if keep {
                eprintln!("keeping {} for inspection", dir.keep().display());
            } else {
                dir.close().context("removing containerd's scratch dir")?;
            }
        }
        Ok(())
    }
}

/// The module cache's folder in a containerd's scratch root.
const MODULE_CACHE_DIR: &str = "module-cache";

/// What the end-to-end suite sets in containerd's environment for its shims, besides what
/// every run sets:
/// - fault injection through a container's env is honoured (the rebuild cases use it); on
///   any other node a pod's env triggers nothing;
/// - modules over 8 MiB are refused (the size-cap case runs a 9 MiB one; the default cap
///   is 256 MiB).
pub const E2E_SHIM_ENV: &[(&str, &str)] = &[
    ("WASMRUNNER_TEST_FAULTS", "1"),
    ("WASMRUNNER_MAX_MODULE_MIB", "8"),
];

/// Changes to a private containerd's environment, which its shims inherit, on top of the
/// harness's own and of what every run sets (see [`spawn_daemon`]): variables removed, then
/// variables set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DaemonEnv {
    removed: Vec<String>,
    set: Vec<(String, String)>,
}

impl DaemonEnv {
    /// No change.
    pub fn new() -> Self {
        Self::default()
    }

    /// `pairs` set.
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Self {
        pairs
            .iter()
            .fold(Self::new(), |env, (key, value)| env.set(key, value))
    }

    /// Sets `key` to `value` (the last value set wins).
    pub fn set(mut self, key: &str, value: &str) -> Self {
        self.removed.retain(|removed| removed != key);
        self.set.retain(|(k, _)| k != key);
        self.set.push((key.to_string(), value.to_string()));
        self
    }

    /// Leaves `key` out of containerd's environment, whatever the harness's has.
    pub fn remove(mut self, key: &str) -> Self {
        self.set.retain(|(k, _)| k != key);
        if !self.removed.iter().any(|removed| removed == key) {
            self.removed.push(key.to_string());
        }
        self
    }

    /// Leaves out every variable of the harness's environment whose name starts with
    /// `prefix` (`OTEL_`: a case that sets its own is not disturbed by the caller's shell).
    pub fn remove_prefixed(self, prefix: &str) -> Self {
        std::env::vars_os()
            .filter_map(|(key, _)| key.into_string().ok())
            .filter(|key| key.starts_with(prefix))
            .fold(self, |env, key| env.remove(&key))
    }

    /// `other`'s changes after this one's.
    pub fn and(self, other: DaemonEnv) -> Self {
        let removed = other.removed.iter().fold(self, |env, key| env.remove(key));
        other
            .set
            .iter()
            .fold(removed, |env, (key, value)| env.set(key, value))
    }

    /// The value this sets for `key`, if it sets one.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.set
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, value)| value.as_str())
    }

    /// The variables set, in order.
    pub fn vars(&self) -> &[(String, String)] {
        &self.set
    }

    /// The variables left out.
    pub fn removed(&self) -> &[String] {
        &self.removed
    }

    fn apply(&self, command: &mut Command) {
        for key in &self.removed {
            command.env_remove(key);
        }
        command.envs(self.set.iter().map(|(k, v)| (k, v)));
    }
}

/// Starts the containerd of `bin_dir` on the config in `root`, appending to its log, with
/// `daemon_env` applied to its environment (containerd passes it on to the shims).
fn spawn_daemon(bin_dir: &Path, root: &Path, daemon_env: &DaemonEnv) -> Result<Child> {
    let containerd = bin_dir.join("containerd");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(root.join("containerd.log"))?;
    let mut command = Command::new(&containerd);
    command.arg("--config").arg(root.join("config.toml"));
    command
        .env("PATH", shim_path(bin_dir))
        // Compiled modules are cached per containerd, so each run starts cold.
        .env("WASMRUNNER_CACHE_DIR", root.join(MODULE_CACHE_DIR))
        // Shared managers exit soon after their last container, so a run ends with none
        // (unless the caller, e.g. the benchmarks, chose another idle time).
        .env(
            "WASMRUNNER_MANAGER_IDLE_SECS",
            std::env::var("WASMRUNNER_MANAGER_IDLE_SECS").unwrap_or_else(|_| "3".into()),
        )
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    daemon_env.apply(&mut command);
    // SAFETY: the closure runs in the forked child before exec and only calls `prctl`,
    // which is async-signal-safe; it allocates nothing and touches no lock.
    unsafe {
        command.pre_exec(|| {
            // containerd dies with the harness, even if the harness is killed.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command
        .spawn()
        .with_context(|| format!("starting {}", containerd.display()))
}

/// The shims under test come first on containerd's `PATH`, then this containerd's own
/// `containerd-shim-runc-v2`, then the system (for `runc`).
fn shim_path(containerd_bin: &Path) -> std::ffi::OsString {
    let system = [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ];
    let dirs = [bin_dir(), containerd_bin.to_path_buf()]
        .into_iter()
        .chain(system.iter().map(PathBuf::from));
    std::env::join_paths(dirs).unwrap_or_default()
}

impl Containerd {
    /// The shim and manager processes serving this containerd (they are started with
    /// `-address <its socket>`), as `(pid, command line)`.
    pub fn shim_processes(&self) -> Vec<(u32, String)> {
        let socket = self.socket().to_string_lossy().into_owned();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|entry| {
                let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
                let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
                let words: Vec<String> = cmdline
                    .split(|b| *b == 0)
                    .map(|w| String::from_utf8_lossy(w).into_owned())
                    .collect();
                let serves_us = words
                    .windows(2)
                    .any(|w| w[0] == "-address" && w[1] == socket);
                let is_shim = words
                    .first()
                    .is_some_and(|program| program.contains("containerd-shim-"));
                (serves_us && is_shim).then(|| (pid, words.join(" ")))
            })
            .collect()
    }

    /// The shared managers serving namespace `namespace` with `binary` (their pids). The
    /// manager's zygotes and the container processes they fork carry the same command line;
    /// the manager is the one whose parent is not among them. containerd's short-lived
    /// `shim start` and `shim delete` runs of the binary (their last word) are not managers.
    pub fn managers(&self, binary: &str, namespace: &str) -> Vec<u32> {
        let family: Vec<u32> = self
            .shim_processes()
            .into_iter()
            .filter(|(_, cmdline)| {
                let words: Vec<&str> = cmdline.split_whitespace().collect();
                let subcommand = words
                    .last()
                    .is_some_and(|w| *w == "start" || *w == "delete");
                !subcommand
                    && words
                        .first()
                        .is_some_and(|program| program.ends_with(binary))
                    && words
                        .windows(2)
                        .any(|w| w[0] == "-namespace" && w[1] == namespace)
            })
            .map(|(pid, _)| pid)
            .collect();
        family
            .iter()
            .copied()
            .filter(|pid| parent_of(*pid).is_none_or(|parent| !family.contains(&parent)))
            .collect()
    }

    /// Waits up to `timeout` for every shim and manager of this containerd to exit; returns
    /// those still running.
    pub fn wait_for_no_shims(&self, timeout: Duration) -> Vec<(u32, String)> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = self.shim_processes();
            if left.is_empty() || Instant::now() > deadline {
                return left;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The parent of process `pid`.
pub fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: the fields after it follow its closing parenthesis.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_versions_debian_ships() -> Result<()> {
        let v16 = ContainerdVersion::parse(
            "containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3",
        )?;
        assert_eq!(v16.to_string(), "1.6.20");
        assert!(!v16.unpacks_wasm_layers());
        let v17 =
            ContainerdVersion::parse("containerd github.com/containerd/containerd 1.7.24~ds1 x")?;
        assert!(v17.unpacks_wasm_layers());
        assert_eq!(v17.config_version(), 2);
        let v21 = ContainerdVersion::parse(
            "containerd github.com/containerd/containerd/v2 2.1.9+unknown",
        )?;
        assert_eq!(v21.to_string(), "2.1.9");
        assert_eq!(v21.config_version(), 3);
        assert!(ContainerdVersion::parse("nonsense").is_err());
        Ok(())
    }

    #[test]
    fn daemon_env_sets_and_removes_in_order() {
        let env = DaemonEnv::from_pairs(E2E_SHIM_ENV).and(
            DaemonEnv::new()
                .remove("WASMRUNNER_MAX_MODULE_MIB")
                .set("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
                .set("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:2")
                .remove("OTEL_SERVICE_NAME"),
        );
        assert_eq!(env.get("WASMRUNNER_TEST_FAULTS"), Some("1"));
        assert_eq!(env.get("WASMRUNNER_MAX_MODULE_MIB"), None);
        assert_eq!(
            env.get("OTEL_EXPORTER_OTLP_ENDPOINT"),
            Some("http://127.0.0.1:2")
        );
        assert_eq!(
            env.removed(),
            ["WASMRUNNER_MAX_MODULE_MIB", "OTEL_SERVICE_NAME"]
        );
        let mut command = Command::new("true");
        env.apply(&mut command);
        let applied: HashMap<String, Option<String>> = command
            .get_envs()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.map(|v| v.to_string_lossy().into_owned()),
                )
            })
            .collect();
        assert_eq!(applied["OTEL_SERVICE_NAME"], None, "removed");
        assert_eq!(applied["WASMRUNNER_MAX_MODULE_MIB"], None, "removed");
        assert_eq!(applied["WASMRUNNER_TEST_FAULTS"].as_deref(), Some("1"));
        assert_eq!(
            applied["OTEL_EXPORTER_OTLP_ENDPOINT"].as_deref(),
            Some("http://127.0.0.1:2")
        );
        // Setting a removed variable brings it back.
        let back = env.set("OTEL_SERVICE_NAME", "x");
        assert!(back.removed().iter().all(|k| k != "OTEL_SERVICE_NAME"));
        assert_eq!(back.get("OTEL_SERVICE_NAME"), Some("x"));
    }
}
