//! k3s/rke2 config templates: install, reinstall (identical), uninstall (original bytes), and the
//! duplicate-table rule. Each installed template is rendered the way k3s would (with and without
//! k3s having detected the shims itself) and the result is read by a real containerd.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use common::{
    CAPABILITY_PATTERN, CRI_V2, CRI_V3, Containerd, annotation_lists, assert_annotation_lists,
    fake_shims, fixture, installer_ok, render_k3s_template, runtime_type, systemd_cgroup,
};
use toml_edit::DocumentMut;
use wasmrunner_installer::install::{InstallError, Options, Target, install, uninstall};
use wasmrunner_installer::{ConfigVersion, HostProbe, k3s, runtimes};

fn both_engines(probe_root: &Path) -> Options {
    let mut opts = Options::with_runtimes(&runtimes::select(&["wasmtime", "wasmedge"]).unwrap());
    // A fake node: no cgroup v2, no systemd, so `auto` gives SystemdCgroup = false.
    opts.probe = HostProbe::at_root(probe_root);
    opts
}

fn place(agent: &Path, fixture_name: &str, file_name: &str) -> (PathBuf, String) {
    let dir = k3s::template_dir(agent);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(file_name);
    let text = std::fs::read_to_string(fixture(fixture_name)).unwrap();
    std::fs::write(&path, &text).unwrap();
    (path, text)
}

fn detected(names: &[&'static str]) -> BTreeSet<&'static str> {
    names.iter().copied().collect()
}

/// A containerd that reads the given config format, if one is on this machine.
fn containerd_for(version: ConfigVersion) -> Option<Containerd> {
    match version {
        ConfigVersion::V2 => Some(Containerd::system()),
        ConfigVersion::V3 => Containerd::unpacked("sid"),
    }
}

/// Renders the template as k3s would and checks the result: valid TOML (no table defined
/// twice), the handlers present with the expected origin, and accepted by containerd.
fn check_render(template: &str, version: ConfigVersion, k3s_found: &[&'static str], ours: &[&str]) {
    for k3s_systemd in [false, true] {
        check_render_with(template, version, k3s_found, ours, k3s_systemd);
    }
}

fn check_render_with(
    template: &str,
    version: ConfigVersion,
    k3s_found: &[&'static str],
    ours: &[&str],
    k3s_systemd: bool,
) {
    let plugin = common::cri_plugin(version);
    let rendered = render_k3s_template(template, version, &detected(k3s_found), k3s_systemd);
    let doc: DocumentMut = rendered
        .parse()
        .unwrap_or_else(|e| panic!("rendered template is not valid TOML: {e}\n{rendered}"));
    for handler in ["wasmtime", "wasmedge"] {
        assert_eq!(
            runtime_type(&doc, plugin, handler),
            Some(format!("io.containerd.{handler}.v1")),
            "{handler} missing from:\n{rendered}"
        );
        // Ours carry SystemdCgroup (k3s's own value for runc); k3s's carry only BinaryName.
        let expected = ours.contains(&handler).then_some(k3s_systemd);
        assert_eq!(
            systemd_cgroup(&doc, plugin, handler),
            expected,
            "{handler}: k3s found {k3s_found:?}, k3s SystemdCgroup {k3s_systemd}:\n{rendered}"
        );
        // Ours pass the capability annotations; k3s's own table cannot be given them.
        if ours.contains(&handler) {
            assert_annotation_lists(&doc, plugin, handler, &[CAPABILITY_PATTERN]);
        } else {
            assert_eq!(
                annotation_lists(&doc, plugin, handler),
                (None, None),
                "{handler}:\n{rendered}"
            );
        }
    }
    // The shared-mode handlers are never detected by k3s: always ours, with the lists.
    for handler in ["wasmtime-shared", "wasmedge-shared"] {
        if runtime_type(&doc, plugin, handler).is_some() {
            assert_annotation_lists(&doc, plugin, handler, &[CAPABILITY_PATTERN]);
        }
    }
    if let Some(release) = containerd_for(version) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.toml");
        std::fs::write(&file, &rendered).unwrap();
        let dump: DocumentMut = release
            .dump(&file)
            .unwrap_or_else(|e| panic!("{e}\n{rendered}"))
            .parse()
            .unwrap();
        let dump_plugin = if release.version().major >= 2 {
            CRI_V3
        } else {
            CRI_V2
        };
        assert_eq!(
            runtime_type(&dump, dump_plugin, "wasmtime").as_deref(),
            Some("io.containerd.wasmtime.v1")
        );
        for handler in ours {
            assert_annotation_lists(&dump, dump_plugin, handler, &[CAPABILITY_PATTERN]);
        }
    } else {
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: no containerd for config version {} on this machine; rendered TOML checked only",
            version.number()
        );
    }
}

/// install → reinstall → render (k3s found nothing / one / both) → uninstall.
fn round_trip(fixture_name: &str, file_name: &str, version: ConfigVersion) {
    let tmp = tempfile::tempdir().unwrap();
    let agent = tmp.path().join("agent");
    let (path, original) = place(&agent, fixture_name, file_name);
    assert_eq!(k3s::choose_template(&agent), (path.clone(), version));
    let target = Target::K3sTemplate(path.clone());
    let opts = both_engines(tmp.path());

    let report = install(&target, &[], &opts).unwrap();
    assert!(report.changed);
    let installed = std::fs::read_to_string(&path).unwrap();
    // Every template line is kept as it was; the block comes after them.
    assert!(installed.starts_with(&original), "{installed}");
    let block = &installed[original.len()..];
    assert!(
        block.starts_with(&format!("\n{}", k3s::BEGIN_MARKER)),
        "{block}"
    );
    assert!(
        block.ends_with(&format!("{}\n", k3s::END_MARKER)),
        "{block}"
    );
    assert!(block.contains("{{ if not (index .ExtraRuntimes \"wasmtime\").RuntimeType }}"));
    assert!(block.contains("{{ if not (index .ExtraRuntimes \"wasmedge\").RuntimeType }}"));
    let wanted_header = format!(
        "[plugins.\"{}\".containerd.runtimes.wasmtime]",
        common::cri_plugin(version)
    );
    assert!(block.contains(&wanted_header), "{block}");

    // Reinstall: byte-identical.
    let again = install(&target, &[], &opts).unwrap();
    assert!(!again.changed);
    assert!(
        again.actions.iter().any(|a| a.starts_with("unchanged")),
        "{:?}",
        again.actions
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), installed);

    // Rendered by k3s: ours when k3s found nothing, k3s's own where it found the shim; never both.
    check_render(&installed, version, &[], &["wasmtime", "wasmedge"]);
    check_render(&installed, version, &["wasmtime"], &["wasmedge"]);
    check_render(&installed, version, &["wasmtime", "wasmedge"], &[]);

    // Uninstall: the original bytes.
    let report = uninstall(&target, false).unwrap();
    assert!(report.changed);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), original);
    assert!(!wasmrunner_installer::state::state_path(&path).exists());
    assert!(!wasmrunner_installer::state::backup_path(&path).exists());
}

#[test]
fn base_only_template_round_trip() {
    round_trip(
        "k3s-base-only.toml.tmpl",
        k3s::TEMPLATE_V2,
        ConfigVersion::V2,
    );
}

#[test]
fn base_with_user_runtime_and_comments_round_trip() {
    round_trip(
        "k3s-base-with-runtime.toml.tmpl",
        k3s::TEMPLATE_V2,
        ConfigVersion::V2,
    );
}

#[test]
fn v3_template_round_trip() {
    round_trip("k3s-v3-base.toml.tmpl", k3s::TEMPLATE_V3, ConfigVersion::V3);
}

/// The check above can fail: without the guards, a template whose handler k3s also detected
/// renders a table twice, which TOML and containerd reject.
#[test]
fn unguarded_block_would_define_a_table_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let agent = tmp.path().join("agent");
    let (path, _) = place(&agent, "k3s-base-only.toml.tmpl", k3s::TEMPLATE_V2);
    install(
        &Target::K3sTemplate(path.clone()),
        &[],
        &both_engines(tmp.path()),
    )
    .unwrap();
    let installed = std::fs::read_to_string(&path).unwrap();
    // Make every guard look at a name k3s never detects: the tables are always rendered.
    let unguarded = installed.replace("(index .ExtraRuntimes \"", "(index .ExtraRuntimes \"never-");
    assert_ne!(unguarded, installed);
    let rendered = render_k3s_template(
        &unguarded,
        ConfigVersion::V2,
        &detected(&["wasmtime"]),
        false,
    );
    assert!(rendered.parse::<DocumentMut>().is_err(), "{rendered}");
    let file = tmp.path().join("dup.toml");
    std::fs::write(&file, &rendered).unwrap();
    assert!(Containerd::system().dump(&file).is_err());
}

/// A handler the template defines itself is not added again.
#[test]
fn user_defined_handler_is_not_duplicated() {
    let tmp = tempfile::tempdir().unwrap();
    let agent = tmp.path().join("agent");
    let (path, original) = place(&agent, "k3s-user-wasmtime.toml.tmpl", k3s::TEMPLATE_V2);
    let target = Target::K3sTemplate(path.clone());
    let report = install(&target, &[], &both_engines(tmp.path())).unwrap();
    assert!(
        report
            .actions
            .iter()
            .any(|a| a.contains("keep runtime `wasmtime`") && a.contains("defines it itself")),
        "{:?}",
        report.actions
    );
    // The template's own table lists no annotations, and the installer does not edit the
    // template's lines: it says so.
    assert!(
        report.actions.iter().any(|a| a.starts_with("note: runtime `wasmtime` at line 4")
            && a.contains(&format!(
                "does not list \"{CAPABILITY_PATTERN}\" in pod_annotations and container_annotations"
            ))),
        "{:?}",
        report.actions
    );
    let installed = std::fs::read_to_string(&path).unwrap();
    let block = &installed[original.len()..];
    assert!(!block.contains("runtimes.wasmtime]"), "{block}");
    assert!(block.contains("runtimes.wasmtime-shared]"), "{block}");
    assert!(block.contains("runtimes.wasmedge]"), "{block}");
    // Rendered: one wasmtime table (the user's), wasmedge from our block.
    let rendered = render_k3s_template(&installed, ConfigVersion::V2, &detected(&[]), false);
    let doc: DocumentMut = rendered.parse().expect("no duplicate table");
    assert_eq!(
        runtime_type(&doc, CRI_V2, "wasmtime").as_deref(),
        Some("io.containerd.wasmtime.v1")
    );
    assert_eq!(systemd_cgroup(&doc, CRI_V2, "wasmedge"), Some(false));
    assert_annotation_lists(&doc, CRI_V2, "wasmedge", &[CAPABILITY_PATTERN]);
    assert_eq!(annotation_lists(&doc, CRI_V2, "wasmtime"), (None, None));
    // Reinstall identical, uninstall restores.
    assert!(
        !install(&target, &[], &both_engines(tmp.path()))
            .unwrap()
            .changed
    );
    uninstall(&target, false).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), original);
}

/// A handler of ours that the template points at another runtime is refused, untouched.
#[test]
fn conflicting_user_handler_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = k3s::template_dir(tmp.path());
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(k3s::TEMPLATE_V2);
    let original = "{{ template \"base\" . }}\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.wasmtime]\n  runtime_type = \"io.containerd.runc.v2\"\n";
    std::fs::write(&path, original).unwrap();
    let err = install(
        &Target::K3sTemplate(path.clone()),
        &[],
        &both_engines(tmp.path()),
    )
    .unwrap_err();
    assert!(matches!(err, InstallError::Conflict { .. }), "{err}");
    assert!(err.to_string().contains("io.containerd.runc.v2"), "{err}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), original);
    assert!(!wasmrunner_installer::state::state_path(&path).exists());
}

/// Edits made after the install stay; only the block goes.
#[test]
fn user_edits_after_install_survive_uninstall() {
    let tmp = tempfile::tempdir().unwrap();
    let agent = tmp.path().join("agent");
    let (path, original) = place(&agent, "k3s-base-with-runtime.toml.tmpl", k3s::TEMPLATE_V2);
    let target = Target::K3sTemplate(path.clone());
    install(&target, &[], &both_engines(tmp.path())).unwrap();
    let mut text = std::fs::read_to_string(&path).unwrap();
    let extra = "\n# added later by the admin\n[plugins.'io.containerd.grpc.v1.cri'.containerd.runtimes.kata]\n  runtime_type = \"io.containerd.kata.v2\"\n";
    text.push_str(extra);
    std::fs::write(&path, &text).unwrap();

    // Reinstalling keeps the admin's lines and changes nothing.
    let again = install(&target, &[], &both_engines(tmp.path())).unwrap();
    assert!(!again.changed, "{:?}", again.actions);

    uninstall(&target, false).unwrap();
    let after = std::fs::read_to_string(&path).unwrap();
    assert!(!after.contains(k3s::BEGIN_MARKER), "{after}");
    assert!(after.contains("runtimes.kata]"), "{after}");
    assert_eq!(after, format!("{original}{extra}"));
}

/// The CLI: `--k3s` creates the template extending the base when there is none, `uninstall`
/// deletes it again; with a `config-v3.toml.tmpl` present, that one is edited.
#[test]
fn cli_creates_and_removes_the_template() {
    let tmp = tempfile::tempdir().unwrap();
    let agent = tmp.path().join("agent");
    let shims = fake_shims(tmp.path(), &["wasmtime"]);
    let bin = tmp.path().join("bin");
    let args = |cmd: &'static str| -> Vec<String> {
        let mut v = vec![
            cmd.to_string(),
            "--k3s".into(),
            "--k3s-agent-dir".into(),
            agent.display().to_string(),
            "--restart".into(),
            "none".into(),
        ];
        if cmd == "install" {
            v.extend([
                "--shims".into(),
                shims.display().to_string(),
                "--bin-dir".into(),
                bin.display().to_string(),
            ]);
        }
        v
    };
    let run = |cmd| {
        let a = args(cmd);
        installer_ok(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let out = run("install");
    let path = k3s::template_dir(&agent).join(k3s::TEMPLATE_V2);
    assert!(out.contains("create "), "{out}");
    assert!(out.contains("k3s/rke2 must be restarted"), "{out}");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.starts_with("{{ template \"base\" . }}\n\n# BEGIN wasmrunner-installer"),
        "{text}"
    );
    assert!(
        !text.contains("wasmedge"),
        "only the shims found are registered: {text}"
    );
    assert!(bin.join("containerd-shim-wasmtime-v1").is_file());
    check_render(&text, ConfigVersion::V2, &["wasmedge"], &["wasmtime"]);
    let out = run("install");
    assert!(out.contains("unchanged"), "{out}");
    let out = run("uninstall");
    assert!(out.contains("delete "), "{out}");
    assert!(!path.exists());
    assert!(!bin.join("containerd-shim-wasmtime-v1").exists());

    // config-v3.toml.tmpl wins when present.
    let (v3, original) = place(&agent, "k3s-v3-base.toml.tmpl", k3s::TEMPLATE_V3);
    run("install");
    assert!(!path.exists());
    let text = std::fs::read_to_string(&v3).unwrap();
    assert!(
        text.contains("[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.wasmtime]"),
        "{text}"
    );
    run("uninstall");
    assert_eq!(std::fs::read_to_string(&v3).unwrap(), original);
}

/// A handler the template defines with the capability pattern already listed gets no note.
#[test]
fn user_defined_handler_listing_the_pattern_gets_no_note() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = k3s::template_dir(tmp.path());
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(k3s::TEMPLATE_V2);
    let original = format!(
        "{{{{ template \"base\" . }}}}\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.wasmtime]\n  runtime_type = \"io.containerd.wasmtime.v1\"\n  pod_annotations = [\n    \"example.com/*\",\n    \"{CAPABILITY_PATTERN}\",\n  ]\n  container_annotations = [\"{CAPABILITY_PATTERN}\"]\n"
    );
    std::fs::write(&path, &original).unwrap();
    let target = Target::K3sTemplate(path.clone());
    let report = install(&target, &[], &both_engines(tmp.path())).unwrap();
    assert!(
        !report.actions.iter().any(|a| a.starts_with("note:")),
        "{:?}",
        report.actions
    );
    let installed = std::fs::read_to_string(&path).unwrap();
    assert!(installed.starts_with(&original), "{installed}");
    let rendered = render_k3s_template(&installed, ConfigVersion::V2, &detected(&[]), true);
    let doc: DocumentMut = rendered.parse().expect("no duplicate table");
    assert_eq!(
        annotation_lists(&doc, CRI_V2, "wasmtime"),
        (
            Some(vec!["example.com/*".into(), CAPABILITY_PATTERN.into()]),
            Some(vec![CAPABILITY_PATTERN.into()])
        )
    );
    assert_annotation_lists(&doc, CRI_V2, "wasmedge", &[CAPABILITY_PATTERN]);
    uninstall(&target, false).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), original);
}
