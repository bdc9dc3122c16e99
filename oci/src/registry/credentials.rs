//! Credentials for a registry: given on the command line, or read from the docker config file
//! (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`) the way `docker login` writes
//! it: `{"auths": {"<registry>": {"auth": base64("user:password")}}}`. Credential helpers
//! (`credsStore`, `credHelpers`) are programs of their own and are not run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;

use super::error::RegistryError;

/// A user name and password (or identity token) for basic or token authentication.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({:?}, ****)", self.username)
    }
}

/// Docker Hub's key in the config file.
const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

#[derive(Deserialize, Default)]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// Where the docker config file is: `$DOCKER_CONFIG/config.json`, else
/// `$HOME/.docker/config.json`; `None` without either variable.
pub fn docker_config_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".docker/config.json"))
}

/// The credentials the docker config file at `path` holds for `registry` (`host[:port]`), if
/// any. A missing file holds none; an unreadable or malformed one is an error.
pub fn from_docker_config(
    path: &Path,
    registry: &str,
) -> Result<Option<Credentials>, RegistryError> {
    let error = |reason: String| RegistryError::DockerConfig {
        path: path.display().to_string(),
        reason,
    };
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(error(e.to_string())),
    };
    let config: DockerConfig = serde_json::from_str(&text).map_err(|e| error(e.to_string()))?;
    let Some(entry) = config
        .auths
        .iter()
        .find(|(key, _)| key_names(key, registry))
        .map(|(_, entry)| entry)
    else {
        return Ok(None);
    };
    if let Some(encoded) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|e| error(format!("the auth of {registry} is not base64: {e}")))?;
        let decoded = String::from_utf8(decoded)
            .map_err(|_| error(format!("the auth of {registry} is not UTF-8")))?;
        let (username, password) = decoded
            .split_once(':')
            .ok_or_else(|| error(format!("the auth of {registry} is not user:password")))?;
        return Ok(Some(Credentials {
            username: username.to_owned(),
            password: password.to_owned(),
        }));
    }
    match (&entry.username, &entry.password) {
        (Some(username), Some(password)) => Ok(Some(Credentials {
            username: username.clone(),
            password: password.clone(),
        })),
        _ => Ok(None),
    }
}

/// Whether a key of `auths` names `registry`: `host:port`, with or without a scheme and a
/// path (`https://host/v1/`), and Docker Hub under its historical key.
fn key_names(key: &str, registry: &str) -> bool {
    let is_hub = |name: &str| {
        matches!(
            name,
            "docker.io" | "index.docker.io" | "registry-1.docker.io"
        )
    };
    if is_hub(registry) && key == DOCKER_HUB_KEY {
        return true;
    }
    let host = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = host.split('/').next().unwrap_or(host);
    host == registry || (is_hub(host) && is_hub(registry))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_config(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), text).expect("write config");
        file
    }

    #[test]
    fn reads_base64_auth_for_the_registry() -> Result<(), RegistryError> {
        // base64("alice:s3cr:et") — a password may hold colons.
        let file = write_config(
            r#"{"auths": {"127.0.0.1:5000": {"auth": "YWxpY2U6czNjcjpldA=="},
                           "other:1": {"auth": "Ym9iOng="}}}"#,
        );
        let found = from_docker_config(file.path(), "127.0.0.1:5000")?;
        assert_eq!(
            found,
            Some(Credentials {
                username: "alice".into(),
                password: "s3cr:et".into()
            })
        );
        assert_eq!(from_docker_config(file.path(), "127.0.0.1:5001")?, None);
        Ok(())
    }

    #[test]
    fn keys_with_scheme_and_docker_hub() -> Result<(), RegistryError> {
        let file = write_config(
            r#"{"auths": {"https://index.docker.io/v1/": {"username": "u", "password": "p"},
                           "https://reg.example:443/v2/": {"auth": "dTpw"}}}"#,
        );
        let hub = from_docker_config(file.path(), "docker.io")?.map(|c| c.username);
        assert_eq!(hub.as_deref(), Some("u"));
        let other = from_docker_config(file.path(), "reg.example:443")?.map(|c| c.password);
        assert_eq!(other.as_deref(), Some("p"));
        Ok(())
    }

    #[test]
    fn missing_file_is_no_credentials_and_bad_file_an_error() {
        let missing = Path::new("/nonexistent/wasm-oci/config.json");
        assert!(matches!(from_docker_config(missing, "r:1"), Ok(None)));
        let file = write_config("{not json");
        let error = from_docker_config(file.path(), "r:1").expect_err("malformed config");
        assert!(error.to_string().contains("docker config"), "{error}");
        let file = write_config(r#"{"auths": {"r:1": {"auth": "!!"}}}"#);
        let error = from_docker_config(file.path(), "r:1").expect_err("bad base64");
        assert!(error.to_string().contains("not base64"), "{error}");
    }

    #[test]
    fn debug_hides_the_password() {
        let creds = Credentials {
            username: "alice".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{creds:?}").contains("hunter2"));
    }
}
