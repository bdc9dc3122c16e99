//! Media types and annotation keys that `oci-spec` has no names for.

/// Layer of the CNCF Wasm artifact: the raw wasm bytes.
pub const WASM_LAYER: &str = "application/wasm";
/// Config of the CNCF Wasm artifact.
pub const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
/// runwasi's layer type: the raw wasm bytes (module or component).
pub const RUNWASI_WASM_LAYER: &str =
    "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm";

/// Docker media types that appear in images exported from containerd.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";

/// The annotation `ctr image import` takes the image name from.
pub const CONTAINERD_IMAGE_NAME: &str = "io.containerd.image.name";
/// The OCI annotation for the reference (tag) of a manifest in an index.
pub const OCI_REF_NAME: &str = oci_spec::image::ANNOTATION_REF_NAME;

/// Whether layers of this media type hold a raw wasm binary.
pub fn is_wasm_layer(media_type: &str) -> bool {
    media_type == WASM_LAYER || media_type == RUNWASI_WASM_LAYER
}

/// Whether layers of this media type are uncompressed tar archives.
pub fn is_plain_tar_layer(media_type: &str) -> bool {
    media_type == oci_spec::image::MediaType::ImageLayer.as_ref() || media_type == DOCKER_LAYER_TAR
}
