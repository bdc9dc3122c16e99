use std::path::{Path, PathBuf};

use containerd_shim_wasm::sandbox::context::{Entrypoint, RuntimeContext, Source, WasmLayer};
use oci_spec::runtime::Spec;

/// The engine contract's view of one container: args, env and entrypoint from the OCI
/// spec, and the image's wasm layers when it has some.
pub struct WorkloadContext<'a> {
    spec: &'a Spec,
    wasm_layers: &'a [WasmLayer],
}

impl<'a> WorkloadContext<'a> {
    pub fn new(spec: &'a Spec, wasm_layers: &'a [WasmLayer]) -> Self {
        Self { spec, wasm_layers }
    }
}

impl RuntimeContext for WorkloadContext<'_> {
    fn args(&self) -> &[String] {
        self.spec
            .process()
            .as_ref()
            .and_then(|process| process.args().as_deref())
            .unwrap_or_default()
    }

    fn envs(&self) -> &[String] {
        self.spec
            .process()
            .as_ref()
            .and_then(|process| process.env().as_deref())
            .unwrap_or_default()
    }

    fn entrypoint(&self) -> Entrypoint<'_> {
        let arg0 = self.args().first().map(String::as_str);
        let entry = arg0.unwrap_or("");
        let (path, func) = entry.split_once('#').unwrap_or((entry, "_start"));
        let source = if self.wasm_layers.is_empty() {
            Source::File(PathBuf::from(path))
        } else {
            Source::Oci(self.wasm_layers)
        };
        Entrypoint {
            func: func.to_string(),
            name: Path::new(path)
                .file_stem()
                .map(|stem| stem.to_string_lossy().into_owned()),
            arg0: arg0.map(Path::new),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use oci_spec::runtime::{ProcessBuilder, SpecBuilder};

    use super::*;

    fn spec(args: &[&str]) -> Spec {
        SpecBuilder::default()
            .process(
                ProcessBuilder::default()
                    .args(args.iter().map(|a| a.to_string()).collect::<Vec<_>>())
                    .env(vec!["A=1".to_string()])
                    .build()
                    .expect("process"),
            )
            .build()
            .expect("spec")
    }

    #[test]
    fn entrypoint_splits_the_function_off_arg0() {
        let spec = spec(&["/app/tool.wasm#serve", "x"]);
        let ctx = WorkloadContext::new(&spec, &[]);
        let entry = ctx.entrypoint();
        assert_eq!(entry.func, "serve");
        assert_eq!(entry.name.as_deref(), Some("tool"));
        assert!(matches!(entry.source, Source::File(ref p) if p == Path::new("/app/tool.wasm")));
        assert_eq!(ctx.args(), ["/app/tool.wasm#serve", "x"]);
        assert_eq!(ctx.envs(), ["A=1"]);
    }

    #[test]
    fn default_function_is_start() {
        let spec = spec(&["hello.wasm"]);
        let ctx = WorkloadContext::new(&spec, &[]);
        assert_eq!(ctx.entrypoint().func, "_start");
    }
}
