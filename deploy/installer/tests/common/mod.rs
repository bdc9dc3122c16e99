//! Helpers shared by the installer's integration tests.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use toml_edit::{DocumentMut, Item, TableLike};
use wasmrunner_installer::ConfigVersion;

pub const INSTALLER: &str = env!("CARGO_BIN_EXE_wasmrunner-installer");

/// The workspace root (this crate lives in deploy/installer).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A containerd release to test against: its `containerd` and `ctr`.
#[derive(Debug, Clone)]
pub struct Containerd {
    pub containerd: PathBuf,
    pub ctr: PathBuf,
}

impl Containerd {
    /// Debian 12's containerd 1.6.20: always there.
    pub fn system() -> Self {
        Self {
            containerd: "/usr/bin/containerd".into(),
            ctr: "/usr/bin/ctr".into(),
        }
    }

    /// An unpacked release under `<workspace>/target/containerd/<suite>/bin`, if present.
    pub fn unpacked(suite: &str) -> Option<Self> {
        let bin = workspace_root()
            .join("target/containerd")
            .join(suite)
            .join("bin");
        let containerd = bin.join("containerd");
        containerd.is_file().then(|| Self {
            containerd,
            ctr: bin.join("ctr"),
        })
    }

    pub fn version(&self) -> wasmrunner_installer::ContainerdVersion {
        let out = run_ok(Command::new(&self.containerd).arg("--version"));
        wasmrunner_installer::config::parse_containerd_version(&out).expect("containerd --version")
    }

    pub fn default_config(&self) -> String {
        run_ok(Command::new(&self.containerd).args(["config", "default"]))
    }

    /// `containerd --config <file> config dump`: containerd's own reading of the file.
    pub fn dump(&self, config: &Path) -> Result<String, String> {
        let out = Command::new(&self.containerd)
            .arg("--config")
            .arg(config)
            .args(["config", "dump"])
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "config dump failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }
}

pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs the installer binary.
pub fn installer(args: &[&str]) -> Output {
    Command::new(INSTALLER)
        .args(args)
        .output()
        .expect("run wasmrunner-installer")
}

pub fn installer_ok(args: &[&str]) -> String {
    let out = installer(args);
    assert!(
        out.status.success(),
        "wasmrunner-installer {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A directory holding a fake shim executable.
pub fn fake_shims(dir: &Path, engines: &[&str]) -> PathBuf {
    let shims = dir.join("shims");
    std::fs::create_dir_all(&shims).unwrap();
    for engine in engines {
        let path = shims.join(format!("containerd-shim-{engine}-v1"));
        std::fs::write(&path, format!("#!/bin/sh\necho fake {engine} shim\n")).unwrap();
        let mut perms = std::fs::metadata(&path).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        std::fs::set_permissions(&path, perms).unwrap();
    }
    shims
}

pub fn lookup<'a>(table: &'a dyn TableLike, path: &[String]) -> Option<&'a Item> {
    wasmrunner_installer::config::lookup(table, path)
}

/// The plugin holding CRI runtime handlers, written out here (not taken from the library) so
/// that a wrong path in the library fails the tests: config version 2 (containerd 1.x) and 3.
pub const CRI_V2: &str = "io.containerd.grpc.v1.cri";
pub const CRI_V3: &str = "io.containerd.cri.v1.runtime";

pub fn cri_plugin(version: ConfigVersion) -> &'static str {
    match version {
        ConfigVersion::V2 => CRI_V2,
        ConfigVersion::V3 => CRI_V3,
    }
}

fn handler_path(plugin: &str, handler: &str, rest: &[&str]) -> Vec<String> {
    let mut path: Vec<String> = ["plugins", plugin, "containerd", "runtimes", handler]
        .iter()
        .map(|s| s.to_string())
        .collect();
    path.extend(rest.iter().map(|s| s.to_string()));
    path
}

/// `runtime_type` of a handler under `plugins.<plugin>.containerd.runtimes`.
pub fn runtime_type(doc: &DocumentMut, plugin: &str, handler: &str) -> Option<String> {
    lookup(
        doc.as_table(),
        &handler_path(plugin, handler, &["runtime_type"]),
    )?
    .as_str()
    .map(str::to_string)
}

/// `options.SystemdCgroup` of a handler under `plugins.<plugin>.containerd.runtimes`.
pub fn systemd_cgroup(doc: &DocumentMut, plugin: &str, handler: &str) -> Option<bool> {
    lookup(
        doc.as_table(),
        &handler_path(plugin, handler, &["options", "SystemdCgroup"]),
    )?
    .as_bool()
}

/// The pattern the installer lists in both annotation keys, written out here (not taken from the
/// library) so that a wrong pattern in the library fails the tests.
pub const CAPABILITY_PATTERN: &str = "wasmrunner.dev/*";

/// The strings of a list key (`pod_annotations`, `container_annotations`) of a handler under
/// `plugins.<plugin>.containerd.runtimes`; `None` when absent or not a list.
pub fn string_list(
    doc: &DocumentMut,
    plugin: &str,
    handler: &str,
    key: &str,
) -> Option<Vec<String>> {
    let array = lookup(doc.as_table(), &handler_path(plugin, handler, &[key]))?.as_array()?;
    Some(
        array
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
    )
}

/// Both annotation lists of a handler: `(pod_annotations, container_annotations)`.
pub fn annotation_lists(
    doc: &DocumentMut,
    plugin: &str,
    handler: &str,
) -> (Option<Vec<String>>, Option<Vec<String>>) {
    (
        string_list(doc, plugin, handler, "pod_annotations"),
        string_list(doc, plugin, handler, "container_annotations"),
    )
}

/// Asserts that both annotation lists of the handler are exactly `expected`.
pub fn assert_annotation_lists(doc: &DocumentMut, plugin: &str, handler: &str, expected: &[&str]) {
    let expected: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        annotation_lists(doc, plugin, handler),
        (Some(expected.clone()), Some(expected)),
        "annotation lists of {handler} under plugins.\"{plugin}\":\n{doc}"
    );
}

/// A containerd started on a private root/state/sockets; stopped (by pid) when dropped.
pub struct RunningContainerd {
    child: Child,
    pub address: PathBuf,
    pub log: PathBuf,
}

impl RunningContainerd {
    pub fn start(release: &Containerd, config: &Path, dir: &Path, address: &Path) -> Self {
        let log = dir.join("containerd.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let child = Command::new(&release.containerd)
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .expect("start containerd");
        Self {
            child,
            address: address.to_path_buf(),
            log,
        }
    }

    /// Waits until `ctr plugins ls` lists the CRI plugin as `ok`. Returns the listing.
    pub fn wait_for_cri(&mut self, release: &Containerd, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "containerd exited early ({status}):\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            let out = Command::new(&release.ctr)
                .arg("--address")
                .arg(&self.address)
                .args(["plugins", "ls"])
                .output();
            if let Ok(out) = out {
                last = String::from_utf8_lossy(&out.stdout).into_owned();
                if out.status.success() && cri_plugin_ok(&last) {
                    return last;
                }
                if !out.status.success() {
                    last.push_str(&String::from_utf8_lossy(&out.stderr));
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "the CRI plugin was not ok within {timeout:?}; last `ctr plugins ls`:\n{last}\ncontainerd log:\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM, then SIGKILL if it does not stop within a few seconds.
    pub fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RunningContainerd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// True when a `ctr plugins ls` listing has the CRI plugin (`io.containerd.grpc.v1` / `cri`)
/// with status `ok`.
pub fn cri_plugin_ok(listing: &str) -> bool {
    listing.lines().any(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        cols.len() >= 3
            && cols[0] == "io.containerd.grpc.v1"
            && cols[1] == "cri"
            && cols.last() == Some(&"ok")
    })
}

/// Renders a k3s config template the way k3s's Go `text/template` would, for the constructs the
/// installer and the fixtures use: `{{ template "base" . }}` (replaced by a stand-in for k3s's
/// base config that renders `detected` the way k3s renders `.ExtraRuntimes`, and runc with
/// `SystemdCgroup = <k3s_systemd>`), `{{ if not (index .ExtraRuntimes "<name>").RuntimeType }}`,
/// `{{ if .SystemdCgroup }}`, `{{ else }}` and `{{ end }}`. Any other action fails the test.
/// (The installer's real output was also checked once with Go's text/template.)
pub fn render_k3s_template(
    text: &str,
    version: ConfigVersion,
    detected: &BTreeSet<&str>,
    k3s_systemd: bool,
) -> String {
    let plugin = cri_plugin(version);
    let mut base = format!(
        "# File generated by k3s. DO NOT EDIT. Use config.toml.tmpl instead.\nversion = {}\n\n[plugins.'{plugin}'.containerd.runtimes.runc]\n  runtime_type = \"io.containerd.runc.v2\"\n\n[plugins.'{plugin}'.containerd.runtimes.runc.options]\n  SystemdCgroup = {k3s_systemd}\n",
        version.number()
    );
    for name in detected {
        base.push_str(&format!(
            "\n[plugins.'{plugin}'.containerd.runtimes.'{name}']\n  runtime_type = \"io.containerd.{name}.v1\"\n[plugins.'{plugin}'.containerd.runtimes.'{name}'.options]\n  BinaryName = \"/usr/local/bin/containerd-shim-{name}-v1\"\n"
        ));
    }
    let mut out = String::new();
    let mut active: Vec<bool> = Vec::new();
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim();
        let on = active.iter().all(|a| *a);
        if trimmed == "{{ template \"base\" . }}" {
            if on {
                out.push_str(&base);
            }
        } else if let Some(rest) = trimmed.strip_prefix("{{ if not (index .ExtraRuntimes \"") {
            let name = rest
                .strip_suffix("\").RuntimeType }}")
                .unwrap_or_else(|| panic!("unsupported template line: {line}"));
            active.push(!detected.contains(name));
        } else if trimmed == "{{ if .SystemdCgroup }}" {
            active.push(k3s_systemd);
        } else if trimmed == "{{ else }}" {
            let top = active.last_mut().expect("{{ else }} without {{ if }}");
            *top = !*top;
        } else if trimmed == "{{ end }}" {
            active.pop().expect("{{ end }} without {{ if }}");
        } else {
            assert!(!line.contains("{{"), "unsupported template line: {line}");
            if on {
                out.push_str(line);
            }
        }
    }
    assert!(active.is_empty(), "unterminated {{ if }}");
    out
}
