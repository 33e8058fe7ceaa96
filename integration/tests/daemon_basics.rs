//! The crius daemon itself: CRI Version and Status over its unix socket, validation before
//! anything is made, config handling on the command line. Also run against containerd 1.6's CRI
//! plugin for the parts where the two must agree.

use std::os::unix::fs::PermissionsExt;

use crius_integration::containerd::{Containerd, ContainerdOptions};
use crius_integration::cri::{CniConfigs, CriClient, Daemon, DaemonOptions};
use crius_integration::host;
use crius_proto::cri;

/// A daemon whose CNI conf dir starts empty (test daemons get a loopback-only conflist
/// otherwise).
fn no_cni_config() -> DaemonOptions {
    DaemonOptions {
        cni_configs: CniConfigs::Empty,
        ..Default::default()
    }
}

#[tokio::test]
async fn version_and_status_over_the_socket() {
    let mut d = Daemon::start_with(no_cni_config()).expect("daemon");
    let mode = std::fs::metadata(&d.socket)
        .expect("socket")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o660, "CRI socket must be 0660");
    let mut c = CriClient::connect(&d.socket).await.expect("connect");
    let v = c
        .runtime
        .version(cri::VersionRequest {
            version: "v1".into(),
        })
        .await
        .expect("version")
        .into_inner();
    assert_eq!(v.runtime_name, "crius");
    assert_eq!(v.runtime_api_version, "v1");

    let st = c
        .runtime
        .status(cri::StatusRequest { verbose: false })
        .await
        .expect("status")
        .into_inner();
    let conds = st.status.expect("conditions").conditions;
    let get = |t: &str| conds.iter().find(|c| c.r#type == t).cloned().expect(t);
    assert!(get("RuntimeReady").status);
    let net = get("NetworkReady");
    assert!(!net.status, "no CNI config yet");
    assert_eq!(net.reason, "NetworkPluginNotReady");
    assert!(st.info.is_empty(), "info only when verbose");

    // A config appears: NetworkReady flips without a restart (the conf dir is rescanned
    // about every 0.5 s).
    std::fs::write(
        d.cni_conf_dir().join("10-test.conflist"),
        r#"{"cniVersion":"1.0.0","name":"t","plugins":[{"type":"loopback"}]}"#,
    )
    .expect("conflist");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let st = loop {
        let st = c
            .runtime
            .status(cri::StatusRequest { verbose: true })
            .await
            .expect("status")
            .into_inner();
        let conds = st.status.clone().expect("conditions").conditions;
        let ready = conds.iter().any(|c| c.r#type == "NetworkReady" && c.status);
        if ready {
            break st;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "NetworkReady within 5 s: {conds:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let cfg: serde_json::Value =
        serde_json::from_str(st.info.get("config").expect("verbose config")).expect("json");
    assert_eq!(cfg["default_handler"], "runc");
    let handlers: serde_json::Value =
        serde_json::from_str(st.info.get("handlers").expect("verbose handlers")).expect("json");
    let kata = handlers
        .as_array()
        .expect("array")
        .iter()
        .find(|h| h["name"] == "kata")
        .expect("kata listed");
    assert!(kata["error"]
        .as_str()
        .unwrap_or_default()
        .contains("containerd-shim-kata-v2"));

    let e = c
        .runtime
        .run_pod_sandbox(cri::RunPodSandboxRequest::default())
        .await
        .expect_err("a pod without config");
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("config"), "{}", e.message());
    // A handler whose shim is missing is not offered to the kubelet.
    let st = c
        .runtime
        .status(cri::StatusRequest { verbose: false })
        .await
        .expect("status")
        .into_inner();
    let names: Vec<_> = st
        .runtime_handlers
        .iter()
        .map(|h| h.name.as_str())
        .collect();
    assert!(
        names.contains(&"runc") && !names.contains(&"kata"),
        "{names:?}"
    );
    // Streaming RPCs validate before handing out a URL: an attach asking for no stream.
    let e = c
        .runtime
        .attach(cri::AttachRequest::default())
        .await
        .expect_err("no stream asked for");
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("stdout"), "{}", e.message());
    // Images are served: the built-in pause image is there with no registry at all.
    let images = c
        .image
        .list_images(cri::ListImagesRequest::default())
        .await
        .expect("list images")
        .into_inner()
        .images;
    assert!(
        images.iter().any(|i| i
            .repo_tags
            .contains(&"crius.local/pause:builtin".to_string())
            && i.pinned),
        "{images:?}"
    );

    let st = d.stop().expect("crius stops on SIGTERM");
    assert!(st.success(), "{st:?}: {}", d.log());
    assert!(!d.socket.exists(), "socket removed on shutdown");
}

#[test]
fn bad_config_names_line_and_key() {
    let dir = tempfile::tempdir().expect("tmp");
    let crius = host::workspace_binary("crius");
    let out = std::process::Command::new(&crius)
        .args(["config", "default"])
        .output()
        .expect("config default");
    let text = String::from_utf8(out.stdout)
        .expect("utf8")
        .replace("log_level", "log_levle");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, text).expect("write");
    let out = std::process::Command::new(&crius)
        .arg("--config")
        .arg(&path)
        .output()
        .expect("crius");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("log_levle") && err.contains("line"), "{err}");
}

/// containerd 1.6's CRI plugin answers Version with its own name and the same API version;
/// both report RuntimeReady and, with no CNI config, NetworkReady=false with the same reason.
#[tokio::test]
async fn status_agrees_with_containerd() {
    let ctd = Containerd::start(ContainerdOptions {
        cri: true,
        path_dirs: vec![],
        ..Default::default()
    })
    .expect("containerd");
    let mut theirs = CriClient::connect(&ctd.socket)
        .await
        .expect("connect containerd");
    let d = Daemon::start_with(no_cni_config()).expect("daemon");
    let mut ours = CriClient::connect(&d.socket).await.expect("connect crius");
    let vt = theirs
        .runtime
        .version(cri::VersionRequest::default())
        .await
        .expect("containerd version")
        .into_inner();
    let vo = ours
        .runtime
        .version(cri::VersionRequest::default())
        .await
        .expect("crius version")
        .into_inner();
    assert_eq!(vt.runtime_name, "containerd");
    assert_eq!(vo.runtime_api_version, vt.runtime_api_version);
    let conds = |r: cri::StatusResponse| {
        let mut v: Vec<(String, bool)> = r
            .status
            .map(|s| s.conditions)
            .unwrap_or_default()
            .into_iter()
            .map(|c| (c.r#type, c.status))
            .collect();
        v.sort();
        v
    };
    let st = theirs
        .runtime
        .status(cri::StatusRequest::default())
        .await
        .expect("containerd status")
        .into_inner();
    let so = ours
        .runtime
        .status(cri::StatusRequest::default())
        .await
        .expect("crius status")
        .into_inner();
    // containerd's default CNI conf dir is /etc/cni/net.d; on a host without configs there,
    // both say NetworkReady=false. Only compare when the host has none.
    if std::fs::read_dir("/etc/cni/net.d")
        .map(|d| d.count() == 0)
        .unwrap_or(true)
    {
        assert_eq!(conds(so), conds(st));
    }
}
