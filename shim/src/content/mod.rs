//! containerd's content store, seen from the shim: the wasm layers of a container's image,
//! and the cache of precompiled modules.
//!
//! [`ContentStore::image_content`] follows container → image → target (an index or a
//! manifest) → manifest → layers, and returns the layers whose media type the engine
//! supports, and the capabilities the image declares. With a compiler it also keeps
//! precompiled modules in the content store, under runwasi's label scheme (see [`labels`]), so that runwasi shims and ours share the cache.
//!
//! Everything is async and needs a tokio runtime with I/O enabled (`enable_all()`); the
//! connection belongs to the runtime it was made on, so use the same runtime for
//! [`ContentStore::connect`] and the calls (`block_on` from a synchronous handler is fine).

mod error;
pub mod labels;
mod manifest;
mod rpc;

use std::collections::HashMap;
use std::path::Path;

use containerd_client::tonic::metadata::AsciiMetadataValue;
use containerd_client::tonic::transport::Channel;
use containerd_shim_wasm::sandbox::context::WasmLayer;
use containerd_shim_wasm::shim::Compiler;
use oci_spec::image::{Descriptor, Digest, ImageIndex, ImageManifest};
use wasmrunner_capabilities::ANNOTATION_PREFIX;

use crate::module_cache::CompiledModule;

pub use error::ContentError;
pub use labels::{cache_key_hash, precompiled_label};
use manifest::{DocumentKind, classify, describe_entries, first_present, ranked_manifests};

use self::error::error_chain;

/// How many indexes deep an image target may nest before we give up.
const MAX_INDEX_DEPTH: usize = 4;

/// A connection to containerd's gRPC API, bound to one namespace.
#[derive(Debug, Clone)]
pub struct ContentStore {
    channel: Channel,
    namespace: String,
    namespace_header: AsciiMetadataValue,
}

/// What the shim reads from a container's image (see [`ContentStore::image_content`]).
#[derive(Debug, Default)]
pub struct ImageContent {
    pub wasm_layers: Vec<WasmLayer>,
    /// The capability keys the image declares, as `(name, value)`.
    pub declared: Vec<(String, String)>,
    /// The precompiled code of the image's one wasm layer, found in the node's module cache
    /// (by the digest containerd's label names): the layer was not read, and its bytes are
    /// empty.
    pub on_node: Option<CompiledModule>,
}

/// Finds the node cache's entry for precompiled code by its sha256 (hex), if the node has
/// it.
pub type NodeCode<'a> = &'a (dyn Fn(&str) -> Option<CompiledModule> + Sync);

/// A layer's precompiled code: read from containerd's content store, or found on the node.
enum Precompiled {
    Read(Vec<u8>),
    OnNode(CompiledModule),
}

/// The image a container runs, as far as labelling goes.
struct ImageTarget {
    name: String,
    digest: String,
}

impl ContentStore {
    /// Connects to containerd's gRPC socket (a path, optionally written `unix://<path>`).
    pub async fn connect(address: impl AsRef<Path>, namespace: &str) -> Result<Self, ContentError> {
        let address = address.as_ref();
        let text = address.to_string_lossy();
        let path = match text.strip_prefix("unix://") {
            Some(stripped) => Path::new(stripped).to_path_buf(),
            None => address.to_path_buf(),
        };
        let namespace_header = AsciiMetadataValue::try_from(namespace).map_err(|_| {
            ContentError::InvalidNamespace {
                namespace: namespace.to_owned(),
            }
        })?;
        let channel =
            containerd_client::connect(&path)
                .await
                .map_err(|err| ContentError::Connect {
                    address: path.display().to_string(),
                    reason: error_chain(&err),
                })?;
        Ok(Self {
            channel,
            namespace: namespace.to_owned(),
            namespace_header,
        })
    }

    /// The namespace this store works in.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// What the shim needs from container `container_id`'s image: its layers whose media
    /// type is in `supported`, with their bytes, in manifest order (empty when the container
    /// has no image or the image has no such layers: a normal image whose rootfs holds the
    /// module), and what the image declares of its capabilities.
    ///
    /// With a `compiler`, each layer comes back precompiled when the store has it cached for
    /// this engine and cache key; the others are compiled, cached and returned compiled. A
    /// layer the compiler returns `None` for comes back as it is (`precompiled: false`), and
    /// so do all of them if compiling fails. Failing to cache is logged, not returned: the
    /// compiled bytes are still used.
    pub async fn image_content<C: Compiler>(
        &self,
        container_id: &str,
        engine_name: &str,
        supported: &[&str],
        compiler: Option<&C>,
        node_code: NodeCode<'_>,
    ) -> Result<ImageContent, ContentError> {
        let container = self.get_container(container_id).await?;
        if container.image.is_empty() {
            tracing::debug!("container {container_id:?} has no image: no wasm layers");
            return Ok(ImageContent::default());
        }
        let image = self.get_image(&container.image, container_id).await?;
        let target = image.target.ok_or_else(|| ContentError::MissingTarget {
            image: image.name.clone(),
        })?;
        let image = ImageTarget {
            name: image.name,
            digest: target.digest.clone(),
        };
        let Some(manifest) = self.resolve_manifest(&image.name, target).await? else {
            tracing::info!(
                "image {:?} has no manifest for wasm or this host: no wasm layers",
                image.name
            );
            return Ok(ImageContent::default());
        };
        let declared = self.declarations(&image.name, &manifest).await?;
        let wanted: Vec<Descriptor> = manifest
            .layers()
            .iter()
            .filter(|layer| supported.contains(&layer.media_type().to_string().as_str()))
            .cloned()
            .collect();
        if wanted.is_empty() {
            tracing::debug!("image {:?} has no wasm layers", image.name);
            return Ok(ImageContent {
                wasm_layers: Vec::new(),
                declared,
                on_node: None,
            });
        }
        // Code on the node is used only for an image of one wasm layer: the one the shim
        // maps (see `TaskService::mapped_layer`).
        let node_code = (wanted.len() == 1).then_some(node_code);
        let (wasm_layers, on_node) = match compiler {
            None => {
                let mut layers = Vec::with_capacity(wanted.len());
                for descriptor in wanted {
                    layers.push(self.original_layer(&image.name, descriptor).await?);
                }
                (layers, None)
            }
            Some(compiler) => {
                let label = precompiled_label(engine_name, compiler.cache_key());
                self.precompiled_layers(&image, wanted, engine_name, &label, compiler, node_code)
                    .await?
            }
        };
        Ok(ImageContent {
            wasm_layers,
            declared,
            on_node,
        })
    }

    /// The manifest's annotations and the image config's labels whose names are capability
    /// keys (`wasmrunner_capabilities`): what the image says its module needs. A config that
    /// is not JSON with `config.Labels` (a Wasm artifact's, say) declares nothing, and so
    /// does one that cannot be read (logged): a declaration only narrows what the container's
    /// annotations grant, so going without one never widens the guest's reach.
    async fn declarations(
        &self,
        image: &str,
        manifest: &ImageManifest,
    ) -> Result<Vec<(String, String)>, ContentError> {
        /// An image config is a few KiB; a bigger one is not read for labels.
        const MAX_CONFIG_BYTES: u64 = 1 << 20;
        let ours = |name: &String| name.starts_with(ANNOTATION_PREFIX);
        let mut declared: Vec<(String, String)> = manifest
            .annotations()
            .iter()
            .flatten()
            .filter(|(name, _)| ours(name))
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        let config = manifest.config();
        let what = format!("the config of image {image:?}");
        if config.size() > MAX_CONFIG_BYTES {
            tracing::warn!("{what} is {} bytes: not reading its labels", config.size());
            return Ok(declared);
        }
        let bytes = match self
            .read(config.digest().as_ref(), &what, Some(config.size()))
            .await
        {
            Ok(bytes) => bytes,
            Err(err) => {
                tracing::warn!("not reading the capabilities the image declares: {err}");
                return Ok(declared);
            }
        };
        let labels = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|json| json.get("config")?.get("Labels")?.as_object().cloned())
            .unwrap_or_default();
        declared.extend(
            labels
                .into_iter()
                .filter(|(name, _)| ours(name))
                .filter_map(|(name, value)| value.as_str().map(|value| (name, value.to_string()))),
        );
        Ok(declared)
    }

    /// Follows `target` through indexes to the manifest to use: in an index, the first entry
    /// (wasm first, then this host's platform) whose manifest containerd holds. `None` when an
    /// index has no entry for wasm or this host; an error when it has, but containerd holds
    /// none of them.
    async fn resolve_manifest(
        &self,
        image: &str,
        target: containerd_client::types::Descriptor,
    ) -> Result<Option<ImageManifest>, ContentError> {
        let mut media_type = target.media_type;
        let mut digest = target.digest;
        let mut size = u64::try_from(target.size).ok().filter(|size| *size > 0);
        let mut what = format!("the target of image {image:?}");
        for _ in 0..=MAX_INDEX_DEPTH {
            parse_digest(&digest, &what)?;
            let bytes = self.read(&digest, &what, size).await?;
            match classify(&media_type, &bytes) {
                DocumentKind::Manifest => {
                    let manifest = ImageManifest::from_reader(bytes.as_slice()).map_err(|err| {
                        ContentError::InvalidDocument {
                            what: what.clone(),
                            digest: digest.clone(),
                            kind: "image manifest",
                            reason: error_chain(&err),
                        }
                    })?;
                    return Ok(Some(manifest));
                }
                DocumentKind::Index => {
                    let index = ImageIndex::from_reader(bytes.as_slice()).map_err(|err| {
                        ContentError::InvalidDocument {
                            what: what.clone(),
                            digest: digest.clone(),
                            kind: "image index",
                            reason: error_chain(&err),
                        }
                    })?;
                    let ranked = ranked_manifests(index.manifests());
                    if ranked.is_empty() {
                        return Ok(None);
                    }
                    let mut present = Vec::with_capacity(ranked.len());
                    for entry in &ranked {
                        present.push(self.holds(entry.digest().as_ref(), &what).await?);
                    }
                    let Some(chosen) = first_present(&ranked, &present) else {
                        return Err(ContentError::NoManifestInStore {
                            image: image.to_owned(),
                            index: digest,
                            entries: describe_entries(&ranked),
                        });
                    };
                    what = format!("the manifest picked from the index of image {image:?}");
                    media_type = chosen.media_type().to_string();
                    digest = chosen.digest().to_string();
                    size = Some(chosen.size());
                }
                DocumentKind::Unknown => {
                    return Err(ContentError::UnsupportedDocument {
                        what,
                        digest,
                        media_type,
                    });
                }
            }
        }
        Err(ContentError::IndexTooDeep {
            image: image.to_owned(),
            max: MAX_INDEX_DEPTH,
        })
    }

    /// Whether the content store holds `digest` (an entry of `what`, an index).
    async fn holds(&self, digest: &str, what: &str) -> Result<bool, ContentError> {
        let entry = format!("an entry of {what}");
        parse_digest(digest, &entry)?;
        match self.info(digest, &entry).await {
            Ok(_) => Ok(true),
            Err(ContentError::ContentNotFound { .. }) => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// The layer's own bytes.
    async fn original_layer(
        &self,
        image: &str,
        descriptor: Descriptor,
    ) -> Result<WasmLayer, ContentError> {
        let digest = descriptor.digest().to_string();
        let what = format!("a wasm layer of image {image:?}");
        let layer = self.read(&digest, &what, Some(descriptor.size())).await?;
        Ok(WasmLayer {
            config: descriptor,
            precompiled: false,
            layer,
        })
    }

    async fn precompiled_layers<C: Compiler>(
        &self,
        image: &ImageTarget,
        wanted: Vec<Descriptor>,
        engine_name: &str,
        label: &str,
        compiler: &C,
        node_code: Option<NodeCode<'_>>,
    ) -> Result<(Vec<WasmLayer>, Option<CompiledModule>), ContentError> {
        let mut on_node = None;
        let mut layers: Vec<Option<WasmLayer>> = Vec::with_capacity(wanted.len());
        let mut positions = Vec::new();
        let mut to_compile = Vec::new();
        for descriptor in wanted {
            match self
                .cached_module(&image.name, &descriptor, label, node_code)
                .await
            {
                Ok(Some(module)) => {
                    let layer = match module {
                        Precompiled::Read(bytes) => bytes,
                        Precompiled::OnNode(module) => {
                            on_node = Some(module);
                            Vec::new()
                        }
                    };
                    layers.push(Some(WasmLayer {
                        config: descriptor,
                        precompiled: true,
                        layer,
                    }));
                    continue;
                }
                Ok(None) => {}
                Err(err) => tracing::warn!("not using the precompiled cache: {err}"),
            }
            positions.push(layers.len());
            layers.push(None);
            to_compile.push(self.original_layer(&image.name, descriptor).await?);
        }
        if to_compile.is_empty() {
            tracing::info!("all wasm layers of image {:?} are precompiled", image.name);
            return Ok((layers.into_iter().flatten().collect(), on_node));
        }

        tracing::info!(
            "precompiling {} wasm layer(s) of image {:?} with {engine_name}",
            to_compile.len(),
            image.name
        );
        let compiled = match compiler.compile(&to_compile).await {
            Ok(compiled) => compiled,
            Err(err) => {
                tracing::warn!(
                    "precompiling image {:?} with {engine_name} failed, using the layers as they are: {err:#}",
                    image.name
                );
                to_compile.iter().map(|_| None).collect()
            }
        };
        if compiled.len() != to_compile.len() {
            return Err(ContentError::CompilerContract {
                engine: engine_name.to_owned(),
                expected: to_compile.len(),
                got: compiled.len(),
            });
        }

        let mut fresh = Vec::new();
        for ((position, original), compiled) in positions.into_iter().zip(to_compile).zip(compiled)
        {
            let layer = match compiled {
                Some(module) => {
                    fresh.push(position);
                    WasmLayer {
                        config: original.config,
                        precompiled: true,
                        layer: module,
                    }
                }
                None => original,
            };
            if let Some(slot) = layers.get_mut(position) {
                *slot = Some(layer);
            }
        }
        let modules: Vec<&WasmLayer> = fresh
            .iter()
            .filter_map(|position| layers.get(*position).and_then(Option::as_ref))
            .collect();
        if let Err(err) = self.cache_modules(image, label, &modules).await {
            tracing::warn!(
                "could not cache the precompiled layers of image {:?}: {err}",
                image.name
            );
        }
        Ok((layers.into_iter().flatten().collect(), on_node))
    }

    /// The precompiled module labelled on `descriptor`'s layer, if there is one and it is
    /// still in the store, or on the node: the node's module cache keeps precompiled code
    /// under its sha256, which is the digest the label names, so code the node has is not
    /// read from containerd again (tens of MiB for a big module).
    async fn cached_module(
        &self,
        image: &str,
        descriptor: &Descriptor,
        label: &str,
        node_code: Option<NodeCode<'_>>,
    ) -> Result<Option<Precompiled>, ContentError> {
        let layer_digest = descriptor.digest().to_string();
        let layer_what = format!("a wasm layer of image {image:?}");
        let info = self.info(&layer_digest, &layer_what).await?;
        let Some(module_digest) = info.labels.get(label) else {
            return Ok(None);
        };
        let what = format!("the module precompiled from layer {layer_digest} of image {image:?}");
        parse_digest(module_digest, &what)?;
        let on_node = module_digest
            .strip_prefix("sha256:")
            .zip(node_code)
            .and_then(|(sha256, node_code)| node_code(sha256));
        if let Some(module) = on_node {
            tracing::debug!(
                "layer {layer_digest} is precompiled as {module_digest}, which the node has"
            );
            return Ok(Some(Precompiled::OnNode(module)));
        }
        match self.read(module_digest, &what, None).await {
            Ok(module) => {
                tracing::debug!("layer {layer_digest} is precompiled as {module_digest}");
                Ok(Some(Precompiled::Read(module)))
            }
            Err(ContentError::ContentNotFound { .. }) => {
                tracing::info!("{what} ({module_digest}) is gone: compiling again");
                Ok(None)
            }
            Err(err) => Err(err),
        }
    }

    /// Writes each precompiled `modules` entry (whose `config` is its original layer) as
    /// content and labels the layers (and the image target) to find and keep it. Everything
    /// is written under a lease, deleted once the labels hold the new content.
    async fn cache_modules(
        &self,
        image: &ImageTarget,
        label: &str,
        modules: &[&WasmLayer],
    ) -> Result<(), ContentError> {
        if modules.is_empty() {
            return Ok(());
        }
        let lease = self.create_lease().await?;
        let result = self.write_and_label(image, label, modules, &lease).await;
        if let Err(err) = self.delete_lease(&lease).await {
            tracing::warn!("{err}; it expires by itself");
        }
        result
    }

    async fn write_and_label(
        &self,
        image: &ImageTarget,
        label: &str,
        modules: &[&WasmLayer],
        lease: &str,
    ) -> Result<(), ContentError> {
        for module in modules {
            let layer_digest = module.config.digest().to_string();
            let module_labels =
                HashMap::from([(labels::original_label(label), layer_digest.clone())]);
            let module_digest = self.write(&module.layer, lease, module_labels).await?;
            tracing::debug!("layer {layer_digest} precompiled as {module_digest}");
            let layer_labels = HashMap::from([
                (label.to_owned(), module_digest.clone()),
                (labels::gc_ref_label(label), module_digest),
            ]);
            let what = format!("a wasm layer of image {:?}", image.name);
            self.set_labels(&layer_digest, &what, layer_labels).await?;
        }
        // runwasi only reads layer labels once the image target says they exist.
        let what = format!("the target of image {:?}", image.name);
        let image_labels = HashMap::from([(label.to_owned(), "true".to_owned())]);
        self.set_labels(&image.digest, &what, image_labels).await
    }
}

/// Checks that `digest` is a well-formed digest before it goes into a request.
fn parse_digest(digest: &str, what: &str) -> Result<Digest, ContentError> {
    digest
        .parse::<Digest>()
        .map_err(|err| ContentError::InvalidDigest {
            what: what.to_owned(),
            digest: digest.to_owned(),
            reason: error_chain(&err),
        })
}
