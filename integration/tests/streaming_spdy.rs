//! The streaming server over SPDY/3.1, as crictl and the kubelet reach it: exec with each
//! `channel.k8s.io` version, stdin half-close through `cat`, a terminal resize, attach and
//! port-forward (`portforward.k8s.io`). The client is our SPDY session in the client role;
//! the same scenarios run against containerd 1.6 (Go's spdystream on the other end), which
//! checks the client and the protocol framing against an independent implementation.

use std::time::Duration;

use crius::streaming::spdy::{Headers, Role, Session};
use crius_integration::pod::{container_config, push_test_images, sh, Endpoint, Kind};
use crius_integration::registry::Registry;
use crius_proto::cri;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const T: Duration = Duration::from_secs(60);

/// Upgrades `url` to SPDY/3.1 offering `protocols`; the session and the chosen protocol.
async fn upgrade(url: &str, protocols: &[&str]) -> anyhow::Result<(Session, String)> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow::anyhow!("not an http url: {url}"))?;
    let (host, path) = rest
        .split_once('/')
        .ok_or_else(|| anyhow::anyhow!("no path in {url}"))?;
    let mut tcp = TcpStream::connect(host).await?;
    let mut req = format!(
        "POST /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
    );
    for p in protocols {
        req.push_str(&format!("X-Stream-Protocol-Version: {p}\r\n"));
    }
    req.push_str("Content-Length: 0\r\n\r\n");
    tcp.write_all(req.as_bytes()).await?;
    // Read the response head byte by byte: what follows it is the session's.
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        anyhow::ensure!(
            tcp.read(&mut b).await? == 1,
            "connection closed in the response"
        );
        head.push(b[0]);
        anyhow::ensure!(head.len() < 16 * 1024, "response head too long");
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    anyhow::ensure!(head.starts_with("HTTP/1.1 101"), "no upgrade: {head}");
    let chosen = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("x-stream-protocol-version")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    let (session, driver) = Session::new(tcp, Role::Client);
    tokio::spawn(driver);
    Ok((session, chosen))
}

fn stream_headers(kind: &str) -> Headers {
    let mut h = Headers::new();
    h.append("streamType", kind);
    h
}

#[derive(Debug, Default)]
struct Out {
    protocol: String,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    error: Vec<u8>,
}

impl Out {
    fn exit_code(&self) -> Option<i32> {
        if self.error.is_empty() {
            return Some(0);
        }
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&self.error) {
            if v["status"] == "Success" {
                return Some(0);
            }
            return v["details"]["causes"][0]["message"].as_str()?.parse().ok();
        }
        String::from_utf8_lossy(&self.error)
            .rsplit(' ')
            .next()?
            .trim()
            .parse()
            .ok()
    }
}

/// One remote command session: the error stream first (as client-go opens it), then the
/// others; stdin (when given) is written then half-closed.
async fn command(
    url: &str,
    protocol: &str,
    stdin: Option<Vec<u8>>,
    tty: Option<(u16, u16)>,
    stderr: bool,
) -> anyhow::Result<Out> {
    let (session, chosen) = upgrade(url, &[protocol]).await?;
    let mut error = session.open(stream_headers("error"), false)?;
    let stdin_stream = match &stdin {
        Some(_) => Some(session.open(stream_headers("stdin"), false)?),
        None => None,
    };
    let mut stdout = session.open(stream_headers("stdout"), false)?;
    let mut stderr_stream = if stderr {
        Some(session.open(stream_headers("stderr"), false)?)
    } else {
        None
    };
    if let Some((w, h)) = tty {
        let mut resize = session.open(stream_headers("resize"), false)?;
        let size = serde_json::json!({"Width": w, "Height": h}).to_string();
        resize.write_all(size.as_bytes()).await?;
        // Keep it open: closing it is not a terminal change.
        std::mem::forget(resize);
    }
    let run = async {
        let feed = async {
            if let (Some(mut s), Some(data)) = (stdin_stream, stdin) {
                s.write_all(&data).await?;
                s.shutdown().await?;
            }
            anyhow::Ok(())
        };
        let mut out = Out {
            protocol: chosen,
            ..Default::default()
        };
        let read_out = stdout.read_to_end(&mut out.stdout);
        let mut err_buf = Vec::new();
        let read_err = async {
            if let Some(s) = stderr_stream.as_mut() {
                s.read_to_end(&mut err_buf).await?;
            }
            std::io::Result::Ok(())
        };
        let mut e = Vec::new();
        let read_error = error.read_to_end(&mut e);
        let (f, o, r, x) = tokio::join!(feed, read_out, read_err, read_error);
        f?;
        // Go's spdystream server ends a session by resetting its streams (CANCEL) rather
        // than with FIN on each; its own client reads that as EOF, and so do we: the
        // bytes read before it are kept.
        for res in [o.map(drop), r, x.map(drop)] {
            if let Err(e) = res {
                anyhow::ensure!(e.kind() == std::io::ErrorKind::ConnectionReset, e);
            }
        }
        out.stderr = err_buf;
        out.error = e;
        anyhow::Ok(out)
    };
    tokio::time::timeout(T, run).await?
}

async fn sleeper(kind: Kind) -> anyhow::Result<(Registry, Endpoint, String, String)> {
    let reg = Registry::start(Default::default())?;
    let images = push_test_images(&reg).await?;
    let ep = Endpoint::start(kind, &reg, &images).await?;
    let pod = ep.pod_config("spdy");
    let pod_id = ep.run_pod(&pod).await?;
    let ctr = container_config("sleeper", &images.busybox, &["sleep", "100000"]);
    let id = ep.run_container(&pod_id, &pod, &ctr).await?;
    Ok((reg, ep, pod_id, id))
}

async fn exec_url(ep: &Endpoint, id: &str, cmd: Vec<String>, tty: bool, stdin: bool) -> String {
    ep.client()
        .runtime
        .exec(cri::ExecRequest {
            container_id: id.into(),
            cmd,
            tty,
            stdin,
            stdout: true,
            stderr: !tty,
        })
        .await
        .expect("Exec")
        .into_inner()
        .url
}

async fn exec_scenarios(kind: Kind) {
    let label = kind.label();
    let (_reg, ep, pod_id, id) = sleeper(kind).await.expect("pod");
    for proto in [
        "v4.channel.k8s.io",
        "v3.channel.k8s.io",
        "v2.channel.k8s.io",
        "channel.k8s.io",
    ] {
        let url = exec_url(&ep, &id, sh("echo out; echo err >&2; exit 7"), false, false).await;
        let o = command(&url, proto, None, None, true)
            .await
            .unwrap_or_else(|e| panic!("{label} {proto}: {e:#}"));
        assert_eq!(o.protocol, proto, "{label}");
        assert_eq!(o.stdout, b"out\n", "{label} {proto}");
        assert_eq!(o.stderr, b"err\n", "{label} {proto}");
        // containerd 1.6 leaves the error stream of the original protocol empty for a
        // non-zero exit (seen here): the exit code is lost there. crius writes the
        // kubelet's text ("command terminated with non-zero exit code: ... 7") in every
        // version, so a v1 client still learns it.
        let want = if !kind.is_crius() && proto == "channel.k8s.io" {
            Some(0)
        } else {
            Some(7)
        };
        assert_eq!(
            o.exit_code(),
            want,
            "{label} {proto}: error stream {:?}",
            String::from_utf8_lossy(&o.error)
        );
    }
    // 10 MB through cat: stdin half-closed by FIN.
    let data: Vec<u8> = (0..10_000_000u32).map(|i| (i % 251) as u8).collect();
    let url = exec_url(&ep, &id, vec!["cat".into()], false, true).await;
    let o = match command(&url, "v4.channel.k8s.io", Some(data.clone()), None, true).await {
        Ok(o) => o,
        Err(e) => panic!("cat: {e:#}\nLOG:\n{}", ep.log_tail()),
    };
    assert_eq!(o.stdout.len(), data.len(), "{label}");
    assert!(
        o.stdout == data,
        "{label}: 10 MB through cat came back different"
    );
    assert_eq!(o.exit_code(), Some(0), "{label}");
    // A terminal resized before the command looks.
    let url = exec_url(&ep, &id, sh("sleep 1; stty size"), true, false).await;
    let o = command(&url, "v4.channel.k8s.io", None, Some((101, 33)), false)
        .await
        .expect("tty");
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "33 101",
        "{label}"
    );
    ep.teardown(&pod_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_over_spdy_crius() {
    exec_scenarios(Kind::Crius("runc")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_over_spdy_containerd() {
    exec_scenarios(Kind::Containerd).await;
}

/// 50 SPDY exec sessions at once, each with its own output and exit code. On crius only:
/// containerd 1.6 took 15 to 57 s for the same 50 execs here (over WebSocket as well as
/// SPDY, with every session ending at about the same moment), against our 60 s bound per
/// session; its SPDY framing is checked by the other scenarios.
async fn concurrent_sessions(kind: Kind) {
    let label = kind.label();
    let (_reg, ep, pod_id, id) = sleeper(kind).await.expect("pod");
    let mut set = tokio::task::JoinSet::new();
    for i in 0..50 {
        let url = exec_url(
            &ep,
            &id,
            sh(&format!("echo {i}; exit {}", i % 4)),
            false,
            false,
        )
        .await;
        set.spawn(async move {
            let o = command(&url, "v4.channel.k8s.io", None, None, true).await?;
            anyhow::ensure!(
                o.stdout == format!("{i}\n").into_bytes(),
                "session {i}: {o:?}"
            );
            anyhow::ensure!(o.exit_code() == Some(i % 4), "session {i}: {o:?}");
            anyhow::Ok(())
        });
    }
    while let Some(r) = set.join_next().await {
        r.expect("join")
            .unwrap_or_else(|e| panic!("{label}: {e:#}"));
    }
    ep.teardown(&pod_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sessions_over_spdy_crius() {
    concurrent_sessions(Kind::Crius("runc")).await;
}

/// Attach over SPDY to a container reading its stdin (stdin_once): stdin reaches it,
/// stdout and stderr come back apart, and the session reports success once it ends.
async fn attach_scenario(kind: Kind) {
    let label = kind.label();
    let reg = Registry::start(Default::default()).expect("registry");
    let images = push_test_images(&reg).await.expect("images");
    let ep = Endpoint::start(kind, &reg, &images)
        .await
        .expect("endpoint");
    let pod = ep.pod_config("spdy-attach");
    let pod_id = ep.run_pod(&pod).await.expect("pod");
    let mut ctr = container_config(
        "reader",
        &images.busybox,
        &["sh", "-c", "read l; echo got:$l; echo bye >&2"],
    );
    ctr.stdin = true;
    ctr.stdin_once = true;
    let id = ep
        .run_container(&pod_id, &pod, &ctr)
        .await
        .expect("container");
    let url = ep
        .client()
        .runtime
        .attach(cri::AttachRequest {
            container_id: id,
            stdin: true,
            tty: false,
            stdout: true,
            stderr: true,
        })
        .await
        .expect("attach")
        .into_inner()
        .url;
    let o = command(
        &url,
        "v4.channel.k8s.io",
        Some(b"hello\n".to_vec()),
        None,
        true,
    )
    .await
    .unwrap_or_else(|e| panic!("{label}: attach session: {e:#}"));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "got:hello\n", "{label}");
    assert_eq!(String::from_utf8_lossy(&o.stderr), "bye\n", "{label}");
    assert_eq!(
        o.exit_code(),
        Some(0),
        "{label}: error stream {:?}",
        String::from_utf8_lossy(&o.error)
    );
    ep.teardown(&pod_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_over_spdy_crius() {
    attach_scenario(Kind::Crius("runc")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_over_spdy_containerd() {
    attach_scenario(Kind::Containerd).await;
}

/// Port-forward over SPDY: a data/error stream pair per connection.
async fn port_forward(kind: Kind) {
    let label = kind.label();
    let reg = Registry::start(Default::default()).expect("registry");
    let images = push_test_images(&reg).await.expect("images");
    let ep = Endpoint::start(kind, &reg, &images)
        .await
        .expect("endpoint");
    let pod = ep.pod_config("spdy-pf");
    let pod_id = ep.run_pod(&pod).await.expect("pod");
    let ctr = container_config(
        "web",
        &images.busybox,
        &[
            "sh",
            "-c",
            "mkdir -p /www && echo spdy-ok > /www/i && exec httpd -f -p 80 -h /www",
        ],
    );
    ep.run_container(&pod_id, &pod, &ctr).await.expect("web");
    let url = ep
        .client()
        .runtime
        .port_forward(cri::PortForwardRequest {
            pod_sandbox_id: pod_id.clone(),
            port: vec![80],
        })
        .await
        .expect("PortForward")
        .into_inner()
        .url;
    let (session, chosen) = upgrade(&url, &["portforward.k8s.io"])
        .await
        .expect("upgrade");
    assert_eq!(chosen, "portforward.k8s.io");
    let mut body = String::new();
    for request in 0..50 {
        let h = |kind: &str, port: u16| {
            let mut h = Headers::new();
            h.append("streamType", kind);
            h.append("port", &port.to_string());
            h.append("requestID", &request.to_string());
            h
        };
        let port = if request == 0 { 81 } else { 80 };
        let mut error = session.open(h("error", port), false).expect("error stream");
        let mut data = session.open(h("data", port), false).expect("data stream");
        if port == 81 {
            // Nothing listens there: the error stream says so.
            let mut e = Vec::new();
            tokio::time::timeout(T, error.read_to_end(&mut e))
                .await
                .expect("in time")
                .expect("read");
            let e = String::from_utf8_lossy(&e);
            assert!(e.contains("81"), "{label}: error stream {e:?}");
            data.reset(crius::streaming::spdy::RstStatus::Cancel);
            continue;
        }
        data.write_all(b"GET /i HTTP/1.0\r\n\r\n")
            .await
            .expect("write");
        let mut got = Vec::new();
        let _ = tokio::time::timeout(T, data.read_to_end(&mut got)).await;
        body = String::from_utf8_lossy(&got).into_owned();
        if body.contains("spdy-ok") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        body.contains("200 OK") && body.contains("spdy-ok"),
        "{label}: {body:?}"
    );
    drop(session);
    ep.teardown(&pod_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_forward_over_spdy_crius() {
    port_forward(Kind::Crius("runc")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_forward_over_spdy_containerd() {
    port_forward(Kind::Containerd).await;
}

/// Open file descriptors of `pid` (0 once it is gone).
fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// What `pid`'s descriptors point at, for a failure message.
fn fd_targets(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .map(|t| t.display().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// One of each kind of exec session: WebSocket with stdin, SPDY with stdin, SPDY with a
/// terminal, and an ExecSync.
async fn one_of_each(ep: &Endpoint, id: &str) {
    let url = exec_url(ep, id, vec!["cat".into()], false, true).await;
    let s = crius_integration::streaming::exec(
        &url,
        &["v5.channel.k8s.io"],
        crius_integration::streaming::Input {
            stdin: Some(b"ws\n".to_vec()),
            ..Default::default()
        },
        T,
    )
    .await
    .expect("WebSocket exec");
    assert_eq!(s.stdout, b"ws\n");
    let url = exec_url(ep, id, vec!["cat".into()], false, true).await;
    let o = command(
        &url,
        "v4.channel.k8s.io",
        Some(b"spdy\n".to_vec()),
        None,
        true,
    )
    .await
    .expect("SPDY exec");
    assert_eq!(o.stdout, b"spdy\n");
    let url = exec_url(ep, id, sh("sleep 0.3; stty size"), true, false).await;
    let o = command(&url, "v4.channel.k8s.io", None, Some((80, 24)), false)
        .await
        .expect("SPDY tty exec");
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "24 80");
    let r = ep
        .client()
        .exec_sync(id, &["echo", "sync"], 10)
        .await
        .expect("ExecSync");
    assert_eq!(r.stdout, b"sync\n");
}

/// Finished exec sessions give back every descriptor they took, in the daemon and in the
/// pod's shim (stdio pipes, ptys, sockets, fifos).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_leave_no_fds_crius() {
    let (_reg, ep, pod_id, id) = sleeper(Kind::Crius("runc")).await.expect("pod");
    let shims = crius_integration::leaks::shims_of(&ep.socket());
    assert!(!shims.is_empty(), "the pod's shim is found");
    let count = || (fds(ep.pid()), shims.iter().map(|p| fds(*p)).sum::<usize>());
    // Warm up (lazily opened things stay), then take the lowest count seen as the base:
    // the daemon opens short-lived descriptors of its own (the CNI config scan).
    one_of_each(&ep, &id).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut base = count();
    for _ in 0..10 {
        let c = count();
        base = (base.0.min(c.0), base.1.min(c.1));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..10 {
        one_of_each(&ep, &id).await;
    }
    // A session whose client keeps a stream open (our tty client keeps its resize stream)
    // is let go 10 s after the command's end at the latest.
    let settled = crius_integration::host::wait_until(Duration::from_secs(20), || {
        let c = count();
        c.0 <= base.0 && c.1 <= base.1
    })
    .await;
    assert!(
        settled,
        "(daemon, shim) descriptors after 40 sessions: {:?}, before: {base:?}; the daemon's: {:?}",
        count(),
        fd_targets(ep.pid())
    );
    ep.teardown(&pod_id).await;
}
