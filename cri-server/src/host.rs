//! Facts about the host that decide what a spec may ask for.

use crate::spec::HostFacts;

/// CAP_SYS_RESOURCE, needed to lower `oom_score_adj` below the daemon's own.
const CAP_SYS_RESOURCE: u32 = 24;

/// Reads the host's facts once at start-up.
pub fn detect() -> HostFacts {
    let own_oom = std::fs::read_to_string("/proc/self/oom_score_adj")
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .unwrap_or(0);
    let can_lower = effective_caps().is_some_and(|c| c & (1u64 << CAP_SYS_RESOURCE) != 0);
    let min_oom_score_adj = if can_lower { -1000 } else { own_oom };
    if !can_lower {
        tracing::info!(
            min_oom_score_adj,
            "no CAP_SYS_RESOURCE: oom_score_adj values below the daemon's own are clamped to it"
        );
    }
    HostFacts {
        apparmor_enabled: std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
            .is_ok_and(|s| s.trim() == "Y"),
        min_oom_score_adj,
        cgroup_v2: std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists(),
        seccomp_enabled: std::path::Path::new("/proc/sys/kernel/seccomp/actions_avail").exists(),
        capabilities: bounding_caps().map(|bits| {
            crate::spec::caps::ALL
                .iter()
                .enumerate()
                .filter(|(i, _)| bits & (1u64 << i) != 0)
                .map(|(_, name)| name.to_string())
                .collect()
        }),
        swap_accounting: std::path::Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes")
            .exists()
            || std::path::Path::new("/sys/fs/cgroup/memory.swap.max").exists(),
    }
}

fn effective_caps() -> Option<u64> {
    status_caps("CapEff:")
}

fn bounding_caps() -> Option<u64> {
    status_caps("CapBnd:")
}

fn status_caps(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    u64::from_str_radix(line.trim_start_matches(key).trim(), 16).ok()
}
