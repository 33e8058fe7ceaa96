//! Interoperability with a real Go spdystream peer: `kubectl port-forward` against a fake
//! API server (plain HTTP on loopback) whose port-forward endpoint upgrades to this
//! session and echoes each forwarded connection; 10 B, 300 KB and 4 MiB must come back
//! exactly. kubectl does no SPDY flow control, so this covers the Auto mode both ways,
//! the header compression against Go's zlib, SYN_REPLY/FIN ordering and the 101 hand-off.
//! Needs `kubectl` on PATH; skipped (with a message) without it.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use super::*;

const DISCOVERY_API: &str = r#"{"kind":"APIVersions","versions":["v1"],"serverAddressByClientCIDRs":[{"clientCIDR":"0.0.0.0/0","serverAddress":"127.0.0.1"}]}"#;
const DISCOVERY_APIS: &str = r#"{"kind":"APIGroupList","apiVersion":"v1","groups":[]}"#;
const DISCOVERY_V1: &str = r#"{"kind":"APIResourceList","groupVersion":"v1","resources":[{"name":"pods","singularName":"pod","namespaced":true,"kind":"Pod","verbs":["get","list"],"shortNames":["po"]},{"name":"pods/portforward","singularName":"","namespaced":true,"kind":"PodPortForwardOptions","verbs":["create","get"]}]}"#;
const POD: &str = r#"{"kind":"Pod","apiVersion":"v1","metadata":{"name":"p","namespace":"default"},"spec":{"containers":[{"name":"c","image":"x"}]},"status":{"phase":"Running"}}"#;

/// Reads one HTTP/1.1 request head; `None` at EOF.
async fn read_head(r: &mut BufReader<TcpStream>) -> Option<Vec<String>> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        let line = line.trim_end().to_string();
        if line.is_empty() {
            return Some(lines);
        }
        lines.push(line);
    }
}

async fn respond(w: &mut BufReader<TcpStream>, status: &str, body: &str) {
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = w.get_mut().write_all(resp.as_bytes()).await;
}

/// One port-forward SPDY session: echo every data stream, close its error stream after.
async fn serve_portforward(conn: TcpStream) {
    let (session, driver) = Session::new(conn, Role::Server);
    let driver = tokio::spawn(driver);
    let mut errors: std::collections::HashMap<String, Stream> = Default::default();
    let mut tasks = Vec::new();
    while let Some(stream) = session.accept().await {
        stream.reply(Headers::new(), false).expect("reply");
        let kind = stream.headers().get("streamtype").unwrap_or("").to_string();
        let id = stream.headers().get("requestid").unwrap_or("").to_string();
        eprintln!(
            "fake apiserver: stream {}: {:?}",
            stream.id(),
            stream.headers()
        );
        match kind.as_str() {
            "error" => {
                errors.insert(id, stream);
            }
            "data" => {
                let error_stream = errors.remove(&id);
                tasks.push(tokio::spawn(async move {
                    let (mut r, mut w) = stream.into_split();
                    let n = tokio::io::copy(&mut r, &mut w).await.expect("echo");
                    w.shutdown().await.expect("fin");
                    if let Some(mut e) = error_stream {
                        e.shutdown().await.expect("fin error stream");
                        let mut rest = Vec::new();
                        let _ = e.read_to_end(&mut rest).await;
                    }
                    n
                }));
            }
            other => panic!("unexpected stream type {other:?}"),
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    drop(session);
    let res = driver.await;
    eprintln!("fake apiserver: session ended: {res:?}");
}

async fn fake_apiserver(listener: TcpListener) {
    loop {
        let Ok((conn, _)) = listener.accept().await else {
            return;
        };
        tokio::spawn(async move {
            let mut conn = BufReader::new(conn);
            while let Some(head) = read_head(&mut conn).await {
                let request_line = head.first().cloned().unwrap_or_default();
                eprintln!("fake apiserver: {request_line}");
                let path = request_line.split(' ').nth(1).unwrap_or("").to_string();
                let path = path.split('?').next().unwrap_or("").to_string();
                let upgrade = head
                    .iter()
                    .any(|h| h.to_ascii_lowercase().starts_with("upgrade: spdy/3.1"));
                match path.as_str() {
                    "/api" => respond(&mut conn, "200 OK", DISCOVERY_API).await,
                    "/apis" => respond(&mut conn, "200 OK", DISCOVERY_APIS).await,
                    "/api/v1" => respond(&mut conn, "200 OK", DISCOVERY_V1).await,
                    "/api/v1/namespaces/default/pods/p" => {
                        respond(&mut conn, "200 OK", POD).await
                    }
                    "/api/v1/namespaces/default/pods/p/portforward" if upgrade => {
                        assert!(conn.buffer().is_empty(), "client spoke before the 101");
                        let resp = "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: portforward.k8s.io\r\n\r\n";
                        conn.get_mut()
                            .write_all(resp.as_bytes())
                            .await
                            .expect("101");
                        serve_portforward(conn.into_inner()).await;
                        return;
                    }
                    _ => {
                        respond(
                            &mut conn,
                            "404 Not Found",
                            r#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}"#,
                        )
                        .await
                    }
                }
            }
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_port_forward_through_our_session() {
    if std::process::Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_err()
    {
        eprintln!("kubectl not found: skipping the spdystream interop test");
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(fake_apiserver(listener));
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: http://{addr}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\n    namespace: default\ncurrent-context: c\nusers:\n- name: u\n  user: {{}}\n"
        ),
    )
    .expect("kubeconfig");
    let mut child = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("--cache-dir")
        .arg(dir.path().join("cache"))
        .args([
            "port-forward",
            "--address",
            "127.0.0.1",
            "pod/p",
            ":1234",
            "-v=6",
        ])
        .env("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false")
        .env("HOME", dir.path())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.path().join("stderr")).expect("stderr file"))
        .spawn()
        .expect("kubectl");
    let stdout = child.stdout.take().expect("stdout");
    // Keep draining kubectl's stdout after its first line: Go dies of SIGPIPE when it
    // writes "Handling connection..." to a closed pipe.
    let (line_tx, first_line) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut reader = std::io::BufReader::new(stdout);
        let mut line = String::new();
        let _ = std::io::BufRead::read_line(&mut reader, &mut line);
        let _ = line_tx.send(line);
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
    });
    let line = tokio::time::timeout(Duration::from_secs(30), first_line)
        .await
        .expect("kubectl to start forwarding")
        .expect("first line");
    assert!(!line.is_empty(), "kubectl exited without forwarding");
    // "Forwarding from 127.0.0.1:PORT -> 1234"
    let port: u16 = line
        .split("127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected kubectl output {line:?}"));

    for round in 0..3u32 {
        let size = [10usize, 300_000, 4 << 20][round as usize];
        let data = tests_pattern(round + 11, size);
        let conn = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let (mut r, mut w) = conn.into_split();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            w.write_all(&sent).await.expect("write");
            w.shutdown().await.expect("shutdown");
        });
        let mut got = Vec::new();
        let res = tokio::time::timeout(Duration::from_secs(60), r.read_to_end(&mut got)).await;
        if !matches!(res, Ok(Ok(_))) {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let err = std::fs::read_to_string(dir.path().join("stderr")).unwrap_or_default();
            panic!("round {round}: {res:?}; kubectl stderr:\n{err}");
        }
        writer.await.expect("writer");
        assert_eq!(got.len(), data.len(), "round {round}");
        assert!(got == data, "round {round}: bytes differ");
    }
    child.kill().expect("kill kubectl");
    let _ = child.wait();
}

fn tests_pattern(seed: u32, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}
