//! crius's own pod network: with an empty CNI conf dir and `default_network` on (the
//! embedded default), a pod gets a bridge address with no config written by anyone — what
//! `make run` gives a fresh machine. The conflist lands under the state dir, never in the
//! conf dir, and a user's config appearing there takes over. crius only: containerd 1.6
//! has no default network (it runs no pod until a conflist appears).
//!
//! The default network is pointed at a test network's free bridge and /24 so that tests
//! running at once never share it; everything else is the default conflist as shipped.

use std::time::Duration;

use crius_integration::cri::{CniConfigs, CriClient, Daemon, DaemonOptions};
use crius_integration::net::{Conflist, ResultCache, TestNetwork};
use crius_integration::pod::poll;
use crius_proto::cri;

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

fn pod(name: &str) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "default-net".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        ..Default::default()
    }
}

async fn network_condition(c: &mut CriClient) -> anyhow::Result<cri::RuntimeCondition> {
    let st = c.status(false).await?;
    st.status
        .and_then(|s| {
            s.conditions
                .into_iter()
                .find(|c| c.r#type == "NetworkReady")
        })
        .ok_or_else(|| anyhow::anyhow!("no NetworkReady condition"))
}

async fn pod_ip(c: &mut CriClient, id: &str) -> anyhow::Result<String> {
    Ok(c.pod_status(id, false)
        .await?
        .status
        .and_then(|s| s.network)
        .map(|n| n.ip)
        .unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_conf_dir_gets_the_default_network() -> anyhow::Result<()> {
    let net = TestNetwork::new()?;
    // The default network is a gateway bridge: its plugin turns IP forwarding on for the
    // host. Put it back as it was when the test ends.
    let forward = std::fs::read_to_string(IP_FORWARD)?;
    let result = scenario(&net).await;
    std::fs::write(IP_FORWARD, forward.trim())?;
    result
}

async fn scenario(net: &TestNetwork) -> anyhow::Result<()> {
    let d = Daemon::start_with(DaemonOptions {
        cni: vec![
            ("default_network".into(), "true".into()),
            ("default_bridge".into(), format!("{:?}", net.bridge())),
            ("default_subnet".into(), format!("{:?}", net.subnet())),
        ],
        cni_configs: CniConfigs::Empty,
        ..Default::default()
    })?;
    let netns_dir = d.dir().join("state").join("netns");
    let results = ResultCache::Own(d.dir().join("root").join("cni").join("results"));
    let before = net.snapshot(&netns_dir, &results);
    let mut c = CriClient::connect(&d.socket).await?;

    let cond = network_condition(&mut c).await?;
    assert!(
        cond.status,
        "NetworkReady with the default network: {cond:?}"
    );
    let written = d
        .dir()
        .join("state")
        .join("cni")
        .join("net.d")
        .join("10-crius-default.conflist");
    let text = std::fs::read_to_string(&written)?;
    let conflist: serde_json::Value = serde_json::from_str(&text)?;
    let kinds: Vec<&str> = conflist["plugins"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["type"].as_str())
        .collect();
    assert_eq!(kinds, ["bridge", "portmap", "loopback"], "{text}");
    assert_eq!(
        std::fs::read_dir(d.cni_conf_dir())?.count(),
        0,
        "the conf dir is the user's: nothing is written there"
    );

    let id = c
        .run_pod(&pod("dflt"), "")
        .await
        .map_err(|e| anyhow::anyhow!("RunPodSandbox: {e}\n{}", d.log()))?;
    let ip = pod_ip(&mut c, &id).await?;
    assert!(
        net.contains(&ip),
        "pod IP {ip:?} not in the default subnet {}",
        net.subnet()
    );
    c.stop_pod(&id).await?;
    assert_eq!(pod_ip(&mut c, &id).await?, "", "a stopped pod has no IP");
    c.remove_pod(&id).await?;
    let after = net.snapshot(&netns_dir, &results);
    let diff = before.diff(&after);
    assert!(diff.is_empty(), "the default network left: {diff:?}");

    // A user's config takes over without a restart; pods then get its addresses.
    let user = TestNetwork::new()?;
    std::fs::write(
        d.cni_conf_dir().join("10-user.conflist"),
        user.conflist_bytes(&Conflist::new("1.0.0")),
    )?;
    let switched = poll(Duration::from_secs(10), || {
        let socket = d.socket.clone();
        async move {
            let mut c = CriClient::connect(&socket).await.ok()?;
            let st = c.status(true).await.ok()?;
            let info = st.info.get("cniconfig")?.clone();
            info.contains("10-user.conflist").then_some(())
        }
    })
    .await;
    assert!(switched.is_some(), "the user's conflist was not picked up");
    let user_before = user.snapshot(&netns_dir, &results);
    let id = c.run_pod(&pod("user"), "").await?;
    let ip = pod_ip(&mut c, &id).await?;
    assert!(user.contains(&ip), "pod IP {ip:?} not in {}", user.subnet());
    c.stop_pod(&id).await?;
    c.remove_pod(&id).await?;
    assert!(user_before
        .diff(&user.snapshot(&netns_dir, &results))
        .is_empty());
    Ok(())
}
