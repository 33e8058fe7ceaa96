//! Kubernetes' stream protocols over WebSocket: one connection, messages tagged by a
//! channel byte (0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize). `v5.channel.k8s.io`
//! adds channel 255, whose message `[255, n]` closes channel `n` (the client's stdin EOF);
//! `base64.channel.k8s.io` sends text messages: the channel as an ASCII digit, then the
//! data in base64.

use base64::Engine;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::remotecommand::{self, ClientStreams, Outcome};

/// Channel numbers.
pub const STDIN: u8 = 0;
/// stdout.
pub const STDOUT: u8 = 1;
/// stderr.
pub const STDERR: u8 = 2;
/// The error (status) channel.
pub const ERROR: u8 = 3;
/// Terminal resizes.
pub const RESIZE: u8 = 4;
/// v5: close the channel named by the payload.
pub const CLOSE: u8 = 255;

/// Largest data message we send.
const CHUNK: usize = 32 * 1024;

/// The WebSocket subprotocols we speak, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsProtocol {
    /// `v5.channel.k8s.io`: v4 plus the close channel.
    V5,
    /// `v4.channel.k8s.io`: the error channel carries a Status JSON.
    V4,
    /// `channel.k8s.io`: the error channel carries text.
    Channel,
    /// `base64.channel.k8s.io`: as `channel.k8s.io`, in text messages.
    Base64,
}

impl WsProtocol {
    /// Every protocol, best first.
    pub const ALL: [WsProtocol; 4] = [
        WsProtocol::V5,
        WsProtocol::V4,
        WsProtocol::Channel,
        WsProtocol::Base64,
    ];

    /// Its `Sec-WebSocket-Protocol` name.
    pub fn name(self) -> &'static str {
        match self {
            WsProtocol::V5 => "v5.channel.k8s.io",
            WsProtocol::V4 => "v4.channel.k8s.io",
            WsProtocol::Channel => "channel.k8s.io",
            WsProtocol::Base64 => "base64.channel.k8s.io",
        }
    }

    /// The first of the client's `offered` protocols (in its order of preference) that
    /// we speak.
    pub fn negotiate<'a>(offered: impl IntoIterator<Item = &'a str>) -> Option<WsProtocol> {
        offered
            .into_iter()
            .map(str::trim)
            .find_map(|o| WsProtocol::ALL.into_iter().find(|p| p.name() == o))
    }

    fn status_json(self) -> bool {
        matches!(self, WsProtocol::V5 | WsProtocol::V4)
    }
}

/// Encodes one message on `channel`.
pub fn encode(proto: WsProtocol, channel: u8, data: &[u8]) -> Message {
    if proto == WsProtocol::Base64 {
        let mut text = String::with_capacity(1 + data.len() * 4 / 3 + 4);
        text.push(char::from(b'0' + channel.min(9)));
        base64::engine::general_purpose::STANDARD.encode_string(data, &mut text);
        Message::Text(text.into())
    } else {
        let mut buf = Vec::with_capacity(1 + data.len());
        buf.push(channel);
        buf.extend_from_slice(data);
        Message::Binary(buf.into())
    }
}

/// Decodes a data message into its channel and payload; `None` for anything else.
pub fn decode(proto: WsProtocol, msg: &Message) -> Option<(u8, Vec<u8>)> {
    match (proto, msg) {
        (WsProtocol::Base64, Message::Text(t)) => {
            let t = t.as_str();
            let channel = t.as_bytes().first()?.checked_sub(b'0')?;
            let data = base64::engine::general_purpose::STANDARD
                .decode(&t[1..])
                .ok()?;
            Some((channel, data))
        }
        (_, Message::Binary(b)) => {
            let (&channel, data) = b.split_first()?;
            Some((channel, data.to_vec()))
        }
        _ => None,
    }
}

/// Which channels the session uses.
#[derive(Debug, Clone, Copy, Default)]
pub struct Channels {
    /// stdin.
    pub stdin: bool,
    /// stdout.
    pub stdout: bool,
    /// stderr.
    pub stderr: bool,
    /// A terminal (with a resize channel).
    pub tty: bool,
}

/// Serves one remote command session on `ws`: turns the channels into [`ClientStreams`],
/// runs `run` with them, writes its outcome on the error channel and closes.
pub async fn serve<S, F, Fut>(ws: WebSocketStream<S>, proto: WsProtocol, ch: Channels, run: F)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: FnOnce(ClientStreams) -> Fut,
    Fut: std::future::Future<Output = Outcome>,
{
    let (sink, mut source) = ws.split();
    let (out_tx, writer) = spawn_writer(sink);

    let (stdin_r, mut stdin_w) = tokio::io::duplex(64 * 1024);
    let (resize_r, mut resize_w) = tokio::io::duplex(4 * 1024);
    let reader = tokio::spawn(async move {
        let mut stdin_open = true;
        while let Some(Ok(msg)) = source.next().await {
            if matches!(msg, Message::Close(_)) {
                break;
            }
            let Some((channel, data)) = decode(proto, &msg) else {
                continue;
            };
            match channel {
                STDIN if stdin_open && stdin_w.write_all(&data).await.is_err() => {
                    stdin_open = false;
                }
                RESIZE => {
                    let _ = resize_w.write_all(&data).await;
                }
                CLOSE if proto == WsProtocol::V5 && data.first() == Some(&STDIN) => {
                    let _ = stdin_w.shutdown().await;
                    stdin_open = false;
                }
                _ => {}
            }
        }
        // The client went away or closed: its stdin ends.
        let _ = stdin_w.shutdown().await;
    });

    let mut pumps = Vec::new();
    let mut output = |on: bool, channel: u8| -> Option<remotecommand::ClientWrite> {
        if !on {
            return None;
        }
        let (w, r) = tokio::io::duplex(64 * 1024);
        pumps.push(tokio::spawn(pump(r, channel, proto, out_tx.clone())));
        Some(Box::new(w))
    };
    let client = ClientStreams {
        stdout: output(ch.stdout, STDOUT),
        stderr: output(ch.stderr && !ch.tty, STDERR),
        stdin: ch
            .stdin
            .then(|| Box::new(stdin_r) as remotecommand::ClientRead),
        resize: ch
            .tty
            .then(|| remotecommand::resize_reader(Box::new(resize_r))),
        tty: ch.tty,
    };
    let outcome = run(client).await;
    for p in pumps {
        let _ = p.await;
    }
    let status = if proto.status_json() {
        Some(remotecommand::status_json(&outcome))
    } else {
        remotecommand::error_text(&outcome).map(String::into_bytes)
    };
    if let Some(status) = status {
        let _ = out_tx.send(encode(proto, ERROR, &status)).await;
    }
    drop(out_tx);
    let _ = writer.await;
    // The writer sent our Close: wait for the client's (its reader ends there) before the
    // socket goes, or data it has not read yet could be lost to a reset.
    let abort = reader.abort_handle();
    if tokio::time::timeout(CLOSE_WAIT, reader).await.is_err() {
        abort.abort();
    }
}

/// How long a finished session waits for the client's Close.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// A task sending the messages of the returned channel in order, then a Close once every
/// sender is gone.
pub fn spawn_writer<S>(
    mut sink: futures::stream::SplitSink<WebSocketStream<S>, Message>,
) -> (mpsc::Sender<Message>, tokio::task::JoinHandle<()>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (tx, mut rx) = mpsc::channel::<Message>(16);
    let task = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if sink.send(m).await.is_err() {
                return;
            }
        }
        let _ = sink.close().await;
    });
    (tx, task)
}

/// Sends what is written to one output stream as messages on `channel`, until EOF.
async fn pump(
    mut from: tokio::io::DuplexStream,
    channel: u8,
    proto: WsProtocol,
    out: mpsc::Sender<Message>,
) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if out.send(encode(proto, channel, &buf[..n])).await.is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_follows_the_clients_order() {
        assert_eq!(
            WsProtocol::negotiate(["v4.channel.k8s.io", "v5.channel.k8s.io"]),
            Some(WsProtocol::V4)
        );
        assert_eq!(
            WsProtocol::negotiate(["nope", "base64.channel.k8s.io"]),
            Some(WsProtocol::Base64)
        );
        assert_eq!(WsProtocol::negotiate(["v9.channel.k8s.io"]), None);
    }

    #[test]
    fn messages_round_trip_in_each_protocol() {
        for proto in WsProtocol::ALL {
            let m = encode(proto, STDOUT, b"hello\x00\xff");
            assert_eq!(decode(proto, &m), Some((STDOUT, b"hello\x00\xff".to_vec())));
        }
        let m = encode(WsProtocol::Base64, STDERR, b"hi");
        assert_eq!(m, Message::Text("2aGk=".into()));
        let m = encode(WsProtocol::V4, ERROR, b"x");
        assert_eq!(m, Message::Binary(vec![3u8, b'x'].into()));
    }
}
