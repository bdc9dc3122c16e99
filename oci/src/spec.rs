//! What to build: the image name, flavour, files and runtime configuration.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::error::OciError;
use crate::wasm::WasmKind;

/// Mode given to files when none is specified.
pub const DEFAULT_FILE_MODE: u32 = 0o755;

/// The kind of archive to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(into = "String")]
pub enum Flavour {
    /// A normal OCI image with one tar layer holding the files.
    Image,
    /// The CNCF TAG-Runtime Wasm OCI artifact (`application/vnd.wasm.config.v0+json`).
    CncfArtifact,
    /// runwasi's layout: OCI image config, one raw-wasm layer per wasm file.
    RunwasiArtifact,
}

impl Flavour {
    /// All flavours, in a fixed order.
    pub const ALL: [Flavour; 3] = [Self::Image, Self::CncfArtifact, Self::RunwasiArtifact];

    /// The short name used on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Image => "image",
            Self::CncfArtifact => "cncf",
            Self::RunwasiArtifact => "runwasi",
        }
    }
}

impl fmt::Display for Flavour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Flavour {
    type Err = OciError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|flavour| flavour.as_str() == s)
            .ok_or_else(|| OciError::UnknownFlavour(s.to_owned()))
    }
}

impl From<Flavour> for String {
    fn from(flavour: Flavour) -> Self {
        flavour.as_str().to_owned()
    }
}

/// Operating system and architecture of an image.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
}

impl Platform {
    pub fn new(os: impl Into<String>, architecture: impl Into<String>) -> Self {
        Self {
            os: os.into(),
            architecture: architecture.into(),
        }
    }

    /// `linux` on the architecture this program runs on, in GOARCH spelling.
    pub fn host_linux() -> Self {
        Self::new("linux", host_goarch())
    }

    /// The platform a flavour uses when none is given. `first_wasm` is the kind of
    /// the first wasm file, which decides between `wasip1` and `wasip2` for CNCF.
    pub fn default_for(flavour: Flavour, first_wasm: Option<WasmKind>) -> Self {
        match flavour {
            Flavour::Image => Self::host_linux(),
            Flavour::CncfArtifact if first_wasm == Some(WasmKind::Component) => {
                Self::new("wasip2", "wasm")
            }
            Flavour::CncfArtifact => Self::new("wasip1", "wasm"),
            Flavour::RunwasiArtifact => Self::new("wasi", "wasm"),
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)
    }
}

impl FromStr for Platform {
    type Err = OciError;

    /// Parses `os/arch`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || OciError::InvalidPlatform(s.to_owned());
        let (os, arch) = s.split_once('/').ok_or_else(invalid)?;
        let valid_part = |part: &str| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
        };
        if !valid_part(os) || !valid_part(arch) {
            return Err(invalid());
        }
        Ok(Self::new(os, arch))
    }
}

/// The host architecture as Go (and therefore OCI) spells it.
fn host_goarch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "powerpc64" => "ppc64",
        "loongarch64" => "loong64",
        other => other,
    }
}

/// What an entry of a tar layer is. Images normally hold regular files; the others let
/// tests build images whose entrypoint is something else.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// A regular file holding [`ImageFile::contents`].
    Regular,
    /// An empty directory.
    Directory,
    /// A symbolic link to this target, written as it is (absolute, relative, dangling).
    Symlink(String),
    /// A named pipe (FIFO).
    Fifo,
}

/// Where a file goes when its flavour puts wasm binaries in layers of their own, and what
/// the manifest says about that layer: for building images that are wrong on purpose.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct RawLayer {
    /// The layer's media type (any string, empty included) instead of the flavour's.
    pub media_type: Option<String>,
    /// The size the manifest's descriptor declares instead of the blob's real size.
    pub declared_size: Option<u64>,
}

/// One file to put into the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFile {
    /// Absolute path inside the image, e.g. `/hello.wasm`.
    pub path_in_image: String,
    pub contents: Vec<u8>,
    /// Unix permission bits; [`DEFAULT_FILE_MODE`] unless set.
    pub mode: u32,
    /// A regular file unless set otherwise.
    pub kind: EntryKind,
    /// `Some`: the file goes into a raw layer of its own (runwasi flavour) whatever its bytes
    /// are, described as it says; `None`: a raw layer only if it is a wasm binary.
    pub raw_layer: Option<RawLayer>,
}

impl ImageFile {
    pub fn new(path_in_image: impl Into<String>, contents: impl Into<Vec<u8>>) -> Self {
        Self {
            path_in_image: path_in_image.into(),
            contents: contents.into(),
            mode: DEFAULT_FILE_MODE,
            kind: EntryKind::Regular,
            raw_layer: None,
        }
    }

    /// A symbolic link at `path_in_image` pointing to `target`.
    pub fn symlink(path_in_image: impl Into<String>, target: impl Into<String>) -> Self {
        Self {
            kind: EntryKind::Symlink(target.into()),
            mode: 0o777,
            ..Self::new(path_in_image, Vec::new())
        }
    }

    /// A named pipe at `path_in_image`.
    pub fn fifo(path_in_image: impl Into<String>) -> Self {
        Self {
            kind: EntryKind::Fifo,
            mode: 0o644,
            ..Self::new(path_in_image, Vec::new())
        }
    }

    /// An empty directory at `path_in_image`.
    pub fn directory(path_in_image: impl Into<String>) -> Self {
        Self {
            kind: EntryKind::Directory,
            ..Self::new(path_in_image, Vec::new())
        }
    }

    pub fn with_mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    /// Puts the file in a raw layer of its own (runwasi flavour) even if it is not wasm,
    /// with media type `media_type` instead of the flavour's.
    pub fn in_raw_layer(mut self, media_type: impl Into<String>) -> Self {
        self.raw_layer
            .get_or_insert_with(RawLayer::default)
            .media_type = Some(media_type.into());
        self
    }

    /// Puts the file in a raw layer of its own (runwasi flavour) even if it is not wasm,
    /// whose descriptor declares `size` bytes whatever the blob holds.
    pub fn declaring_size(mut self, size: u64) -> Self {
        self.raw_layer
            .get_or_insert_with(RawLayer::default)
            .declared_size = Some(size);
        self
    }

    /// The kind of wasm binary this file is, if it is one (only regular files are).
    pub fn wasm_kind(&self) -> Option<WasmKind> {
        match self.kind {
            EntryKind::Regular => WasmKind::detect(&self.contents),
            _ => None,
        }
    }

    /// Whether the runwasi flavour puts this file in a raw layer of its own.
    pub fn is_raw_layer(&self) -> bool {
        self.raw_layer.is_some() || self.wasm_kind().is_some()
    }
}

/// Everything needed to build one archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSpec {
    /// Image reference, e.g. `docker.io/wasmrunner/hello:latest`.
    pub name: String,
    pub flavour: Flavour,
    pub files: Vec<ImageFile>,
    /// OCI config `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// OCI config `Cmd`.
    pub cmd: Vec<String>,
    /// `K=V` strings for the OCI config `Env`.
    pub env: Vec<String>,
    /// `None` selects the flavour's default, see [`Platform::default_for`].
    pub platform: Option<Platform>,
    /// OCI config `Labels` (image and runwasi flavours: the CNCF config has no labels).
    pub labels: BTreeMap<String, String>,
    /// The image manifest's `annotations`.
    pub annotations: BTreeMap<String, String>,
}

impl ImageSpec {
    pub fn new(name: impl Into<String>, flavour: Flavour) -> Self {
        Self {
            name: name.into(),
            flavour,
            files: Vec::new(),
            entrypoint: Vec::new(),
            cmd: Vec::new(),
            env: Vec::new(),
            platform: None,
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
        }
    }

    /// Adds a file with the default mode.
    pub fn file(self, path_in_image: impl Into<String>, contents: impl Into<Vec<u8>>) -> Self {
        self.add_file(ImageFile::new(path_in_image, contents))
    }

    pub fn add_file(mut self, file: ImageFile) -> Self {
        self.files.push(file);
        self
    }

    pub fn entrypoint<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.entrypoint = args.into_iter().map(Into::into).collect();
        self
    }

    pub fn cmd<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.cmd = args.into_iter().map(Into::into).collect();
        self
    }

    pub fn env<I, S>(mut self, vars: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.env = vars.into_iter().map(Into::into).collect();
        self
    }

    /// Sets label `key` of the image config (replacing an earlier value).
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Sets annotation `key` of the image manifest (replacing an earlier value).
    pub fn annotation(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.annotations.insert(key.into(), value.into());
        self
    }

    pub fn platform(mut self, platform: Platform) -> Self {
        self.platform = Some(platform);
        self
    }

    /// When no entrypoint is set and exactly one file is a wasm binary, makes that
    /// file's path the entrypoint.
    pub fn with_default_entrypoint(mut self) -> Self {
        if self.entrypoint.is_empty() {
            let wasm: Vec<&ImageFile> = self.wasm_files().collect();
            if let [only] = wasm.as_slice() {
                let path = only.path_in_image.clone();
                self.entrypoint = vec![path];
            }
        }
        self
    }

    /// The files that are wasm binaries, in order.
    pub fn wasm_files(&self) -> impl Iterator<Item = &ImageFile> {
        self.files.iter().filter(|f| f.wasm_kind().is_some())
    }

    /// The platform that will be written: the explicit one or the flavour default.
    pub fn effective_platform(&self) -> Platform {
        self.platform.clone().unwrap_or_else(|| {
            let first_wasm = self.wasm_files().next().and_then(ImageFile::wasm_kind);
            Platform::default_for(self.flavour, first_wasm)
        })
    }

    /// Checks the name and the file paths.
    pub fn validate(&self) -> Result<(), OciError> {
        validate_name(&self.name)?;
        if self.files.is_empty() {
            return Err(OciError::NoFiles);
        }
        if !self.labels.is_empty() && self.flavour == Flavour::CncfArtifact {
            return Err(OciError::NoConfigLabels {
                flavour: self.flavour.as_str(),
            });
        }
        for key in self.labels.keys().chain(self.annotations.keys()) {
            if key.is_empty() {
                return Err(OciError::EmptyKey);
            }
        }
        let mut files = BTreeSet::new();
        let mut directories = BTreeSet::new();
        for file in &self.files {
            validate_path(&file.path_in_image)?;
            if !files.insert(file.path_in_image.as_str()) {
                return Err(OciError::DuplicatePath(file.path_in_image.clone()));
            }
            match &file.kind {
                EntryKind::Directory => {
                    directories.insert(file.path_in_image.as_str());
                }
                EntryKind::Symlink(target) if target.is_empty() || target.contains('\0') => {
                    return Err(OciError::InvalidPath {
                        path: file.path_in_image.clone(),
                        reason: "a symlink needs a target without NUL bytes",
                    });
                }
                _ => {}
            }
            if file.kind != EntryKind::Regular && file.raw_layer.is_some() {
                return Err(OciError::InvalidPath {
                    path: file.path_in_image.clone(),
                    reason: "only a regular file can be a raw layer",
                });
            }
        }
        // A file may not sit where another file needs a parent directory.
        for file in &self.files {
            for dir in parent_dirs(&file.path_in_image) {
                if files.contains(dir) && !directories.contains(dir) {
                    return Err(OciError::DuplicatePath(dir.to_owned()));
                }
            }
        }
        Ok(())
    }
}

fn validate_name(name: &str) -> Result<(), OciError> {
    let invalid = |reason| OciError::InvalidName {
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("it is empty"));
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid("it contains whitespace or control characters"));
    }
    if name.starts_with(['/', ':', '@']) || name.ends_with(['/', ':', '@']) {
        return Err(invalid("it starts or ends with '/', ':' or '@'"));
    }
    Ok(())
}

/// A path in the image must be absolute and normalized: `/a/b.wasm`.
pub(crate) fn validate_path(path: &str) -> Result<(), OciError> {
    let invalid = |reason| OciError::InvalidPath {
        path: path.to_owned(),
        reason,
    };
    let Some(relative) = path.strip_prefix('/') else {
        return Err(invalid("it must be absolute"));
    };
    if relative.is_empty() {
        return Err(invalid("it names the root directory"));
    }
    if path.contains('\0') {
        return Err(invalid("it contains a NUL byte"));
    }
    for component in relative.split('/') {
        match component {
            "" => return Err(invalid("it has an empty component or a trailing '/'")),
            "." | ".." => return Err(invalid("it contains '.' or '..'")),
            _ => {}
        }
    }
    Ok(())
}

/// The ancestors of an absolute path, outermost first, without the root:
/// `/a/b/c` gives `/a`, `/a/b`.
pub(crate) fn parent_dirs(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/')
        .map(|(index, _)| &path[..index])
        .filter(|dir| !dir.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODULE: &[u8] = b"\0asm\x01\0\0\0";
    const COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

    #[test]
    fn flavour_round_trips_through_strings() {
        for flavour in Flavour::ALL {
            assert_eq!(flavour.to_string().parse::<Flavour>().ok(), Some(flavour));
        }
        assert!(matches!(
            "oci".parse::<Flavour>(),
            Err(OciError::UnknownFlavour(s)) if s == "oci"
        ));
    }

    #[test]
    fn platform_parses_os_arch() {
        let platform: Platform = "wasi/wasm".parse().expect("valid platform");
        assert_eq!(platform, Platform::new("wasi", "wasm"));
        assert_eq!(platform.to_string(), "wasi/wasm");
        for bad in ["linux", "/amd64", "linux/", "linux/amd64/v8", "a b/c"] {
            assert!(bad.parse::<Platform>().is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn default_platforms_follow_flavour_and_first_wasm() {
        let host = Platform::host_linux();
        assert_eq!(host.os, "linux");
        if cfg!(target_arch = "x86_64") {
            assert_eq!(host.architecture, "amd64");
        }
        if cfg!(target_arch = "aarch64") {
            assert_eq!(host.architecture, "arm64");
        }
        let cncf = ImageSpec::new("x", Flavour::CncfArtifact);
        let module = cncf.clone().file("/a.wasm", MODULE);
        let component = cncf
            .file("/readme", b"hi".to_vec())
            .file("/c.wasm", COMPONENT);
        assert_eq!(module.effective_platform(), Platform::new("wasip1", "wasm"));
        assert_eq!(
            component.effective_platform(),
            Platform::new("wasip2", "wasm")
        );
        let runwasi = ImageSpec::new("x", Flavour::RunwasiArtifact).file("/c.wasm", COMPONENT);
        assert_eq!(runwasi.effective_platform(), Platform::new("wasi", "wasm"));
        let explicit = runwasi.platform(Platform::new("linux", "riscv64"));
        assert_eq!(
            explicit.effective_platform(),
            Platform::new("linux", "riscv64")
        );
    }

    #[test]
    fn default_entrypoint_needs_exactly_one_wasm_file() {
        let one = ImageSpec::new("x", Flavour::Image)
            .file("/etc/config", b"k=v".to_vec())
            .file("/bin/app.wasm", MODULE)
            .with_default_entrypoint();
        assert_eq!(one.entrypoint, ["/bin/app.wasm"]);

        let two = ImageSpec::new("x", Flavour::Image)
            .file("/a.wasm", MODULE)
            .file("/b.wasm", MODULE)
            .with_default_entrypoint();
        assert!(two.entrypoint.is_empty());

        let explicit = ImageSpec::new("x", Flavour::Image)
            .file("/a.wasm", MODULE)
            .entrypoint(["/a.wasm", "--flag"])
            .with_default_entrypoint();
        assert_eq!(explicit.entrypoint, ["/a.wasm", "--flag"]);
    }

    #[test]
    fn validation_rejects_bad_paths_and_names() {
        let base = ImageSpec::new("docker.io/x/y:1", Flavour::Image);
        assert!(base.clone().file("/a.wasm", MODULE).validate().is_ok());
        assert!(matches!(base.validate(), Err(OciError::NoFiles)));
        for bad in ["a.wasm", "/", "/a//b", "/a/../b", "/a/./b", "/dir/"] {
            let spec = ImageSpec::new("x", Flavour::Image).file(bad, MODULE);
            assert!(
                matches!(spec.validate(), Err(OciError::InvalidPath { .. })),
                "{bad} should be rejected"
            );
        }
        let duplicate = ImageSpec::new("x", Flavour::Image)
            .file("/a", MODULE)
            .file("/a", MODULE);
        assert!(matches!(duplicate.validate(), Err(OciError::DuplicatePath(p)) if p == "/a"));
        let file_as_dir = ImageSpec::new("x", Flavour::Image)
            .file("/a", MODULE)
            .file("/a/b", MODULE);
        assert!(matches!(file_as_dir.validate(), Err(OciError::DuplicatePath(p)) if p == "/a"));
        for bad in ["", "has space:1", "name:"] {
            let spec = ImageSpec::new(bad, Flavour::Image).file("/a", MODULE);
            assert!(
                matches!(spec.validate(), Err(OciError::InvalidName { .. })),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn special_entries_are_checked_and_never_wasm() {
        let dir_with_contents = ImageSpec::new("x", Flavour::Image)
            .add_file(ImageFile::directory("/d.wasm"))
            .file("/d.wasm/a", MODULE);
        assert!(dir_with_contents.validate().is_ok());
        let dangling = ImageSpec::new("x", Flavour::Image).add_file(ImageFile::symlink("/l", ""));
        assert!(matches!(
            dangling.validate(),
            Err(OciError::InvalidPath { .. })
        ));
        let raw_fifo = ImageSpec::new("x", Flavour::RunwasiArtifact)
            .add_file(ImageFile::fifo("/p.wasm").in_raw_layer("application/wasm"));
        assert!(matches!(
            raw_fifo.validate(),
            Err(OciError::InvalidPath { .. })
        ));
        let mut fifo = ImageFile::fifo("/p.wasm");
        fifo.contents = MODULE.to_vec();
        assert_eq!(fifo.wasm_kind(), None);
        assert!(!fifo.is_raw_layer());
        assert!(
            ImageFile::new("/t", b"text".to_vec())
                .declaring_size(3)
                .is_raw_layer()
        );
    }

    #[test]
    fn labels_need_an_image_config_and_keys_a_name() {
        let labelled = |flavour| {
            ImageSpec::new("x", flavour)
                .file("/a.wasm", MODULE)
                .label("wasmrunner.dev/env", "APP_*")
        };
        assert!(labelled(Flavour::Image).validate().is_ok());
        assert!(labelled(Flavour::RunwasiArtifact).validate().is_ok());
        assert!(matches!(
            labelled(Flavour::CncfArtifact).validate(),
            Err(OciError::NoConfigLabels { flavour: "cncf" })
        ));
        let annotated = ImageSpec::new("x", Flavour::CncfArtifact)
            .file("/a.wasm", MODULE)
            .annotation("wasmrunner.dev/env", "APP_*");
        assert!(annotated.validate().is_ok());
        let unnamed = ImageSpec::new("x", Flavour::Image)
            .file("/a.wasm", MODULE)
            .annotation("", "v");
        assert!(matches!(unnamed.validate(), Err(OciError::EmptyKey)));
    }

    #[test]
    fn parent_dirs_are_outermost_first() {
        assert_eq!(parent_dirs("/a/b/c").collect::<Vec<_>>(), ["/a", "/a/b"]);
        assert_eq!(parent_dirs("/c").count(), 0);
    }
}
