//! `wasm-oci push`, `pull` and `tags`: the registry side of the command.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use wasmrunner_oci::containerd::{Ctr, DEFAULT_ADDRESS, DEFAULT_NAMESPACE};
use wasmrunner_oci::registry::{
    BlobOutcome, Credentials, ImageContent, ProgressMode, Registry, RegistryOptions, Upload,
    docker_config_path, from_docker_config, parse_reference,
};

/// How to reach the registry and who to be there.
#[derive(Args)]
pub struct RegistryArgs {
    /// Talk plain HTTP to the registry (no TLS).
    #[arg(long)]
    plain_http: bool,
    /// PEM file of a CA to trust besides the system's (repeatable).
    #[arg(long, value_name = "PEM")]
    ca_file: Vec<PathBuf>,
    /// User name for the registry (else the docker config file's entry, else anonymous).
    #[arg(short, long)]
    username: Option<String>,
    /// Password for --username.
    #[arg(short, long, requires = "username", conflicts_with = "password_stdin")]
    password: Option<String>,
    /// Read the password for --username from stdin.
    #[arg(long, requires = "username")]
    password_stdin: bool,
    /// The docker config file to take credentials from
    /// [default: $DOCKER_CONFIG/config.json, else ~/.docker/config.json].
    #[arg(long, value_name = "FILE")]
    docker_config: Option<PathBuf>,
}

impl RegistryArgs {
    /// The client options for `reference`'s registry.
    fn options(&self, reference: &str) -> Result<RegistryOptions> {
        Ok(RegistryOptions {
            plain_http: self.plain_http,
            ca_files: self.ca_file.clone(),
            credentials: self.credentials(reference)?,
            progress: ProgressMode::Auto,
            ..RegistryOptions::default()
        })
    }

    fn credentials(&self, reference: &str) -> Result<Option<Credentials>> {
        if let Some(username) = &self.username {
            let password = match (&self.password, self.password_stdin) {
                (Some(password), _) => password.clone(),
                (None, true) => {
                    let mut text = String::new();
                    std::io::stdin()
                        .read_to_string(&mut text)
                        .context("reading the password from stdin")?;
                    text.trim_end_matches(['\n', '\r']).to_owned()
                }
                (None, false) => bail!("--username needs --password or --password-stdin"),
            };
            return Ok(Some(Credentials {
                username: username.clone(),
                password,
            }));
        }
        let Some(path) = self.docker_config.clone().or_else(docker_config_path) else {
            return Ok(None);
        };
        let registry = parse_reference(reference)?.resolve_registry().to_owned();
        let registry = match registry.as_str() {
            "index.docker.io" => "docker.io".to_owned(),
            _ => registry,
        };
        Ok(from_docker_config(&path, &registry)?)
    }
}

#[derive(Args)]
pub struct PushArgs {
    /// One or more archives (from `wasm-oci build`, or `ctr image export`) or images in
    /// containerd, then the reference to push to (registry/repository[:tag]). Several images
    /// are pushed as one image index of their platforms.
    #[arg(required = true, num_args = 2.., value_name = "IMAGE_OR_ARCHIVE... REF")]
    args: Vec<String>,
    /// Upload each blob in one PUT instead of 4 MiB PATCHes.
    #[arg(long)]
    monolithic: bool,
    /// A repository of the same registry to mount blobs from when it has them (repeatable).
    #[arg(long, value_name = "REPOSITORY")]
    mount_from: Vec<String>,
    /// containerd socket, for images taken from containerd.
    #[arg(long, default_value = DEFAULT_ADDRESS)]
    address: String,
    /// containerd namespace, for images taken from containerd.
    #[arg(long, default_value = DEFAULT_NAMESPACE)]
    namespace: String,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    registry: RegistryArgs,
}

#[derive(Args)]
pub struct PullArgs {
    /// registry/repository[:tag|@digest]
    reference: String,
    /// Where to write the image, as an OCI archive (`ctr image import` reads it).
    #[arg(short, long, value_name = "OUT.tar")]
    output: PathBuf,
    /// Of an image index, pull only this platform (os/arch), as the image.
    #[arg(long, value_name = "OS/ARCH")]
    platform: Option<String>,
    #[command(flatten)]
    registry: RegistryArgs,
}

#[derive(Args)]
pub struct TagsArgs {
    /// registry/repository
    repository: String,
    #[command(flatten)]
    registry: RegistryArgs,
}

pub fn push(args: PushArgs) -> Result<()> {
    let Some((reference, sources)) = args.args.split_last() else {
        bail!("give what to push and where");
    };
    let mut archives = Vec::new();
    for source in sources {
        archives.push(read_source(source, &args.address, &args.namespace)?);
    }
    let content = ImageContent::from_archives(archives.iter().map(Vec::as_slice).collect())
        .context("reading the image to push")?;
    let mut options = args.registry.options(reference)?;
    options.upload = if args.monolithic {
        Upload::Monolithic
    } else {
        Upload::Chunked
    };
    options.mount_from = args.mount_from;
    let registry = Registry::new(options)?;
    let report = registry
        .push(&content, reference)
        .with_context(|| format!("pushing to {reference}"))?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).context("serializing the report")?
        );
        return Ok(());
    }
    for blob in &report.blobs {
        let outcome = match &blob.outcome {
            BlobOutcome::Uploaded => "uploaded".to_owned(),
            BlobOutcome::Existed => "exists".to_owned(),
            BlobOutcome::Mounted(from) => format!("mounted from {from}"),
        };
        println!("blob {} ({} bytes): {outcome}", blob.digest, blob.size);
    }
    println!(
        "pushed {} {} ({}, {})",
        report.reference,
        report.digest,
        report.media_type,
        report.platforms.join(", ")
    );
    Ok(())
}

/// An archive file, or else an image in containerd, exported.
fn read_source(source: &str, address: &str, namespace: &str) -> Result<Vec<u8>> {
    let path = Path::new(source);
    if path.is_file() {
        return std::fs::read(path).with_context(|| format!("reading {source}"));
    }
    let ctr = Ctr {
        address: address.to_owned(),
        namespace: namespace.to_owned(),
        ..Ctr::default()
    };
    ctr.exported(source).with_context(|| {
        format!("{source} is not a file; exporting it from containerd ({address}, namespace {namespace})")
    })
}

pub fn pull(args: PullArgs) -> Result<()> {
    let registry = Registry::new(args.registry.options(&args.reference)?)?;
    let content = registry
        .pull(&args.reference, args.platform.as_deref())
        .with_context(|| format!("pulling {}", args.reference))?;
    let archive = content.to_archive(&args.reference)?;
    write_whole(&args.output, &archive)?;
    let root = content
        .root()
        .context("the pull returned no image")?
        .descriptor
        .clone();
    println!(
        "pulled {} {} ({}; {} manifests, {} blobs, {} bytes) -> {}",
        args.reference,
        root.digest,
        content.platforms().join(", "),
        content.documents.len(),
        content.blobs.len(),
        content.blob_bytes(),
        args.output.display()
    );
    Ok(())
}

/// Writes `bytes` to `path` through a temporary file beside it, so that `path` is either
/// the whole archive or not there.
fn write_whole(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut partial = path.as_os_str().to_owned();
    partial.push(format!(".partial-{}", std::process::id()));
    let partial = PathBuf::from(partial);
    let written = std::fs::write(&partial, bytes)
        .and_then(|()| std::fs::rename(&partial, path))
        .with_context(|| format!("writing {}", path.display()));
    if written.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    written
}

pub fn tags(args: TagsArgs) -> Result<()> {
    let registry = Registry::new(args.registry.options(&args.repository)?)?;
    let tags = registry
        .tags(&args.repository)
        .with_context(|| format!("listing the tags of {}", args.repository))?;
    for tag in tags {
        println!("{tag}");
    }
    Ok(())
}
