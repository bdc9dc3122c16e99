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
    CAPABILITY_PATTERN, CRI_V2, CRI_V3, Containerd, RunningContainerd, assert_annotation_lists,
    cri_plugin, fake_shims, installer_ok, runtime_type, systemd_cgroup,
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
    // The capability annotations reach the shim: both lists name the prefix, in every handler.
    for handler in ["wasmtime", "wasmtime-shared"] {
        assert_annotation_lists(&doc, plugin, handler, &[CAPABILITY_PATTERN]);
    }
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
    // containerd read the annotation lists into the handler's runtime config.
    for handler in ["wasmtime", "wasmtime-shared"] {
        assert_annotation_lists(&dumped, plugin, handler, &[CAPABILITY_PATTERN]);
    }
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
    // The migration keeps the annotation lists.
    assert_annotation_lists(&dump, CRI_V3, "wasmtime", &[CAPABILITY_PATTERN]);
    wasmrunner_installer::uninstall_from_config(&paths.config()).unwrap();
    assert_eq!(std::fs::read_to_string(paths.config()).unwrap(), original);
}

/// Every containerd on this machine, with the config format its `config default` writes.
fn releases() -> Vec<(&'static str, Containerd)> {
    let mut all = vec![("containerd 1.6 (system)", Containerd::system())];
    for (label, suite) in [
        ("containerd 1.7 (trixie)", "trixie"),
        ("containerd 2.x (sid)", "sid"),
    ] {
        match Containerd::unpacked(suite) {
            Some(release) => all.push((label, release)),
            None => skip(&format!(
                "{label}: target/containerd/{suite}/bin/containerd is absent"
            )),
        }
    }
    all
}

/// A `wasmtime` handler the admin configured before (same runtime type) that already lists
/// annotation patterns of their own: the installer keeps the table and the admin's patterns,
/// adds ours to each list once, a second run changes nothing, containerd reads the merged lists,
/// and uninstall (both the byte-for-byte restore and, after another edit, the structural one)
/// takes away only what the installer added.
#[test]
fn user_annotation_patterns_are_merged_and_kept() {
    for (label, release) in releases() {
        let paths = Paths::new();
        let (defaults, format) = private_default_config(&release, &paths);
        let plugin = cri_plugin(format);
        // Quoted like the rest of the file: toml_edit writes a header's keys the way their
        // first occurrence in the file is quoted, so mixed quoting would not survive any edit.
        let q = if defaults.contains("[plugins.'") {
            '\''
        } else {
            '"'
        };
        let user_table = format!(
            "\n# The admin's own wasmtime handler, with the annotations their tooling needs.\n\
             [plugins.{q}{plugin}{q}.containerd.runtimes.wasmtime]\n\
             runtime_type = \"io.containerd.wasmtime.v1\"\n\
             pod_annotations = [\"example.com/*\"] # for the audit hook\n\
             container_annotations = [\n  \"example.com/trace\",\n  \"{CAPABILITY_PATTERN}\",\n]\n"
        );
        let original = format!("{defaults}{user_table}");
        std::fs::write(paths.config(), &original).unwrap();
        release
            .dump(&paths.config())
            .unwrap_or_else(|e| panic!("{label}: the admin's config: {e}"));
        let shims = fake_shims(paths.dir.path(), &["wasmtime"]);
        let bin = paths.at("bin");
        let config = paths.config();
        let install = [
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

        // A dry run shows the merge in its diff and writes nothing.
        let mut dry = install.to_vec();
        dry.push("--dry-run");
        let out = installer_ok(&dry);
        assert!(
            out.contains(&format!(
                "+pod_annotations = [\"example.com/*\", \"{CAPABILITY_PATTERN}\"] # for the audit hook"
            )),
            "{label}: {out}"
        );
        assert!(
            out.contains(&format!(
                "would add \"{CAPABILITY_PATTERN}\" to `pod_annotations` of runtime `wasmtime`"
            )),
            "{label}: {out}"
        );
        assert_eq!(std::fs::read_to_string(&config).unwrap(), original);

        let out = installer_ok(&install);
        assert!(
            out.contains("already configured by someone else"),
            "{label}: {out}"
        );
        // container_annotations listed ours already: only pod_annotations changes.
        assert!(
            !out.contains("to `container_annotations`"),
            "{label}: {out}"
        );
        let installed = std::fs::read_to_string(&config).unwrap();
        // The admin's lines are all there, in order, only the one list gained ours.
        let merged = original.replace(
            "pod_annotations = [\"example.com/*\"] # for",
            &format!("pod_annotations = [\"example.com/*\", \"{CAPABILITY_PATTERN}\"] # for"),
        );
        assert_ne!(merged, original);
        let mut rest = installed.as_str();
        for line in merged.lines() {
            let at = rest.find(line).unwrap_or_else(|| {
                panic!("{label}: line {line:?} lost or reordered:\n{installed}")
            });
            rest = &rest[at + line.len()..];
        }
        let doc: DocumentMut = installed.parse().unwrap();
        assert_eq!(
            common::annotation_lists(&doc, plugin, "wasmtime"),
            (
                Some(vec!["example.com/*".into(), CAPABILITY_PATTERN.into()]),
                Some(vec!["example.com/trace".into(), CAPABILITY_PATTERN.into()])
            ),
            "{label}"
        );
        // The shared-mode handler is ours, with our lists only.
        assert_annotation_lists(&doc, plugin, "wasmtime-shared", &[CAPABILITY_PATTERN]);
        let dumped: DocumentMut = release
            .dump(&config)
            .unwrap_or_else(|e| panic!("{label}: {e}"))
            .parse()
            .unwrap();
        let dump_plugin = if release.version().major >= 2 {
            CRI_V3
        } else {
            CRI_V2
        };
        assert_eq!(
            common::annotation_lists(&dumped, dump_plugin, "wasmtime"),
            common::annotation_lists(&doc, plugin, "wasmtime"),
            "{label}"
        );

        // Idempotent.
        let out = installer_ok(&install);
        assert!(out.contains("unchanged"), "{label}: {out}");
        assert_eq!(std::fs::read_to_string(&config).unwrap(), installed);

        // Uninstall of an untouched file: the original bytes.
        let uninstall = [
            "uninstall",
            "--config",
            config.to_str().unwrap(),
            "--restart",
            "none",
        ];
        installer_ok(&uninstall);
        assert_eq!(
            std::fs::read_to_string(&config).unwrap(),
            original,
            "{label}"
        );

        // Install again, let the admin edit another part, uninstall: only our pattern goes.
        installer_ok(&install);
        let edited = std::fs::read_to_string(&config)
            .unwrap()
            .replace(ROOT_COMMENT, "# private root (edited after the install)");
        std::fs::write(&config, &edited).unwrap();
        let out = installer_ok(&uninstall);
        assert!(
            out.contains(&format!(
                "remove \"{CAPABILITY_PATTERN}\" from `pod_annotations` of runtime `wasmtime`"
            )),
            "{label}: {out}"
        );
        assert_eq!(
            std::fs::read_to_string(&config).unwrap(),
            original.replace(ROOT_COMMENT, "# private root (edited after the install)"),
            "{label}"
        );
        let _ = writeln!(
            std::io::stderr(),
            "{label}: the admin's annotation patterns merged, kept and restored"
        );
    }
}
