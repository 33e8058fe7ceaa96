//! Runtime capability arguments (`runtimeConfig`): what the runtime knows about a pod that
//! plugins declaring the matching capability receive — port mappings, bandwidth, DNS and
//! IP ranges, as the CNI conventions document them.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::sandbox::config::{PodConfig, Protocol};

/// Annotations the kubelet's bandwidth shaping reads (rates as resource quantities).
pub const INGRESS_ANNOTATION: &str = "kubernetes.io/ingress-bandwidth";
/// See [`INGRESS_ANNOTATION`].
pub const EGRESS_ANNOTATION: &str = "kubernetes.io/egress-bandwidth";

/// One `portMappings` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMap {
    /// Port on the host.
    pub host_port: u16,
    /// Port in the pod.
    pub container_port: u16,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    /// Host address to bind; empty means all.
    #[serde(rename = "hostIP", default, skip_serializing_if = "String::is_empty")]
    pub host_ip: String,
}

/// `bandwidth`: rates and bursts in bits per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bandwidth {
    /// Ingress rate (0: unlimited).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ingress_rate: u64,
    /// Ingress burst.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ingress_burst: u64,
    /// Egress rate (0: unlimited).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub egress_rate: u64,
    /// Egress burst.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub egress_burst: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// `dns`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Dns {
    /// Name servers.
    #[serde(default)]
    pub servers: Vec<String>,
    /// Search domains.
    #[serde(default)]
    pub searches: Vec<String>,
    /// resolv.conf options.
    #[serde(default)]
    pub options: Vec<String>,
}

/// Everything a pod can hand its plugins.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RuntimeArgs {
    /// Ports published on the host (those with a host port only).
    #[serde(default)]
    pub port_mappings: Vec<PortMap>,
    /// Traffic shaping from the pod's annotations.
    #[serde(default)]
    pub bandwidth: Option<Bandwidth>,
    /// The pod's DNS config.
    #[serde(default)]
    pub dns: Option<Dns>,
    /// The node's pod CIDRs (`UpdateRuntimeConfig`), for `ipRanges`.
    #[serde(default)]
    pub ip_ranges: Vec<String>,
}

impl RuntimeArgs {
    /// The args of `pod` on a node with pod CIDRs `pod_cidrs`. A bandwidth annotation
    /// that is not a reasonable quantity is the caller's error, named in the message.
    pub fn of_pod(pod: &PodConfig, pod_cidrs: &[String]) -> Result<RuntimeArgs, String> {
        let port_mappings = pod
            .port_mappings
            .iter()
            .filter(|p| p.host_port > 0)
            .map(|p| PortMap {
                host_port: p.host_port,
                container_port: p.container_port,
                protocol: match p.protocol {
                    Protocol::Tcp => "tcp",
                    Protocol::Udp => "udp",
                    Protocol::Sctp => "sctp",
                }
                .into(),
                host_ip: p.host_ip.clone(),
            })
            .collect();
        Ok(RuntimeArgs {
            port_mappings,
            bandwidth: bandwidth(&pod.annotations)?,
            dns: pod.dns.as_ref().map(|d| Dns {
                servers: d.servers.clone(),
                searches: d.searches.clone(),
                options: d.options.clone(),
            }),
            ip_ranges: pod_cidrs.to_vec(),
        })
    }

    /// The `runtimeConfig` for a plugin that declares `capabilities`: only the args it
    /// asked for, and only those that carry something.
    pub fn for_plugin(&self, capabilities: &BTreeSet<String>) -> Map<String, Value> {
        let mut m = Map::new();
        let mut put = |key: &str, v: Value| {
            if capabilities.contains(key) {
                m.insert(key.to_string(), v);
            }
        };
        if !self.port_mappings.is_empty() {
            put("portMappings", serde_json::json!(self.port_mappings));
        }
        if let Some(b) = &self.bandwidth {
            put("bandwidth", serde_json::json!(b));
        }
        if let Some(d) = &self.dns {
            put("dns", serde_json::json!(d));
        }
        if !self.ip_ranges.is_empty() {
            let ranges: Vec<Value> = self
                .ip_ranges
                .iter()
                .map(|c| serde_json::json!([{ "subnet": c }]))
                .collect();
            put("ipRanges", Value::Array(ranges));
        }
        m
    }
}

/// Bandwidth from the pod's annotations; bursts are unlimited as in the kubelet.
fn bandwidth(annotations: &BTreeMap<String, String>) -> Result<Option<Bandwidth>, String> {
    let rate = |key: &str| -> Result<u64, String> {
        match annotations.get(key) {
            None => Ok(0),
            Some(v) => {
                let bits = parse_quantity(v)
                    .ok_or_else(|| format!("annotation {key}: {v:?} is not a quantity"))?;
                // The kubelet's bounds: below 1 kbit or above 1 Pbit is a mistake.
                if !(1_000..=1_000_000_000_000_000).contains(&bits) {
                    return Err(format!(
                        "annotation {key}: {v:?} is outside 1k..1P bits per second"
                    ));
                }
                Ok(bits)
            }
        }
    };
    let ingress = rate(INGRESS_ANNOTATION)?;
    let egress = rate(EGRESS_ANNOTATION)?;
    if ingress == 0 && egress == 0 {
        return Ok(None);
    }
    let burst = |r: u64| if r == 0 { 0 } else { i32::MAX as u64 };
    Ok(Some(Bandwidth {
        ingress_rate: ingress,
        ingress_burst: burst(ingress),
        egress_rate: egress,
        egress_burst: burst(egress),
    }))
}

/// A Kubernetes resource quantity (`10M`, `1.5Gi`, `500k`, `100`) as a whole number,
/// rounded up; `None` when it is not one.
pub fn parse_quantity(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    if num.is_empty() || num.starts_with('.') && num.len() == 1 {
        return None;
    }
    let value: f64 = num.parse().ok()?;
    let mult: f64 = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        _ => return None,
    };
    let v = (value * mult).ceil();
    (v.is_finite() && v >= 0.0 && v < u64::MAX as f64).then_some(v as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::config::{DnsConfig, PortMapping};

    fn caps(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("10M"), Some(10_000_000));
        assert_eq!(parse_quantity("1.5k"), Some(1_500));
        assert_eq!(parse_quantity("1Mi"), Some(1_048_576));
        assert_eq!(parse_quantity("100"), Some(100));
        assert_eq!(parse_quantity("1500m"), Some(2));
        for bad in ["", "M", "10X", "-1", "1..2", "."] {
            assert_eq!(parse_quantity(bad), None, "{bad}");
        }
    }

    #[test]
    fn pod_args_and_what_each_plugin_gets() {
        let mut pod = PodConfig {
            port_mappings: vec![
                PortMapping {
                    protocol: Protocol::Tcp,
                    container_port: 80,
                    host_port: 18080,
                    host_ip: String::new(),
                },
                // no host port: not published
                PortMapping {
                    protocol: Protocol::Udp,
                    container_port: 53,
                    host_port: 0,
                    host_ip: String::new(),
                },
            ],
            dns: Some(DnsConfig {
                servers: vec!["10.0.0.10".into()],
                searches: vec!["svc.local".into()],
                options: vec!["ndots:5".into()],
            }),
            ..Default::default()
        };
        pod.annotations
            .insert(INGRESS_ANNOTATION.into(), "10M".into());
        let args = RuntimeArgs::of_pod(&pod, &["10.244.1.0/24".into()]).expect("args");
        assert_eq!(args.port_mappings.len(), 1);

        let portmap = args.for_plugin(&caps(&["portMappings"]));
        assert_eq!(
            Value::Object(portmap),
            serde_json::json!({"portMappings":[{"hostPort":18080,"containerPort":80,"protocol":"tcp"}]})
        );
        let bw = args.for_plugin(&caps(&["bandwidth"]));
        assert_eq!(bw["bandwidth"]["ingressRate"], 10_000_000);
        assert!(bw["bandwidth"].get("egressRate").is_none());
        let all = args.for_plugin(&caps(&["dns", "ipRanges", "other"]));
        assert_eq!(all["dns"]["searches"][0], "svc.local");
        assert_eq!(all["ipRanges"][0][0]["subnet"], "10.244.1.0/24");
        assert_eq!(all.len(), 2);
        assert!(args.for_plugin(&BTreeSet::new()).is_empty());
    }

    #[test]
    fn unreasonable_bandwidth_names_the_annotation() {
        for v in ["fast", "10", "2E"] {
            let mut pod = PodConfig::default();
            pod.annotations.insert(EGRESS_ANNOTATION.into(), v.into());
            let err = RuntimeArgs::of_pod(&pod, &[]).expect_err(v);
            assert!(err.contains(EGRESS_ANNOTATION), "{err}");
        }
    }
}
