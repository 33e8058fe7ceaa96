//! Port-forward over WebSocket (`v4.channel.k8s.io`, `v4.base64.channel.k8s.io`, or none):
//! for the i-th port asked for, channel 2i carries the data and 2i+1 the errors; the
//! server's first message on each of them is the port number (2 bytes, little-endian).
//! Each port is one TCP connection to `localhost:port` inside the pod's network namespace,
//! made when the session starts.

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// The WebSocket subprotocols of port-forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PfProtocol {
    /// `v4.channel.k8s.io` (and no protocol at all): binary messages.
    Binary,
    /// `v4.base64.channel.k8s.io`: text messages, base64 data.
    Base64,
}

impl PfProtocol {
    /// The first of the client's offered protocols we speak; none offered is binary.
    pub fn negotiate(offered: &[String]) -> Option<(PfProtocol, &'static str)> {
        if offered.is_empty() {
            return Some((PfProtocol::Binary, ""));
        }
        offered.iter().find_map(|o| match o.as_str() {
            "v4.channel.k8s.io" => Some((PfProtocol::Binary, "v4.channel.k8s.io")),
            "v4.base64.channel.k8s.io" => Some((PfProtocol::Base64, "v4.base64.channel.k8s.io")),
            _ => None,
        })
    }

    fn encode(self, channel: u8, data: &[u8]) -> Message {
        match self {
            PfProtocol::Binary => {
                let mut b = Vec::with_capacity(data.len() + 1);
                b.push(channel);
                b.extend_from_slice(data);
                Message::Binary(b.into())
            }
            PfProtocol::Base64 => {
                let mut t = String::new();
                t.push(char::from(b'0' + channel.min(9)));
                base64::engine::general_purpose::STANDARD.encode_string(data, &mut t);
                Message::Text(t.into())
            }
        }
    }

    fn decode(self, msg: &Message) -> Option<(u8, Vec<u8>)> {
        match (self, msg) {
            (PfProtocol::Binary, Message::Binary(b)) => {
                let (&c, d) = b.split_first()?;
                Some((c, d.to_vec()))
            }
            (PfProtocol::Base64, Message::Text(t)) => {
                let t = t.as_str();
                let c = t.as_bytes().first()?.checked_sub(b'0')?;
                let d = base64::engine::general_purpose::STANDARD
                    .decode(&t[1..])
                    .ok()?;
                Some((c, d))
            }
            _ => None,
        }
    }
}

/// Where the pod's ports are.
#[derive(Debug, Clone)]
pub enum Target {
    /// Inside this pinned network namespace.
    Netns(PathBuf),
    /// On the host (a `host_network` pod).
    Host,
}

/// How long a connect to a pod port may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects to `port` on the pod's localhost.
pub async fn connect(target: &Target, port: u16) -> std::io::Result<tokio::net::TcpStream> {
    match target {
        Target::Netns(pin) => crate::network::netns::connect_tcp(pin, port, CONNECT_TIMEOUT).await,
        Target::Host => tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio::net::TcpStream::connect(("127.0.0.1", port)),
        )
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?,
    }
}

/// Serves a port-forward session on `ws` for `ports`.
pub async fn serve<S>(ws: WebSocketStream<S>, proto: PfProtocol, ports: Vec<u16>, target: Target)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sink, mut source) = ws.split();
    let (out_tx, writer) = super::websocket::spawn_writer(sink);
    let mut inputs: Vec<Option<tokio::net::tcp::OwnedWriteHalf>> = Vec::new();
    let mut pumps = Vec::new();
    for (i, &port) in ports.iter().enumerate() {
        let (data, error) = ((2 * i) as u8, (2 * i + 1) as u8);
        let prefix = port.to_le_bytes();
        let _ = out_tx.send(proto.encode(data, &prefix)).await;
        let _ = out_tx.send(proto.encode(error, &prefix)).await;
        match connect(&target, port).await {
            Ok(conn) => {
                let (mut r, w) = conn.into_split();
                inputs.push(Some(w));
                let out = out_tx.clone();
                pumps.push(tokio::spawn(async move {
                    let mut buf = vec![0u8; 32 * 1024];
                    loop {
                        match r.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                if out.send(proto.encode(data, &buf[..n])).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                }));
            }
            Err(e) => {
                inputs.push(None);
                let msg = format!("error forwarding port {port} to pod: {e}");
                let _ = out_tx.send(proto.encode(error, msg.as_bytes())).await;
            }
        }
    }
    // Client data to the connections, until the client closes.
    let mut reader = tokio::spawn(async move {
        while let Some(Ok(msg)) = source.next().await {
            if matches!(msg, Message::Close(_)) {
                break;
            }
            let Some((channel, data)) = proto.decode(&msg) else {
                continue;
            };
            if channel % 2 != 0 {
                continue;
            }
            if let Some(Some(w)) = inputs.get_mut(usize::from(channel / 2)) {
                if w.write_all(&data).await.is_err() {
                    inputs[usize::from(channel / 2)] = None;
                }
            }
        }
        for w in inputs.iter_mut().flatten() {
            let _ = w.shutdown().await;
        }
    });
    let aborts: Vec<_> = pumps.iter().map(|p| p.abort_handle()).collect();
    let all_done = futures::future::join_all(pumps);
    tokio::pin!(all_done);
    let client_gone = tokio::select! {
        _ = &mut reader => true,
        _ = &mut all_done => false,
    };
    if client_gone {
        // What the pod still sends has nowhere to go.
        if tokio::time::timeout(CLOSE_WAIT, &mut all_done)
            .await
            .is_err()
        {
            aborts.iter().for_each(|a| a.abort());
        }
    }
    drop(out_tx);
    let _ = writer.await;
    if !client_gone {
        // Our Close is sent: wait for the client's before the socket goes, or data it has
        // not read yet could be lost to a reset.
        let abort = reader.abort_handle();
        if tokio::time::timeout(CLOSE_WAIT, reader).await.is_err() {
            abort.abort();
        }
    }
}

/// How long a session's end waits for the other side.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_and_messages() {
        assert_eq!(PfProtocol::negotiate(&[]), Some((PfProtocol::Binary, "")));
        assert_eq!(
            PfProtocol::negotiate(&["x".into(), "v4.base64.channel.k8s.io".into()]),
            Some((PfProtocol::Base64, "v4.base64.channel.k8s.io"))
        );
        assert_eq!(PfProtocol::negotiate(&["v5.channel.k8s.io".into()]), None);
        for p in [PfProtocol::Binary, PfProtocol::Base64] {
            let m = p.encode(3, &8080u16.to_le_bytes());
            assert_eq!(p.decode(&m), Some((3, vec![0x90, 0x1f])));
        }
    }
}
