//! Recognising wasm binaries from their 8-byte header.

use std::fmt;

use serde::Serialize;

/// The wasm magic number, `\0asm`.
pub const WASM_MAGIC: [u8; 4] = *b"\0asm";
/// Version/layer bytes of a core module (version 1).
pub const MODULE_VERSION: [u8; 4] = [0x01, 0x00, 0x00, 0x00];
/// Version/layer bytes of a component (version 0x0d, layer 1).
pub const COMPONENT_VERSION: [u8; 4] = [0x0d, 0x00, 0x01, 0x00];

/// What kind of wasm binary a byte string holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WasmKind {
    /// A core module (`\0asm 01 00 00 00`).
    Module,
    /// A component (`\0asm 0d 00 01 00`).
    Component,
    /// The magic number is there but the version is not one we know.
    UnknownVersion,
}

impl WasmKind {
    /// Classifies `bytes`; `None` when they do not start with the wasm magic number.
    pub fn detect(bytes: &[u8]) -> Option<Self> {
        let magic = bytes.get(..4)?;
        if magic != WASM_MAGIC {
            return None;
        }
        Some(match bytes.get(4..8) {
            Some(version) if version == MODULE_VERSION => Self::Module,
            Some(version) if version == COMPONENT_VERSION => Self::Component,
            _ => Self::UnknownVersion,
        })
    }
}

impl fmt::Display for WasmKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Module => "wasm module",
            Self::Component => "wasm component",
            Self::UnknownVersion => "wasm, unknown version",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_module_and_component() {
        assert_eq!(
            WasmKind::detect(b"\0asm\x01\0\0\0rest"),
            Some(WasmKind::Module)
        );
        assert_eq!(
            WasmKind::detect(b"\0asm\x0d\0\x01\0"),
            Some(WasmKind::Component)
        );
        assert_eq!(
            WasmKind::detect(b"\0asm\x02\0\0\0"),
            Some(WasmKind::UnknownVersion)
        );
        assert_eq!(WasmKind::detect(b"\0asm"), Some(WasmKind::UnknownVersion));
    }

    #[test]
    fn rejects_non_wasm() {
        assert_eq!(WasmKind::detect(b""), None);
        assert_eq!(WasmKind::detect(b"\0as"), None);
        assert_eq!(WasmKind::detect(b"#!/bin/sh\n"), None);
    }
}
