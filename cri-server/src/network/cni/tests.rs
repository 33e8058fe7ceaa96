//! The chain logic against a double of [`PluginExec`]: order, `prevResult`, runtime args,
//! rollback, the cache and config reloads. Real plugins run in the integration tests.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::sync::Mutex;

use futures::future::BoxFuture;

use super::*;

/// What a fake plugin does for one command.
#[derive(Clone)]
enum Act {
    Ok(Value),
    Fail(&'static str),
    Hang,
}

/// One recorded call: plugin type, command, its stdin, its env.
type Call = (String, String, Value, HashMap<String, String>);

/// Plugins keyed by `(type, command)`; unlisted calls succeed with `{}` (DEL, CHECK).
#[derive(Default)]
struct Fake {
    acts: Mutex<HashMap<(String, String), Act>>,
    calls: Mutex<Vec<Call>>,
}

impl Fake {
    fn on(&self, plugin: &str, command: &str, act: Act) {
        self.acts
            .lock()
            .expect("lock")
            .insert((plugin.into(), command.into()), act);
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().expect("lock").clone()
    }

    fn summary(&self) -> Vec<String> {
        self.calls()
            .into_iter()
            .map(|(p, c, _, _)| format!("{c} {p}"))
            .collect()
    }
}

impl PluginExec for Arc<Fake> {
    fn run(&self, call: Invocation) -> BoxFuture<'static, Result<Vec<u8>, ExecError>> {
        let plugin = call
            .plugin
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let env: HashMap<String, String> = call.env.into_iter().collect();
        let command = env.get("CNI_COMMAND").cloned().unwrap_or_default();
        let stdin: Value = serde_json::from_slice(&call.stdin).unwrap_or(Value::Null);
        self.calls
            .lock()
            .expect("lock")
            .push((plugin.clone(), command.clone(), stdin, env));
        let act = self
            .acts
            .lock()
            .expect("lock")
            .get(&(plugin, command))
            .cloned()
            .unwrap_or(Act::Ok(serde_json::json!({})));
        let timeout = call.timeout;
        Box::pin(async move {
            match act {
                Act::Ok(v) => Ok(serde_json::to_vec(&v).unwrap_or_default()),
                Act::Fail(msg) => Err(ExecError::Failed {
                    status: "exit status: 1".into(),
                    stdout: serde_json::to_vec(&serde_json::json!({"code": 11, "msg": msg}))
                        .unwrap_or_default(),
                    stderr: Vec::new(),
                }),
                Act::Hang => Err(ExecError::Timeout(timeout)),
            }
        })
    }
}

struct Setup {
    dir: tempfile::TempDir,
    fake: Arc<Fake>,
    cni: Cni,
}

impl Setup {
    /// A conf dir holding `conflist` (if any), plugin dirs with `plugins` installed.
    fn new(conflist: Option<Value>, plugins: &[&str], default: bool) -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        let conf = dir.path().join("net.d");
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&conf).expect("mkdir");
        std::fs::create_dir_all(&bin).expect("mkdir");
        for p in plugins {
            let path = bin.join(p);
            std::fs::write(&path, "").expect("write");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        if let Some(c) = conflist {
            std::fs::write(conf.join("10-net.conflist"), c.to_string()).expect("write");
        }
        let fake = Arc::new(Fake::default());
        let settings = CniSettings {
            conf_dir: conf,
            bin_dirs: vec![dir.path().join("nothing-here"), bin],
            cache_dir: dir.path().join("cache"),
            plugin_timeout: Duration::from_secs(3),
            default_network: default.then(|| DefaultNetwork {
                dir: dir.path().join("state-net.d"),
                bridge: "crius9".into(),
                subnet: "10.123.0.0/16".into(),
                data_dir: dir.path().join("ipam"),
            }),
        };
        let cni = Cni::new(settings, Arc::new(fake.clone()));
        Setup { dir, fake, cni }
    }

    fn pod(&self) -> PodNetwork {
        let mut pod = PodConfig::default();
        pod.metadata.name = "web".into();
        pod.metadata.namespace = "ns1".into();
        pod.metadata.uid = "u-1".into();
        pod.port_mappings = vec![crate::sandbox::config::PortMapping {
            protocol: crate::sandbox::config::Protocol::Tcp,
            container_port: 80,
            host_port: 8080,
            host_ip: String::new(),
        }];
        self.cni
            .pod_network("sb1", Path::new("/run/netns/sb1"), &pod)
            .expect("pod network")
    }
}

fn chain(version: &str) -> Value {
    serde_json::json!({
        "cniVersion": version,
        "name": "testnet",
        "plugins": [
            {"type": "bridge", "bridge": "b0"},
            {"type": "portmap", "capabilities": {"portMappings": true}},
        ]
    })
}

fn bridge_result(ip: &str) -> Value {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "b0"}, {"name": "eth0", "sandbox": "/run/netns/sb1"}],
        "ips": [{"address": format!("{ip}/24"), "interface": 1}]
    })
}

#[tokio::test]
async fn add_chains_results_and_hands_each_plugin_its_args() {
    let s = Setup::new(Some(chain("1.0.0")), &["bridge", "portmap"], false);
    s.fake
        .on("bridge", "ADD", Act::Ok(bridge_result("10.1.0.5")));
    s.fake
        .on("portmap", "ADD", Act::Ok(bridge_result("10.1.0.5")));
    let att = s.cni.setup(&s.pod()).await.expect("setup");
    assert_eq!(att.network, "testnet");
    assert_eq!(att.ips, vec!["10.1.0.5".parse::<IpAddr>().expect("ip")]);
    let calls = s.fake.calls();
    assert_eq!(s.fake.summary(), ["ADD bridge", "ADD portmap"]);
    let (_, _, bridge_in, env) = &calls[0];
    assert_eq!(bridge_in["name"], "testnet");
    assert_eq!(bridge_in["cniVersion"], "1.0.0");
    assert!(bridge_in.get("prevResult").is_none());
    // bridge declares no capability: no runtimeConfig
    assert!(bridge_in.get("runtimeConfig").is_none());
    assert_eq!(env["CNI_CONTAINERID"], "sb1");
    assert_eq!(env["CNI_NETNS"], "/run/netns/sb1");
    assert_eq!(env["CNI_IFNAME"], "eth0");
    assert_eq!(
        env["CNI_ARGS"],
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID=sb1;K8S_POD_UID=u-1"
    );
    assert!(env["CNI_PATH"].ends_with("/bin"));
    let (_, _, portmap_in, _) = &calls[1];
    assert_eq!(portmap_in["prevResult"], bridge_result("10.1.0.5"));
    assert_eq!(
        portmap_in["runtimeConfig"]["portMappings"][0]["hostPort"],
        8080
    );
    assert_eq!(s.cni.attached(), vec!["sb1".to_string()]);
}

#[tokio::test]
async fn a_failed_add_runs_del_backwards_and_caches_nothing() {
    let s = Setup::new(Some(chain("1.0.0")), &["bridge", "portmap"], false);
    s.fake
        .on("bridge", "ADD", Act::Ok(bridge_result("10.1.0.6")));
    s.fake.on("portmap", "ADD", Act::Fail("iptables said no"));
    let err = s.cni.setup(&s.pod()).await.expect_err("must fail");
    let msg = err.to_string();
    assert!(
        msg.contains("portmap") && msg.contains("iptables said no") && msg.contains("ADD"),
        "{msg}"
    );
    assert_eq!(
        s.fake.summary(),
        ["ADD bridge", "ADD portmap", "DEL portmap", "DEL bridge"]
    );
    assert!(s.cni.attached().is_empty());
    // Nothing attached: teardown calls no plugin.
    s.cni.teardown("sb1").await.expect("teardown");
    assert_eq!(s.fake.calls().len(), 4);
}

#[tokio::test]
async fn a_missing_plugin_is_named_and_the_rest_is_undone() {
    let s = Setup::new(Some(chain("1.0.0")), &["bridge"], false);
    s.fake
        .on("bridge", "ADD", Act::Ok(bridge_result("10.1.0.7")));
    let err = s.cni.setup(&s.pod()).await.expect_err("must fail");
    assert!(matches!(err, CniError::PluginNotFound { ref plugin, .. } if plugin == "portmap"));
    assert!(err.to_string().contains("\"portmap\" not found"), "{err}");
    assert_eq!(s.fake.summary(), ["ADD bridge", "DEL bridge"]);
}

#[tokio::test]
async fn a_timeout_is_its_own_error() {
    let s = Setup::new(Some(chain("1.0.0")), &["bridge", "portmap"], false);
    s.fake.on("bridge", "ADD", Act::Hang);
    let err = s.cni.setup(&s.pod()).await.expect_err("must fail");
    assert!(
        matches!(err, CniError::Timeout { command: "ADD", .. }),
        "{err}"
    );
    assert!(err.to_string().contains("bridge"), "{err}");
}

#[tokio::test]
async fn teardown_repeats_what_add_did_even_after_the_config_changed() {
    let s = Setup::new(Some(chain("0.4.0")), &["bridge", "portmap", "ptp"], false);
    s.fake
        .on("bridge", "ADD", Act::Ok(bridge_result("10.1.0.8")));
    s.fake
        .on("portmap", "ADD", Act::Ok(bridge_result("10.1.0.8")));
    s.cni.setup(&s.pod()).await.expect("setup");
    // The admin swaps the network; the pod's DEL must still be bridge's.
    std::fs::write(
        s.dir.path().join("net.d/10-net.conflist"),
        r#"{"cniVersion":"1.0.0","name":"other","plugins":[{"type":"ptp"}]}"#,
    )
    .expect("write");
    assert!(s.cni.reload());
    assert_eq!(s.cni.network().expect("network").name, "other");
    s.cni.teardown("sb1").await.expect("teardown");
    let calls = s.fake.calls();
    let dels: Vec<_> = calls.iter().filter(|c| c.1 == "DEL").collect();
    assert_eq!(dels.len(), 2);
    assert_eq!(dels[0].0, "portmap");
    assert_eq!(dels[1].0, "bridge");
    // 0.4.0: DEL carries ADD's result and the same runtime args.
    assert_eq!(dels[1].2["prevResult"], bridge_result("10.1.0.8"));
    assert_eq!(
        dels[0].2["runtimeConfig"]["portMappings"][0]["containerPort"],
        80
    );
    assert_eq!(dels[1].2["name"], "testnet");
    // Again: nothing left to delete.
    s.cni.teardown("sb1").await.expect("teardown again");
    assert_eq!(s.fake.calls().len(), calls.len());
}

#[tokio::test]
async fn old_versions_get_no_prev_result_on_del_and_no_check() {
    let s = Setup::new(Some(chain("0.3.1")), &["bridge", "portmap"], false);
    s.fake
        .on("bridge", "ADD", Act::Ok(bridge_result("10.1.0.9")));
    s.fake
        .on("portmap", "ADD", Act::Ok(bridge_result("10.1.0.9")));
    s.cni.setup(&s.pod()).await.expect("setup");
    s.cni.check("sb1").await.expect("check is a no-op");
    s.cni.teardown("sb1").await.expect("teardown");
    for (_, command, stdin, _) in s.fake.calls() {
        assert_ne!(command, "CHECK");
        if command == "DEL" {
            assert!(stdin.get("prevResult").is_none(), "{stdin}");
        }
    }
}

#[tokio::test]
async fn check_runs_the_chain_with_the_cached_result() {
    let s = Setup::new(Some(chain("1.0.0")), &["bridge", "portmap"], false);
    s.fake
        .on("bridge", "ADD", Act::Ok(bridge_result("10.1.0.10")));
    s.fake
        .on("portmap", "ADD", Act::Ok(bridge_result("10.1.0.10")));
    s.cni.setup(&s.pod()).await.expect("setup");
    s.cni.check("sb1").await.expect("check");
    let checks: Vec<_> = s
        .fake
        .calls()
        .into_iter()
        .filter(|c| c.1 == "CHECK")
        .collect();
    assert_eq!(checks.len(), 2);
    assert_eq!(checks[0].2["prevResult"], bridge_result("10.1.0.10"));
    s.fake.on("portmap", "CHECK", Act::Fail("rule missing"));
    let err = s.cni.check("sb1").await.expect_err("check fails");
    assert!(err.to_string().contains("rule missing"), "{err}");
    assert!(s.cni.check("unknown").await.is_err());
}

#[tokio::test]
async fn readiness_follows_the_conf_dir() {
    let s = Setup::new(None, &["bridge", "portmap"], false);
    let why = s.cni.network().expect_err("no config yet");
    assert!(why.contains("no network config"), "{why}");
    assert!(matches!(
        s.cni.setup(&s.pod()).await,
        Err(CniError::NotReady(_))
    ));
    std::fs::write(
        s.dir.path().join("net.d/10-net.conflist"),
        chain("1.0.0").to_string(),
    )
    .expect("write");
    assert!(s.cni.reload());
    assert_eq!(s.cni.network().expect("ready").name, "testnet");
    assert!(!s.cni.reload(), "nothing changed");
    std::fs::remove_file(s.dir.path().join("net.d/10-net.conflist")).expect("rm");
    assert!(s.cni.reload());
    assert!(s.cni.network().is_err());
}

#[tokio::test]
async fn the_default_network_stands_in_for_an_empty_conf_dir_only() {
    let s = Setup::new(None, &["bridge", "portmap", "loopback"], true);
    let net = s.cni.network().expect("default network");
    assert_eq!(net.name, default_net::NAME);
    let kinds: Vec<_> = net.plugins.iter().map(|p| p.kind.as_str()).collect();
    assert_eq!(kinds, ["bridge", "portmap", "loopback"]);
    assert_eq!(net.raw["plugins"][0]["bridge"], "crius9");
    assert_eq!(
        net.raw["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
        "10.123.0.0/16"
    );
    // Written to its own dir; the conf dir stays the user's.
    assert!(s
        .dir
        .path()
        .join("state-net.d")
        .join(default_net::FILE)
        .exists());
    assert_eq!(
        std::fs::read_dir(s.dir.path().join("net.d"))
            .expect("readdir")
            .count(),
        0
    );
    std::fs::write(
        s.dir.path().join("net.d/50-user.conflist"),
        chain("1.0.0").to_string(),
    )
    .expect("write");
    assert!(s.cni.reload());
    assert_eq!(s.cni.network().expect("user network").name, "testnet");
}

#[tokio::test]
async fn a_missing_conf_dir_is_not_ready_until_it_appears() {
    let s = Setup::new(None, &["bridge"], false);
    let conf = s.dir.path().join("net.d");
    std::fs::remove_dir(&conf).expect("rmdir");
    assert!(s.cni.reload());
    let why = s.cni.network().expect_err("no dir");
    assert!(why.contains("net.d"), "{why}");
    assert!(
        !s.cni.reload(),
        "an absent dir stays absent: nothing to redo"
    );
    std::fs::create_dir(&conf).expect("mkdir");
    std::fs::write(conf.join("10-net.conflist"), chain("1.0.0").to_string()).expect("write");
    assert!(s.cni.reload());
    assert!(s.cni.network().is_ok());
}

#[tokio::test]
async fn pod_cidrs_reach_ip_ranges_plugins() {
    let s = Setup::new(
        Some(
            serde_json::json!({"cniVersion":"1.0.0","name":"n","plugins":[
            {"type":"bridge","capabilities":{"ipRanges":true}}]}),
        ),
        &["bridge"],
        false,
    );
    s.cni.set_pod_cidrs(vec!["10.244.3.0/24".into()]);
    s.fake
        .on("bridge", "ADD", Act::Ok(bridge_result("10.244.3.2")));
    s.cni.setup(&s.pod()).await.expect("setup");
    let calls = s.fake.calls();
    assert_eq!(
        calls[0].2["runtimeConfig"],
        serde_json::json!({"ipRanges": [[{"subnet": "10.244.3.0/24"}]]})
    );
}
