//! A span per request a served guest answers (a `wasi:http` server), when its task is traced.
//!
//! The engine's server tells the shim about each request it answered, one line per request,
//! through a FIFO of the task's own: `<id>.requests` in the task's state directory (host side),
//! made by the shim at Create only for a traced Wasm task. The shim reads it on its runtime for
//! as long as the container's process holds the write end, and exports each request as a span
//! (see `telemetry::Parent::served`). The builder opens the write end before libcontainer clones
//! the init process, which inherits it, and the scrub keeps it.
//!
//! A request continues its client's trace: the server takes the W3C `traceparent` header the
//! request came with (a new trace when it has none or a malformed one), gives the request a span
//! of its own, and hands the guest a `traceparent` naming that span, so that what the guest calls
//! with it is a child of the request.
//!
//! Why the guest cannot abuse the channel: a Wasm guest reaches no descriptor of its process
//! (WASI hands it only its preopens and stdio, under numbers of its own), and the server writes
//! without blocking (a record the FIFO cannot take is dropped; a request is never held up for
//! its span). Whatever an engine a guest escaped from wrote there, the shim takes only lines of
//! exactly a record's shape, at most [`MAX_LINE`] bytes: ids of their lengths in hex, two times,
//! a status code and one of the standard methods. A span names no path, header or body, nothing
//! a client sent but the trace context that W3C trace context exists to carry. Nothing read
//! there decides anything in the shim.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// The header that carries a request's trace context (W3C Trace Context).
pub const TRACEPARENT: &str = "traceparent";

/// The longest record line the shim takes (a record is about 110 bytes).
const MAX_LINE: usize = 256;

const RECORD: &str = "request";

/// The methods a span names; any other is `_OTHER`, as OpenTelemetry's HTTP conventions have it.
const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];
const OTHER_METHOD: &str = "_OTHER";

/// A request's place in a trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestContext {
    pub trace_id: [u8; 16],
    /// The request's own span.
    pub span_id: [u8; 8],
    /// The client's span, when the request carried a valid `traceparent`.
    pub parent: Option<[u8; 8]>,
    /// The trace flags (bit 0: sampled).
    pub flags: u8,
}

impl RequestContext {
    /// Continues the trace in the request's `traceparent` header, or starts a new, sampled one.
    pub fn continuing(traceparent: Option<&[u8]>) -> Self {
        match traceparent.and_then(parse_traceparent) {
            Some((trace_id, parent, flags)) => Self {
                trace_id,
                span_id: random_id(),
                parent: Some(parent),
                flags,
            },
            None => Self {
                trace_id: random_id(),
                span_id: random_id(),
                parent: None,
                flags: 1,
            },
        }
    }

    /// The `traceparent` the guest gets: the request's span as the parent of what it calls.
    pub fn traceparent(&self) -> String {
        format!(
            "00-{}-{}-{:02x}",
            hex(&self.trace_id),
            hex(&self.span_id),
            self.flags
        )
    }
}

/// `00-<trace id>-<parent id>-<flags>`, lowercase hex, no id all zeros; anything else is no
/// trace context (the W3C specification's rule: start a new trace).
fn parse_traceparent(value: &[u8]) -> Option<([u8; 16], [u8; 8], u8)> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let mut parts = value.split('-');
    let (Some("00"), Some(trace), Some(parent), Some(flags), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    let trace_id = unhex::<16>(trace)?;
    let parent = unhex::<8>(parent)?;
    let [flags] = unhex::<1>(flags)?;
    (trace_id != [0; 16] && parent != [0; 8]).then_some((trace_id, parent, flags))
}

/// `N` bytes from exactly `2N` lowercase hex digits.
fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let digits = text.as_bytes();
    if digits.len() != 2 * N {
        return None;
    }
    let digit = |d: u8| match d {
        b'0'..=b'9' => Some(d - b'0'),
        b'a'..=b'f' => Some(d - b'a' + 10),
        _ => None,
    };
    let mut bytes = [0u8; N];
    for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = (digit(pair[0])? << 4) | digit(pair[1])?;
    }
    Some(bytes)
}

/// `bytes` in lowercase hex, into one string (a traced server makes three per request).
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(2 * bytes.len());
    for byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0xf)]));
    }
    text
}

/// A random id that is not all zeros (an all-zero id is invalid in W3C trace context).
fn random_id<const N: usize>() -> [u8; N] {
    let mut id = [0u8; N];
    while id == [0u8; N] {
        // SAFETY: `id` is a writable buffer of `N` bytes that lives across the call.
        let filled = unsafe { libc::getrandom(id.as_mut_ptr().cast(), N, 0) };
        if filled != N as isize {
            // No entropy to be had: an id from the clock still tells requests apart.
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos()
                .to_le_bytes();
            for (byte, source) in id.iter_mut().zip(nanos.iter().cycle()) {
                *byte ^= source | 1;
            }
        }
    }
    id
}

/// The method a span names for `method`.
pub fn method_name(method: &str) -> &'static str {
    METHODS
        .into_iter()
        .find(|known| *known == method)
        .unwrap_or(OTHER_METHOD)
}

/// One request a server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedRequest {
    pub context: RequestContext,
    /// When the request came.
    pub start: SystemTime,
    /// When its response's head was ready.
    pub end: SystemTime,
    pub status: u16,
    /// One of the standard methods, or `_OTHER` (see [`method_name`]).
    pub method: &'static str,
}

impl ServedRequest {
    fn line(&self) -> String {
        let nanos = |at: SystemTime| at.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos();
        let parent = self
            .context
            .parent
            .map_or_else(|| "-".to_string(), |p| hex(&p));
        format!(
            "{RECORD} {} {} {parent} {:02x} {} {} {} {}\n",
            hex(&self.context.trace_id),
            hex(&self.context.span_id),
            self.context.flags,
            nanos(self.start),
            nanos(self.end),
            self.status,
            self.method
        )
    }

    /// A record line, or nothing if it is not exactly one.
    fn parse(line: &str) -> Option<Self> {
        let fields: Vec<&str> = line.split(' ').collect();
        let [
            RECORD,
            trace,
            span,
            parent,
            flags,
            start,
            end,
            status,
            method,
        ] = fields[..]
        else {
            return None;
        };
        let parent = match parent {
            "-" => None,
            parent => Some(unhex::<8>(parent)?),
        };
        let context = RequestContext {
            trace_id: unhex::<16>(trace)?,
            span_id: unhex::<8>(span)?,
            parent,
            flags: unhex::<1>(flags)?[0],
        };
        let time = |text: &str| Some(UNIX_EPOCH + Duration::from_nanos(text.parse().ok()?));
        let (start, end) = (time(start)?, time(end)?);
        let status = status.parse().ok().filter(|s| (100..=599).contains(s))?;
        let method = METHODS
            .into_iter()
            .chain([OTHER_METHOD])
            .find(|known| *known == method)?;
        (context.trace_id != [0; 16] && context.span_id != [0; 8] && start <= end).then_some(Self {
            context,
            start,
            end,
            status,
            method,
        })
    }
}

/// The server's end: tells the shim about each request, or nothing when the task is not traced.
#[derive(Debug, Default, Clone)]
pub struct RequestLog {
    fifo: Option<Arc<File>>,
}

impl RequestLog {
    /// Opens the write end of the task's FIFO (in the builder), when the task is traced.
    pub(crate) fn open(path: Option<&Path>) -> Self {
        let fifo = path.and_then(|path| crate::sys::fifo_write_end(path, "request spans"));
        Self { fifo }
    }

    pub(crate) fn raw_fd(&self) -> Option<RawFd> {
        self.fifo.as_ref().map(|fifo| fifo.as_raw_fd())
    }

    /// Whether the task is traced: a server then traces its requests.
    pub fn traced(&self) -> bool {
        self.fifo.is_some()
    }

    /// Tells the shim about `request`. Never blocks, never fails the request: one write of one
    /// line shorter than `PIPE_BUF`, whole or not at all, from any thread.
    pub fn served(&self, request: &ServedRequest) {
        if let Some(mut fifo) = self.fifo.as_deref() {
            let _ = fifo.write(request.line().as_bytes());
        }
    }
}

/// The shim's end of a traced task's FIFO.
#[derive(Debug)]
pub struct RequestReader {
    path: PathBuf,
    fifo: Option<File>,
}

impl RequestReader {
    /// Makes the FIFO `path` (owner-only) and opens its read end, which must be open before
    /// the builder opens the write end.
    pub fn create(path: PathBuf) -> std::io::Result<Self> {
        let fifo = crate::sys::fifo_read_end(&path)?;
        Ok(Self {
            path,
            fifo: Some(fifo),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads records until every writer has closed its end (the container's process exited),
    /// handing each to `served`. Call it once the container's process holds the write end.
    pub async fn read_until_closed(mut self, mut served: impl FnMut(ServedRequest)) {
        let Some(fifo) = self.fifo.take() else {
            return;
        };
        // SAFETY: the `File` is owned by the `AsyncFd` from here on and never replaced (only
        // read through `get_ref`): its descriptor stays open and the same until the `AsyncFd`
        // is dropped.
        let fifo = match unsafe { AsyncFd::register_with_interest(fifo, Interest::READABLE) } {
            Ok(fifo) => fifo,
            Err(err) => {
                tracing::debug!("no request spans ({}): {err}", self.path.display());
                return;
            }
        };
        let mut lines = Lines::default();
        let mut buffer = [0u8; 16 * 1024];
        loop {
            let Ok(mut ready) = fifo.readable().await else {
                return;
            };
            match ready.try_io(|fifo| fifo.get_ref().read(&mut buffer)) {
                Ok(Ok(0)) => return,
                Ok(Ok(n)) => lines.feed(&buffer[..n], &mut served),
                Ok(Err(err)) if err.kind() == std::io::ErrorKind::Interrupted => {}
                Ok(Err(_)) => return,
                Err(_would_block) => {}
            }
        }
    }
}

impl Drop for RequestReader {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Record lines from a byte stream: a line longer than [`MAX_LINE`] is dropped whole.
#[derive(Default)]
struct Lines {
    partial: Vec<u8>,
    /// Inside a line too long to keep, until its end.
    skipping: bool,
}

impl Lines {
    fn feed(&mut self, mut bytes: &[u8], served: &mut impl FnMut(ServedRequest)) {
        while !bytes.is_empty() {
            let (chunk, ended) = match bytes.iter().position(|b| *b == b'\n') {
                Some(at) => (&bytes[..at], Some(at + 1)),
                None => (bytes, None),
            };
            if !self.skipping {
                if self.partial.len() + chunk.len() > MAX_LINE {
                    self.partial.clear();
                    self.skipping = true;
                } else {
                    self.partial.extend_from_slice(chunk);
                }
            }
            let Some(next) = ended else {
                return;
            };
            if !self.skipping
                && let Some(request) = std::str::from_utf8(&self.partial)
                    .ok()
                    .and_then(ServedRequest::parse)
            {
                served(request);
            }
            self.partial.clear();
            self.skipping = false;
            bytes = &bytes[next..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT: &[u8] = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    fn request(context: RequestContext) -> ServedRequest {
        let start = UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
        ServedRequest {
            context,
            start,
            end: start + Duration::from_micros(1500),
            status: 200,
            method: method_name("GET"),
        }
    }

    #[test]
    fn a_request_continues_its_clients_trace_under_a_span_of_its_own() {
        let context = RequestContext::continuing(Some(CLIENT));
        assert_eq!(hex(&context.trace_id), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(
            context.parent.map(|p| hex(&p)).as_deref(),
            Some("b7ad6b7169203331")
        );
        assert_ne!(hex(&context.span_id), "b7ad6b7169203331");
        assert_eq!(
            context.traceparent(),
            format!(
                "00-0af7651916cd43dd8448eb211c80319c-{}-01",
                hex(&context.span_id)
            )
        );
    }

    #[test]
    fn a_request_without_valid_trace_context_starts_a_trace() {
        let bad: [&[u8]; 7] = [
            b"",
            b"01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            b"00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            b"00-00000000000000000000000000000000-b7ad6b7169203331-01",
            b"00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-ff",
            b"00-0af7651916cd43dd8448eb211c8031-b7ad6b7169203331-01",
        ];
        for value in bad {
            let context = RequestContext::continuing(Some(value));
            assert_eq!(context.parent, None, "{:?}", String::from_utf8_lossy(value));
            assert_ne!(context.trace_id, [0; 16]);
            assert_eq!(context.flags, 1);
        }
        let (one, two) = (
            RequestContext::continuing(None),
            RequestContext::continuing(None),
        );
        assert_ne!(one.trace_id, two.trace_id, "new traces share an id");
    }

    #[test]
    fn a_record_reads_back_as_written() {
        for context in [
            RequestContext::continuing(Some(CLIENT)),
            RequestContext::continuing(None),
        ] {
            let written = request(context);
            let line = written.line();
            assert!(line.len() < MAX_LINE, "{line}");
            let read = ServedRequest::parse(line.trim_end()).expect("a record");
            assert_eq!(read, written);
        }
        assert_eq!(method_name("BREW"), "_OTHER");
    }

    #[test]
    fn only_lines_of_a_records_shape_are_taken() {
        let good = request(RequestContext::continuing(Some(CLIENT))).line();
        let good = good.trim_end();
        let fields: Vec<&str> = good.split(' ').collect();
        let with = |at: usize, value: &str| {
            let mut changed = fields.clone();
            changed[at] = value;
            changed.join(" ")
        };
        let start_after_end = {
            let mut changed = fields.clone();
            changed.swap(5, 6);
            changed.join(" ")
        };
        for bad in [
            with(0, "loaded"),
            with(1, "zz"),
            with(2, "0000000000000000"),
            with(3, "b7ad"),
            with(7, "99"),
            with(7, "600"),
            with(8, "BREW"),
            with(8, "GET /secret?token=1"),
            format!("{good} extra"),
            start_after_end,
        ] {
            assert_eq!(ServedRequest::parse(&bad), None, "{bad}");
        }
    }

    #[test]
    fn lines_are_taken_across_reads_and_long_ones_dropped() {
        let record = request(RequestContext::continuing(Some(CLIENT))).line();
        let mut stream = Vec::new();
        stream.extend_from_slice(record.as_bytes());
        stream.extend_from_slice(&[b'x'; 3 * MAX_LINE]);
        stream.extend_from_slice(record.as_bytes());
        stream.extend_from_slice(b"\n");
        stream.extend_from_slice(record.as_bytes());
        let mut lines = Lines::default();
        let mut taken = Vec::new();
        for piece in stream.chunks(7) {
            lines.feed(piece, &mut |request| taken.push(request));
        }
        // The first record, then one line too long (junk and a record run together), then
        // an empty line, then the last record.
        assert_eq!(taken.len(), 2);
    }

    #[tokio::test]
    async fn the_shim_reads_what_the_server_writes_until_it_closes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("task.requests");
        let reader = RequestReader::create(path.clone()).expect("fifo");
        let log = RequestLog::open(Some(&path));
        assert!(log.traced());
        let written = request(RequestContext::continuing(Some(CLIENT)));
        let reading = tokio::spawn(async move {
            let mut read = Vec::new();
            reader.read_until_closed(|request| read.push(request)).await;
            read
        });
        for _ in 0..3 {
            log.served(&written);
        }
        drop(log);
        let read = tokio::time::timeout(Duration::from_secs(10), reading)
            .await
            .expect("the reader stops when the writer closes")
            .expect("reader task");
        assert_eq!(read, vec![written.clone(), written.clone(), written]);
        assert!(!path.exists(), "the FIFO outlived its reader");
        assert!(!RequestLog::open(None).traced());
    }
}
