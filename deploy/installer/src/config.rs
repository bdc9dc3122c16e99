//! containerd's `config.toml`: format version detection, where the CRI runtime tables live in each
//! format, and the edits the installer makes to them. Every edit goes through `toml_edit`, so the
//! user's comments, key order, quoting and indentation stay as they were.

use thiserror::Error;
use toml_edit::{Decor, DocumentMut, Item, Key, Table, TableLike, Value};

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

/// Adds the handler's table, or brings an existing one to the wanted values.
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
        RuntimeEntry {
            handler: handler.into(),
            runtime_type: format!("io.containerd.{handler}.v1"),
            systemd_cgroup: systemd,
        }
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
        // Round trip: parsing our output gives the same values back.
        let again = parse(&text).unwrap();
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
        let expected = "            SystemdCgroup = true\n\n        # Added by wasmrunner-installer for the RuntimeClass handler \"wasmtime\" (`wasmrunner-installer uninstall` removes it).\n        [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.wasmtime]\n          runtime_type = \"io.containerd.wasmtime.v1\"\n\n          [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.wasmtime.options]\n            SystemdCgroup = true\n\n  [plugins.\"io.containerd.internal.v1.opt\"]";
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
            "[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.wasmtime]\nruntime_type = \"io.containerd.wasmtime.v1\"\n\n[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.wasmtime.options]\nSystemdCgroup = true\n[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.wasmedge]\nruntime_type = \"io.containerd.wasmedge.v1\"\n\n[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.wasmedge.options]\nSystemdCgroup = false\n"
        );
        assert!(parse(&text).is_ok());
    }
}
