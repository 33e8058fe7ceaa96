//! cgroup v1 metrics, as containerd/cgroups v1 fills them.

use super::*;

pub(super) fn v1_metrics(dirs: &BTreeMap<String, PathBuf>) -> Result<v1m::Metrics, CgroupError> {
    if !dirs.values().any(|d| d.is_dir()) {
        return Err(CgroupError::Gone {
            path: v1_any_dir(dirs),
        });
    }
    let present = |c: &str| dirs.get(c).filter(|d| d.is_dir());
    let mut m = v1m::Metrics::new();

    if let Some(dir) = present("pids") {
        let mut p = v1m::PidsStat::new();
        p.current = read_u64(&dir.join("pids.current"), 0).unwrap_or(0);
        // containerd leaves "max" as 0.
        p.limit = read_u64(&dir.join("pids.max"), 0).unwrap_or(0);
        m.pids = MessageField::some(p);
    }

    let cpuacct = present("cpuacct");
    let cpu = present("cpu");
    if cpuacct.is_some() || cpu.is_some() {
        let mut stat = v1m::CPUStat::new();
        let mut usage = v1m::CPUUsage::new();
        if let Some(dir) = cpuacct {
            usage.total = read_u64(&dir.join("cpuacct.usage"), 0).unwrap_or(0);
            usage.per_cpu = read_opt(&dir.join("cpuacct.usage_percpu"))
                .map(|t| {
                    t.split_whitespace()
                        .filter_map(|v| v.parse().ok())
                        .collect()
                })
                .unwrap_or_default();
            if let Some(kv) = read_kv(&dir.join("cpuacct.stat")) {
                let ticks = u128::from(clock_ticks());
                let ns = |v: u64| {
                    u64::try_from(u128::from(v) * 1_000_000_000 / ticks).unwrap_or(u64::MAX)
                };
                usage.user = kv.get("user").copied().map(ns).unwrap_or(0);
                usage.kernel = kv.get("system").copied().map(ns).unwrap_or(0);
            }
        }
        stat.usage = MessageField::some(usage);
        let mut thr = v1m::Throttle::new();
        if let Some(kv) = cpu.and_then(|d| read_kv(&d.join("cpu.stat"))) {
            thr.periods = kv.get("nr_periods").copied().unwrap_or(0);
            thr.throttled_periods = kv.get("nr_throttled").copied().unwrap_or(0);
            thr.throttled_time = kv.get("throttled_time").copied().unwrap_or(0);
        }
        stat.throttling = MessageField::some(thr);
        m.cpu = MessageField::some(stat);
    }

    if let Some(dir) = present("memory") {
        m.memory = MessageField::some(v1_memory(dir));
        if let Some(kv) = read_kv(&dir.join("memory.oom_control")) {
            let mut oc = v1m::MemoryOomControl::new();
            oc.oom_kill_disable = kv.get("oom_kill_disable").copied().unwrap_or(0);
            oc.under_oom = kv.get("under_oom").copied().unwrap_or(0);
            oc.oom_kill = kv.get("oom_kill").copied().unwrap_or(0);
            m.memory_oom_control = MessageField::some(oc);
        }
    }

    if let Some(dir) = present("blkio") {
        m.blkio = MessageField::some(v1_blkio(dir));
    }
    Ok(m)
}

pub(super) fn v1_memory(dir: &Path) -> v1m::MemoryStat {
    let mut s = v1m::MemoryStat::new();
    if let Some(kv) = read_kv(&dir.join("memory.stat")) {
        let g = |k: &str| kv.get(k).copied().unwrap_or(0);
        s.cache = g("cache");
        s.rss = g("rss");
        s.rss_huge = g("rss_huge");
        s.mapped_file = g("mapped_file");
        s.dirty = g("dirty");
        s.writeback = g("writeback");
        s.pg_pg_in = g("pgpgin");
        s.pg_pg_out = g("pgpgout");
        s.pg_fault = g("pgfault");
        s.pg_maj_fault = g("pgmajfault");
        s.inactive_anon = g("inactive_anon");
        s.active_anon = g("active_anon");
        s.inactive_file = g("inactive_file");
        s.active_file = g("active_file");
        s.unevictable = g("unevictable");
        s.hierarchical_memory_limit = g("hierarchical_memory_limit");
        s.hierarchical_swap_limit = g("hierarchical_memsw_limit");
        s.total_cache = g("total_cache");
        s.total_rss = g("total_rss");
        s.total_rss_huge = g("total_rss_huge");
        s.total_mapped_file = g("total_mapped_file");
        s.total_dirty = g("total_dirty");
        s.total_writeback = g("total_writeback");
        s.total_pg_pg_in = g("total_pgpgin");
        s.total_pg_pg_out = g("total_pgpgout");
        s.total_pg_fault = g("total_pgfault");
        s.total_pg_maj_fault = g("total_pgmajfault");
        s.total_inactive_anon = g("total_inactive_anon");
        s.total_active_anon = g("total_active_anon");
        s.total_inactive_file = g("total_inactive_file");
        s.total_active_file = g("total_active_file");
        s.total_unevictable = g("total_unevictable");
    }
    let entry = |prefix: &str| {
        let mut e = v1m::MemoryEntry::new();
        let f = |name: &str| read_u64(&dir.join(format!("{prefix}.{name}")), 0).unwrap_or(0);
        e.usage = f("usage_in_bytes");
        e.max = f("max_usage_in_bytes");
        e.failcnt = f("failcnt");
        e.limit = f("limit_in_bytes");
        MessageField::some(e)
    };
    s.usage = entry("memory");
    s.swap = entry("memory.memsw");
    s.kernel = entry("memory.kmem");
    s.kernel_tcp = entry("memory.kmem.tcp");
    s
}

pub(super) fn v1_blkio(dir: &Path) -> v1m::BlkIOStat {
    let mut s = v1m::BlkIOStat::new();
    // As containerd: the CFQ (or BFQ) recursive files when present, then the throttle files,
    // appended to the same lists.
    if dir.join("blkio.io_serviced_recursive").exists() {
        v1_blkio_file(dir, "blkio.sectors_recursive", &mut s.sectors_recursive);
        v1_blkio_file(
            dir,
            "blkio.io_service_bytes_recursive",
            &mut s.io_service_bytes_recursive,
        );
        v1_blkio_file(
            dir,
            "blkio.io_serviced_recursive",
            &mut s.io_serviced_recursive,
        );
        v1_blkio_file(dir, "blkio.io_queued_recursive", &mut s.io_queued_recursive);
        v1_blkio_file(
            dir,
            "blkio.io_service_time_recursive",
            &mut s.io_service_time_recursive,
        );
        v1_blkio_file(
            dir,
            "blkio.io_wait_time_recursive",
            &mut s.io_wait_time_recursive,
        );
        v1_blkio_file(dir, "blkio.io_merged_recursive", &mut s.io_merged_recursive);
        v1_blkio_file(dir, "blkio.time_recursive", &mut s.io_time_recursive);
    }
    v1_blkio_file(
        dir,
        "blkio.throttle.io_service_bytes",
        &mut s.io_service_bytes_recursive,
    );
    v1_blkio_file(
        dir,
        "blkio.throttle.io_serviced",
        &mut s.io_serviced_recursive,
    );
    s
}

/// Lines `maj:min [op] value`, and a `Total n` line that is skipped.
pub(super) fn v1_blkio_file(dir: &Path, name: &str, out: &mut Vec<v1m::BlkIOEntry>) {
    let Some(text) = read_opt(&dir.join(name)) else {
        return;
    };
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (dev, op, value) = match fields.as_slice() {
            [dev, op, value] => (*dev, *op, *value),
            [dev, value] if *dev != "Total" => (*dev, "", *value),
            _ => continue,
        };
        let Some((major, minor)) = dev.split_once(':') else {
            continue;
        };
        let (Ok(major), Ok(minor), Ok(value)) = (major.parse(), minor.parse(), value.parse())
        else {
            continue;
        };
        let mut e = v1m::BlkIOEntry::new();
        e.op = op.to_string();
        e.major = major;
        e.minor = minor;
        e.value = value;
        out.push(e);
    }
}
