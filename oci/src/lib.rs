//! Builds OCI image-layout tar archives from `.wasm` files, in three flavours that
//! `ctr image import` understands, inspects such archives, and pushes them to and pulls them
//! from OCI distribution registries ([`registry`]).
//!
//! ```no_run
//! use wasmrunner_oci::{Flavour, ImageSpec, write_archive};
//!
//! let wasm = std::fs::read("hello.wasm")?;
//! let spec = ImageSpec::new("docker.io/wasmrunner/hello:latest", Flavour::RunwasiArtifact)
//!     .file("/hello.wasm", wasm)
//!     .entrypoint(["/hello.wasm"]);
//! let summary = write_archive(&spec, "hello.tar".as_ref())?;
//! println!("{}", summary.manifest.digest);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod archive;
mod blob;
mod config;
pub mod containerd;
mod error;
mod inspect;
mod json;
mod layers;
mod manifest;
pub mod media_types;
mod reference;
pub mod registry;
mod spec;
mod tarball;
mod wasm;

pub use archive::{ArchiveSummary, build_archive, write_archive};
pub use blob::{BlobSummary, sha256_digest};
pub use error::OciError;
pub use inspect::{
    InspectedConfig, InspectedImage, InspectedIndex, InspectedLayer, InspectedManifest,
    InspectedWasmFile, Inspection, inspect_archive,
};
pub use reference::tag_of;
pub use spec::{DEFAULT_FILE_MODE, EntryKind, Flavour, ImageFile, ImageSpec, Platform, RawLayer};
pub use wasm::WasmKind;
