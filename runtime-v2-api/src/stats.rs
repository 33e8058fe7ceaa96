//! Decoding the `Stats` RPC's `Any`: shims send containerd's cgroup v1 or v2 metrics
//! message. We reduce them to the figures the CRI reports, computed as the kubelet does.

use containerd_shim_protos::cgroups::metrics::Metrics as V1Metrics;
use containerd_shim_protos::cgroups_v2::metrics::Metrics as V2Metrics;
use protobuf::well_known_types::any::Any;
use protobuf::Message;

use crate::convert::type_name;
use crate::error::Error;
use crate::types::Stats;

/// Protobuf full name of cgroup v1 metrics (`github.com/containerd/cgroups/stats/v1`).
pub const CGROUPS_V1_METRICS: &str = "io.containerd.cgroups.v1.Metrics";
/// Protobuf full name of cgroup v2 metrics (`github.com/containerd/cgroups/cgroup2/stats`).
pub const CGROUPS_V2_METRICS: &str = "io.containerd.cgroups.v2.Metrics";

/// Decodes the metrics `Any`; an unknown type is an `Unimplemented` error naming it.
pub(crate) fn decode_stats(any: &Any) -> Result<Stats, Error> {
    let malformed = |e: protobuf::Error| {
        Error::Malformed(format!("shim stats {}: cannot decode: {e}", any.type_url))
    };
    let mut stats = match type_name(&any.type_url) {
        CGROUPS_V1_METRICS => from_v1(&V1Metrics::parse_from_bytes(&any.value).map_err(malformed)?),
        CGROUPS_V2_METRICS => from_v2(&V2Metrics::parse_from_bytes(&any.value).map_err(malformed)?),
        other => {
            return Err(Error::Unsupported(format!(
                "shim stats of type {other:?} are not supported (cgroup v1 or v2 metrics expected)"
            )))
        }
    };
    stats.raw_type_url = any.type_url.clone();
    Ok(stats)
}

fn from_v1(m: &V1Metrics) -> Stats {
    let (usage, limit, inactive) = m
        .memory
        .as_ref()
        .map(|mem| {
            let entry = mem.usage.as_ref();
            (
                entry.map_or(0, |u| u.usage),
                entry.map_or(0, |u| u.limit),
                mem.total_inactive_file,
            )
        })
        .unwrap_or_default();
    Stats {
        cpu_usage_ns: m
            .cpu
            .as_ref()
            .and_then(|c| c.usage.as_ref())
            .map_or(0, |u| u.total),
        memory_usage_bytes: usage,
        memory_working_set_bytes: working_set(usage, inactive),
        memory_limit_bytes: limit,
        pids: m.pids.as_ref().map_or(0, |p| p.current),
        oom_kills: m.memory_oom_control.as_ref().map(|o| o.oom_kill),
        raw_type_url: String::new(),
    }
}

fn from_v2(m: &V2Metrics) -> Stats {
    let (usage, limit, inactive) = m
        .memory
        .as_ref()
        .map(|mem| (mem.usage, mem.usage_limit, mem.inactive_file))
        .unwrap_or_default();
    Stats {
        cpu_usage_ns: m
            .cpu
            .as_ref()
            .map_or(0, |c| c.usage_usec.saturating_mul(1000)),
        memory_usage_bytes: usage,
        memory_working_set_bytes: working_set(usage, inactive),
        memory_limit_bytes: limit,
        pids: m.pids.as_ref().map_or(0, |p| p.current),
        oom_kills: m.memory_events.as_ref().map(|e| e.oom_kill),
        raw_type_url: String::new(),
    }
}

/// The kubelet's working set: usage minus inactive file cache, never below zero.
fn working_set(usage: u64, inactive_file: u64) -> u64 {
    usage.saturating_sub(inactive_file)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::convert::any;
    use containerd_shim_protos::cgroups::metrics as v1;
    use containerd_shim_protos::cgroups_v2::metrics as v2;

    /// A v1 metrics `Any` with known figures; also used by the client tests.
    pub(crate) fn v1_any() -> Any {
        let mut m = v1::Metrics::new();
        let mut usage = v1::CPUUsage::new();
        usage.total = 5_000;
        let mut cpu = v1::CPUStat::new();
        cpu.usage = Some(usage).into();
        m.cpu = Some(cpu).into();
        let mut mem = v1::MemoryStat::new();
        let mut entry = v1::MemoryEntry::new();
        entry.usage = 10_000;
        entry.limit = 1 << 30;
        mem.usage = Some(entry).into();
        mem.total_inactive_file = 3_000;
        m.memory = Some(mem).into();
        let mut pids = v1::PidsStat::new();
        pids.current = 4;
        m.pids = Some(pids).into();
        let mut oom = v1::MemoryOomControl::new();
        oom.oom_kill = 1;
        m.memory_oom_control = Some(oom).into();
        any(CGROUPS_V1_METRICS, m.write_to_bytes().unwrap_or_default())
    }

    #[test]
    fn v1_figures() {
        let s = decode_stats(&v1_any()).expect("decode");
        assert_eq!(
            s,
            Stats {
                cpu_usage_ns: 5_000,
                memory_usage_bytes: 10_000,
                memory_working_set_bytes: 7_000,
                memory_limit_bytes: 1 << 30,
                pids: 4,
                oom_kills: Some(1),
                raw_type_url: CGROUPS_V1_METRICS.into(),
            }
        );
    }

    #[test]
    fn v2_figures_with_prefixed_url() {
        let mut m = v2::Metrics::new();
        let mut cpu = v2::CPUStat::new();
        cpu.usage_usec = 7;
        m.cpu = Some(cpu).into();
        let mut mem = v2::MemoryStat::new();
        mem.usage = 100;
        mem.usage_limit = 1000;
        mem.inactive_file = 150; // more than usage: working set clamps to 0
        m.memory = Some(mem).into();
        let url = format!("types.containerd.io/{CGROUPS_V2_METRICS}");
        let s = decode_stats(&any(&url, m.write_to_bytes().expect("encode"))).expect("decode");
        assert_eq!(s.cpu_usage_ns, 7_000);
        assert_eq!(s.memory_usage_bytes, 100);
        assert_eq!(s.memory_working_set_bytes, 0);
        assert_eq!(s.memory_limit_bytes, 1000);
        assert_eq!(s.oom_kills, None);
        assert_eq!(s.raw_type_url, url);
    }

    #[test]
    fn unknown_and_corrupt() {
        let e = decode_stats(&any("windows.Stats", vec![])).expect_err("unknown");
        assert_eq!(e.code(), crate::Code::Unimplemented);
        let e = decode_stats(&any(CGROUPS_V1_METRICS, vec![0xff, 0xff])).expect_err("corrupt");
        assert_eq!(e.code(), crate::Code::Internal);
    }
}
