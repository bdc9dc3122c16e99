//! containerd's `config.toml`: format version detection, where the CRI runtime tables live in each
//! format, and the edits the installer makes to them. Every edit goes through `toml_edit`, so the
//! user's comments, key order, quoting and indentation stay as they were.

use thiserror::Error;
use toml_edit::{Array, Decor, DocumentMut, Item, Key, Table, TableLike, Value};

/// The keys of a runtime handler's table that list, as glob patterns (Go's `path.Match`), the
/// names of the Kubernetes pod annotations and container annotations that containerd's CRI
/// copies into the container's OCI spec, where the shim reads them. An annotation no pattern
/// matches never reaches the shim.
pub const ANNOTATION_KEYS: [&str; 2] = ["pod_annotations", "container_annotations"];

/// The pattern the installer lists under both [`ANNOTATION_KEYS`]: every annotation under
/// [`wasmrunner_capabilities::ANNOTATION_PREFIX`] (`wasmrunner.dev/*`), which is where a
/// pod's capability policy for its Wasm guests is written.
pub fn capability_annotation_pattern() -> String {
    format!("{}*", wasmrunner_capabilities::ANNOTATION_PREFIX)
}

/// The two config formats the installer writes. Format 1 (no `version` key) is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ConfigVersion {
    /// `version = 2`: containerd 1.x (also read by 2.x, which migrates it).
    V2,
    /// `version = 3`: containerd 2.x.
    V3,
}

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("not valid TOML: {0}")]
    Parse(#[from] toml_edit::TomlError),
    #[error(
        "the config has no `version` key, so containerd reads it in the old version 1 format; \
         migrate it first (`containerd config migrate` on containerd >= 1.7, or regenerate it with \
         `containerd config default`) and run the installer again"
    )]
    Version1,
    #[error("unsupported config `version = {0}` (the installer writes versions 2 and 3)")]
    UnsupportedVersion(String),
    #[error("cannot add `{path}`: `{at}` is {what}, not a table")]
    NotATable {
        path: String,
        at: String,
        what: &'static str,
    },
    #[error("cannot parse the output of `containerd --version`: {0:?}")]
    BadContainerdVersion(String),
    #[error(
        "cannot add {patterns} to `{key}` of `{table}`: it is {what}, not a list of annotation \
         name patterns"
    )]
    NotAList {
        table: String,
        key: String,
        what: &'static str,
        patterns: String,
    },
}

/// A containerd release number, as printed by `containerd --version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ContainerdVersion {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
}

impl std::fmt::Display for ContainerdVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl std::str::FromStr for ContainerdVersion {
    type Err = ConfigError;

    /// Accepts `2`, `1.7`, `v1.6.20`, `1.6.20~ds1`, `2.1.9+unknown`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ConfigError::BadContainerdVersion(s.to_string());
        let trimmed = s.trim().trim_start_matches('v');
        let core = trimmed
            .split(|c: char| !(c.is_ascii_digit() || c == '.'))
            .next()
            .unwrap_or_default();
        let mut parts = core.split('.').filter(|p| !p.is_empty());
        let major = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let minor = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        let patch = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        Ok(Self {
            major,
            minor,
            patch,
        })
    }
}

/// Parses `containerd --version` output, e.g.
/// `containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3` or
/// `containerd github.com/containerd/containerd/v2 2.1.9+unknown `.
pub fn parse_containerd_version(output: &str) -> Result<ContainerdVersion, ConfigError> {
    let bad = || ConfigError::BadContainerdVersion(output.trim().to_string());
    let line = output
        .lines()
        .find(|l| !l.trim().is_empty())
        .ok_or_else(bad)?;
    let words: Vec<&str> = line.split_whitespace().collect();
    // The version is the first word after the module path that starts with a digit (or v+digit).
    words
        .iter()
        .skip(1)
        .find(|w| {
            let w = w.trim_start_matches('v');
            w.starts_with(|c: char| c.is_ascii_digit()) && w.contains('.')
        })
        .ok_or_else(bad)?
        .parse()
        .map_err(|_| bad())
}

impl ConfigVersion {
    /// The format a fresh config gets for a containerd release: 3 for 2.x and later, else 2.
    pub fn for_containerd(version: ContainerdVersion) -> Self {
        if version.major >= 2 {
            Self::V3
        } else {
            Self::V2
        }
    }

    pub fn number(self) -> i64 {
        match self {
            Self::V2 => 2,
            Self::V3 => 3,
        }
    }

    /// The plugin that owns the CRI runtime handlers in this format.
    pub fn cri_runtime_plugin(self) -> &'static str {
        match self {
            Self::V2 => "io.containerd.grpc.v1.cri",
            Self::V3 => "io.containerd.cri.v1.runtime",
        }
    }

    /// Key path of the table holding one table per runtime handler.
    pub fn runtimes_path(self) -> Vec<String> {
        vec![
            "plugins".to_string(),
            self.cri_runtime_plugin().to_string(),
            "containerd".to_string(),
            "runtimes".to_string(),
        ]
    }

    /// Key path of one handler's table, e.g. `plugins."io.containerd.grpc.v1.cri".containerd.runtimes.wasmtime`.
    pub fn runtime_table_path(self, handler: &str) -> Vec<String> {
        let mut path = self.runtimes_path();
        path.push(handler.to_string());
        path
    }
}

/// Renders a key path the way TOML writes it in a table header.
pub fn dotted(path: &[String]) -> String {
    path.iter()
        .map(|k| Key::new(k.as_str()).display_repr().into_owned())
        .collect::<Vec<_>>()
        .join(".")
}

pub fn parse(text: &str) -> Result<DocumentMut, ConfigError> {
    Ok(text.parse::<DocumentMut>()?)
}

/// The format of a parsed config: `version = 2` or `version = 3`; no key means format 1.
pub fn detect_version(doc: &DocumentMut) -> Result<ConfigVersion, ConfigError> {
    match doc.get("version") {
        None => Err(ConfigError::Version1),
        Some(item) => match item.as_integer() {
            Some(1) => Err(ConfigError::Version1),
            Some(2) => Ok(ConfigVersion::V2),
            Some(3) => Ok(ConfigVersion::V3),
            _ => Err(ConfigError::UnsupportedVersion(
                item.to_string().trim().to_string(),
            )),
        },
    }
}

/// True when the document holds no key at all (an empty file or one with only comments).
pub fn is_blank(doc: &DocumentMut) -> bool {
    doc.as_table().is_empty()
}

/// The config the installer writes where none exists.
pub fn minimal_config(version: ConfigVersion) -> String {
    let mut doc = DocumentMut::new();
    doc.insert("version", toml_edit::value(version.number()));
    doc.to_string()
}

/// Adds `version = N` as the first key of a blank document.
pub fn set_version(doc: &mut DocumentMut, version: ConfigVersion) {
    doc.insert("version", toml_edit::value(version.number()));
}

/// Removes the `version` key.
pub fn remove_version(doc: &mut DocumentMut) {
    doc.remove("version");
}

/// Read-only lookup through tables, dotted keys and inline tables.
pub fn lookup<'a, S: AsRef<str>>(table: &'a dyn TableLike, path: &[S]) -> Option<&'a Item> {
    let (first, rest) = path.split_first()?;
    let item = table.get(first.as_ref())?;
    if rest.is_empty() {
        Some(item)
    } else {
        lookup(item.as_table_like()?, rest)
    }
}

fn lookup_bool(doc: &DocumentMut, path: &[String]) -> Option<bool> {
    lookup(doc.as_table(), path)?.as_bool()
}

/// The `SystemdCgroup` option of the config's `runc` runtime, or of its default runtime when
/// there is no `runc` entry: the cgroup driver the node's pods already use.
pub fn runc_systemd_cgroup(doc: &DocumentMut, version: ConfigVersion) -> Option<bool> {
    let runtimes = version.runtimes_path();
    let option = |handler: &str| {
        let mut path = runtimes.clone();
        path.extend([
            handler.to_string(),
            "options".into(),
            "SystemdCgroup".into(),
        ]);
        lookup_bool(doc, &path)
    };
    option("runc").or_else(|| {
        let mut path = runtimes[..3].to_vec();
        path.push("default_runtime_name".into());
        let default = lookup(doc.as_table(), &path)?.as_str()?.to_string();
        option(&default)
    })
}

/// One runtime handler entry as written to the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeEntry {
    pub handler: String,
    pub runtime_type: String,
    pub systemd_cgroup: bool,
    /// Patterns that both `pod_annotations` and `container_annotations` must list (merged
    /// with the patterns already there).
    pub annotation_patterns: Vec<String>,
}

impl RuntimeEntry {
    /// An entry that passes the capability annotations ([`capability_annotation_pattern`]).
    pub fn new(handler: &str, runtime_type: &str, systemd_cgroup: bool) -> Self {
        Self {
            handler: handler.to_string(),
            runtime_type: runtime_type.to_string(),
            systemd_cgroup,
            annotation_patterns: vec![capability_annotation_pattern()],
        }
    }
}

/// The strings of a list key (`pod_annotations`, `container_annotations`) of a handler's
/// table; `None` when the table or the key is absent or the key is not a list. Elements that
/// are not strings are left out.
pub fn runtime_string_list(
    doc: &DocumentMut,
    version: ConfigVersion,
    handler: &str,
    key: &str,
) -> Option<Vec<String>> {
    let mut path = version.runtime_table_path(handler);
    path.push(key.to_string());
    let array = lookup(doc.as_table(), &path)?.as_array()?;
    Some(
        array
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
    )
}

/// Patterns [`merge_annotation_patterns`] added to one list key of a handler's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddedPatterns {
    /// `pod_annotations` or `container_annotations`.
    pub key: String,
    /// The patterns appended, in order.
    pub patterns: Vec<String>,
    /// The key did not exist and was created.
    pub created_key: bool,
}

/// Whether `array` holds this string.
fn has_string(array: &Array, wanted: &str) -> bool {
    array.iter().any(|v| v.as_str() == Some(wanted))
}

/// Appends a string to a list the way its existing elements are laid out: on a line of its own
/// (with the same indentation) in a multi-line list, after `, ` in a one-line list. Whatever
/// came after the last element (its spacing before `]`) moves behind the new one.
fn push_like_siblings(array: &mut Array, text: &str) {
    let mut new = Value::from(text);
    let multi_line = array.iter().any(|v| {
        v.decor()
            .prefix()
            .and_then(|p| p.as_str())
            .is_some_and(|p| p.contains('\n'))
    });
    let last = array.len().checked_sub(1);
    match last.and_then(|i| array.get_mut(i)) {
        Some(last) => {
            let prefix = if multi_line {
                // The last element's indentation, without the comments above it.
                let indent = last
                    .decor()
                    .prefix()
                    .and_then(|p| p.as_str())
                    .and_then(|p| p.rsplit('\n').next())
                    .unwrap_or_default();
                format!("\n{indent}")
            } else {
                " ".to_string()
            };
            let suffix = last
                .decor()
                .suffix()
                .and_then(|s| s.as_str())
                .unwrap_or_default()
                .to_string();
            last.decor_mut().set_suffix("");
            new.decor_mut().set_prefix(prefix);
            new.decor_mut().set_suffix(suffix);
        }
        None => {
            // `[]` or `[ ]`: the pattern alone, as `["x"]`.
            if array
                .trailing()
                .as_str()
                .is_some_and(|t| t.chars().all(|c| c == ' ' || c == '\t'))
            {
                array.set_trailing("");
            }
            new.decor_mut().set_prefix("");
            new.decor_mut().set_suffix("");
        }
    }
    array.push_formatted(new);
}

/// Removes the last element that is this string, handing its trailing spacing to the element
/// before it (the reverse of [`push_like_siblings`]). Returns whether it was there.
fn remove_last_string(array: &mut Array, text: &str) -> bool {
    let Some(index) = (0..array.len())
        .rev()
        .find(|i| array.get(*i).and_then(Value::as_str) == Some(text))
    else {
        return false;
    };
    let removed = array.remove(index);
    if index == array.len() {
        let suffix = removed
            .decor()
            .suffix()
            .and_then(|s| s.as_str())
            .unwrap_or_default()
            .to_string();
        if let Some(last) = index.checked_sub(1).and_then(|i| array.get_mut(i)) {
            last.decor_mut().set_suffix(suffix);
        }
    }
    true
}

fn quoted_list(patterns: &[String]) -> String {
    patterns
        .iter()
        .map(|p| format!("{p:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Adds each of `patterns` missing from the `key` list of a handler's table (`table` is that
/// table, `table_path` its key path), creating the key when absent. The list's other patterns,
/// their order and layout stay. `key_indent` is the indentation of a created key in a
/// standard table (`None` for an inline table).
fn merge_list(
    table: &mut dyn TableLike,
    table_path: &[String],
    key: &str,
    patterns: &[String],
    key_indent: Option<&str>,
) -> Result<Option<AddedPatterns>, ConfigError> {
    match table.get_mut(key) {
        None => {
            if patterns.is_empty() {
                return Ok(None);
            }
            let array: Array = patterns.iter().map(String::as_str).collect();
            table.insert(key, Item::Value(Value::Array(array)));
            if let (Some(indent), Some(mut k)) = (key_indent, table.key_mut(key)) {
                *k.leaf_decor_mut() = Decor::new(indent, " ");
            }
            Ok(Some(AddedPatterns {
                key: key.to_string(),
                patterns: patterns.to_vec(),
                created_key: true,
            }))
        }
        Some(item) => {
            let what = item.type_name();
            let Some(array) = item.as_array_mut() else {
                return Err(ConfigError::NotAList {
                    table: dotted(table_path),
                    key: key.to_string(),
                    what: article(what),
                    patterns: quoted_list(patterns),
                });
            };
            let mut added = Vec::new();
            for pattern in patterns {
                if !has_string(array, pattern) {
                    push_like_siblings(array, pattern);
                    added.push(pattern.clone());
                }
            }
            Ok((!added.is_empty()).then(|| AddedPatterns {
                key: key.to_string(),
                patterns: added,
                created_key: false,
            }))
        }
    }
}

/// Fails, before anything is edited, when one of [`ANNOTATION_KEYS`] is set to something else
/// than a list.
fn check_lists(
    table: &dyn TableLike,
    table_path: &[String],
    patterns: &[String],
) -> Result<(), ConfigError> {
    for key in ANNOTATION_KEYS {
        if let Some(item) = table.get(key)
            && item.as_array().is_none()
        {
            return Err(ConfigError::NotAList {
                table: dotted(table_path),
                key: key.to_string(),
                what: article(item.type_name()),
                patterns: quoted_list(patterns),
            });
        }
    }
    Ok(())
}

/// `toml_edit`'s type names with an article, for messages.
fn article(type_name: &str) -> &'static str {
    match type_name {
        "string" => "a string",
        "integer" => "an integer",
        "float" => "a float",
        "boolean" => "a boolean",
        "datetime" => "a date-time",
        "table" => "a table",
        "inline table" => "an inline table",
        "array of tables" => "an array of tables",
        "array" => "a list",
        _ => "something else",
    }
}

/// Adds `patterns` to both [`ANNOTATION_KEYS`] of an existing handler table (one someone
/// else configured), keeping the patterns already listed. Returns what was added, per key;
/// nothing when the table is absent or already lists them all.
pub fn merge_annotation_patterns(
    doc: &mut DocumentMut,
    version: ConfigVersion,
    handler: &str,
    patterns: &[String],
) -> Result<Vec<AddedPatterns>, ConfigError> {
    let path = version.runtime_table_path(handler);
    let Some(item) = lookup_mut(doc.as_table_mut(), &path) else {
        return Ok(Vec::new());
    };
    let mut added = Vec::new();
    match item {
        Item::Table(table) => {
            check_lists(table, &path, patterns)?;
            let indent = indent_of(table).key;
            for key in ANNOTATION_KEYS {
                added.extend(merge_list(table, &path, key, patterns, Some(&indent))?);
            }
        }
        Item::Value(Value::InlineTable(table)) => {
            check_lists(table, &path, patterns)?;
            for key in ANNOTATION_KEYS {
                added.extend(merge_list(table, &path, key, patterns, None)?);
            }
        }
        other => {
            return Err(ConfigError::NotATable {
                path: dotted(&path),
                at: dotted(&path),
                what: article(other.type_name()),
            });
        }
    }
    Ok(added)
}

/// Removes `patterns` (one occurrence each, the last) from the `key` list of a handler's table,
/// and the key itself when `remove_empty_key` and nothing is left in it. Returns the patterns
/// removed.
pub fn remove_annotation_patterns(
    doc: &mut DocumentMut,
    version: ConfigVersion,
    handler: &str,
    key: &str,
    patterns: &[String],
    remove_empty_key: bool,
) -> Vec<String> {
    let path = version.runtime_table_path(handler);
    let Some(table) = lookup_mut(doc.as_table_mut(), &path).and_then(Item::as_table_like_mut)
    else {
        return Vec::new();
    };
    let Some(array) = table.get_mut(key).and_then(Item::as_array_mut) else {
        return Vec::new();
    };
    let removed: Vec<String> = patterns
        .iter()
        .filter(|p| remove_last_string(array, p))
        .cloned()
        .collect();
    if remove_empty_key && array.is_empty() {
        table.remove(key);
    }
    removed
}

/// Mutable lookup through tables, dotted keys and inline tables.
fn lookup_mut<'a, S: AsRef<str>>(table: &'a mut dyn TableLike, path: &[S]) -> Option<&'a mut Item> {
    let (first, rest) = path.split_first()?;
    let item = table.get_mut(first.as_ref())?;
    if rest.is_empty() {
        Some(item)
    } else {
        lookup_mut(item.as_table_like_mut()?, rest)
    }
}

/// What a handler's table holds now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Existing {
    /// No table for the handler.
    Missing,
    /// A table with these values (`None` where the key is absent or not of the expected type).
    Present {
        runtime_type: Option<String>,
        systemd_cgroup: Option<bool>,
    },
}

/// What the handler's table holds in `doc`.
pub fn inspect_runtime(doc: &DocumentMut, version: ConfigVersion, handler: &str) -> Existing {
    let path = version.runtime_table_path(handler);
    match lookup(doc.as_table(), &path) {
        None => Existing::Missing,
        Some(item) => {
            let table = item.as_table_like();
            let runtime_type = table
                .and_then(|t| t.get("runtime_type"))
                .and_then(|i| i.as_str())
                .map(str::to_string);
            let systemd_cgroup = table
                .and_then(|t| lookup(t, &["options", "SystemdCgroup"]))
                .and_then(|i| i.as_bool());
            Existing::Present {
                runtime_type,
                systemd_cgroup,
            }
        }
    }
}

/// What [`upsert_runtime`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upsert {
    /// The table was added; `created_tables` lists parent tables that did not exist before.
    Added { created_tables: Vec<Vec<String>> },
    /// The table existed and some values were changed.
    Updated,
    /// The table already held exactly these values.
    Unchanged,
}

/// Indentation of a table header and of its keys, copied from a sibling so that new tables look
/// like the rest of the file (containerd's generated configs indent by nesting depth).
#[derive(Debug, Default, Clone)]
struct Indent {
    header: String,
    key: String,
}

fn indent_of(table: &Table) -> Indent {
    let header = table
        .decor()
        .prefix()
        .and_then(|p| p.as_str())
        .map(|p| p.rsplit('\n').next().unwrap_or_default())
        .filter(|s| s.chars().all(|c| c == ' ' || c == '\t'))
        .unwrap_or_default()
        .to_string();
    let key = table
        .iter()
        .next()
        .and_then(|(k, _)| table.key(k))
        .and_then(|k| k.leaf_decor().prefix())
        .and_then(|p| p.as_str())
        .filter(|s| s.chars().all(|c| c == ' ' || c == '\t'))
        .unwrap_or_default()
        .to_string();
    Indent { header, key }
}

/// Descends into `key` of `table`, creating an implicit table when it is missing.
fn descend<'a>(
    table: &'a mut Table,
    key: &str,
    full_path: &[String],
    here: &[String],
    created: &mut Vec<Vec<String>>,
) -> Result<&'a mut Table, ConfigError> {
    if !table.contains_key(key) {
        let mut new = Table::new();
        new.set_implicit(true);
        table.insert(key, Item::Table(new));
        created.push(here.to_vec());
    }
    let item = table
        .get_mut(key)
        .ok_or_else(|| not_a_table(full_path, here, "missing"))?;
    match item {
        Item::Table(t) => Ok(t),
        Item::Value(Value::InlineTable(_)) => Err(not_a_table(full_path, here, "an inline table")),
        Item::ArrayOfTables(_) => Err(not_a_table(full_path, here, "an array of tables")),
        _ => Err(not_a_table(full_path, here, "a value")),
    }
}

fn not_a_table(full_path: &[String], here: &[String], what: &'static str) -> ConfigError {
    ConfigError::NotATable {
        path: dotted(full_path),
        at: dotted(here),
        what,
    }
}

/// Replaces a value in place, keeping the comments and spacing around it.
fn set_value(table: &mut Table, key: &str, new: Value, indent: &str) -> bool {
    match table.get_mut(key) {
        Some(Item::Value(old)) => {
            let decor = old.decor().clone();
            *old = new;
            *old.decor_mut() = decor;
            true
        }
        _ => {
            let key = Key::new(key).with_leaf_decor(Decor::new(indent, " "));
            table.insert_formatted(&key, Item::Value(new));
            true
        }
    }
}

/// Adds the handler's table, or brings an existing one to the wanted values: `runtime_type`,
/// `options.SystemdCgroup`, and `entry.annotation_patterns` in both [`ANNOTATION_KEYS`] (added
/// to the patterns a list already holds, never twice).
///
/// The caller decides whether an existing table may be changed (see `install`): this function
/// only edits.
pub fn upsert_runtime(
    doc: &mut DocumentMut,
    version: ConfigVersion,
    entry: &RuntimeEntry,
) -> Result<Upsert, ConfigError> {
    let full_path = version.runtime_table_path(&entry.handler);
    let runtimes_path = version.runtimes_path();
    let mut created = Vec::new();
    let mut table = doc.as_table_mut();
    for depth in 0..runtimes_path.len() {
        table = descend(
            table,
            &runtimes_path[depth],
            &full_path,
            &runtimes_path[..=depth],
            &mut created,
        )?;
    }
    let runtimes = table;

    if !runtimes.contains_key(&entry.handler) {
        // Look like the existing runc entry (or any sibling) so the file stays uniform.
        let sibling = runtimes
            .get("runc")
            .and_then(Item::as_table)
            .or_else(|| runtimes.iter().find_map(|(_, item)| item.as_table()));
        let (outer, inner) = match sibling {
            Some(s) => (
                indent_of(s),
                s.get("options")
                    .and_then(Item::as_table)
                    .map(indent_of)
                    .unwrap_or_default(),
            ),
            None => Default::default(),
        };
        let mut runtime = Table::new();
        runtime.decor_mut().set_prefix(format!(
            "\n{h}# Added by wasmrunner-installer for the RuntimeClass handler \"{handler}\" \
             (`wasmrunner-installer uninstall` removes it).\n{h}",
            h = outer.header,
            handler = entry.handler,
        ));
        set_value(
            &mut runtime,
            "runtime_type",
            Value::from(entry.runtime_type.as_str()),
            &outer.key,
        );
        if !entry.annotation_patterns.is_empty() {
            for (i, key) in ANNOTATION_KEYS.into_iter().enumerate() {
                let array: Array = entry
                    .annotation_patterns
                    .iter()
                    .map(String::as_str)
                    .collect();
                let prefix = if i == 0 {
                    format!(
                        "{k}# Pod and container annotations that containerd passes to the shim: \
                         its capability policy.\n{k}",
                        k = outer.key
                    )
                } else {
                    outer.key.clone()
                };
                let key = Key::new(key).with_leaf_decor(Decor::new(prefix, " "));
                runtime.insert_formatted(&key, Item::Value(Value::Array(array)));
            }
        }
        let mut options = Table::new();
        options
            .decor_mut()
            .set_prefix(format!("\n{}", inner.header));
        set_value(
            &mut options,
            "SystemdCgroup",
            Value::from(entry.systemd_cgroup),
            &inner.key,
        );
        runtime.insert("options", Item::Table(options));
        runtimes.insert(&entry.handler, Item::Table(runtime));
        return Ok(Upsert::Added {
            created_tables: created,
        });
    }

    let mut here = runtimes_path.clone();
    here.push(entry.handler.clone());
    let runtime = match runtimes.get_mut(&entry.handler) {
        Some(Item::Table(t)) => t,
        Some(Item::Value(Value::InlineTable(_))) => {
            return Err(not_a_table(&full_path, &here, "an inline table"));
        }
        _ => return Err(not_a_table(&full_path, &here, "a value")),
    };
    check_lists(runtime, &here, &entry.annotation_patterns)?;
    let mut changed = false;
    let indent = indent_of(runtime);
    if runtime.get("runtime_type").and_then(Item::as_str) != Some(entry.runtime_type.as_str()) {
        changed |= set_value(
            runtime,
            "runtime_type",
            Value::from(entry.runtime_type.as_str()),
            &indent.key,
        );
    }
    for key in ANNOTATION_KEYS {
        changed |= merge_list(
            runtime,
            &here,
            key,
            &entry.annotation_patterns,
            Some(&indent.key),
        )?
        .is_some();
    }
    let mut options_path = here.clone();
    options_path.push("options".into());
    let mut unused = Vec::new();
    let options = descend(runtime, "options", &full_path, &options_path, &mut unused)?;
    if !unused.is_empty() {
        // A brand-new options table is rendered as an explicit header.
        options.set_implicit(false);
        options
            .decor_mut()
            .set_prefix(format!("\n{}", indent.header));
        changed = true;
    }
    if options.get("SystemdCgroup").and_then(Item::as_bool) != Some(entry.systemd_cgroup) {
        let key_indent = indent_of(options).key;
        changed |= set_value(
            options,
            "SystemdCgroup",
            Value::from(entry.systemd_cgroup),
            &key_indent,
        );
    }
    Ok(if changed {
        Upsert::Updated
    } else {
        Upsert::Unchanged
    })
}

fn table_at_mut<'a>(table: &'a mut Table, path: &[String]) -> Option<&'a mut Table> {
    let (first, rest) = match path.split_first() {
        None => return Some(table),
        Some(split) => split,
    };
    let child = table.get_mut(first)?.as_table_mut()?;
    table_at_mut(child, rest)
}

/// Removes the handler's table. Returns whether it was there.
pub fn remove_runtime(doc: &mut DocumentMut, version: ConfigVersion, handler: &str) -> bool {
    table_at_mut(doc.as_table_mut(), &version.runtimes_path())
        .and_then(|runtimes| runtimes.remove(handler))
        .is_some()
}

/// Removes the given tables (deepest first) where they hold nothing any more.
pub fn remove_empty_tables(doc: &mut DocumentMut, paths: &[Vec<String>]) {
    let mut paths: Vec<&Vec<String>> = paths.iter().collect();
    paths.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for path in paths {
        let Some((last, parent)) = path.split_last() else {
            continue;
        };
        if let Some(parent) = table_at_mut(doc.as_table_mut(), parent) {
            let empty = parent
                .get(last)
                .and_then(Item::as_table)
                .is_some_and(|t| t.is_empty());
            if empty {
                parent.remove(last);
            }
        }
    }
}

/// A standalone TOML fragment holding the given runtime tables (for templates, where the rest of
/// the file is not TOML and cannot be edited as a document).
pub fn runtime_tables_toml(version: ConfigVersion, entries: &[RuntimeEntry]) -> String {
    let mut doc = DocumentMut::new();
    for entry in entries {
        // A fresh document has no inline tables or values in the way, so this cannot fail.
        let _ = upsert_runtime(&mut doc, version, entry);
        if let Some(t) = table_at_mut(doc.as_table_mut(), &version.runtimes_path())
            .and_then(|runtimes| runtimes.get_mut(&entry.handler))
            .and_then(Item::as_table_mut)
        {
            t.decor_mut().set_prefix("");
        }
    }
    let mut text = doc.to_string();
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(handler: &str, systemd: bool) -> RuntimeEntry {
        RuntimeEntry::new(handler, &format!("io.containerd.{handler}.v1"), systemd)
    }

    #[test]
    fn parses_containerd_version_output() {
        let v = parse_containerd_version(
            "containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3\n",
        )
        .unwrap();
        assert_eq!((v.major, v.minor, v.patch), (1, 6, 20));
        let v = parse_containerd_version(
            "containerd github.com/containerd/containerd/v2 2.1.9+unknown \n",
        )
        .unwrap();
        assert_eq!((v.major, v.minor, v.patch), (2, 1, 9));
        let v = parse_containerd_version("containerd containerd.io v1.7.24 88bf19b2\n").unwrap();
        assert_eq!(v.to_string(), "1.7.24");
        assert!(parse_containerd_version("").is_err());
        assert!(parse_containerd_version("containerd github.com/x").is_err());
    }

    #[test]
    fn version_strings_parse() {
        assert_eq!("2".parse::<ContainerdVersion>().unwrap().major, 2);
        assert_eq!("v1.7".parse::<ContainerdVersion>().unwrap().minor, 7);
        assert!("x".parse::<ContainerdVersion>().is_err());
    }

    #[test]
    fn config_version_follows_containerd_major() {
        let v = |s: &str| ConfigVersion::for_containerd(s.parse().unwrap());
        assert_eq!(v("1.6.20"), ConfigVersion::V2);
        assert_eq!(v("1.7.24"), ConfigVersion::V2);
        assert_eq!(v("2.1.9"), ConfigVersion::V3);
    }

    #[test]
    fn detects_format_versions() {
        let v = |s: &str| detect_version(&parse(s).unwrap());
        assert_eq!(v("version = 2\n").unwrap(), ConfigVersion::V2);
        assert_eq!(v("version = 3\n").unwrap(), ConfigVersion::V3);
        assert!(matches!(v("root = \"/x\"\n"), Err(ConfigError::Version1)));
        assert!(matches!(v("version = 1\n"), Err(ConfigError::Version1)));
        assert!(matches!(
            v("version = 4\n"),
            Err(ConfigError::UnsupportedVersion(_))
        ));
        assert!(matches!(
            v("version = \"2\"\n"),
            Err(ConfigError::UnsupportedVersion(_))
        ));
    }

    #[test]
    fn runtime_paths_per_format() {
        assert_eq!(
            dotted(&ConfigVersion::V2.runtime_table_path("wasmtime")),
            "plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.wasmtime"
        );
        assert_eq!(
            dotted(&ConfigVersion::V3.runtime_table_path("wasmtime")),
            "plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.wasmtime"
        );
    }

    #[test]
    fn adds_table_to_minimal_config() {
        let mut doc = parse(&minimal_config(ConfigVersion::V2)).unwrap();
        let outcome =
            upsert_runtime(&mut doc, ConfigVersion::V2, &entry("wasmtime", true)).unwrap();
        let Upsert::Added { created_tables } = outcome else {
            panic!("{outcome:?}")
        };
        assert_eq!(created_tables.len(), 4);
        let text = doc.to_string();
        assert!(text.starts_with("version = 2\n"), "{text}");
        assert!(
            text.contains(
                "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.wasmtime]\nruntime_type = \"io.containerd.wasmtime.v1\"\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.wasmtime.options]\nSystemdCgroup = true\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "pod_annotations = [\"wasmrunner.dev/*\"]\ncontainer_annotations = [\"wasmrunner.dev/*\"]\n"
            ),
            "{text}"
        );
        // Round trip: parsing our output gives the same values back.
        let again = parse(&text).unwrap();
        for key in ANNOTATION_KEYS {
            assert_eq!(
                runtime_string_list(&again, ConfigVersion::V2, "wasmtime", key),
                Some(vec!["wasmrunner.dev/*".to_string()]),
                "{key}"
            );
        }
        assert_eq!(
            inspect_runtime(&again, ConfigVersion::V2, "wasmtime"),
            Existing::Present {
                runtime_type: Some("io.containerd.wasmtime.v1".into()),
                systemd_cgroup: Some(true)
            }
        );
    }

    #[test]
    fn upsert_is_idempotent_and_updates_in_place() {
        let mut doc = parse("version = 3\n").unwrap();
        upsert_runtime(&mut doc, ConfigVersion::V3, &entry("wasmtime", false)).unwrap();
        let first = doc.to_string();
        let mut doc = parse(&first).unwrap();
        assert_eq!(
            upsert_runtime(&mut doc, ConfigVersion::V3, &entry("wasmtime", false)).unwrap(),
            Upsert::Unchanged
        );
        assert_eq!(doc.to_string(), first);
        assert_eq!(
            upsert_runtime(&mut doc, ConfigVersion::V3, &entry("wasmtime", true)).unwrap(),
            Upsert::Updated
        );
        assert_eq!(
            doc.to_string(),
            first.replace("SystemdCgroup = false", "SystemdCgroup = true")
        );
    }

    #[test]
    fn new_tables_follow_sibling_indentation_and_keep_comments() {
        let text = "version = 2\n\n# top comment\n[plugins]\n  [plugins.\"io.containerd.grpc.v1.cri\"]\n    [plugins.\"io.containerd.grpc.v1.cri\".containerd]\n      [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes]\n        # the runc runtime\n        [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n          runtime_type = \"io.containerd.runc.v2\" # keep me\n\n          [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]\n            SystemdCgroup = true\n\n  [plugins.\"io.containerd.internal.v1.opt\"]\n    path = \"/opt/containerd\"\n";
        let mut doc = parse(text).unwrap();
        assert_eq!(runc_systemd_cgroup(&doc, ConfigVersion::V2), Some(true));
        let outcome =
            upsert_runtime(&mut doc, ConfigVersion::V2, &entry("wasmtime", true)).unwrap();
        assert_eq!(
            outcome,
            Upsert::Added {
                created_tables: vec![]
            }
        );
        let out = doc.to_string();
        assert!(out.contains("# top comment\n"), "{out}");
        assert!(out.contains("# the runc runtime\n"), "{out}");
        assert!(out.contains("# keep me\n"), "{out}");
        // The new table sits right after runc's and is indented like it.
        let expected = "            SystemdCgroup = true\n\n        # Added by wasmrunner-installer for the RuntimeClass handler \"wasmtime\" (`wasmrunner-installer uninstall` removes it).\n        [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.wasmtime]\n          runtime_type = \"io.containerd.wasmtime.v1\"\n          # Pod and container annotations that containerd passes to the shim: its capability policy.\n          pod_annotations = [\"wasmrunner.dev/*\"]\n          container_annotations = [\"wasmrunner.dev/*\"]\n\n          [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.wasmtime.options]\n            SystemdCgroup = true\n\n  [plugins.\"io.containerd.internal.v1.opt\"]";
        assert!(out.contains(expected), "{out}");
        // Removing it gives back the original text exactly.
        assert!(remove_runtime(&mut doc, ConfigVersion::V2, "wasmtime"));
        assert_eq!(doc.to_string(), text);
        assert!(!remove_runtime(&mut doc, ConfigVersion::V2, "wasmtime"));
    }

    #[test]
    fn removing_created_parents_restores_minimal_config() {
        let minimal = minimal_config(ConfigVersion::V2);
        let mut doc = parse(&minimal).unwrap();
        let Upsert::Added { created_tables } =
            upsert_runtime(&mut doc, ConfigVersion::V2, &entry("wasmtime", false)).unwrap()
        else {
            panic!()
        };
        remove_runtime(&mut doc, ConfigVersion::V2, "wasmtime");
        remove_empty_tables(&mut doc, &created_tables);
        assert!(doc.get("plugins").is_none());
        assert_eq!(doc.to_string(), minimal);
    }

    #[test]
    fn runc_option_falls_back_to_default_runtime() {
        let doc = parse(
            "version = 3\n[plugins.'io.containerd.cri.v1.runtime'.containerd]\ndefault_runtime_name = 'crun'\n[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.crun.options]\nSystemdCgroup = true\n",
        )
        .unwrap();
        assert_eq!(runc_systemd_cgroup(&doc, ConfigVersion::V3), Some(true));
        assert_eq!(runc_systemd_cgroup(&doc, ConfigVersion::V2), None);
        let doc = parse("version = 2\n").unwrap();
        assert_eq!(runc_systemd_cgroup(&doc, ConfigVersion::V2), None);
    }

    #[test]
    fn refuses_inline_tables_in_the_way() {
        let mut doc = parse(
            "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd]\nruntimes = { runc = { runtime_type = \"io.containerd.runc.v2\" } }\n",
        )
        .unwrap();
        let err =
            upsert_runtime(&mut doc, ConfigVersion::V2, &entry("wasmtime", false)).unwrap_err();
        assert!(err.to_string().contains("inline table"), "{err}");
    }

    #[test]
    fn adds_into_dotted_key_layout() {
        let text = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\ncontainerd.runtimes.runc.runtime_type = \"io.containerd.runc.v2\"\n";
        let mut doc = parse(text).unwrap();
        upsert_runtime(&mut doc, ConfigVersion::V2, &entry("wasmtime", false)).unwrap();
        let out = doc.to_string();
        let again = parse(&out).unwrap();
        assert!(matches!(
            inspect_runtime(&again, ConfigVersion::V2, "wasmtime"),
            Existing::Present { .. }
        ));
        assert!(
            out.contains("containerd.runtimes.runc.runtime_type"),
            "{out}"
        );
    }

    #[test]
    fn fragment_holds_only_runtime_tables() {
        let text = runtime_tables_toml(
            ConfigVersion::V3,
            &[entry("wasmtime", true), entry("wasmedge", false)],
        );
        assert_eq!(
            text,
            "[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.wasmtime]\nruntime_type = \"io.containerd.wasmtime.v1\"\n# Pod and container annotations that containerd passes to the shim: its capability policy.\npod_annotations = [\"wasmrunner.dev/*\"]\ncontainer_annotations = [\"wasmrunner.dev/*\"]\n\n[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.wasmtime.options]\nSystemdCgroup = true\n[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.wasmedge]\nruntime_type = \"io.containerd.wasmedge.v1\"\n# Pod and container annotations that containerd passes to the shim: its capability policy.\npod_annotations = [\"wasmrunner.dev/*\"]\ncontainer_annotations = [\"wasmrunner.dev/*\"]\n\n[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.wasmedge.options]\nSystemdCgroup = false\n"
        );
        assert!(parse(&text).is_ok());
    }

    #[test]
    fn the_pattern_is_the_capability_prefix() {
        assert_eq!(capability_annotation_pattern(), "wasmrunner.dev/*");
        assert!(
            capability_annotation_pattern().starts_with(wasmrunner_capabilities::ANNOTATION_PREFIX)
        );
        assert_eq!(
            entry("wasmtime", false).annotation_patterns,
            vec!["wasmrunner.dev/*".to_string()]
        );
    }

    #[test]
    fn every_version_writes_both_annotation_lists() {
        for version in [ConfigVersion::V2, ConfigVersion::V3] {
            let mut doc = parse(&minimal_config(version)).unwrap();
            upsert_runtime(&mut doc, version, &entry("wasmtime", false)).unwrap();
            let again = parse(&doc.to_string()).unwrap();
            for key in ANNOTATION_KEYS {
                assert_eq!(
                    runtime_string_list(&again, version, "wasmtime", key),
                    Some(vec!["wasmrunner.dev/*".to_string()]),
                    "{version:?} {key}"
                );
            }
        }
    }

    /// A table of ours that the admin gave more patterns keeps them and gains ours once.
    #[test]
    fn upsert_merges_with_user_patterns_without_duplicates() {
        let text = "version = 3\n[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.wasmtime]\n  runtime_type = \"io.containerd.wasmtime.v1\"\n  pod_annotations = [\"example.com/*\", \"wasmrunner.dev/*\"] # mine\n  container_annotations = [\n    \"io.kubernetes.cri.*\",\n  ]\n  [plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.wasmtime.options]\n    SystemdCgroup = false\n";
        let mut doc = parse(text).unwrap();
        assert_eq!(
            upsert_runtime(&mut doc, ConfigVersion::V3, &entry("wasmtime", false)).unwrap(),
            Upsert::Updated
        );
        let out = doc.to_string();
        // pod_annotations already listed ours: untouched, comment and all.
        assert!(
            out.contains("  pod_annotations = [\"example.com/*\", \"wasmrunner.dev/*\"] # mine\n"),
            "{out}"
        );
        // container_annotations gains ours on a line of its own, laid out like the user's.
        assert!(
            out.contains(
                "  container_annotations = [\n    \"io.kubernetes.cri.*\",\n    \"wasmrunner.dev/*\",\n  ]\n"
            ),
            "{out}"
        );
        let again = parse(&out).unwrap();
        assert_eq!(
            runtime_string_list(&again, ConfigVersion::V3, "wasmtime", "pod_annotations"),
            Some(vec!["example.com/*".into(), "wasmrunner.dev/*".into()])
        );
        assert_eq!(
            runtime_string_list(
                &again,
                ConfigVersion::V3,
                "wasmtime",
                "container_annotations"
            ),
            Some(vec![
                "io.kubernetes.cri.*".into(),
                "wasmrunner.dev/*".into()
            ])
        );
        // Idempotent.
        let mut doc = again;
        assert_eq!(
            upsert_runtime(&mut doc, ConfigVersion::V3, &entry("wasmtime", false)).unwrap(),
            Upsert::Unchanged
        );
        assert_eq!(doc.to_string(), out);
    }

    /// Someone else's table: the patterns are merged into the lists (or the lists added), and
    /// removing exactly what was added gives the original text back.
    #[test]
    fn merge_and_remove_patterns_in_someone_elses_table() {
        let pattern = vec![capability_annotation_pattern()];
        let cases = [
            // No lists at all: both are added, indented like the table's keys.
            "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.wasmtime]\n    runtime_type = \"io.containerd.wasmtime.v1\"\n",
            // One-line lists, with spacing before `]`, and an empty one.
            "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.wasmtime]\nruntime_type = \"io.containerd.wasmtime.v1\"\npod_annotations = [ \"a.example/*\", \"b.example/x\" ]\ncontainer_annotations = []\n",
            // A multi-line list without a trailing comma.
            "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.wasmtime]\nruntime_type = \"io.containerd.wasmtime.v1\"\npod_annotations = [\n  \"a.example/*\",  # first\n  \"b.example/*\"\n]\ncontainer_annotations = [\"wasmrunner.dev/*\"]\n",
            // An inline table in the runtimes table.
            "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes]\nwasmtime = { runtime_type = \"io.containerd.wasmtime.v1\", pod_annotations = [\"a.example/*\"] }\n",
        ];
        for text in cases {
            let mut doc = parse(text).unwrap();
            let added =
                merge_annotation_patterns(&mut doc, ConfigVersion::V2, "wasmtime", &pattern)
                    .unwrap();
            let out = doc.to_string();
            let again = parse(&out).unwrap_or_else(|e| panic!("{e}\n{out}"));
            for key in ANNOTATION_KEYS {
                let list = runtime_string_list(&again, ConfigVersion::V2, "wasmtime", key)
                    .unwrap_or_else(|| panic!("{key} missing:\n{out}"));
                assert_eq!(
                    list.iter().filter(|p| *p == "wasmrunner.dev/*").count(),
                    1,
                    "{key}:\n{out}"
                );
                // The user's patterns stay, first.
                let before =
                    runtime_string_list(&parse(text).unwrap(), ConfigVersion::V2, "wasmtime", key)
                        .unwrap_or_default();
                assert!(list.starts_with(&before), "{key}:\n{out}");
            }
            // A second merge adds nothing.
            assert_eq!(
                merge_annotation_patterns(&mut doc, ConfigVersion::V2, "wasmtime", &pattern)
                    .unwrap(),
                vec![]
            );
            assert_eq!(doc.to_string(), out);
            // Removing what was added restores the text.
            for a in &added {
                let removed = remove_annotation_patterns(
                    &mut doc,
                    ConfigVersion::V2,
                    "wasmtime",
                    &a.key,
                    &a.patterns,
                    a.created_key,
                );
                assert_eq!(removed, a.patterns);
            }
            assert_eq!(doc.to_string(), text, "after removal of {added:?}");
        }
        // The multi-line list gets ours on its own line.
        let mut doc = parse(cases[2]).unwrap();
        merge_annotation_patterns(&mut doc, ConfigVersion::V2, "wasmtime", &pattern).unwrap();
        assert!(
            doc.to_string().contains(
                "pod_annotations = [\n  \"a.example/*\",  # first\n  \"b.example/*\",\n  \"wasmrunner.dev/*\"\n]\n"
            ),
            "{doc}"
        );
        // A missing table is nothing to merge into.
        let mut doc = parse("version = 2\n").unwrap();
        assert_eq!(
            merge_annotation_patterns(&mut doc, ConfigVersion::V2, "wasmtime", &pattern).unwrap(),
            vec![]
        );
        assert_eq!(doc.to_string(), "version = 2\n");
    }

    #[test]
    fn refuses_annotation_keys_that_are_not_lists() {
        for (text, what) in [
            ("pod_annotations = \"wasmrunner.dev/*\"\n", "a string"),
            (
                "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.wasmtime.container_annotations]\n",
                "a table",
            ),
        ] {
            let text = format!(
                "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.wasmtime]\nruntime_type = \"io.containerd.wasmtime.v1\"\n{text}"
            );
            let mut doc = parse(&text).unwrap();
            let err =
                upsert_runtime(&mut doc, ConfigVersion::V2, &entry("wasmtime", false)).unwrap_err();
            assert!(matches!(err, ConfigError::NotAList { .. }), "{err}");
            assert!(err.to_string().contains(what), "{err}");
            let mut doc = parse(&text).unwrap();
            let err = merge_annotation_patterns(
                &mut doc,
                ConfigVersion::V2,
                "wasmtime",
                &[capability_annotation_pattern()],
            )
            .unwrap_err();
            assert!(err.to_string().contains("not a list"), "{err}");
            assert_eq!(doc.to_string(), text);
        }
    }
}
