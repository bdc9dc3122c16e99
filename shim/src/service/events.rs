//! Task events for containerd (`/tasks/create`, `/tasks/exit`, `/tasks/oom`, ...), sent in
//! order from a thread of their own so that no request waits on containerd.

use std::sync::mpsc::{Sender, channel};

use containerd_shim::protos::events::task::{TaskCreate, TaskDelete, TaskExit, TaskOOM, TaskStart};
use containerd_shim::protos::protobuf::MessageDyn;
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::topics;

use super::forwarder::{EventForwarder, ForwardError};
use crate::failure::contain_panic;

pub enum Event {
    Create(TaskCreate),
    Start(TaskStart),
    Exit(TaskExit),
    Delete(TaskDelete),
    Oom(TaskOOM),
}

impl Event {
    /// The event's topic, and the event packed as containerd's envelope carries it.
    ///
    /// The type names are written out: asking protobuf for them (`descriptor()`) builds the
    /// descriptors of every proto file involved, `descriptor.proto` with its comments too,
    /// about 230 KiB of heap kept for the life of the process (measured in a per-pod shim).
    fn into_parts(self) -> Result<(&'static str, Any), ForwardError> {
        let (topic, type_name, message): (_, _, &dyn MessageDyn) = match &self {
            Event::Create(e) => (topics::TASK_CREATE_EVENT_TOPIC, TASK_CREATE, e),
            Event::Start(e) => (topics::TASK_START_EVENT_TOPIC, TASK_START, e),
            Event::Exit(e) => (topics::TASK_EXIT_EVENT_TOPIC, TASK_EXIT, e),
            Event::Delete(e) => (topics::TASK_DELETE_EVENT_TOPIC, TASK_DELETE, e),
            Event::Oom(e) => (topics::TASK_OOM_EVENT_TOPIC, TASK_OOM, e),
        };
        let value = message
            .write_to_bytes_dyn()
            .map_err(|err| ForwardError::Encode(err.to_string()))?;
        let event = Any {
            type_url: type_name.to_string(),
            value,
            ..Default::default()
        };
        Ok((topic, event))
    }
}

const TASK_CREATE: &str = "containerd.events.TaskCreate";
const TASK_START: &str = "containerd.events.TaskStart";
const TASK_EXIT: &str = "containerd.events.TaskExit";
const TASK_DELETE: &str = "containerd.events.TaskDelete";
const TASK_OOM: &str = "containerd.events.TaskOOM";

/// Where the task service sends events; cheap to clone.
#[derive(Clone)]
pub struct EventSink {
    tx: Sender<Event>,
}

impl EventSink {
    /// Starts the thread that forwards events for `namespace` to containerd's ttrpc socket
    /// at `address`.
    pub fn start(address: &str, namespace: String) -> Self {
        let (tx, rx) = channel::<Event>();
        let mut forwarder = EventForwarder::new(address);
        std::thread::Builder::new()
            .name("events".into())
            .spawn(move || {
                for event in rx {
                    let (topic, event) = match event.into_parts() {
                        Ok(parts) => parts,
                        Err(err) => {
                            tracing::warn!("publishing an event: {err}");
                            continue;
                        }
                    };
                    contain_panic(&format!("publishing {topic}"), || {
                        if let Err(err) = forwarder.publish(topic, &namespace, event) {
                            tracing::warn!("publishing {topic}: {err}");
                        }
                    });
                }
            })
            .map(|_| ())
            .unwrap_or_else(|err| tracing::error!("cannot start the event thread: {err}"));
        Self { tx }
    }

    pub fn send(&self, event: Event) {
        // The receiver only goes away when the process ends.
        let _ = self.tx.send(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim::protos::protobuf::MessageFull;

    /// The names written out are protobuf's own.
    #[test]
    fn event_type_names_are_the_descriptors_names() {
        for (name, full_name) in [
            (
                TASK_CREATE,
                TaskCreate::descriptor().full_name().to_string(),
            ),
            (TASK_START, TaskStart::descriptor().full_name().to_string()),
            (TASK_EXIT, TaskExit::descriptor().full_name().to_string()),
            (
                TASK_DELETE,
                TaskDelete::descriptor().full_name().to_string(),
            ),
            (TASK_OOM, TaskOOM::descriptor().full_name().to_string()),
        ] {
            assert_eq!(name, full_name);
        }
        let (topic, event) = Event::Oom(TaskOOM::default()).into_parts().expect("packed");
        assert_eq!((topic, event.type_url.as_str()), ("/tasks/oom", TASK_OOM));
    }
}
