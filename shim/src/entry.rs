use containerd_shim_wasm::shim::{Cli, Config, Shim};

use crate::version::{EngineInfo, VersionReport};

/// The environment variable that sets the shim's log level (`error`, `warn`, `info`, `debug`,
/// `trace`). containerd's own `-debug` flag still turns on debug logs.
pub const LOG_LEVEL_ENV: &str = "WASMRUNNER_LOG";

/// The log level when [`LOG_LEVEL_ENV`] is unset: quiet on the hot path.
const DEFAULT_LOG_LEVEL: &str = "warn";

/// Runs an engine binary: answers `--version` itself, and hands every other invocation
/// (containerd's `start`, `delete`, and the serving shim) to runwasi's command line.
pub fn run<S: Shim>(info: EngineInfo) {
    let asks_version = std::env::args()
        .skip(1)
        .any(|arg| matches!(arg.as_str(), "--version" | "-version" | "-v" | "--v"));
    if asks_version {
        print!("{}", VersionReport(&info));
        return;
    }

    let default_log_level = std::env::var(LOG_LEVEL_ENV)
        .ok()
        .filter(|level| !level.is_empty())
        .unwrap_or_else(|| DEFAULT_LOG_LEVEL.to_string());
    S::run(Config {
        no_setup_logger: false,
        default_log_level,
    });
}
