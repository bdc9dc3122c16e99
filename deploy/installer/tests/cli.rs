//! The command line on plain config files: refusals, creating a missing config, dry runs, user
//! edits between install and uninstall, engine selection.

mod common;

use std::path::{Path, PathBuf};

use common::{
    CAPABILITY_PATTERN, CRI_V2, CRI_V3, Containerd, annotation_lists, assert_annotation_lists,
    fake_shims, installer, installer_ok, runtime_type,
};
use toml_edit::DocumentMut;

struct Node {
    dir: tempfile::TempDir,
    shims: PathBuf,
}

impl Node {
    fn new(engines: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let shims = fake_shims(dir.path(), engines);
        Self { dir, shims }
    }
    fn config(&self) -> PathBuf {
        self.dir.path().join("etc/config.toml")
    }
    fn bin(&self) -> PathBuf {
        self.dir.path().join("bin")
    }
    fn install_args(&self, extra: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = [
            "install",
            "--config",
            self.config().to_str().unwrap(),
            "--restart",
            "none",
            "--shims",
            self.shims.to_str().unwrap(),
            "--bin-dir",
            self.bin().to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    }
    fn install(&self, extra: &[&str]) -> String {
        let a = self.install_args(extra);
        installer_ok(&a.iter().map(String::as_str).collect::<Vec<_>>())
    }
    fn install_fails(&self, extra: &[&str]) -> String {
        let a = self.install_args(extra);
        let out = installer(&a.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(!out.status.success(), "expected a failure");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
    fn uninstall(&self) -> String {
        installer_ok(&[
            "uninstall",
            "--config",
            self.config().to_str().unwrap(),
            "--restart",
            "none",
        ])
    }
    fn write_config(&self, text: &str) {
        std::fs::create_dir_all(self.config().parent().unwrap()).unwrap();
        std::fs::write(self.config(), text).unwrap();
    }
    fn read_config(&self) -> String {
        std::fs::read_to_string(self.config()).unwrap()
    }
}

fn sidecar(config: &Path, suffix: &str) -> PathBuf {
    PathBuf::from(format!("{}{suffix}", config.display()))
}

#[test]
fn version_1_config_is_refused_untouched() {
    let node = Node::new(&["wasmtime"]);
    let original =
        "# old style\nroot = \"/var/lib/containerd\"\n[plugins.cri]\n  sandbox_image = \"pause\"\n";
    node.write_config(original);
    let err = node.install_fails(&[]);
    assert!(err.contains("version 1"), "{err}");
    assert_eq!(node.read_config(), original);
    assert!(!sidecar(&node.config(), ".wasmrunner.json").exists());
    assert!(!sidecar(&node.config(), ".wasmrunner.bak").exists());
    assert!(!node.bin().join("containerd-shim-wasmtime-v1").exists());
}

#[test]
fn missing_config_is_created_for_the_given_containerd_and_deleted_on_uninstall() {
    for (version, expected, plugin) in [
        ("2.1.9", "version = 3\n", CRI_V3),
        ("1.7.24", "version = 2\n", CRI_V2),
    ] {
        let node = Node::new(&["wasmtime"]);
        let out = node.install(&["--containerd-version", version]);
        assert!(out.contains("create "), "{out}");
        let text = node.read_config();
        assert!(text.starts_with(expected), "{text}");
        let doc: DocumentMut = text.parse().unwrap();
        assert_eq!(
            runtime_type(&doc, plugin, "wasmtime").as_deref(),
            Some("io.containerd.wasmtime.v1")
        );
        assert_annotation_lists(&doc, plugin, "wasmtime", &[CAPABILITY_PATTERN]);
        assert_annotation_lists(&doc, plugin, "wasmtime-shared", &[CAPABILITY_PATTERN]);
        assert!(
            node.install(&["--containerd-version", version])
                .contains("unchanged")
        );
        let out = node.uninstall();
        assert!(out.contains("delete "), "{out}");
        assert!(!node.config().exists());
    }
}

#[test]
fn missing_config_follows_the_installed_containerd() {
    // The installer asks `containerd --version` on PATH (Debian 12: 1.6.20, so version 2).
    let on_path = Containerd {
        containerd: "containerd".into(),
        ctr: "ctr".into(),
    };
    let expected = if on_path.version().major >= 2 {
        "version = 3\n"
    } else {
        "version = 2\n"
    };
    let node = Node::new(&["wasmtime"]);
    node.install(&[]);
    let text = node.read_config();
    assert!(text.starts_with(expected), "{text}");
    on_path
        .dump(&node.config())
        .expect("the installed containerd reads the created config");
}

#[test]
fn blank_config_gets_a_version_and_is_restored() {
    let node = Node::new(&["wasmtime"]);
    let original = "# managed by hand; empty on purpose\n";
    node.write_config(original);
    node.install(&["--containerd-version", "1.6.20"]);
    let text = node.read_config();
    assert!(text.contains("version = 2"), "{text}");
    assert!(text.contains("# managed by hand"), "{text}");
    node.uninstall();
    assert_eq!(node.read_config(), original);
}

#[test]
fn dry_run_prints_a_diff_and_writes_nothing() {
    let node = Node::new(&["wasmtime"]);
    let original = "version = 2\n# my comment\n";
    node.write_config(original);
    let out = node.install(&["--dry-run"]);
    assert!(
        out.contains("(dry run) would add runtime `wasmtime`"),
        "{out}"
    );
    assert!(
        out.contains("+[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.wasmtime]"),
        "{out}"
    );
    assert!(out.contains("--- a/"), "{out}");
    for key in ["pod_annotations", "container_annotations"] {
        assert!(
            out.contains(&format!("+{key} = [\"{CAPABILITY_PATTERN}\"]\n")),
            "{out}"
        );
    }
    assert_eq!(node.read_config(), original);
    assert!(!sidecar(&node.config(), ".wasmrunner.json").exists());
    assert!(!node.bin().exists());
}

#[test]
fn user_edits_after_install_survive_uninstall() {
    let node = Node::new(&["wasmtime"]);
    let original = std::fs::read_to_string(common::fixture("kind-config.toml")).unwrap();
    node.write_config(&original);
    node.install(&[]);
    // The admin changes something else, with toml_edit, after the install.
    let mut doc: DocumentMut = node.read_config().parse().unwrap();
    doc["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["snapshotter"] =
        toml_edit::value("native");
    std::fs::write(node.config(), doc.to_string()).unwrap();
    // Reinstall: nothing to do.
    assert!(node.install(&[]).contains("unchanged"));
    let out = node.uninstall();
    assert!(out.contains("remove runtime `wasmtime`"), "{out}");
    let after = node.read_config();
    assert_eq!(
        after,
        original.replace("snapshotter = \"overlayfs\"", "snapshotter = \"native\"")
    );
    assert!(!sidecar(&node.config(), ".wasmrunner.json").exists());
}

#[test]
fn someone_elses_handler_is_kept_or_refused() {
    let node = Node::new(&["wasmtime"]);
    let same = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.wasmtime]\n  runtime_type = \"io.containerd.wasmtime.v1\"\n";
    node.write_config(same);
    let out = node.install(&[]);
    assert!(out.contains("already configured by someone else"), "{out}");
    // The user's `wasmtime` table stays, and gains the annotation lists the shim needs; the
    // shared-mode handler is added.
    let installed = node.read_config();
    assert!(
        installed.starts_with(&format!(
            "{same}  pod_annotations = [\"{CAPABILITY_PATTERN}\"]\n  container_annotations = [\"{CAPABILITY_PATTERN}\"]\n"
        )),
        "{installed}"
    );
    assert!(
        installed.contains("runtimes.wasmtime-shared]"),
        "{installed}"
    );
    let state = std::fs::read_to_string(sidecar(&node.config(), ".wasmrunner.json")).unwrap();
    assert!(state.contains("\"added_patterns\""), "{state}");
    // The entry is not ours: uninstall leaves it, without the lists the installer added.
    node.uninstall();
    assert_eq!(node.read_config(), same);
    // The same after an edit elsewhere, when uninstall removes entries instead of restoring.
    node.install(&[]);
    let edited = format!("{}# the admin's note\n", node.read_config());
    node.write_config(&edited);
    let out = node.uninstall();
    assert!(
        out.contains(&format!(
            "remove \"{CAPABILITY_PATTERN}\" from `container_annotations` of runtime `wasmtime`"
        )),
        "{out}"
    );
    let after = node.read_config();
    assert_eq!(after, format!("{same}# the admin's note\n"));

    let other = same.replace("wasmtime.v1", "runc.v2");
    node.write_config(&other);
    let err = node.install_fails(&[]);
    assert!(
        err.contains("already configured with runtime_type io.containerd.runc.v2"),
        "{err}"
    );
    assert_eq!(node.read_config(), other);
}

#[test]
fn engines_default_to_the_shims_found() {
    let node = Node::new(&["wasmtime", "wasmedge"]);
    node.write_config("version = 3\n");
    node.install(&[]);
    let doc: DocumentMut = node.read_config().parse().unwrap();
    assert!(runtime_type(&doc, CRI_V3, "wasmtime").is_some());
    assert!(runtime_type(&doc, CRI_V3, "wasmedge").is_some());
    assert!(node.bin().join("containerd-shim-wasmedge-v1").is_file());

    let node = Node::new(&["wasmtime", "wasmedge"]);
    node.write_config("version = 3\n");
    node.install(&["--engines", "wasmedge"]);
    let doc: DocumentMut = node.read_config().parse().unwrap();
    assert!(runtime_type(&doc, CRI_V3, "wasmtime").is_none());
    assert!(runtime_type(&doc, CRI_V3, "wasmedge").is_some());
    assert!(!node.bin().join("containerd-shim-wasmtime-v1").exists());
}

#[test]
fn engine_errors() {
    let node = Node::new(&["wasmtime"]);
    node.write_config("version = 2\n");
    let err = node.install_fails(&["--engines", "wamr"]);
    assert!(err.contains("unknown engine `wamr`"), "{err}");
    let err = node.install_fails(&["--engines", "wasmedge"]);
    assert!(err.contains("containerd-shim-wasmedge-v1"), "{err}");
    let empty = Node::new(&[]);
    empty.write_config("version = 2\n");
    let err = empty.install_fails(&[]);
    assert!(err.contains("no containerd-shim-<engine>-v1"), "{err}");
    assert_eq!(node.read_config(), "version = 2\n");
}

#[test]
fn replaced_foreign_shim_is_put_back() {
    let node = Node::new(&["wasmtime"]);
    node.write_config("version = 2\n");
    std::fs::create_dir_all(node.bin()).unwrap();
    let dest = node.bin().join("containerd-shim-wasmtime-v1");
    std::fs::write(&dest, "an older shim").unwrap();
    let out = node.install(&[]);
    assert!(out.contains("replace "), "{out}");
    assert_ne!(std::fs::read_to_string(&dest).unwrap(), "an older shim");
    node.uninstall();
    assert_eq!(std::fs::read_to_string(&dest).unwrap(), "an older shim");
}

/// An admin's list of their own patterns in a table the installer added keeps them; ours is
/// added once, not twice, and a second run changes nothing.
#[test]
fn user_patterns_in_our_table_stay_and_ours_is_not_repeated() {
    let node = Node::new(&["wasmtime"]);
    node.write_config("version = 3\n");
    node.install(&["--engines", "wasmtime"]);
    // The admin adds a pattern to our table, and removes ours from the other list.
    let text = node
        .read_config()
        .replacen(
            &format!("pod_annotations = [\"{CAPABILITY_PATTERN}\"]"),
            &format!("pod_annotations = [\"{CAPABILITY_PATTERN}\", \"example.com/*\"]"),
            1,
        )
        .replacen(
            &format!("container_annotations = [\"{CAPABILITY_PATTERN}\"]"),
            "container_annotations = [\"example.com/*\"]",
            1,
        );
    node.write_config(&text);
    let out = node.install(&["--engines", "wasmtime"]);
    assert!(out.contains("update runtime `wasmtime`"), "{out}");
    let doc: DocumentMut = node.read_config().parse().unwrap();
    assert_eq!(
        annotation_lists(&doc, CRI_V3, "wasmtime"),
        (
            Some(vec![CAPABILITY_PATTERN.into(), "example.com/*".into()]),
            Some(vec!["example.com/*".into(), CAPABILITY_PATTERN.into()])
        )
    );
    let merged = node.read_config();
    assert!(
        node.install(&["--engines", "wasmtime"])
            .contains("unchanged")
    );
    assert_eq!(node.read_config(), merged);
    // The table is ours: uninstall removes it whole.
    node.uninstall();
    assert_eq!(node.read_config(), "version = 3\n");
}

/// A config written by an installer without the annotation lists gets them on the next run.
#[test]
fn tables_of_an_older_install_gain_the_lists() {
    let node = Node::new(&["wasmtime"]);
    let original = "version = 2\n# mine\n";
    node.write_config(original);
    node.install(&[]);
    // What an older installer wrote: the tables without the lists, its hash in the state file.
    let old: String = node
        .read_config()
        .lines()
        .filter(|l| !l.contains("annotations"))
        .map(|l| format!("{l}\n"))
        .collect();
    node.write_config(&old);
    let state_path = sidecar(&node.config(), ".wasmrunner.json");
    let mut state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state_path).unwrap()).unwrap();
    state["written_sha256"] = wasmrunner_installer::fsutil::sha256_hex(old.as_bytes()).into();
    std::fs::write(&state_path, state.to_string()).unwrap();

    let out = node.install(&[]);
    assert!(out.contains("update runtime `wasmtime`"), "{out}");
    assert!(out.contains("update runtime `wasmtime-shared`"), "{out}");
    let doc: DocumentMut = node.read_config().parse().unwrap();
    assert_annotation_lists(&doc, CRI_V2, "wasmtime", &[CAPABILITY_PATTERN]);
    assert_annotation_lists(&doc, CRI_V2, "wasmtime-shared", &[CAPABILITY_PATTERN]);
    assert!(node.install(&[]).contains("unchanged"));
    node.uninstall();
    assert_eq!(node.read_config(), original);
}

/// An annotation key that is not a list stops the install; nothing is written.
#[test]
fn annotation_key_that_is_not_a_list_is_refused_untouched() {
    let node = Node::new(&["wasmtime"]);
    let original = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.wasmtime]\n  runtime_type = \"io.containerd.wasmtime.v1\"\n  pod_annotations = \"wasmrunner.dev/*\"\n";
    node.write_config(original);
    let err = node.install_fails(&[]);
    assert!(err.contains("`pod_annotations`"), "{err}");
    assert!(err.contains("is a string, not a list"), "{err}");
    assert_eq!(node.read_config(), original);
    assert!(!sidecar(&node.config(), ".wasmrunner.json").exists());
    assert!(!node.bin().join("containerd-shim-wasmtime-v1").exists());
}

/// `--registry` writes the registry's hosts.toml and sets the CRI registry's config_path once.
#[test]
fn registry_hosts_and_config_path() {
    let node = Node::new(&["wasmtime"]);
    node.write_config("version = 3\n");
    let certs = node.dir.path().join("certs.d");
    let certs_arg = certs.to_str().unwrap();
    let (out, hosts) = install_registry_in(&node, &certs, "127.0.0.1:5000", None);
    assert!(
        out.contains(&format!("set config_path = {certs_arg:?}")),
        "{out}"
    );
    let hosts = std::fs::read_to_string(hosts).unwrap();
    assert!(
        hosts.contains("server = \"http://127.0.0.1:5000\""),
        "{hosts}"
    );
    let config = node.read_config();
    let doc: DocumentMut = config.parse().unwrap();
    assert_eq!(
        doc["plugins"]["io.containerd.cri.v1.images"]["registry"]["config_path"].as_str(),
        Some(certs_arg),
        "{config}"
    );
    // A second registry with a CA: the config_path stays, its hosts.toml goes where asked.
    let other = node.dir.path().join("other.d");
    let (out, hosts) = install_registry_in(
        &node,
        &other,
        "reg.internal:443",
        Some("/etc/ssl/reg-ca.pem"),
    );
    assert!(
        out.contains(&format!("keep config_path = {certs_arg:?}")),
        "{out}"
    );
    let hosts = std::fs::read_to_string(hosts).unwrap();
    assert!(hosts.contains("ca = \"/etc/ssl/reg-ca.pem\""), "{hosts}");
    let err = node.install_fails(&["--registry", "a/b", "--registry-plain-http"]);
    assert!(err.contains("is not host or host:port"), "{err}");
}

fn state_text(node: &Node) -> String {
    std::fs::read_to_string(sidecar(&node.config(), ".wasmrunner.json")).unwrap()
}

/// When `edited_since`, the admin adds a note to the installed config; returns what uninstall
/// must leave: `original`, with that note if it was added.
fn edit_after_install(node: &Node, original: &str, edited_since: bool) -> String {
    let mut expected = original.to_string();
    if edited_since {
        expected.push_str("# the admin's note\n");
        let edited = format!("{}# the admin's note\n", node.read_config());
        node.write_config(&edited);
    }
    expected
}

/// `install --registry HOST ...` into `<node>/etc/containerd/certs.d`, which does not exist yet.
fn install_registry(node: &Node, host: &str, ca: Option<&str>) -> (String, PathBuf) {
    install_registry_in(
        node,
        &node.dir.path().join("etc/containerd/certs.d"),
        host,
        ca,
    )
}

/// `install --registry HOST --registry-config-path CERTS` with `--registry-ca CA`, or plain
/// HTTP without one; returns the output and where the host's hosts.toml goes.
fn install_registry_in(
    node: &Node,
    certs: &Path,
    host: &str,
    ca: Option<&str>,
) -> (String, PathBuf) {
    let mut args = vec![
        "--registry",
        host,
        "--registry-config-path",
        certs.to_str().unwrap(),
    ];
    match ca {
        Some(ca) => args.extend(["--registry-ca", ca]),
        None => args.push("--registry-plain-http"),
    }
    let out = node.install(&args);
    (out, certs.join(host).join("hosts.toml"))
}

/// install --registry then uninstall leaves the config as it was (byte for byte, also when the
/// config was edited since and uninstall removes entries instead of restoring the backup), and
/// no hosts.toml nor the directories made for it.
#[test]
fn registry_uninstall_gives_the_node_back() {
    let kind = std::fs::read_to_string(common::fixture("kind-config.toml")).unwrap();
    for (original, host, ca) in [
        ("version = 3\n", "127.0.0.1:5000", None),
        (
            kind.as_str(),
            "reg.internal:443",
            Some("/etc/ssl/reg-ca.pem"),
        ),
    ] {
        for edited_since in [false, true] {
            let node = Node::new(&["wasmtime"]);
            node.write_config(original);
            let (out, hosts) = install_registry(&node, host, ca);
            assert!(out.contains("set config_path = "), "{out}");
            let text = std::fs::read_to_string(&hosts).unwrap();
            assert!(
                text.starts_with("# Written by wasmrunner-installer.\n"),
                "{text}"
            );
            let state = state_text(&node);
            assert!(state.contains("\"registry_config_path\""), "{state}");
            assert!(state.contains("\"hosts_files\""), "{state}");
            // Installing again changes nothing and records nothing twice.
            assert!(install_registry(&node, host, ca).0.contains("unchanged"));
            assert_eq!(state_text(&node), state);
            let expected = edit_after_install(&node, original, edited_since);
            let out = node.uninstall();
            assert!(
                out.contains(&format!("remove {}", hosts.display())),
                "{out}"
            );
            if edited_since {
                assert!(out.contains("remove config_path = "), "{out}");
            }
            assert_eq!(node.read_config(), expected, "{out}");
            assert!(!hosts.exists());
            assert!(!node.dir.path().join("etc/containerd").exists(), "{out}");
            assert!(!sidecar(&node.config(), ".wasmrunner.json").exists());
        }
    }
}

/// A config_path the user set stays, whether uninstall restores or edits; one the installer set
/// and the user changed since stays too.
#[test]
fn registry_uninstall_keeps_the_users_config_path() {
    let original = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"/srv/mine.d\"\n";
    for edited_since in [false, true] {
        let node = Node::new(&["wasmtime"]);
        node.write_config(original);
        let (out, hosts) = install_registry(&node, "127.0.0.1:5000", None);
        assert!(out.contains("keep config_path = \"/srv/mine.d\""), "{out}");
        assert!(hosts.exists());
        assert!(
            !state_text(&node).contains("\"registry_config_path\""),
            "{}",
            state_text(&node)
        );
        let expected = edit_after_install(&node, original, edited_since);
        let out = node.uninstall();
        assert!(!out.contains("config_path"), "{out}");
        assert_eq!(node.read_config(), expected, "{out}");
        assert!(!hosts.exists());
    }

    let node = Node::new(&["wasmtime"]);
    node.write_config("version = 3\n");
    let (_, hosts) = install_registry(&node, "127.0.0.1:5000", None);
    let certs = hosts.parent().unwrap().parent().unwrap();
    let changed = node
        .read_config()
        .replace(certs.to_str().unwrap(), "/srv/changed.d");
    node.write_config(&changed);
    let out = node.uninstall();
    assert!(
        out.contains("keep config_path = \"/srv/changed.d\""),
        "{out}"
    );
    let doc: DocumentMut = node.read_config().parse().unwrap();
    assert_eq!(
        doc["plugins"]["io.containerd.cri.v1.images"]["registry"]["config_path"].as_str(),
        Some("/srv/changed.d")
    );
}

/// A hosts.toml edited since the install (the marker line gone) is kept, with a warning; one
/// that was there before the install is never overwritten.
#[test]
fn registry_hosts_toml_of_the_user_is_kept() {
    let node = Node::new(&["wasmtime"]);
    let original = "version = 2\n# mine\n";
    node.write_config(original);
    let (_, hosts) = install_registry(&node, "reg.internal:443", Some("/etc/ssl/ca.pem"));
    let mine = "server = \"https://reg.internal:443\"\n# tuned by hand\n";
    std::fs::write(&hosts, mine).unwrap();
    let out = node.uninstall();
    assert!(
        out.contains(&format!("warning: keep {}", hosts.display())),
        "{out}"
    );
    assert_eq!(std::fs::read_to_string(&hosts).unwrap(), mine);
    assert_eq!(node.read_config(), original);
    assert!(!sidecar(&node.config(), ".wasmrunner.json").exists());

    // Now the user's file is there before an install: refused, nothing written.
    let certs = hosts.parent().unwrap().parent().unwrap();
    let err = node.install_fails(&[
        "--registry",
        "reg.internal:443",
        "--registry-plain-http",
        "--registry-config-path",
        certs.to_str().unwrap(),
    ]);
    assert!(
        err.contains("was not written by wasmrunner-installer"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&hosts).unwrap(), mine);
    assert_eq!(node.read_config(), original);
    assert!(!sidecar(&node.config(), ".wasmrunner.json").exists());
    assert!(!node.bin().join("containerd-shim-wasmtime-v1").exists());
}
