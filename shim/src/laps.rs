//! Lap times of one task operation (a Create, a Delete), logged as one line at debug level
//! in containerd's log: where a task's time goes, read without a profiler.

use std::fmt::Write;
use std::time::{Duration, Instant};

pub struct Laps {
    what: &'static str,
    id: String,
    started: Instant,
    last: Instant,
    laps: Vec<(&'static str, Duration)>,
}

impl Laps {
    pub fn start(what: &'static str, id: &str) -> Self {
        let now = Instant::now();
        Self {
            what,
            id: id.to_string(),
            started: now,
            last: now,
            laps: Vec::new(),
        }
    }

    /// Ends the lap `name`: the time since the previous lap.
    pub fn lap(&mut self, name: &'static str) {
        let now = Instant::now();
        self.laps.push((name, now - self.last));
        self.last = now;
    }

    /// `create c1: 12.3 ms (mount 0.4, image 3.1, ...)`.
    pub fn summary(&self) -> String {
        let mut text = format!(
            "{} {}: {:.1} ms (",
            self.what,
            self.id,
            self.started.elapsed().as_secs_f64() * 1000.0
        );
        for (i, (name, took)) in self.laps.iter().enumerate() {
            let separator = if i == 0 { "" } else { ", " };
            let _ = write!(text, "{separator}{name} {:.1}", took.as_secs_f64() * 1000.0);
        }
        text.push(')');
        text
    }
}

impl Drop for Laps {
    fn drop(&mut self) {
        // The shim logs through `log` (containerd's log), which `tracing::enabled!` does not
        // consult.
        if log::log_enabled!(log::Level::Debug) {
            tracing::debug!("{}", self.summary());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_every_lap_in_order() {
        let mut laps = Laps::start("create", "c1");
        laps.lap("mount");
        std::thread::sleep(Duration::from_millis(2));
        laps.lap("build");
        let text = laps.summary();
        assert!(text.starts_with("create c1: "), "{text}");
        let mount = text.find("mount ").expect("mount lap");
        let build = text.find("build ").expect("build lap");
        assert!(mount < build, "{text}");
        let build_ms: f64 = text[build + 6..]
            .trim_end_matches(')')
            .parse()
            .expect("a number");
        assert!(build_ms >= 2.0, "{text}");
    }
}
