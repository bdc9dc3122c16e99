//! `wasm-oci`: build OCI archives from `.wasm` files and inspect them; push them to a
//! registry, pull them from one, list its tags.

#[path = "wasm-oci/registry.rs"]
mod registry;

use std::fs::{self, File};
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use wasmrunner_oci::containerd::{Ctr, DEFAULT_ADDRESS, DEFAULT_NAMESPACE};
use wasmrunner_oci::{Flavour, ImageFile, ImageSpec, Inspection, Platform, inspect_archive};

#[derive(Parser)]
#[command(
    name = "wasm-oci",
    version,
    about = "Build, inspect, push and pull OCI images of wasm files"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build an OCI image-layout tar that `ctr image import` accepts.
    Build(BuildArgs),
    /// Describe an archive, or an image already imported into containerd.
    Inspect(InspectArgs),
    /// Push archives or containerd images to a registry (several: as one multi-platform index).
    Push(registry::PushArgs),
    /// Pull an image from a registry into an archive, checking every digest.
    Pull(registry::PullArgs),
    /// List the tags of a repository in a registry.
    Tags(registry::TagsArgs),
}

#[derive(Args)]
struct BuildArgs {
    /// Image reference, e.g. docker.io/wasmrunner/hello:latest.
    #[arg(long)]
    name: String,
    /// image (OCI image with a tar layer), cncf (CNCF Wasm artifact) or runwasi.
    #[arg(long, default_value = "image")]
    flavour: Flavour,
    /// Entrypoint argument (repeatable); defaults to the only wasm file.
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    entrypoint: Vec<String>,
    /// Default argument (repeatable).
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    cmd: Vec<String>,
    /// Environment variable K=V (repeatable).
    #[arg(long, value_name = "K=V")]
    env: Vec<String>,
    /// Label K=V of the image config (repeatable; image and runwasi flavours), e.g.
    /// wasmrunner.dev/env=APP_* to declare what the module needs.
    #[arg(long, value_name = "K=V")]
    label: Vec<String>,
    /// Annotation K=V of the image manifest (repeatable).
    #[arg(long, value_name = "K=V")]
    annotation: Vec<String>,
    /// os/arch; defaults to linux/<host> for image, wasip1|wasip2/wasm for cncf,
    /// wasi/wasm for runwasi.
    #[arg(long, value_name = "OS/ARCH")]
    platform: Option<Platform>,
    /// Where to write the archive.
    #[arg(short, long, value_name = "OUT.tar")]
    output: PathBuf,
    /// Files to add; FILE goes to /<file name>, FILE:PATH to PATH.
    #[arg(required = true, value_name = "FILE[:PATH]")]
    files: Vec<String>,
}

#[derive(Args)]
struct InspectArgs {
    /// The archive to inspect.
    #[arg(required_unless_present = "image", conflicts_with = "image")]
    archive: Option<PathBuf>,
    /// Inspect this image from containerd (exported with ctr) instead.
    #[arg(long, value_name = "REF")]
    image: Option<String>,
    /// containerd socket.
    #[arg(long, default_value = DEFAULT_ADDRESS, requires = "image")]
    address: String,
    /// containerd namespace.
    #[arg(long, default_value = DEFAULT_NAMESPACE, requires = "image")]
    namespace: String,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Build(args) => build(args),
        Command::Inspect(args) => inspect(args),
        Command::Push(args) => registry::push(args),
        Command::Pull(args) => registry::pull(args),
        Command::Tags(args) => registry::tags(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("wasm-oci: {}", one_line(&error));
            ExitCode::FAILURE
        }
    }
}

fn build(args: BuildArgs) -> Result<()> {
    if let Some(bad) = args.env.iter().find(|var| !var.contains('=')) {
        bail!("invalid --env {bad:?}: expected K=V");
    }
    let mut spec = ImageSpec::new(&args.name, args.flavour)
        .entrypoint(args.entrypoint)
        .cmd(args.cmd)
        .env(args.env);
    for (flag, pairs) in [("--label", &args.label), ("--annotation", &args.annotation)] {
        for pair in pairs {
            let Some((key, value)) = pair.split_once('=').filter(|(key, _)| !key.is_empty()) else {
                bail!("invalid {flag} {pair:?}: expected K=V");
            };
            spec = if flag == "--label" {
                spec.label(key, value)
            } else {
                spec.annotation(key, value)
            };
        }
    }
    spec.platform = args.platform;
    for arg in &args.files {
        spec = spec.add_file(read_file_arg(arg)?);
    }
    let spec = spec.with_default_entrypoint();
    let summary = wasmrunner_oci::write_archive(&spec, &args.output)
        .with_context(|| format!("building {}", args.output.display()))?;
    println!(
        "built {} ({}, {}) manifest {} -> {}",
        summary.name,
        summary.flavour,
        summary.platform,
        summary.manifest.digest,
        args.output.display()
    );
    Ok(())
}

/// Reads `FILE` or `FILE:PATH_IN_IMAGE`.
fn read_file_arg(arg: &str) -> Result<ImageFile> {
    let (file, path_in_image) = match arg.rsplit_once(':') {
        Some((file, path)) if path.starts_with('/') && !file.is_empty() => (file, path.to_owned()),
        Some((file, path)) if !file.is_empty() && !path.is_empty() && !Path::new(arg).exists() => {
            bail!("{arg}: the path in the image ({path}) must be absolute, e.g. {file}:/{path}")
        }
        _ => {
            let name = Path::new(arg)
                .file_name()
                .with_context(|| format!("{arg}: has no file name"))?;
            (arg, format!("/{}", name.to_string_lossy()))
        }
    };
    let contents = fs::read(file).with_context(|| format!("reading {file}"))?;
    Ok(ImageFile::new(path_in_image, contents))
}

fn inspect(args: InspectArgs) -> Result<()> {
    let inspection = match (&args.archive, &args.image) {
        (Some(path), _) => inspect_file(path)?,
        (None, Some(reference)) => {
            let ctr = Ctr {
                address: args.address.clone(),
                namespace: args.namespace.clone(),
                ..Ctr::default()
            };
            ctr.inspect_image(reference)
                .with_context(|| format!("inspecting image {reference}"))?
        }
        (None, None) => bail!("give an archive or --image REF"),
    };
    if args.json {
        let json = serde_json::to_string_pretty(&inspection).context("serializing inspection")?;
        println!("{json}");
    } else {
        print!("{inspection}");
    }
    Ok(())
}

fn inspect_file(path: &Path) -> Result<Inspection> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    inspect_archive(BufReader::new(file)).with_context(|| format!("inspecting {}", path.display()))
}

/// The error and its causes on one line, without repeating a cause that a
/// message already ends with, and without the "(os error N)" suffixes.
fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let message = cause.to_string();
        let message = strip_os_error(&message);
        if line.ends_with(message) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(message);
    }
    strip_os_error(&line).to_owned()
}

fn strip_os_error(message: &str) -> &str {
    match message.rfind(" (os error ") {
        Some(at) if message.ends_with(')') => &message[..at],
        _ => message,
    }
}
