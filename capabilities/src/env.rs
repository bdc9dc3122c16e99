//! The `env` key: which of the container's variables the guest sees.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Names the guest may see: each exact, or a prefix when it ends in `*` (`*` alone: all).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvFilter(Vec<String>);

impl EnvFilter {
    pub fn all() -> Self {
        EnvFilter(vec!["*".to_string()])
    }

    pub(crate) fn parse(value: &str) -> Result<Self, String> {
        if value == "none" {
            return Ok(EnvFilter(Vec::new()));
        }
        let mut patterns = Vec::new();
        for pattern in value.split(',').map(str::trim) {
            let name = pattern.strip_suffix('*').unwrap_or(pattern);
            if pattern.is_empty() {
                return Err("an empty pattern".to_string());
            }
            if name.contains(['*', '='])
                || name.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(format!(
                    "{pattern:?}: a pattern is a variable name, optionally ending in *"
                ));
            }
            patterns.push(pattern.to_string());
        }
        Ok(EnvFilter(patterns))
    }

    /// Whether the guest may see variable `name`.
    pub fn allows(&self, name: &str) -> bool {
        self.0
            .iter()
            .any(|pattern| match pattern.strip_suffix('*') {
                Some(prefix) => name.starts_with(prefix),
                None => name == pattern,
            })
    }

    /// `Ok` when each pattern of `need` matches only names these allow.
    pub(crate) fn covers(&self, need: &EnvFilter) -> Result<(), String> {
        let covered = |wanted: &String| match wanted.strip_suffix('*') {
            // A prefix is covered by a shorter or equal prefix only.
            Some(prefix) => self.0.iter().any(|granted| {
                granted
                    .strip_suffix('*')
                    .is_some_and(|granted| prefix.starts_with(granted))
            }),
            None => self.allows(wanted),
        };
        match need.0.iter().find(|wanted| !covered(wanted)) {
            Some(missing) => Err(missing.clone()),
            None => Ok(()),
        }
    }
}

impl fmt::Display for EnvFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        f.write_str(&self.0.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_are_names_or_prefixes() {
        let filter = EnvFilter::parse("APP_*, HOME").unwrap();
        assert!(filter.allows("APP_NAME") && filter.allows("APP_") && filter.allows("HOME"));
        assert!(!filter.allows("HOMEDIR") && !filter.allows("PATH"));
        assert!(!EnvFilter::parse("none").unwrap().allows("HOME"));
        assert!(EnvFilter::all().allows("anything"));
        for bad in ["", "A,,B", "*A", "A*B", "A=1", "A B"] {
            assert!(EnvFilter::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn a_need_is_covered_only_by_a_wider_or_equal_grant() {
        let granted = EnvFilter::parse("APP_*,HOME").unwrap();
        assert!(
            granted
                .covers(&EnvFilter::parse("APP_NAME,APP_X*,HOME").unwrap())
                .is_ok()
        );
        assert_eq!(
            granted.covers(&EnvFilter::parse("A*").unwrap()),
            Err("A*".into())
        );
        assert_eq!(granted.covers(&EnvFilter::all()), Err("*".into()));
        assert!(EnvFilter::all().covers(&granted).is_ok());
    }
}
