//! containerd's `Events.Forward`, called over ttrpc on a socket that only the events thread
//! uses, one request at a time.
//!
//! containerd-shim's `RemotePublisher` keeps a ttrpc 0.8 sync client, whose reader thread
//! polls its socket with a 10 ms timeout for as long as the process lives: 100 wake-ups a
//! second in every serving process, busy or idle, which on a node of a thousand pods is
//! 100,000 a second of nothing. Events are sent one at a time and each waits for its answer,
//! so a blocking write and read on the socket need no reader thread at all.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use containerd_shim::protos::protobuf::Message;
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::shim::events::{Envelope, ForwardRequest};
use containerd_shim::protos::ttrpc::proto::{
    MESSAGE_HEADER_LENGTH, MESSAGE_LENGTH_MAX, MESSAGE_TYPE_RESPONSE,
};
use containerd_shim::protos::ttrpc::{Code, MessageHeader, Request, Response};
use containerd_shim::util::timestamp;

const SERVICE: &str = "containerd.services.events.ttrpc.v1.Events";
const METHOD: &str = "Forward";

/// How long one event may take to be written and answered. containerd answers at once, even
/// loaded; one that has not in this long is wedged or restarting, and the event is sent once
/// more on a new socket (a late first copy makes a duplicate, which containerd tolerates
/// better than a lost exit).
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("encoding the event: {0}")]
    Encode(String),
    #[error("connecting to containerd at {address}: {source}")]
    Connect {
        address: String,
        source: std::io::Error,
    },
    #[error("talking to containerd: {0}")]
    Io(#[from] std::io::Error),
    #[error("containerd's answer: {0}")]
    Answer(String),
    #[error("containerd refused the event ({code:?}): {message}")]
    Refused { code: Code, message: String },
}

/// A client of containerd's events service that sends one event at a time.
pub struct EventForwarder {
    /// containerd's ttrpc socket (`TTRPC_ADDRESS`, with or without `unix://`).
    address: String,
    socket: Option<UnixStream>,
    /// The next request's stream id: a client's are odd and increase.
    next_stream_id: u32,
}

impl EventForwarder {
    pub fn new(address: &str) -> Self {
        let address = address
            .strip_prefix("unix://")
            .unwrap_or(address)
            .to_string();
        Self {
            address,
            socket: None,
            next_stream_id: 1,
        }
    }

    /// Forwards `event` under `topic` for `namespace` and waits for containerd's answer. A
    /// socket that fails is dropped and the event sent once more on a new one (containerd
    /// restarted); a refusal is not retried.
    pub fn publish(
        &mut self,
        topic: &str,
        namespace: &str,
        event: Any,
    ) -> Result<(), ForwardError> {
        let request = forward_request(topic, namespace, event)?;
        match self.call(&request) {
            Err(ForwardError::Io(_)) => {
                self.socket = None;
                self.call(&request)
            }
            other => other,
        }
    }

    fn call(&mut self, payload: &[u8]) -> Result<(), ForwardError> {
        let stream_id = self.next_stream_id;
        self.next_stream_id = stream_id.wrapping_add(2);
        let socket = self.socket()?;
        write_request(socket, stream_id, payload)?;
        let response = read_response(socket, stream_id)?;
        let status = response.status();
        if status.code() != Code::OK {
            return Err(ForwardError::Refused {
                code: status.code(),
                message: status.message().to_string(),
            });
        }
        Ok(())
    }

    fn socket(&mut self) -> Result<&mut UnixStream, ForwardError> {
        if self.socket.is_none() {
            let connect_failed = |source| ForwardError::Connect {
                address: self.address.clone(),
                source,
            };
            // std's UnixStream is opened with SOCK_CLOEXEC: no container process inherits it.
            let socket = UnixStream::connect(&self.address).map_err(connect_failed)?;
            socket
                .set_read_timeout(Some(REPLY_TIMEOUT))
                .and_then(|()| socket.set_write_timeout(Some(REPLY_TIMEOUT)))
                .map_err(connect_failed)?;
            self.socket = Some(socket);
        }
        // Set just above when it was not.
        self.socket
            .as_mut()
            .ok_or_else(|| ForwardError::Answer("no socket".into()))
    }
}

/// The ttrpc request that carries `event`, encoded.
fn forward_request(topic: &str, namespace: &str, event: Any) -> Result<Vec<u8>, ForwardError> {
    let encode = |err: &dyn std::fmt::Display| ForwardError::Encode(err.to_string());
    let mut envelope = Envelope::new();
    envelope.set_topic(topic.to_owned());
    envelope.set_namespace(namespace.to_owned());
    envelope.set_timestamp(timestamp().map_err(|e| encode(&e))?);
    envelope.set_event(event);
    let mut forward = ForwardRequest::new();
    forward.set_envelope(envelope);

    let mut request = Request::new();
    request.set_service(SERVICE.to_string());
    request.set_method(METHOD.to_string());
    request.set_timeout_nano(REPLY_TIMEOUT.as_nanos().try_into().unwrap_or(i64::MAX));
    request.payload = forward.write_to_bytes().map_err(|e| encode(&e))?;
    request.write_to_bytes().map_err(|e| encode(&e))
}

fn write_request(
    socket: &mut UnixStream,
    stream_id: u32,
    payload: &[u8],
) -> Result<(), ForwardError> {
    let length = u32::try_from(payload.len())
        .ok()
        .filter(|&len| len as usize <= MESSAGE_LENGTH_MAX)
        .ok_or_else(|| ForwardError::Encode(format!("{} bytes is too long", payload.len())))?;
    let header: Vec<u8> = MessageHeader::new_request(stream_id, length).into();
    let mut frame = Vec::with_capacity(header.len() + payload.len());
    frame.extend_from_slice(&header);
    frame.extend_from_slice(payload);
    socket.write_all(&frame)?;
    Ok(())
}

/// Reads frames until the response to `stream_id` (containerd sends nothing else on this
/// socket, but a late answer to an earlier, timed-out request is skipped).
fn read_response(socket: &mut UnixStream, stream_id: u32) -> Result<Response, ForwardError> {
    loop {
        let mut header = [0u8; MESSAGE_HEADER_LENGTH];
        socket.read_exact(&mut header)?;
        let header = MessageHeader::from(&header[..]);
        let length = header.length as usize;
        if length > MESSAGE_LENGTH_MAX {
            return Err(ForwardError::Answer(format!("a {length}-byte frame")));
        }
        let mut body = vec![0u8; length];
        socket.read_exact(&mut body)?;
        if header.stream_id != stream_id || header.type_ != MESSAGE_TYPE_RESPONSE {
            continue;
        }
        return Response::parse_from_bytes(&body).map_err(|e| ForwardError::Answer(e.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::{Sender, channel};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use containerd_shim::protos::events::task::TaskExit;
    use containerd_shim::protos::shim::events::ForwardRequest;
    use containerd_shim::protos::shim::events_ttrpc::{Events, create_events};
    use containerd_shim::protos::ttrpc::{self, Server, TtrpcContext};
    use containerd_shim::protos::types::empty::Empty;

    use super::*;

    struct Received(Mutex<Sender<(String, String, Vec<u8>)>>);

    impl Events for Received {
        fn forward(&self, _ctx: &TtrpcContext, req: ForwardRequest) -> ttrpc::Result<Empty> {
            let envelope = req.envelope();
            if envelope.topic() == "/refused" {
                return Err(ttrpc::Error::RpcStatus(ttrpc::get_status(
                    Code::INVALID_ARGUMENT,
                    "not this one",
                )));
            }
            let sent = (
                envelope.topic().to_string(),
                envelope.namespace().to_string(),
                envelope.event().value.clone(),
            );
            let _ = self.0.lock().map(|tx| tx.send(sent));
            Ok(Empty::new())
        }
    }

    fn serve(socket: &std::path::Path, tx: Sender<(String, String, Vec<u8>)>) -> Server {
        let service = create_events(Arc::new(Box::new(Received(Mutex::new(tx)))));
        let mut server = Server::new()
            .bind(&format!("unix://{}", socket.display()))
            .expect("bind")
            .register_service(service);
        server.start().expect("start");
        server
    }

    fn exit_event(pid: u32) -> Any {
        let exit = TaskExit {
            container_id: "c1".into(),
            pid,
            exit_status: 3,
            ..Default::default()
        };
        Any {
            type_url: "containerd.events.TaskExit".into(),
            value: exit.write_to_bytes().expect("encode"),
            ..Default::default()
        }
    }

    #[test]
    fn events_reach_containerd_in_order_and_survive_its_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("containerd.sock.ttrpc");
        let (tx, rx) = channel();
        let server = serve(&socket, tx.clone());
        let mut forwarder = EventForwarder::new(&format!("unix://{}", socket.display()));
        for pid in [10, 11] {
            forwarder
                .publish("/tasks/exit", "ns1", exit_event(pid))
                .expect("publish");
        }
        for pid in [10, 11] {
            let (topic, namespace, value) =
                rx.recv_timeout(Duration::from_secs(5)).expect("received");
            assert_eq!((topic.as_str(), namespace.as_str()), ("/tasks/exit", "ns1"));
            let exit = TaskExit::parse_from_bytes(&value).expect("a TaskExit");
            assert_eq!((exit.pid, exit.exit_status), (pid, 3));
        }

        // containerd restarts: the old socket is dead, the next event goes to the new one.
        server.shutdown();
        let _ = std::fs::remove_file(&socket);
        let _server = serve(&socket, tx);
        forwarder
            .publish("/tasks/exit", "ns1", exit_event(12))
            .expect("publish after a restart");
        let (_, _, value) = rx.recv_timeout(Duration::from_secs(5)).expect("received");
        assert_eq!(TaskExit::parse_from_bytes(&value).expect("exit").pid, 12);
    }

    #[test]
    fn a_refusal_is_reported_with_containerds_words() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("containerd.sock.ttrpc");
        let (tx, _rx) = channel();
        let _server = serve(&socket, tx);
        let mut forwarder = EventForwarder::new(&socket.display().to_string());
        let err = forwarder
            .publish("/refused", "ns1", exit_event(1))
            .expect_err("refused");
        assert!(
            matches!(&err, ForwardError::Refused { code: Code::INVALID_ARGUMENT, message } if message == "not this one"),
            "{err}"
        );
    }

    #[test]
    fn no_containerd_is_a_connect_error_naming_the_socket() {
        let mut forwarder = EventForwarder::new("/nonexistent/containerd.sock.ttrpc");
        let err = forwarder
            .publish("/tasks/exit", "ns1", exit_event(1))
            .expect_err("nothing listens");
        assert!(
            err.to_string()
                .contains("/nonexistent/containerd.sock.ttrpc"),
            "{err}"
        );
    }
}
