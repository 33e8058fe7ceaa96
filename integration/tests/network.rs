//! Pod networking with real CNI plugins (bridge, host-local, portmap, loopback from
//! /usr/lib/cni), each scenario run on crius and on containerd 1.6's CRI plugin with the
//! same conflist on a test network of its own ([`TestNetwork`]: bridge, /24 and host-local
//! data dir no other running test uses). Where the two disagree on purpose, the scenario
//! asserts each side's behaviour and says why.
//!
//! Covered: pod IPs on the bridge and pod-to-pod / host-to-pod traffic (CNI 1.0.0 and
//! 0.4.0), hostPort through portmap, DNSConfig in resolv.conf, host-network pods,
//! NetworkReady following the conf dir, plugins that are missing, fail or hang, what a
//! chained plugin is handed (CNI_ARGS, capability args, prevResult), and no leaks over
//! hundreds of pods and across `kill -9` of crius.
//!
//! Traffic goes only to loopback and to the pods' own addresses. Every scenario ends by
//! comparing the network's host footprint (netns pins, cached results, veths, IP
//! allocations, iptables rules) and the endpoint's (pods, mounts, shims) with the ones
//! before it started.
//!
//! `cargo test -p crius-integration --test network -- --test-threads=2` (crius and its
//! shim built in the same target dir).

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use crius_integration::leaks::{left_behind, Footprint};
use crius_integration::net::{
    host_ipv4s, host_links, Conflist, HostLock, NetSnapshot, TestNetwork,
};
use crius_integration::pod::{
    container_config, namespaces, pod_security, poll, push_test_images, security, sh, Endpoint,
    EndpointOptions, Kind, TestImages,
};
use crius_integration::registry::Registry;
use crius_proto::cri::{self, NamespaceMode, PodSandboxState};

const CRIUS: Kind = Kind::Crius("runc");
const CONTAINERD: Kind = Kind::Containerd;

/// A test network, an endpoint on it and the network's footprint before any pod ran.
struct Setup {
    _reg: Registry,
    net: Arc<TestNetwork>,
    ep: Endpoint,
    base: NetSnapshot,
    footprint: Footprint,
}

impl Setup {
    /// An endpoint of `kind` on a fresh test network with `conflist`, set up by `opts`
    /// (its network is filled in here).
    async fn new(kind: Kind, conflist: Conflist, opts: EndpointOptions) -> anyhow::Result<Setup> {
        let net = Arc::new(TestNetwork::new()?);
        Setup::on(kind, net, conflist, opts).await
    }

    /// As [`Setup::new`] on a given network.
    async fn on(
        kind: Kind,
        net: Arc<TestNetwork>,
        conflist: Conflist,
        mut opts: EndpointOptions,
    ) -> anyhow::Result<Setup> {
        let reg = Registry::start(Default::default()).context("registry")?;
        let images = push_test_images(&reg).await.context("push images")?;
        opts.network = Some((net.clone(), conflist));
        let ep = start(kind, &reg, &images, opts).await?;
        let base = ep.net_snapshot();
        let footprint = Footprint::take(&ep).await?;
        Ok(Setup {
            _reg: reg,
            net,
            ep,
            base,
            footprint,
        })
    }

    /// Nothing of the network, no pod, mount or shim is left beyond what was there at the
    /// start.
    async fn assert_clean(&self, after: &str) {
        let label = self.ep.kind.label();
        let diff = self
            .net
            .settled(
                &self.ep.netns_dir(),
                &self.ep.cni_cache(),
                &self.base,
                Duration::from_secs(5),
            )
            .await;
        assert!(
            diff.is_empty(),
            "{label}: {after} left on the network: {diff:#?}\n{}",
            self.ep.log_tail()
        );
        let left = left_behind(&self.ep, &self.footprint, Duration::from_secs(5))
            .await
            .expect("footprint");
        assert!(
            left.is_empty(),
            "{label}: {after} left: {left:#?}\n{}",
            self.ep.log_tail()
        );
    }
}

async fn start(
    kind: Kind,
    reg: &Registry,
    images: &TestImages,
    opts: EndpointOptions,
) -> anyhow::Result<Endpoint> {
    Endpoint::start_with(kind, reg, images, opts)
        .await
        .with_context(|| format!("start {}", kind.label()))
}

/// `RunPodSandbox` bounded by a minute; the error carries the daemon's log.
async fn run_pod(ep: &Endpoint, pod: &cri::PodSandboxConfig) -> anyhow::Result<String> {
    tokio::time::timeout(Duration::from_secs(60), ep.run_pod(pod))
        .await
        .with_context(|| format!("{}: RunPodSandbox hung", ep.kind.label()))?
        .with_context(|| format!("{}: RunPodSandbox\n{}", ep.kind.label(), ep.log_tail()))
}

/// PodSandboxStatus's network: the IP and the additional ones.
async fn pod_ips(ep: &Endpoint, id: &str) -> anyhow::Result<(String, Vec<String>)> {
    let st = ep
        .client()
        .pod_status(id, false)
        .await?
        .status
        .context("no status")?;
    ensure!(
        st.state == PodSandboxState::SandboxReady as i32,
        "not ready: {st:?}"
    );
    let net = st.network.unwrap_or_default();
    Ok((
        net.ip,
        net.additional_ips.into_iter().map(|p| p.ip).collect(),
    ))
}

/// ExecSync's stdout, failing on a non-zero exit.
async fn exec_out(ep: &Endpoint, id: &str, cmd: &[&str]) -> anyhow::Result<String> {
    let r = tokio::time::timeout(Duration::from_secs(30), ep.client().exec_sync(id, cmd, 10))
        .await
        .with_context(|| format!("ExecSync {cmd:?} hung"))?
        .with_context(|| format!("ExecSync {cmd:?}"))?;
    ensure!(
        r.exit_code == 0,
        "ExecSync {cmd:?} exited {}: {}{}",
        r.exit_code,
        String::from_utf8_lossy(&r.stdout),
        String::from_utf8_lossy(&r.stderr)
    );
    Ok(String::from_utf8_lossy(&r.stdout).into_owned())
}

/// A container serving `body` as `/<file>` with busybox httpd on `port`.
fn web_server(image: &str, port: u16, file: &str, body: &str) -> cri::ContainerConfig {
    let mut c = container_config("web", image, &[]);
    c.command = sh(&format!(
        "mkdir -p /www && echo '{body}' > /www/{file} && exec httpd -f -p {port} -h /www"
    ));
    c
}

/// A plain HTTP/1.0 GET from the host; the body of a 200 answer.
fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .with_context(|| format!("connect {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)?;
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .with_context(|| format!("no HTTP header end: {answer:?}"))?;
    ensure!(head.contains(" 200 "), "GET {path}: {head}");
    Ok(body.to_string())
}

/// GETs until it answers (the server in a just-started container may not listen yet).
async fn http_get_eventually(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let p = path.to_string();
        let r = tokio::task::spawn_blocking(move || http_get(addr, &p)).await?;
        match r {
            Ok(body) => return Ok(body),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// `wget` from inside a container until it answers.
async fn wget_eventually(ep: &Endpoint, ctr: &str, url: &str) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        // No `-T`: busybox 1.35's wget crashes (SIGSEGV) with it; ExecSync's own timeout
        // bounds the call.
        match exec_out(ep, ctr, &["wget", "-q", "-O", "-", url]).await {
            Ok(body) => return Ok(body),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Pods get addresses on the bridge and reach each other.

async fn pods_reach_each_other(kind: Kind, cni_version: &str) {
    let s = Setup::new(kind, Conflist::new(cni_version), Default::default())
        .await
        .expect("setup");
    let ep = &s.ep;
    let mut pods = Vec::new();
    for name in ["a", "b"] {
        let cfg = ep.pod_config(&format!("reach-{name}"));
        let id = run_pod(ep, &cfg).await.expect("run pod");
        let (ip, more) = pod_ips(ep, &id).await.expect("pod status");
        assert!(
            s.net.contains(&ip) && ip != s.net.gateway().to_string(),
            "{}: pod {name} IP {ip:?} on {}",
            kind.label(),
            s.net.subnet()
        );
        assert!(more.is_empty(), "IPv4 only: {more:?}");
        let web = web_server(&ep.images.busybox, 8080, "name", &format!("pod-{name}"));
        let ctr = ep.run_container(&id, &cfg, &web).await.expect("web");
        // The address the runtime reports is the one on the pod's eth0.
        let addrs = exec_out(ep, &ctr, &["ip", "-o", "-4", "addr", "show", "eth0"])
            .await
            .expect("ip addr");
        assert!(
            addrs.contains(&format!(" {ip}/24 ")),
            "eth0 has {ip}: {addrs}"
        );
        pods.push((name, id, ctr, ip));
    }
    assert_ne!(pods[0].3, pods[1].3, "two pods, two addresses");
    // What the leak checks look for is there while the pods run: one netns pin, one cached
    // result, one veth on the bridge and one address allocated per pod.
    let during = ep.net_snapshot();
    assert_eq!(
        (
            during.netns.len(),
            during.results.len(),
            during.bridge_ports.len(),
            during.allocations.len()
        ),
        (2, 2, 2, 2),
        "{}: {during:#?}",
        kind.label()
    );
    let allocated: BTreeSet<String> = pods.iter().map(|p| p.3.clone()).collect();
    assert_eq!(
        during.allocations, allocated,
        "host-local files are the pod IPs"
    );
    // Each pod fetches from the other over the bridge, and the host reaches both through
    // the gateway address.
    for (from, to) in [(0, 1), (1, 0)] {
        let url = format!("http://{}:8080/name", pods[to].3);
        let body = wget_eventually(ep, &pods[from].2, &url)
            .await
            .unwrap_or_else(|e| panic!("{}: pod {} → {url}: {e:#}", kind.label(), pods[from].0));
        assert_eq!(body.trim(), format!("pod-{}", pods[to].0));
    }
    for (name, _, _, ip) in &pods {
        let addr: SocketAddr = format!("{ip}:8080").parse().expect("addr");
        let body = http_get_eventually(addr, "/name")
            .await
            .expect("host → pod");
        assert_eq!(body.trim(), format!("pod-{name}"));
    }
    for (_, id, _, _) in &pods {
        ep.teardown(id).await;
    }
    s.assert_clean("two pods").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_reach_each_other_crius() {
    pods_reach_each_other(CRIUS, "1.0.0").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_reach_each_other_containerd() {
    pods_reach_each_other(CONTAINERD, "1.0.0").await
}

/// The same at CNI 0.4.0, whose results differ in form (`ips` entries carry `version`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_reach_each_other_cni_0_4_0_crius() {
    pods_reach_each_other(CRIUS, "0.4.0").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_reach_each_other_cni_0_4_0_containerd() {
    pods_reach_each_other(CONTAINERD, "0.4.0").await
}

// ---------------------------------------------------------------------------------------
// hostPort through portmap.

const HOST_PORT: u16 = 18080;

async fn host_port(kind: Kind) {
    let s = Setup::new(
        kind,
        Conflist::new("0.4.0").with_portmap(),
        Default::default(),
    )
    .await
    .expect("setup");
    let ep = &s.ep;
    let mut cfg = ep.pod_config("hostport");
    cfg.port_mappings = vec![cri::PortMapping {
        protocol: cri::Protocol::Tcp as i32,
        container_port: 80,
        host_port: HOST_PORT as i32,
        host_ip: String::new(),
    }];
    let id = run_pod(ep, &cfg).await.expect("run pod");
    let web = web_server(
        &ep.images.busybox,
        80,
        "file",
        &format!("via-{}", kind.label()),
    );
    ep.run_container(&id, &cfg, &web).await.expect("web");
    let addr: SocketAddr = format!("127.0.0.1:{HOST_PORT}").parse().expect("addr");
    let body = http_get_eventually(addr, "/file")
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{}: GET {addr}/file: {e:#}\n{}",
                kind.label(),
                ep.log_tail()
            )
        });
    assert_eq!(body.trim(), format!("via-{}", kind.label()));
    // portmap's rules for this pod name the network.
    let during = ep.net_snapshot();
    assert!(
        during
            .iptables
            .iter()
            .any(|r| r.contains("DNAT") && r.contains(&HOST_PORT.to_string())),
        "a DNAT rule for the port: {:#?}",
        during.iptables
    );
    ep.teardown(&id).await;
    s.assert_clean("a hostPort pod").await;
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(),
        "{}: {addr} still answers after the pod is gone",
        kind.label()
    );
}

/// One after the other on the same host port (held against other test processes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_port_containerd_then_crius() {
    let _port = HostLock::take(&format!("port-{HOST_PORT}")).expect("port lock");
    let addr: SocketAddr = format!("127.0.0.1:{HOST_PORT}").parse().expect("addr");
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(),
        "something on the host already answers on {addr}"
    );
    host_port(CONTAINERD).await;
    host_port(CRIUS).await;
}

// ---------------------------------------------------------------------------------------
// DNS config and host network.

/// `nameserver`, `search` and `options` of a resolv.conf.
fn parse_resolv(text: &str) -> (Vec<String>, Vec<String>, Vec<String>) {
    let (mut servers, mut searches, mut options) = (Vec::new(), Vec::new(), Vec::new());
    for line in text.lines() {
        let mut it = line.split_whitespace();
        match it.next() {
            Some("nameserver") => servers.extend(it.map(String::from)),
            Some("search") => searches.extend(it.map(String::from)),
            Some("options") => options.extend(it.map(String::from)),
            _ => {}
        }
    }
    (servers, searches, options)
}

/// Interface names in `/proc/net/dev`.
fn proc_net_dev_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .skip(2)
        .filter_map(|l| Some(l.split_once(':')?.0.trim().to_string()))
        .collect()
}

async fn dns_and_host_network(kind: Kind) {
    let s = Setup::new(kind, Conflist::new("1.0.0"), Default::default())
        .await
        .expect("setup");
    let ep = &s.ep;
    let label = kind.label();

    // DNSConfig lands in the container's resolv.conf, as given and in order.
    let mut cfg = ep.pod_config("dns");
    let dns = cri::DnsConfig {
        servers: vec!["198.51.100.53".into(), "203.0.113.53".into()],
        searches: vec!["ns1.svc.example".into(), "svc.example".into()],
        options: vec!["ndots:3".into(), "timeout:1".into()],
    };
    cfg.dns_config = Some(dns.clone());
    let id = run_pod(ep, &cfg).await.expect("run pod");
    let ctr = ep
        .run_container(
            &id,
            &cfg,
            &container_config("dns", &ep.images.busybox, &["sleep", "100000"]),
        )
        .await
        .expect("container");
    let resolv = exec_out(ep, &ctr, &["cat", "/etc/resolv.conf"])
        .await
        .expect("resolv.conf");
    assert_eq!(
        parse_resolv(&resolv),
        (dns.servers, dns.searches, dns.options),
        "{label}: {resolv}"
    );
    ep.teardown(&id).await;

    // A host-network pod: no CNI (no allocation, nothing on the bridge), the container
    // sees the host's interfaces.
    let mut cfg = ep.pod_config("hostnet");
    // The kubelet sets no hostname for a host-network pod (runc refuses one without a UTS
    // namespace of its own).
    cfg.hostname = String::new();
    pod_security(&mut cfg).namespace_options =
        Some(namespaces(NamespaceMode::Node, NamespaceMode::Container));
    let id = run_pod(ep, &cfg).await.expect("run host-network pod");
    let mut c = container_config("hostnet", &ep.images.busybox, &["sleep", "100000"]);
    security(&mut c).namespace_options =
        Some(namespaces(NamespaceMode::Node, NamespaceMode::Container));
    let ctr = ep.run_container(&id, &cfg, &c).await.expect("container");
    // Other tests add and remove veths meanwhile: what the container sees must lie between
    // what the host had in common before and after, and all it had at either time.
    let before = host_links();
    let dev = exec_out(ep, &ctr, &["cat", "/proc/net/dev"])
        .await
        .expect("/proc/net/dev");
    let after = host_links();
    let seen = proc_net_dev_names(&dev);
    let common: BTreeSet<String> = before.intersection(&after).cloned().collect();
    let any: BTreeSet<String> = before.union(&after).cloned().collect();
    assert!(
        seen.is_superset(&common) && seen.is_subset(&any),
        "{label}: host-network container sees {seen:?}, host has {common:?}"
    );
    assert!(
        seen.contains(s.net.bridge()),
        "{label}: sees the test bridge"
    );
    let (ip, _) = pod_ips(ep, &id).await.expect("pod status");
    if kind.is_crius() {
        // crius reports the node's address, as the kubelet would fill it in.
        assert!(
            host_ipv4s().contains(&ip),
            "{label}: host-network pod IP {ip:?} is a host address ({:?})",
            host_ipv4s()
        );
    } else {
        // containerd 1.6 leaves a host-network pod's IP empty ("for sandboxes using the
        // node network we are not responsible for reporting the IP"): the kubelet uses
        // the node's.
        assert_eq!(ip, "", "{label}: host-network pod IP");
    }
    let during = ep.net_snapshot();
    assert!(
        during.allocations.is_empty() && during.bridge_ports.is_empty(),
        "{label}: a host-network pod went through CNI: {during:#?}"
    );
    ep.teardown(&id).await;
    s.assert_clean("DNS and host-network pods").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_and_host_network_crius() {
    dns_and_host_network(CRIUS).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_and_host_network_containerd() {
    dns_and_host_network(CONTAINERD).await
}

// ---------------------------------------------------------------------------------------
// NetworkReady follows the conf dir.

/// The NetworkReady condition.
async fn network_ready(ep: &Endpoint) -> anyhow::Result<cri::RuntimeCondition> {
    let st = ep.client().status(false).await?;
    st.status
        .unwrap_or_default()
        .conditions
        .into_iter()
        .find(|c| c.r#type == "NetworkReady")
        .context("no NetworkReady condition")
}

/// Polls until NetworkReady is `want` (at most 5 s); the condition then.
async fn network_ready_becomes(ep: &Endpoint, want: bool) -> cri::RuntimeCondition {
    let got = poll(Duration::from_secs(5), || async {
        network_ready(ep).await.ok().filter(|c| c.status == want)
    })
    .await;
    match got {
        Some(c) => c,
        None => panic!(
            "{}: NetworkReady never became {want}: {:?}\n{}",
            ep.kind.label(),
            network_ready(ep).await,
            ep.log_tail()
        ),
    }
}

async fn network_ready_toggles(kind: Kind) {
    let s = Setup::new(kind, Conflist::new("1.0.0"), Default::default())
        .await
        .expect("setup");
    let ep = &s.ep;
    let label = kind.label();
    network_ready_becomes(ep, true).await;

    let conflist = ep.cni_conf_dir().join("10-test.conflist");
    let parked = s.net.scratch().join("10-test.conflist");
    std::fs::rename(&conflist, &parked).expect("park conflist");
    let cond = network_ready_becomes(ep, false).await;
    assert_eq!(cond.reason, "NetworkPluginNotReady", "{label}: {cond:?}");
    assert!(!cond.message.is_empty(), "{label}: says why: {cond:?}");

    // No network, no pod: both refuse rather than run a pod without its network.
    let cfg = ep.pod_config("notready");
    let refused = tokio::time::timeout(Duration::from_secs(60), ep.run_pod(&cfg))
        .await
        .expect("RunPodSandbox hung");
    match refused {
        Ok(id) => {
            ep.teardown(&id).await;
            panic!("{label}: RunPodSandbox succeeded with no network config");
        }
        Err(e) => {
            let m = e.message().to_lowercase();
            assert!(
                m.contains("network") || m.contains("cni"),
                "{label}: the error says the network is not ready: {e:?}"
            );
        }
    }
    let listed = ep.client().list_pods(None).await.expect("list");
    if kind.is_crius() {
        assert!(listed.is_empty(), "{label}: refused pod listed: {listed:?}");
    } else {
        // containerd 1.6 keeps a sandbox whose network it could not tear down (here: no
        // plugin to run DEL with), NotReady with its netns pinned, for the kubelet to retry
        // StopPodSandbox; it is removed below once the network is back.
        assert!(
            listed.len() == 1 && listed[0].state == PodSandboxState::SandboxNotready as i32,
            "{label}: {listed:?}"
        );
    }

    // Back: ready again without a restart, and pods get addresses.
    std::fs::rename(&parked, &conflist).expect("restore conflist");
    if !kind.is_crius() {
        // containerd 1.6's conf dir watcher ignores Create events (a file renamed into the
        // dir is one) and reloads only on write, rename-away or removal: it stays not
        // ready until the file is written. crius rescans the dir and takes either.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let cond = network_ready(ep).await.expect("status");
        assert!(
            !cond.status,
            "{label}: reloaded on a rename into the dir: {cond:?}"
        );
        let text = std::fs::read(&conflist).expect("read conflist");
        std::fs::write(&conflist, text).expect("rewrite conflist");
    }
    let cond = network_ready_becomes(ep, true).await;
    assert!(cond.reason.is_empty(), "{label}: {cond:?}");
    for p in &listed {
        ep.client()
            .stop_pod(&p.id)
            .await
            .expect("stop the refused pod");
        ep.client()
            .remove_pod(&p.id)
            .await
            .expect("remove the refused pod");
    }
    let cfg = ep.pod_config("ready-again");
    let id = run_pod(ep, &cfg).await.expect("run pod");
    let (ip, _) = pod_ips(ep, &id).await.expect("pod status");
    assert!(s.net.contains(&ip), "{label}: {ip:?}");
    ep.teardown(&id).await;
    s.assert_clean("toggling the network").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_ready_toggles_crius() {
    network_ready_toggles(CRIUS).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_ready_toggles_containerd() {
    network_ready_toggles(CONTAINERD).await
}

// ---------------------------------------------------------------------------------------
// Failing plugins.

/// A plugin type no bin dir has, chained after the bridge: ADD fails once the bridge has
/// made the veth and allocated an address, which the DEL that follows must give back.
async fn missing_plugin(kind: Kind) {
    let conflist = Conflist::new("1.0.0").chain(serde_json::json!({"type": "crius-test-nosuch"}));
    let s = Setup::new(kind, conflist, Default::default())
        .await
        .expect("setup");
    let ep = &s.ep;
    let label = kind.label();
    let t0 = Instant::now();
    let cfg = ep.pod_config("nosuch");
    let r = tokio::time::timeout(Duration::from_secs(60), ep.run_pod(&cfg))
        .await
        .expect("RunPodSandbox hung");
    let e = match r {
        Ok(id) => {
            ep.teardown(&id).await;
            panic!("{label}: RunPodSandbox succeeded with a missing plugin");
        }
        Err(e) => e,
    };
    assert!(
        e.message().contains("crius-test-nosuch"),
        "{label}: the error names the plugin: {e:?}"
    );
    assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", t0.elapsed());
    let listed = ep.client().list_pods(None).await.expect("list");
    if kind.is_crius() {
        assert!(listed.is_empty(), "{label}: failed pod listed: {listed:?}");
    } else {
        // containerd 1.6 runs DEL through libcni, which stops at the first plugin it cannot
        // find, so the bridge's DEL never runs: the sandbox stays, NotReady, with its netns,
        // veth and address, and StopPodSandbox fails the same way for as long as the
        // conflist names the plugin. With the plugin dropped from the conflist, StopPodSandbox
        // tears it all down.
        assert!(
            listed.len() == 1 && listed[0].state == PodSandboxState::SandboxNotready as i32,
            "{label}: {listed:?}"
        );
        let kept = ep.net_snapshot();
        assert!(
            kept.allocations.len() == 1 && kept.bridge_ports.len() == 1 && kept.netns.len() == 1,
            "{label}: what containerd keeps: {kept:#?}"
        );
        let stop = ep.client().stop_pod(&listed[0].id).await;
        assert!(
            stop.as_ref()
                .is_err_and(|e| e.message().contains("crius-test-nosuch")),
            "{label}: {stop:?}"
        );
        let conflist = ep.cni_conf_dir().join("10-test.conflist");
        std::fs::write(&conflist, s.net.conflist_bytes(&Conflist::new("1.0.0")))
            .expect("fix conflist");
        let stopped = poll(Duration::from_secs(5), || async {
            ep.client().stop_pod(&listed[0].id).await.ok()
        })
        .await;
        assert!(
            stopped.is_some(),
            "{label}: StopPodSandbox with the plugin dropped"
        );
        ep.client()
            .remove_pod(&listed[0].id)
            .await
            .expect("remove the failed pod");
    }
    s.assert_clean("a missing plugin").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_plugin_crius() {
    missing_plugin(CRIUS).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_plugin_containerd() {
    missing_plugin(CONTAINERD).await
}

/// A plugin dir (under the network's scratch dir) holding a shell plugin `name` that runs
/// `add` on ADD and succeeds at once on anything else (DEL has nothing to undo).
fn script_plugin(net: &TestNetwork, name: &str, add: &str) -> anyhow::Result<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let dir = net.scratch().join("plugins");
    std::fs::create_dir_all(&dir)?;
    let script = dir.join(name);
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncase \"$CNI_COMMAND\" in\n\
             ADD) {add} ;;\n\
             VERSION) echo '{{\"cniVersion\":\"1.0.0\",\"supportedVersions\":[\"0.3.1\",\"0.4.0\",\"1.0.0\"]}}' ;;\n\
             esac\nexit 0\n"
        ),
    )?;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
    Ok(dir)
}

/// `crius-test-hang`: ADD writes its pid to `<dir>/hang.pid` and sleeps for an hour
/// (exec'd, so the pid is the sleeping process).
fn hang_plugin_dir(net: &TestNetwork) -> anyhow::Result<std::path::PathBuf> {
    let pid = net.scratch().join("plugins/hang.pid");
    script_plugin(
        net,
        "crius-test-hang",
        &format!("echo $$ > {}; exec sleep 3600", pid.display()),
    )
}

/// A plugin whose ADD fails the CNI way (an error object on stdout, exit 1), chained
/// after the bridge: RunPodSandbox fails with the plugin's message, and the DEL that
/// follows gives back what the bridge made.
async fn failing_plugin(kind: Kind) {
    let net = Arc::new(TestNetwork::new().expect("network"));
    let plugins = script_plugin(
        &net,
        "crius-test-fail",
        r#"echo '{"cniVersion":"1.0.0","code":11,"msg":"no address for you"}'; exit 1"#,
    )
    .expect("plugin dir");
    let conflist = Conflist::new("1.0.0").chain(serde_json::json!({"type": "crius-test-fail"}));
    let s = Setup::on(
        kind,
        net,
        conflist,
        EndpointOptions {
            cni_bin_dirs: vec![plugins, "/usr/lib/cni".into()],
            ..Default::default()
        },
    )
    .await
    .expect("setup");
    let ep = &s.ep;
    let label = kind.label();
    let cfg = ep.pod_config("fail");
    let r = tokio::time::timeout(Duration::from_secs(60), ep.run_pod(&cfg))
        .await
        .expect("RunPodSandbox hung");
    let e = match r {
        Ok(id) => {
            ep.teardown(&id).await;
            panic!("{label}: RunPodSandbox succeeded with a failing plugin");
        }
        Err(e) => e,
    };
    assert!(
        e.message().contains("no address for you") && e.message().contains("crius-test-fail"),
        "{label}: the plugin and its message: {e:?}"
    );
    let listed = ep.client().list_pods(None).await.expect("list");
    assert!(listed.is_empty(), "{label}: failed pod listed: {listed:?}");
    s.assert_clean("a failing plugin").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_plugin_crius() {
    failing_plugin(CRIUS).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_plugin_containerd() {
    failing_plugin(CONTAINERD).await
}

/// crius kills a plugin that outlives `plugin_timeout_secs` and fails the pod, naming it.
/// crius only: containerd 1.6 has no per-plugin timeout; its ADD waits as long as the
/// RunPodSandbox call's own context (see `hanging_plugin_containerd`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_plugin_crius() {
    let net = Arc::new(TestNetwork::new().expect("network"));
    let plugins = hang_plugin_dir(&net).expect("plugin dir");
    let conflist = Conflist::new("1.0.0").chain(serde_json::json!({"type": "crius-test-hang"}));
    let s = Setup::on(
        CRIUS,
        net,
        conflist,
        EndpointOptions {
            cni_bin_dirs: vec![plugins.clone(), "/usr/lib/cni".into()],
            crius_cni: vec![("plugin_timeout_secs".into(), "2".into())],
            ..Default::default()
        },
    )
    .await
    .expect("setup");
    let ep = &s.ep;
    let t0 = Instant::now();
    let cfg = ep.pod_config("hang");
    let r = tokio::time::timeout(Duration::from_secs(30), ep.run_pod(&cfg))
        .await
        .unwrap_or_else(|_| panic!("RunPodSandbox still waits after 30 s\n{}", ep.log_tail()));
    let took = t0.elapsed();
    let e = match r {
        Ok(id) => {
            ep.teardown(&id).await;
            panic!("RunPodSandbox succeeded with a hanging plugin");
        }
        Err(e) => e,
    };
    assert!(
        e.message().contains("crius-test-hang"),
        "the error names the plugin: {e:?}"
    );
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(15),
        "failed after the 2 s plugin timeout, not much later: {took:?}"
    );
    let pid: u32 = std::fs::read_to_string(plugins.join("hang.pid"))
        .expect("the plugin ran")
        .trim()
        .parse()
        .expect("pid");
    let gone = crius_integration::host::wait_until(Duration::from_secs(5), || {
        !crius_integration::host::pid_exists(pid)
            || crius_integration::host::process_state(pid) == Some('Z')
    })
    .await;
    assert!(gone, "the hanging plugin (pid {pid}) was killed");
    let listed = ep.client().list_pods(None).await.expect("list");
    assert!(listed.is_empty(), "failed pod listed: {listed:?}");
    s.assert_clean("a hanging plugin").await;
}

/// What containerd 1.6 does with the same hanging plugin: no timeout of its own, the ADD
/// lasts until the client gives up on the call; the plugin is then killed (exec with the
/// call's context) and the sandbox rolled back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_plugin_containerd() {
    let net = Arc::new(TestNetwork::new().expect("network"));
    let plugins = hang_plugin_dir(&net).expect("plugin dir");
    let conflist = Conflist::new("1.0.0").chain(serde_json::json!({"type": "crius-test-hang"}));
    let s = Setup::on(
        CONTAINERD,
        net,
        conflist,
        EndpointOptions {
            cni_bin_dirs: vec![plugins.clone(), "/usr/lib/cni".into()],
            ..Default::default()
        },
    )
    .await
    .expect("setup");
    let ep = &s.ep;
    let cfg = ep.pod_config("hang");
    let r = tokio::time::timeout(Duration::from_secs(8), ep.run_pod(&cfg)).await;
    assert!(
        r.is_err(),
        "containerd returned while the plugin hangs: {r:?}"
    );
    let pid: u32 = std::fs::read_to_string(plugins.join("hang.pid"))
        .expect("the plugin ran")
        .trim()
        .parse()
        .expect("pid");
    let gone = crius_integration::host::wait_until(Duration::from_secs(10), || {
        !crius_integration::host::pid_exists(pid)
            || crius_integration::host::process_state(pid) == Some('Z')
    })
    .await;
    assert!(
        gone,
        "the plugin (pid {pid}) is killed once the call is cancelled"
    );
    let listed = poll(Duration::from_secs(10), || async {
        ep.client()
            .list_pods(None)
            .await
            .ok()
            .filter(|l| l.is_empty())
    })
    .await;
    assert!(listed.is_some(), "cancelled pod still listed");
    s.assert_clean("a hanging plugin").await;
}

// ---------------------------------------------------------------------------------------
// No leaks over many pods.

/// `total` RunPodSandbox / PodSandboxStatus / StopPodSandbox / RemovePodSandbox cycles,
/// `width` at a time, each pod checked for an address on the network; stops early (with
/// the number done) once `stop` is set or a call fails while `tolerate_errors`.
async fn cycles(
    ep: &Endpoint,
    net: &TestNetwork,
    total: usize,
    width: usize,
    done: Arc<AtomicUsize>,
    tolerate_errors: bool,
) -> anyhow::Result<()> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..width {
        let mut c = ep.client();
        let handler = ep.handler();
        let next = next.clone();
        let done = done.clone();
        let configs: Vec<cri::PodSandboxConfig> = (0..total.div_ceil(width))
            .map(|i| ep.pod_config(&format!("cycle{i}")))
            .collect();
        let prefix = {
            let o = net.network_addr().octets();
            format!("{}.{}.{}.", o[0], o[1], o[2])
        };
        set.spawn(async move {
            for cfg in configs {
                if next.fetch_add(1, Ordering::SeqCst) >= total {
                    break;
                }
                let id = c.run_pod(&cfg, handler).await.context("RunPodSandbox")?;
                let st = c.pod_status(&id, false).await.context("status")?;
                let ip = st
                    .status
                    .and_then(|s| s.network)
                    .map(|n| n.ip)
                    .unwrap_or_default();
                ensure!(ip.starts_with(&prefix), "pod {id} IP {ip:?}");
                c.stop_pod(&id).await.context("StopPodSandbox")?;
                c.remove_pod(&id).await.context("RemovePodSandbox")?;
                done.fetch_add(1, Ordering::SeqCst);
            }
            Ok::<(), anyhow::Error>(())
        });
    }
    let mut first_err = None;
    while let Some(r) = set.join_next().await {
        let r = r.map_err(anyhow::Error::from).and_then(|r| r);
        if let Err(e) = r {
            if !tolerate_errors && first_err.is_none() {
                first_err = Some(e);
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

async fn no_leaks(kind: Kind, total: usize) {
    let s = Setup::new(kind, Conflist::new("1.0.0"), Default::default())
        .await
        .expect("setup");
    let ep = &s.ep;
    let t0 = Instant::now();
    let done = Arc::new(AtomicUsize::new(0));
    cycles(ep, &s.net, total, 10, done.clone(), false)
        .await
        .unwrap_or_else(|e| panic!("{}: cycle: {e:#}\n{}", kind.label(), ep.log_tail()));
    assert_eq!(done.load(Ordering::SeqCst), total);
    eprintln!("{}: {total} pod cycles in {:?}", kind.label(), t0.elapsed());
    s.assert_clean(&format!("{total} pod cycles")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_leaks_crius() {
    no_leaks(CRIUS, 300).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_leaks_containerd() {
    no_leaks(CONTAINERD, 300).await
}

/// crius is killed with -9 while ten pods at a time come and go; after the restart every
/// pod still listed is removed, and the network is as it was: what was in flight (a netns
/// pinned, an ADD done, not yet recorded, a cache entry half-written) is cleaned up too.
/// Three rounds, each killed at a slightly different moment; then more cycles run on the
/// restarted daemon.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_leaks_across_kill9_crius() {
    let mut s = Setup::new(CRIUS, Conflist::new("1.0.0"), Default::default())
        .await
        .expect("setup");
    for round in 0..3u64 {
        let done = Arc::new(AtomicUsize::new(0));
        let ep = &s.ep;
        let kill = async {
            let reached = poll(Duration::from_secs(120), || async {
                (done.load(Ordering::SeqCst) >= 60).then_some(())
            })
            .await;
            tokio::time::sleep(Duration::from_millis(17 * round)).await;
            if reached.is_some() {
                crius_integration::host::kill(ep.pid(), libc::SIGKILL);
            }
            reached.is_some()
        };
        let (r, reached) = tokio::join!(cycles(ep, &s.net, 100, 10, done.clone(), true), kill);
        assert!(reached, "round {round}: 60 cycles before the kill");
        r.expect("cycles tolerate the kill");
        let d = s.ep.crius().expect("crius");
        d.restart().expect("restart");
        s.ep.client = crius_integration::cri::CriClient::connect(&s.ep.socket())
            .await
            .expect("reconnect");
        let ep = &s.ep;
        let mut c = ep.client();
        let listed = c.list_pods(None).await.expect("list");
        for p in &listed {
            c.stop_pod(&p.id)
                .await
                .unwrap_or_else(|e| panic!("stop {} after restart: {e}\n{}", p.id, ep.log_tail()));
            c.remove_pod(&p.id).await.unwrap_or_else(|e| {
                panic!("remove {} after restart: {e}\n{}", p.id, ep.log_tail())
            });
        }
        eprintln!(
            "round {round}: killed after {} cycles, {} pods listed after the restart",
            done.load(Ordering::SeqCst),
            listed.len()
        );
        s.assert_clean(&format!("kill -9 mid-cycles (round {round}) and cleanup"))
            .await;
    }
    let more = Arc::new(AtomicUsize::new(0));
    cycles(&s.ep, &s.net, 50, 10, more, false)
        .await
        .unwrap_or_else(|e| panic!("cycles after restart: {e:#}\n{}", s.ep.log_tail()));
    s.assert_clean("cycles after the restarts").await;
}

// ---------------------------------------------------------------------------------------
// What the runtime hands the plugins.

/// A plugin dir holding `crius-test-record`: it saves its environment and stdin as
/// `<dir>/<COMMAND>.<n>.env` / `.json` (n counting calls of that command from 0), then
/// execs the real loopback plugin on the same stdin (which passes the previous result
/// through, as a chained plugin must).
fn record_plugin_dir(net: &TestNetwork) -> anyhow::Result<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let dir = net.scratch().join("record");
    std::fs::create_dir_all(&dir)?;
    let script = dir.join("crius-test-record");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nd={dir}\ni=0\n\
             while [ -e \"$d/$CNI_COMMAND.$i.env\" ]; do i=$((i+1)); done\n\
             env > \"$d/$CNI_COMMAND.$i.env\"\ncat > \"$d/$CNI_COMMAND.$i.json\"\n\
             exec /usr/lib/cni/loopback < \"$d/$CNI_COMMAND.$i.json\"\n",
            dir = dir.display()
        ),
    )?;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
    Ok(dir)
}

/// `value` with every object key lowercased (go-cni sends Go field names).
fn lower_keys(value: &serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(o) => o
            .iter()
            .map(|(k, v)| (k.to_lowercase(), lower_keys(v)))
            .collect::<serde_json::Map<_, _>>()
            .into(),
        serde_json::Value::Array(a) => a.iter().map(lower_keys).collect(),
        v => v.clone(),
    }
}

/// `KEY=VALUE` lines as a map.
fn env_map(text: &str) -> std::collections::BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `CNI_ARGS` (`K=V;K=V`) as a map.
fn cni_args(
    env: &std::collections::BTreeMap<String, String>,
) -> std::collections::BTreeMap<String, String> {
    env.get("CNI_ARGS")
        .map(|a| {
            a.split(';')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// What one runtime passed to the recording plugin on ADD and DEL.
#[derive(Debug)]
struct Recorded {
    add_env: std::collections::BTreeMap<String, String>,
    add: serde_json::Value,
    del_env: std::collections::BTreeMap<String, String>,
}

async fn plugin_inputs(kind: Kind) -> Recorded {
    let net = Arc::new(TestNetwork::new().expect("network"));
    let dir = record_plugin_dir(&net).expect("plugin dir");
    let conflist = Conflist::new("1.0.0").chain(serde_json::json!({
        "type": "crius-test-record",
        "capabilities": {"portMappings": true, "bandwidth": true, "dns": true},
    }));
    let s = Setup::on(
        kind,
        net,
        conflist,
        EndpointOptions {
            cni_bin_dirs: vec![dir.clone(), "/usr/lib/cni".into()],
            ..Default::default()
        },
    )
    .await
    .expect("setup");
    let ep = &s.ep;
    let label = kind.label();
    let mut cfg = ep.pod_config("record");
    // A mapping no portmap plugin acts on here: only what the runtime passes is looked at.
    cfg.port_mappings = vec![cri::PortMapping {
        protocol: cri::Protocol::Tcp as i32,
        container_port: 80,
        host_port: 18181,
        host_ip: String::new(),
    }];
    cfg.dns_config = Some(cri::DnsConfig {
        servers: vec!["198.51.100.53".into()],
        searches: vec!["svc.example".into()],
        options: vec!["ndots:2".into()],
    });
    cfg.annotations
        .insert("kubernetes.io/ingress-bandwidth".into(), "1M".into());
    cfg.annotations
        .insert("kubernetes.io/egress-bandwidth".into(), "2M".into());
    let id = run_pod(ep, &cfg).await.expect("run pod");
    let (ip, _) = pod_ips(ep, &id).await.expect("status");
    assert!(
        s.net.contains(&ip),
        "{label}: {ip:?} (the recorder passed the result on)"
    );
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
    let add_env = env_map(&read("ADD.0.env"));
    let add: serde_json::Value = serde_json::from_str(&read("ADD.0.json"))
        .unwrap_or_else(|e| panic!("{label}: ADD stdin: {e}"));
    // The netns ADD ran in is the pod's pin.
    let netns = add_env.get("CNI_NETNS").cloned().unwrap_or_default();
    assert!(
        std::path::Path::new(&netns).starts_with(ep.netns_dir()),
        "{label}: CNI_NETNS {netns:?} under {}",
        ep.netns_dir().display()
    );
    ep.teardown(&id).await;
    let del_env = env_map(&read("DEL.0.env"));
    let del: serde_json::Value = serde_json::from_str(&read("DEL.0.json"))
        .unwrap_or_else(|e| panic!("{label}: DEL stdin: {e}"));
    s.assert_clean("a recorded pod").await;

    // Both runtimes agree on these.
    let meta = cfg.metadata.clone().unwrap_or_default();
    for (what, env) in [("ADD", &add_env), ("DEL", &del_env)] {
        assert_eq!(
            env.get("CNI_COMMAND").map(String::as_str),
            Some(what),
            "{label}"
        );
        assert_eq!(env.get("CNI_CONTAINERID"), Some(&id), "{label} {what}");
        assert_eq!(
            env.get("CNI_IFNAME").map(String::as_str),
            Some("eth0"),
            "{label} {what}"
        );
        let args = cni_args(env);
        assert_eq!(
            args.get("K8S_POD_NAMESPACE"),
            Some(&meta.namespace),
            "{label} {what}: {args:?}"
        );
        assert_eq!(
            args.get("K8S_POD_NAME"),
            Some(&meta.name),
            "{label} {what}: {args:?}"
        );
        assert_eq!(
            args.get("K8S_POD_INFRA_CONTAINER_ID"),
            Some(&id),
            "{label} {what}: {args:?}"
        );
        assert_eq!(
            args.get("K8S_POD_UID"),
            Some(&meta.uid),
            "{label} {what}: {args:?}"
        );
    }
    assert_eq!(add["name"], s.net.name(), "{label}");
    let prev_ips = add["prevResult"]["ips"].to_string();
    assert!(
        prev_ips.contains(&ip),
        "{label}: the bridge's result is chained: {add}"
    );
    let rc = &add["runtimeConfig"];
    assert_eq!(
        del["runtimeConfig"], *rc,
        "{label}: DEL gets ADD's capability args"
    );
    assert_eq!(
        lower_keys(&rc["portMappings"]),
        lower_keys(
            &serde_json::json!([{"hostPort": 18181, "containerPort": 80, "protocol": "tcp"}])
        )
        .as_array()
        .map(|a| {
            // containerd adds `"HostIP": ""`.
            let mut m = a[0].clone();
            if !kind.is_crius() {
                m["hostip"] = "".into();
            }
            serde_json::json!([m])
        })
        .unwrap_or_default(),
        "{label}: {rc}"
    );
    assert_eq!(
        lower_keys(&rc["dns"]),
        serde_json::json!({"servers": ["198.51.100.53"], "searches": ["svc.example"], "options": ["ndots:2"]}),
        "{label}: {rc}"
    );
    let bw = lower_keys(&rc["bandwidth"]);
    assert_eq!(
        (&bw["ingressrate"], &bw["egressrate"]),
        (&1_000_000.into(), &2_000_000.into()),
        "{label}: {rc}"
    );
    if kind.is_crius() {
        // The CNI conventions' key names exactly (plugins not written in Go match them
        // case-sensitively); containerd 1.6 (go-cni) sends Go field names ("HostPort",
        // "IngressRate", …), which Go plugins accept as they parse JSON case-insensitively.
        assert_eq!(
            rc["portMappings"],
            serde_json::json!([{"hostPort": 18181, "containerPort": 80, "protocol": "tcp"}]),
            "{label}"
        );
        assert_eq!(
            rc["dns"],
            serde_json::json!({"servers": ["198.51.100.53"], "searches": ["svc.example"], "options": ["ndots:2"]}),
            "{label}"
        );
        // Kubernetes annotations have no burst; the bandwidth plugin wants one with a rate.
        // crius gives the kubelet's old kubenet value (MaxInt32), containerd MaxUint32:
        // both mean "no burst limit" in effect.
        assert_eq!(
            rc["bandwidth"],
            serde_json::json!({"ingressRate": 1_000_000, "ingressBurst": i32::MAX,
                               "egressRate": 2_000_000, "egressBurst": i32::MAX}),
            "{label}"
        );
    } else {
        assert_eq!(
            (&bw["ingressburst"], &bw["egressburst"]),
            (&u32::MAX.into(), &u32::MAX.into()),
            "{label}: {rc}"
        );
    }
    // DEL gets the cached ADD result (CNI ≥ 0.4.0).
    assert!(
        del["prevResult"]["ips"].to_string().contains(&ip),
        "{label}: DEL carries the cached result: {del}"
    );
    Recorded {
        add_env,
        add,
        del_env,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_inputs_crius_vs_containerd() {
    let (ours, theirs) = tokio::join!(plugin_inputs(CRIUS), plugin_inputs(CONTAINERD));
    // The same capability args, up to key case and what each asserted above (containerd's
    // empty HostIP, the burst values).
    let comparable = |r: &Recorded| {
        let mut rc = lower_keys(&r.add["runtimeConfig"]);
        if let Some(m) = rc["portmappings"]
            .get_mut(0)
            .and_then(|m| m.as_object_mut())
        {
            m.remove("hostip");
        }
        if let Some(b) = rc["bandwidth"].as_object_mut() {
            b.remove("ingressburst");
            b.remove("egressburst");
        }
        rc
    };
    assert_eq!(
        comparable(&ours),
        comparable(&theirs),
        "runtimeConfig differs"
    );
    let keys = |r: &Recorded| -> (BTreeSet<String>, BTreeSet<String>) {
        (
            cni_args(&r.add_env).into_keys().collect(),
            cni_args(&r.del_env).into_keys().collect(),
        )
    };
    assert_eq!(keys(&ours), keys(&theirs), "CNI_ARGS keys differ");
    let cni_env = |r: &Recorded| -> BTreeSet<String> {
        r.add_env
            .keys()
            .filter(|k| k.starts_with("CNI_"))
            .cloned()
            .collect()
    };
    assert_eq!(cni_env(&ours), cni_env(&theirs), "CNI_* variables differ");
}
