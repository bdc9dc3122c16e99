//! A real OCI registry for the registry area: Debian's `docker-registry` (the CNCF
//! distribution registry) on a loopback port, with its storage in a temp dir, plain HTTP, TLS
//! with a CA made for the run (`openssl`), or TLS with htpasswd users (`htpasswd`); the
//! containerd side of it (a `hosts.toml` in the CRI plugin's `config_path`, written with the
//! node installer's library); and `wasm-oci` runs against it. Stopped when dropped.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use wasmrunner_installer::registry_hosts::RegistryHost;

use crate::command::{Outcome, run_command};
use crate::containerd::Containerd;
use crate::cri::config::REGISTRY_HOSTS_DIR;
use crate::paths::bin_dir;

/// The user of the htpasswd variant.
pub const USER: (&str, &str) = ("wasmrunner", "e2e-s3cret");

/// How the registry is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// Plain HTTP, anonymous.
    Plain,
    /// HTTPS with a certificate from the test's own CA, anonymous.
    Tls,
    /// HTTPS as [`Variant::Tls`], and htpasswd basic auth for [`USER`].
    TlsAuth,
}

/// A running registry.
pub struct RegistryServer {
    child: Child,
    dir: tempfile::TempDir,
    pub variant: Variant,
    /// `127.0.0.1:PORT`.
    pub address: String,
    /// The CA that signed the registry's certificate (TLS variants).
    pub ca_file: Option<PathBuf>,
}

impl RegistryServer {
    pub fn start(variant: Variant) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("wasmrunner-registry-")
            .tempdir()
            .context("creating the registry's dir")?;
        let address = format!("127.0.0.1:{}", free_port()?);
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {address}\n",
            dir.path().join("data").display()
        );
        let mut ca_file = None;
        if variant != Variant::Plain {
            let (ca, cert, key) = make_certificates(dir.path())?;
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            ));
            ca_file = Some(ca);
        }
        if variant == Variant::TlsAuth {
            let out = run_command(Command::new("htpasswd").args(["-Bbn", USER.0, USER.1]))?.ok()?;
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, out.stdout).context("writing htpasswd")?;
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: wasmrunner-e2e\n    path: {}\n",
                file.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).context("writing the registry config")?;
        let log = std::fs::File::create(dir.path().join("registry.log"))
            .context("creating the registry log")?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("registry log")?)
            .stderr(log)
            .spawn()
            .context("starting docker-registry (Debian package docker-registry)")?;
        let mut server = Self {
            child,
            dir,
            variant,
            address,
            ca_file,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(&server.address).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                bail!("docker-registry exited ({status}): {}", server.log());
            }
            if Instant::now() > deadline {
                bail!(
                    "docker-registry does not listen on {} after 10 s",
                    server.address
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }

    /// Starts a registry of `variant`, pushes `archives` to it as `name` (one archive: its
    /// image; several: an index of their platforms) and writes its `hosts.toml` into
    /// `containerd`'s CRI `config_path`: the server and the pushed reference.
    pub fn with_image(
        variant: Variant,
        archives: &[&Path],
        name: &str,
        containerd: &Containerd,
    ) -> Result<(Self, String)> {
        let server = Self::start(variant)?;
        server.push(archives, name)?;
        server.configure(containerd)?;
        let reference = server.reference(name);
        Ok((server, reference))
    }

    /// What the registry logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// `127.0.0.1:PORT/<name>`.
    pub fn reference(&self, name: &str) -> String {
        format!("{}/{name}", self.address)
    }

    /// The user and password pods and `wasm-oci` use, if the registry wants one.
    pub fn auth(&self) -> Option<(&'static str, &'static str)> {
        (self.variant == Variant::TlsAuth).then_some(USER)
    }

    /// `wasm-oci` flags for this registry: `--plain-http` or `--ca-file`, and the user.
    pub fn wasm_oci_flags(&self) -> Vec<String> {
        let mut flags = Vec::new();
        match &self.ca_file {
            None => flags.push("--plain-http".to_owned()),
            Some(ca) => flags.extend(["--ca-file".to_owned(), ca.display().to_string()]),
        }
        if let Some((user, password)) = self.auth() {
            flags.extend(["-u", user, "-p", password].map(str::to_owned));
        }
        flags
    }

    /// Runs `wasm-oci <verb> <flags> <args>`, with no docker config file to find.
    pub fn wasm_oci(&self, verb: &str, args: &[&str]) -> Result<Outcome> {
        let mut command = Command::new(bin_dir().join("wasm-oci"));
        command
            .arg(verb)
            .args(self.wasm_oci_flags())
            .args(args)
            .env("DOCKER_CONFIG", self.dir.path().join("no-docker-config"));
        run_command(&mut command)
    }

    /// `wasm-oci push ARCHIVES... <registry>/<name>`; the root's digest.
    pub fn push(&self, archives: &[&Path], name: &str) -> Result<String> {
        let reference = self.reference(name);
        let mut args: Vec<String> = archives.iter().map(|a| a.display().to_string()).collect();
        args.push(reference.clone());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self.wasm_oci("push", &args)?.ok()?;
        let line = out
            .stdout
            .lines()
            .find(|l| l.starts_with(&format!("pushed {reference} ")))
            .with_context(|| format!("no `pushed` line: {out}"))?;
        line.split_whitespace()
            .nth(2)
            .map(str::to_owned)
            .with_context(|| format!("no digest in {line:?}"))
    }

    /// How containerd reaches this registry (`hosts.toml`).
    pub fn host(&self) -> RegistryHost {
        RegistryHost {
            host: self.address.clone(),
            plain_http: self.ca_file.is_none(),
            ca_file: self.ca_file.clone(),
        }
    }

    /// Writes the registry's `hosts.toml` into `containerd`'s CRI `config_path`.
    pub fn configure(&self, containerd: &Containerd) -> Result<PathBuf> {
        let dir = hosts_dir(containerd);
        self.host().write(&dir).with_context(|| {
            format!(
                "writing hosts.toml for {} in {}",
                self.address,
                dir.display()
            )
        })
    }

    /// The registry's file of blob `digest` (to corrupt it).
    pub fn blob_file(&self, digest: &str) -> Result<PathBuf> {
        let hex = digest
            .strip_prefix("sha256:")
            .filter(|h| h.len() > 2)
            .with_context(|| format!("not a sha256 digest: {digest}"))?;
        Ok(self
            .dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data"))
    }
}

impl Drop for RegistryServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// containerd's CRI `config_path` in the harness (the installer set it): `<root>/certs.d`.
pub fn hosts_dir(containerd: &Containerd) -> PathBuf {
    containerd.root().join(REGISTRY_HOSTS_DIR)
}

/// A loopback port nothing listens on (bound, then released).
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("finding a free port")?
        .port())
}

/// A CA and a server certificate for `127.0.0.1` signed by it, valid for a day, made with
/// the `openssl` command: `(ca.pem, server.pem, server.key)`.
fn make_certificates(dir: &Path) -> Result<(PathBuf, PathBuf, PathBuf)> {
    let path = |name: &str| dir.join(name);
    let ext = path("server.ext");
    std::fs::write(
        &ext,
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n",
    )
    .context("writing the certificate extensions")?;
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let openssl = |args: &[&str]| -> Result<()> {
        run_command(Command::new("openssl").args(args).current_dir(dir))?
            .ok()
            .map(drop)
    };
    let mut ca = vec![
        "req",
        "-x509",
        "-days",
        "1",
        "-subj",
        "/CN=wasmrunner e2e CA",
    ];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
    ca.extend([
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=keyCertSign",
    ]);
    openssl(&ca)?;
    let mut csr = vec![
        "req",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ];
    csr.extend(ec);
    openssl(&csr)?;
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "server.ext",
        "-out",
        "server.pem",
    ])?;
    let files = (path("ca.pem"), path("server.pem"), path("server.key"));
    ensure!(files.1.is_file(), "openssl wrote no server certificate");
    Ok(files)
}
