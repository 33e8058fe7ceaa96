//! shim-bench: our shim vs containerd's Go shim vs bare runc, side by side in one run.
//!
//! Reproduce (as root, after `make test` installed the dependencies):
//!
//! ```sh
//! make bench            # = cargo build --release --workspace --bins && target/release/shim-bench
//! target/release/shim-bench --runs 100
//! ```
//!
//! Figures:
//! * lifecycle of a `true` container, create + start + wait + delete, median and p90 over
//!   `--runs` runs (default 50): inside an already running shim (a container added to a live
//!   pod), with a fresh shim per container (launch + shutdown included, like a new pod), and
//!   bare `runc create` + `runc start` + wait + `runc delete` as the floor;
//! * shim RSS with 1 and with 10 `sleep` containers in one shim.

use std::path::Path;
use std::time::{Duration, Instant};

use crius_integration::bundle::{busybox_rootfs, oci_config, BundleSpec};
use crius_integration::host;
use crius_integration::shim::{random_id, Case, Fixture};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

struct Figures {
    median: Duration,
    p90: Duration,
}

fn summarize(mut v: Vec<Duration>) -> Figures {
    v.sort();
    Figures {
        median: percentile(&v, 0.5),
        p90: percentile(&v, 0.9),
    }
}

/// create+start+wait+delete in a shim that already runs a pod sandbox.
async fn lifecycle_in_live_shim(case: Case, runs: usize) -> anyhow::Result<Figures> {
    let fx = Fixture::new(case).await?;
    let pod = random_id("bench-pod-");
    let group = vec![("io.kubernetes.cri.sandbox-id".to_string(), pod.clone())];
    let mut sandbox = BundleSpec::sh(&pod, "sleep 100000");
    sandbox.annotations = group.clone();
    let sb = fx.run(&sandbox).await?;
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let mut spec = BundleSpec::sh(&random_id("bench-"), "true");
        spec.args = vec!["true".into()];
        spec.annotations = group.clone();
        let bundle = fx.bundle(&spec)?;
        let t = Instant::now();
        let (_b, client) = fx.connect(&spec.id, &bundle.dir).await?;
        client
            .create(runtime_v2_api::CreateTask {
                id: spec.id.clone(),
                bundle: bundle.dir.clone(),
                rootfs: bundle.rootfs.clone(),
                terminal: false,
                stdin: String::new(),
                stdout: String::new(),
                stderr: String::new(),
                options: Some(fx.options()),
                start_at_create: false,
            })
            .await?;
        client.start(&spec.id, "").await?;
        client.wait(&spec.id, "").await?;
        client.delete(&spec.id, "").await?;
        times.push(t.elapsed());
        let _ = std::fs::remove_dir_all(&bundle.dir);
        let _ = std::fs::remove_dir_all(bundle.dir.with_extension("snap"));
    }
    fx.cleanup(&sb).await;
    Ok(summarize(times))
}

/// create+start+wait+delete with a fresh shim each time (launch and shutdown included).
async fn lifecycle_fresh_shim(case: Case, runs: usize) -> anyhow::Result<Figures> {
    let fx = Fixture::new(case).await?;
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let mut spec = BundleSpec::sh(&random_id("bench-"), "true");
        spec.args = vec!["true".into()];
        let bundle = fx.bundle(&spec)?;
        let t = Instant::now();
        let (_b, client) = fx.connect(&spec.id, &bundle.dir).await?;
        client
            .create(runtime_v2_api::CreateTask {
                id: spec.id.clone(),
                bundle: bundle.dir.clone(),
                rootfs: bundle.rootfs.clone(),
                terminal: false,
                stdin: String::new(),
                stdout: String::new(),
                stderr: String::new(),
                options: Some(fx.options()),
                start_at_create: false,
            })
            .await?;
        client.start(&spec.id, "").await?;
        client.wait(&spec.id, "").await?;
        client.delete(&spec.id, "").await?;
        client.shutdown(&spec.id, false).await?;
        times.push(t.elapsed());
        let _ = std::fs::remove_dir_all(&bundle.dir);
        let _ = std::fs::remove_dir_all(bundle.dir.with_extension("snap"));
    }
    Ok(summarize(times))
}

fn run_checked(cmd: &mut std::process::Command) -> anyhow::Result<()> {
    // No pipes: `runc create` hands its stdio to the container, which would hold a captured
    // pipe open (and `output()` waiting for EOF) until it exits. Errors go to a file.
    let err_path = std::env::temp_dir().join(format!("crius-bench-{}.err", std::process::id()));
    let err = std::fs::File::create(&err_path)?;
    let status = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(err)
        .status()?;
    let text = std::fs::read_to_string(&err_path).unwrap_or_default();
    let _ = std::fs::remove_file(&err_path);
    anyhow::ensure!(status.success(), "{cmd:?}: {text}");
    Ok(())
}

/// The floor: bare `runc create` + `runc start` + wait + `runc delete`, plain rootfs dir.
fn lifecycle_bare_runc(runs: usize) -> anyhow::Result<Figures> {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) only sets a flag on this process.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
    let dir = tempfile::Builder::new()
        .prefix("crius-bench-")
        .tempdir_in("/tmp")?;
    let root = dir.path().join("runc-root");
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let id = random_id("bare-");
        let bundle = dir.path().join(&id);
        std::fs::create_dir_all(&bundle)?;
        let mut cfg = oci_config(&BundleSpec::sh(&id, "true"));
        cfg["process"]["args"] = serde_json::json!(["true"]);
        cfg["root"]["path"] = serde_json::json!(busybox_rootfs().display().to_string());
        cfg["root"]["readonly"] = serde_json::json!(true);
        std::fs::write(bundle.join("config.json"), serde_json::to_vec(&cfg)?)?;
        let pidfile = bundle.join("pid");
        let t = Instant::now();
        let runc = |args: &[&str]| {
            let mut c = std::process::Command::new("runc");
            c.arg("--root").arg(&root).args(args);
            c
        };
        run_checked(
            runc(&["create", "--bundle"])
                .arg(&bundle)
                .arg("--pid-file")
                .arg(&pidfile)
                .arg(&id),
        )?;
        let pid: i32 = std::fs::read_to_string(&pidfile)?.trim().parse()?;
        run_checked(&mut runc(&["start", &id]))?;
        let mut status = 0;
        // SAFETY: waitpid on our (subreaped) child with a valid status pointer.
        unsafe {
            libc::waitpid(pid, &mut status, 0);
        }
        run_checked(&mut runc(&["delete", &id]))?;
        times.push(t.elapsed());
        let _ = std::fs::remove_dir_all(&bundle);
    }
    Ok(summarize(times))
}

/// RSS (KiB) of the shim running `n` sleep containers in one pod.
async fn shim_rss(case: Case, n: usize) -> anyhow::Result<u64> {
    let fx = Fixture::new(case).await?;
    let pod = random_id("rss-pod-");
    let group = vec![("io.kubernetes.cri.sandbox-id".to_string(), pod.clone())];
    let mut containers = Vec::new();
    for i in 0..n {
        let id = if i == 0 {
            pod.clone()
        } else {
            random_id("rss-")
        };
        let mut spec = BundleSpec::sh(&id, "sleep 100000");
        spec.args = vec!["sleep".into(), "100000".into()];
        spec.annotations = group.clone();
        containers.push(fx.run(&spec).await?);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = containers[0]
        .client
        .connect_info(&containers[0].id)
        .await?
        .shim_pid;
    let rss = host::rss_kib(pid).unwrap_or(0);
    for c in containers.iter().rev() {
        fx.cleanup(c).await;
    }
    Ok(rss)
}

fn ms(d: Duration) -> String {
    format!("{:8.2}", d.as_secs_f64() * 1000.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut runs = 50usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--runs" => runs = args.next().and_then(|v| v.parse().ok()).unwrap_or(runs),
            other => anyhow::bail!("unknown argument {other:?} (usage: shim-bench [--runs N])"),
        }
    }
    anyhow::ensure!(
        Path::new(&host::workspace_binary("containerd-shim-crius-v2")).exists(),
        "build the shim first: cargo build --release --bins"
    );
    let ours = Case::crius("runc");
    let go = Case::go_runc();

    println!("lifecycle of a `true` container (create+start+wait+delete), {runs} runs each, ms");
    println!("{:<34} {:>8} {:>8}", "", "median", "p90");
    let bare = lifecycle_bare_runc(runs)?;
    let live_ours = lifecycle_in_live_shim(ours, runs).await?;
    let live_go = lifecycle_in_live_shim(go, runs).await?;
    let fresh_ours = lifecycle_fresh_shim(ours, runs).await?;
    let fresh_go = lifecycle_fresh_shim(go, runs).await?;
    for (name, f) in [
        ("bare runc create/start/delete", &bare),
        ("crius shim, live pod", &live_ours),
        ("Go runc-v2 shim, live pod", &live_go),
        ("crius shim, fresh shim", &fresh_ours),
        ("Go runc-v2 shim, fresh shim", &fresh_go),
    ] {
        println!("{name:<34} {} {}", ms(f.median), ms(f.p90));
    }
    let ratio = |a: &Figures, b: &Figures| a.median.as_secs_f64() / b.median.as_secs_f64();
    println!(
        "ratios (median): live pod crius/Go {:.2}, crius/bare runc {:.2}; fresh shim crius/Go {:.2}",
        ratio(&live_ours, &live_go),
        ratio(&live_ours, &bare),
        ratio(&fresh_ours, &fresh_go)
    );

    println!();
    println!("shim RSS, KiB");
    for n in [1usize, 10] {
        let a = shim_rss(ours, n).await?;
        let b = shim_rss(go, n).await?;
        println!(
            "{n:>2} container(s): crius {a:>7}  Go runc-v2 {b:>7}  ratio {:.2}",
            a as f64 / b.max(1) as f64
        );
    }
    Ok(())
}
