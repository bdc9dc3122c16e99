//! A workload that cannot run gets a clear message and the documented status, and leaves
//! nothing behind (issue #14).
//!
//! One table, one row per case: the input (an image, see `wasmrunner_e2e::images::Bad`), how
//! it is run, and what must come of it: the container's exit status and what `ctr` prints
//! (the container's stderr), or a Create that the shim refuses, with `ctr`'s error. The
//! statuses are the shim's (`shim/src/failure.rs`, the README): 127 the entrypoint is not in
//! the rootfs, 126 it is there but cannot be run (not wasm, does not load, compile or link,
//! lacks the export, unsupported, refused by the capability policy), 134 the guest trapped,
//! 152 it used its CPU deadline. In a message, `{what}` stands for how the shim names the
//! workload (its entrypoint path in a normal image, `image layer sha256:<digest>` for a wasm
//! layer), and `…` for anything.
//!
//! After every row the same shim (per pod) or manager (shared mode) runs a good container,
//! and nothing of the bad one is left (`Env::assert_clean`: processes, mounts, cgroups,
//! containerd's files). In shared mode a witness container runs through the whole row: the
//! manager that serves it must be the same process, still serving it, at the end.
//!
//! Inputs ctr cannot express: non-UTF-8 args and env reach the shim as valid UTF-8, because
//! containerd writes the OCI spec as JSON, and Go's encoder replaces every invalid byte with
//! U+FFFD; the rows below check that the guest sees exactly that. CRI cannot carry them at
//! all: its strings are protobuf `string`s, which must be UTF-8 (and the CRI client here,
//! `k8s-cri`, holds them in Rust `String`s). A NUL byte cannot be passed to `ctr` itself.
//! Wrong sizes in a manifest do not stop `ctr image import` (it writes each blob of the
//! archive as it is), so the shim is the one that sees them.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use wasmrunner_e2e::command::run_command_within;
use wasmrunner_e2e::containerd::parent_of;
use wasmrunner_e2e::engine::Mode;
use wasmrunner_e2e::fixtures::Target;
use wasmrunner_e2e::images::{Bad, Declares, HELLO, IMAGE_PASSWD, MANY_FUNCTIONS, TestImage};
use wasmrunner_e2e::suite::Needs;
use wasmrunner_e2e::{Case, Engine, Env, Outcome};
use wasmrunner_oci::Flavour::{self, Image as Rootfs, RunwasiArtifact as Layer};
use wasmrunner_oci::sha256_digest;

/// How long one `ctr run` of a row may take. The slowest, 100,000 functions compiled by
/// WasmEdge's LLVM for a wasm layer, took 50 to 80 s on a loaded 2-core machine; the compile
/// is stopped at 120 s of CPU (`WASMRUNNER_COMPILE_MAX_CPU_SECS`) and the layer then runs
/// interpreted, which a busy machine can stretch well past 120 s of wall time.
const RUN_LIMIT: Duration = Duration::from_secs(300);

/// One row of the table (see the module documentation).
struct Row {
    name: &'static str,
    image: TestImage,
    run: Run,
    expect: Expect,
    /// A further check of the outcome and how long the run took.
    also: Option<Also>,
}

type Also = fn(&Env, &Outcome, Duration) -> Result<()>;

/// How a row's container is run: always `ctr run --rm [FLAGS] IMAGE ID [ARGS]`.
#[derive(Clone, Copy)]
enum Run {
    /// No flags, no args: the image's own entrypoint.
    Plain,
    /// These args after the container id (the first replaces the entrypoint).
    Args(&'static [&'static str]),
    /// These flags before the image, and these args.
    Flags(&'static [&'static str], &'static [&'static str]),
    /// Flags and args made when the row runs (too big to write, or not UTF-8).
    Made(fn() -> (Vec<OsString>, Vec<OsString>)),
}

/// What must come of a row.
#[derive(Clone, Copy)]
enum Expect {
    /// The container ends with this status on every engine, and `ctr` prints this.
    Exit(i32, &'static str),
    /// The engines differ: what Wasmtime does, and what WasmEdge does.
    Engines {
        wasmtime: (i32, &'static str),
        wasmedge: (i32, &'static str),
        wasmer: (i32, &'static str),
    },
    /// The shim refuses the container at Create: `ctr run` fails and prints this.
    CreateFails(&'static str),
}

/// The table. `row!(name, image, run => expect [, also CHECK] [, needs NEEDS])`: one row each.
macro_rules! table {
    (@also) => { None };
    (@also $also:expr) => { Some($also as Also) };
    ($(row!($name:literal, $image:expr, $run:expr => $expect:expr
        $(, also $also:expr)? $(, needs $needs:expr)?);)*) => {
        vec![$(
            Case::new($name, |env| {
                let row = Row { name: $name, image: $image, run: $run, expect: $expect, also: table!(@also $($also)?) };
                check(env, &row)
            })$(.needs($needs))?,
        )*]
    };
}

use Expect::{CreateFails, Engines, Exit};
use Run::{Args, Flags, Made, Plain};

const fn bad(input: Bad) -> TestImage {
    TestImage::Bad(input, Rootfs)
}

const fn bad_layer(input: Bad) -> TestImage {
    TestImage::Bad(input, Layer)
}

const LAYERS: &[Needs] = &[Needs::WasmLayers];
const PROBE: TestImage = TestImage::Capable(Target::WasiP1, Declares::Nothing);
const COMPONENT_REFUSED: (i32, &str) = (126, Engine::COMPONENT_REFUSAL);

#[rustfmt::skip]
pub fn cases() -> Vec<Case> {
    table! {
        // Files that are not wasm, or not all of it.
        row!("file_that_is_not_wasm", TestImage::NotWasm, Plain => Exit(126, "/bad.wasm is not a WebAssembly module or component: it starts with bytes [74 68 69 73 20 69 73 20], not the wasm header 00 61 73 6d"));
        row!("empty_file", bad(Bad::Empty), Plain => Exit(126, "{what} is not a WebAssembly module or component: the file is empty"));
        row!("empty_layer", bad_layer(Bad::Empty), Plain => Exit(126, "{what} is not a WebAssembly module or component: the file is empty"), needs LAYERS);
        row!("bad_magic", bad(Bad::BadMagic), Plain => Exit(126, "{what} is not a WebAssembly module or component: it starts with bytes [00 61 73 6e 01 00 00 00], not the wasm header"));
        row!("layer_with_bad_magic", bad_layer(Bad::BadMagic), Plain => Exit(126, "{what} is not a WebAssembly module or component: it starts with bytes [00 61 73 6e 01 00 00 00], not the wasm header"), needs LAYERS);
        row!("bad_version", bad(Bad::BadVersion), Plain => Exit(126, "{what} is not a WebAssembly module or component: it has the wasm magic number but version bytes [02 00 00 00]"));
        row!("layer_with_bad_version", bad_layer(Bad::BadVersion), Plain => Exit(126, "{what} is not a WebAssembly module or component: it has the wasm magic number but version bytes [02 00 00 00]"), needs LAYERS);
        row!("cut_in_the_header", bad(Bad::CutInHeader), Plain => Exit(126, "{what} is not a WebAssembly module or component: it ends after 6 bytes [00 61 73 6d 01 00], inside the 8-byte wasm header"));
        row!("layer_cut_in_the_header", bad_layer(Bad::CutInHeader), Plain => Exit(126, "{what} is not a WebAssembly module or component: it ends after 6 bytes"), needs LAYERS);
        row!("header_only", bad(Bad::HeaderOnly), Plain => Exit(126, "{what} has no callable export \"_start\": no function is exported under that name"));
        row!("layer_header_only", bad_layer(Bad::HeaderOnly), Plain => Exit(126, "{what} has no callable export \"_start\""), needs LAYERS);
        row!("truncated_module", TestImage::Truncated, Plain => Exit(126, "cannot load /truncated.wasm: …unexpected end-of-file"));
        row!("corrupted_wasm_layer", TestImage::GarbageLayer, Plain => Exit(126, "cannot load {what}: …unexpected end-of-file (at offset 0xa)"), needs LAYERS);
        row!("cut_mid_section", bad(Bad::CutMidSection), Plain => Exit(126, "cannot load {what}: …unexpected end-of-file"));
        row!("layer_cut_mid_section", bad_layer(Bad::CutMidSection), Plain => Exit(126, "cannot load {what}: …unexpected end-of-file"), needs LAYERS);
        row!("cut_mid_function_body", bad(Bad::CutMidBody), Plain => Exit(126, "cannot load {what}: …unexpected end-of-file"));
        row!("layer_cut_mid_function_body", bad_layer(Bad::CutMidBody), Plain => Exit(126, "cannot load {what}: …unexpected end-of-file"), needs LAYERS);
        row!("section_longer_than_the_file", bad(Bad::SectionPastEnd), Plain => Exit(126, "cannot load {what}: …unexpected end-of-file (at offset 0xc)"));
        row!("layer_section_longer_than_the_file", bad_layer(Bad::SectionPastEnd), Plain => Exit(126, "cannot load {what}: …unexpected end-of-file (at offset 0xc)"), needs LAYERS);
        // Modules that parse but do not validate or link.
        row!("invalid_opcode", bad(Bad::InvalidOpcode), Plain => Exit(126, "cannot load {what}: …illegal opcode: 0xff"));
        row!("layer_with_invalid_opcode", bad_layer(Bad::InvalidOpcode), Plain => Exit(126, "cannot load {what}: …illegal opcode: 0xff"), needs LAYERS);
        row!("type_mismatch", bad(Bad::TypeMismatch), Plain => Exit(126, "cannot load {what}: …type mismatch: expected i32, found i64"));
        row!("layer_with_type_mismatch", bad_layer(Bad::TypeMismatch), Plain => Exit(126, "cannot load {what}: …type mismatch: expected i32, found i64"), needs LAYERS);
        row!("unknown_import_module", bad(Bad::UnknownImportModule), Plain => Engines {
            wasmtime: (126, "cannot load {what}: unknown import: `env::host_thing` has not been defined"),
            wasmedge: (126, "cannot load {what}: unknown import: env::host_thing is from a module this runtime does not provide"),
            wasmer: (126, "cannot load {what}: unknown import: env::host_thing is from a module this runtime does not provide") });
        row!("layer_with_unknown_import_module", bad_layer(Bad::UnknownImportModule), Plain => Exit(126, "cannot load {what}: unknown import: …env::host_thing"), needs LAYERS);
        row!("wasi_import_with_the_wrong_signature", bad(Bad::WrongImportSignature), Plain => Engines {
            wasmtime: (126, "cannot load {what}: incompatible import type for `wasi_snapshot_preview1::fd_write`: types incompatible: expected type `(func (param i32))`"),
            wasmedge: (126, "cannot load {what}: incompatible import type: wasi_snapshot_preview1::fd_write is imported as (func (param i32)), but it is (func (param i32 i32 i32 i32) (result i32))"),
            wasmer: (126, "cannot load {what}: incompatible import type: wasi_snapshot_preview1::fd_write is imported as (func (param i32)), but it is (func (param i32 i32 i32 i32) (result i32))") });
        row!("layer_with_wasi_import_of_the_wrong_signature", bad_layer(Bad::WrongImportSignature), Plain => Exit(126, "cannot load {what}: incompatible import type…wasi_snapshot_preview1::fd_write"), needs LAYERS);
        // Huge declared sizes: none may be allocated for real.
        row!("memory_minimum_of_4_gib", bad(Bad::HugeMemory), Plain => Exit(0, "")); // reserved, not committed
        row!("memory_minimum_of_4_gib_past_the_memory_limit", bad(Bad::HugeMemory), Flags(&["--memory-limit", "268435456"], &[]) => Engines {
            wasmtime: (126, "cannot load {what}: memory minimum size of 65536 pages exceeds memory limits"),
            wasmedge: (126, "cannot load {what}: memory 0 starts with 65536 pages of 64 KiB, more than the 4096 pages the guest may have"),
            wasmer: (126, "cannot load {what}: Failed to create memory: …the memory starts with 65536 pages of 64 KiB, more than the 4096 pages the guest may have") });
        row!("memory_minimum_past_4_gib", bad(Bad::MemoryPastLimit), Plain => Exit(126, "cannot load {what}: …memory size must be at most 0x10000 65536-byte pages"));
        row!("layer_memory_minimum_past_4_gib", bad_layer(Bad::MemoryPastLimit), Plain => Exit(126, "cannot load {what}: …memory size must be at most 0x10000 65536-byte pages"), needs LAYERS);
        row!("table_minimum_of_4g_elements", bad(Bad::HugeTable), Plain => Engines {
            wasmtime: (126, "cannot load {what}: out of memory (failed to allocate 34359738360 bytes)"),
            wasmedge: (126, "cannot load {what}: table 0 starts with 4294967295 elements; WasmEdge allocates a table whole"),
            wasmer: (126, "cannot load {what}: Table minimum (4294967295) is larger than maximum allowed size (134217728)") });
        row!("layer_table_minimum_of_4g_elements", bad_layer(Bad::HugeTable), Plain => Engines {
            wasmtime: (126, "cannot load {what}: out of memory (failed to allocate 34359738360 bytes)"),
            wasmedge: (126, "cannot load {what}: table 0 starts with 4294967295 elements"),
            wasmer: (126, "cannot load {what}: Table minimum (4294967295) is larger than maximum allowed size (134217728)") }, needs LAYERS);
        row!("data_segment_declaring_1_gib", bad(Bad::DataSegmentOf1GiB), Plain => Exit(126, "cannot load {what}: …unexpected end-of-file (at offset 0x2f)"));
        row!("layer_data_segment_declaring_1_gib", bad_layer(Bad::DataSegmentOf1GiB), Plain => Exit(126, "cannot load {what}: …unexpected end-of-file (at offset 0x2f)"), needs LAYERS);
        row!("module_over_the_size_cap", TestImage::Oversized, Plain => CreateFails("the module /big.wasm is 10 MiB; this node runs modules of at most 8 MiB (WASMRUNNER_MAX_MODULE_MIB)"));
        row!("hundred_thousand_functions", bad(Bad::ManyFunctions), Plain => Exit(0, ""), also took);
        row!("layer_of_hundred_thousand_functions", bad_layer(Bad::ManyFunctions), Plain => Exit(0, ""), also took, needs LAYERS);
        // Guests that run and fail: the other documented statuses.
        row!("guest_trap", bad(Bad::Unreachable), Plain => Exit(134, "{what} trapped: …unreachable"));
        row!("deep_recursion", TestImage::Recursion(Rootfs), Args(&["/recurse.wasm#deep"]) => Exit(134, "/recurse.wasm trapped: …call stack exhausted")); // more in the recursion area
        row!("cpu_deadline_passed", PROBE, Flags(&["--annotation", "wasmrunner.dev/cpu-deadline=300ms"], &["/probe.wasm", "spin"]) => Engines {
            wasmtime: (152, "/probe.wasm used its CPU time (wasmrunner.dev/cpu-deadline = 300ms) and was stopped"),
            wasmedge: (126, "wasmedge cannot enforce wasmrunner.dev/cpu-deadline"),
            wasmer: (126, "wasmer cannot enforce wasmrunner.dev/cpu-deadline") });
        // What the entrypoint names, and how.
        row!("entrypoint_that_does_not_exist", TestImage::MissingEntrypoint, Plain => Exit(127, "entrypoint \"/missing.wasm\" not found in the container's rootfs"));
        row!("missing_named_export", TestImage::MissingExport, Plain => Exit(126, "/hello.wasm has no callable export \"nope\": no function is exported under that name"));
        row!("module_without_start", TestImage::NoStart, Plain => Exit(126, "/nostart.wasm has no callable export \"_start\""));
        row!("empty_function_name", TestImage::Hello(Target::WasiP1, Rootfs), Args(&["/hello.wasm#"]) => Exit(126, "/hello.wasm has no callable export \"\""));
        row!("export_that_takes_parameters", bad(Bad::OddExports), Args(&["/odd-exports.wasm#takes"]) => Exit(126, "{what} has no callable export \"takes\": it takes 1 parameters; an entrypoint takes none"));
        row!("export_that_is_not_a_function", bad(Bad::OddExports), Args(&["/odd-exports.wasm#memory"]) => Exit(126, "{what} has no callable export \"memory\""));
        row!("component_where_a_module_is_expected", bad(Bad::Component), Plain => Engines { wasmtime: (0, HELLO), wasmedge: COMPONENT_REFUSED, wasmer: COMPONENT_REFUSED });
        row!("component_layer_where_a_module_is_expected", bad_layer(Bad::Component), Plain => Engines { wasmtime: (0, HELLO), wasmedge: COMPONENT_REFUSED, wasmer: COMPONENT_REFUSED }, needs LAYERS);
        row!("component_with_an_entrypoint_function", bad(Bad::Component), Args(&["/component.wasm#run"]) => Engines {
            wasmtime: (126, "{what} is a component: it runs wasi:cli/run, and an entrypoint function (\"run\") is only for modules"),
            wasmedge: COMPONENT_REFUSED,
            wasmer: COMPONENT_REFUSED });
        // containerd writes no `process.args` for an image without Entrypoint or Cmd run with
        // no args; libcontainer then fails the init process before the shim's code runs.
        row!("no_entrypoint_in_the_image_or_the_run", bad(Bad::NoEntrypoint), Plain => CreateFails("the container has no entrypoint: the image sets no Entrypoint or Cmd"));
        row!("empty_entrypoint", TestImage::Hello(Target::WasiP1, Rootfs), Args(&[""]) => Exit(127, "the container has no entrypoint: its process args are empty or start with an empty string"));
        row!("entrypoint_is_a_directory", bad(Bad::Directory), Plain => Exit(126, "{what} is not a WebAssembly module or component: it is a directory, not a file"));
        row!("entrypoint_is_a_fifo", bad(Bad::Fifo), Plain => Exit(126, "{what} is not a WebAssembly module or component: it is a named pipe (FIFO), not a file"));
        row!("entrypoint_is_a_symlink_loop", bad(Bad::SymlinkLoop), Plain => Exit(126, "{what} is not a WebAssembly module or component: its symbolic links do not resolve (Too many levels of symbolic links"));
        row!("symlink_to_etc_passwd_reads_the_images_own", bad(Bad::SymlinkToEtcPasswd), Plain => Exit(126, "{what} is not a WebAssembly module or component: it starts with bytes [69 6d 61 67 65 27 73 20]"), also not_the_hosts_passwd);
        row!("symlink_out_of_the_rootfs", bad(Bad::SymlinkOutOfRootfs), Plain => Exit(127, "entrypoint \"/shadow.wasm\" not found in the container's rootfs"));
        row!("entrypoint_under_a_file", TestImage::Hello(Target::WasiP1, Rootfs), Args(&["/hello.wasm/more.wasm"]) => Exit(127, "entrypoint \"/hello.wasm/more.wasm\" not found in the container's rootfs"));
        row!("entrypoint_path_over_path_max", TestImage::Hello(Target::WasiP1, Rootfs), Made(path_over_path_max) => Exit(127, "entrypoint \"/very-long-directory-name/…\"... (5006 bytes) not found in the container's rootfs: the path is longer than the kernel resolves (File name too long"));
        // Layers that are not what their manifest says.
        row!("module_in_a_component_layer", TestImage::Hello(Target::WasiP1, Layer), Plain => Exit(0, HELLO), needs LAYERS);
        row!("component_in_a_module_layer", bad_layer(Bad::ComponentInModuleLayer), Plain => Engines { wasmtime: (0, HELLO), wasmedge: COMPONENT_REFUSED, wasmer: COMPONENT_REFUSED }, needs LAYERS);
        row!("layer_of_an_unknown_media_type", bad_layer(Bad::UnknownLayerType), Plain => Exit(127, "entrypoint \"/unknown-type.wasm\" not found in the container's rootfs"), needs LAYERS);
        row!("layer_without_a_media_type", bad_layer(Bad::EmptyLayerType), Plain => Exit(127, "entrypoint \"/empty-type.wasm\" not found in the container's rootfs"), needs LAYERS);
        row!("layer_declaring_fewer_bytes_than_it_has", bad_layer(Bad::LayerSizeTooSmall), Plain => CreateFails("reading the image's wasm layers: a wasm layer of image \"docker.io/wasmrunner/test:bad-size-too-small-runwasi\" (sha256:…) is …bytes, but its descriptor says"), needs LAYERS);
        row!("layer_declaring_more_bytes_than_it_has", bad_layer(Bad::LayerSizeTooLarge), Plain => CreateFails("reading the image's wasm layers: a wasm layer of image \"docker.io/wasmrunner/test:bad-size-too-large-runwasi\" (sha256:…) is …bytes, but its descriptor says"), needs LAYERS);
        // Capability annotations the shim refuses before the guest runs (more in the
        // capabilities area).
        row!("capability_memory_too_large", PROBE, Flags(&["--annotation", "wasmrunner.dev/memory=99999999999Gi"], &["/probe.wasm", "args"]) => Exit(126, "wasmrunner.dev/memory = \"99999999999Gi\" in the container's annotations is malformed: \"99999999999Gi\" is too large"));
        row!("capability_files_with_a_bad_mode", PROBE, Flags(&["--annotation", "wasmrunner.dev/files=/data:rx"], &["/probe.wasm", "args"]) => Exit(126, "wasmrunner.dev/files = \"/data:rx\" in the container's annotations is malformed: \"/data:rx\": the mode is ro or rw, not \"rx\""));
        row!("capability_env_empty_pattern", PROBE, Flags(&["--annotation", "wasmrunner.dev/env=APP_*,"], &["/probe.wasm", "args"]) => Exit(126, "wasmrunner.dev/env = \"APP_*,\" in the container's annotations is malformed: an empty pattern"));
        row!("capability_tables_not_a_number", PROBE, Flags(&["--annotation", "wasmrunner.dev/tables=lots"], &["/probe.wasm", "args"]) => Exit(126, "wasmrunner.dev/tables = \"lots\" in the container's annotations is malformed: \"lots\" is not a positive whole number"));
        // Args and env: enormous, and not UTF-8.
        row!("megabyte_of_args", PROBE, Made(megabyte_of_args) => Exit(0, ""), also saw_every_arg);
        row!("megabyte_of_env", PROBE, Made(megabyte_of_env) => Exit(0, ""), also saw_the_env);
        row!("non_utf8_args_arrive_replaced", PROBE, Made(non_utf8_args) => Exit(0, "arg[2]=caf\u{fffd}!"));
        row!("non_utf8_env_arrives_replaced", PROBE, Made(non_utf8_env) => Exit(0, "WORD=caf\u{fffd}!"));
    }
}

/// Runs one row: its bad container, then a good one, checking each leaves nothing; in shared
/// mode with a witness container that must be served by the same manager throughout.
fn check(env: &Env, row: &Row) -> Result<()> {
    let witness = match env.engine.mode {
        Mode::Shared => Some(Witness::start(env)?),
        Mode::PerPod => None,
    };
    check_bad(env, row)?;
    let good = match row.image {
        TestImage::Bad(_, Layer) | TestImage::GarbageLayer => {
            TestImage::Hello(Target::WasiP1, Layer)
        }
        _ => TestImage::Hello(Target::WasiP1, Rootfs),
    };
    let out = run(env, good, &[], &[])?.ok()?;
    ensure!(
        out.stdout.contains(HELLO),
        "a good module failed after the bad one: {out}"
    );
    if let Some(witness) = witness {
        witness.check_and_stop(env)?;
    }
    Ok(())
}

fn check_bad(env: &Env, row: &Row) -> Result<()> {
    let (flags, args) = match row.run {
        Plain => (Vec::new(), Vec::new()),
        Args(args) => (Vec::new(), os_strings(args)),
        Flags(flags, args) => (os_strings(flags), os_strings(args)),
        Made(make) => make(),
    };
    env.image(row.image)?;
    let _compiling = match row.image {
        TestImage::Bad(Bad::ManyFunctions, flavour) => Some(one_compile_per_engine(env, flavour)),
        _ => None,
    };
    let id = env.container_id("bad");
    let started = Instant::now();
    let out = run_as(env, &id, row.image, &flags, &args)?;
    let took = started.elapsed();
    println!(
        "{}::{}: {:?} in {:.1} s: {}",
        env.engine.label(),
        row.name,
        out.status,
        took.as_secs_f64(),
        first_words(&out)
    );
    let (status, message) = match row.expect {
        Exit(status, message) => (Some(status), message),
        Engines {
            wasmtime,
            wasmedge,
            wasmer,
        } => {
            let (status, message) = match env.engine.name.as_str() {
                "wasmedge" => wasmedge,
                "wasmer" => wasmer,
                _ => wasmtime,
            };
            (Some(status), message)
        }
        CreateFails(message) => (None, message),
    };
    match status {
        Some(status) => ensure!(
            out.status == Some(status),
            "expected exit status {status}: {out}"
        ),
        None => ensure!(
            !out.success() && out.stderr.contains("failed to create shim task"),
            "expected the shim to refuse the container at Create: {out}"
        ),
    }
    let message = message.replace("{what}", &workload_name(row.image)?);
    expect_output(&out, &message)?;
    // Per pod only: a manager writes its log lines into the fifo of its newest task that
    // takes them (`wasmrunner_shim::logging`), and a line there is lost if containerd deletes
    // that task before it copied it, which a busy suite does.
    if let Some(status) = status.filter(|status| SHIM_STATUSES.contains(status))
        && env.engine.mode == Mode::PerPod
    {
        expect_logged(env, &id, status, &message)?;
    }
    if let Some(also) = row.also {
        also(env, &out, took)?;
    }
    Ok(())
}

/// Held while a 100,000-function row runs, one per engine and flavour: the engine's other mode
/// then finds the module compiled (the node module cache and a layer's precompiled content belong to the
/// engine, not the mode) and checks that the compiled code loads and runs, instead of both
/// modes compiling it side by side. WasmEdge's LLVM compile of the layer took about a minute
/// alone and two to two and a half each when both modes ran it at once on 2 cores.
fn one_compile_per_engine(env: &Env, flavour: Flavour) -> MutexGuard<'static, ()> {
    static ENGINES: [&str; 3] = ["wasmtime", "wasmedge", "wasmer"];
    static LOCKS: [[Mutex<()>; 2]; 3] = [const { [const { Mutex::new(()) }; 2] }; 3];
    let engine = ENGINES
        .iter()
        .position(|name| *name == env.engine.name)
        .unwrap_or(0);
    let layer = usize::from(flavour != Rootfs);
    // A row that failed while holding it leaves nothing to protect.
    LOCKS[engine][layer]
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

/// The statuses the shim gives a workload it could not run, or that trapped or used its CPU
/// deadline (see the module documentation); any other is the guest's own.
const SHIM_STATUSES: [i32; 4] = [126, 127, 134, 152];

/// containerd's log says at error level why container `id` could not run: `container ID
/// (NAMESPACE) exited with STATUS: REASON`, the reason being what its stderr said (`pattern`'s
/// start, up to its first `…` or quote, which the log escapes).
fn expect_logged(env: &Env, id: &str, status: i32, pattern: &str) -> Result<()> {
    let start = pattern
        .split(['…', '"'])
        .next()
        .unwrap_or_default()
        .trim_end();
    let wanted = [
        "level=error",
        &format!("container {id} ("),
        &format!("exited with {status}: "),
        start,
    ];
    // containerd copies a shim's log lines into its own as they come: wait a little.
    let deadline = Instant::now() + Duration::from_secs(5);
    let logged = loop {
        let found = env
            .containerd
            .log_lines_with(wanted[1])
            .into_iter()
            .any(|line| wanted.iter().all(|part| line.contains(part)));
        if found || Instant::now() > deadline {
            break found;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    ensure!(
        logged,
        "containerd's log has no error line {wanted:?} for {id}; its lines on {id}:\n{}",
        env.containerd.log_lines_with(id).join("\n")
    );
    Ok(())
}

/// Checks that `out` says `pattern`: its parts between `…` in this order, anything between.
fn expect_output(out: &Outcome, pattern: &str) -> Result<()> {
    let output = out.output();
    let mut rest = output.as_str();
    for part in pattern.split('…') {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => bail!("expected output matching {pattern:?} (from {part:?} on): {out}"),
        }
    }
    Ok(())
}

/// The line that matters of what a run printed, for the log of the run: the first that
/// reports an error, or else the first.
fn first_words(out: &Outcome) -> String {
    let output = out.output();
    let mut lines = output.lines().filter(|line| !line.trim().is_empty());
    let first = lines.clone().next().unwrap_or_default();
    lines
        .find(|line| line.contains("error"))
        .unwrap_or(first)
        .chars()
        .take(400)
        .collect()
}

/// How the shim names the workload of `image` in its messages: the entrypoint path for a
/// normal image, `image layer <digest>` for a wasm layer.
fn workload_name(image: TestImage) -> Result<String> {
    Ok(match image {
        TestImage::Bad(input, Rootfs) => input.path().to_string(),
        TestImage::Bad(_, _) | TestImage::GarbageLayer => {
            let spec = image.spec()?;
            let layer = spec
                .files
                .iter()
                .find(|file| file.is_raw_layer())
                .context("the image has no wasm layer")?;
            format!("image layer {}", sha256_digest(&layer.contents))
        }
        _ => String::new(),
    })
}

/// `ctr run --rm [--platform wasi/wasm] FLAGS IMAGE ID ARGS`, as `Env::run_rm_with` runs it
/// but with args that need not be UTF-8; then checks the container left nothing behind.
fn run(env: &Env, image: TestImage, flags: &[OsString], args: &[OsString]) -> Result<Outcome> {
    run_as(env, &env.container_id("bad"), image, flags, args)
}

/// [`run`], as container `id`.
fn run_as(
    env: &Env,
    id: &str,
    image: TestImage,
    flags: &[OsString],
    args: &[OsString],
) -> Result<Outcome> {
    let reference = env.image(image)?;
    let mut command = env.containerd.ctr_command();
    command.args(["run", "--runtime", &env.engine.runtime(), "--rm"]);
    if image.has_wasm_layers() {
        command.args(["--platform", "wasi/wasm"]);
    }
    command.args(flags).arg(&reference).arg(id).args(args);
    let out = run_command_within(&mut command, RUN_LIMIT)?;
    env.assert_clean(id)
        .with_context(|| format!("after `ctr run` of {}: {out}", image.name()))?;
    Ok(out)
}

/// A long-running container in shared mode, and the manager serving it.
struct Witness {
    attached: wasmrunner_e2e::suite::Attached,
    manager: u32,
}

impl Witness {
    fn start(env: &Env) -> Result<Self> {
        let attached =
            env.start_attached(TestImage::Probe(Target::WasiP1), &["/probe.wasm", "sleep"])?;
        let pid = env.task_pid(&attached.id)?;
        let manager = parent_of(pid).with_context(|| format!("no parent for task pid {pid}"))?;
        Ok(Self { attached, manager })
    }

    /// The witness still runs, served by the same manager; then it is stopped and removed.
    fn check_and_stop(self, env: &Env) -> Result<()> {
        let id = self.attached.id.clone();
        let status = env.task_status(&id)?;
        let pid = env.task_pid(&id)?;
        let serving = parent_of(pid);
        let alive = std::path::Path::new(&format!("/proc/{}", self.manager)).exists();
        self.attached
            .kill_and_remove(env, Duration::from_secs(20))?;
        ensure!(
            status.as_deref() == Some("RUNNING") && alive && serving == Some(self.manager),
            "the manager {} did not survive the bad input: witness {id} is {status:?}, its \
             parent is {serving:?}, the manager is {}",
            self.manager,
            if alive { "alive" } else { "gone" }
        );
        Ok(())
    }
}

fn os_strings(words: &[&str]) -> Vec<OsString> {
    words.iter().map(OsString::from).collect()
}

/// How many args or variables [`megabyte_of_args`] and [`megabyte_of_env`] pass, and how
/// long each is: 1 MiB in all. (One string passed to `ctr` may be at most 128 KiB long.)
const BIG_COUNT: usize = 16;
const BIG_LEN: usize = 64 * 1024;

fn big(i: usize) -> String {
    let letter = char::from(b'a' + i as u8);
    letter.to_string().repeat(BIG_LEN)
}

fn megabyte_of_args() -> (Vec<OsString>, Vec<OsString>) {
    let mut args = os_strings(&["/probe.wasm", "args"]);
    args.extend((0..BIG_COUNT).map(|i| OsString::from(big(i))));
    (Vec::new(), args)
}

fn megabyte_of_env() -> (Vec<OsString>, Vec<OsString>) {
    let mut flags = Vec::new();
    for i in 0..BIG_COUNT {
        flags.push(OsString::from("--env"));
        flags.push(OsString::from(format!("BIG{i}={}", big(i))));
    }
    let mut args = os_strings(&["/probe.wasm", "env"]);
    args.extend((0..BIG_COUNT).map(|i| OsString::from(format!("BIG{i}"))));
    (flags, args)
}

/// Every one of the [`BIG_COUNT`] args, whole, in order.
fn saw_every_arg(_env: &Env, out: &Outcome, _took: Duration) -> Result<()> {
    for i in 0..BIG_COUNT {
        let line = format!("arg[{}]={}", i + 2, big(i));
        ensure!(
            out.stdout.lines().any(|l| l == line),
            "arg {} did not arrive whole",
            i + 2
        );
    }
    Ok(())
}

/// Every one of the [`BIG_COUNT`] variables, whole.
fn saw_the_env(_env: &Env, out: &Outcome, _took: Duration) -> Result<()> {
    for i in 0..BIG_COUNT {
        let line = format!("BIG{i}={}", big(i));
        ensure!(
            out.stdout.lines().any(|l| l == line),
            "BIG{i} did not arrive whole"
        );
    }
    Ok(())
}

fn non_utf8_args() -> (Vec<OsString>, Vec<OsString>) {
    let mut args = os_strings(&["/probe.wasm", "args"]);
    args.push(OsString::from_vec(b"caf\xff!".to_vec()));
    (Vec::new(), args)
}

fn non_utf8_env() -> (Vec<OsString>, Vec<OsString>) {
    let flags = vec![
        OsString::from("--env"),
        OsString::from_vec(b"WORD=caf\xff!".to_vec()),
    ];
    (flags, os_strings(&["/probe.wasm", "env", "WORD"]))
}

/// An entrypoint of 5,000 bytes, more than `PATH_MAX` (4,096).
fn path_over_path_max() -> (Vec<OsString>, Vec<OsString>) {
    let path = format!("/{}.wasm", "very-long-directory-name/".repeat(200));
    (Vec::new(), vec![OsString::from(path)])
}

/// The message shows the image's own `/etc/passwd` ([`IMAGE_PASSWD`]), never the host's
/// (whose first line starts `root:x:0:0`, `72 6f 6f 74 3a 78 3a 30`).
fn not_the_hosts_passwd(_env: &Env, out: &Outcome, _took: Duration) -> Result<()> {
    ensure!(IMAGE_PASSWD.starts_with("image's "));
    if out.output().contains("72 6f 6f 74 3a 78 3a 30") || out.output().contains("root:x:0:0") {
        bail!("the host's /etc/passwd was read: {out}");
    }
    Ok(())
}

/// Prints how long the run took: for [`Bad::ManyFunctions`], the compile of
/// [`MANY_FUNCTIONS`] functions (Create, when the node cache or the content store compiles
/// it, included).
fn took(env: &Env, _out: &Outcome, took: Duration) -> Result<()> {
    println!(
        "{}: a module of {MANY_FUNCTIONS} functions ran in {:.1} s",
        env.engine.label(),
        took.as_secs_f64()
    );
    Ok(())
}
