//! The install and uninstall flows: plan the edit of the target file, copy the shims, write the
//! file and its backup, record what was done in the state file; and undo exactly that.

use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::binaries::{self, BinaryError, CopyOutcome, RemoveOutcome};
use crate::cgroup::{self, SystemdCgroupMode};
use crate::config::{
    self, ConfigError, ConfigVersion, ContainerdVersion, Existing, RuntimeEntry, Upsert,
};
use crate::fsutil::{FsError, atomic_write, read_optional, remove_optional, sha256_hex};
use crate::host::{self, HostError, HostProbe};
use crate::k3s::{self, K3sError};
use crate::registry_hosts::{
    self, ConfigPathOutcome, ConfigPathRemoval, RegistryHost, RegistryHostError, RemoveHostsOutcome,
};
use crate::runtimes::{RUNTIMES, RuntimeSpec};
use crate::state::{self, AddedRuntime, State, StateError, TargetKind};

/// The file the installer edits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// containerd's `config.toml`.
    Config(PathBuf),
    /// A k3s/rke2 `config.toml.tmpl` or `config-v3.toml.tmpl`.
    K3sTemplate(PathBuf),
}

impl Target {
    pub fn path(&self) -> &Path {
        match self {
            Self::Config(p) | Self::K3sTemplate(p) => p,
        }
    }

    fn kind(&self) -> TargetKind {
        match self {
            Self::Config(_) => TargetKind::Config,
            Self::K3sTemplate(_) => TargetKind::K3sTemplate,
        }
    }
}

/// One shim to copy onto the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShimCopy {
    pub src: PathBuf,
    pub dest: PathBuf,
}

/// How to install.
#[derive(Debug, Clone)]
pub struct Options {
    /// The handlers to register (see [`crate::runtimes`]).
    pub runtimes: Vec<RuntimeSpec>,
    pub systemd_cgroup: SystemdCgroupMode,
    /// The containerd release a missing (or blank) config is created for; `None` asks
    /// `<containerd_binary> --version` on the host.
    pub containerd_version: Option<ContainerdVersion>,
    pub containerd_binary: String,
    /// Where to look at the node (cgroup layout, PID 1).
    pub probe: HostProbe,
    /// Compute and report, write nothing.
    pub dry_run: bool,
    /// Set the CRI plugin's registry `config_path` to this directory, unless the config sets
    /// one already (see [`crate::registry_hosts`]); `None` leaves the registry table alone.
    pub registry_config_path: Option<PathBuf>,
    /// `hosts.toml` files to write (and record, for `uninstall`).
    pub registry_hosts: Vec<HostsFile>,
}

/// One registry's `hosts.toml`, to write into `dir/<host>/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostsFile {
    pub registry: RegistryHost,
    /// The host configuration directory as this process sees it (under `--host-root`).
    pub dir: PathBuf,
}

impl Default for Options {
    /// Every known handler, `SystemdCgroup` auto-detected, the host's containerd.
    fn default() -> Self {
        Self {
            runtimes: RUNTIMES.to_vec(),
            systemd_cgroup: SystemdCgroupMode::Auto,
            containerd_version: None,
            containerd_binary: "containerd".into(),
            probe: HostProbe::default(),
            dry_run: false,
            registry_config_path: None,
            registry_hosts: Vec::new(),
        }
    }
}

impl Options {
    /// Options for the given handlers, everything else default.
    pub fn with_runtimes(runtimes: &[RuntimeSpec]) -> Self {
        Self {
            runtimes: runtimes.to_vec(),
            ..Self::default()
        }
    }
}

/// What a run did: one line per action, and the file before and after.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub target: PathBuf,
    pub actions: Vec<String>,
    /// The target file changed (or would, in a dry run): containerd needs a restart.
    pub changed: bool,
    /// The target's text before and after (`None` for a missing file).
    pub before: Option<String>,
    pub after: Option<String>,
}

#[derive(Debug, Error)]
pub enum InstallError {
    #[error("{path}: {source}")]
    Config { path: PathBuf, source: ConfigError },
    #[error("{path}: {source}")]
    Template { path: PathBuf, source: K3sError },
    #[error("{0} is not UTF-8 text")]
    NotUtf8(PathBuf),
    #[error(
        "{path}: runtime handler `{handler}` is already configured with runtime_type {found} by \
         someone else; remove that entry or leave this engine out"
    )]
    Conflict {
        path: PathBuf,
        handler: String,
        found: String,
    },
    #[error(
        "cannot tell which config format to create {path} in ({source}); pass --containerd-version"
    )]
    UnknownContainerd {
        path: PathBuf,
        source: Box<HostError>,
    },
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Binary(#[from] BinaryError),
    #[error(transparent)]
    Registry(#[from] RegistryHostError),
}

fn config_err(path: &Path) -> impl FnOnce(ConfigError) -> InstallError + '_ {
    move |source| InstallError::Config {
        path: path.to_path_buf(),
        source,
    }
}

fn as_text(path: &Path, bytes: &[u8]) -> Result<String, InstallError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| InstallError::NotUtf8(path.to_path_buf()))
}

/// The result of planning an edit: the new text and the updated state.
struct Plan {
    text: String,
    state: State,
    actions: Vec<String>,
}

fn new_file_version(path: &Path, opts: &Options) -> Result<ConfigVersion, InstallError> {
    let version =
        match opts.containerd_version {
            Some(v) => v,
            None => host::containerd_version(&opts.probe, &opts.containerd_binary).map_err(
                |source| InstallError::UnknownContainerd {
                    path: path.to_path_buf(),
                    source: Box::new(source),
                },
            )?,
        };
    Ok(ConfigVersion::for_containerd(version))
}

fn plan_config(
    path: &Path,
    current: Option<&str>,
    mut state: State,
    opts: &Options,
) -> Result<Plan, InstallError> {
    let mut actions = Vec::new();
    let (mut doc, version) = match current {
        None => {
            let version = new_file_version(path, opts)?;
            actions.push(format!(
                "create {} (config version {})",
                path.display(),
                version.number()
            ));
            let doc = config::parse(&config::minimal_config(version)).map_err(config_err(path))?;
            (doc, version)
        }
        Some(text) => {
            let mut doc = config::parse(text).map_err(config_err(path))?;
            if config::is_blank(&doc) {
                let version = new_file_version(path, opts)?;
                config::set_version(&mut doc, version);
                state.added_version_key = true;
                actions.push(format!(
                    "set `version = {}` in blank {}",
                    version.number(),
                    path.display()
                ));
                (doc, version)
            } else {
                let version = config::detect_version(&doc).map_err(config_err(path))?;
                (doc, version)
            }
        }
    };
    state.config_version = version;

    let runc = config::runc_systemd_cgroup(&doc, version);
    let (systemd, reason) = cgroup::decide(opts.systemd_cgroup, runc, &opts.probe);

    for spec in &opts.runtimes {
        let entry = RuntimeEntry::new(spec.handler, spec.runtime_type, systemd);
        let table = config::dotted(&version.runtime_table_path(spec.handler));
        let owned = state.runtime(spec.handler).is_some();
        match (config::inspect_runtime(&doc, version, spec.handler), owned) {
            (Existing::Present { runtime_type, .. }, false) => {
                if runtime_type.as_deref() == Some(spec.runtime_type) {
                    actions.push(format!(
                        "keep runtime `{}` in {}: already configured by someone else ({table})",
                        spec.handler,
                        path.display()
                    ));
                    // The shim needs the capability annotations whoever wrote the table: add
                    // the patterns it lacks, keep the ones it lists.
                    let added = config::merge_annotation_patterns(
                        &mut doc,
                        version,
                        spec.handler,
                        &entry.annotation_patterns,
                    )
                    .map_err(config_err(path))?;
                    for a in added {
                        actions.push(format!(
                            "add {} to `{}` of runtime `{}` in {} (the patterns it listed stay)",
                            quoted(&a.patterns),
                            a.key,
                            spec.handler,
                            path.display()
                        ));
                        state.record_patterns(spec.handler, &a.key, &a.patterns, a.created_key);
                    }
                    continue;
                }
                return Err(InstallError::Conflict {
                    path: path.to_path_buf(),
                    handler: spec.handler.to_string(),
                    found: runtime_type.unwrap_or_else(|| "(none)".into()),
                });
            }
            (_, _) => {
                let outcome =
                    config::upsert_runtime(&mut doc, version, &entry).map_err(config_err(path))?;
                let what = format!(
                    "runtime `{}` (runtime_type = \"{}\", SystemdCgroup = {systemd}: {reason}; \
                     {} in {}) at [{table}]",
                    spec.handler,
                    spec.runtime_type,
                    quoted(&entry.annotation_patterns),
                    config::ANNOTATION_KEYS.join(" and "),
                );
                match outcome {
                    Upsert::Added { created_tables } => {
                        for t in created_tables {
                            if !state.created_tables.contains(&t) {
                                state.created_tables.push(t);
                            }
                        }
                        actions.push(format!("add {what} to {}", path.display()));
                    }
                    Upsert::Updated => actions.push(format!("update {what} in {}", path.display())),
                    Upsert::Unchanged => {
                        actions.push(format!("keep {what} in {}: already there", path.display()))
                    }
                }
                record_runtime(&mut state, &entry, Some(systemd));
            }
        }
    }
    if let Some(dir) = &opts.registry_config_path {
        let table_path = registry_hosts::registry_table_path(version).map(str::to_owned);
        let table = config::dotted(&table_path);
        // The tables on the way that do not exist yet: uninstall removes them again once empty.
        let missing: Vec<Vec<String>> = (1..=table_path.len())
            .map(|n| table_path[..n].to_vec())
            .filter(|prefix| config::lookup(doc.as_table(), prefix).is_none())
            .collect();
        actions.push(match registry_hosts::set_config_path(&mut doc, version, dir) {
            ConfigPathOutcome::Set => {
                state.registry_config_path = Some(dir.display().to_string());
                for t in missing {
                    if !state.created_tables.contains(&t) {
                        state.created_tables.push(t);
                    }
                }
                format!(
                    "set config_path = {:?} at [{table}] in {}",
                    dir.display().to_string(),
                    path.display()
                )
            }
            ConfigPathOutcome::AlreadySet(found) => format!(
                "keep config_path = {found:?} at [{table}] in {}: already set",
                path.display()
            ),
            ConfigPathOutcome::LegacyTables => format!(
                "leave [{table}] in {} alone: it uses mirrors/configs, which containerd refuses beside config_path",
                path.display()
            ),
        });
    }
    Ok(Plan {
        text: doc.to_string(),
        state,
        actions,
    })
}

/// `"a", "b"`, for action lines.
fn quoted(patterns: &[String]) -> String {
    patterns
        .iter()
        .map(|p| format!("{p:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn record_runtime(state: &mut State, entry: &RuntimeEntry, systemd_cgroup: Option<bool>) {
    // The whole table is the installer's now: uninstall removes it, patterns and all.
    state.added_patterns.retain(|a| a.handler != entry.handler);
    let added = AddedRuntime {
        handler: entry.handler.clone(),
        runtime_type: entry.runtime_type.clone(),
        systemd_cgroup,
    };
    match state
        .runtimes
        .iter_mut()
        .find(|r| r.handler == entry.handler)
    {
        Some(r) => *r = added,
        None => state.runtimes.push(added),
    }
}

fn plan_template(
    path: &Path,
    current: Option<&str>,
    mut state: State,
    opts: &Options,
) -> Result<Plan, InstallError> {
    let mut actions = Vec::new();
    let version = k3s::version_of_template(path);
    state.config_version = version;
    let template_err = |source| InstallError::Template {
        path: path.to_path_buf(),
        source,
    };
    let parts = match current {
        None => {
            actions.push(format!(
                "create {} extending k3s's base template",
                path.display()
            ));
            k3s::split_block(&k3s::new_template()).map_err(template_err)?
        }
        Some(text) => k3s::split_block(text).map_err(template_err)?,
    };
    let base = parts.without_block();
    let guard = k3s::renders_extra_runtimes(&base);
    // `auto`: the block follows k3s's own `.SystemdCgroup` (what it renders for runc and gives
    // kubelet as its cgroup driver); an explicit value is written as it is.
    let follow = opts.systemd_cgroup == SystemdCgroupMode::Auto;
    let (systemd, reason) = cgroup::decide(opts.systemd_cgroup, None, &opts.probe);
    let cgroup_text = if follow {
        "SystemdCgroup = k3s's own value for runc".to_string()
    } else {
        format!("SystemdCgroup = {systemd}: {reason}")
    };

    // Handlers already in the block stay in it; requested ones are added.
    let mut wanted: Vec<(String, String)> = state
        .runtimes
        .iter()
        .map(|r| (r.handler.clone(), r.runtime_type.clone()))
        .collect();
    for spec in &opts.runtimes {
        if !wanted.iter().any(|(h, _)| h == spec.handler) {
            wanted.push((spec.handler.to_string(), spec.runtime_type.to_string()));
        }
    }

    let mut entries = Vec::new();
    let in_block_before: Vec<String> = if current.is_some_and(|c| c.contains(k3s::BEGIN_MARKER)) {
        state.runtimes.iter().map(|r| r.handler.clone()).collect()
    } else {
        Vec::new()
    };
    state.runtimes.clear();
    for (handler, runtime_type) in wanted {
        if let Some(user) = k3s::user_runtime(&base, version, &handler) {
            match user.runtime_type {
                Some(found) if found != runtime_type => {
                    return Err(InstallError::Conflict {
                        path: path.to_path_buf(),
                        handler,
                        found,
                    });
                }
                _ => {
                    actions.push(format!(
                        "keep runtime `{handler}` in {}: the template defines it itself (line {})",
                        path.display(),
                        user.line
                    ));
                    // The template's own lines are not the installer's to edit.
                    let patterns = vec![config::capability_annotation_pattern()];
                    let lacking = user.keys_lacking(&patterns);
                    if !lacking.is_empty() {
                        actions.push(format!(
                            "note: runtime `{handler}` at line {} of {} does not list {} in {}: \
                             add it there, or the shim gets no capability annotations from \
                             Kubernetes pods",
                            user.line,
                            path.display(),
                            quoted(&patterns),
                            lacking.join(" and ")
                        ));
                    }
                    continue;
                }
            }
        }
        let entry = RuntimeEntry::new(&handler, &runtime_type, systemd);
        actions.push(format!(
            "{} runtime `{}` (runtime_type = \"{}\", {cgroup_text}) in the wasmrunner block of {}{}",
            if in_block_before.contains(&entry.handler) {
                "keep"
            } else {
                "add"
            },
            entry.handler,
            entry.runtime_type,
            path.display(),
            if guard {
                ", rendered unless k3s detects the shim itself"
            } else {
                ""
            }
        ));
        record_runtime(&mut state, &entry, (!follow).then_some(systemd));
        entries.push(entry);
    }
    let text = if entries.is_empty() {
        base
    } else {
        parts.with_block(&k3s::render_block(version, &entries, guard, follow))
    };
    Ok(Plan {
        text,
        state,
        actions,
    })
}

/// Installs: copies `shims`, adds the runtime handlers of `opts` to `target`, records what it
/// did beside the target. Running it again with the same inputs changes nothing.
pub fn install(
    target: &Target,
    shims: &[ShimCopy],
    opts: &Options,
) -> Result<Report, InstallError> {
    let path = target.path();
    let current_bytes = read_optional(path)?;
    let current = match &current_bytes {
        Some(b) => Some(as_text(path, b)?),
        None => None,
    };
    let previous = state::load(path)?;
    // A state whose file is gone, or that describes another kind of target, starts over
    // (keeping the binaries it owns).
    let mut base_state = State::new(target.kind(), path, ConfigVersion::V2);
    let mut modified_since = false;
    if let Some(prev) = &previous {
        base_state.binaries = prev.binaries.clone();
        base_state.hosts_files = prev.hosts_files.clone();
        if current.is_some() && prev.kind == target.kind() {
            base_state = prev.clone();
            modified_since = current_bytes.as_deref().map(sha256_hex).as_deref()
                != Some(prev.written_sha256.as_str());
        }
    }

    let plan = match target {
        Target::Config(_) => plan_config(path, current.as_deref(), base_state, opts)?,
        Target::K3sTemplate(_) => plan_template(path, current.as_deref(), base_state, opts)?,
    };
    let Plan {
        text,
        mut state,
        mut actions,
    } = plan;

    // Refuse before writing anything: a bad host name, or a hosts.toml that is not ours.
    for hosts in &opts.registry_hosts {
        hosts.registry.check_target(&hosts.dir)?;
    }

    // Binaries first: a containerd restarted with the new config must find its shims.
    for shim in shims {
        let previous = state.binary(&shim.dest).cloned();
        let (outcome, record) =
            binaries::install_binary(&shim.src, &shim.dest, previous.as_ref(), opts.dry_run)?;
        let line = match &outcome {
            CopyOutcome::Unchanged => format!("skip {}: identical", shim.dest.display()),
            CopyOutcome::Copied => {
                format!("copy {} -> {}", shim.src.display(), shim.dest.display())
            }
            CopyOutcome::Updated => {
                format!("update {} from {}", shim.dest.display(), shim.src.display())
            }
            CopyOutcome::Replaced { backup } => format!(
                "replace {} from {} (the previous file is kept as {})",
                shim.dest.display(),
                shim.src.display(),
                backup.display()
            ),
        };
        actions.push(line);
        state.binaries.retain(|b| b.path != shim.dest);
        if let Some(record) = record {
            state.binaries.push(record);
        }
    }

    // The hosts.toml files before the config that names their directory.
    for hosts in &opts.registry_hosts {
        let file = hosts.registry.path_in(&hosts.dir);
        actions.push(format!(
            "write {} for {}",
            file.display(),
            hosts.registry.host
        ));
        if !opts.dry_run {
            state.record_hosts_file(hosts.registry.write_new(&hosts.dir)?);
        }
    }

    let changed = current.as_deref() != Some(text.as_str());
    if !changed {
        actions.push(format!("unchanged: {}", path.display()));
    }
    let report_before = current.clone();
    if opts.dry_run {
        return Ok(Report {
            target: path.to_path_buf(),
            actions: actions
                .into_iter()
                .map(|a| format!("(dry run) would {a}"))
                .collect(),
            changed,
            before: report_before,
            after: Some(text),
        });
    }

    if changed {
        match (&previous, &current_bytes) {
            // First install on an existing file: keep its original bytes.
            (None, Some(bytes)) => {
                atomic_write(&state::backup_path(path), bytes, Some(0o600))?;
                state.created = false;
                state.backup_valid = true;
                actions.push(format!(
                    "back up the original {} to {}",
                    path.display(),
                    state::backup_path(path).display()
                ));
            }
            (_, None) => {
                state.created = true;
                state.backup_valid = true;
            }
            (Some(_), Some(_)) => {
                if modified_since && state.backup_valid {
                    state.backup_valid = false;
                    actions.push(format!(
                        "note: {} was changed by someone else since the last install; uninstall \
                         will remove only the installer's entries",
                        path.display()
                    ));
                }
            }
        }
        atomic_write(path, text.as_bytes(), None)?;
        actions.push(format!("write {}", path.display()));
    } else if modified_since {
        // Someone else's edit is now part of the file: the backup no longer restores it.
        state.backup_valid = false;
    }
    state.written_sha256 = sha256_hex(text.as_bytes());
    if previous.is_some() || changed || !state.binaries.is_empty() || !state.hosts_files.is_empty()
    {
        state::save(&state)?;
    }
    Ok(Report {
        target: path.to_path_buf(),
        actions,
        changed,
        before: report_before,
        after: Some(text),
    })
}

/// Removes what [`install`] added to `target` and the binaries it copied. When the target was
/// not changed by anyone else since, it gets its original bytes back (or is deleted when the
/// installer created it); otherwise only the installer's entries are removed.
pub fn uninstall(target: &Target, dry_run: bool) -> Result<Report, InstallError> {
    let path = target.path();
    let current_bytes = read_optional(path)?;
    let current = match &current_bytes {
        Some(b) => Some(as_text(path, b)?),
        None => None,
    };
    let mut actions = Vec::new();
    let Some(state) = state::load(path)? else {
        // Without a state file only a marked template block is recognisably ours.
        if let (Target::K3sTemplate(_), Some(text)) = (target, &current) {
            let parts = k3s::split_block(text).map_err(|source| InstallError::Template {
                path: path.to_path_buf(),
                source,
            })?;
            if parts.block.is_some() {
                let rest = parts.without_block();
                actions.push(format!(
                    "remove the wasmrunner block from {}",
                    path.display()
                ));
                if !dry_run {
                    atomic_write(path, rest.as_bytes(), None)?;
                }
                return Ok(finish(path, actions, current, Some(rest), dry_run));
            }
        }
        actions.push(format!(
            "nothing to uninstall for {}: no state file {}",
            path.display(),
            state::state_path(path).display()
        ));
        return Ok(finish(path, actions, current.clone(), current, dry_run));
    };

    let untouched =
        current_bytes.as_deref().map(sha256_hex).as_deref() == Some(state.written_sha256.as_str());
    let backup = read_optional(&state::backup_path(path))?;
    let after: Option<String> = match &current {
        None => {
            actions.push(format!("{} is already gone", path.display()));
            None
        }
        Some(_) if untouched && state.backup_valid && state.created => {
            actions.push(format!(
                "delete {}: the installer created it",
                path.display()
            ));
            None
        }
        Some(text) => match (&backup, untouched && state.backup_valid && !state.created) {
            (Some(original), true) => {
                actions.push(format!(
                    "restore {} from {}",
                    path.display(),
                    state::backup_path(path).display()
                ));
                Some(as_text(path, original)?)
            }
            _ => {
                let edited = remove_entries(path, text, &state, &mut actions)?;
                if state.created {
                    actions.push(format!(
                        "keep {}: the installer created it, but it was edited since",
                        path.display()
                    ));
                }
                Some(edited)
            }
        },
    };

    let changed = current != after;
    if !dry_run && changed {
        match &after {
            Some(text) => atomic_write(path, text.as_bytes(), None)?,
            None => {
                remove_optional(path)?;
            }
        }
    }

    for record in &state.binaries {
        let line = match binaries::remove_binary(record, dry_run)? {
            RemoveOutcome::Removed => format!("remove {}", record.path.display()),
            RemoveOutcome::Restored => format!(
                "remove {} and put back the file that was there before",
                record.path.display()
            ),
            RemoveOutcome::Missing => format!("{} is already gone", record.path.display()),
            RemoveOutcome::ChangedSinceInstall => format!(
                "keep {}: it was replaced since the install",
                record.path.display()
            ),
        };
        actions.push(line);
    }
    for written in &state.hosts_files {
        let file = written.path.display();
        let line = match registry_hosts::remove_written(written, dry_run)? {
            RemoveHostsOutcome::Removed { dirs } => {
                let mut line = format!("remove {file}");
                for dir in dirs {
                    line.push_str(&format!(" and the empty directory {}", dir.display()));
                }
                line
            }
            RemoveHostsOutcome::Missing => format!("{file} is already gone"),
            RemoveHostsOutcome::Edited => format!(
                "warning: keep {file}: it was edited since the install (its `{}` line is gone)",
                registry_hosts::MARKER
            ),
        };
        actions.push(line);
    }
    if !dry_run {
        for removed in state::forget(path)? {
            actions.push(format!("remove {}", removed.display()));
        }
    }
    if !changed {
        actions.push(format!("unchanged: {}", path.display()));
    }
    Ok(finish(path, actions, current, after, dry_run))
}

fn finish(
    path: &Path,
    actions: Vec<String>,
    before: Option<String>,
    after: Option<String>,
    dry_run: bool,
) -> Report {
    let actions = if dry_run {
        actions
            .into_iter()
            .map(|a| format!("(dry run) would {a}"))
            .collect()
    } else {
        actions
    };
    Report {
        target: path.to_path_buf(),
        changed: before != after,
        actions,
        before,
        after,
    }
}

/// Removes the installer's entries from a file edited since (the structural undo).
fn remove_entries(
    path: &Path,
    text: &str,
    state: &State,
    actions: &mut Vec<String>,
) -> Result<String, InstallError> {
    match state.kind {
        TargetKind::K3sTemplate => {
            let parts = k3s::split_block(text).map_err(|source| InstallError::Template {
                path: path.to_path_buf(),
                source,
            })?;
            if parts.block.is_some() {
                actions.push(format!(
                    "remove the wasmrunner block from {}",
                    path.display()
                ));
            }
            Ok(parts.without_block())
        }
        TargetKind::Config => {
            let mut doc = config::parse(text).map_err(config_err(path))?;
            for runtime in &state.runtimes {
                if config::remove_runtime(&mut doc, state.config_version, &runtime.handler) {
                    actions.push(format!(
                        "remove runtime `{}` from {}",
                        runtime.handler,
                        path.display()
                    ));
                }
            }
            for added in &state.added_patterns {
                let removed = config::remove_annotation_patterns(
                    &mut doc,
                    state.config_version,
                    &added.handler,
                    &added.key,
                    &added.patterns,
                    added.created_key,
                );
                if !removed.is_empty() {
                    actions.push(format!(
                        "remove {} from `{}` of runtime `{}` in {}",
                        quoted(&removed),
                        added.key,
                        added.handler,
                        path.display()
                    ));
                }
            }
            if let Some(value) = &state.registry_config_path {
                let table = config::dotted(
                    &registry_hosts::registry_table_path(state.config_version).map(str::to_owned),
                );
                match registry_hosts::remove_config_path(&mut doc, state.config_version, value) {
                    ConfigPathRemoval::Removed => actions.push(format!(
                        "remove config_path = {value:?} from [{table}] in {}",
                        path.display()
                    )),
                    ConfigPathRemoval::Missing => {}
                    ConfigPathRemoval::Changed(found) => actions.push(format!(
                        "keep config_path = {found:?} at [{table}] in {}: changed since the install",
                        path.display()
                    )),
                }
            }
            config::remove_empty_tables(&mut doc, &state.created_tables);
            if state.added_version_key && doc.as_table().len() == 1 {
                config::remove_version(&mut doc);
            }
            Ok(doc.to_string())
        }
    }
}

/// Adds the runtime handlers to a containerd config (creating it if missing), without copying
/// any binary: what a test harness needs to prepare a private containerd.
pub fn install_into_config(path: &Path, opts: &Options) -> Result<Report, InstallError> {
    install(&Target::Config(path.to_path_buf()), &[], opts)
}

/// Undoes [`install_into_config`].
pub fn uninstall_from_config(path: &Path) -> Result<Report, InstallError> {
    uninstall(&Target::Config(path.to_path_buf()), false)
}

/// Adds the runtime handlers to a k3s/rke2 config template.
pub fn install_into_k3s_template(path: &Path, opts: &Options) -> Result<Report, InstallError> {
    install(&Target::K3sTemplate(path.to_path_buf()), &[], opts)
}

/// Undoes [`install_into_k3s_template`].
pub fn uninstall_from_k3s_template(path: &Path) -> Result<Report, InstallError> {
    uninstall(&Target::K3sTemplate(path.to_path_buf()), false)
}
