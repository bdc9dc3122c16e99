//! Parsers for the text files this module reads: `/proc/<pid>/cgroup`, `/proc/self/mountinfo`
//! and the cgroupfs interface files. Pure functions over strings, so they are tested with fixed
//! inputs.

use std::path::{Path, PathBuf};

use super::{CgroupError, V1Dirs};

/// One line of `/proc/<pid>/cgroup`: `hierarchy-ID:controller-list:cgroup-path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProcCgroupLine {
    pub hierarchy: u32,
    /// Empty for the cgroup v2 line (`0::/path`) and for v1 hierarchies without controllers.
    /// Named hierarchies appear as `name=...`.
    pub controllers: Vec<String>,
    pub path: String,
}

/// Parses `/proc/<pid>/cgroup`. `source` names the file in errors.
pub(crate) fn parse_proc_cgroup(
    text: &str,
    source: &Path,
) -> Result<Vec<ProcCgroupLine>, CgroupError> {
    let mut lines = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let malformed = |reason| malformed(source, line, reason);
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed("expected `id:controllers:path`"));
        };
        let hierarchy = id
            .parse::<u32>()
            .map_err(|_| malformed("hierarchy id is not a number"))?;
        if path.is_empty() {
            return Err(malformed("empty cgroup path"));
        }
        lines.push(ProcCgroupLine {
            hierarchy,
            controllers: controllers
                .split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .collect(),
            path: path.to_owned(),
        });
    }
    Ok(lines)
}

/// A cgroup filesystem mounted in our mount namespace (one line of `/proc/self/mountinfo`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CgroupMount {
    /// The cgroup of the hierarchy that appears at `mount_point` (`/` unless bind-mounted or
    /// mounted from inside a cgroup namespace).
    pub root: PathBuf,
    pub mount_point: PathBuf,
    /// `cgroup2` rather than a v1 `cgroup` hierarchy.
    pub v2: bool,
    /// The super-block options; for v1 these name the hierarchy's controllers (`rw,cpu,cpuacct`).
    pub options: Vec<String>,
}

impl CgroupMount {
    fn has_option(&self, option: &str) -> bool {
        self.options.iter().any(|o| o == option)
    }

    /// Where the cgroup `cgroup_path` of this hierarchy is visible below this mount, if it is.
    fn locate(&self, cgroup_path: &str) -> Option<PathBuf> {
        let relative = Path::new(cgroup_path).strip_prefix(&self.root).ok()?;
        if relative.as_os_str().is_empty() {
            Some(self.mount_point.clone())
        } else {
            Some(self.mount_point.join(relative))
        }
    }
}

/// The cgroup mounts listed in `/proc/self/mountinfo`. Lines that are not cgroup mounts, or that
/// cannot be parsed, are skipped: they cannot be the mounts we are looking for.
pub(crate) fn parse_mountinfo(text: &str) -> Vec<CgroupMount> {
    text.lines().filter_map(parse_mountinfo_line).collect()
}

fn parse_mountinfo_line(line: &str) -> Option<CgroupMount> {
    // id parent major:minor root mount-point mount-options [optional fields...] - fstype source super-options
    let fields: Vec<&str> = line.split_ascii_whitespace().collect();
    let separator = fields.iter().skip(6).position(|f| *f == "-")? + 6;
    let fstype = *fields.get(separator + 1)?;
    let v2 = match fstype {
        "cgroup" => false,
        "cgroup2" => true,
        _ => return None,
    };
    let super_options = fields.get(separator + 3).copied().unwrap_or("");
    Some(CgroupMount {
        root: PathBuf::from(unescape_octal(fields.get(3)?)),
        mount_point: PathBuf::from(unescape_octal(fields.get(4)?)),
        v2,
        options: super_options
            .split(',')
            .filter(|o| !o.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

/// Undoes the kernel's `\ooo` escaping of space, tab, newline and backslash in mountinfo paths.
fn unescape_octal(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && let Some(digits) = bytes.get(i + 1..i + 4)
            && digits.iter().all(|d| (b'0'..=b'7').contains(d))
        {
            let value = digits
                .iter()
                .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
            if let Ok(byte) = u8::try_from(value) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Where the cgroup described by `lines` lives, given the cgroup mounts we can see.
///
/// If any of the controllers we read is mounted as a v1 hierarchy (pure v1 hosts, and hybrid
/// hosts where cgroup2 at `/sys/fs/cgroup/unified` carries no controllers of interest) the
/// result is v1, with one directory per controller found. Otherwise it is the directory of the
/// `0::` line below the cgroup2 mount.
pub(crate) fn resolve(lines: &[ProcCgroupLine], mounts: &[CgroupMount]) -> Option<super::Layout> {
    let mut dirs = V1Dirs::default();
    for line in lines.iter().filter(|l| l.hierarchy != 0) {
        for controller in &line.controllers {
            let slot = match controller.as_str() {
                "cpu" => &mut dirs.cpu,
                "cpuacct" => &mut dirs.cpuacct,
                "memory" => &mut dirs.memory,
                "pids" => &mut dirs.pids,
                _ => continue,
            };
            if slot.is_some() {
                continue;
            }
            *slot = mounts
                .iter()
                .filter(|m| !m.v2 && m.has_option(controller))
                .find_map(|m| m.locate(&line.path));
        }
    }
    if dirs.cpu.is_some() || dirs.cpuacct.is_some() || dirs.memory.is_some() || dirs.pids.is_some()
    {
        return Some(super::Layout::V1(dirs));
    }
    let unified = lines
        .iter()
        .find(|l| l.hierarchy == 0 && l.controllers.is_empty())?;
    mounts
        .iter()
        .filter(|m| m.v2)
        .find_map(|m| m.locate(&unified.path))
        .map(super::Layout::V2)
}

/// A flat-keyed cgroup file (`key value` per line: `memory.stat`, `cpu.stat`, `cpuacct.stat`,
/// `memory.events`, `memory.oom_control`). Values are parsed on lookup, so a line we do not use
/// can never make a read fail.
pub(crate) struct FlatKeyed<'a> {
    source: &'a Path,
    pairs: Vec<(&'a str, &'a str)>,
}

impl<'a> FlatKeyed<'a> {
    pub(crate) fn parse(text: &'a str, source: &'a Path) -> Self {
        let pairs = text
            .lines()
            .filter_map(|line| {
                let mut words = line.split_ascii_whitespace();
                match (words.next(), words.next(), words.next()) {
                    (Some(key), Some(value), None) => Some((key, value)),
                    _ => None,
                }
            })
            .collect();
        FlatKeyed { source, pairs }
    }

    /// The value of `key`, if the file has that key.
    pub(crate) fn get(&self, key: &str) -> Result<Option<u64>, CgroupError> {
        self.pairs
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(k, v)| parse_u64(v, self.source, k))
            .transpose()
    }

    /// All pairs, values unparsed.
    pub(crate) fn pairs(&self) -> impl Iterator<Item = (&'a str, &'a str)> + '_ {
        self.pairs.iter().copied()
    }

    pub(crate) fn source(&self) -> &'a Path {
        self.source
    }
}

/// Parses one unsigned number; `context` (the key or line) goes into the error.
pub(crate) fn parse_u64(value: &str, source: &Path, context: &str) -> Result<u64, CgroupError> {
    value
        .trim()
        .parse::<u64>()
        .map_err(|_| malformed(source, context, "not an unsigned number"))
}

/// A limit file's content: a number, or `max` (cgroup v2) for no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limit {
    Max,
    Value(u64),
}

pub(crate) fn parse_limit(text: &str, source: &Path) -> Result<Limit, CgroupError> {
    match text.trim() {
        "max" => Ok(Limit::Max),
        value => parse_u64(value, source, value).map(Limit::Value),
    }
}

/// `cpuacct.usage_percpu`: nanoseconds per CPU, separated by spaces.
pub(crate) fn parse_u64_list(text: &str, source: &Path) -> Result<Vec<u64>, CgroupError> {
    text.split_ascii_whitespace()
        .map(|value| parse_u64(value, source, value))
        .collect()
}

/// Converts `cpuacct.stat` clock ticks (USER_HZ) to nanoseconds.
pub(crate) fn ticks_to_ns(ticks: u64, ticks_per_second: u64) -> u64 {
    if ticks_per_second == 0 {
        return 0;
    }
    let ns = u128::from(ticks) * 1_000_000_000 / u128::from(ticks_per_second);
    u64::try_from(ns).unwrap_or(u64::MAX)
}

fn malformed(source: &Path, line: &str, reason: &'static str) -> CgroupError {
    CgroupError::Malformed {
        path: source.to_owned(),
        line: line.to_owned(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::super::Layout;
    use super::*;

    const SOURCE: &str = "/proc/1/cgroup";

    fn lines(text: &str) -> Vec<ProcCgroupLine> {
        parse_proc_cgroup(text, Path::new(SOURCE)).expect("parses")
    }

    fn dirs(cpu: &str, cpuacct: &str, memory: &str, pids: &str) -> V1Dirs {
        let dir = |d: &str| (!d.is_empty()).then(|| PathBuf::from(d));
        V1Dirs {
            cpu: dir(cpu),
            cpuacct: dir(cpuacct),
            memory: dir(memory),
            pids: dir(pids),
        }
    }

    /// This VM: v1 controllers on separate mounts, an empty cgroup2 at /sys/fs/cgroup/unified.
    const HYBRID_MOUNTINFO: &str = "\
22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:5 - proc proc rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn proc_cgroup_lines() {
        let parsed =
            lines("9:name=systemd:/\n4:memory:/process_api/d013\n2:cpu,cpuacct:/a:b/c\n0::/\n\n");
        assert_eq!(
            parsed,
            vec![
                ProcCgroupLine {
                    hierarchy: 9,
                    controllers: vec!["name=systemd".into()],
                    path: "/".into()
                },
                ProcCgroupLine {
                    hierarchy: 4,
                    controllers: vec!["memory".into()],
                    path: "/process_api/d013".into()
                },
                ProcCgroupLine {
                    hierarchy: 2,
                    controllers: vec!["cpu".into(), "cpuacct".into()],
                    path: "/a:b/c".into()
                },
                ProcCgroupLine {
                    hierarchy: 0,
                    controllers: vec![],
                    path: "/".into()
                },
            ]
        );
    }

    #[test]
    fn malformed_proc_cgroup_lines() {
        for bad in ["memory:/x", "x:memory:/x", "3:memory:", "justtext"] {
            let error = parse_proc_cgroup(bad, Path::new(SOURCE)).expect_err(bad);
            assert!(
                matches!(&error, CgroupError::Malformed { line, .. } if line == bad),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn mountinfo_lines() {
        let mounts = parse_mountinfo(
            "\
25 20 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
40 31 0:37 /docker/abc /sys/fs/cgroup/cpu,cpuacct rw,nosuid master:20 shared:21 - cgroup cgroup rw,cpu,cpuacct
41 31 0:38 / /mnt/with\\040space rw - cgroup cgroup rw,pids
42 31 0:39 / /proc rw - proc proc rw
garbage line
43 31 0:40 / /x rw - cgroup
",
        );
        assert_eq!(
            mounts,
            vec![
                CgroupMount {
                    root: "/".into(),
                    mount_point: "/sys/fs/cgroup".into(),
                    v2: true,
                    options: vec![
                        "rw".into(),
                        "nsdelegate".into(),
                        "memory_recursiveprot".into()
                    ],
                },
                CgroupMount {
                    root: "/docker/abc".into(),
                    mount_point: "/sys/fs/cgroup/cpu,cpuacct".into(),
                    v2: false,
                    options: vec!["rw".into(), "cpu".into(), "cpuacct".into()],
                },
                CgroupMount {
                    root: "/".into(),
                    mount_point: "/mnt/with space".into(),
                    v2: false,
                    options: vec!["rw".into(), "pids".into()],
                },
                CgroupMount {
                    root: "/".into(),
                    mount_point: "/x".into(),
                    v2: false,
                    options: vec![],
                },
            ]
        );
    }

    #[test]
    fn unescaping() {
        assert_eq!(unescape_octal(r"a\040b\011c\134d\012"), "a b\tc\\d\n");
        assert_eq!(unescape_octal(r"trailing\04"), r"trailing\04");
        assert_eq!(unescape_octal(r"\999"), r"\999");
    }

    #[test]
    fn resolves_hybrid_host_as_v1() {
        let layout = resolve(
            &lines(
                "9:name=systemd:/\n8:pids:/\n4:memory:/process_api/d013\n2:cpuacct:/k/x\n1:cpu:/k/x\n0::/\n",
            ),
            &parse_mountinfo(HYBRID_MOUNTINFO),
        );
        assert_eq!(
            layout,
            Some(Layout::V1(dirs(
                "/sys/fs/cgroup/cpu/k/x",
                "/sys/fs/cgroup/cpuacct/k/x",
                "/sys/fs/cgroup/memory/process_api/d013",
                "/sys/fs/cgroup/pids",
            )))
        );
    }

    #[test]
    fn resolves_co_mounted_cpu_cpuacct() {
        let mountinfo = "\
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime shared:10 - cgroup cgroup rw,memory
";
        let layout = resolve(
            &lines("5:memory:/kubepods/pod1/c1\n3:cpu,cpuacct:/kubepods/pod1/c1\n"),
            &parse_mountinfo(mountinfo),
        );
        assert_eq!(
            layout,
            Some(Layout::V1(dirs(
                "/sys/fs/cgroup/cpu,cpuacct/kubepods/pod1/c1",
                "/sys/fs/cgroup/cpu,cpuacct/kubepods/pod1/c1",
                "/sys/fs/cgroup/memory/kubepods/pod1/c1",
                "",
            )))
        );
    }

    #[test]
    fn resolves_below_a_mount_root() {
        // Inside a container without a cgroup namespace: the hierarchy's /docker/abc is mounted.
        let mountinfo = "\
32 31 0:29 /docker/abc /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory
";
        let mounts = parse_mountinfo(mountinfo);
        assert_eq!(
            resolve(&lines("4:memory:/docker/abc/sub\n"), &mounts),
            Some(Layout::V1(dirs("", "", "/sys/fs/cgroup/memory/sub", "")))
        );
        assert_eq!(
            resolve(&lines("4:memory:/docker/abc\n"), &mounts),
            Some(Layout::V1(dirs("", "", "/sys/fs/cgroup/memory", "")))
        );
        // Not below the mount's root: not visible (and /docker/abcd is no child of /docker/abc).
        assert_eq!(resolve(&lines("4:memory:/docker/abcd\n"), &mounts), None);
    }

    #[test]
    fn resolves_pure_v2() {
        let mountinfo = "\
25 20 0:23 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
";
        assert_eq!(
            resolve(
                &lines("0::/kubepods.slice/cri-containerd-1.scope\n"),
                &parse_mountinfo(mountinfo)
            ),
            Some(Layout::V2(
                "/sys/fs/cgroup/kubepods.slice/cri-containerd-1.scope".into()
            ))
        );
        assert_eq!(
            resolve(&lines("0::/\n"), &parse_mountinfo(mountinfo)),
            Some(Layout::V2("/sys/fs/cgroup".into()))
        );
    }

    #[test]
    fn resolves_nothing_without_mounts() {
        assert_eq!(resolve(&lines("4:memory:/x\n0::/x\n"), &[]), None);
        // Only hierarchies whose controllers we do not read, and no cgroup2 line.
        assert_eq!(
            resolve(
                &lines("9:name=systemd:/\n3:freezer:/x\n"),
                &parse_mountinfo(HYBRID_MOUNTINFO)
            ),
            None
        );
    }

    #[test]
    fn flat_keyed_files() {
        let source = Path::new("memory.stat");
        let stat = FlatKeyed::parse(
            "cache 10145792\nrss 6627328\nweird line here\nnegative -1\n\ntotal_inactive_file 8192\n",
            source,
        );
        assert_eq!(stat.get("cache").expect("number"), Some(10_145_792));
        assert_eq!(stat.get("total_inactive_file").expect("number"), Some(8192));
        assert_eq!(stat.get("missing").expect("absent"), None);
        assert_eq!(stat.get("weird").expect("not a pair, skipped"), None);
        assert!(matches!(
            stat.get("negative"),
            Err(CgroupError::Malformed { .. })
        ));
        assert_eq!(stat.pairs().count(), 4);

        let cpu = FlatKeyed::parse("user 269751\nsystem 36006\n", Path::new("cpuacct.stat"));
        assert_eq!(cpu.get("user").expect("number"), Some(269_751));
        assert_eq!(cpu.get("system").expect("number"), Some(36_006));

        let cpu_v2 = FlatKeyed::parse(
            "usage_usec 1200\nuser_usec 1000\nsystem_usec 200\nnr_periods 0\n",
            Path::new("cpu.stat"),
        );
        assert_eq!(cpu_v2.get("usage_usec").expect("number"), Some(1200));
    }

    #[test]
    fn numbers_limits_lists_and_ticks() {
        let source = Path::new("f");
        assert_eq!(parse_limit("max\n", source).expect("max"), Limit::Max);
        assert_eq!(
            parse_limit("16777216\n", source).expect("n"),
            Limit::Value(16_777_216)
        );
        assert!(parse_limit("-1", source).is_err());
        assert_eq!(
            parse_u64_list("1515142274186 1542447935608 \n", source).expect("list"),
            vec![1_515_142_274_186, 1_542_447_935_608]
        );
        assert!(parse_u64_list("1 x", source).is_err());
        assert_eq!(ticks_to_ns(269_751, 100), 2_697_510_000_000);
        assert_eq!(ticks_to_ns(3, 250), 12_000_000);
        assert_eq!(ticks_to_ns(u64::MAX, 1), u64::MAX);
        assert_eq!(ticks_to_ns(5, 0), 0);
    }
}
