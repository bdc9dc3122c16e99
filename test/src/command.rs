//! Running a program and keeping what it said, for assertions and for failure messages.

use std::fmt;
use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// What a finished command printed and how it ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub command: String,
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }

    /// Fails (with everything the command printed) unless it exited 0.
    pub fn ok(self) -> Result<Self> {
        if !self.success() {
            bail!("command failed: {self}");
        }
        Ok(self)
    }

    /// Fails unless the command exited with `code`.
    pub fn expect_status(self, code: i32) -> Result<Self> {
        if self.status != Some(code) {
            bail!("expected exit status {code}: {self}");
        }
        Ok(self)
    }

    /// stdout and stderr together, for messages that may land on either.
    pub fn output(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    /// Fails unless stdout or stderr contains `needle`.
    pub fn expect_output(self, needle: &str) -> Result<Self> {
        if !self.output().contains(needle) {
            bail!("expected output containing {needle:?}: {self}");
        }
        Ok(self)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = self
            .status
            .map_or("killed by a signal".to_string(), |s| format!("exit {s}"));
        write!(
            f,
            "`{}` ({status})\n--- stdout ---\n{}--- stderr ---\n{}",
            self.command, self.stdout, self.stderr
        )
    }
}

/// Runs `command` to completion and captures its output.
pub fn run_command(command: &mut Command) -> Result<Outcome> {
    let description = describe(command);
    let output = command
        .output()
        .with_context(|| format!("starting `{description}`"))?;
    Ok(Outcome {
        command: description,
        status: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// [`run_command`], but a command still running after `limit` is killed: the outcome then
/// has no status and says so on stderr (a hung shim fails its case instead of the suite).
pub fn run_command_within(command: &mut Command, limit: Duration) -> Result<Outcome> {
    run_command_read_slowly(command, Duration::ZERO, limit)
}

/// [`run_command_within`], with its stdout read by a slow consumer that pauses for `pause`
/// after every 4 KiB (see [`Capture::start_paced`]).
pub fn run_command_read_slowly(
    command: &mut Command,
    pause: Duration,
    limit: Duration,
) -> Result<Outcome> {
    let description = describe(command);
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting `{description}`"))?;
    let stdout = Capture::start_paced(child.stdout.take(), pause);
    let stderr = Capture::start(child.stderr.take());
    let status = wait_within(&mut child, limit)?;
    let mut stderr = stderr.finish();
    if status.is_none() {
        stderr.push_str(&format!("(killed: still running after {limit:?})\n"));
    }
    Ok(Outcome {
        command: description,
        status: status.and_then(|s| s.code()),
        stdout: stdout.finish(),
        stderr,
    })
}

/// Waits for `child` for up to `limit`, then kills it; `None` when it had to be killed.
pub fn wait_within(child: &mut Child, limit: Duration) -> Result<Option<ExitStatus>> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// What a child's pipe says, read on a thread of its own as it comes.
pub struct Capture {
    bytes: Arc<Mutex<Vec<u8>>>,
    reader: Option<JoinHandle<()>>,
}

impl Capture {
    pub fn start(pipe: Option<impl Read + Send + 'static>) -> Self {
        Self::start_paced(pipe, Duration::ZERO)
    }

    /// [`Capture::start`], pausing for `pause` after each read of at most 4 KiB: a slow
    /// consumer, whose pipe stays full.
    pub fn start_paced(pipe: Option<impl Read + Send + 'static>, pause: Duration) -> Self {
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let reader = pipe.map(|mut pipe| {
            let sink = Arc::clone(&bytes);
            std::thread::spawn(move || {
                let mut buffer = [0u8; 4096];
                loop {
                    let n = match pipe.read(&mut buffer) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(_) => break,
                    };
                    if let Ok(mut bytes) = sink.lock() {
                        bytes.extend_from_slice(&buffer[..n]);
                    }
                    if !pause.is_zero() {
                        std::thread::sleep(pause);
                    }
                }
            })
        });
        Self { bytes, reader }
    }

    /// What it said so far (decoded whole, so a character split across two reads is kept).
    pub fn snapshot(&self) -> String {
        self.bytes
            .lock()
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// Everything it said, once the pipe has closed.
    pub fn finish(mut self) -> String {
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        self.snapshot()
    }
}

pub fn describe(command: &Command) -> String {
    let mut words = vec![command.get_program().to_string_lossy().into_owned()];
    words.extend(command.get_args().map(|a| a.to_string_lossy().into_owned()));
    words.join(" ")
}
