//! Lap times of one task operation (a Create, a Delete): logged as one line at debug level
//! in containerd's log (where a task's time goes, read without a profiler), and, when
//! tracing is on, each lap a child span of the operation's [`Call`].

use std::fmt::Write;
use std::time::{Duration, Instant, SystemTime};

use opentelemetry::KeyValue;

use crate::telemetry::Call;

pub struct Laps<'c> {
    what: &'static str,
    id: String,
    /// Where the operation comes from, for the log line: `namespace` or `namespace/pod`.
    whose: String,
    call: &'c Call,
    started: Instant,
    last: Instant,
    /// When the previous lap ended by the wall clock, for spans: read at each lap, so that
    /// a lap never ends after its operation's span (an `Instant` offset from one wall-clock
    /// reading could, by the time between the two readings).
    last_wall: SystemTime,
    laps: Vec<(&'static str, Duration)>,
    /// Attributes for the span of the lap under way.
    notes: Vec<KeyValue>,
}

impl<'c> Laps<'c> {
    pub fn start(what: &'static str, id: &str, whose: &str, call: &'c Call) -> Self {
        let now = Instant::now();
        Self {
            what,
            id: id.to_string(),
            whose: whose.to_string(),
            call,
            started: now,
            last: now,
            last_wall: SystemTime::now(),
            laps: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// The call these laps are phases of.
    pub fn call(&self) -> &'c Call {
        self.call
    }

    /// Adds `key = value` to the lap under way (its span, when tracing).
    pub fn note(&mut self, key: &'static str, value: &str) {
        if self.call.recording() {
            self.notes.push(KeyValue::new(key, value.to_string()));
        }
    }

    /// Adds `key = value` to the operation's own span, when tracing.
    pub fn attribute(&mut self, key: &'static str, value: String) {
        self.call.attribute(key, value);
    }

    /// Names where the operation comes from (a pod, once the spec has been read).
    pub fn whose(&mut self, whose: String) {
        self.whose = whose;
    }

    /// Ends the lap `name`: the time since the previous lap.
    pub fn lap(&mut self, name: &'static str) {
        let now = Instant::now();
        if self.call.recording() {
            let wall_now = SystemTime::now();
            let notes = std::mem::take(&mut self.notes);
            self.call.phase(name, self.last_wall, wall_now, notes);
            self.last_wall = wall_now;
        }
        self.laps.push((name, now - self.last));
        self.last = now;
    }

    /// `create c1 (k8s.io/pod): 12.3 ms (mount rootfs 0.4, read spec 3.1, ...)`.
    pub fn summary(&self) -> String {
        let mut text = format!(
            "{} {} ({}): {:.1} ms (",
            self.what,
            self.id,
            self.whose,
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

impl Drop for Laps<'_> {
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
        let call =
            crate::telemetry::Telemetry::off().call("Create", &Default::default(), "c1", "default");
        let mut laps = Laps::start("create", "c1", "default", &call);
        laps.lap("mount");
        std::thread::sleep(Duration::from_millis(2));
        laps.lap("build");
        let text = laps.summary();
        assert!(text.starts_with("create c1 (default): "), "{text}");
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
