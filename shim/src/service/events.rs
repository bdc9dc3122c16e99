//! Task events for containerd (`/tasks/create`, `/tasks/exit`, `/tasks/oom`, ...), sent in
//! order from a thread of their own so that no request waits on containerd.

use std::sync::mpsc::{Sender, channel};

use containerd_shim::protos::events::task::{TaskCreate, TaskDelete, TaskExit, TaskOOM, TaskStart};
use containerd_shim::protos::protobuf::MessageDyn;
use containerd_shim::protos::topics;

use super::forwarder::EventForwarder;
use crate::failure::contain_panic;

pub enum Event {
    Create(TaskCreate),
    Start(TaskStart),
    Exit(TaskExit),
    Delete(TaskDelete),
    Oom(TaskOOM),
}

impl Event {
    fn into_parts(self) -> (&'static str, Box<dyn MessageDyn>) {
        match self {
            Event::Create(e) => (topics::TASK_CREATE_EVENT_TOPIC, Box::new(e)),
            Event::Start(e) => (topics::TASK_START_EVENT_TOPIC, Box::new(e)),
            Event::Exit(e) => (topics::TASK_EXIT_EVENT_TOPIC, Box::new(e)),
            Event::Delete(e) => (topics::TASK_DELETE_EVENT_TOPIC, Box::new(e)),
            Event::Oom(e) => (topics::TASK_OOM_EVENT_TOPIC, Box::new(e)),
        }
    }
}

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
                    let (topic, message) = event.into_parts();
                    contain_panic(&format!("publishing {topic}"), || {
                        if let Err(err) = forwarder.publish(topic, &namespace, message) {
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
