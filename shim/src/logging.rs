//! The serving process's own log: lines in containerd's format, written to a task's `log`
//! fifo, which containerd copies into its own log for as long as that task lives.
//!
//! A per-pod shim writes to its bundle's fifo all its life. A manager outlives the task that
//! started it, so every task it creates adds that task's fifo, and a line goes to the newest
//! fifo that still takes it. Writes never block: a line that no fifo takes right away is
//! dropped. (containerd-shim's own logger blocks on a full fifo, and once containerd has
//! closed the fifo it gets EPIPE and a SIGPIPE, which its signal thread logs at debug level:
//! another SIGPIPE, for ever, with that thread at 100% CPU and no child ever reaped again.)

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::str::FromStr;
use std::sync::{Mutex, OnceLock};

/// How many tasks' fifos a manager keeps open for its log: the newest ones.
const FIFOS_KEPT: usize = 4;

static LOGGER: OnceLock<FifoLog> = OnceLock::new();

struct FifoLog {
    /// Newest first.
    fifos: Mutex<VecDeque<File>>,
}

/// Installs the log for a serving process whose working directory is its first bundle.
/// `debug` is containerd's `-debug` flag; otherwise `level` (`RUST_LOG` overrides it, as with
/// containerd-shim's logger).
pub fn init(debug: bool, level: &str) {
    let level = std::env::var("RUST_LOG").unwrap_or_else(|_| level.to_string());
    let level = log::LevelFilter::from_str(&level).unwrap_or(log::LevelFilter::Warn);
    let level = if debug {
        level.max(log::LevelFilter::Debug)
    } else {
        level
    };
    let logger = LOGGER.get_or_init(|| FifoLog {
        fifos: Mutex::new(VecDeque::new()),
    });
    if log::set_logger(logger).is_ok() {
        log::set_max_level(level);
    }
    add_fifo(Path::new("log"));
}

/// Adds a task's log fifo (`<bundle>/log`), if containerd reads it: the log's lines go there
/// first from now on.
pub fn add_fifo(path: &Path) {
    let Some(logger) = LOGGER.get() else {
        return;
    };
    let Ok(fifo) = open_fifo(path) else {
        return;
    };
    if let Ok(mut fifos) = logger.fifos.lock() {
        fifos.push_front(fifo);
        fifos.truncate(FIFOS_KEPT);
    }
}

/// Opens for writing without blocking; fails (ENXIO) when nobody reads the fifo.
fn open_fifo(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
}

impl FifoLog {
    /// Writes `line` to the newest fifo that takes it; fifos nobody reads any more are closed.
    fn write(&self, line: &[u8]) {
        let Ok(mut fifos) = self.fifos.lock() else {
            return;
        };
        while let Some(fifo) = fifos.front_mut() {
            match fifo.write(line) {
                Ok(_) => return,
                // Full: containerd is behind. Drop the line, keep the fifo.
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    fifos.pop_front();
                }
            }
        }
    }
}

/// Below info, only these crates' lines are kept: at debug level the engine's compiler logs
/// every function it compiles and the gRPC client every HTTP/2 frame, thousands of lines per
/// container that would bury the shim's own.
const DEBUG_TARGETS: &[&str] = &["wasmrunner", "containerd_shim"];

fn wanted(metadata: &log::Metadata) -> bool {
    metadata.level() <= log::max_level()
        && (metadata.level() <= log::Level::Info
            || DEBUG_TARGETS
                .iter()
                .any(|target| metadata.target().starts_with(target)))
}

impl log::Log for FifoLog {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        wanted(metadata)
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = format_line(record);
        self.write(line.as_bytes());
    }

    fn flush(&self) {}
}

/// One line as containerd's logrus writes its own: `time="..." level=... msg="..."`.
fn format_line(record: &log::Record) -> String {
    let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    let level = record.level().as_str().to_ascii_lowercase();
    let message = record.args().to_string().replace('"', "\\\"");
    format!("time=\"{time}\" level={level} msg=\"{message}\"\n")
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;
    use crate::test_fifo::{make as fifo, reader};

    fn read_all(file: &mut File) -> String {
        let mut text = String::new();
        let _ = file.read_to_string(&mut text);
        text
    }

    /// A line goes to the newest fifo; once its reader is gone, to the one before; with no
    /// reader left it is dropped, and nothing blocks or loops.
    #[test]
    fn lines_go_to_the_newest_fifo_still_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (old, new) = (dir.path().join("old"), dir.path().join("new"));
        fifo(&old);
        fifo(&new);
        let mut old_reader = reader(&old);
        let new_reader = reader(&new);
        let log = FifoLog {
            fifos: Mutex::new(VecDeque::new()),
        };
        for path in [&old, &new] {
            log.fifos
                .lock()
                .expect("lock")
                .push_front(open_fifo(path).expect("open"));
        }
        log.write(b"first\n");
        drop(new_reader);
        log.write(b"second\n");
        assert_eq!(read_all(&mut old_reader), "second\n");
        assert_eq!(log.fifos.lock().expect("lock").len(), 1);
        drop(old_reader);
        log.write(b"third\n");
        assert!(log.fifos.lock().expect("lock").is_empty());
        log.write(b"dropped\n");
    }

    #[test]
    fn a_full_fifo_drops_the_line_instead_of_blocking() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("full");
        fifo(&path);
        let _reader = reader(&path);
        let log = FifoLog {
            fifos: Mutex::new(VecDeque::from([open_fifo(&path).expect("open")])),
        };
        let line = vec![b'x'; 4096];
        // 64 KiB of pipe buffer, then more: every write returns at once.
        for _ in 0..64 {
            log.write(&line);
        }
        assert_eq!(
            log.fifos.lock().expect("lock").len(),
            1,
            "a full fifo is kept"
        );
    }

    #[test]
    fn debug_lines_of_dependencies_are_left_out() {
        log::set_max_level(log::LevelFilter::Debug);
        let meta = |level, target| log::Metadata::builder().level(level).target(target).build();
        assert!(wanted(&meta(log::Level::Debug, "wasmrunner_shim::service")));
        assert!(wanted(&meta(
            log::Level::Debug,
            "containerd_shim::synchronous"
        )));
        assert!(!wanted(&meta(
            log::Level::Debug,
            "cranelift_codegen::timing"
        )));
        assert!(!wanted(&meta(log::Level::Debug, "h2::codec")));
        assert!(wanted(&meta(log::Level::Warn, "wasmtime::engine")));
    }

    #[test]
    fn nobody_reading_means_no_fifo() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("unread");
        fifo(&path);
        assert!(open_fifo(&path).is_err());
    }
}
