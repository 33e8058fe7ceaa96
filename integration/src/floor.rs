//! The floors cri-bench holds RunPodSandbox against, with no runtime in between: one bare
//! CNI ADD (and DEL) of a conflist, run by hand as the spec describes, and one bare
//! `runc create` + `runc start` of a pause-like process.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::Value;

use crate::bundle::{busybox_rootfs, oci_config, BundleSpec};
use crate::shim::random_id;

/// Runs `conflist`'s chain ADD then DEL in a fresh `ip netns` `runs` times; returns the
/// ADD and DEL durations (netns creation and removal not counted).
pub fn cni_add_del(
    conflist: &Value,
    bin_dir: &Path,
    runs: usize,
) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    let plugins = conflist["plugins"]
        .as_array()
        .context("conflist has no plugins")?;
    let mut adds = Vec::with_capacity(runs);
    let mut dels = Vec::with_capacity(runs);
    for _ in 0..runs {
        let id = random_id("");
        let ns = format!("crius-floor-{}", &id[..12]);
        run_ok(Command::new("ip").args(["netns", "add", &ns]))?;
        let netns = format!("/run/netns/{ns}");
        let res = (|| {
            let t = Instant::now();
            let mut prev: Option<Value> = None;
            for p in plugins {
                let out = plugin_call(conflist, p, "ADD", &id, &netns, bin_dir, prev.as_ref())?;
                prev = Some(serde_json::from_slice(&out).context("ADD result")?);
            }
            adds.push(t.elapsed());
            let t = Instant::now();
            for p in plugins.iter().rev() {
                plugin_call(conflist, p, "DEL", &id, &netns, bin_dir, prev.as_ref())?;
            }
            dels.push(t.elapsed());
            anyhow::Ok(())
        })();
        run_ok(Command::new("ip").args(["netns", "del", &ns]))?;
        res?;
    }
    Ok((adds, dels))
}

fn plugin_call(
    conflist: &Value,
    plugin: &Value,
    command: &str,
    id: &str,
    netns: &str,
    bin_dir: &Path,
    prev: Option<&Value>,
) -> anyhow::Result<Vec<u8>> {
    let mut conf = plugin.clone();
    conf["name"] = conflist["name"].clone();
    conf["cniVersion"] = conflist["cniVersion"].clone();
    if let Some(prev) = prev {
        conf["prevResult"] = prev.clone();
    }
    let kind = plugin["type"].as_str().context("plugin without type")?;
    let mut child = Command::new(bin_dir.join(kind))
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", bin_dir)
        .env(
            "CNI_ARGS",
            format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME=floor;K8S_POD_INFRA_CONTAINER_ID={id};K8S_POD_UID={id}"),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting plugin {kind}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(&serde_json::to_vec(&conf)?)?;
    }
    let out = child.wait_with_output()?;
    anyhow::ensure!(
        out.status.success(),
        "plugin {kind} {command}: {} {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out.stdout)
}

/// `runc create` + `runc start` of a sleeping busybox (the pause container's work for
/// runc), `runs` times; kill and delete are not counted.
pub fn pause_start(runs: usize) -> anyhow::Result<Vec<Duration>> {
    let dir = tempfile::Builder::new()
        .prefix("crius-floor-")
        .tempdir_in(crate::host::scratch_dir())?;
    let root = dir.path().join("runc-root");
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let id = random_id("floor-");
        let bundle = dir.path().join(&id);
        std::fs::create_dir_all(&bundle)?;
        let mut cfg = oci_config(&BundleSpec::sh(&id, "true"));
        cfg["process"]["args"] = serde_json::json!(["sleep", "100000"]);
        cfg["root"]["path"] = serde_json::json!(busybox_rootfs().display().to_string());
        cfg["root"]["readonly"] = serde_json::json!(true);
        std::fs::write(bundle.join("config.json"), serde_json::to_vec(&cfg)?)?;
        let runc = |args: &[&str]| {
            let mut c = Command::new("runc");
            c.arg("--root").arg(&root).args(args);
            c
        };
        let t = Instant::now();
        let res = run_ok(runc(&["create", "--bundle"]).arg(&bundle).arg(&id))
            .and_then(|()| run_ok(&mut runc(&["start", &id])));
        times.push(t.elapsed());
        let _ = run_ok(&mut runc(&["delete", "--force", &id]));
        res?;
    }
    Ok(times)
}

fn run_ok(cmd: &mut Command) -> anyhow::Result<()> {
    // No pipes: `runc create` hands its stdio to the container, which would keep a
    // captured pipe open until it exits.
    let status = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .with_context(|| format!("{cmd:?}"))?;
    anyhow::ensure!(status.success(), "{cmd:?}: {status}");
    Ok(())
}
