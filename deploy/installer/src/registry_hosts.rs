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

use thiserror::Error;
use toml_edit::{DocumentMut, Item, Table};

use crate::config::{ConfigVersion, lookup};

/// The host configuration directory containerd's own documentation uses.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/containerd/certs.d";

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
            "# Written by wasmrunner-installer.\nserver = {url:?}\n\n[host.{url:?}]\n  capabilities = [\"pull\", \"resolve\"]\n"
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
}

/// The key path of the CRI plugin's `registry` table.
pub fn registry_table_path(version: ConfigVersion) -> [&'static str; 3] {
    match version {
        ConfigVersion::V2 => ["plugins", "io.containerd.grpc.v1.cri", "registry"],
        ConfigVersion::V3 => ["plugins", "io.containerd.cri.v1.images", "registry"],
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
}
