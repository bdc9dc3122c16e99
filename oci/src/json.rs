//! Deterministic JSON: object keys sorted at every level.
//!
//! `oci-spec` keeps annotations in a `HashMap`, whose iteration order changes from
//! run to run, so documents go through a sorted `serde_json::Value` first.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::OciError;

/// Serializes `value` compactly with sorted keys; `what` names it in errors.
pub(crate) fn to_canonical_vec<T: Serialize>(value: &T, what: &str) -> Result<Vec<u8>, OciError> {
    let context = || format!("serializing {what}");
    let value = serde_json::to_value(value).map_err(|e| OciError::json(context(), e))?;
    serde_json::to_vec(&sorted(value)).map_err(|e| OciError::json(context(), e))
}

fn sorted(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|(a, _), (b, _)| a.cmp(b));
            let map: Map<String, Value> = entries
                .into_iter()
                .map(|(key, value)| (key, sorted(value)))
                .collect();
            Value::Object(map)
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn keys_are_sorted_at_every_level() {
        let inner: HashMap<&str, u32> = [("z", 1), ("a", 2), ("m", 3)].into_iter().collect();
        let outer: HashMap<&str, Vec<HashMap<&str, u32>>> =
            [("b", vec![inner.clone()]), ("a", vec![inner])]
                .into_iter()
                .collect();
        let bytes = to_canonical_vec(&outer, "test").expect("serializable");
        assert_eq!(
            String::from_utf8(bytes).expect("utf-8"),
            r#"{"a":[{"a":2,"m":3,"z":1}],"b":[{"a":2,"m":3,"z":1}]}"#
        );
    }
}
