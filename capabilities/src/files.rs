//! The `files` key: which directories of the container the guest sees, and how.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One directory handed to the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preopen {
    /// Absolute, normalised path in the container's filesystem (no `.`, `..` or empty part).
    pub path: String,
    /// The path the guest opens it as.
    pub guest: String,
    pub writable: bool,
}

impl Preopen {
    /// Whether `other`'s directory lies inside this one and asks for no more access.
    fn contains(&self, other: &Preopen) -> bool {
        let inside = self.path == "/"
            || other.path == self.path
            || other
                .path
                .strip_prefix(&self.path)
                .is_some_and(|rest| rest.starts_with('/'));
        inside && (self.writable || !other.writable)
    }
}

impl fmt::Display for Preopen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path)?;
        if self.guest != self.path {
            write!(f, "={}", self.guest)?;
        }
        f.write_str(if self.writable { ":rw" } else { ":ro" })
    }
}

/// The directories the guest sees; empty for none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Files(pub Vec<Preopen>);

impl Files {
    /// The whole rootfs, read-write, as `/`: what a guest sees when nobody says otherwise.
    pub fn whole_rootfs() -> Self {
        Files(vec![Preopen {
            path: "/".to_string(),
            guest: "/".to_string(),
            writable: true,
        }])
    }

    pub(crate) fn parse(value: &str) -> Result<Self, String> {
        if value == "none" {
            return Ok(Files(Vec::new()));
        }
        let mut preopens: Vec<Preopen> = Vec::new();
        for entry in value.split(',').map(str::trim) {
            let (paths, writable) = match entry.rsplit_once(':') {
                Some((paths, "rw")) => (paths, true),
                Some((paths, "ro")) => (paths, false),
                Some((_, mode)) => {
                    return Err(format!("{entry:?}: the mode is ro or rw, not {mode:?}"));
                }
                None => (entry, false),
            };
            let (path, guest) = paths.split_once('=').unwrap_or((paths, paths));
            let preopen = Preopen {
                path: normalise(path).map_err(|e| format!("{entry:?}: {e}"))?,
                guest: normalise(guest).map_err(|e| format!("{entry:?}: {e}"))?,
                writable,
            };
            if preopens.iter().any(|p| p.guest == preopen.guest) {
                return Err(format!(
                    "{entry:?}: the guest path {} is given twice",
                    preopen.guest
                ));
            }
            preopens.push(preopen);
        }
        Ok(Files(preopens))
    }

    /// `Ok` when every directory of `need` lies inside one of these with enough access;
    /// else the first that does not, as text.
    pub(crate) fn covers(&self, need: &Files) -> Result<(), String> {
        match need
            .0
            .iter()
            .find(|wanted| !self.0.iter().any(|granted| granted.contains(wanted)))
        {
            Some(missing) => Err(missing.to_string()),
            None => Ok(()),
        }
    }
}

impl fmt::Display for Files {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        let entries: Vec<String> = self.0.iter().map(Preopen::to_string).collect();
        f.write_str(&entries.join(","))
    }
}

/// An absolute path with no `.` or `..` part, repeated slashes collapsed. `..` is refused
/// rather than resolved: a grant must read as what it reaches.
fn normalise(path: &str) -> Result<String, String> {
    if !path.starts_with('/') {
        return Err(format!("{path:?} is not an absolute path"));
    }
    let mut parts = Vec::new();
    for part in path.split('/').filter(|part| !part.is_empty()) {
        if part == "." || part == ".." {
            return Err(format!("{path:?} has a {part:?} part"));
        }
        if part.chars().any(char::is_control) {
            return Err(format!("{path:?} has a control character"));
        }
        parts.push(part);
    }
    Ok(format!("/{}", parts.join("/")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse_with_guest_paths_and_modes() {
        let files = Files::parse("/data:rw, /srv//conf=/conf ,/etc/app").unwrap();
        assert_eq!(files.to_string(), "/data:rw,/srv/conf=/conf:ro,/etc/app:ro");
        assert_eq!(Files::parse("none").unwrap(), Files(Vec::new()));
        assert_eq!(Files::parse("/:rw").unwrap(), Files::whole_rootfs());
    }

    #[test]
    fn paths_that_read_other_than_they_reach_are_refused() {
        for bad in [
            "data",
            "/data/../etc",
            "/./data",
            "/data=conf",
            "/a=/x,/b=/x",
            "",
            "/data:rx",
        ] {
            assert!(Files::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn coverage_is_by_whole_path_parts_and_mode() {
        let granted = Files::parse("/data:rw,/etc/app").unwrap();
        assert!(
            granted
                .covers(&Files::parse("/data/x:rw,/etc/app=/c").unwrap())
                .is_ok()
        );
        assert_eq!(
            granted.covers(&Files::parse("/etc/app:rw").unwrap()),
            Err("/etc/app:rw".to_string())
        );
        assert!(granted.covers(&Files::parse("/database").unwrap()).is_err());
        assert!(Files::whole_rootfs().covers(&granted).is_ok());
        assert!(granted.covers(&Files(Vec::new())).is_ok());
    }
}
