//! The inputs of the bad-input area (`test/tests/e2e/bad_input.rs`): malformed modules,
//! entrypoints that are not files, broken layers. Each is built from scratch or from the
//! hello fixture, without allocating what it declares.

use std::ops::Range;

use anyhow::{Context, Result};
use wasmrunner_oci::media_types::{RUNWASI_WASM_LAYER, WASM_LAYER};
use wasmrunner_oci::{Flavour, ImageFile, ImageSpec};

use crate::fixtures::{self, Target};
use crate::wasm_bytes::{leb_i64, leb_u64};

/// One bad input. Each is one file, the image's entrypoint, at [`Bad::path`] (in the rootfs
/// of a normal image, or as the one wasm layer of runwasi's artifact), unless its
/// documentation says otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bad {
    /// The hello module with its magic number changed to `\0asn`.
    BadMagic,
    /// The hello module with version 2 in its header.
    BadVersion,
    /// The first 6 bytes of a module: cut inside the 8-byte header.
    CutInHeader,
    /// The 8-byte header alone: a valid module with nothing in it (so no `_start`).
    HeaderOnly,
    /// The hello module cut in the middle of its type section.
    CutMidSection,
    /// The hello module cut in the middle of its first function body.
    CutMidBody,
    /// A module whose type section says it is 1 MiB long; the file ends 4 bytes later.
    SectionPastEnd,
    /// A function body with the unassigned opcode `0xff`.
    InvalidOpcode,
    /// A function declared to return an `i32` that leaves an `i64`: fails validation.
    TypeMismatch,
    /// A module that imports `env.host_thing`: no engine provides a module `env`.
    UnknownImportModule,
    /// A module that imports `wasi_snapshot_preview1.fd_write` as `(param i32)`.
    WrongImportSignature,
    /// The hello component (WASI preview 2) where the runtime wants a module.
    Component,
    /// A module whose memory's minimum is 65,536 pages (4 GiB, the most a 32-bit memory has).
    HugeMemory,
    /// A module whose memory's minimum is 65,537 pages: more than a 32-bit memory can have.
    MemoryPastLimit,
    /// A module whose table's minimum is 4,294,967,295 elements.
    HugeTable,
    /// A module with a data segment that declares 1 GiB of bytes and holds 16.
    DataSegmentOf1GiB,
    /// A module with [`MANY_FUNCTIONS`] small functions and an empty `_start`.
    ManyFunctions,
    /// A module whose `_start` executes `unreachable`.
    Unreachable,
    /// A module exporting `takes` (a function with a parameter), `memory` and `_start`.
    OddExports,
    /// An empty file.
    Empty,
    /// The image config has no entrypoint and no cmd; the rootfs holds the hello module.
    NoEntrypoint,
    /// The entrypoint `/dir.wasm` is a directory (image flavour).
    Directory,
    /// The entrypoint is a named pipe (image flavour).
    Fifo,
    /// The entrypoint is one of two symlinks that point at each other (image flavour).
    SymlinkLoop,
    /// The entrypoint is a symlink to `/etc/passwd`; the image has its own `/etc/passwd`
    /// ([`IMAGE_PASSWD`]) (image flavour).
    SymlinkToEtcPasswd,
    /// The entrypoint is a symlink to `../../../../../../../etc/shadow`; the image has no
    /// `/etc/shadow` (image flavour).
    SymlinkOutOfRootfs,
    /// The hello module in a layer of an unknown media type (artifact).
    UnknownLayerType,
    /// The hello module in a layer with an empty media type (artifact).
    EmptyLayerType,
    /// The hello component in a layer of the CNCF module type `application/wasm` (artifact).
    ComponentInModuleLayer,
    /// The hello module (with a custom section of its own, so that its blob is new to the
    /// store) in a layer whose descriptor says it is 100 bytes smaller (artifact).
    LayerSizeTooSmall,
    /// The same, with a descriptor that says the layer is 100 bytes larger (artifact).
    LayerSizeTooLarge,
}

/// What `/etc/passwd` holds in the image of [`Bad::SymlinkToEtcPasswd`]: its first bytes,
/// in hex, are what an error message about the entrypoint shows.
pub const IMAGE_PASSWD: &str = "image's own passwd, not the host's\n";
/// How many functions (besides `_start`) the module of [`Bad::ManyFunctions`] has.
pub const MANY_FUNCTIONS: u32 = 100_000;

impl Bad {
    /// The image's entrypoint, where its file is (see each input for the exceptions).
    pub fn path(self) -> &'static str {
        match self {
            Bad::BadMagic => "/bad-magic.wasm",
            Bad::BadVersion => "/bad-version.wasm",
            Bad::CutInHeader => "/cut-in-header.wasm",
            Bad::HeaderOnly => "/header-only.wasm",
            Bad::CutMidSection => "/cut-mid-section.wasm",
            Bad::CutMidBody => "/cut-mid-body.wasm",
            Bad::SectionPastEnd => "/section-past-end.wasm",
            Bad::InvalidOpcode => "/invalid-opcode.wasm",
            Bad::TypeMismatch => "/type-mismatch.wasm",
            Bad::UnknownImportModule => "/unknown-import.wasm",
            Bad::WrongImportSignature => "/wrong-import.wasm",
            Bad::Component => "/component.wasm",
            Bad::HugeMemory => "/huge-memory.wasm",
            Bad::MemoryPastLimit => "/memory-past-limit.wasm",
            Bad::HugeTable => "/huge-table.wasm",
            Bad::DataSegmentOf1GiB => "/data-1gib.wasm",
            Bad::ManyFunctions => "/many-functions.wasm",
            Bad::Unreachable => "/unreachable.wasm",
            Bad::OddExports => "/odd-exports.wasm",
            Bad::Empty => "/empty.wasm",
            Bad::NoEntrypoint => "/hello.wasm",
            Bad::Directory => "/dir.wasm",
            Bad::Fifo => "/fifo.wasm",
            Bad::SymlinkLoop => "/loop.wasm",
            Bad::SymlinkToEtcPasswd => "/passwd.wasm",
            Bad::SymlinkOutOfRootfs => "/shadow.wasm",
            Bad::UnknownLayerType => "/unknown-type.wasm",
            Bad::EmptyLayerType => "/empty-type.wasm",
            Bad::ComponentInModuleLayer => "/component-as-module.wasm",
            Bad::LayerSizeTooSmall => "/size-too-small.wasm",
            Bad::LayerSizeTooLarge => "/size-too-large.wasm",
        }
    }

    /// What the image's tag says about it.
    pub fn tag(self) -> String {
        let path = self.path().trim_start_matches('/');
        match self {
            Bad::NoEntrypoint => "no-entrypoint".to_string(),
            _ => path.trim_end_matches(".wasm").to_string(),
        }
    }

    /// The bytes of the entrypoint file, for the inputs that are one regular file.
    fn bytes(self) -> Result<Vec<u8>> {
        let hello = || fixtures::bytes("hello", Target::WasiP1);
        Ok(match self {
            Bad::BadMagic => with_header(hello()?, b"\0asn\x01\0\0\0"),
            Bad::BadVersion => with_header(hello()?, b"\0asm\x02\0\0\0"),
            Bad::CutInHeader => b"\0asm\x01\0".to_vec(),
            Bad::HeaderOnly => b"\0asm\x01\0\0\0".to_vec(),
            Bad::CutMidSection => {
                let module = hello()?;
                let types = section(&module, 1).context("the hello module has no type section")?;
                module[..types.start + types.len() / 2].to_vec()
            }
            Bad::CutMidBody => {
                let module = hello()?;
                let code = section(&module, 10).context("the hello module has no code section")?;
                // The section: a count, then each body as its size and its bytes.
                let (_count, first) = leb128(&module, code.start)?;
                let (size, body) = leb128(&module, first)?;
                module[..body + size as usize / 2].to_vec()
            }
            Bad::SectionPastEnd => {
                let mut module = b"\0asm\x01\0\0\0".to_vec();
                module.push(1); // the type section
                leb_u64(&mut module, 1 << 20);
                module.extend([1, 0x60, 0, 0]); // one type, () -> (), and nothing more
                module
            }
            Bad::InvalidOpcode => {
                // `nop` (0x01) is the body's only instruction: make it 0xff.
                let mut module = fixtures::wat(r#"(module (func (export "_start") nop))"#)?;
                let code = section(&module, 10).context("no code section")?;
                let nop = module[code.clone()]
                    .iter()
                    .rposition(|byte| *byte == 0x01)
                    .context("no nop in the body")?;
                module[code.start + nop] = 0xff;
                module
            }
            Bad::TypeMismatch => fixtures::wat(
                r#"(module (func $f (result i32) i64.const 7)
                           (func (export "_start") call $f drop))"#,
            )?,
            Bad::UnknownImportModule => fixtures::wat(
                r#"(module (import "env" "host_thing" (func $t))
                           (func (export "_start") call $t))"#,
            )?,
            Bad::WrongImportSignature => fixtures::wat(
                r#"(module (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32)))
                           (func (export "_start") i32.const 1 call $w))"#,
            )?,
            Bad::Component | Bad::ComponentInModuleLayer => {
                fixtures::bytes("hello", Target::WasiP2)?
            }
            Bad::HugeMemory => {
                fixtures::wat(r#"(module (memory 65536) (func (export "_start")))"#)?
            }
            Bad::MemoryPastLimit => {
                // The text parser refuses such a memory: patch the minimum of `(memory 1)`.
                let module = fixtures::wat(r#"(module (memory 1) (func (export "_start")))"#)?;
                let memory = section(&module, 5).context("no memory section")?;
                let mut patched = module[..memory.start - 1].to_vec();
                // The section's size (count, flags, a 3-byte minimum), then its contents.
                patched.extend([5, 1, 0]);
                leb_u64(&mut patched, 65_537);
                patched.extend_from_slice(&module[memory.end..]);
                patched
            }
            Bad::HugeTable => {
                fixtures::wat(r#"(module (table 4294967295 funcref) (func (export "_start")))"#)?
            }
            Bad::DataSegmentOf1GiB => {
                let mut module = fixtures::wat(r#"(module (memory 1) (func (export "_start")))"#)?;
                let declared: u64 = 1 << 30;
                // One active segment at offset 0 of memory 0: flags 0, `i32.const 0 end`,
                // its byte count, then only the first 16 of those bytes.
                let mut segment = vec![1, 0, 0x41, 0, 0x0b];
                leb_u64(&mut segment, declared);
                let section_size = segment.len() as u64 + declared;
                segment.extend([0xab; 16]);
                module.push(11); // the data section, after the code section
                leb_u64(&mut module, section_size);
                module.extend(segment);
                module
            }
            Bad::ManyFunctions => many_functions_module(MANY_FUNCTIONS),
            Bad::Unreachable => fixtures::wat(r#"(module (func (export "_start") unreachable))"#)?,
            Bad::OddExports => fixtures::wat(
                r#"(module (memory (export "memory") 1)
                           (func (export "takes") (param i32))
                           (func (export "_start")))"#,
            )?,
            Bad::Empty => Vec::new(),
            Bad::NoEntrypoint | Bad::UnknownLayerType | Bad::EmptyLayerType => hello()?,
            // A blob of its own: containerd checks a blob's size only when it writes it, and
            // the hello module's blob is in the store already.
            Bad::LayerSizeTooSmall | Bad::LayerSizeTooLarge => {
                let mut module = hello()?;
                let name = self.tag();
                module.push(0); // a custom section holding only its name
                leb_u64(&mut module, name.len() as u64 + 1);
                leb_u64(&mut module, name.len() as u64);
                module.extend_from_slice(name.as_bytes());
                module
            }
            Bad::Directory
            | Bad::Fifo
            | Bad::SymlinkLoop
            | Bad::SymlinkToEtcPasswd
            | Bad::SymlinkOutOfRootfs => Vec::new(),
        })
    }

    /// The image of this input in `flavour`, named `name`.
    pub fn spec(self, name: String, flavour: Flavour) -> Result<ImageSpec> {
        let path = self.path();
        let spec = ImageSpec::new(name, flavour);
        let hello = || fixtures::bytes("hello", Target::WasiP1);
        let file = |bytes: Vec<u8>| match flavour {
            // Whatever the bytes are, they are the artifact's one wasm layer.
            Flavour::RunwasiArtifact => {
                ImageFile::new(path, bytes).in_raw_layer(RUNWASI_WASM_LAYER)
            }
            _ => ImageFile::new(path, bytes),
        };
        Ok(match self {
            Bad::NoEntrypoint => spec.add_file(file(self.bytes()?)),
            Bad::Directory => spec
                .add_file(ImageFile::directory(path))
                .file("/hello.wasm", hello()?)
                .entrypoint([path]),
            Bad::Fifo => spec.add_file(ImageFile::fifo(path)).entrypoint([path]),
            Bad::SymlinkLoop => spec
                .add_file(ImageFile::symlink(path, "/loop2.wasm"))
                .add_file(ImageFile::symlink("/loop2.wasm", path))
                .entrypoint([path]),
            Bad::SymlinkToEtcPasswd => spec
                .add_file(ImageFile::symlink(path, "/etc/passwd"))
                .add_file(ImageFile::new("/etc/passwd", IMAGE_PASSWD.as_bytes()).with_mode(0o644))
                .entrypoint([path]),
            Bad::SymlinkOutOfRootfs => spec
                .add_file(ImageFile::symlink(path, "../../../../../../../etc/shadow"))
                .file("/hello.wasm", hello()?)
                .entrypoint([path]),
            Bad::UnknownLayerType => spec
                .add_file(
                    ImageFile::new(path, hello()?)
                        .in_raw_layer("application/vnd.example.unknown+wasm"),
                )
                .entrypoint([path]),
            Bad::EmptyLayerType => spec
                .add_file(ImageFile::new(path, hello()?).in_raw_layer(""))
                .entrypoint([path]),
            Bad::ComponentInModuleLayer => spec
                .add_file(ImageFile::new(path, self.bytes()?).in_raw_layer(WASM_LAYER))
                .entrypoint([path]),
            Bad::LayerSizeTooSmall | Bad::LayerSizeTooLarge => {
                let bytes = self.bytes()?;
                let size = bytes.len() as u64;
                let declared = if self == Bad::LayerSizeTooSmall {
                    size - 100
                } else {
                    size + 100
                };
                spec.add_file(ImageFile::new(path, bytes).declaring_size(declared))
                    .entrypoint([path])
            }
            _ => spec.add_file(file(self.bytes()?)).entrypoint([path]),
        })
    }
}

/// `module` with its first 8 bytes replaced by `header`.
fn with_header(mut module: Vec<u8>, header: &[u8; 8]) -> Vec<u8> {
    module[..8].copy_from_slice(header);
    module
}

/// The contents of the first section of `module` with id `id`, as a range of its bytes.
fn section(module: &[u8], id: u8) -> Option<Range<usize>> {
    let mut at = 8;
    while at < module.len() {
        let (size, start) = leb128(module, at + 1).ok()?;
        let end = start + usize::try_from(size).ok()?;
        if module[at] == id {
            return Some(start..end);
        }
        at = end;
    }
    None
}

/// The unsigned LEB128 number at `at`, and where the bytes after it start.
fn leb128(bytes: &[u8], mut at: usize) -> Result<(u64, usize)> {
    let mut value = 0u64;
    let mut shift = 0;
    loop {
        let byte = *bytes.get(at).context("a LEB128 number runs past the end")?;
        value |= u64::from(byte & 0x7f) << shift;
        at += 1;
        if byte & 0x80 == 0 {
            return Ok((value, at));
        }
        shift += 7;
    }
}

/// A module with an empty `_start` (function 0) and `count` functions `(param i32) (result
/// i32)` that each add their own index to their argument, none of them called. Written as
/// binary: the text of 100,000 functions takes the `wat` crate a while to parse.
pub fn many_functions_module(count: u32) -> Vec<u8> {
    fn add_section(module: &mut Vec<u8>, id: u8, contents: &[u8]) {
        module.push(id);
        leb_u64(module, contents.len() as u64);
        module.extend_from_slice(contents);
    }
    let mut module = b"\0asm\x01\0\0\0".to_vec();
    // Types: 0 is () -> (), 1 is (i32) -> i32.
    add_section(&mut module, 1, &[2, 0x60, 0, 0, 0x60, 1, 0x7f, 1, 0x7f]);
    let mut functions = Vec::new();
    leb_u64(&mut functions, u64::from(count) + 1);
    functions.push(0);
    functions.extend(std::iter::repeat_n(1, count as usize));
    add_section(&mut module, 3, &functions);
    let mut exports = vec![1, 6];
    exports.extend_from_slice(b"_start");
    exports.extend([0, 0]);
    add_section(&mut module, 7, &exports);
    let mut code = Vec::new();
    leb_u64(&mut code, u64::from(count) + 1);
    code.extend([2, 0, 0x0b]); // _start: its size, no locals, `end`
    for index in 0..count {
        // No locals; `local.get 0`, `i32.const index`, `i32.add`, `end`.
        let mut body = vec![0, 0x20, 0, 0x41];
        leb_i64(&mut body, i64::from(index));
        body.extend([0x6a, 0x0b]);
        leb_u64(&mut code, body.len() as u64);
        code.extend(body);
    }
    add_section(&mut module, 10, &code);
    module
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generated_modules_are_what_they_say() -> Result<()> {
        let module = many_functions_module(300);
        assert_eq!(section(&module, 7).map(|r| r.len()), Some(10));
        let data = Bad::DataSegmentOf1GiB.bytes()?;
        assert!(data.len() < 1024, "{} bytes", data.len());
        let memory = Bad::MemoryPastLimit.bytes()?;
        let range = section(&memory, 5).context("memory section")?;
        assert_eq!(&memory[range], &[1, 0, 0x81, 0x80, 0x04]);
        assert_eq!(
            Bad::InvalidOpcode
                .bytes()?
                .iter()
                .filter(|b| **b == 0xff)
                .count(),
            1
        );
        Ok(())
    }
}
