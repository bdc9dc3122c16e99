//! Unified diffs for `--dry-run`.

use similar::TextDiff;

/// A unified diff of a file's text before and after (`None`: the file does not exist).
/// Empty when nothing changes.
pub fn unified(path: &str, before: Option<&str>, after: Option<&str>) -> String {
    if before == after {
        return String::new();
    }
    let old_name = if before.is_some() {
        format!("a{path}")
    } else {
        "/dev/null".into()
    };
    let new_name = if after.is_some() {
        format!("b{path}")
    } else {
        "/dev/null".into()
    };
    TextDiff::from_lines(before.unwrap_or_default(), after.unwrap_or_default())
        .unified_diff()
        .context_radius(3)
        .header(&old_name, &new_name)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_shows_added_lines() {
        let d = unified("/etc/x.toml", Some("a\nb\n"), Some("a\nb\nc\n"));
        assert!(d.starts_with("--- a/etc/x.toml\n+++ b/etc/x.toml\n"), "{d}");
        assert!(d.contains("\n+c\n"), "{d}");
    }

    #[test]
    fn no_diff_when_equal_and_dev_null_for_new_files() {
        assert_eq!(unified("/x", Some("a\n"), Some("a\n")), "");
        let d = unified("/x", None, Some("a\n"));
        assert!(d.starts_with("--- /dev/null\n+++ b/x\n"), "{d}");
    }
}
