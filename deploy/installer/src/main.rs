//! `wasmrunner-installer install|uninstall`: see deploy/installer/README.md.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};

use wasmrunner_installer::binaries;
use wasmrunner_installer::diff;
use wasmrunner_installer::install::{
    HostsFile, Options, Report, ShimCopy, Target, install, uninstall,
};
use wasmrunner_installer::k3s;
use wasmrunner_installer::registry_hosts::RegistryHost;
use wasmrunner_installer::restart::{self, RestartMode, RestartPlan, Service};
use wasmrunner_installer::runtimes;
use wasmrunner_installer::{ContainerdVersion, HostProbe, SystemdCgroupMode};

const DEFAULT_CONFIG: &str = "/etc/containerd/config.toml";
const DEFAULT_BIN_DIR: &str = "/usr/local/bin";

#[derive(Parser)]
#[command(
    name = "wasmrunner-installer",
    version,
    about = "Installs wasmrunner's containerd shims on a node and registers them in containerd's config"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Copy the shims and add one runtime handler per engine to containerd's config.
    Install(InstallArgs),
    /// Remove exactly what `install` added.
    Uninstall(CommonArgs),
}

#[derive(Args)]
struct CommonArgs {
    /// containerd config file to edit.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_CONFIG)]
    config: PathBuf,
    /// Edit k3s's/rke2's containerd config template instead of a config file.
    #[arg(long, conflicts_with = "kind")]
    k3s: bool,
    /// The k3s/rke2 agent directory (rke2: /var/lib/rancher/rke2/agent).
    #[arg(long, value_name = "DIR", default_value = k3s::DEFAULT_K3S_AGENT_DIR, requires = "k3s")]
    k3s_agent_dir: PathBuf,
    /// Preset for a kind node: /etc/containerd/config.toml, restart with `systemctl restart containerd`.
    #[arg(long)]
    kind: bool,
    /// Where the node's file system is mounted (a DaemonSet mounts host paths under /host);
    /// prefixes --config, --bin-dir and --k3s-agent-dir.
    #[arg(long, value_name = "DIR", default_value = "/")]
    host_root: PathBuf,
    /// Restart after a change: auto (the systemd unit when PID 1 is systemd), none, or a shell command.
    #[arg(long, value_name = "auto|none|COMMAND", default_value = "auto")]
    restart: RestartMode,
    /// Print what would change (and a diff) without writing anything.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Args)]
struct InstallArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Directory holding containerd-shim-<engine>-v1 binaries [default: the installer's own directory].
    #[arg(long, value_name = "DIR")]
    shims: Option<PathBuf>,
    /// Node directory the shims are copied to (must be on containerd's PATH).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_BIN_DIR)]
    bin_dir: PathBuf,
    /// Engines to register, comma-separated [default: every engine whose shim is in --shims].
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    engines: Vec<String>,
    /// SystemdCgroup for the new runtimes: auto copies runc's, else true on cgroup v2 with systemd.
    #[arg(long, value_name = "auto|true|false", default_value = "auto")]
    systemd_cgroup: SystemdCgroupMode,
    /// containerd release a missing config is created for [default: `containerd --version`].
    #[arg(long, value_name = "VERSION")]
    containerd_version: Option<ContainerdVersion>,
    /// A registry (host or host:port) to write containerd's hosts.toml for, so that pods pull
    /// from it over plain HTTP (--registry-plain-http) or with a private CA (--registry-ca).
    /// Also sets the CRI plugin's registry config_path, unless the config sets one.
    #[arg(long, value_name = "HOST[:PORT]", conflicts_with = "k3s")]
    registry: Option<String>,
    /// The registry speaks plain HTTP.
    #[arg(long, requires = "registry", conflicts_with = "registry_ca")]
    registry_plain_http: bool,
    /// The CA (PEM) that signed the registry's certificate, as a path on the node.
    #[arg(long, value_name = "PEM", requires = "registry")]
    registry_ca: Option<PathBuf>,
    /// containerd's registry host configuration directory (its config_path).
    #[arg(long, value_name = "DIR", default_value = wasmrunner_installer::registry_hosts::DEFAULT_CONFIG_PATH)]
    registry_config_path: PathBuf,
}

/// `host_root` + an absolute node path; a relative path is taken from the current directory.
/// The result is absolute, so the state file records paths that work from anywhere.
fn on_host(host_root: &Path, path: &Path) -> PathBuf {
    let joined = match path.strip_prefix("/") {
        Ok(rel) => host_root.join(rel),
        Err(_) => path.to_path_buf(),
    };
    std::path::absolute(&joined).unwrap_or(joined)
}

fn probe_for(common: &CommonArgs) -> HostProbe {
    let mut probe = HostProbe::default();
    probe.run_systemd_system = on_host(&common.host_root, &probe.run_systemd_system);
    probe
}

fn target_of(common: &CommonArgs) -> (Target, Service) {
    if common.k3s {
        let agent_dir = on_host(&common.host_root, &common.k3s_agent_dir);
        let (path, _) = k3s::choose_template(&agent_dir);
        (Target::K3sTemplate(path), Service::K3s)
    } else {
        let config = if common.kind {
            Path::new(DEFAULT_CONFIG)
        } else {
            common.config.as_path()
        };
        let service = if common.kind {
            Service::Kind
        } else {
            Service::Containerd
        };
        (Target::Config(on_host(&common.host_root, config)), service)
    }
}

fn print_report(report: &Report, dry_run: bool) {
    for line in &report.actions {
        println!("{line}");
    }
    if dry_run {
        let d = diff::unified(
            &report.target.display().to_string(),
            report.before.as_deref(),
            report.after.as_deref(),
        );
        if !d.is_empty() {
            print!("{d}");
        }
    }
}

fn restart_after(common: &CommonArgs, service: Service, report: &Report) -> Result<()> {
    if !report.changed {
        println!("no restart needed: the config did not change");
        return Ok(());
    }
    let probe = probe_for(common);
    let plan = restart::plan(&common.restart, service, &probe, &|unit| {
        restart::unit_is_active(&probe, unit)
    });
    let what = match service {
        Service::K3s => "k3s/rke2",
        Service::Containerd | Service::Kind => "containerd",
    };
    match &plan {
        RestartPlan::Nothing => {
            println!("{what} must be restarted to load the change (skipped: --restart none)");
        }
        RestartPlan::Manual { hint } => println!("{what} must be restarted: {hint}"),
        RestartPlan::Systemd { .. } | RestartPlan::Command(_) if common.dry_run => {
            let line = restart::command_of(&plan, &probe)
                .map(|c| wasmrunner_installer::host::describe(&c))
                .unwrap_or_default();
            println!("(dry run) would restart {what}: {line}");
        }
        RestartPlan::Systemd { .. } | RestartPlan::Command(_) => {
            let ran =
                restart::execute(&plan, &probe).with_context(|| format!("restarting {what}"))?;
            if let Some(line) = ran {
                println!("restart {what}: {line}");
            }
        }
    }
    Ok(())
}

fn run_install(args: &InstallArgs) -> Result<()> {
    let common = &args.common;
    let shims_dir = match &args.shims {
        Some(dir) => dir.clone(),
        None => std::env::current_exe()
            .context("finding the installer's own directory (pass --shims)")?
            .parent()
            .map(Path::to_path_buf)
            .context("the installer's path has no parent directory (pass --shims)")?,
    };
    let found = binaries::find_shims(&shims_dir)
        .with_context(|| format!("looking for shims in {}", shims_dir.display()))?;
    let known = runtimes::known_engines();
    for shim in &found {
        if !known.contains(&shim.engine.as_str()) {
            println!(
                "ignore {}: no runtime handler for engine `{}`",
                shim.path.display(),
                shim.engine
            );
        }
    }
    let engines: Vec<String> = if args.engines.is_empty() {
        let engines: Vec<String> = found
            .iter()
            .filter(|s| known.contains(&s.engine.as_str()))
            .map(|s| s.engine.clone())
            .collect();
        if engines.is_empty() {
            bail!(
                "no containerd-shim-<engine>-v1 binary for a known engine ({}) in {}; pass --shims",
                known.join(", "),
                shims_dir.display()
            );
        }
        engines
    } else {
        args.engines.clone()
    };
    let selected = runtimes::select(&engines)?;

    let bin_dir = on_host(&common.host_root, &args.bin_dir);
    let mut copies = Vec::new();
    for spec in &selected {
        let name = spec.shim_binary();
        // A mode's binary may be missing from the shims dir: it is the engine's binary
        // under another name, so that one is copied under this name.
        let engine_binary = format!("containerd-shim-{}-v1", spec.engine);
        let src = [shims_dir.join(&name), shims_dir.join(&engine_binary)]
            .into_iter()
            .find(|path| path.is_file());
        let Some(src) = src else {
            bail!(
                "engine `{}` needs {name} (or {engine_binary}), which is not in {}",
                spec.engine,
                shims_dir.display()
            );
        };
        let dest = bin_dir.join(&name);
        if !copies.iter().any(|c: &ShimCopy| c.dest == dest) {
            copies.push(ShimCopy { src, dest });
        }
    }

    let (target, service) = target_of(common);
    let opts = Options {
        runtimes: selected,
        systemd_cgroup: args.systemd_cgroup,
        containerd_version: args.containerd_version,
        containerd_binary: "containerd".into(),
        probe: probe_for(common),
        dry_run: common.dry_run,
        registry_config_path: args
            .registry
            .as_ref()
            .map(|_| args.registry_config_path.clone()),
        registry_hosts: args
            .registry
            .iter()
            .map(|host| HostsFile {
                registry: RegistryHost {
                    host: host.clone(),
                    plain_http: args.registry_plain_http,
                    ca_file: args.registry_ca.clone(),
                },
                dir: on_host(&common.host_root, &args.registry_config_path),
            })
            .collect(),
    };
    let report = install(&target, &copies, &opts)
        .with_context(|| format!("installing into {}", target.path().display()))?;
    print_report(&report, common.dry_run);
    restart_after(common, service, &report)
}

fn run_uninstall(common: &CommonArgs) -> Result<()> {
    let (target, service) = target_of(common);
    let report = uninstall(&target, common.dry_run)
        .with_context(|| format!("uninstalling from {}", target.path().display()))?;
    print_report(&report, common.dry_run);
    restart_after(common, service, &report)
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match &cli.command {
        Command::Install(args) => run_install(args),
        Command::Uninstall(common) => run_uninstall(common),
    }
}
