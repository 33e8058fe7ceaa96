//! What plugins print: a result (`ips`, `interfaces`, …) on success, an error object
//! (`code`, `msg`, `details`) on failure.
//!
//! Results are kept as JSON values: a chain passes each one verbatim as the next plugin's
//! `prevResult`, and DEL gets the cached one back. The daemon reads only the pod's IPs.

use std::net::IpAddr;

use serde::Deserialize;
use serde_json::Value;

/// A plugin's error object (spec: "Error").
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct PluginError {
    /// Error code (1–99 are the spec's, 100+ the plugin's).
    #[serde(default)]
    pub code: u32,
    /// Short message.
    #[serde(default)]
    pub msg: String,
    /// Longer details.
    #[serde(default)]
    pub details: String,
}

impl PluginError {
    /// The error a plugin printed, or a stand-in made of its stderr and exit status when
    /// it printed none (a crash, a shell script).
    pub fn from_output(stdout: &[u8], stderr: &[u8], status: &str) -> PluginError {
        if let Ok(e) = serde_json::from_slice::<PluginError>(stdout) {
            if !e.msg.is_empty() || e.code != 0 {
                return e;
            }
        }
        let text = |b: &[u8]| String::from_utf8_lossy(b).trim().to_string();
        let mut msg = text(stderr);
        if msg.is_empty() {
            msg = text(stdout);
        }
        if msg.is_empty() {
            msg = status.to_string();
        }
        PluginError {
            code: 0,
            msg,
            details: String::new(),
        }
    }
}

impl std::fmt::Display for PluginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.code != 0 {
            write!(f, "(code {}) ", self.code)?;
        }
        f.write_str(&self.msg)?;
        if !self.details.is_empty() {
            write!(f, ": {}", self.details)?;
        }
        Ok(())
    }
}

/// The pod's IPs in a result: those on `ifname` inside the pod's namespace, or with no
/// interface named. IPv4 first (the pod's primary IP, as the kubelet expects), each family
/// in the plugin's order.
pub fn pod_ips(result: &Value, ifname: &str) -> Vec<IpAddr> {
    let interfaces = result
        .get("interfaces")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let on_pod_if = |ip: &Value| match ip.get("interface").and_then(Value::as_u64) {
        None => true,
        Some(i) => usize::try_from(i)
            .ok()
            .and_then(|i| interfaces.get(i))
            .map(|intf| {
                intf.get("name").and_then(Value::as_str) == Some(ifname)
                    && intf
                        .get("sandbox")
                        .and_then(Value::as_str)
                        .is_some_and(|s| !s.is_empty())
            })
            .unwrap_or(false),
    };
    let mut ips: Vec<IpAddr> = result
        .get("ips")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|ip| on_pod_if(ip))
        .filter_map(|ip| ip.get("address").and_then(Value::as_str))
        .filter_map(|cidr| cidr.split('/').next()?.parse::<IpAddr>().ok())
        .collect();
    // Stable: keeps each family's order.
    ips.sort_by_key(|ip| ip.is_ipv6());
    ips
}

/// Checks that a plugin's stdout is a result object, and returns it.
pub fn parse_result(stdout: &[u8]) -> Result<Value, String> {
    match serde_json::from_slice::<Value>(stdout) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err("result is not a JSON object".into()),
        Err(e) => Err(format!(
            "result is not JSON ({e}): {:?}",
            String::from_utf8_lossy(&stdout[..stdout.len().min(200)])
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bridge_result_gives_the_eth0_ips_v4_first() {
        let r: Value = serde_json::from_str(
            r#"{"cniVersion":"1.0.0",
                "interfaces":[{"name":"cni0","mac":"aa"},{"name":"veth1","mac":"bb"},
                              {"name":"eth0","mac":"cc","sandbox":"/run/netns/x"}],
                "ips":[{"address":"fd00::5/64","interface":2},
                       {"address":"10.1.0.5/24","gateway":"10.1.0.1","interface":2},
                       {"address":"10.9.9.9/24","interface":0}]}"#,
        )
        .expect("json");
        let ips = pod_ips(&r, "eth0");
        assert_eq!(
            ips,
            vec![
                "10.1.0.5".parse::<IpAddr>().expect("ip"),
                "fd00::5".parse().expect("ip")
            ]
        );
        assert!(pod_ips(&r, "eth1").is_empty());
    }

    #[test]
    fn ips_without_interface_count_and_loopback_results_do_not() {
        let r: Value =
            serde_json::from_str(r#"{"ips":[{"address":"10.2.0.7/16"}]}"#).expect("json");
        assert_eq!(pod_ips(&r, "eth0").len(), 1);
        let lo: Value = serde_json::from_str(
            r#"{"interfaces":[{"name":"lo","sandbox":"/x"}],
                "ips":[{"address":"127.0.0.1/8","interface":0}]}"#,
        )
        .expect("json");
        assert!(pod_ips(&lo, "eth0").is_empty());
    }

    #[test]
    fn errors_from_json_or_stderr() {
        let e = PluginError::from_output(
            br#"{"cniVersion":"1.0.0","code":11,"msg":"failed to allocate","details":"range full"}"#,
            b"",
            "exit status: 1",
        );
        assert_eq!(e.to_string(), "(code 11) failed to allocate: range full");
        let e = PluginError::from_output(b"", b"boom\n", "exit status: 2");
        assert_eq!(e.to_string(), "boom");
        let e = PluginError::from_output(b"", b"", "exit status: 2");
        assert_eq!(e.to_string(), "exit status: 2");
    }

    #[test]
    fn results_must_be_objects() {
        assert!(parse_result(b"{\"ips\":[]}").is_ok());
        assert!(parse_result(b"[]").is_err());
        assert!(parse_result(b"garbage").is_err());
    }
}
