//! A client for the CRI streaming server: `Exec` URLs opened over WebSocket with each
//! `channel.k8s.io` variant (the SPDY side arrives with the SPDY module).

use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// What one exec session produced.
#[derive(Debug, Default, Clone)]
pub struct Session {
    /// The protocol the server chose.
    pub protocol: String,
    /// stdout bytes.
    pub stdout: Vec<u8>,
    /// stderr bytes.
    pub stderr: Vec<u8>,
    /// The error channel's bytes (a Status JSON from v4 on).
    pub error: Vec<u8>,
}

impl Session {
    /// The exit code the error channel reports: 0 for success, the `ExitCode` cause
    /// otherwise (v4+ Status JSON), or parsed from the text of older versions.
    pub fn exit_code(&self) -> Option<i32> {
        if self.error.is_empty() {
            return Some(0);
        }
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&self.error) {
            if v["status"] == "Success" {
                return Some(0);
            }
            return v["details"]["causes"]
                .as_array()?
                .iter()
                .find(|c| c["reason"] == "ExitCode")?["message"]
                .as_str()?
                .parse()
                .ok();
        }
        let text = String::from_utf8_lossy(&self.error);
        text.rsplit(' ').next()?.trim().parse().ok()
    }
}

/// Input for a session.
#[derive(Debug, Default, Clone)]
pub struct Input {
    /// Bytes sent on stdin (then stdin is closed, where the protocol can say so: v5).
    pub stdin: Option<Vec<u8>>,
    /// A terminal size sent first (width, height).
    pub resize: Option<(u16, u16)>,
    /// Wait this long before sending stdin (let the process start).
    pub delay: Duration,
}

/// A connection to the streaming server, plain or TLS.
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// Connects to `url` over WebSocket offering `protocols`; the stream and the chosen one.
pub async fn connect(
    url: &str,
    protocols: &[&str],
) -> anyhow::Result<(WebSocketStream<Box<dyn Io>>, String)> {
    connect_with(url, protocols, None).await
}

/// [`connect`], trusting `ca` (a PEM certificate) for an `https://` URL.
pub async fn connect_with(
    url: &str,
    protocols: &[&str],
    ca: Option<&std::path::Path>,
) -> anyhow::Result<(WebSocketStream<Box<dyn Io>>, String)> {
    let tls = url.starts_with("https://");
    let ws_url = url
        .replacen("https://", "wss://", 1)
        .replacen("http://", "ws://", 1);
    let mut req = ws_url
        .as_str()
        .into_client_request()
        .context("websocket request")?;
    if !protocols.is_empty() {
        req.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_str(&protocols.join(", "))?,
        );
    }
    let host = req
        .uri()
        .authority()
        .map(|a| a.to_string())
        .context("url without host")?;
    let tcp = TcpStream::connect(&host)
        .await
        .with_context(|| format!("connecting to {host}"))?;
    let io: Box<dyn Io> = if tls {
        let ca = ca.context("an https URL needs a CA")?;
        let mut roots = rustls::RootCertStore::empty();
        use rustls::pki_types::pem::PemObject;
        for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca)? {
            roots.add(cert?)?;
        }
        let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from(
            host.rsplit_once(':')
                .map(|(h, _)| h)
                .unwrap_or(&host)
                .to_string(),
        )?;
        let stream = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
            .connect(name, tcp)
            .await
            .context("TLS handshake")?;
        Box::new(stream)
    } else {
        Box::new(tcp)
    };
    let (ws, resp) = tokio_tungstenite::client_async(req, io)
        .await
        .with_context(|| format!("websocket handshake with {url}"))?;
    let chosen = resp
        .headers()
        .get("Sec-WebSocket-Protocol")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    Ok((ws, chosen))
}

fn encode(base64: bool, channel: u8, data: &[u8]) -> Message {
    if base64 {
        let mut t = String::new();
        t.push(char::from(b'0' + channel));
        base64::engine::general_purpose::STANDARD.encode_string(data, &mut t);
        Message::Text(t.into())
    } else {
        let mut b = vec![channel];
        b.extend_from_slice(data);
        Message::Binary(b.into())
    }
}

/// Runs one exec session on `url`: sends `input`, collects output until the server
/// closes, within `timeout`.
pub async fn exec(
    url: &str,
    protocols: &[&str],
    input: Input,
    timeout: Duration,
) -> anyhow::Result<Session> {
    let (ws, protocol) = connect(url, protocols).await?;
    let base64 = protocol == "base64.channel.k8s.io";
    let v5 = protocol == "v5.channel.k8s.io";
    let (mut sink, mut source) = ws.split();
    let send = async move {
        if let Some((w, h)) = input.resize {
            let size = serde_json::json!({"Width": w, "Height": h}).to_string();
            sink.send(encode(base64, 4, size.as_bytes())).await?;
        }
        tokio::time::sleep(input.delay).await;
        if let Some(data) = input.stdin {
            for chunk in data.chunks(32 * 1024) {
                sink.send(encode(base64, 0, chunk)).await?;
            }
            if v5 {
                sink.send(Message::Binary(vec![255u8, 0].into())).await?;
            }
        }
        // Keep the sink open until the server closes: dropping it would close the socket.
        anyhow::Ok(sink)
    };
    let recv = async move {
        let mut s = Session {
            protocol: protocol.clone(),
            ..Default::default()
        };
        while let Some(msg) = source.next().await {
            let (channel, data) = match msg? {
                Message::Binary(b) => match b.split_first() {
                    Some((&c, d)) => (c, d.to_vec()),
                    None => continue,
                },
                Message::Text(t) if base64 => {
                    let t = t.as_str();
                    let Some(c) = t.as_bytes().first().map(|c| c.wrapping_sub(b'0')) else {
                        continue;
                    };
                    (
                        c,
                        base64::engine::general_purpose::STANDARD.decode(&t[1..])?,
                    )
                }
                Message::Close(_) => break,
                _ => continue,
            };
            match channel {
                1 => s.stdout.extend(data),
                2 => s.stderr.extend(data),
                3 => s.error.extend(data),
                _ => {}
            }
        }
        anyhow::Ok(s)
    };
    tokio::time::timeout(timeout, async {
        let (sent, got) = tokio::join!(send, recv);
        let _sink = sent?;
        got
    })
    .await
    .context("the exec session did not end in time")?
}

/// A plain HTTP GET of `url` (no upgrade): the status code, to see how the server answers
/// unknown, used or expired tokens.
pub async fn http_status(url: &str) -> anyhow::Result<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").context("not an http url")?;
    let (host, path) = rest.split_once('/').context("no path")?;
    let mut s = TcpStream::connect(host).await?;
    s.write_all(
        format!(
            "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        .as_bytes(),
    )
    .await?;
    let mut buf = vec![0u8; 256];
    let n = s.read(&mut buf).await?;
    let head = String::from_utf8_lossy(&buf[..n]);
    head.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no status line")
}

/// What a one-port port-forward session returned.
#[derive(Debug, Default, Clone)]
pub struct Forwarded {
    /// The port prefixes seen on the data and error channels.
    pub prefixes: Vec<(u8, u16)>,
    /// Data from the pod.
    pub data: Vec<u8>,
    /// Error channel text (after its port prefix).
    pub error: Vec<u8>,
}

/// Opens a port-forward `url` over WebSocket (`v4.channel.k8s.io`), sends `request` on
/// the first port's data channel and collects what comes back until the server closes.
pub async fn port_forward(
    url: &str,
    request: &[u8],
    timeout: Duration,
) -> anyhow::Result<Forwarded> {
    port_forward_with(url, request, timeout, None).await
}

/// [`port_forward`], trusting `ca` for an `https://` URL.
pub async fn port_forward_with(
    url: &str,
    request: &[u8],
    timeout: Duration,
    ca: Option<&std::path::Path>,
) -> anyhow::Result<Forwarded> {
    let (ws, _) = connect_with(url, &["v4.channel.k8s.io"], ca).await?;
    let (mut sink, mut source) = ws.split();
    let request = request.to_vec();
    let run = async move {
        let mut f = Forwarded::default();
        let mut sent = false;
        while let Some(msg) = source.next().await {
            let (channel, data) = match msg? {
                Message::Binary(b) => match b.split_first() {
                    Some((&c, d)) => (c, d.to_vec()),
                    None => continue,
                },
                Message::Close(_) => break,
                _ => continue,
            };
            let seen_prefix = f.prefixes.iter().any(|(c, _)| *c == channel);
            if !seen_prefix && data.len() >= 2 {
                f.prefixes
                    .push((channel, u16::from_le_bytes([data[0], data[1]])));
                let rest = &data[2..];
                match channel {
                    0 => f.data.extend_from_slice(rest),
                    _ => f.error.extend_from_slice(rest),
                }
            } else {
                match channel {
                    0 => f.data.extend(data),
                    _ => f.error.extend(data),
                }
            }
            if !sent && f.prefixes.len() == 2 {
                sent = true;
                sink.send(Message::Binary([&[0u8][..], &request].concat().into()))
                    .await?;
            }
        }
        anyhow::Ok(f)
    };
    tokio::time::timeout(timeout, run)
        .await
        .context("the port-forward session did not end in time")?
}
