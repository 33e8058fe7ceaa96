//! The streaming server end to end over WebSocket: `Exec` URLs opened with each
//! `channel.k8s.io` variant, on crius and, for the variants containerd 1.6 speaks
//! (`v4.channel.k8s.io`, `channel.k8s.io`, `base64.channel.k8s.io`; v5 came later), on
//! containerd with the same client.

use std::time::Duration;

use crius_integration::pod::{container_config, push_test_images, sh, Endpoint, Kind};
use crius_integration::registry::Registry;
use crius_integration::streaming::{self, Input};
use crius_proto::cri;

const T: Duration = Duration::from_secs(60);

/// An endpoint with one pod running a long `sleep`; the container id.
async fn sleeper(kind: Kind) -> anyhow::Result<(Registry, Endpoint, String, String)> {
    let reg = Registry::start(Default::default())?;
    let images = push_test_images(&reg).await?;
    let ep = Endpoint::start(kind, &reg, &images).await?;
    let pod = ep.pod_config("stream");
    let pod_id = ep.run_pod(&pod).await?;
    let ctr = container_config("sleeper", &images.busybox, &["sleep", "100000"]);
    let id = ep.run_container(&pod_id, &pod, &ctr).await?;
    Ok((reg, ep, pod_id, id))
}

async fn exec_url(
    ep: &Endpoint,
    id: &str,
    cmd: &[String],
    tty: bool,
    stdin: bool,
) -> anyhow::Result<String> {
    let mut c = ep.client();
    let r = c
        .runtime
        .exec(cri::ExecRequest {
            container_id: id.into(),
            cmd: cmd.to_vec(),
            tty,
            stdin,
            stdout: true,
            stderr: !tty,
        })
        .await?
        .into_inner();
    Ok(r.url)
}

/// Output, stderr and exit codes in each protocol `kind` speaks.
async fn outputs_and_exit_codes(kind: Kind, protocols: &[&str]) {
    let (_reg, ep, pod_id, id) = sleeper(kind).await.expect("pod");
    for proto in protocols {
        let url = exec_url(&ep, &id, &sh("echo out; echo err >&2"), false, false)
            .await
            .expect("exec url");
        let s = streaming::exec(&url, &[proto], Input::default(), T)
            .await
            .unwrap_or_else(|e| panic!("{}: {proto}: {e:#}", kind.label()));
        assert_eq!(&s.protocol, proto);
        assert_eq!(s.stdout, b"out\n", "{proto}");
        assert_eq!(s.stderr, b"err\n", "{proto}");
        assert_eq!(
            s.exit_code(),
            Some(0),
            "{proto}: {:?}",
            String::from_utf8_lossy(&s.error)
        );

        let url = exec_url(&ep, &id, &sh("exit 7"), false, false)
            .await
            .expect("exec url");
        let s = streaming::exec(&url, &[proto], Input::default(), T)
            .await
            .expect("exec");
        assert_eq!(
            s.exit_code(),
            Some(7),
            "{}: {proto}: error channel {:?}",
            kind.label(),
            String::from_utf8_lossy(&s.error)
        );
    }
    ep.teardown(&pod_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_and_exit_codes_crius() {
    outputs_and_exit_codes(
        Kind::Crius("runc"),
        &[
            "v5.channel.k8s.io",
            "v4.channel.k8s.io",
            "channel.k8s.io",
            "base64.channel.k8s.io",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_and_exit_codes_containerd() {
    outputs_and_exit_codes(
        Kind::Containerd,
        &[
            "v4.channel.k8s.io",
            "channel.k8s.io",
            "base64.channel.k8s.io",
        ],
    )
    .await;
}

/// 10 MB through `cat`, byte for byte, with stdin closed by v5's close channel; a
/// terminal's size reaches `stty`; tokens work once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_tty_and_tokens_crius() {
    let (_reg, ep, pod_id, id) = sleeper(Kind::Crius("runc")).await.expect("pod");
    let data: Vec<u8> = (0..10_000_000u32)
        .map(|i| (i * 7 + i / 251) as u8)
        .collect();
    let url = exec_url(&ep, &id, &["cat".to_string()], false, true)
        .await
        .expect("url");
    let s = streaming::exec(
        &url,
        &["v5.channel.k8s.io"],
        Input {
            stdin: Some(data.clone()),
            ..Default::default()
        },
        T,
    )
    .await
    .expect("cat");
    assert_eq!(s.stdout.len(), data.len());
    assert!(s.stdout == data, "10 MB through cat came back different");
    assert_eq!(s.exit_code(), Some(0));

    // Used: the same URL again is 404, as is a made-up token.
    assert_eq!(streaming::http_status(&url).await.expect("status"), 404);
    let (base, _) = url.rsplit_once('/').expect("token");
    let fake = format!("{base}/{}", "0".repeat(64));
    assert_eq!(streaming::http_status(&fake).await.expect("status"), 404);

    let url = exec_url(&ep, &id, &sh("sleep 1; stty size"), true, false)
        .await
        .expect("url");
    let s = streaming::exec(
        &url,
        &["v5.channel.k8s.io"],
        Input {
            resize: Some((91, 27)),
            ..Default::default()
        },
        T,
    )
    .await
    .expect("tty");
    assert_eq!(
        String::from_utf8_lossy(&s.stdout).trim(),
        "27 91",
        "stty size under a resized terminal"
    );

    // 50 sessions at once.
    let mut set = tokio::task::JoinSet::new();
    for i in 0..50 {
        let url = exec_url(
            &ep,
            &id,
            &sh(&format!("echo {i}; exit {}", i % 4)),
            false,
            false,
        )
        .await
        .expect("url");
        set.spawn(async move {
            let s = streaming::exec(&url, &["v4.channel.k8s.io"], Input::default(), T).await?;
            anyhow::ensure!(
                s.stdout == format!("{i}\n").into_bytes(),
                "session {i}: {s:?}"
            );
            anyhow::ensure!(s.exit_code() == Some(i % 4), "session {i}: {s:?}");
            anyhow::Ok(())
        });
    }
    while let Some(r) = set.join_next().await {
        r.expect("join").expect("session");
    }
    ep.teardown(&pod_id).await;
}

/// Attach to a container's own stdio: input reaches its stdin, its output comes back
/// (from its log), with and without a terminal; the session ends when it exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_crius() {
    let reg = Registry::start(Default::default()).expect("registry");
    let images = push_test_images(&reg).await.expect("images");
    let ep = Endpoint::start(Kind::Crius("runc"), &reg, &images)
        .await
        .expect("endpoint");
    let pod = ep.pod_config("attach");
    let pod_id = ep.run_pod(&pod).await.expect("pod");
    for tty in [false, true] {
        let mut ctr = container_config(
            &format!("reader-{tty}"),
            &images.busybox,
            &["sh", "-c", "read l; echo got:$l; echo bye >&2"],
        );
        ctr.stdin = true;
        ctr.stdin_once = true;
        ctr.tty = tty;
        let id = ep
            .run_container(&pod_id, &pod, &ctr)
            .await
            .expect("container");
        let mut c = ep.client();
        let url = c
            .runtime
            .attach(cri::AttachRequest {
                container_id: id.clone(),
                stdin: true,
                tty,
                stdout: true,
                stderr: !tty,
            })
            .await
            .expect("attach")
            .into_inner()
            .url;
        let s = streaming::exec(
            &url,
            &["v5.channel.k8s.io"],
            Input {
                stdin: Some(b"hello\n".to_vec()),
                delay: Duration::from_millis(300),
                ..Default::default()
            },
            T,
        )
        .await
        .expect("attach session");
        let out = String::from_utf8_lossy(&s.stdout);
        assert!(out.contains("got:hello"), "tty={tty}: stdout {out:?}");
        if tty {
            // One terminal: stderr comes through it.
            assert!(out.contains("bye"), "tty: {out:?}");
        } else {
            assert_eq!(String::from_utf8_lossy(&s.stderr), "bye\n");
        }
        assert_eq!(
            s.exit_code(),
            Some(0),
            "{:?}",
            String::from_utf8_lossy(&s.error)
        );
    }
    // A container without stdin refuses an attach that asks for it.
    let ctr = container_config("no-stdin", &images.busybox, &["sleep", "1000"]);
    let id = ep
        .run_container(&pod_id, &pod, &ctr)
        .await
        .expect("container");
    let err = ep
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
        .expect_err("no stdin");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    ep.teardown(&pod_id).await;
}

/// Port-forward to a busybox httpd inside the pod's network namespace; a closed port
/// reports its error on the error channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_forward_crius() {
    let reg = Registry::start(Default::default()).expect("registry");
    let images = push_test_images(&reg).await.expect("images");
    let ep = Endpoint::start(Kind::Crius("runc"), &reg, &images)
        .await
        .expect("endpoint");
    let pod = ep.pod_config("pf");
    let pod_id = ep.run_pod(&pod).await.expect("pod");
    let ctr = container_config(
        "web",
        &images.busybox,
        &[
            "sh",
            "-c",
            "mkdir -p /www && echo forwarded-ok > /www/index.html && exec httpd -f -p 80 -h /www",
        ],
    );
    ep.run_container(&pod_id, &pod, &ctr).await.expect("web");
    let url_for = |port: i32| {
        let mut c = ep.client();
        let pod_id = pod_id.clone();
        async move {
            c.runtime
                .port_forward(cri::PortForwardRequest {
                    pod_sandbox_id: pod_id,
                    port: vec![port],
                })
                .await
                .map(|r| r.into_inner().url)
        }
    };
    let mut body = String::new();
    for _ in 0..50 {
        let url = url_for(80).await.expect("url");
        let f = streaming::port_forward(&url, b"GET /index.html HTTP/1.0\r\n\r\n", T)
            .await
            .expect("forward");
        assert_eq!(f.prefixes, vec![(0, 80), (1, 80)]);
        body = String::from_utf8_lossy(&f.data).into_owned();
        if body.contains("forwarded-ok") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await; // httpd still starting
    }
    assert!(
        body.contains("200 OK") && body.contains("forwarded-ok"),
        "{body:?}"
    );

    let url = url_for(81).await.expect("url");
    let f = streaming::port_forward(&url, b"x", T)
        .await
        .expect("forward");
    let err = String::from_utf8_lossy(&f.error);
    assert!(err.contains("81"), "error channel: {err:?}");
    assert!(f.data.is_empty());

    let bad = url_for(70000).await.expect_err("not a port");
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    ep.teardown(&pod_id).await;
}

/// URLs expire after `token_ttl_secs`, and beyond `max_pending` the oldest is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_expire_and_are_bounded_crius() {
    use crius_integration::cri::{CriClient, Daemon, DaemonOptions};
    let d = Daemon::start_with(DaemonOptions {
        settings: vec![
            ("streaming".into(), "token_ttl_secs".into(), "1".into()),
            ("streaming".into(), "max_pending".into(), "2".into()),
        ],
        ..Default::default()
    })
    .expect("daemon");
    let mut c = CriClient::connect(&d.socket).await.expect("connect");
    let pod = cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: "tok".into(),
            uid: "uid-tok".into(),
            namespace: "stream".into(),
            attempt: 0,
        }),
        ..Default::default()
    };
    let pod_id = c.run_pod(&pod, "").await.expect("pod");
    let url = || {
        let mut c = c.clone();
        let pod_id = pod_id.clone();
        async move {
            c.runtime
                .port_forward(cri::PortForwardRequest {
                    pod_sandbox_id: pod_id,
                    port: vec![80],
                })
                .await
                .expect("port forward url")
                .into_inner()
                .url
        }
    };
    // Bounded: the first of three is gone, the last two are still good (101: upgraded).
    let (a, b, third) = (url().await, url().await, url().await);
    assert_eq!(streaming::http_status(&a).await.expect("status"), 404);
    assert_eq!(streaming::http_status(&b).await.expect("status"), 101);
    // Expired.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(streaming::http_status(&third).await.expect("status"), 404);
    let _ = c.stop_pod(&pod_id).await;
    let _ = c.remove_pod(&pod_id).await;
}

/// With `tls_cert`/`tls_key` the streaming server speaks HTTPS: URLs say `https://`, and a
/// client trusting the certificate gets its session (a port-forward to a closed port here:
/// the pod needs no image).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_streaming_crius() {
    use crius_integration::cri::{CriClient, Daemon, DaemonOptions};
    let dir = tempfile::tempdir().expect("tempdir");
    // A CA, and a server certificate for 127.0.0.1 that it signs.
    let p = |n: &str| dir.path().join(n);
    let (ca, ca_key, cert, key, csr, ext) = (
        p("ca.pem"),
        p("ca-key.pem"),
        p("cert.pem"),
        p("key.pem"),
        p("req.csr"),
        p("ext.cnf"),
    );
    std::fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .expect("ext");
    let openssl = |args: &[&std::ffi::OsStr]| {
        let st = std::process::Command::new("openssl")
            .args(args)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl");
        assert!(st.success(), "openssl {args:?} failed");
    };
    let os = |s: &'static str| std::ffi::OsStr::new(s);
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut a: Vec<&std::ffi::OsStr> = vec![os("req"), os("-x509")];
    a.extend(ec.iter().map(|s| os(s)));
    a.extend([os("-days"), os("1"), os("-subj"), os("/CN=crius test CA")]);
    a.extend([
        os("-keyout"),
        ca_key.as_os_str(),
        os("-out"),
        ca.as_os_str(),
    ]);
    openssl(&a);
    let mut a: Vec<&std::ffi::OsStr> = vec![os("req")];
    a.extend(ec.iter().map(|s| os(s)));
    a.extend([os("-subj"), os("/CN=127.0.0.1")]);
    a.extend([os("-keyout"), key.as_os_str(), os("-out"), csr.as_os_str()]);
    openssl(&a);
    openssl(&[
        os("x509"),
        os("-req"),
        os("-in"),
        csr.as_os_str(),
        os("-CA"),
        ca.as_os_str(),
        os("-CAkey"),
        ca_key.as_os_str(),
        os("-CAcreateserial"),
        os("-days"),
        os("1"),
        os("-extfile"),
        ext.as_os_str(),
        os("-out"),
        cert.as_os_str(),
    ]);
    let d = Daemon::start_with(DaemonOptions {
        settings: vec![
            (
                "streaming".into(),
                "tls_cert".into(),
                format!("{:?}", cert.display().to_string()),
            ),
            (
                "streaming".into(),
                "tls_key".into(),
                format!("{:?}", key.display().to_string()),
            ),
        ],
        ..Default::default()
    })
    .expect("daemon");
    let mut c = CriClient::connect(&d.socket).await.expect("connect");
    let pod = cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: "tls".into(),
            uid: "uid-tls".into(),
            namespace: "stream".into(),
            attempt: 0,
        }),
        ..Default::default()
    };
    let pod_id = c.run_pod(&pod, "").await.expect("pod");
    let url = c
        .runtime
        .port_forward(cri::PortForwardRequest {
            pod_sandbox_id: pod_id.clone(),
            port: vec![8099],
        })
        .await
        .expect("url")
        .into_inner()
        .url;
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let f = streaming::port_forward_with(&url, b"x", T, Some(&ca))
        .await
        .expect("port-forward over TLS");
    assert_eq!(f.prefixes, vec![(0, 8099), (1, 8099)]);
    assert!(String::from_utf8_lossy(&f.error).contains("8099"));
    let _ = c.stop_pod(&pod_id).await;
    let _ = c.remove_pod(&pod_id).await;
}
