//! The images the suites run, built with `wasmrunner-oci` from the fixtures.

use anyhow::Result;
use wasmrunner_oci::{Flavour, ImageFile, ImageSpec};

use crate::fixtures::{self, Target};
use crate::third_party;
use crate::wasm_bytes::{leb_i32, leb_u32, name, section};

mod bad;
pub use bad::{Bad, IMAGE_PASSWD, MANY_FUNCTIONS};

/// The text of the file shipped in the probe image.
pub const GREETING: &str = "hello from a file in the image\n";
/// The `PATH` that image builders put in an image's config by default.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// What the hello fixture prints.
pub const HELLO: &str = "Hello from WebAssembly, run by wasmrunner!";
/// The text of `/etc/app.conf` in [`TestImage::Capable`]: a file outside `/data`.
pub const APP_CONF: &str = "mode = production\n";
/// Symbolic links in [`TestImage::Capable`]'s `/data` to its `/etc/app.conf`, outside `/data`:
/// by its absolute path, and by a relative one.
pub const LINK_OUT: &str = "/data/link-out";
pub const LINK_UP: &str = "/data/link-up";
/// The text of `/srv/data/report.txt` in [`TestImage::Capable`].
pub const REPORT: &str = "a report under /srv/data\n";
/// The body of `GET /` from [`TestImage::HttpHello`] and [`TestImage::HttpHelloCommand`].
pub const HTTP_HELLO: &str = "hello from wasi:http\n";
/// What the `wasi:cli/run` of [`TestImage::HttpHelloCommand`] prints.
pub const RUN_CALLED: &str = "run called";
/// The body of every response from [`TestImage::SocketServer`].
pub const SOCKET_HELLO: &str = "hello from wasi:sockets\n";
/// The files [`TestImage::ThirdParty`] searches and dumps, under `/data/notes`: one line of
/// [`NOTE_A`] holds `needle`, one of [`NOTE_B`] holds `Needle`.
pub const NOTE_A: &str = "first line\na needle here\n";
pub const NOTE_B: &str = "Needle at the start\n";
/// `/data/rgrc` in [`TestImage::ThirdParty`]: a ripgrep config file (`RIPGREP_CONFIG_PATH`).
pub const RG_CONFIG: &str = "--ignore-case\n";
/// How many elements the table of [`TestImage::BigTable`] has.
pub const TABLE_ELEMENTS: u32 = 1000;

/// What a [`TestImage::Capable`] image declares its module needs (the capability keys of
/// `wasmrunner.dev/`, see the `wasmrunner-capabilities` crate), and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Declares {
    /// Nothing: the grant alone decides.
    Nothing,
    /// Config label `wasmrunner.dev/network=connect=127.0.0.1:9`.
    NetworkByLabel,
    /// Config label `wasmrunner.dev/env=APP_NAME`.
    EnvByLabel,
    /// Manifest annotation `wasmrunner.dev/env=APP_NAME`.
    EnvByAnnotation,
}

impl Declares {
    /// What it declares: `(key, value)`.
    pub fn declaration(self) -> Option<(&'static str, &'static str)> {
        match self {
            Declares::Nothing => None,
            Declares::NetworkByLabel => Some(("wasmrunner.dev/network", "connect=127.0.0.1:9")),
            Declares::EnvByLabel | Declares::EnvByAnnotation => {
                Some(("wasmrunner.dev/env", "APP_NAME"))
            }
        }
    }

    fn tag(self) -> &'static str {
        match self {
            Declares::Nothing => "plain",
            Declares::NetworkByLabel => "network-label",
            Declares::EnvByLabel => "env-label",
            Declares::EnvByAnnotation => "env-annotation",
        }
    }
}

/// An image the suites know how to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TestImage {
    /// The hello program in a given packaging.
    Hello(Target, Flavour),
    /// The probe program (see `test/fixtures/src/bin/probe.rs`) and `/data/greeting.txt`.
    /// Its entrypoint is `/probe.wasm` (`/probe` for the native build).
    Probe(Target),
    /// The wasip1 probe as runwasi's artifact: its one wasm layer is precompiled on first use.
    ProbeArtifact,
    /// The native pause program: a pod's sandbox image for the CRI suite.
    Pause,
    /// The native `ignore-term` program: ignores SIGTERM, prints `ready`, sleeps until SIGKILL.
    IgnoreTerm,
    /// `/bad.wasm` is a text file.
    NotWasm,
    /// The entrypoint is `/hello.wasm#nope`: a function the module does not export.
    MissingExport,
    /// A valid module with no `_start` (it exports `other` only).
    NoStart,
    /// `/noop.wasm`: a module whose `_start` does nothing, run by no other case (so the node
    /// module cache has never seen it), with enough unused code to take a moment to compile.
    Noop,
    /// The entrypoint names `/missing.wasm`; the image holds only `/hello.wasm`.
    MissingEntrypoint,
    /// The hello module cut short: a corrupted module in a normal image.
    Truncated,
    /// A wasm-typed layer whose bytes are not wasm: a corrupted artifact layer.
    GarbageLayer,
    /// `/big.wasm`: a valid module of 9 MiB (a custom section makes up the bulk), over the
    /// 8 MiB cap the suite's containerd sets.
    Oversized,
    /// The probe for the capability cases: `/probe.wasm`, `/data/greeting.txt` ([`GREETING`]),
    /// `/etc/app.conf` ([`APP_CONF`]), `/srv/data/report.txt` ([`REPORT`]) and two links from
    /// `/data` to `/etc/app.conf` ([`LINK_OUT`], [`LINK_UP`]), with what its
    /// image declares the module needs.
    Capable(Target, Declares),
    /// `/elements.wasm` ([`big_table_module`]): a module with a table of [`TABLE_ELEMENTS`]
    /// elements and a `_start` that does nothing.
    BigTable,
    /// `/recurse.wasm` ([`recursion_module`]) in a given packaging: its WASI `_start` calls
    /// itself forever; `#deep` recurses 10,000,000 deep, `#moderate` 1,000 deep and prints
    /// [`RECURSED`].
    Recursion(Flavour),
    /// One input of the bad-input area ([`Bad`]): in the rootfs of a normal image
    /// (`Flavour::Image`) or as the one wasm layer of runwasi's artifact (`RunwasiArtifact`).
    Bad(Bad, Flavour),
    /// `/slow.wasm` ([`slow_compile_module`]): about `kib` KiB of generated code that takes
    /// long to compile, in a given packaging; its `_start` calls every function once and
    /// prints [`SLOW_COMPILE_RAN`]. Each `seed` makes another module (another cache entry).
    SlowCompile {
        flavour: Flavour,
        kib: u32,
        seed: u32,
    },
    /// `/http-hello.wasm`: the `http-hello` component (`test/fixtures/http/src/lib.rs`), a
    /// wasi:http proxy that exports `wasi:http/incoming-handler` and no `wasi:cli/run`.
    /// `GET /` answers [`HTTP_HELLO`]; each request prints `request METHOD PATH-WITH-QUERY`.
    HttpHello,
    /// `/http-hello-command.wasm`: the same handler in a command that also exports
    /// `wasi:cli/run`, whose `run` prints [`RUN_CALLED`] and returns.
    HttpHelloCommand,
    /// `/socket-server.wasm`: a command that binds TCP `0.0.0.0:$PORT` (8080 unless the
    /// container sets `PORT`) with wasi:sockets, prints `listening on ADDR`, and answers every
    /// connection with a 200 of [`SOCKET_HELLO`] (printing `accepted`); it never exits.
    SocketServer,
    /// Released third-party programs ([`third_party::PROGRAMS`]): `/rg.wasm` and
    /// `/hexyl.wasm`, with `/data/greeting.txt` ([`GREETING`]), `/data/notes/a.txt`
    /// ([`NOTE_A`]), `/data/notes/deep/b.md` ([`NOTE_B`]) and `/data/rgrc` ([`RG_CONFIG`]).
    ThirdParty,
}

impl TestImage {
    /// The image reference it is imported under.
    pub fn name(&self) -> String {
        let tag = match self {
            TestImage::Hello(target, flavour) => format!("hello-{}-{flavour}", target_tag(*target)),
            TestImage::Probe(target) => format!("probe-{}", target_tag(*target)),
            TestImage::ProbeArtifact => "probe-artifact".into(),
            TestImage::Pause => "pause".into(),
            TestImage::IgnoreTerm => "ignore-term".into(),
            TestImage::NotWasm => "bad-not-wasm".into(),
            TestImage::NoStart => "bad-no-start".into(),
            TestImage::Noop => "noop".into(),
            TestImage::MissingExport => "bad-missing-export".into(),
            TestImage::MissingEntrypoint => "bad-missing-entrypoint".into(),
            TestImage::Truncated => "bad-truncated".into(),
            TestImage::GarbageLayer => "bad-garbage-layer".into(),
            TestImage::Oversized => "bad-oversized".into(),
            TestImage::Recursion(flavour) => format!("recursion-{flavour}"),
            TestImage::Capable(target, declares) => {
                format!("caps-{}-{}", target_tag(*target), declares.tag())
            }
            TestImage::BigTable => "big-table".into(),
            TestImage::Bad(bad, flavour) => format!("bad-{}-{flavour}", bad.tag()),
            TestImage::SlowCompile { flavour, kib, seed } => {
                format!("slow-compile-{flavour}-{kib}k-{seed}")
            }
            TestImage::HttpHello => "http-hello".into(),
            TestImage::HttpHelloCommand => "http-hello-command".into(),
            TestImage::SocketServer => "socket-server".into(),
            TestImage::ThirdParty => "third-party".into(),
        };
        format!("docker.io/wasmrunner/test:{tag}")
    }

    /// Whether the image has wasm-typed layers (what containerd < 1.6.25 / 1.7.7 rejects).
    pub fn has_wasm_layers(&self) -> bool {
        matches!(
            self,
            TestImage::Hello(_, Flavour::RunwasiArtifact | Flavour::CncfArtifact)
                | TestImage::Recursion(Flavour::RunwasiArtifact | Flavour::CncfArtifact)
                | TestImage::GarbageLayer
                | TestImage::ProbeArtifact
                | TestImage::Bad(_, Flavour::RunwasiArtifact | Flavour::CncfArtifact)
                | TestImage::SlowCompile {
                    flavour: Flavour::RunwasiArtifact | Flavour::CncfArtifact,
                    ..
                }
        )
    }

    pub fn spec(&self) -> Result<ImageSpec> {
        let spec = match *self {
            TestImage::Hello(target, flavour) => {
                let path = match target {
                    Target::Native => "/hello",
                    _ => "/hello.wasm",
                };
                ImageSpec::new(self.name(), flavour)
                    .file(path, fixtures::bytes("hello", target)?)
                    .entrypoint([path])
            }
            TestImage::Probe(target) => {
                let path = match target {
                    Target::Native => "/probe",
                    _ => "/probe.wasm",
                };
                ImageSpec::new(self.name(), Flavour::Image)
                    .file(path, fixtures::bytes("probe", target)?)
                    .file("/data/greeting.txt", GREETING.as_bytes().to_vec())
                    .entrypoint([path])
            }
            TestImage::ProbeArtifact => ImageSpec::new(self.name(), Flavour::RunwasiArtifact)
                .file("/probe.wasm", fixtures::bytes("probe", Target::WasiP1)?)
                .entrypoint(["/probe.wasm"]),
            // Like Kubernetes' pause image, whose config sets the default PATH.
            TestImage::Pause => ImageSpec::new(self.name(), Flavour::Image)
                .file("/pause", fixtures::bytes("pause", Target::Native)?)
                .entrypoint(["/pause"])
                .env([DEFAULT_PATH]),
            TestImage::IgnoreTerm => ImageSpec::new(self.name(), Flavour::Image)
                .file(
                    "/ignore-term",
                    fixtures::bytes("ignore-term", Target::Native)?,
                )
                .entrypoint(["/ignore-term"]),
            TestImage::NotWasm => ImageSpec::new(self.name(), Flavour::Image)
                .file("/bad.wasm", b"this is not wasm, just text\n".to_vec())
                .entrypoint(["/bad.wasm"]),
            TestImage::Noop => ImageSpec::new(self.name(), Flavour::Image)
                .file("/noop.wasm", noop_module()?)
                .entrypoint(["/noop.wasm"]),
            TestImage::NoStart => ImageSpec::new(self.name(), Flavour::Image)
                .file(
                    "/nostart.wasm",
                    fixtures::wat(r#"(module (func (export "other")))"#)?,
                )
                .entrypoint(["/nostart.wasm"]),
            TestImage::MissingExport => ImageSpec::new(self.name(), Flavour::Image)
                .file("/hello.wasm", fixtures::bytes("hello", Target::WasiP1)?)
                .entrypoint(["/hello.wasm#nope"]),
            TestImage::MissingEntrypoint => ImageSpec::new(self.name(), Flavour::Image)
                .file("/hello.wasm", fixtures::bytes("hello", Target::WasiP1)?)
                .entrypoint(["/missing.wasm"]),
            TestImage::Truncated => {
                let mut bytes = fixtures::bytes("hello", Target::WasiP1)?;
                bytes.truncate(bytes.len() / 2);
                ImageSpec::new(self.name(), Flavour::Image)
                    .file("/truncated.wasm", bytes)
                    .entrypoint(["/truncated.wasm"])
            }
            TestImage::GarbageLayer => ImageSpec::new(self.name(), Flavour::RunwasiArtifact)
                .file(
                    "/garbage.wasm",
                    b"\0asm\x01\0\0\0this is no section".to_vec(),
                )
                .entrypoint(["/garbage.wasm"]),
            TestImage::Oversized => ImageSpec::new(self.name(), Flavour::Image)
                .file("/big.wasm", oversized_module()?)
                .entrypoint(["/big.wasm"]),
            TestImage::Recursion(flavour) => ImageSpec::new(self.name(), flavour)
                .file("/recurse.wasm", recursion_module()?)
                .entrypoint(["/recurse.wasm"]),
            TestImage::Capable(target, declares) => {
                let spec = ImageSpec::new(self.name(), Flavour::Image)
                    .file("/probe.wasm", fixtures::bytes("probe", target)?)
                    .file("/data/greeting.txt", GREETING.as_bytes().to_vec())
                    .file("/etc/app.conf", APP_CONF.as_bytes().to_vec())
                    .file("/srv/data/report.txt", REPORT.as_bytes().to_vec())
                    .add_file(ImageFile::symlink(LINK_OUT, "/etc/app.conf"))
                    .add_file(ImageFile::symlink(LINK_UP, "../etc/app.conf"))
                    .entrypoint(["/probe.wasm"]);
                match (declares, declares.declaration()) {
                    (Declares::EnvByAnnotation, Some((key, value))) => spec.annotation(key, value),
                    (_, Some((key, value))) => spec.label(key, value),
                    (_, None) => spec,
                }
            }
            TestImage::BigTable => ImageSpec::new(self.name(), Flavour::Image)
                .file("/elements.wasm", big_table_module()?)
                .entrypoint(["/elements.wasm"]),
            TestImage::Bad(bad, flavour) => bad.spec(self.name(), flavour)?,
            TestImage::SlowCompile { flavour, kib, seed } => ImageSpec::new(self.name(), flavour)
                .file("/slow.wasm", slow_compile_module(kib as usize * 1024, seed))
                .entrypoint(["/slow.wasm"]),
            TestImage::HttpHello => ImageSpec::new(self.name(), Flavour::Image)
                .file(
                    "/http-hello.wasm",
                    fixtures::bytes("http-hello", Target::WasiP2)?,
                )
                .entrypoint(["/http-hello.wasm"]),
            TestImage::HttpHelloCommand => ImageSpec::new(self.name(), Flavour::Image)
                .file(
                    "/http-hello-command.wasm",
                    fixtures::bytes("http-hello-command", Target::WasiP2)?,
                )
                .entrypoint(["/http-hello-command.wasm"]),
            TestImage::SocketServer => ImageSpec::new(self.name(), Flavour::Image)
                .file(
                    "/socket-server.wasm",
                    fixtures::bytes("socket-server", Target::WasiP2)?,
                )
                .entrypoint(["/socket-server.wasm"]),
            TestImage::ThirdParty => ImageSpec::new(self.name(), Flavour::Image)
                .file("/rg.wasm", third_party::bytes(third_party::RIPGREP)?)
                .file("/hexyl.wasm", third_party::bytes(third_party::HEXYL)?)
                .file("/data/greeting.txt", GREETING.as_bytes().to_vec())
                .file("/data/notes/a.txt", NOTE_A.as_bytes().to_vec())
                .file("/data/notes/deep/b.md", NOTE_B.as_bytes().to_vec())
                .file("/data/rgrc", RG_CONFIG.as_bytes().to_vec())
                .entrypoint(["/rg.wasm"]),
        };
        Ok(spec)
    }
}

fn target_tag(target: Target) -> &'static str {
    match target {
        Target::WasiP1 => "wasip1",
        Target::WasiP2 => "wasip2",
        Target::Native => "native",
    }
}

/// The module of [`TestImage::Oversized`]: an empty `_start` and a 9 MiB custom section.
fn oversized_module() -> Result<Vec<u8>> {
    let mut module = fixtures::wat(r#"(module (func (export "_start")))"#)?;
    let name = b"padding";
    let payload_len = 9 << 20;
    let mut section = vec![name.len() as u8];
    section.extend_from_slice(name);
    section.resize(section.len() + payload_len, 0);
    module.push(0); // custom section
    let mut size = section.len();
    loop {
        let byte = (size & 0x7f) as u8;
        size >>= 7;
        if size == 0 {
            module.push(byte);
            break;
        }
        module.push(byte | 0x80);
    }
    module.extend(section);
    Ok(module)
}

/// The module of [`TestImage::BigTable`]: a table of [`TABLE_ELEMENTS`] `funcref`s, filled
/// with one function so that no engine can leave it out, and an empty `_start`.
pub fn big_table_module() -> Result<Vec<u8>> {
    fixtures::wat(&format!(
        r#"
        (module
          (table {TABLE_ELEMENTS} funcref)
          (func $nothing)
          (elem (i32.const {last}) $nothing)
          (func (export "_start")))"#,
        last = TABLE_ELEMENTS - 1
    ))
}

/// What `/recurse.wasm#moderate` prints once its recursion returned the right depth.
pub const RECURSED: &str = "recursed 1000 deep";

/// The module of [`TestImage::Recursion`]. `$down` recurses as deep as its argument says, with
/// a few locals per frame, and returns that depth.
pub fn recursion_module() -> Result<Vec<u8>> {
    fixtures::wat(&format!(
        r#"
        (module
          (import "wasi_snapshot_preview1" "fd_write"
            (func $fd_write (param i32 i32 i32 i32) (result i32)))
          (memory (export "memory") 1)
          (data (i32.const 16) "{RECURSED}\n")
          (func $start (export "_start") call $start)
          (func $down (param $depth i32) (result i32) (local $a i64) (local $b f64) (local $c i32)
            local.get $depth
            i32.eqz
            if (result i32)
              i32.const 0
            else
              local.get $depth
              i32.const 1
              i32.sub
              call $down
              i32.const 1
              i32.add
            end)
          (func (export "deep") i32.const 10000000 call $down drop)
          (func (export "moderate")
            i32.const 1000
            call $down
            i32.const 1000
            i32.ne
            if unreachable end
            ;; One iovec at 0: the text at 16.
            i32.const 0
            i32.const 16
            i32.store
            i32.const 4
            i32.const {len}
            i32.store
            i32.const 1
            i32.const 0
            i32.const 1
            i32.const 8
            call $fd_write
            drop))"#,
        len = RECURSED.len() + 1
    ))
}

/// The module of [`TestImage::Noop`]: `_start` returns at once; 3000 unused functions make
/// compiling it take a few hundred milliseconds, so that containers started together
/// overlap in their creates.
pub fn noop_module() -> Result<Vec<u8>> {
    let unused: String = (0..3000)
        .map(|i| {
            format!(
                "(func $f{i} (param i64) (result i64) local.get 0 i64.const {i} i64.mul \
                 i64.const 7 i64.rem_u local.get 0 i64.add)\n"
            )
        })
        .collect();
    fixtures::wat(&format!(r#"(module (func (export "_start")) {unused})"#))
}

/// What the `_start` of [`slow_compile_module`] prints once it has called every function.
pub const SLOW_COMPILE_RAN: &str = "every generated function ran";

/// Load-multiply-xor groups per generated function (about 12 bytes each).
const GROUPS_PER_FUNCTION: u32 = 25;

/// The module of [`TestImage::SlowCompile`]: functions `(i32) -> i32` of at least `code_bytes`
/// bytes in all, each a chain of loads, xors and multiplies with constants no two functions
/// share (so every compiler has real work, and none can leave one out: `_start` calls each
/// once), then `_start` prints [`SLOW_COMPILE_RAN`] with WASI's `fd_write`. `seed` changes
/// every constant, and so the module's digest. Written as binary: the text format of a
/// module this size would take longer to parse than the module takes to compile.
pub fn slow_compile_module(code_bytes: usize, seed: u32) -> Vec<u8> {
    let mut bodies: Vec<Vec<u8>> = Vec::new();
    let mut code_len = 0;
    while code_len < code_bytes {
        let body = generated_body(bodies.len() as u32, seed);
        code_len += body.len() + 3;
        bodies.push(body);
    }
    let functions = bodies.len() as u32;
    let text = format!("{SLOW_COMPILE_RAN}\n");
    // _start: `i32.const 0; call f; drop` for each function (index 0 is the import), then
    // fd_write(1, iovs = 0, 1 iovec, nwritten = 8) and drop its result.
    let mut start = vec![0x00];
    for f in 1..=functions {
        start.extend([0x41, 0x00, 0x10]);
        leb_u32(&mut start, f);
        start.push(0x1a);
    }
    start.extend([
        0x41, 0x01, 0x41, 0x00, 0x41, 0x01, 0x41, 0x08, 0x10, 0x00, 0x1a, 0x0b,
    ]);
    bodies.push(start);

    let mut module = b"\0asm\x01\0\0\0".to_vec();
    // Types: 0 = (i32) -> i32, 1 = () -> (), 2 = (i32 i32 i32 i32) -> i32.
    section(
        &mut module,
        1,
        &[
            0x03, 0x60, 0x01, 0x7f, 0x01, 0x7f, 0x60, 0x00, 0x00, 0x60, 0x04, 0x7f, 0x7f, 0x7f,
            0x7f, 0x01, 0x7f,
        ],
    );
    let mut imports = vec![0x01];
    name(&mut imports, "wasi_snapshot_preview1");
    name(&mut imports, "fd_write");
    imports.extend([0x00, 0x02]);
    section(&mut module, 2, &imports);
    let mut funcs = Vec::new();
    leb_u32(&mut funcs, functions + 1);
    funcs.extend(std::iter::repeat_n(0x00, functions as usize));
    funcs.push(0x01);
    section(&mut module, 3, &funcs);
    section(&mut module, 5, &[0x01, 0x00, 0x01]);
    let mut exports = vec![0x02];
    name(&mut exports, "memory");
    exports.extend([0x02, 0x00]);
    name(&mut exports, "_start");
    exports.push(0x00);
    leb_u32(&mut exports, functions + 1);
    section(&mut module, 7, &exports);
    let mut code = Vec::with_capacity(code_len + 64);
    leb_u32(&mut code, bodies.len() as u32);
    for body in &bodies {
        leb_u32(&mut code, body.len() as u32);
        code.extend_from_slice(body);
    }
    section(&mut module, 10, &code);
    // One active segment at 0: the iovec {16, len} and, at 16, the text.
    let mut segment = 16u32.to_le_bytes().to_vec();
    segment.extend((text.len() as u32).to_le_bytes());
    segment.resize(16, 0);
    segment.extend(text.as_bytes());
    let mut data = vec![0x01, 0x00, 0x41, 0x00, 0x0b];
    leb_u32(&mut data, segment.len() as u32);
    data.extend(segment);
    section(&mut module, 11, &data);
    module
}

/// `(local i32)`, then per group: `local.get 0; i32.load offset=K; local.get 1; i32.xor;
/// i32.const C; i32.mul; local.set 1`, then `local.get 1; end`.
fn generated_body(index: u32, seed: u32) -> Vec<u8> {
    let mut body = vec![0x01, 0x01, 0x7f];
    let mut state = (index.wrapping_mul(0x9e37_79b9) ^ seed.wrapping_mul(0x85eb_ca6b)) | 1;
    for group in 0..GROUPS_PER_FUNCTION {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        // Aligned offsets past the text, inside the one 64 KiB page (the argument is 0).
        let offset = 64 + (index.wrapping_mul(7919).wrapping_add(group) % 16_000) * 4;
        body.extend([0x20, 0x00, 0x28, 0x02]);
        leb_u32(&mut body, offset);
        body.extend([0x20, 0x01, 0x73, 0x41]);
        leb_i32(&mut body, (state & 0x000f_ffff) as i32 | 1);
        body.extend([0x6c, 0x21, 0x01]);
    }
    body.extend([0x20, 0x01, 0x0b]);
    body
}
