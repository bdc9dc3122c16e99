//! Exporting an image from containerd with `ctr`, to inspect it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::OciError;
use crate::inspect::{Inspection, inspect_archive};

/// containerd's default socket.
pub const DEFAULT_ADDRESS: &str = "/run/containerd/containerd.sock";
/// containerd's default namespace.
pub const DEFAULT_NAMESPACE: &str = "default";

/// How to reach containerd through `ctr`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ctr {
    /// The `ctr` program; looked up in `PATH` when it is a bare name.
    pub program: PathBuf,
    pub address: String,
    pub namespace: String,
}

impl Default for Ctr {
    fn default() -> Self {
        Self {
            program: PathBuf::from("ctr"),
            address: DEFAULT_ADDRESS.to_owned(),
            namespace: DEFAULT_NAMESPACE.to_owned(),
        }
    }
}

impl Ctr {
    /// Runs `ctr -a ADDRESS -n NAMESPACE image export --all-platforms OUT REFERENCE`.
    pub fn export(&self, reference: &str, out: &Path) -> Result<(), OciError> {
        let mut command = Command::new(&self.program);
        command
            .arg("-a")
            .arg(&self.address)
            .arg("-n")
            .arg(&self.namespace)
            .args(["image", "export", "--all-platforms"])
            .arg(out)
            .arg(reference);
        let output = command.output().map_err(|source| OciError::CtrSpawn {
            program: self.program.display().to_string(),
            source,
        })?;
        if output.status.success() {
            return Ok(());
        }
        Err(OciError::CtrFailed {
            command: describe(&command),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }

    /// Exports `reference` into a temporary file and inspects it.
    pub fn inspect_image(&self, reference: &str) -> Result<Inspection, OciError> {
        inspect_archive(self.exported(reference)?.as_slice())
    }

    /// The archive `ctr image export` makes of `reference` (every platform), in memory.
    pub fn exported(&self, reference: &str) -> Result<Vec<u8>, OciError> {
        let export = TempPath::new("wasm-oci-export", "tar")?;
        self.export(reference, &export.0)?;
        std::fs::read(&export.0)
            .map_err(|e| OciError::io(format!("reading {}", export.0.display()), e))
    }
}

fn describe(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|part| part.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A path in the temporary directory, removed (if it exists) on drop.
struct TempPath(PathBuf);

impl TempPath {
    fn new(prefix: &str, extension: &str) -> Result<Self, OciError> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let name = format!("{prefix}-{}-{nanos}.{extension}", std::process::id());
        let path = std::env::temp_dir().join(name);
        if path.exists() {
            return Err(OciError::io(
                format!("creating {}", path.display()),
                std::io::ErrorKind::AlreadyExists.into(),
            ));
        }
        Ok(Self(path))
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        // Nothing to do if ctr never created it.
        let _ = std::fs::remove_file(&self.0);
    }
}
