use crate::{Key, Origin};

/// Why a policy cannot be applied. Every message names the key, so that the user knows
/// which annotation or label to change.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PolicyError {
    #[error(
        "unknown capability key {name} in {origin}; the keys are {}",
        key_list()
    )]
    UnknownKey { name: String, origin: Origin },
    #[error("{} = {value:?} in {origin} is malformed: {reason}", key.annotation())]
    Malformed {
        key: Key,
        value: String,
        origin: Origin,
        reason: String,
    },
    #[error(
        "the image needs {} = {need}, which the container does not grant (it grants {})",
        key.annotation(),
        if granted.is_empty() { "nothing" } else { granted.as_str() }
    )]
    NotGranted {
        key: Key,
        need: String,
        granted: String,
    },
    #[error(
        "{engine} cannot enforce {}; it refuses the workload rather than run it with a wider grant",
        key.annotation()
    )]
    Unenforceable { engine: String, key: Key },
}

fn key_list() -> String {
    Key::ALL
        .iter()
        .map(|key| key.annotation())
        .collect::<Vec<_>>()
        .join(", ")
}
