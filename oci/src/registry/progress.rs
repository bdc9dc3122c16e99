//! A one-line progress display for blob transfers, on stderr when it is a terminal; silent
//! otherwise (logs, pipes, tests).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Blobs smaller than this finish too fast for a bar to be worth drawing.
pub const MIN_BAR_BYTES: u64 = 1 << 20;
/// How often the line is redrawn.
const REDRAW: Duration = Duration::from_millis(100);

/// Whether progress is drawn: on a terminal, or never.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// Draw on stderr if it is a terminal.
    Auto,
    Never,
}

impl ProgressMode {
    fn enabled(self) -> bool {
        self == ProgressMode::Auto && std::io::stderr().is_terminal()
    }
}

/// The progress of one blob.
pub struct Progress {
    label: String,
    total: u64,
    done: u64,
    drawn: Option<Instant>,
    enabled: bool,
}

impl Progress {
    /// Starts the display for `total` bytes of `label` (e.g. "push sha256:ab12…").
    pub fn new(mode: ProgressMode, label: String, total: u64) -> Self {
        Self {
            label,
            total,
            done: 0,
            drawn: None,
            enabled: total >= MIN_BAR_BYTES && mode.enabled(),
        }
    }

    /// Counts `bytes` more transferred.
    pub fn advance(&mut self, bytes: u64) {
        self.done = self.done.saturating_add(bytes);
        if self.enabled && self.drawn.is_none_or(|at| at.elapsed() >= REDRAW) {
            self.draw();
        }
    }

    /// Draws the final state and ends the line.
    pub fn finish(mut self) {
        if self.enabled {
            self.draw();
            eprintln!();
        }
    }

    fn draw(&mut self) {
        self.drawn = Some(Instant::now());
        let mut stderr = std::io::stderr().lock();
        let _ = write!(stderr, "\r{}", line(&self.label, self.done, self.total));
        let _ = stderr.flush();
    }
}

/// `label [#####.....]  45%  4.5/10.0 MiB`.
pub fn line(label: &str, done: u64, total: u64) -> String {
    const WIDTH: u64 = 30;
    let done = done.min(total);
    let filled = (done * WIDTH).checked_div(total).unwrap_or(WIDTH);
    let percent = (done * 100).checked_div(total).unwrap_or(100);
    let mib = |bytes: u64| bytes as f64 / f64::from(1 << 20);
    format!(
        "{label} [{}{}] {percent:>3}% {:.1}/{:.1} MiB",
        "#".repeat(filled as usize),
        ".".repeat((WIDTH - filled) as usize),
        mib(done),
        mib(total)
    )
}

/// `sha256:0123456789ab` for a label.
pub fn short(digest: &str) -> &str {
    digest.get(..19).unwrap_or(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_shows_share_and_sizes() {
        let text = line("push x", 5 << 20, 10 << 20);
        assert!(
            text.starts_with("push x [###############...............]"),
            "{text}"
        );
        assert!(text.ends_with(" 50% 5.0/10.0 MiB"), "{text}");
        assert!(line("y", 0, 0).contains("100%"));
        assert!(line("y", 20, 10).contains("100%"));
    }

    #[test]
    fn small_blobs_and_pipes_draw_nothing() {
        let progress = Progress::new(ProgressMode::Auto, "x".into(), MIN_BAR_BYTES - 1);
        assert!(!progress.enabled);
        let progress = Progress::new(ProgressMode::Never, "x".into(), MIN_BAR_BYTES * 8);
        assert!(!progress.enabled);
        assert_eq!(short("sha256:0123456789abcdef"), "sha256:0123456789ab");
        assert_eq!(short("sha256:01"), "sha256:01");
    }
}
