//! Running a program and keeping what it said, for assertions and for failure messages.

use std::fmt;
use std::process::Command;

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

pub fn describe(command: &Command) -> String {
    let mut words = vec![command.get_program().to_string_lossy().into_owned()];
    words.extend(command.get_args().map(|a| a.to_string_lossy().into_owned()));
    words.join(" ")
}
