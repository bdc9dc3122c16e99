//! The installer against real containerd releases: for each containerd on this machine, take
//! its own default config, install, let that containerd read the result (`config dump`) and
//! start with it, reinstall (byte-identical), uninstall (original bytes back).
//!
//! containerd 1.6.20 (`/usr/bin/containerd`, Debian 12) is always tested; 1.7 and 2.x are tested
//! when `target/containerd/{trixie,sid}/bin` hold them (`make setup` unpacks them) and skipped
//! with a message otherwise.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{
    CRI_V2, CRI_V3, Containerd, RunningContainerd, cri_plugin, fake_shims, installer_ok,
    runtime_type, systemd_cgroup,
};
use toml_edit::{DocumentMut, value};
use wasmrunner_installer::ConfigVersion;
use wasmrunner_installer::config::detect_version;

const HEADER_COMMENT: &str =
    "# Private containerd for the installer's tests: a hand-written comment.";
const RUNC_COMMENT: &str = "# runc stays the default runtime (hand-written).";
const ROOT_COMMENT: &str = "# private root (hand-written)";

fn skip(reason: &str) {
    // Written past the test harness's capture so that it shows in `cargo test` output.
    let _ = writeln!(std::io::stderr(), "SKIPPED: {reason}");
}

struct Paths {
    dir: tempfile::TempDir,
}

impl Paths {
    fn new() -> Self {
        Self {
            dir: tempfile::Builder::new()
                .prefix("wri-")
                .tempdir()
                .expect("temp dir"),
        }
    }
    fn at(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    fn config(&self) -> PathBuf {
        self.at("config.toml")
    }
    fn socket(&self) -> PathBuf {
        self.at("run/containerd.sock")
    }
}

fn set(doc: &mut DocumentMut, path: &[&str], v: toml_edit::Item) {
    let (last, parents) = path.split_last().expect("non-empty path");
    let mut item = doc.as_item_mut();
    for key in parents {
        item = &mut item[*key];
    }
    item[*last] = v;
}

/// The release's default config, made private to the temp dir (root, state, sockets, opt, NRI,
/// CNI conf dir), with `restrict_oom_score_adj = true` (this VM lacks CAP_SYS_RESOURCE), and
/// with hand-written comments that the installer must keep. Edited with toml_edit.
fn private_default_config(release: &Containerd, paths: &Paths) -> (String, ConfigVersion) {
    let mut doc: DocumentMut = release
        .default_config()
        .parse()
        .expect("default config parses");
    let version = detect_version(&doc).expect("default config has a version");
    let s = |p: PathBuf| value(p.display().to_string());
    set(&mut doc, &["root"], s(paths.at("root")));
    set(&mut doc, &["state"], s(paths.at("state")));
    set(&mut doc, &["grpc", "address"], s(paths.socket()));
    set(
        &mut doc,
        &["ttrpc", "address"],
        s(paths.at("run/containerd.ttrpc.sock")),
    );
    let cri = cri_plugin(version);
    set(
        &mut doc,
        &["plugins", cri, "restrict_oom_score_adj"],
        value(true),
    );
    set(
        &mut doc,
        &["plugins", cri, "cni", "conf_dir"],
        s(paths.at("cni")),
    );
    if doc["plugins"]
        .get("io.containerd.internal.v1.opt")
        .is_some()
    {
        set(
            &mut doc,
            &["plugins", "io.containerd.internal.v1.opt", "path"],
            s(paths.at("opt")),
        );
    }
    if doc["plugins"].get("io.containerd.nri.v1.nri").is_some() {
        set(
            &mut doc,
            &["plugins", "io.containerd.nri.v1.nri", "disable"],
            value(true),
        );
    }

    doc.decor_mut().set_prefix(format!("{HEADER_COMMENT}\n"));
    if let Some(v) = doc["root"].as_value_mut() {
        v.decor_mut().set_suffix(format!(" {ROOT_COMMENT}"));
    }
    let runc = &mut doc["plugins"][cri]["containerd"]["runtimes"]["runc"];
    let runc = runc.as_table_mut().expect("runc table");
    let prefix = runc
        .decor()
        .prefix()
        .and_then(|p| p.as_str())
        .unwrap_or("\n")
        .to_string();
    let indent = prefix.rsplit('\n').next().unwrap_or_default().to_string();
    let head = &prefix[..prefix.len() - indent.len()];
    runc.decor_mut()
        .set_prefix(format!("{head}{indent}{RUNC_COMMENT}\n{indent}"));
    (doc.to_string(), version)
}

fn check_release(label: &str, release: &Containerd, expect_major: u64) {
    let version = release.version();
    assert_eq!(version.major, expect_major, "{label}: {version}");
    // containerd 2.x writes and dumps config version 3, 1.x version 2.
    let format = if expect_major >= 2 {
        ConfigVersion::V3
    } else {
        ConfigVersion::V2
    };
    let plugin = cri_plugin(format);
    let paths = Paths::new();
    let (original, file_format) = private_default_config(release, &paths);
    assert_eq!(file_format, format, "{label}: default config format");
    std::fs::write(paths.config(), &original).unwrap();
    // The untouched private config is what containerd accepts to begin with.
    release
        .dump(&paths.config())
        .expect("private default config loads");

    let shims = fake_shims(paths.dir.path(), &["wasmtime"]);
    let bin = paths.at("bin");
    let config = paths.config();
    let args = [
        "install",
        "--config",
        config.to_str().unwrap(),
        "--restart",
        "none",
        "--shims",
        shims.to_str().unwrap(),
        "--bin-dir",
        bin.to_str().unwrap(),
    ];

    // Install.
    let out = installer_ok(&args);
    assert!(out.contains("add runtime `wasmtime`"), "{label}: {out}");
    assert!(out.contains("copy "), "{label}: {out}");
    let installed = std::fs::read_to_string(&config).unwrap();
    assert_ne!(installed, original);
    for comment in [HEADER_COMMENT, RUNC_COMMENT, ROOT_COMMENT] {
        assert!(
            installed.contains(comment),
            "{label}: lost comment {comment:?}"
        );
    }
    // Everything that was there is still there, in order: the edit only inserted lines.
    let mut rest = installed.as_str();
    for line in original.lines() {
        let at = rest
            .find(line)
            .unwrap_or_else(|| panic!("{label}: line {line:?} lost or reordered"));
        rest = &rest[at + line.len()..];
    }
    let doc: DocumentMut = installed.parse().unwrap();
    assert_eq!(
        runtime_type(&doc, plugin, "wasmtime").as_deref(),
        Some("io.containerd.wasmtime.v1")
    );
    assert!(bin.join("containerd-shim-wasmtime-v1").is_file());

    // containerd's own reading of the file has the runtime under the right plugin.
    let dump = release
        .dump(&config)
        .unwrap_or_else(|e| panic!("{label}: {e}"));
    let dumped: DocumentMut = dump.parse().expect("dump is TOML");
    assert_eq!(
        runtime_type(&dumped, plugin, "wasmtime").as_deref(),
        Some("io.containerd.wasmtime.v1"),
        "{label}: dump lacks the runtime under plugins.\"{plugin}\":\n{dump}"
    );
    // The defaults say SystemdCgroup = false for runc; auto copies it.
    assert_eq!(systemd_cgroup(&dumped, plugin, "wasmtime"), Some(false));
    assert!(
        dump.contains("runtime_type = \"io.containerd.wasmtime.v1\"")
            || dump.contains("runtime_type = 'io.containerd.wasmtime.v1'"),
        "{label}: {dump}"
    );

    // Second run: byte-identical, says unchanged.
    let out = installer_ok(&args);
    assert!(out.contains("unchanged"), "{label}: {out}");
    assert!(out.contains("no restart needed"), "{label}: {out}");
    assert_eq!(std::fs::read_to_string(&config).unwrap(), installed);

    // containerd starts with the installed config and its CRI plugin loads.
    {
        std::fs::create_dir_all(paths.at("run")).unwrap();
        let mut running =
            RunningContainerd::start(release, &config, paths.dir.path(), &paths.socket());
        let listing = running.wait_for_cri(release, Duration::from_secs(30));
        assert!(common::cri_plugin_ok(&listing), "{listing}");
        running.stop();
    }

    // Uninstall: the original bytes come back, the shim and the state files go.
    let uninstall = [
        "uninstall",
        "--config",
        config.to_str().unwrap(),
        "--restart",
        "none",
    ];
    let out = installer_ok(&uninstall);
    assert!(out.contains("restore "), "{label}: {out}");
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        original,
        "{label}"
    );
    assert!(!bin.join("containerd-shim-wasmtime-v1").exists());
    assert!(!Path::new(&format!("{}.wasmrunner.json", config.display())).exists());
    assert!(!Path::new(&format!("{}.wasmrunner.bak", config.display())).exists());
    let _ = writeln!(
        std::io::stderr(),
        "{label} {version}: install, config dump, CRI plugin ok, reinstall unchanged, uninstall restored"
    );
}

#[test]
fn containerd_1_6_system() {
    let release = Containerd::system();
    assert!(
        release.containerd.is_file(),
        "/usr/bin/containerd (Debian 12's 1.6.20) must be installed: apt-get install containerd runc"
    );
    check_release("containerd 1.6 (system)", &release, 1);
}

#[test]
fn containerd_1_7_trixie() {
    match Containerd::unpacked("trixie") {
        Some(release) => check_release("containerd 1.7 (trixie)", &release, 1),
        None => skip("containerd 1.7: target/containerd/trixie/bin/containerd is absent"),
    }
}

#[test]
fn containerd_2_sid() {
    match Containerd::unpacked("sid") {
        Some(release) => check_release("containerd 2.x (sid)", &release, 2),
        None => skip("containerd 2.x: target/containerd/sid/bin/containerd is absent"),
    }
}

/// A version 2 file (containerd 1.x's format) stays version 2 on containerd 2.x, which migrates
/// it on load: the handler must come out under the version 3 plugin.
#[test]
fn containerd_2_reads_a_version_2_config() {
    let Some(release) = Containerd::unpacked("sid") else {
        skip("containerd 2.x: target/containerd/sid/bin/containerd is absent");
        return;
    };
    let paths = Paths::new();
    let (original, format) = private_default_config(&Containerd::system(), &paths);
    assert_eq!(format, ConfigVersion::V2);
    std::fs::write(paths.config(), &original).unwrap();
    let opts = wasmrunner_installer::Options::with_runtimes(
        &wasmrunner_installer::runtimes::select(&["wasmtime"]).unwrap(),
    );
    let report = wasmrunner_installer::install_into_config(&paths.config(), &opts).unwrap();
    assert!(report.changed);
    let doc: DocumentMut = std::fs::read_to_string(paths.config())
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        runtime_type(&doc, CRI_V2, "wasmtime").as_deref(),
        Some("io.containerd.wasmtime.v1")
    );
    let dump: DocumentMut = release
        .dump(&paths.config())
        .expect("containerd 2 loads a version 2 config")
        .parse()
        .unwrap();
    assert_eq!(
        runtime_type(&dump, CRI_V3, "wasmtime").as_deref(),
        Some("io.containerd.wasmtime.v1")
    );
    wasmrunner_installer::uninstall_from_config(&paths.config()).unwrap();
    assert_eq!(std::fs::read_to_string(paths.config()).unwrap(), original);
}
