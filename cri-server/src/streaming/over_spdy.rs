//! Kubernetes' stream protocols over SPDY/3.1, as crictl and the kubelet speak them.
//!
//! Remote command (`v4.channel.k8s.io`, `v3`, `v2`, `channel.k8s.io`): the client opens
//! one stream per purpose, named by its `streamType` header (`error`, `stdin`, `stdout`,
//! `stderr`, `resize`); once every stream the request implies has arrived the command runs,
//! and its outcome goes to the error stream (a `Status` JSON from v4 on, text before).
//!
//! Port-forward (`portforward.k8s.io`): for each connection the client opens an `error`
//! and a `data` stream with the same `port` and `requestID` headers; the server connects
//! to that port inside the pod and copies, reporting a failure on the error stream.

use std::collections::HashMap;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use super::portforward::{self, Target};
use super::remotecommand::{self, ClientStreams, Outcome};
use super::spdy::{Headers, Session, Stream};

/// Remote command protocols, best first.
pub const REMOTECOMMAND: [&str; 4] = [
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];
/// The port-forward protocol.
pub const PORTFORWARD: &str = "portforward.k8s.io";

/// How long the client has to open every stream a command needs.
const STREAM_CREATION: Duration = Duration::from_secs(30);

/// The first of the client's protocols (its order) that is in `ours`.
pub fn negotiate(offered: &[String], ours: &[&'static str]) -> Option<&'static str> {
    offered
        .iter()
        .find_map(|o| ours.iter().copied().find(|p| p == o))
}

/// Which streams a command session expects.
#[derive(Debug, Clone, Copy)]
pub struct Expect {
    /// stdin.
    pub stdin: bool,
    /// stdout.
    pub stdout: bool,
    /// stderr (never with a terminal).
    pub stderr: bool,
    /// A terminal (v3+ then also has a resize stream).
    pub tty: bool,
}

/// Collects the streams of a command session, runs `run` with them, and reports its
/// outcome on the error stream in `protocol`'s format.
pub async fn serve_command<F, Fut>(session: Session, protocol: &'static str, expect: Expect, run: F)
where
    F: FnOnce(ClientStreams) -> Fut,
    Fut: std::future::Future<Output = Outcome>,
{
    let resize_expected =
        expect.tty && matches!(protocol, "v4.channel.k8s.io" | "v3.channel.k8s.io");
    let mut error: Option<Stream> = None;
    let mut client = ClientStreams {
        tty: expect.tty,
        ..Default::default()
    };
    let mut got_resize = false;
    let complete = |e: &Option<Stream>, c: &ClientStreams, r: bool| {
        e.is_some()
            && (!expect.stdin || c.stdin.is_some())
            && (!expect.stdout || c.stdout.is_some())
            && (!expect.stderr || expect.tty || c.stderr.is_some())
            && (!resize_expected || r)
    };
    let collect = async {
        while !complete(&error, &client, got_resize) {
            let Some(stream) = session.accept().await else {
                return false;
            };
            let kind = stream.headers().get("streamtype").unwrap_or("").to_string();
            if stream.reply(Headers::new(), false).is_err() {
                return false;
            }
            match kind.as_str() {
                "error" => error = Some(stream),
                "stdin" => {
                    let (r, _w) = stream.into_split();
                    client.stdin = Some(Box::new(r));
                }
                "stdout" => {
                    let (_r, w) = stream.into_split();
                    client.stdout = Some(Box::new(w));
                }
                "stderr" => {
                    let (_r, w) = stream.into_split();
                    client.stderr = Some(Box::new(w));
                }
                "resize" => {
                    let (r, _w) = stream.into_split();
                    client.resize = Some(remotecommand::resize_reader(Box::new(r)));
                    got_resize = true;
                }
                other => {
                    tracing::debug!(stream_type = other, "unexpected stream: reset");
                    stream.reset(super::spdy::RstStatus::RefusedStream);
                }
            }
        }
        true
    };
    match tokio::time::timeout(STREAM_CREATION, collect).await {
        Ok(true) => {}
        Ok(false) => return,
        Err(_) => {
            if let Some(mut e) = error {
                let msg =
                    format!("timed out waiting for the client's streams ({STREAM_CREATION:?})");
                let _ = e.write_all(msg.as_bytes()).await;
                let _ = e.shutdown().await;
            }
            return;
        }
    }
    let Some(mut error) = error else {
        return;
    };
    let outcome = run(client).await;
    let report = if protocol == "v4.channel.k8s.io" {
        Some(remotecommand::status_json(&outcome))
    } else {
        remotecommand::error_text(&outcome).map(String::into_bytes)
    };
    if let Some(report) = report {
        let _ = error.write_all(&report).await;
    }
    let _ = error.shutdown().await;
    // The client closes the connection once it has read the error stream; keep serving
    // (window updates, its GOAWAY) until then.
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while session.accept().await.is_some() {}
    })
    .await;
}

/// Serves port-forward stream pairs until the client closes the session. `allowed` (if not
/// empty) limits the ports.
pub async fn serve_port_forward(session: Session, target: Target, allowed: Vec<u16>) {
    let mut pending: HashMap<String, (Option<Stream>, Option<Stream>)> = HashMap::new();
    while let Some(stream) = session.accept().await {
        let h = stream.headers();
        let kind = h.get("streamtype").unwrap_or("").to_string();
        let request = h.get("requestid").unwrap_or("").to_string();
        let port = h.get("port").and_then(|p| p.parse::<u16>().ok());
        if stream.reply(Headers::new(), false).is_err() {
            continue;
        }
        let entry = pending.entry(request.clone()).or_default();
        match kind.as_str() {
            "error" => entry.0 = Some(stream),
            "data" => entry.1 = Some(stream),
            _ => {
                stream.reset(super::spdy::RstStatus::RefusedStream);
                continue;
            }
        }
        if entry.0.is_some() && entry.1.is_some() {
            if let Some((Some(err), Some(data))) = pending.remove(&request) {
                let target = target.clone();
                let allowed = allowed.clone();
                tokio::spawn(forward_one(err, data, port, target, allowed));
            }
        }
    }
}

/// One forwarded connection: `data` ↔ the pod's port; failures on `error`.
async fn forward_one(
    mut error: Stream,
    data: Stream,
    port: Option<u16>,
    target: Target,
    allowed: Vec<u16>,
) {
    let refused = if port.filter(|p| *p > 0).is_none() {
        Err("the port header is missing or not a port number".to_string())
    } else {
        Ok(port.unwrap_or_default())
    };
    let conn = match refused {
        Err(msg) => Err(msg),
        Ok(port) if !allowed.is_empty() && !allowed.contains(&port) => {
            Err(format!("port {port} was not in the PortForward request"))
        }
        Ok(port) => portforward::connect(&target, port)
            .await
            .map_err(|e| format!("error forwarding port {port} to pod: {e}")),
    };
    let conn = match conn {
        Ok(c) => c,
        Err(msg) => {
            let _ = error.write_all(msg.as_bytes()).await;
            let _ = error.shutdown().await;
            return;
        }
    };
    let (mut from_client, mut to_client) = data.into_split();
    let (mut from_pod, mut to_pod) = conn.into_split();
    let up = async {
        let _ = tokio::io::copy(&mut from_client, &mut to_pod).await;
        let _ = to_pod.shutdown().await;
    };
    let down = async {
        let _ = tokio::io::copy(&mut from_pod, &mut to_client).await;
        let _ = to_client.shutdown().await;
    };
    tokio::join!(up, down);
    let _ = error.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clients_order_decides() {
        let offered = vec![
            "v2.channel.k8s.io".to_string(),
            "v4.channel.k8s.io".to_string(),
        ];
        assert_eq!(
            negotiate(&offered, &REMOTECOMMAND),
            Some("v2.channel.k8s.io")
        );
        assert_eq!(negotiate(&["v9".to_string()], &REMOTECOMMAND), None);
        assert_eq!(
            negotiate(&[PORTFORWARD.to_string()], &[PORTFORWARD]),
            Some(PORTFORWARD)
        );
    }
}
