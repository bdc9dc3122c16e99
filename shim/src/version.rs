use std::fmt;

/// What an engine binary says about itself in `--version`.
#[derive(Debug, Clone, Copy)]
pub struct EngineInfo {
    /// The engine's short name, as used in the runtime name (`io.containerd.<name>.v1`).
    pub name: &'static str,
    /// The version of the engine library the binary was built with.
    pub engine_version: &'static str,
    /// What this build can run, one word each (for example `wasi-p1`, `wasi-p2`).
    pub features: &'static [&'static str],
}

impl EngineInfo {
    /// The binary name containerd looks for on its `PATH` for runtime `io.containerd.<name>.v1`.
    pub fn binary_name(&self) -> String {
        format!("containerd-shim-{}-v1", self.name)
    }

    /// The containerd runtime name (`ctr run --runtime ...`).
    pub fn runtime_name(&self) -> String {
        format!("io.containerd.{}.v1", self.name)
    }
}

/// The text printed by `--version`: one `key: value` line each, easy to read and to grep.
pub(crate) struct VersionReport<'a>(pub &'a EngineInfo);

impl fmt::Display for VersionReport<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let info = self.0;
        writeln!(f, "{}:", info.binary_name())?;
        writeln!(f, "  Runtime: {}", info.runtime_name())?;
        writeln!(f, "  Version: {} (wasmrunner)", env!("CARGO_PKG_VERSION"))?;
        writeln!(f, "  Engine: {} {}", info.name, info.engine_version)?;
        writeln!(f, "  Features: {}", info.features.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_names_engine_version_and_features() {
        let info = EngineInfo {
            name: "wasmtime",
            engine_version: "48.0.8",
            features: &["wasi-p1", "wasi-p2"],
        };
        let text = VersionReport(&info).to_string();
        assert!(text.starts_with("containerd-shim-wasmtime-v1:\n"), "{text}");
        assert!(
            text.contains("  Runtime: io.containerd.wasmtime.v1\n"),
            "{text}"
        );
        assert!(text.contains("  Engine: wasmtime 48.0.8\n"), "{text}");
        assert!(text.contains("  Features: wasi-p1, wasi-p2\n"), "{text}");
    }
}
