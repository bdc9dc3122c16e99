//! k3s and rke2: their embedded containerd's config is generated at every start from a Go
//! template, `<agent-dir>/etc/containerd/config.toml.tmpl` (config version 2) or, on releases
//! with containerd 2.0 (k3s v1.31.6+/v1.32.2+), `config-v3.toml.tmpl` (version 3, preferred
//! when present). A template that starts with `{{ template "base" . }}` extends k3s's own
//! config (k3s releases since September 2023).
//!
//! A template is not TOML, so the installer never parses it as a document: it keeps every
//! template line as it is and appends (or removes) one block delimited by marker comments.
//! The TOML inside the block is generated with `toml_edit`.
//!
//! k3s itself looks for `containerd-shim-wasmtime-v1`, `containerd-shim-wasmedge-v1`, ... on its
//! `PATH` and, for each one found, renders a runtime of the same name (`wasmtime`, `wasmedge`)
//! through the base template's `.ExtraRuntimes`. A second table of that name would make the
//! rendered file invalid TOML and containerd would not start. So, in a template that renders
//! `.ExtraRuntimes`, every handler in the block is wrapped in
//! `{{ if not (index .ExtraRuntimes "<handler>").RuntimeType }} ... {{ end }}`: rendered only when
//! k3s did not add it already. A handler the user defined in the template themselves is left to
//! them (or refused when it points at another runtime type).

use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::config::{self, ConfigVersion, RuntimeEntry};

pub const BEGIN_MARKER: &str = "# BEGIN wasmrunner-installer";
pub const END_MARKER: &str = "# END wasmrunner-installer";
pub const TEMPLATE_V2: &str = "config.toml.tmpl";
pub const TEMPLATE_V3: &str = "config-v3.toml.tmpl";
pub const BASE_TEMPLATE: &str = "{{ template \"base\" . }}";
pub const DEFAULT_K3S_AGENT_DIR: &str = "/var/lib/rancher/k3s/agent";

#[derive(Debug, Error, PartialEq, Eq)]
pub enum K3sError {
    #[error("line {line}: `{BEGIN_MARKER}` without a matching `{END_MARKER}`")]
    Unterminated { line: usize },
    #[error("line {line}: `{END_MARKER}` without a `{BEGIN_MARKER}` before it")]
    StrayEnd { line: usize },
    #[error("more than one wasmrunner-installer block (lines {first} and {second})")]
    Duplicate { first: usize, second: usize },
}

/// `<agent-dir>/etc/containerd`
pub fn template_dir(agent_dir: &Path) -> PathBuf {
    agent_dir.join("etc/containerd")
}

/// The template k3s will read, and the config format it renders: `config-v3.toml.tmpl` when it
/// exists, else `config.toml.tmpl` (created if needed: every k3s release that supports the base
/// template reads it, and containerd 2.0 migrates version 2 on load).
pub fn choose_template(agent_dir: &Path) -> (PathBuf, ConfigVersion) {
    let dir = template_dir(agent_dir);
    let v3 = dir.join(TEMPLATE_V3);
    if v3.exists() {
        (v3, ConfigVersion::V3)
    } else {
        (dir.join(TEMPLATE_V2), ConfigVersion::V2)
    }
}

/// The format a template file renders, from its name.
pub fn version_of_template(path: &Path) -> ConfigVersion {
    if path.file_name().is_some_and(|n| n == TEMPLATE_V3) {
        ConfigVersion::V3
    } else {
        ConfigVersion::V2
    }
}

/// A new template: k3s's own config, extended by the block appended after it.
pub fn new_template() -> String {
    format!("{BASE_TEMPLATE}\n")
}

/// True when the template renders k3s's `.ExtraRuntimes` (through the base template or a copy
/// of it), i.e. when k3s's own wasm shim detection can add tables to the output.
pub fn renders_extra_runtimes(text: &str) -> bool {
    text.contains("template \"base\"") || text.contains(".ExtraRuntimes")
}

/// A template split around our block.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Parts {
    /// Everything before the block (the whole text when there is no block).
    pub head: String,
    /// The blank line put before the block, if there is one.
    pub separator: String,
    /// The block, marker lines included.
    pub block: Option<String>,
    /// Everything after the block.
    pub tail: String,
}

impl Parts {
    /// The template without our block: what the user wrote.
    pub fn without_block(&self) -> String {
        format!("{}{}", self.head, self.tail)
    }

    /// The template with `block` in place of ours, or appended when there was none.
    pub fn with_block(&self, block: &str) -> String {
        match self.block {
            Some(_) => format!("{}{}{block}{}", self.head, self.separator, self.tail),
            None => with_block(&self.without_block(), block),
        }
    }
}

/// Finds our block (and the one blank line put before it).
pub fn split_block(text: &str) -> Result<Parts, K3sError> {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut begin = None;
    let mut range = None;
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim();
        if trimmed.starts_with(BEGIN_MARKER) {
            if let Some((first, _)) = range {
                return Err(K3sError::Duplicate {
                    first: first + 1,
                    second: i + 1,
                });
            }
            if let Some(b) = begin {
                return Err(K3sError::Duplicate {
                    first: b + 1,
                    second: i + 1,
                });
            }
            begin = Some(i);
        } else if trimmed == END_MARKER {
            match begin.take() {
                Some(b) => range = Some((b, i)),
                None => return Err(K3sError::StrayEnd { line: i + 1 }),
            }
        }
    }
    if let Some(b) = begin {
        return Err(K3sError::Unterminated { line: b + 1 });
    }
    let Some((first, last)) = range else {
        return Ok(Parts {
            head: text.to_string(),
            ..Parts::default()
        });
    };
    let start = if first > 0 && lines[first - 1].trim().is_empty() {
        first - 1
    } else {
        first
    };
    Ok(Parts {
        head: lines[..start].concat(),
        separator: lines[start..first].concat(),
        block: Some(lines[first..=last].concat()),
        tail: lines[last + 1..].concat(),
    })
}

/// Appends the block to a template that has none: one blank line, then the block.
pub fn with_block(text: &str, block: &str) -> String {
    let mut out = text.to_string();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    if !out.is_empty() {
        out.push('\n');
    }
    out.push_str(block);
    out
}

/// The block: one TOML fragment per handler, each guarded when k3s may add the same handler.
///
/// With `follow_k3s_cgroup`, each handler is written twice, under `{{ if .SystemdCgroup }}` and
/// `{{ else }}`, so that its `SystemdCgroup` is the value k3s renders for runc (and gives
/// kubelet as its cgroup driver); `entry.systemd_cgroup` is then unused.
pub fn render_block(
    version: ConfigVersion,
    entries: &[RuntimeEntry],
    guard: bool,
    follow_k3s_cgroup: bool,
) -> String {
    let mut block = format!(
        "{BEGIN_MARKER}: runtime handlers for wasmrunner's shims. Managed block: do not edit it;\n\
         # `wasmrunner-installer uninstall` removes it.\n"
    );
    if guard {
        block.push_str(
            "# A handler is rendered only when k3s did not find the same shim on its PATH and add it\n\
             # itself: two tables of one name would be invalid TOML. k3s's own table lists no\n\
             # pod_annotations/container_annotations, so the shim gets no capability annotations.\n",
        );
    }
    if follow_k3s_cgroup {
        block.push_str("# SystemdCgroup follows k3s's own setting for runc.\n");
    }
    let fragment = |entry: &RuntimeEntry, systemd: bool| {
        let entry = RuntimeEntry {
            systemd_cgroup: systemd,
            ..entry.clone()
        };
        config::runtime_tables_toml(version, std::slice::from_ref(&entry))
    };
    for entry in entries {
        if guard {
            // Handler names are plain ASCII words, so a Rust debug string is a Go string literal.
            block.push_str(&format!(
                "{{{{ if not (index .ExtraRuntimes {:?}).RuntimeType }}}}\n",
                entry.handler
            ));
        }
        if follow_k3s_cgroup {
            block.push_str("{{ if .SystemdCgroup }}\n");
            block.push_str(&fragment(entry, true));
            block.push_str("{{ else }}\n");
            block.push_str(&fragment(entry, false));
            block.push_str("{{ end }}\n");
        } else {
            block.push_str(&fragment(entry, entry.systemd_cgroup));
        }
        if guard {
            block.push_str("{{ end }}\n");
        }
    }
    block.push_str(END_MARKER);
    block.push('\n');
    block
}

/// A handler table the user wrote in the template outside our block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRuntime {
    pub line: usize,
    pub runtime_type: Option<String>,
    /// The keys of [`config::ANNOTATION_KEYS`] the table sets, with the strings they list (read
    /// from the table's own lines; a list the installer cannot read is left out).
    pub annotation_lists: Vec<(String, Vec<String>)>,
}

impl UserRuntime {
    /// The [`config::ANNOTATION_KEYS`] whose list lacks one of `patterns`.
    pub fn keys_lacking(&self, patterns: &[String]) -> Vec<&'static str> {
        config::ANNOTATION_KEYS
            .into_iter()
            .filter(|key| {
                let listed = self
                    .annotation_lists
                    .iter()
                    .find(|(k, _)| k == key)
                    .map(|(_, v)| v.as_slice())
                    .unwrap_or_default();
                patterns.iter().any(|p| !listed.contains(p))
            })
            .collect()
    }
}

/// The key path of a TOML table header line (`[a."b".c]`), if the line is one and has no
/// template action in it.
fn header_path(line: &str) -> Option<Vec<String>> {
    let trimmed = line.trim();
    if !trimmed.starts_with('[') || trimmed.starts_with("[[") || trimmed.contains("{{") {
        return None;
    }
    let doc = config::parse(trimmed).ok()?;
    // The header's path is the deepest table in the one-line document.
    let mut path = Vec::new();
    let mut table: &dyn toml_edit::TableLike = doc.as_table();
    loop {
        let mut next = None;
        for (key, item) in table.iter() {
            if let Some(t) = item.as_table_like() {
                next = Some((key.to_string(), t));
            }
        }
        match next {
            Some((key, t)) => {
                path.push(key);
                table = t;
            }
            None => break,
        }
    }
    Some(path)
}

/// Finds a table for `handler` (or one of its sub-tables) that the template defines itself.
pub fn user_runtime(text: &str, version: ConfigVersion, handler: &str) -> Option<UserRuntime> {
    let wanted = version.runtime_table_path(handler);
    let lines: Vec<&str> = text.lines().collect();
    let mut found: Option<UserRuntime> = None;
    for (i, line) in lines.iter().enumerate() {
        let Some(path) = header_path(line) else {
            continue;
        };
        if !path.starts_with(&wanted) {
            continue;
        }
        let entry = found.get_or_insert(UserRuntime {
            line: i + 1,
            runtime_type: None,
            annotation_lists: Vec::new(),
        });
        if path == wanted {
            entry.line = i + 1;
            let body: Vec<&str> = lines[i + 1..]
                .iter()
                .take_while(|l| !l.trim_start().starts_with('['))
                .copied()
                .collect();
            entry.runtime_type = body
                .iter()
                .filter_map(|l| config::parse(l.trim()).ok())
                .find_map(|d| d.get("runtime_type")?.as_str().map(str::to_string));
            // The body's plain TOML lines as one document, so that a list spread over several
            // lines is read too.
            let plain: String = body
                .iter()
                .filter(|l| !l.contains("{{"))
                .map(|l| format!("{}\n", l.trim()))
                .collect();
            entry.annotation_lists = match config::parse(&plain) {
                Ok(doc) => config::ANNOTATION_KEYS
                    .into_iter()
                    .filter_map(|key| {
                        let list = doc.get(key)?.as_array()?;
                        let strings = list
                            .iter()
                            .filter_map(|v| v.as_str().map(str::to_string))
                            .collect();
                        Some((key.to_string(), strings))
                    })
                    .collect(),
                Err(_) => Vec::new(),
            };
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(handler: &str) -> RuntimeEntry {
        RuntimeEntry::new(handler, &format!("io.containerd.{handler}.v1"), true)
    }

    #[test]
    fn handler_names_are_go_safe() {
        for spec in crate::runtimes::RUNTIMES {
            assert!(
                spec.handler
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')),
                "{}",
                spec.handler
            );
        }
    }

    #[test]
    fn block_round_trip() {
        let template = "{{ template \"base\" . }}\n\n# mine\n";
        let block = render_block(ConfigVersion::V2, &[entry("wasmtime")], true, false);
        let installed = with_block(template, &block);
        assert!(installed.starts_with(template));
        let parts = split_block(&installed).unwrap();
        assert_eq!(parts.without_block(), template);
        assert_eq!(parts.block.as_deref(), Some(block.as_str()));
        assert_eq!(parts.with_block(&block), installed);
        // Lines added after the block stay after it.
        let edited = format!("{installed}# later\n");
        let parts = split_block(&edited).unwrap();
        assert_eq!(parts.without_block(), format!("{template}# later\n"));
        assert_eq!(parts.with_block(&block), edited);
    }

    #[test]
    fn block_on_file_without_final_newline() {
        let template = "{{ template \"base\" . }}";
        let block = render_block(ConfigVersion::V2, &[entry("wasmtime")], true, false);
        let once = with_block(template, &block);
        let parts = split_block(&once).unwrap();
        assert_eq!(parts.with_block(&block), once);
    }

    #[test]
    fn guarded_block_content() {
        let block = render_block(ConfigVersion::V3, &[entry("wasmtime")], true, false);
        assert!(block.starts_with(BEGIN_MARKER));
        assert!(block.ends_with(&format!("{END_MARKER}\n")));
        assert!(block.contains(
            "{{ if not (index .ExtraRuntimes \"wasmtime\").RuntimeType }}\n[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.wasmtime]\nruntime_type = \"io.containerd.wasmtime.v1\"\n"
        ), "{block}");
        assert!(
            block.contains("SystemdCgroup = true\n{{ end }}\n"),
            "{block}"
        );
        assert!(
            block.contains(
                "pod_annotations = [\"wasmrunner.dev/*\"]\ncontainer_annotations = [\"wasmrunner.dev/*\"]\n"
            ),
            "{block}"
        );
        let unguarded = render_block(ConfigVersion::V3, &[entry("wasmtime")], false, false);
        assert!(!unguarded.contains("{{"), "{unguarded}");
        assert!(config::parse(&unguarded).is_ok());
        let following = render_block(ConfigVersion::V2, &[entry("wasmtime")], true, true);
        assert!(following.contains(
            "{{ if .SystemdCgroup }}\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.wasmtime]\n"
        ), "{following}");
        assert!(
            following.contains("SystemdCgroup = true\n{{ else }}\n[plugins."),
            "{following}"
        );
        assert!(
            following.contains("SystemdCgroup = false\n{{ end }}\n{{ end }}\n"),
            "{following}"
        );
    }

    #[test]
    fn malformed_markers_are_refused() {
        let b = format!("{BEGIN_MARKER}\n");
        let e = format!("{END_MARKER}\n");
        assert_eq!(split_block(&b), Err(K3sError::Unterminated { line: 1 }));
        assert_eq!(split_block(&e), Err(K3sError::StrayEnd { line: 1 }));
        assert!(matches!(
            split_block(&format!("{b}{e}{b}{e}")),
            Err(K3sError::Duplicate { .. })
        ));
        assert!(matches!(
            split_block(&format!("{b}{b}{e}")),
            Err(K3sError::Duplicate { .. })
        ));
        let parts = split_block("x\n").unwrap();
        assert_eq!(
            (parts.without_block(), parts.block),
            ("x\n".to_string(), None)
        );
    }

    #[test]
    fn finds_user_defined_handlers() {
        let text = "{{ template \"base\" . }}\n[plugins.'io.containerd.grpc.v1.cri'.containerd.runtimes.\"wasmtime\"]\n  runtime_type = \"io.containerd.wasmtime.v1\" # mine\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.wasmtime.options]\n  SystemdCgroup = false\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.\"{{ .X }}\"]\n";
        let found = user_runtime(text, ConfigVersion::V2, "wasmtime").unwrap();
        assert_eq!(found.line, 2);
        assert_eq!(
            found.runtime_type.as_deref(),
            Some("io.containerd.wasmtime.v1")
        );
        assert_eq!(user_runtime(text, ConfigVersion::V2, "wasmedge"), None);
        assert_eq!(user_runtime(text, ConfigVersion::V3, "wasmtime"), None);
        // Only the options sub-table: still the user's handler.
        let text =
            "[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.wasmedge.options]\n";
        let found = user_runtime(text, ConfigVersion::V3, "wasmedge").unwrap();
        assert_eq!(found.runtime_type, None);
    }

    #[test]
    fn reads_the_annotation_lists_of_user_defined_handlers() {
        let pattern = vec![config::capability_annotation_pattern()];
        let text = "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.wasmtime]\n  runtime_type = \"io.containerd.wasmtime.v1\"\n  pod_annotations = [\n    \"example.com/*\",\n    \"wasmrunner.dev/*\",\n  ]\n{{ if .X }}\n  container_annotations = [\"example.com/*\"]\n{{ end }}\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.wasmtime.options]\n  container_annotations = [\"not/these\"]\n";
        let found = user_runtime(text, ConfigVersion::V2, "wasmtime").unwrap();
        assert_eq!(
            found.runtime_type.as_deref(),
            Some("io.containerd.wasmtime.v1")
        );
        assert_eq!(
            found.annotation_lists,
            vec![
                (
                    "pod_annotations".to_string(),
                    vec!["example.com/*".to_string(), "wasmrunner.dev/*".to_string()]
                ),
                (
                    "container_annotations".to_string(),
                    vec!["example.com/*".to_string()]
                ),
            ]
        );
        assert_eq!(found.keys_lacking(&pattern), vec!["container_annotations"]);
        let bare = "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.wasmtime]\n  runtime_type = \"io.containerd.wasmtime.v1\"\n";
        let found = user_runtime(bare, ConfigVersion::V2, "wasmtime").unwrap();
        assert_eq!(
            found.keys_lacking(&pattern),
            vec!["pod_annotations", "container_annotations"]
        );
    }

    #[test]
    fn template_choice_prefers_v3() {
        let dir = tempfile::tempdir().unwrap();
        let (path, version) = choose_template(dir.path());
        assert!(path.ends_with("etc/containerd/config.toml.tmpl"));
        assert_eq!(version, ConfigVersion::V2);
        std::fs::create_dir_all(template_dir(dir.path())).unwrap();
        std::fs::write(template_dir(dir.path()).join(TEMPLATE_V3), BASE_TEMPLATE).unwrap();
        let (path, version) = choose_template(dir.path());
        assert!(path.ends_with("etc/containerd/config-v3.toml.tmpl"));
        assert_eq!(version, ConfigVersion::V3);
        assert_eq!(version_of_template(&path), ConfigVersion::V3);
    }

    #[test]
    fn extra_runtimes_detection() {
        assert!(renders_extra_runtimes("{{ template \"base\" . }}\n"));
        assert!(renders_extra_runtimes(
            "{{range $k, $v := .ExtraRuntimes}}\n"
        ));
        assert!(!renders_extra_runtimes("version = 2\n"));
    }
}
