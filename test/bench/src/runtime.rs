//! The runtimes compared: wasmrunner's Wasmtime shim in its two modes, and runc.

use wasmrunner_e2e::fixtures::Target;
use wasmrunner_e2e::images::TestImage;
use wasmrunner_oci::Flavour;

/// How long an idle shared manager stays up (the shim reads it; containerd passes its own
/// environment on to the shims it starts).
pub const MANAGER_IDLE_ENV: &str = "WASMRUNNER_MANAGER_IDLE_SECS";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Runtime {
    /// `io.containerd.wasmtime.v1`: one shim process per pod (here: per container).
    PerPod,
    /// `io.containerd.wasmtimed.v1`: one manager per engine and containerd namespace.
    Shared,
    /// `io.containerd.runc.v2` with static native programs: the baseline.
    Runc,
}

impl Runtime {
    /// The order the sections measure them in: the baseline first.
    pub const ALL: [Runtime; 3] = [Runtime::Runc, Runtime::PerPod, Runtime::Shared];
    pub const WASM: [Runtime; 2] = [Runtime::PerPod, Runtime::Shared];

    /// The runtime name given to containerd.
    pub fn runtime_name(self) -> &'static str {
        match self {
            Runtime::PerPod => "io.containerd.wasmtime.v1",
            Runtime::Shared => "io.containerd.wasmtimed.v1",
            Runtime::Runc => "io.containerd.runc.v2",
        }
    }

    /// The shim binary containerd starts for it.
    pub fn shim_binary(self) -> &'static str {
        match self {
            Runtime::PerPod => "containerd-shim-wasmtime-v1",
            Runtime::Shared => "containerd-shim-wasmtimed-v1",
            Runtime::Runc => "containerd-shim-runc-v2",
        }
    }

    /// The key in the JSON report.
    pub fn key(self) -> &'static str {
        match self {
            Runtime::PerPod => "per_pod",
            Runtime::Shared => "shared",
            Runtime::Runc => "runc",
        }
    }

    /// A short tag for container ids.
    pub fn tag(self) -> &'static str {
        match self {
            Runtime::PerPod => "pp",
            Runtime::Shared => "sh",
            Runtime::Runc => "rc",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Runtime::PerPod => "wasmtime per-pod",
            Runtime::Shared => "wasmtime shared",
            Runtime::Runc => "runc",
        }
    }

    /// The hello image: the wasip1 module in a normal OCI image, or the static native build.
    pub fn hello_image(self) -> TestImage {
        match self {
            Runtime::Runc => TestImage::Hello(Target::Native, Flavour::Image),
            _ => TestImage::Hello(Target::WasiP1, Flavour::Image),
        }
    }

    /// The probe image and the path of the probe inside it.
    pub fn probe_image(self) -> (TestImage, &'static str) {
        match self {
            Runtime::Runc => (TestImage::Probe(Target::Native), "/probe"),
            _ => (TestImage::Probe(Target::WasiP1), "/probe.wasm"),
        }
    }
}
