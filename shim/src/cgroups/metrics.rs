//! Reading the interface files of a cgroup into containerd's cgroup v1 `Metrics` message.

use std::io;
use std::path::{Path, PathBuf};

use containerd_shim::protos::cgroups::metrics::{
    CPUStat, CPUUsage, MemoryEntry, MemoryOomControl, MemoryStat, Metrics, PidsStat, Throttle,
};
use containerd_shim::protos::protobuf::MessageField;

use super::parse::{self, FlatKeyed, Limit};
use super::{CgroupError, V1Dirs};

pub(super) fn v1(dirs: &V1Dirs) -> Result<Metrics, CgroupError> {
    let mut metrics = Metrics::new();
    if dirs.cpu.is_some() || dirs.cpuacct.is_some() {
        metrics.cpu = MessageField::some(v1_cpu(dirs)?);
    }
    if let Some(dir) = &dirs.memory {
        metrics.memory = MessageField::some(v1_memory(dir)?);
        if let Some(text) = read_optional(&dir.join("memory.oom_control"))? {
            let path = dir.join("memory.oom_control");
            let control = FlatKeyed::parse(&text, &path);
            let mut oom = MemoryOomControl::new();
            oom.oom_kill_disable = control.get("oom_kill_disable")?.unwrap_or(0);
            oom.under_oom = control.get("under_oom")?.unwrap_or(0);
            oom.oom_kill = control.get("oom_kill")?.unwrap_or(0);
            metrics.memory_oom_control = MessageField::some(oom);
        }
    }
    if let Some(dir) = &dirs.pids {
        metrics.pids = pids(dir)?.into();
    }
    // A file of a removed cgroup reads as missing; make that an error rather than zeros.
    for dir in [&dirs.cpu, &dirs.cpuacct, &dirs.memory, &dirs.pids]
        .into_iter()
        .flatten()
    {
        ensure_exists(dir)?;
    }
    Ok(metrics)
}

fn v1_cpu(dirs: &V1Dirs) -> Result<CPUStat, CgroupError> {
    let mut usage = CPUUsage::new();
    if let Some(dir) = &dirs.cpuacct {
        if let Some(total) = read_u64(&dir.join("cpuacct.usage"))? {
            usage.total = total;
        }
        let path = dir.join("cpuacct.stat");
        if let Some(text) = read_optional(&path)? {
            let stat = FlatKeyed::parse(&text, &path);
            let hz = ticks_per_second();
            usage.user = parse::ticks_to_ns(stat.get("user")?.unwrap_or(0), hz);
            usage.kernel = parse::ticks_to_ns(stat.get("system")?.unwrap_or(0), hz);
        }
        let path = dir.join("cpuacct.usage_percpu");
        if let Some(text) = read_optional(&path)? {
            usage.per_cpu = parse::parse_u64_list(&text, &path)?;
        }
    }
    let mut throttle = Throttle::new();
    if let Some(dir) = &dirs.cpu {
        let path = dir.join("cpu.stat");
        if let Some(text) = read_optional(&path)? {
            let stat = FlatKeyed::parse(&text, &path);
            throttle.periods = stat.get("nr_periods")?.unwrap_or(0);
            throttle.throttled_periods = stat.get("nr_throttled")?.unwrap_or(0);
            throttle.throttled_time = stat.get("throttled_time")?.unwrap_or(0);
        }
    }
    let mut cpu = CPUStat::new();
    cpu.usage = MessageField::some(usage);
    cpu.throttling = MessageField::some(throttle);
    Ok(cpu)
}

fn v1_memory(dir: &Path) -> Result<MemoryStat, CgroupError> {
    let mut memory = MemoryStat::new();
    let path = dir.join("memory.stat");
    if let Some(text) = read_optional(&path)? {
        set_fields(&mut memory, &FlatKeyed::parse(&text, &path), V1_MEMORY_STAT)?;
    }
    memory.usage = v1_memory_entry(dir, "memory")?.into();
    memory.swap = v1_memory_entry(dir, "memory.memsw")?.into();
    memory.kernel = v1_memory_entry(dir, "memory.kmem")?.into();
    memory.kernel_tcp = v1_memory_entry(dir, "memory.kmem.tcp")?.into();
    Ok(memory)
}

/// `<prefix>.usage_in_bytes` and friends, or `None` if the kernel has no such files.
fn v1_memory_entry(dir: &Path, prefix: &str) -> Result<Option<MemoryEntry>, CgroupError> {
    let file = |name: &str| dir.join(format!("{prefix}.{name}"));
    let Some(usage) = read_u64(&file("usage_in_bytes"))? else {
        return Ok(None);
    };
    let mut entry = MemoryEntry::new();
    entry.usage = usage;
    entry.limit = read_u64(&file("limit_in_bytes"))?.unwrap_or(0);
    entry.max = read_u64(&file("max_usage_in_bytes"))?.unwrap_or(0);
    entry.failcnt = read_u64(&file("failcnt"))?.unwrap_or(0);
    Ok(Some(entry))
}

type Setter = fn(&mut MemoryStat, u64);

/// v1 `memory.stat` keys and the fields they fill.
const V1_MEMORY_STAT: &[(&str, Setter)] = &[
    ("cache", |m, v| m.cache = v),
    ("rss", |m, v| m.rss = v),
    ("rss_huge", |m, v| m.rss_huge = v),
    ("mapped_file", |m, v| m.mapped_file = v),
    ("dirty", |m, v| m.dirty = v),
    ("writeback", |m, v| m.writeback = v),
    ("pgpgin", |m, v| m.pg_pg_in = v),
    ("pgpgout", |m, v| m.pg_pg_out = v),
    ("pgfault", |m, v| m.pg_fault = v),
    ("pgmajfault", |m, v| m.pg_maj_fault = v),
    ("inactive_anon", |m, v| m.inactive_anon = v),
    ("active_anon", |m, v| m.active_anon = v),
    ("inactive_file", |m, v| m.inactive_file = v),
    ("active_file", |m, v| m.active_file = v),
    ("unevictable", |m, v| m.unevictable = v),
    ("hierarchical_memory_limit", |m, v| {
        m.hierarchical_memory_limit = v
    }),
    ("hierarchical_memsw_limit", |m, v| {
        m.hierarchical_swap_limit = v
    }),
    ("total_cache", |m, v| m.total_cache = v),
    ("total_rss", |m, v| m.total_rss = v),
    ("total_rss_huge", |m, v| m.total_rss_huge = v),
    ("total_mapped_file", |m, v| m.total_mapped_file = v),
    ("total_dirty", |m, v| m.total_dirty = v),
    ("total_writeback", |m, v| m.total_writeback = v),
    ("total_pgpgin", |m, v| m.total_pg_pg_in = v),
    ("total_pgpgout", |m, v| m.total_pg_pg_out = v),
    ("total_pgfault", |m, v| m.total_pg_fault = v),
    ("total_pgmajfault", |m, v| m.total_pg_maj_fault = v),
    ("total_inactive_anon", |m, v| m.total_inactive_anon = v),
    ("total_active_anon", |m, v| m.total_active_anon = v),
    ("total_inactive_file", |m, v| m.total_inactive_file = v),
    ("total_active_file", |m, v| m.total_active_file = v),
    ("total_unevictable", |m, v| m.total_unevictable = v),
];

/// v2 `memory.stat` keys and the v1 fields they fill. v2 figures include descendants, like
/// v1's `total_*`, so both the plain and the `total_*` field get the value.
const V2_MEMORY_STAT: &[(&str, Setter)] = &[
    ("file", |m, v| (m.cache, m.total_cache) = (v, v)),
    ("anon", |m, v| (m.rss, m.total_rss) = (v, v)),
    ("anon_thp", |m, v| (m.rss_huge, m.total_rss_huge) = (v, v)),
    ("file_mapped", |m, v| {
        (m.mapped_file, m.total_mapped_file) = (v, v)
    }),
    ("file_dirty", |m, v| (m.dirty, m.total_dirty) = (v, v)),
    ("file_writeback", |m, v| {
        (m.writeback, m.total_writeback) = (v, v)
    }),
    ("pgfault", |m, v| (m.pg_fault, m.total_pg_fault) = (v, v)),
    ("pgmajfault", |m, v| {
        (m.pg_maj_fault, m.total_pg_maj_fault) = (v, v)
    }),
    ("inactive_anon", |m, v| {
        (m.inactive_anon, m.total_inactive_anon) = (v, v)
    }),
    ("active_anon", |m, v| {
        (m.active_anon, m.total_active_anon) = (v, v)
    }),
    ("inactive_file", |m, v| {
        (m.inactive_file, m.total_inactive_file) = (v, v)
    }),
    ("active_file", |m, v| {
        (m.active_file, m.total_active_file) = (v, v)
    }),
    ("unevictable", |m, v| {
        (m.unevictable, m.total_unevictable) = (v, v)
    }),
];

fn set_fields(
    memory: &mut MemoryStat,
    stat: &FlatKeyed<'_>,
    table: &[(&str, Setter)],
) -> Result<(), CgroupError> {
    for (key, value) in stat.pairs() {
        if let Some((_, set)) = table.iter().find(|(k, _)| *k == key) {
            set(memory, parse::parse_u64(value, stat.source(), key)?);
        }
    }
    Ok(())
}

pub(super) fn v2(dir: &Path) -> Result<Metrics, CgroupError> {
    ensure_exists(dir)?;
    let mut metrics = Metrics::new();

    let path = dir.join("cpu.stat");
    if let Some(text) = read_optional(&path)? {
        let stat = FlatKeyed::parse(&text, &path);
        let ns = |key| -> Result<u64, CgroupError> {
            Ok(stat.get(key)?.unwrap_or(0).saturating_mul(1000))
        };
        let mut usage = CPUUsage::new();
        usage.total = ns("usage_usec")?;
        usage.user = ns("user_usec")?;
        usage.kernel = ns("system_usec")?;
        let mut throttle = Throttle::new();
        throttle.periods = stat.get("nr_periods")?.unwrap_or(0);
        throttle.throttled_periods = stat.get("nr_throttled")?.unwrap_or(0);
        throttle.throttled_time = ns("throttled_usec")?;
        let mut cpu = CPUStat::new();
        cpu.usage = MessageField::some(usage);
        cpu.throttling = MessageField::some(throttle);
        metrics.cpu = MessageField::some(cpu);
    }

    if let Some(current) = read_u64(&dir.join("memory.current"))? {
        let (memory, oom) = v2_memory(dir, current)?;
        metrics.memory = MessageField::some(memory);
        metrics.memory_oom_control = MessageField::some(oom);
    }

    metrics.pids = pids(dir)?.into();
    ensure_exists(dir)?;
    Ok(metrics)
}

fn v2_memory(dir: &Path, current: u64) -> Result<(MemoryStat, MemoryOomControl), CgroupError> {
    let mut memory = MemoryStat::new();
    let path = dir.join("memory.stat");
    if let Some(text) = read_optional(&path)? {
        let stat = FlatKeyed::parse(&text, &path);
        set_fields(&mut memory, &stat, V2_MEMORY_STAT)?;
        if let Some(kernel) = stat.get("kernel")? {
            let mut entry = MemoryEntry::new();
            entry.usage = kernel;
            memory.kernel = MessageField::some(entry);
        }
        if let Some(sock) = stat.get("sock")? {
            let mut entry = MemoryEntry::new();
            entry.usage = sock;
            memory.kernel_tcp = MessageField::some(entry);
        }
    }

    let limit = read_limit(&dir.join("memory.max"))?;
    let path = dir.join("memory.events");
    let events_text = read_optional(&path)?.unwrap_or_default();
    let events = FlatKeyed::parse(&events_text, &path);

    let mut usage = MemoryEntry::new();
    usage.usage = current;
    usage.limit = limit.map_or(0, unlimited_as_max);
    usage.max = read_u64(&dir.join("memory.peak"))?.unwrap_or(0);
    usage.failcnt = events.get("max")?.unwrap_or(0);
    memory.hierarchical_memory_limit = usage.limit;
    memory.usage = MessageField::some(usage);

    if let Some(swap_current) = read_u64(&dir.join("memory.swap.current"))? {
        // v1 semantics (memory.memsw.*): memory plus swap.
        let mut swap = MemoryEntry::new();
        swap.usage = current.saturating_add(swap_current);
        swap.limit = match (limit, read_limit(&dir.join("memory.swap.max"))?) {
            (Some(Limit::Value(memory)), Some(Limit::Value(swap))) => memory.saturating_add(swap),
            _ => u64::MAX,
        };
        swap.failcnt = read_optional(&dir.join("memory.swap.events"))?
            .map(|text| {
                let path = dir.join("memory.swap.events");
                FlatKeyed::parse(&text, &path).get("max")
            })
            .transpose()?
            .flatten()
            .unwrap_or(0);
        memory.hierarchical_swap_limit = swap.limit;
        memory.swap = MessageField::some(swap);
    }

    let mut oom = MemoryOomControl::new();
    oom.oom_kill = events.get("oom_kill")?.unwrap_or(0);
    Ok((memory, oom))
}

/// `pids.current` and `pids.max` (same files on v1 and v2), or `None` without the controller.
fn pids(dir: &Path) -> Result<Option<PidsStat>, CgroupError> {
    let Some(current) = read_u64(&dir.join("pids.current"))? else {
        return Ok(None);
    };
    let mut pids = PidsStat::new();
    pids.current = current;
    pids.limit = match read_limit(&dir.join("pids.max"))? {
        Some(Limit::Value(limit)) => limit,
        Some(Limit::Max) | None => 0,
    };
    Ok(Some(pids))
}

pub(super) fn v1_oom_killed(dirs: &V1Dirs) -> Result<bool, CgroupError> {
    let dir = dirs
        .memory
        .as_ref()
        .ok_or(CgroupError::NoMemoryController)?;
    let path = dir.join("memory.oom_control");
    let text = read_required(dir, &path)?;
    let control = FlatKeyed::parse(&text, &path);
    Ok(match control.get("oom_kill")? {
        Some(kills) => kills > 0,
        None => control.get("under_oom")?.unwrap_or(0) > 0,
    })
}

pub(super) fn v2_oom_killed(dir: &Path) -> Result<bool, CgroupError> {
    let path = dir.join("memory.events");
    let text = read_required(dir, &path)?;
    Ok(FlatKeyed::parse(&text, &path).get("oom_kill")?.unwrap_or(0) > 0)
}

/// The `oom_kill` count of a v2 `memory.events` file, or `None` if the file or the key is
/// missing (the cgroup was removed; or, on file systems other than cgroupfs, a torn write).
pub(super) fn v2_oom_kill_count(events: &Path) -> Result<Option<u64>, CgroupError> {
    match read_optional(events)? {
        Some(text) => FlatKeyed::parse(&text, events).get("oom_kill"),
        None => Ok(None),
    }
}

/// Reads a memory controller file that must exist.
fn read_required(dir: &Path, path: &Path) -> Result<String, CgroupError> {
    match read_optional(path)? {
        Some(text) => Ok(text),
        None => {
            ensure_exists(dir)?;
            Err(CgroupError::NoMemoryController)
        }
    }
}

/// Maps a limit to the number reported: `max` becomes `u64::MAX`, which CRI treats as
/// unlimited (as it does v1's 9223372036854771712).
fn unlimited_as_max(limit: Limit) -> u64 {
    match limit {
        Limit::Max => u64::MAX,
        Limit::Value(value) => value,
    }
}

fn ensure_exists(dir: &Path) -> Result<(), CgroupError> {
    if dir.is_dir() {
        Ok(())
    } else {
        Err(CgroupError::Removed {
            path: dir.to_owned(),
        })
    }
}

/// Reads a file that the kernel may not provide: `None` if it does not exist.
fn read_optional(path: &Path) -> Result<Option<String>, CgroupError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        // Reading a file of a cgroup removed after it was opened.
        Err(error) if error.raw_os_error() == Some(libc::ENODEV) => Err(CgroupError::Removed {
            path: path.parent().map_or_else(PathBuf::new, Path::to_owned),
        }),
        Err(source) => Err(CgroupError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

fn read_u64(path: &Path) -> Result<Option<u64>, CgroupError> {
    read_optional(path)?
        .map(|text| parse::parse_u64(&text, path, text.trim()))
        .transpose()
}

fn read_limit(path: &Path) -> Result<Option<Limit>, CgroupError> {
    read_optional(path)?
        .map(|text| parse::parse_limit(&text, path))
        .transpose()
}

/// USER_HZ, the unit of `cpuacct.stat`.
fn ticks_per_second() -> u64 {
    // SAFETY: sysconf only reads a configuration value; it takes no pointers.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(hz).ok().filter(|hz| *hz > 0).unwrap_or(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, content: &str) {
        std::fs::write(dir.join(name), content).expect("write fixture");
    }

    #[test]
    fn v1_cpu_usage_comes_from_cpuacct() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cpu = tmp.path().join("cpu");
        let cpuacct = tmp.path().join("cpuacct");
        std::fs::create_dir(&cpu).expect("mkdir");
        std::fs::create_dir(&cpuacct).expect("mkdir");
        write(&cpuacct, "cpuacct.usage", "1234567890\n");
        write(&cpuacct, "cpuacct.stat", "user 100\nsystem 23\n");
        write(&cpuacct, "cpuacct.usage_percpu", "1000000000 234567890 \n");
        // The v1 cpu.stat has no usage keys: the bug being fixed read usage from here.
        write(
            &cpu,
            "cpu.stat",
            "nr_periods 7\nnr_throttled 2\nthrottled_time 5000\nnr_bursts 0\nburst_time 0\n",
        );
        let dirs = V1Dirs {
            cpu: Some(cpu),
            cpuacct: Some(cpuacct),
            ..V1Dirs::default()
        };
        let metrics = v1(&dirs).expect("metrics");
        let hz = ticks_per_second();
        let usage = &metrics.cpu.usage;
        assert_eq!(usage.total, 1_234_567_890);
        assert_eq!(usage.user, 100 * 1_000_000_000 / hz);
        assert_eq!(usage.kernel, 23 * 1_000_000_000 / hz);
        assert_eq!(usage.per_cpu, vec![1_000_000_000, 234_567_890]);
        let throttling = &metrics.cpu.throttling;
        assert_eq!(
            (
                throttling.periods,
                throttling.throttled_periods,
                throttling.throttled_time
            ),
            (7, 2, 5000)
        );
        assert!(metrics.memory.is_none());
        assert!(metrics.pids.is_none());
    }

    #[test]
    fn v1_memory_and_pids() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let memory = tmp.path().join("memory");
        let pids_dir = tmp.path().join("pids");
        std::fs::create_dir(&memory).expect("mkdir");
        std::fs::create_dir(&pids_dir).expect("mkdir");
        write(&memory, "memory.usage_in_bytes", "10485760\n");
        write(&memory, "memory.limit_in_bytes", "9223372036854771712\n");
        write(&memory, "memory.max_usage_in_bytes", "20971520\n");
        write(&memory, "memory.failcnt", "3\n");
        write(&memory, "memory.memsw.usage_in_bytes", "10489856\n");
        write(
            &memory,
            "memory.memsw.limit_in_bytes",
            "9223372036854771712\n",
        );
        write(
            &memory,
            "memory.stat",
            "cache 4096\nrss 8192\nshmem 0\npgfault 11\ninactive_file 100\n\
             hierarchical_memory_limit 9223372036854771712\n\
             total_rss 81920\ntotal_inactive_file 4000\ntotal_pgfault 12\ntotal_pgmajfault 1\n\
             some_future_key -1\n",
        );
        write(
            &memory,
            "memory.oom_control",
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        );
        write(&pids_dir, "pids.current", "4\n");
        write(&pids_dir, "pids.max", "max\n");
        let dirs = V1Dirs {
            memory: Some(memory),
            pids: Some(pids_dir.clone()),
            ..V1Dirs::default()
        };
        let metrics = v1(&dirs).expect("metrics");
        let m = &metrics.memory;
        assert_eq!(m.usage.usage, 10_485_760);
        assert_eq!(m.usage.limit, 9_223_372_036_854_771_712);
        assert_eq!(m.usage.max, 20_971_520);
        assert_eq!(m.usage.failcnt, 3);
        assert_eq!(m.swap.usage, 10_489_856);
        assert!(m.kernel.is_none(), "no kmem files in the fixture");
        assert_eq!(
            (m.cache, m.rss, m.pg_fault, m.inactive_file),
            (4096, 8192, 11, 100)
        );
        assert_eq!(m.total_rss, 81_920);
        assert_eq!(m.total_inactive_file, 4000);
        assert_eq!((m.total_pg_fault, m.total_pg_maj_fault), (12, 1));
        assert_eq!(metrics.memory_oom_control.oom_kill, 2);
        assert_eq!((metrics.pids.current, metrics.pids.limit), (4, 0));
        assert!(metrics.cpu.is_none());
        assert!(v1_oom_killed(&dirs).expect("oom_control"));

        write(&pids_dir, "pids.max", "128\n");
        assert_eq!(v1(&dirs).expect("metrics").pids.limit, 128);

        write(&pids_dir, "pids.current", "four\n");
        assert!(matches!(v1(&dirs), Err(CgroupError::Malformed { .. })));
    }

    #[test]
    fn v1_oom_killed_falls_back_to_under_oom() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dirs = V1Dirs {
            memory: Some(tmp.path().to_owned()),
            ..V1Dirs::default()
        };
        assert!(matches!(
            v1_oom_killed(&dirs),
            Err(CgroupError::NoMemoryController)
        ));
        write(
            tmp.path(),
            "memory.oom_control",
            "oom_kill_disable 0\nunder_oom 0\n",
        );
        assert!(!v1_oom_killed(&dirs).expect("oom_control"));
        write(
            tmp.path(),
            "memory.oom_control",
            "oom_kill_disable 1\nunder_oom 1\n",
        );
        assert!(v1_oom_killed(&dirs).expect("oom_control"));
        assert!(matches!(
            v1_oom_killed(&V1Dirs::default()),
            Err(CgroupError::NoMemoryController)
        ));
    }

    #[test]
    fn v2_files_map_onto_v1_metrics() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        write(
            dir,
            "cpu.stat",
            "usage_usec 2500\nuser_usec 2000\nsystem_usec 500\nnr_periods 10\n\
             nr_throttled 3\nthrottled_usec 40\nnr_bursts 0\nburst_usec 0\n",
        );
        write(dir, "memory.current", "52428800\n");
        write(dir, "memory.max", "max\n");
        write(dir, "memory.peak", "60000000\n");
        write(
            dir,
            "memory.stat",
            "anon 30000000\nfile 20000000\nkernel 1000000\nsock 4096\nfile_mapped 123\n\
             inactive_file 15000000\nactive_file 5000000\npgfault 77\npgmajfault 2\n",
        );
        write(
            dir,
            "memory.events",
            "low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\noom_group_kill 0\n",
        );
        write(dir, "memory.swap.current", "1000\n");
        write(dir, "memory.swap.max", "0\n");
        write(dir, "pids.current", "3\n");
        write(dir, "pids.max", "100\n");

        let metrics = v2(dir).expect("metrics");
        let usage = &metrics.cpu.usage;
        assert_eq!(
            (usage.total, usage.user, usage.kernel),
            (2_500_000, 2_000_000, 500_000)
        );
        assert!(usage.per_cpu.is_empty());
        let throttling = &metrics.cpu.throttling;
        assert_eq!(
            (
                throttling.periods,
                throttling.throttled_periods,
                throttling.throttled_time
            ),
            (10, 3, 40_000)
        );
        let m = &metrics.memory;
        assert_eq!(m.usage.usage, 52_428_800);
        assert_eq!(m.usage.limit, u64::MAX);
        assert_eq!(m.usage.max, 60_000_000);
        assert_eq!(m.usage.failcnt, 5);
        assert_eq!((m.rss, m.total_rss), (30_000_000, 30_000_000));
        assert_eq!((m.cache, m.total_cache), (20_000_000, 20_000_000));
        assert_eq!(m.total_inactive_file, 15_000_000);
        assert_eq!((m.total_pg_fault, m.total_pg_maj_fault), (77, 2));
        assert_eq!(m.total_mapped_file, 123);
        assert_eq!(m.kernel.usage, 1_000_000);
        assert_eq!(m.kernel_tcp.usage, 4096);
        // memory + swap, as v1's memsw; limit unbounded because memory.max is.
        assert_eq!(m.swap.usage, 52_429_800);
        assert_eq!(m.swap.limit, u64::MAX);
        assert_eq!(metrics.memory_oom_control.oom_kill, 1);
        assert_eq!((metrics.pids.current, metrics.pids.limit), (3, 100));
        assert!(v2_oom_killed(dir).expect("memory.events"));

        write(dir, "memory.max", "67108864\n");
        let m = v2(dir).expect("metrics").memory;
        assert_eq!(m.usage.limit, 67_108_864);
        assert_eq!(m.hierarchical_memory_limit, 67_108_864);
        assert_eq!(m.swap.limit, 67_108_864);

        write(
            dir,
            "memory.events",
            "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n",
        );
        assert!(!v2_oom_killed(dir).expect("memory.events"));
    }

    #[test]
    fn v2_without_controllers_has_only_cpu() {
        let tmp = tempfile::tempdir().expect("tempdir");
        write(
            tmp.path(),
            "cpu.stat",
            "usage_usec 1\nuser_usec 1\nsystem_usec 0\n",
        );
        let metrics = v2(tmp.path()).expect("metrics");
        assert_eq!(metrics.cpu.usage.total, 1000);
        assert!(metrics.memory.is_none());
        assert!(metrics.pids.is_none());
        assert!(matches!(
            v2_oom_killed(tmp.path()),
            Err(CgroupError::NoMemoryController)
        ));
    }

    #[test]
    fn removed_cgroup_is_an_error() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let gone = tmp.path().join("gone");
        assert!(matches!(v2(&gone), Err(CgroupError::Removed { .. })));
        let dirs = V1Dirs {
            memory: Some(gone.clone()),
            ..V1Dirs::default()
        };
        assert!(matches!(v1(&dirs), Err(CgroupError::Removed { .. })));
        assert!(matches!(
            v1_oom_killed(&dirs),
            Err(CgroupError::Removed { .. })
        ));
        assert!(matches!(
            v2_oom_killed(&gone),
            Err(CgroupError::Removed { .. })
        ));
    }
}
