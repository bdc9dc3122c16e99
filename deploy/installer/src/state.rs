//! The state the installer keeps beside the file it edits, so that `uninstall` removes exactly
//! what `install` added:
//!
//! - `<target>.wasmrunner.json`: what was added (runtime handlers, parent tables it had to
//!   create, binaries it copied), whether the target existed before, and a hash of the bytes the
//!   installer last wrote;
//! - `<target>.wasmrunner.bak`: the target's bytes before the first install, used to restore it
//!   byte-for-byte when nothing else changed it since.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::binaries::InstalledBinary;
use crate::config::ConfigVersion;
use crate::fsutil::{FsError, atomic_write, read_optional, remove_optional};
use crate::registry_hosts::WrittenHostsFile;

pub const STATE_FORMAT: u32 = 1;

#[derive(Debug, Error)]
pub enum StateError {
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error("state file {path} is not valid: {source}")]
    Invalid {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("state file {path} has format {found}; this installer reads format {STATE_FORMAT}")]
    Format { path: PathBuf, found: u32 },
}

/// What kind of file the state describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TargetKind {
    /// containerd's `config.toml`, edited as TOML.
    Config,
    /// A k3s/rke2 `config.toml.tmpl` (Go template), edited as a marked block.
    K3sTemplate,
}

/// A runtime handler the installer added.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddedRuntime {
    pub handler: String,
    pub runtime_type: String,
    /// `None`: the template follows k3s's own `.SystemdCgroup`.
    pub systemd_cgroup: Option<bool>,
}

/// Annotation patterns the installer added to one list (`pod_annotations` or
/// `container_annotations`) of a handler table that someone else configured; `uninstall`
/// removes these patterns (and the key, if the installer created it and nothing else is left).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddedPatterns {
    pub handler: String,
    pub key: String,
    pub patterns: Vec<String>,
    /// The key did not exist before the installer added it.
    pub created_key: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub format: u32,
    pub kind: TargetKind,
    pub target: PathBuf,
    /// Format of the runtime tables written.
    pub config_version: ConfigVersion,
    /// The installer created the target (it did not exist before).
    pub created: bool,
    /// The target's bytes before the first install are in the backup file, and the target has
    /// not been changed by anyone else since (else this is false and uninstall edits instead).
    pub backup_valid: bool,
    /// sha256 of the bytes the installer last wrote to the target.
    pub written_sha256: String,
    /// The installer added `version = N` to a blank file.
    #[serde(default)]
    pub added_version_key: bool,
    /// Handlers added, in order.
    pub runtimes: Vec<AddedRuntime>,
    /// Parent tables that did not exist and were created (removed again when empty).
    #[serde(default)]
    pub created_tables: Vec<Vec<String>>,
    /// Shim binaries copied.
    #[serde(default)]
    pub binaries: Vec<InstalledBinary>,
    /// Annotation patterns added to handler tables the installer does not own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub added_patterns: Vec<AddedPatterns>,
    /// The CRI registry `config_path` the installer set (it was unset before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_config_path: Option<String>,
    /// Registry `hosts.toml` files the installer wrote (`--registry`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts_files: Vec<WrittenHostsFile>,
}

fn with_suffix(target: &Path, suffix: &str) -> PathBuf {
    let mut name = target.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// `<target>.wasmrunner.json`
pub fn state_path(target: &Path) -> PathBuf {
    with_suffix(target, ".wasmrunner.json")
}

/// `<target>.wasmrunner.bak`
pub fn backup_path(target: &Path) -> PathBuf {
    with_suffix(target, ".wasmrunner.bak")
}

impl State {
    pub fn new(kind: TargetKind, target: &Path, config_version: ConfigVersion) -> Self {
        Self {
            format: STATE_FORMAT,
            kind,
            target: target.to_path_buf(),
            config_version,
            created: false,
            backup_valid: false,
            written_sha256: String::new(),
            added_version_key: false,
            runtimes: Vec::new(),
            created_tables: Vec::new(),
            binaries: Vec::new(),
            added_patterns: Vec::new(),
            registry_config_path: None,
            hosts_files: Vec::new(),
        }
    }

    /// Records a written `hosts.toml`; directories recorded for it earlier stay recorded.
    pub fn record_hosts_file(&mut self, written: WrittenHostsFile) {
        match self.hosts_files.iter_mut().find(|h| h.path == written.path) {
            Some(record) => {
                for dir in written.created_dirs {
                    if !record.created_dirs.contains(&dir) {
                        record.created_dirs.push(dir);
                    }
                }
                // Deepest first, as uninstall removes them.
                record
                    .created_dirs
                    .sort_by_key(|d| std::cmp::Reverse(d.components().count()));
            }
            None => self.hosts_files.push(written),
        }
    }

    pub fn runtime(&self, handler: &str) -> Option<&AddedRuntime> {
        self.runtimes.iter().find(|r| r.handler == handler)
    }

    /// Records patterns added to `handler`'s `key` list, together with any recorded before.
    pub fn record_patterns(
        &mut self,
        handler: &str,
        key: &str,
        patterns: &[String],
        created_key: bool,
    ) {
        match self
            .added_patterns
            .iter_mut()
            .find(|a| a.handler == handler && a.key == key)
        {
            Some(record) => {
                for pattern in patterns {
                    if !record.patterns.contains(pattern) {
                        record.patterns.push(pattern.clone());
                    }
                }
                record.created_key |= created_key;
            }
            None => self.added_patterns.push(AddedPatterns {
                handler: handler.to_string(),
                key: key.to_string(),
                patterns: patterns.to_vec(),
                created_key,
            }),
        }
    }

    pub fn binary(&self, path: &Path) -> Option<&InstalledBinary> {
        self.binaries.iter().find(|b| b.path == path)
    }

    /// Serialized form: stable key order, one trailing newline.
    pub fn to_json(&self) -> String {
        // Serializing plain data structures cannot fail.
        let mut text = serde_json::to_string_pretty(self).unwrap_or_default();
        text.push('\n');
        text
    }
}

/// Loads the state of `target`, `None` when there is none.
pub fn load(target: &Path) -> Result<Option<State>, StateError> {
    let path = state_path(target);
    let Some(bytes) = read_optional(&path)? else {
        return Ok(None);
    };
    let state: State = serde_json::from_slice(&bytes).map_err(|source| StateError::Invalid {
        path: path.clone(),
        source,
    })?;
    if state.format != STATE_FORMAT {
        return Err(StateError::Format {
            path,
            found: state.format,
        });
    }
    Ok(Some(state))
}

/// Writes the state file if its content changed. Returns whether it wrote.
pub fn save(state: &State) -> Result<bool, StateError> {
    let path = state_path(&state.target);
    let text = state.to_json();
    if read_optional(&path)?.as_deref() == Some(text.as_bytes()) {
        return Ok(false);
    }
    atomic_write(&path, text.as_bytes(), Some(0o600))?;
    Ok(true)
}

/// Removes the state and backup files of `target`. Returns the ones that existed.
pub fn forget(target: &Path) -> Result<Vec<PathBuf>, StateError> {
    let mut removed = Vec::new();
    for path in [state_path(target), backup_path(target)] {
        if remove_optional(&path)? {
            removed.push(path);
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_sit_beside_the_target() {
        let target = Path::new("/etc/containerd/config.toml");
        assert_eq!(
            state_path(target),
            Path::new("/etc/containerd/config.toml.wasmrunner.json")
        );
        assert_eq!(
            backup_path(target),
            Path::new("/etc/containerd/config.toml.wasmrunner.bak")
        );
    }

    #[test]
    fn save_load_round_trip_and_skip_identical_writes() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("config.toml");
        assert_eq!(load(&target).unwrap(), None);
        let mut state = State::new(TargetKind::Config, &target, ConfigVersion::V2);
        state.runtimes.push(AddedRuntime {
            handler: "wasmtime".into(),
            runtime_type: "io.containerd.wasmtime.v1".into(),
            systemd_cgroup: Some(false),
        });
        assert!(save(&state).unwrap());
        assert!(!save(&state).unwrap());
        assert_eq!(load(&target).unwrap(), Some(state));
        forget(&target).unwrap();
        assert_eq!(load(&target).unwrap(), None);
    }

    #[test]
    fn added_patterns_accumulate_and_older_states_load() {
        let target = Path::new("/etc/containerd/config.toml");
        let mut state = State::new(TargetKind::Config, target, ConfigVersion::V2);
        // Without added patterns the state file looks as it did before they existed.
        let json = state.to_json();
        assert!(!json.contains("added_patterns"), "{json}");
        let older: State = serde_json::from_str(&json).unwrap();
        assert_eq!(older, state);
        let p = |s: &str| vec![s.to_string()];
        state.record_patterns("wasmtime", "pod_annotations", &p("wasmrunner.dev/*"), false);
        state.record_patterns("wasmtime", "pod_annotations", &p("wasmrunner.dev/*"), true);
        state.record_patterns("wasmtime", "container_annotations", &p("a/*"), true);
        assert_eq!(
            state.added_patterns,
            vec![
                AddedPatterns {
                    handler: "wasmtime".into(),
                    key: "pod_annotations".into(),
                    patterns: p("wasmrunner.dev/*"),
                    created_key: true,
                },
                AddedPatterns {
                    handler: "wasmtime".into(),
                    key: "container_annotations".into(),
                    patterns: p("a/*"),
                    created_key: true,
                },
            ]
        );
        let again: State = serde_json::from_str(&state.to_json()).unwrap();
        assert_eq!(again, state);
    }

    #[test]
    fn rejects_garbage_and_other_formats() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("config.toml");
        std::fs::write(state_path(&target), "{not json").unwrap();
        assert!(matches!(load(&target), Err(StateError::Invalid { .. })));
        let mut state = State::new(TargetKind::Config, &target, ConfigVersion::V3);
        state.format = 99;
        std::fs::write(state_path(&target), state.to_json()).unwrap();
        assert!(matches!(
            load(&target),
            Err(StateError::Format { found: 99, .. })
        ));
    }
}
