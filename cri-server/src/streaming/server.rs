//! The HTTP side of the streaming server: `/{exec,attach,portforward}/{token}`, upgraded
//! to WebSocket (or SPDY/3.1) after the token is checked.
//!
//! Unknown, used and expired tokens all get 404, with no hint which it was.

use std::convert::Infallible;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{
    HeaderValue, CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL,
    UPGRADE,
};
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

use super::remotecommand::{self, ClientStreams};
use super::websocket::{self, Channels, WsProtocol};
use super::{Request, Streaming};

/// Serves connections from `listener` (over TLS with `tls`) until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    streaming: Arc<Streaming>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let conn = tokio::select! {
            c = listener.accept() => c,
            () = &mut shutdown => return,
        };
        let (stream, _) = match conn {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "streaming server accept");
                continue;
            }
        };
        let streaming = streaming.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => serve_connection(stream, streaming).await,
                Some(tls) => match tls.accept(stream).await {
                    Ok(s) => serve_connection(s, streaming).await,
                    Err(e) => tracing::debug!(error = %e, "streaming TLS handshake"),
                },
            }
        });
    }
}

/// One HTTP/1.1 connection, upgrades allowed.
async fn serve_connection<IO>(io: IO, streaming: Arc<Streaming>)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let streaming = streaming.clone();
        async move { Ok::<_, Infallible>(handle(req, streaming)) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "streaming connection");
    }
}

fn reply(status: StatusCode, body: &str) -> Response<String> {
    let mut r = Response::new(body.to_string());
    *r.status_mut() = status;
    r
}

/// Answers one request: the upgrade response, with the session spawned on the upgraded
/// connection.
fn handle(req: hyper::Request<Incoming>, streaming: Arc<Streaming>) -> Response<String> {
    let mut parts = req.uri().path().trim_start_matches('/').splitn(2, '/');
    let (Some(kind), Some(token)) = (parts.next(), parts.next()) else {
        return reply(StatusCode::NOT_FOUND, "not found\n");
    };
    let Some(request) = streaming.take(kind, token) else {
        return reply(StatusCode::NOT_FOUND, "not found\n");
    };
    let upgrade = req
        .headers()
        .get(UPGRADE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if upgrade == "spdy/3.1" {
        return spdy_upgrade(req, request, streaming);
    }
    if upgrade == "websocket" {
        if let Request::PortForward { sandbox, ports } = request {
            return websocket_port_forward(req, &sandbox, ports, streaming);
        }
        return websocket_upgrade(req, request, streaming);
    }
    reply(
        StatusCode::BAD_REQUEST,
        "this endpoint needs a WebSocket (or SPDY/3.1) upgrade\n",
    )
}

fn websocket_upgrade(
    req: hyper::Request<Incoming>,
    request: Request,
    streaming: Arc<Streaming>,
) -> Response<String> {
    let offered = offered_protocols(&req);
    // No protocol offered: the original unversioned one, as the apiserver assumes.
    let proto = if offered.is_empty() {
        Some(WsProtocol::Channel)
    } else {
        WsProtocol::negotiate(offered.iter().map(String::as_str))
    };
    let Some(proto) = proto else {
        return reply(
            StatusCode::BAD_REQUEST,
            &format!(
                "none of the offered protocols {offered:?} is supported (supported: {})\n",
                WsProtocol::ALL.map(WsProtocol::name).join(", ")
            ),
        );
    };
    let (channels, run): (Channels, _) = match request {
        Request::Exec {
            container,
            cmd,
            tty,
            stdin,
            stdout,
            stderr,
        } => (
            Channels {
                stdin,
                stdout,
                stderr,
                tty,
            },
            SessionKind::Exec { container, cmd },
        ),
        Request::Attach {
            container,
            tty,
            stdin,
            stdout,
            stderr,
        } => {
            let want = crate::container::attach::AttachStreams {
                stdin,
                stdout,
                stderr,
            };
            let target = match streaming.pods().attach_target(&container, want) {
                Ok(t) => t,
                Err(e) => return reply(StatusCode::BAD_REQUEST, &format!("{e}\n")),
            };
            (
                Channels {
                    stdin: target.stdin.is_some(),
                    stdout,
                    stderr,
                    tty,
                },
                SessionKind::Attach(target),
            )
        }
        Request::PortForward { .. } => {
            return reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "port-forward routed as exec\n",
            )
        }
    };
    let pods = streaming.pods().clone();
    upgrade(req, proto.name(), move |ws| async move {
        websocket::serve(ws, proto, channels, |client: ClientStreams| async move {
            match run {
                SessionKind::Exec { container, cmd } => {
                    remotecommand::exec(&pods, &container, cmd, client).await
                }
                SessionKind::Attach(target) => remotecommand::attach(&pods, target, client).await,
            }
        })
        .await;
    })
}

/// The upgraded connection of a WebSocket session.
type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Answers 101 to a WebSocket upgrade with subprotocol `protocol` (none when empty) and
/// runs `session` on the connection once hyper hands it over.
fn upgrade<F, Fut>(
    req: hyper::Request<Incoming>,
    protocol: &'static str,
    session: F,
) -> Response<String>
where
    F: FnOnce(Ws) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let Some(key) = req.headers().get(SEC_WEBSOCKET_KEY) else {
        return reply(StatusCode::BAD_REQUEST, "Sec-WebSocket-Key is missing\n");
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    tokio::spawn(async move {
        let upgraded = match hyper::upgrade::on(req).await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "websocket upgrade");
                return;
            }
        };
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        session(ws).await;
    });
    let mut r = reply(StatusCode::SWITCHING_PROTOCOLS, "");
    let h = r.headers_mut();
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(SEC_WEBSOCKET_ACCEPT, v);
    }
    if !protocol.is_empty() {
        h.insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(protocol));
    }
    r
}

/// The client's `X-Stream-Protocol-Version`s (repeated headers or comma lists).
fn offered_stream_protocols(req: &hyper::Request<Incoming>) -> Vec<String> {
    req.headers()
        .get_all("x-stream-protocol-version")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// Answers 101 to an upgrade to SPDY/3.1, having negotiated the Kubernetes protocol as
/// the kubelet does (the client's order; none offered is the original `channel.k8s.io`),
/// and serves the session on the connection.
fn spdy_upgrade(
    req: hyper::Request<Incoming>,
    request: Request,
    streaming: Arc<Streaming>,
) -> Response<String> {
    use super::over_spdy::{self, Expect};
    let offered = offered_stream_protocols(&req);
    let ours: &[&'static str] = match request {
        Request::PortForward { .. } => &[over_spdy::PORTFORWARD],
        _ => &over_spdy::REMOTECOMMAND,
    };
    let protocol = if offered.is_empty() {
        Some(ours[ours.len() - 1])
    } else {
        over_spdy::negotiate(&offered, ours)
    };
    let Some(protocol) = protocol else {
        let mut r = reply(
            StatusCode::FORBIDDEN,
            &format!("unable to upgrade: none of the offered protocols {offered:?} is supported\n"),
        );
        if let Ok(v) = HeaderValue::from_str(&ours.join(", ")) {
            r.headers_mut()
                .insert("x-accepted-stream-protocol-versions", v);
        }
        return r;
    };
    let pods = streaming.pods().clone();
    let session: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> = match request {
        Request::Exec {
            container,
            cmd,
            tty,
            stdin,
            stdout,
            stderr,
        } => {
            let expect = Expect {
                stdin,
                stdout,
                stderr: stderr && !tty,
                tty,
            };
            Box::pin(spdy_session(req, move |s| async move {
                over_spdy::serve_command(s, protocol, expect, |client| async move {
                    remotecommand::exec(&pods, &container, cmd, client).await
                })
                .await
            }))
        }
        Request::Attach {
            container,
            tty,
            stdin,
            stdout,
            stderr,
        } => {
            let want = crate::container::attach::AttachStreams {
                stdin,
                stdout,
                stderr,
            };
            let target = match pods.attach_target(&container, want) {
                Ok(t) => t,
                Err(e) => return reply(StatusCode::BAD_REQUEST, &format!("{e}\n")),
            };
            let expect = Expect {
                stdin: target.stdin.is_some(),
                stdout,
                stderr: stderr && !tty,
                tty,
            };
            Box::pin(spdy_session(req, move |s| async move {
                over_spdy::serve_command(s, protocol, expect, |client| async move {
                    remotecommand::attach(&pods, target, client).await
                })
                .await
            }))
        }
        Request::PortForward { sandbox, ports } => {
            let Some(target) = forward_target(&streaming, &sandbox) else {
                return reply(StatusCode::NOT_FOUND, "pod sandbox not found\n");
            };
            Box::pin(spdy_session(req, move |s| async move {
                over_spdy::serve_port_forward(s, target, ports).await
            }))
        }
    };
    tokio::spawn(session);
    let mut r = reply(StatusCode::SWITCHING_PROTOCOLS, "");
    let h = r.headers_mut();
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(UPGRADE, HeaderValue::from_static("SPDY/3.1"));
    h.insert(
        "x-stream-protocol-version",
        HeaderValue::from_static(protocol),
    );
    r
}

/// Waits for hyper to hand over the upgraded connection, starts a server SPDY session on
/// it and runs `serve` with it.
async fn spdy_session<F, Fut>(req: hyper::Request<Incoming>, serve: F)
where
    F: FnOnce(super::spdy::Session) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let upgraded = match hyper::upgrade::on(req).await {
        Ok(u) => u,
        Err(e) => {
            tracing::debug!(error = %e, "spdy upgrade");
            return;
        }
    };
    let (session, driver) =
        super::spdy::Session::new(TokioIo::new(upgraded), super::spdy::Role::Server);
    let driver = tokio::spawn(driver);
    serve(session).await;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), driver).await;
}

/// Where sandbox `id`'s ports are: its pinned netns, or the host for host network.
fn forward_target(streaming: &Streaming, id: &str) -> Option<super::portforward::Target> {
    let rec = streaming.pods().sandbox(id).ok()??;
    Some(match rec.netns {
        Some(pin) => super::portforward::Target::Netns(pin),
        None => super::portforward::Target::Host,
    })
}

/// The client's offered WebSocket subprotocols.
fn offered_protocols(req: &hyper::Request<Incoming>) -> Vec<String> {
    req.headers()
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// The `port` query parameters of a port-forward URL.
fn query_ports(req: &hyper::Request<Incoming>) -> Result<Vec<u16>, String> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| *k == "port")
        .map(|(_, v)| {
            v.parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("port {v:?} is not a port number"))
        })
        .collect()
}

fn websocket_port_forward(
    req: hyper::Request<Incoming>,
    sandbox: &str,
    allowed: Vec<u16>,
    streaming: Arc<Streaming>,
) -> Response<String> {
    let offered = offered_protocols(&req);
    let Some((proto, name)) = super::portforward::PfProtocol::negotiate(&offered) else {
        return reply(
            StatusCode::BAD_REQUEST,
            &format!("none of the offered protocols {offered:?} is a port-forward protocol\n"),
        );
    };
    let ports = match query_ports(&req) {
        Ok(p) if !p.is_empty() => p,
        Ok(_) => allowed.clone(),
        Err(e) => return reply(StatusCode::BAD_REQUEST, &format!("{e}\n")),
    };
    if ports.is_empty() {
        return reply(StatusCode::BAD_REQUEST, "no port to forward\n");
    }
    if !allowed.is_empty() {
        if let Some(p) = ports.iter().find(|p| !allowed.contains(p)) {
            return reply(
                StatusCode::FORBIDDEN,
                &format!("port {p} was not in the PortForward request\n"),
            );
        }
    }
    let Some(target) = forward_target(&streaming, sandbox) else {
        return reply(StatusCode::NOT_FOUND, "pod sandbox not found\n");
    };
    upgrade(req, name, move |ws| async move {
        super::portforward::serve(ws, proto, ports, target).await;
    })
}

/// What a session runs once its streams are up.
enum SessionKind {
    Exec { container: String, cmd: Vec<String> },
    Attach(crate::container::attach::AttachTarget),
}
