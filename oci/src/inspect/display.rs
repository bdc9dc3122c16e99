//! Human-readable rendering of an [`Inspection`].

use std::fmt::{self, Display, Formatter};

use super::model::{
    InspectedConfig, InspectedImage, InspectedLayer, InspectedManifest, Inspection,
};
use crate::media_types::is_wasm_layer;

impl Display for Inspection {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        for image in &self.images {
            write_image(f, image)?;
        }
        if !self.repo_tags.is_empty() {
            writeln!(f, "manifest.json tags {}", self.repo_tags.join(", "))?;
        }
        Ok(())
    }
}

fn write_image(f: &mut Formatter<'_>, image: &InspectedImage) -> fmt::Result {
    if image.names.is_empty() {
        writeln!(f, "image (unnamed) {}", image.digest)?;
    } else {
        writeln!(f, "image {}", image.names.join(", "))?;
    }
    for index in &image.indexes {
        writeln!(f, "  index {} ({} entries)", index.digest, index.manifests)?;
    }
    for manifest in &image.manifests {
        write_manifest(f, manifest)?;
    }
    Ok(())
}

fn write_manifest(f: &mut Formatter<'_>, manifest: &InspectedManifest) -> fmt::Result {
    write!(f, "  manifest {}", manifest.digest)?;
    if let Some(platform) = &manifest.platform {
        write!(f, " ({platform})")?;
    }
    if !manifest.in_archive {
        write!(f, " not in archive")?;
    }
    writeln!(f)?;
    if let Some(artifact_type) = &manifest.artifact_type {
        writeln!(f, "    artifact type {artifact_type}")?;
    }
    for (key, value) in &manifest.annotations {
        writeln!(f, "    annotation {key}={value}")?;
    }
    if let Some(config) = &manifest.config {
        write_config(f, config)?;
    }
    for layer in &manifest.layers {
        write_layer(f, layer)?;
    }
    Ok(())
}

fn write_config(f: &mut Formatter<'_>, config: &InspectedConfig) -> fmt::Result {
    write!(f, "    config {} {}", config.media_type, config.digest)?;
    if config.component {
        write!(f, " (component)")?;
    }
    writeln!(f)?;
    for (label, value) in [
        ("entrypoint", &config.entrypoint),
        ("cmd", &config.cmd),
        ("env", &config.env),
    ] {
        if let Some(list) = value {
            writeln!(f, "    {label} {}", JsonList(list))?;
        }
    }
    for (key, value) in &config.labels {
        writeln!(f, "    label {key}={value}")?;
    }
    Ok(())
}

fn write_layer(f: &mut Formatter<'_>, layer: &InspectedLayer) -> fmt::Result {
    write!(
        f,
        "    layer {} {} bytes {}",
        layer.media_type, layer.size, layer.digest
    )?;
    match (&layer.wasm, layer.in_archive) {
        (_, false) => write!(f, " (not in archive)")?,
        (Some(kind), true) => write!(f, " ({kind})")?,
        (None, true) if is_wasm_layer(&layer.media_type) => write!(f, " (not a wasm binary)")?,
        (None, true) => {}
    }
    writeln!(f)?;
    for file in &layer.wasm_files {
        writeln!(
            f,
            "      file {} {} bytes ({})",
            file.path, file.size, file.kind
        )?;
    }
    Ok(())
}

/// A list of strings shown as a JSON array: `["/hello.wasm", "arg"]`.
struct JsonList<'a>(&'a [String]);

impl Display for JsonList<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, item) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{item:?}")?;
        }
        f.write_str("]")
    }
}
