//! containerd's registry host configuration: `config_path` in the CRI plugin's `registry`
//! table, and one `<config_path>/<host[:port]>/hosts.toml` per registry that needs more than
//! the defaults (plain HTTP, or a CA of its own). `ctr image pull --hosts-dir` reads the same
//! files.
//!
//! | config | table that holds `config_path` |
//! |---|---|
//! | `version = 2` (containerd 1.x) | `plugins."io.containerd.grpc.v1.cri".registry` |
//! | `version = 3` (containerd 2.x) | `plugins."io.containerd.cri.v1.images".registry` |

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;
use toml_edit::{DocumentMut, Item, Table};

use crate::config::{ConfigVersion, lookup};

/// The host configuration directory containerd's own documentation uses.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/containerd/certs.d";

/// The first line of every `hosts.toml` the installer writes: `uninstall` removes a file only
/// while it still has this line.
pub const MARKER: &str = "# Written by wasmrunner-installer.";

/// The text has the installer's [`MARKER`] line.
pub fn carries_marker(text: &str) -> bool {
    text.lines().any(|line| line.trim_end() == MARKER)
}

/// How containerd should talk to one registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryHost {
    /// `host` or `host:port`, as in image references.
    pub host: String,
    /// Plain HTTP instead of HTTPS.
    pub plain_http: bool,
    /// A CA (PEM) to verify the registry's certificate with.
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Error)]
pub enum RegistryHostError {
    #[error("registry host {0:?} is not host or host:port")]
    BadHost(String),
    #[error("a plain-HTTP registry has no TLS: --registry-ca does not apply to {0}")]
    CaWithPlainHttp(String),
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("removing {path}: {source}")]
    Remove {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{0} exists and was not written by wasmrunner-installer (no `{MARKER}` line): \
         remove it or leave --registry out"
    )]
    NotOurs(PathBuf),
}

/// A `hosts.toml` written by [`RegistryHost::write_new`], and the directories it had to create
/// (deepest first), for `uninstall`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrittenHostsFile {
    pub path: PathBuf,
    #[serde(default)]
    pub created_dirs: Vec<PathBuf>,
}

/// What [`remove_written`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoveHostsOutcome {
    /// The file is gone, and these of its created directories with it (they were empty).
    Removed {
        dirs: Vec<PathBuf>,
    },
    Missing,
    /// The marker line is gone: someone else's file now, kept.
    Edited,
}

impl RegistryHost {
    fn check(&self) -> Result<(), RegistryHostError> {
        let bad = self.host.is_empty()
            || self
                .host
                .contains(|c: char| c == '/' || c.is_whitespace() || c == '"' || c == '\\');
        if bad || self.host.starts_with('.') {
            return Err(RegistryHostError::BadHost(self.host.clone()));
        }
        if self.plain_http && self.ca_file.is_some() {
            return Err(RegistryHostError::CaWithPlainHttp(self.host.clone()));
        }
        Ok(())
    }

    /// The `hosts.toml` text: the registry as its own server, for pull and resolve.
    pub fn hosts_toml(&self) -> Result<String, RegistryHostError> {
        self.check()?;
        let scheme = if self.plain_http { "http" } else { "https" };
        let url = format!("{scheme}://{}", self.host);
        let mut text = format!(
            "{MARKER}\nserver = {url:?}\n\n[host.{url:?}]\n  capabilities = [\"pull\", \"resolve\"]\n"
        );
        if let Some(ca) = &self.ca_file {
            text.push_str(&format!("  ca = {:?}\n", ca.display().to_string()));
        }
        Ok(text)
    }

    /// Writes `<config_path>/<host>/hosts.toml`; returns its path.
    pub fn write(&self, config_path: &Path) -> Result<PathBuf, RegistryHostError> {
        let text = self.hosts_toml()?;
        let dir = config_path.join(&self.host);
        let path = dir.join("hosts.toml");
        let write_error = |source| RegistryHostError::Write {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(write_error)?;
        std::fs::write(&path, text).map_err(write_error)?;
        Ok(path)
    }

    /// `<config_path>/<host>/hosts.toml`.
    pub fn path_in(&self, config_path: &Path) -> PathBuf {
        config_path.join(&self.host).join("hosts.toml")
    }

    /// Checks that [`Self::write_new`] may write into `config_path`: the host is valid, and any
    /// `hosts.toml` already there is the installer's (a user's own file is never overwritten).
    pub fn check_target(&self, config_path: &Path) -> Result<(), RegistryHostError> {
        self.hosts_toml()?;
        let path = self.path_in(config_path);
        match std::fs::read(&path) {
            Ok(bytes) if carries_marker(&String::from_utf8_lossy(&bytes)) => Ok(()),
            Ok(_) => Err(RegistryHostError::NotOurs(path)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(RegistryHostError::Read { path, source }),
        }
    }

    /// Like [`Self::write`], after [`Self::check_target`], and records the directories it
    /// created.
    pub fn write_new(&self, config_path: &Path) -> Result<WrittenHostsFile, RegistryHostError> {
        self.check_target(config_path)?;
        let dir = config_path.join(&self.host);
        let mut created_dirs: Vec<PathBuf> = dir
            .ancestors()
            .take_while(|d| !d.as_os_str().is_empty() && !d.exists())
            .map(Path::to_path_buf)
            .collect();
        let path = self.write(config_path)?;
        // Only the ones that exist now were created by this write.
        created_dirs.retain(|d| d.is_dir());
        Ok(WrittenHostsFile { path, created_dirs })
    }
}

/// Removes a `hosts.toml` the installer wrote if it still has the [`MARKER`] line, then the
/// directories created for it that are empty. `dry_run` only says what it would do.
pub fn remove_written(
    written: &WrittenHostsFile,
    dry_run: bool,
) -> Result<RemoveHostsOutcome, RegistryHostError> {
    let path = &written.path;
    let text = match std::fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(RemoveHostsOutcome::Missing);
        }
        Err(source) => {
            return Err(RegistryHostError::Read {
                path: path.clone(),
                source,
            });
        }
    };
    if !carries_marker(&text) {
        return Ok(RemoveHostsOutcome::Edited);
    }
    if dry_run {
        return Ok(RemoveHostsOutcome::Removed {
            dirs: written.created_dirs.clone(),
        });
    }
    std::fs::remove_file(path).map_err(|source| RegistryHostError::Remove {
        path: path.clone(),
        source,
    })?;
    let mut dirs = Vec::new();
    for dir in &written.created_dirs {
        // `remove_dir` refuses a directory that is not empty: it stays, and so do its parents.
        match std::fs::remove_dir(dir) {
            Ok(()) => dirs.push(dir.clone()),
            Err(_) => break,
        }
    }
    Ok(RemoveHostsOutcome::Removed { dirs })
}

/// The key path of the CRI plugin's `registry` table.
pub fn registry_table_path(version: ConfigVersion) -> [&'static str; 3] {
    match version {
        ConfigVersion::V2 => ["plugins", "io.containerd.grpc.v1.cri", "registry"],
        ConfigVersion::V3 => ["plugins", "io.containerd.cri.v1.images", "registry"],
    }
}

/// What [`remove_config_path`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigPathRemoval {
    Removed,
    Missing,
    /// The key names another directory now (someone changed it): kept.
    Changed(String),
}

/// Removes `config_path` from the CRI plugin's registry table if it still is `value` (what the
/// installer set).
pub fn remove_config_path(
    doc: &mut DocumentMut,
    version: ConfigVersion,
    value: &str,
) -> ConfigPathRemoval {
    let mut table = doc.as_table_mut();
    for key in registry_table_path(version) {
        let Some(next) = table.get_mut(key).and_then(Item::as_table_mut) else {
            return ConfigPathRemoval::Missing;
        };
        table = next;
    }
    let found = table.get("config_path").map(|item| {
        item.as_str()
            .map_or_else(|| item.to_string(), str::to_owned)
    });
    match found {
        None => ConfigPathRemoval::Missing,
        Some(found) if found == value => {
            table.remove("config_path");
            ConfigPathRemoval::Removed
        }
        Some(found) => ConfigPathRemoval::Changed(found),
    }
}

/// What [`set_config_path`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigPathOutcome {
    Set,
    /// The config already names a directory: it stays.
    AlreadySet(String),
    /// The config uses the older `mirrors`/`configs` tables, which containerd refuses beside
    /// `config_path`: nothing is changed.
    LegacyTables,
}

/// Sets `config_path = dir` in the CRI plugin's registry table unless it is set already.
pub fn set_config_path(
    doc: &mut DocumentMut,
    version: ConfigVersion,
    dir: &Path,
) -> ConfigPathOutcome {
    let path = registry_table_path(version);
    if let Some(existing) = lookup(doc.as_table(), &[path[0], path[1], path[2], "config_path"]) {
        return ConfigPathOutcome::AlreadySet(
            existing
                .as_str()
                .map_or_else(|| existing.to_string(), str::to_owned),
        );
    }
    if ["mirrors", "configs"]
        .iter()
        .any(|key| lookup(doc.as_table(), &[path[0], path[1], path[2], key]).is_some())
    {
        return ConfigPathOutcome::LegacyTables;
    }
    let mut table = doc.as_table_mut();
    for key in path {
        if !table.contains_key(key) {
            let mut new = Table::new();
            new.set_implicit(true);
            table.insert(key, Item::Table(new));
        }
        let Some(next) = table.get_mut(key).and_then(Item::as_table_mut) else {
            // A value or inline table where a table should be: leave the user's file alone.
            return ConfigPathOutcome::AlreadySet(format!("(not a table at {key})"));
        };
        table = next;
    }
    table.insert("config_path", toml_edit::value(dir.display().to_string()));
    ConfigPathOutcome::Set
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(plain_http: bool, ca: Option<&str>) -> RegistryHost {
        RegistryHost {
            host: "127.0.0.1:5000".into(),
            plain_http,
            ca_file: ca.map(PathBuf::from),
        }
    }

    #[test]
    fn hosts_toml_for_plain_http_and_a_private_ca() -> Result<(), RegistryHostError> {
        let plain = host(true, None).hosts_toml()?;
        assert!(
            plain.contains("server = \"http://127.0.0.1:5000\"\n"),
            "{plain}"
        );
        assert!(plain.contains(
            "[host.\"http://127.0.0.1:5000\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
        ));
        assert!(!plain.contains("ca ="));
        let tls = host(false, Some("/etc/ca.pem")).hosts_toml()?;
        assert!(tls.contains("server = \"https://127.0.0.1:5000\""), "{tls}");
        assert!(tls.contains("  ca = \"/etc/ca.pem\"\n"), "{tls}");
        // Both parse as TOML.
        for text in [plain, tls] {
            text.parse::<DocumentMut>().expect("valid TOML");
        }
        assert!(matches!(
            host(true, Some("/x")).hosts_toml(),
            Err(RegistryHostError::CaWithPlainHttp(_))
        ));
        let bad = RegistryHost {
            host: "a/b".into(),
            ..host(true, None)
        };
        assert!(matches!(
            bad.hosts_toml(),
            Err(RegistryHostError::BadHost(_))
        ));
        Ok(())
    }

    #[test]
    fn writes_the_file_under_the_host() -> Result<(), RegistryHostError> {
        let dir = std::env::temp_dir().join(format!("wr-hosts-{}", std::process::id()));
        let path = host(true, None).write(&dir)?;
        assert_eq!(path, dir.join("127.0.0.1:5000/hosts.toml"));
        let text = std::fs::read_to_string(&path).expect("written");
        assert!(text.contains("http://127.0.0.1:5000"));
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }

    #[test]
    fn config_path_is_set_once_in_each_format() {
        let dir = Path::new("/etc/containerd/certs.d");
        let mut v2: DocumentMut = "version = 2\n# mine\n".parse().expect("toml");
        assert_eq!(
            set_config_path(&mut v2, ConfigVersion::V2, dir),
            ConfigPathOutcome::Set
        );
        let text = v2.to_string();
        assert!(
            text.contains("[plugins.\"io.containerd.grpc.v1.cri\".registry]\nconfig_path = \"/etc/containerd/certs.d\""),
            "{text}"
        );
        assert!(text.contains("# mine"));
        assert_eq!(
            set_config_path(&mut v2, ConfigVersion::V2, Path::new("/other")),
            ConfigPathOutcome::AlreadySet("/etc/containerd/certs.d".into())
        );
        let mut v3: DocumentMut = "version = 3\n".parse().expect("toml");
        set_config_path(&mut v3, ConfigVersion::V3, dir);
        assert!(
            v3.to_string()
                .contains("[plugins.\"io.containerd.cri.v1.images\".registry]")
        );
        let mut legacy: DocumentMut =
            "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.\"docker.io\"]\nendpoint = [\"https://m\"]\n"
                .parse()
                .expect("toml");
        let before = legacy.to_string();
        assert_eq!(
            set_config_path(&mut legacy, ConfigVersion::V2, dir),
            ConfigPathOutcome::LegacyTables
        );
        assert_eq!(legacy.to_string(), before);
    }

    #[test]
    fn config_path_is_removed_only_while_it_is_the_installers() {
        let dir = Path::new("/etc/containerd/certs.d");
        let mut doc: DocumentMut = "version = 3\n".parse().expect("toml");
        set_config_path(&mut doc, ConfigVersion::V3, dir);
        assert_eq!(
            remove_config_path(&mut doc, ConfigVersion::V3, "/other"),
            ConfigPathRemoval::Changed("/etc/containerd/certs.d".into())
        );
        assert_eq!(
            remove_config_path(&mut doc, ConfigVersion::V3, "/etc/containerd/certs.d"),
            ConfigPathRemoval::Removed
        );
        assert!(!doc.to_string().contains("config_path"), "{doc}");
        assert_eq!(
            remove_config_path(&mut doc, ConfigVersion::V3, "/etc/containerd/certs.d"),
            ConfigPathRemoval::Missing
        );
    }

    #[test]
    fn written_file_and_its_new_directories_go_unless_edited() -> Result<(), RegistryHostError> {
        let tmp = tempfile::tempdir().expect("tempdir");
        let certs = tmp.path().join("containerd/certs.d");
        let written = host(true, None).write_new(&certs)?;
        assert_eq!(
            written.created_dirs,
            vec![
                certs.join("127.0.0.1:5000"),
                certs.clone(),
                tmp.path().join("containerd")
            ]
        );
        // Another registry's directory keeps certs.d.
        let other = RegistryHost {
            host: "other:5000".into(),
            ..host(true, None)
        };
        let other_written = other.write_new(&certs)?;
        assert_eq!(other_written.created_dirs, vec![certs.join("other:5000")]);
        assert_eq!(
            remove_written(&written, false)?,
            RemoveHostsOutcome::Removed {
                dirs: vec![certs.join("127.0.0.1:5000")]
            }
        );
        assert!(certs.is_dir());
        assert_eq!(
            remove_written(&written, false)?,
            RemoveHostsOutcome::Missing
        );
        std::fs::write(&other_written.path, "server = \"http://other:5000\"\n").expect("edit");
        assert_eq!(
            remove_written(&other_written, false)?,
            RemoveHostsOutcome::Edited
        );
        assert!(other_written.path.exists());
        assert!(matches!(
            other.write_new(&certs),
            Err(RegistryHostError::NotOurs(_))
        ));
        Ok(())
    }
}
