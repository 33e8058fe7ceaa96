//! What a shim prints on `start`: where its Task service listens and which API it speaks.
//!
//! containerd 1.6 and its Go shim print a bare `unix:///…` address and speak
//! `containerd.task.v2.Task`; containerd 2.x shims print a JSON "bootstrap params" object
//! `{"version":3,"address":"unix:///…","protocol":"ttrpc"}` and speak
//! `containerd.task.v3.Task`. The messages are identical, only the service name differs.

use crate::error::Error;

/// Which Task service name to speak to a shim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TaskApiVersion {
    /// `containerd.task.v2.Task` (containerd 1.x, bare-address bootstrap).
    #[default]
    V2,
    /// `containerd.task.v3.Task` (containerd 2.x, JSON bootstrap with `"version":3`).
    V3,
}

impl TaskApiVersion {
    /// The number containerd's JSON bootstrap uses for this version.
    pub fn as_number(self) -> u32 {
        match self {
            TaskApiVersion::V2 => 2,
            TaskApiVersion::V3 => 3,
        }
    }
}

/// The fully qualified ttrpc service name for a Task API version.
pub fn task_service_name(v: TaskApiVersion) -> &'static str {
    match v {
        TaskApiVersion::V2 => "containerd.task.v2.Task",
        TaskApiVersion::V3 => "containerd.task.v3.Task",
    }
}

/// A parsed `start` output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bootstrap {
    /// A ttrpc address, normalised to carry a scheme (`unix:///run/…`).
    pub address: String,
    /// Always `"ttrpc"`: grpc shims are refused at parse time.
    pub protocol: String,
    pub version: TaskApiVersion,
}

impl Bootstrap {
    /// containerd's JSON form, suitable for a `bootstrap.json` kept beside the bundle so
    /// that a restarted daemon reconnects with the same API version.
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "version": self.version.as_number(),
            "address": self.address,
            "protocol": self.protocol,
        })
        .to_string()
    }
}

#[derive(serde::Deserialize)]
struct JsonBootstrap {
    version: u32,
    address: String,
    #[serde(default)]
    protocol: Option<String>,
}

/// Parses a shim's `start` stdout (or a stored `address` / `bootstrap.json` file).
pub fn parse_bootstrap(stdout: &[u8]) -> Result<Bootstrap, Error> {
    let text = std::str::from_utf8(stdout)
        .map_err(|_| Error::Malformed("shim bootstrap output is not UTF-8".into()))?
        .trim();
    if text.is_empty() {
        return Err(Error::Malformed("shim printed no bootstrap address".into()));
    }
    if text.starts_with('{') {
        return parse_json(text);
    }
    let address = normalize_address(text).ok_or_else(|| {
        Error::Malformed(format!("shim bootstrap output is not an address: {text:?}"))
    })?;
    Ok(Bootstrap {
        address,
        protocol: "ttrpc".into(),
        version: TaskApiVersion::V2,
    })
}

fn parse_json(text: &str) -> Result<Bootstrap, Error> {
    let parsed: JsonBootstrap = serde_json::from_str(text)
        .map_err(|e| Error::Malformed(format!("shim bootstrap JSON {text:?}: {e}")))?;
    let protocol = parsed.protocol.unwrap_or_else(|| "ttrpc".into());
    if protocol != "ttrpc" {
        return Err(Error::Unsupported(format!(
            "shim bootstrap asks for protocol {protocol:?} at {}; only ttrpc shims are supported",
            parsed.address
        )));
    }
    let version = match parsed.version {
        2 => TaskApiVersion::V2,
        3 => TaskApiVersion::V3,
        v => {
            return Err(Error::Unsupported(format!(
                "shim bootstrap version {v} is not supported (2 or 3)"
            )))
        }
    };
    let address = normalize_address(parsed.address.trim()).ok_or_else(|| {
        Error::Malformed(format!(
            "shim bootstrap address {:?} is not an address",
            parsed.address
        ))
    })?;
    Ok(Bootstrap {
        address,
        protocol,
        version,
    })
}

/// Accepts `scheme://rest` as is and an absolute path as a unix socket; rejects the rest.
fn normalize_address(text: &str) -> Option<String> {
    if text.contains(char::is_whitespace) {
        return None;
    }
    if let Some((scheme, rest)) = text.split_once("://") {
        let scheme_ok = !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '-' || c == '.');
        return (scheme_ok && !rest.is_empty()).then(|| text.to_string());
    }
    text.starts_with('/').then(|| format!("unix://{text}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Code;

    #[test]
    fn bare_address_is_v2() {
        let b = parse_bootstrap(b"unix:///run/containerd/s/abc\n").expect("parse");
        assert_eq!(
            b,
            Bootstrap {
                address: "unix:///run/containerd/s/abc".into(),
                protocol: "ttrpc".into(),
                version: TaskApiVersion::V2
            }
        );
        let b = parse_bootstrap(b"  /run/crius/s/x  ").expect("parse");
        assert_eq!(b.address, "unix:///run/crius/s/x");
        assert_eq!(b.version, TaskApiVersion::V2);
    }

    #[test]
    fn json_versions() {
        let b = parse_bootstrap(br#"{"version":3,"address":"unix:///s/a","protocol":"ttrpc"}"#)
            .expect("parse");
        assert_eq!(b.version, TaskApiVersion::V3);
        assert_eq!(b.address, "unix:///s/a");
        assert_eq!(b.protocol, "ttrpc");
        let b = parse_bootstrap(
            b"{\"version\":2,\"address\":\"unix:///s/b\",\"protocol\":\"ttrpc\"}\n\n",
        )
        .expect("parse");
        assert_eq!(b.version, TaskApiVersion::V2);
        // Round trip through our own bootstrap.json form.
        assert_eq!(parse_bootstrap(b.to_json().as_bytes()).expect("parse"), b);
    }

    #[test]
    fn grpc_is_refused_clearly() {
        let e = parse_bootstrap(br#"{"version":3,"address":"unix:///s/a","protocol":"grpc"}"#)
            .expect_err("grpc");
        assert_eq!(e.code(), Code::Unimplemented);
        assert!(e.to_string().contains("grpc"), "{e}");
    }

    #[test]
    fn garbage_is_refused() {
        for bad in [
            &b""[..],
            b"   \n",
            b"hello world",
            b"relative/path",
            b"{\"version\":9,\"address\":\"unix:///a\"}",
            b"{not json",
            b"\xff\xfe",
            b"time=\"2024\" level=fatal msg=\"boom\"",
        ] {
            assert!(
                parse_bootstrap(bad).is_err(),
                "{:?} accepted",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn service_names() {
        assert_eq!(
            task_service_name(TaskApiVersion::V2),
            "containerd.task.v2.Task"
        );
        assert_eq!(
            task_service_name(TaskApiVersion::V3),
            "containerd.task.v3.Task"
        );
    }
}
