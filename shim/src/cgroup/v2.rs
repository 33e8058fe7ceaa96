//! cgroup v2 metrics, as containerd/cgroups cgroup2 fills them.

use super::*;

pub(super) fn v2_metrics(dir: &Path) -> Result<v2m::Metrics, CgroupError> {
    if !dir.is_dir() {
        return Err(CgroupError::Gone {
            path: dir.to_path_buf(),
        });
    }
    let num = |name: &str| read_u64(&dir.join(name), u64::MAX).unwrap_or(0);
    let mut m = v2m::Metrics::new();

    let mut pids = v2m::PidsStat::new();
    pids.current = num("pids.current");
    pids.limit = num("pids.max");
    m.pids = MessageField::some(pids);

    let mut cpu = v2m::CPUStat::new();
    if let Some(kv) = read_kv(&dir.join("cpu.stat")) {
        let g = |k: &str| kv.get(k).copied().unwrap_or(0);
        cpu.usage_usec = g("usage_usec");
        cpu.user_usec = g("user_usec");
        cpu.system_usec = g("system_usec");
        cpu.nr_periods = g("nr_periods");
        cpu.nr_throttled = g("nr_throttled");
        cpu.throttled_usec = g("throttled_usec");
        cpu.nr_bursts = g("nr_bursts");
        cpu.burst_usec = g("burst_usec");
    }
    cpu.psi = psi(&dir.join("cpu.pressure"));
    m.cpu = MessageField::some(cpu);

    let mut mem = v2m::MemoryStat::new();
    if let Some(kv) = read_kv(&dir.join("memory.stat")) {
        let g = |k: &str| kv.get(k).copied().unwrap_or(0);
        mem.anon = g("anon");
        mem.file = g("file");
        mem.kernel_stack = g("kernel_stack");
        mem.slab = g("slab");
        mem.sock = g("sock");
        mem.shmem = g("shmem");
        mem.file_mapped = g("file_mapped");
        mem.file_dirty = g("file_dirty");
        mem.file_writeback = g("file_writeback");
        mem.anon_thp = g("anon_thp");
        mem.inactive_anon = g("inactive_anon");
        mem.active_anon = g("active_anon");
        mem.inactive_file = g("inactive_file");
        mem.active_file = g("active_file");
        mem.unevictable = g("unevictable");
        mem.slab_reclaimable = g("slab_reclaimable");
        mem.slab_unreclaimable = g("slab_unreclaimable");
        mem.pgfault = g("pgfault");
        mem.pgmajfault = g("pgmajfault");
        mem.workingset_refault = g("workingset_refault");
        mem.workingset_activate = g("workingset_activate");
        mem.workingset_nodereclaim = g("workingset_nodereclaim");
        mem.pgrefill = g("pgrefill");
        mem.pgscan = g("pgscan");
        mem.pgsteal = g("pgsteal");
        mem.pgactivate = g("pgactivate");
        mem.pgdeactivate = g("pgdeactivate");
        mem.pglazyfree = g("pglazyfree");
        mem.pglazyfreed = g("pglazyfreed");
        mem.thp_fault_alloc = g("thp_fault_alloc");
        mem.thp_collapse_alloc = g("thp_collapse_alloc");
    }
    mem.usage = num("memory.current");
    mem.usage_limit = num("memory.max");
    mem.swap_usage = num("memory.swap.current");
    mem.swap_limit = num("memory.swap.max");
    mem.max_usage = num("memory.peak");
    mem.swap_max_usage = num("memory.swap.peak");
    mem.psi = psi(&dir.join("memory.pressure"));
    m.memory = MessageField::some(mem);

    if let Some(kv) = read_kv(&dir.join("memory.events")).filter(|kv| !kv.is_empty()) {
        let g = |k: &str| kv.get(k).copied().unwrap_or(0);
        let mut ev = v2m::MemoryEvents::new();
        ev.low = g("low");
        ev.high = g("high");
        ev.max = g("max");
        ev.oom = g("oom");
        ev.oom_kill = g("oom_kill");
        ev.oom_group_kill = g("oom_group_kill");
        m.memory_events = MessageField::some(ev);
    }

    let mut io = v2m::IOStat::new();
    io.usage = read_opt(&dir.join("io.stat"))
        .map(|t| parse_io_stat(&t))
        .unwrap_or_default();
    io.psi = psi(&dir.join("io.pressure"));
    m.io = MessageField::some(io);
    Ok(m)
}

/// io.stat: `maj:min rbytes=.. wbytes=.. rios=.. wios=.. dbytes=.. dios=..` lines.
pub(super) fn parse_io_stat(text: &str) -> Vec<v2m::IOEntry> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let Some((major, minor)) = fields.next().and_then(|d| d.split_once(':')) else {
            continue;
        };
        let (Ok(major), Ok(minor)) = (major.parse(), minor.parse()) else {
            continue;
        };
        let mut e = v2m::IOEntry::new();
        e.major = major;
        e.minor = minor;
        for kv in fields {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            let v = v.parse().unwrap_or(0);
            match k {
                "rbytes" => e.rbytes = v,
                "wbytes" => e.wbytes = v,
                "rios" => e.rios = v,
                "wios" => e.wios = v,
                _ => {}
            }
        }
        out.push(e);
    }
    out
}

/// A PSI file (`some avg10=.. avg60=.. avg300=.. total=..` and `full ...`); unset if missing.
pub(super) fn psi(path: &Path) -> MessageField<v2m::PSIStats> {
    let Some(text) = read_opt(path) else {
        return MessageField::none();
    };
    let mut stats = v2m::PSIStats::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let kind = fields.next();
        let mut data = v2m::PSIData::new();
        for kv in fields {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            match k {
                "avg10" => data.avg10 = v.parse().unwrap_or(0.0),
                "avg60" => data.avg60 = v.parse().unwrap_or(0.0),
                "avg300" => data.avg300 = v.parse().unwrap_or(0.0),
                "total" => data.total = v.parse().unwrap_or(0),
                _ => {}
            }
        }
        match kind {
            Some("some") => stats.some = MessageField::some(data),
            Some("full") => stats.full = MessageField::some(data),
            _ => {}
        }
    }
    MessageField::some(stats)
}
