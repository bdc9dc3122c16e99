//! The config blob of each flavour.

use oci_spec::image::{
    Arch, ConfigBuilder, ImageConfiguration, ImageConfigurationBuilder, MediaType, Os,
    RootFsBuilder,
};
use serde::Serialize;

use crate::blob::Blob;
use crate::error::OciError;
use crate::json::to_canonical_vec;
use crate::media_types::WASM_CONFIG;
use crate::spec::{Flavour, ImageSpec, Platform};
use crate::tarball::FIXED_CREATED;
use crate::wasm::WasmKind;

/// Author recorded in CNCF configs.
pub(crate) const AUTHOR: &str = "wasmrunner";

/// Builds the config blob for `spec` given its layers (in manifest order).
pub(crate) fn build_config(
    spec: &ImageSpec,
    platform: &Platform,
    layers: &[Blob],
) -> Result<Blob, OciError> {
    match spec.flavour {
        Flavour::Image | Flavour::RunwasiArtifact => {
            // Only filesystem layers have diff IDs: containerd (1.6.25, 1.7.7, 2.x) unpacks
            // the tar layers and skips wasm-typed ones, then checks that the config lists one
            // diff ID per layer it unpacked ("mismatched image rootfs and manifest layers").
            // Every tar layer is uncompressed, so its diff ID is its digest.
            let diff_ids = layers
                .iter()
                .filter(|layer| layer.media_type == MediaType::ImageLayer)
                .map(|layer| layer.digest.to_string())
                .collect();
            let config = oci_image_config(spec, platform, diff_ids)?;
            Blob::new(
                MediaType::ImageConfig,
                to_canonical_vec(&config, "image config")?,
            )
        }
        Flavour::CncfArtifact => {
            let layer_digests = layers.iter().map(|l| l.digest.to_string()).collect();
            let is_component = spec.wasm_files().next().and_then(|file| file.wasm_kind())
                == Some(WasmKind::Component);
            let config = WasmConfig {
                created: FIXED_CREATED,
                author: AUTHOR,
                architecture: &platform.architecture,
                os: &platform.os,
                layer_digests,
                component: is_component.then(Component::default),
            };
            Blob::new(
                MediaType::Other(WASM_CONFIG.to_owned()),
                to_canonical_vec(&config, "wasm config")?,
            )
        }
    }
}

fn oci_image_config(
    spec: &ImageSpec,
    platform: &Platform,
    diff_ids: Vec<String>,
) -> Result<ImageConfiguration, OciError> {
    let mut runtime = ConfigBuilder::default();
    if !spec.entrypoint.is_empty() {
        runtime = runtime.entrypoint(spec.entrypoint.clone());
    }
    if !spec.cmd.is_empty() {
        runtime = runtime.cmd(spec.cmd.clone());
    }
    if !spec.env.is_empty() {
        runtime = runtime.env(spec.env.clone());
    }
    if !spec.labels.is_empty() {
        runtime = runtime.labels(
            spec.labels
                .iter()
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect::<std::collections::HashMap<_, _>>(),
        );
    }
    let rootfs = RootFsBuilder::default()
        .typ("layers")
        .diff_ids(diff_ids)
        .build()?;
    Ok(ImageConfigurationBuilder::default()
        .created(FIXED_CREATED)
        .architecture(Arch::from(platform.architecture.as_str()))
        .os(Os::from(platform.os.as_str()))
        .config(runtime.build()?)
        .rootfs(rootfs)
        .build()?)
}

/// `application/vnd.wasm.config.v0+json`, as the CNCF TAG-Runtime artifact spec describes it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WasmConfig<'a> {
    created: &'a str,
    author: &'a str,
    architecture: &'a str,
    os: &'a str,
    layer_digests: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    component: Option<Component>,
}

/// The component's world; left empty since the binary is not parsed.
#[derive(Serialize, Default)]
struct Component {
    exports: Vec<String>,
    imports: Vec<String>,
}
