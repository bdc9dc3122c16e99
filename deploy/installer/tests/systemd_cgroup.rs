//! `SystemdCgroup` detection: the new runtimes follow the cgroup driver of the config's runc
//! runtime, else the node's facts (cgroup v2 + systemd as PID 1), unless told otherwise.

mod common;

use std::path::Path;

use common::{CRI_V2, CRI_V3, Containerd, fake_shims, fixture, installer_ok, systemd_cgroup};
use toml_edit::DocumentMut;
use wasmrunner_installer::install::{Options, install_into_config};
use wasmrunner_installer::{HostProbe, SystemdCgroupMode, runtimes};

fn opts(probe_root: &Path, mode: SystemdCgroupMode) -> Options {
    let mut opts = Options::with_runtimes(&runtimes::select(&["wasmtime"]).unwrap());
    opts.probe = HostProbe::at_root(probe_root);
    opts.systemd_cgroup = mode;
    opts
}

/// A fake node root with a cgroup v2 hierarchy and systemd as PID 1.
fn systemd_cgroup2_node(root: &Path) {
    std::fs::create_dir_all(root.join("sys/fs/cgroup")).unwrap();
    std::fs::write(
        root.join("sys/fs/cgroup/cgroup.controllers"),
        "cpu io memory pids\n",
    )
    .unwrap();
    std::fs::create_dir_all(root.join("proc/1")).unwrap();
    std::fs::write(root.join("proc/1/comm"), "systemd\n").unwrap();
}

fn installed(path: &Path) -> DocumentMut {
    std::fs::read_to_string(path).unwrap().parse().unwrap()
}

#[test]
fn copies_runc_systemd_cgroup_true() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("config.toml");
    std::fs::copy(fixture("kind-config.toml"), &config).unwrap();
    // The fake node says "no cgroup v2, no systemd": runc's option must win anyway.
    install_into_config(&config, &opts(tmp.path(), SystemdCgroupMode::Auto)).unwrap();
    assert_eq!(
        systemd_cgroup(&installed(&config), CRI_V2, "wasmtime"),
        Some(true)
    );
    let dump: DocumentMut = Containerd::system().dump(&config).unwrap().parse().unwrap();
    assert_eq!(systemd_cgroup(&dump, CRI_V2, "wasmtime"), Some(true));
}

#[test]
fn copies_runc_systemd_cgroup_in_version_3() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("config.toml");
    std::fs::write(
        &config,
        "version = 3\n\n[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]\n  runtime_type = 'io.containerd.runc.v2'\n\n  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]\n    SystemdCgroup = true\n",
    )
    .unwrap();
    install_into_config(&config, &opts(tmp.path(), SystemdCgroupMode::Auto)).unwrap();
    assert_eq!(
        systemd_cgroup(&installed(&config), CRI_V3, "wasmtime"),
        Some(true)
    );
}

#[test]
fn explicit_value_overrides_runc() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("config.toml");
    std::fs::copy(fixture("kind-config.toml"), &config).unwrap();
    install_into_config(&config, &opts(tmp.path(), SystemdCgroupMode::False)).unwrap();
    assert_eq!(
        systemd_cgroup(&installed(&config), CRI_V2, "wasmtime"),
        Some(false)
    );
    // Changing the choice later updates the entry in place.
    let report = install_into_config(&config, &opts(tmp.path(), SystemdCgroupMode::True)).unwrap();
    assert!(
        report.actions.iter().any(|a| a.starts_with("update ")),
        "{:?}",
        report.actions
    );
    assert_eq!(
        systemd_cgroup(&installed(&config), CRI_V2, "wasmtime"),
        Some(true)
    );
}

#[test]
fn without_runc_uses_cgroup2_and_systemd() {
    let plain = "version = 2\n";
    // cgroup v2 + systemd → true.
    let node = tempfile::tempdir().unwrap();
    systemd_cgroup2_node(node.path());
    let config = node.path().join("config.toml");
    std::fs::write(&config, plain).unwrap();
    install_into_config(&config, &opts(node.path(), SystemdCgroupMode::Auto)).unwrap();
    assert_eq!(
        systemd_cgroup(&installed(&config), CRI_V2, "wasmtime"),
        Some(true)
    );

    // cgroup v2 without systemd → false.
    let node = tempfile::tempdir().unwrap();
    systemd_cgroup2_node(node.path());
    std::fs::write(node.path().join("proc/1/comm"), "tini\n").unwrap();
    let config = node.path().join("config.toml");
    std::fs::write(&config, plain).unwrap();
    install_into_config(&config, &opts(node.path(), SystemdCgroupMode::Auto)).unwrap();
    assert_eq!(
        systemd_cgroup(&installed(&config), CRI_V2, "wasmtime"),
        Some(false)
    );
}

/// The kind preset through the CLI, with the node's file system under --host-root: config
/// /etc/containerd/config.toml, shims to /usr/local/bin, SystemdCgroup from runc, and the restart
/// command run only when the config changed.
#[test]
fn kind_preset_on_a_node_root() {
    let node = tempfile::tempdir().unwrap();
    let root = node.path().join("node");
    let config = root.join("etc/containerd/config.toml");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    std::fs::copy(fixture("kind-config.toml"), &config).unwrap();
    let original = std::fs::read_to_string(&config).unwrap();
    let shims = fake_shims(node.path(), &["wasmtime"]);
    let marker = node.path().join("restarted");
    let restart = format!("echo restarted >> {}", marker.display());
    let args = |cmd: &str| -> Vec<String> {
        let mut v = vec![
            cmd.to_string(),
            "--kind".into(),
            "--host-root".into(),
            root.display().to_string(),
            "--restart".into(),
            restart.clone(),
        ];
        if cmd == "install" {
            v.extend(["--shims".into(), shims.display().to_string()]);
        }
        v
    };
    let run = |cmd: &str| {
        let a = args(cmd);
        installer_ok(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };

    let out = run("install");
    assert!(
        out.contains("copied from the runc runtime's options"),
        "{out}"
    );
    assert!(
        out.contains("restart containerd: sh -c echo restarted"),
        "{out}"
    );
    assert!(
        root.join("usr/local/bin/containerd-shim-wasmtime-v1")
            .is_file()
    );
    assert_eq!(
        systemd_cgroup(&installed(&config), CRI_V2, "wasmtime"),
        Some(true)
    );
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "restarted\n");

    let out = run("install");
    assert!(out.contains("no restart needed"), "{out}");
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "restarted\n");

    run("uninstall");
    assert_eq!(std::fs::read_to_string(&config).unwrap(), original);
    assert!(
        !root
            .join("usr/local/bin/containerd-shim-wasmtime-v1")
            .exists()
    );
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap(),
        "restarted\nrestarted\n"
    );
}
