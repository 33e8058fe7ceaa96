//! cri-bench: the CRI RuntimeService, crius vs containerd 1.6, side by side in one run.
//!
//! Reproduce (as root):
//!
//! ```sh
//! cargo build --release -p crius -p crius-shim -p crius-integration
//! target/release/cri-bench --pods 30 --containers 1000
//! ```
//!
//! `--crius-only` skips containerd (ratios then read NaN), for quick looks while tuning.
//!
//! `--settle-ms N` (default 100) is a pause before every timed call: the calls alternate
//! between the two daemons on one small machine, and without it a call would start while
//! the other runtime's last call still settles (its shim, its event handling, a Go GC)
//! and pay for it. The kubelet does not call back to back either.
//!
//! `--keep-logs DIR` writes each daemon's log to `DIR/<runtime>.log` (run them with
//! `CRIUS_LOG=crius=debug` to see each step's timestamps).
//!
//! It must be the release build: the crius that runs is the one next to the executable
//! (`host::target_dir()`), with its shim beside it.
//!
//! Set-up: one local `docker-registry` holding a busybox image and a pause stand-in; crius
//! (handler `runc`: our shim driving runc, built-in pause) and containerd (CRI plugin, Go
//! shim, the same runc, the pause stand-in as `sandbox_image`, a bridge CNI config since
//! containerd 1.6 needs one for pod networks) each on a fresh root under `$CRIUS_TEST_TMPDIR`
//! (default `/var/tmp`). Both pull the images over CRI first. Both daemons are up for the
//! whole run and the calls alternate between them (one in flight at a time, the order
//! flipping each round), so a machine that speeds up or slows down during the run weighs
//! on both alike.
//!
//! Measured, per runtime:
//! * `RunPodSandbox`, `CreateContainer`+`StartContainer` (a `sleep`), and
//!   `StopPodSandbox`+`RemovePodSandbox`: p50 and p90 over `--pods` pods, one at a time;
//! * daemon RSS (`VmRSS`, and `VmHWM` the peak so far) and the total RSS of the shims
//!   serving this daemon, with 20 pods running (or `--pods` if fewer);
//! * `ListContainers` with `--containers` containers (created, not started, spread over 10
//!   pods): median of `--list-calls` calls (21), timed to the last byte of the reply (the
//!   runtime's work: listing, encoding, sending), which is then decoded untimed and checked
//!   to hold every container. The client's decoding (about 1 ms for 1000 containers, the
//!   same for either runtime) is printed on the next line as an end-to-end call through
//!   the generated client, for reference.
//!
//! Both runtimes' pods go through the same CNI conflist (bridge + host-local + loopback,
//! CNI 0.4.0, each runtime on a bridge and /24 of its own, `--portmap` adds portmap), so
//! RunPodSandbox includes a real CNI ADD on both sides.
//!
//! The floor, measured in the same run with no runtime in between (`integration::floor`):
//! a bare CNI ADD (and DEL) of the same conflist in a fresh `ip netns`, and a bare
//! `runc create` + `runc start` of a sleeping busybox. The RunPodSandbox target against it
//! is p50 ≤ 1.5 × (bare ADD p50 + bare pause start p50); DESIGN.md's Create+Start target
//! against it is p50 ≤ 1.3 × the bare create + start p50.

use std::time::{Duration, Instant};

use anyhow::Context;
use crius_integration::cri::CriClient;
use crius_integration::floor;
use crius_integration::host;
use crius_integration::leaks::{hwm_kib, shims_rss_kib};
use crius_integration::net::{Conflist, TestNetwork};
use crius_integration::pod::{container_config, push_test_images, Endpoint, EndpointOptions, Kind};
use crius_integration::registry::Registry;

/// Targets as crius/containerd ratios.
const T_RUNP: f64 = 0.6;
const T_START: f64 = 0.8;
/// DESIGN.md: Create+Start p50 ≤ 1.3 × a bare `runc create` + `runc start`.
const T_START_FLOOR: f64 = 1.3;
const T_LIST: f64 = 0.3;
const T_RSS: f64 = 0.3;
/// RunPodSandbox p50 against the floor (bare CNI ADD + bare pause start).
const T_FLOOR: f64 = 1.5;

#[derive(Debug, Default, Clone)]
struct Figures {
    run_pod: Vec<Duration>,
    create_start: Vec<Duration>,
    stop_remove: Vec<Duration>,
    /// ListContainers to the last byte of the reply.
    list: Vec<Duration>,
    /// ListContainers decoded by the client, end to end.
    list_decoded: Vec<Duration>,
    daemon_rss_kib: u64,
    daemon_hwm_kib: u64,
    shims_rss_kib: u64,
    pods_at_rss: usize,
    containers_listed: usize,
}

fn pct(v: &[Duration], p: f64) -> Duration {
    let mut s = v.to_vec();
    s.sort();
    if s.is_empty() {
        return Duration::ZERO;
    }
    s[(((s.len() - 1) as f64) * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One runtime under test and what was measured of it.
struct Side {
    kind: Kind,
    ep: Endpoint,
    c: crius_integration::cri::CriClient,
    f: Figures,
    running: Vec<String>,
}

/// The sides in the order to visit them in round `round`: the order alternates, so that
/// neither runtime always follows the other.
fn order(round: usize, n: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    if round % 2 == 1 {
        v.reverse();
    }
    v
}

/// How much to measure, and how.
#[derive(Debug, Clone, Copy)]
struct Plan {
    /// Pods run, one at a time, per runtime.
    pods: usize,
    /// Containers listed by ListContainers.
    containers: usize,
    /// ListContainers calls per runtime.
    list_calls: usize,
    /// The pause before every timed call.
    settle: Duration,
}

/// Runs every phase with the runtimes interleaved call by call (both daemons up, one
/// call in flight at a time), so drift in the machine's speed during the run falls on
/// both alike.
async fn measure(
    kinds: &[Kind],
    reg: &Registry,
    plan: &Plan,
    keep_logs: Option<&std::path::Path>,
    conflist: &Conflist,
) -> anyhow::Result<Vec<(Kind, Figures)>> {
    let Plan {
        pods,
        containers,
        list_calls,
        settle,
    } = *plan;
    let images = push_test_images(reg).await?;
    let mut sides = Vec::new();
    for &kind in kinds {
        let opts = EndpointOptions {
            network: Some((
                std::sync::Arc::new(TestNetwork::new().context("test network")?),
                conflist.clone(),
            )),
            ..Default::default()
        };
        let ep = Endpoint::start_with(kind, reg, &images, opts).await?;
        let c = ep.client();
        sides.push(Side {
            kind,
            ep,
            c,
            f: Figures::default(),
            running: Vec::new(),
        });
    }
    let rss_at = pods.min(20);
    for i in 0..pods {
        for k in order(i, sides.len()) {
            let s = &mut sides[k];
            let label = s.kind.label();
            let cfg = s.ep.pod_config(&format!("bench{i}"));
            tokio::time::sleep(settle).await;
            let t = Instant::now();
            let id =
                s.ep.run_pod(&cfg)
                    .await
                    .with_context(|| format!("{label}: RunPodSandbox: {}", s.ep.log_tail()))?;
            s.f.run_pod.push(t.elapsed());
            let ctr = container_config("sleeper", &images.busybox, &["sleep", "1000000"]);
            tokio::time::sleep(settle).await;
            let t = Instant::now();
            let cid =
                s.c.create_container(&id, &ctr, &cfg)
                    .await
                    .with_context(|| format!("{label}: CreateContainer"))?;
            s.c.start(&cid)
                .await
                .with_context(|| format!("{label}: StartContainer"))?;
            s.f.create_start.push(t.elapsed());
            s.running.push(id);
        }
        if i + 1 == rss_at {
            tokio::time::sleep(Duration::from_millis(500)).await;
            for s in &mut sides {
                s.f.daemon_rss_kib = host::rss_kib(s.ep.pid()).unwrap_or(0);
                s.f.daemon_hwm_kib = hwm_kib(s.ep.pid()).unwrap_or(0);
                s.f.shims_rss_kib = shims_rss_kib(&s.ep.socket());
                s.f.pods_at_rss = rss_at;
            }
        }
    }
    for i in 0..pods {
        for k in order(i, sides.len()) {
            let s = &mut sides[k];
            let label = s.kind.label();
            let id = s.running[i].clone();
            tokio::time::sleep(settle).await;
            let t = Instant::now();
            s.c.stop_pod(&id)
                .await
                .with_context(|| format!("{label}: StopPodSandbox"))?;
            s.c.remove_pod(&id)
                .await
                .with_context(|| format!("{label}: RemovePodSandbox"))?;
            s.f.stop_remove.push(t.elapsed());
        }
    }

    // ListContainers with `containers` created containers over 10 pods, 4 creates at once.
    if containers > 0 {
        let mut list_pods = Vec::new();
        for s in &sides {
            let mut mine = Vec::new();
            for i in 0..10 {
                let cfg = s.ep.pod_config(&format!("list{i}"));
                let id = s.ep.run_pod(&cfg).await.context("list pod")?;
                mine.push((id, cfg));
            }
            let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(4));
            let mut set = tokio::task::JoinSet::new();
            for n in 0..containers {
                let (pid, pcfg) = mine[n % mine.len()].clone();
                let ctr = container_config(&format!("c{n}"), &images.busybox, &["sleep", "1"]);
                let mut c = s.ep.client();
                let sem = sem.clone();
                set.spawn(async move {
                    let _p = sem.acquire_owned().await;
                    c.create_container(&pid, &ctr, &pcfg).await
                });
            }
            while let Some(r) = set.join_next().await {
                r.context("join")?.context("CreateContainer for the list")?;
            }
            list_pods.push(mine);
        }
        for round in 0..list_calls {
            for k in order(round, sides.len()) {
                let s = &mut sides[k];
                tokio::time::sleep(settle).await;
                let t = Instant::now();
                let reply =
                    s.c.list_containers_encoded()
                        .await
                        .context("ListContainers")?;
                s.f.list.push(t.elapsed());
                let n = CriClient::decode_containers(&reply)?.len();
                anyhow::ensure!(
                    n == containers,
                    "{}: ListContainers listed {n} of {containers}",
                    s.kind.label()
                );
                s.f.containers_listed = n;
                tokio::time::sleep(settle).await;
                let t = Instant::now();
                s.c.list_containers(None).await.context("ListContainers")?;
                s.f.list_decoded.push(t.elapsed());
            }
        }
        for (s, mine) in sides.iter_mut().zip(&list_pods) {
            for (id, _) in mine {
                let _ = s.c.stop_pod(id).await;
                s.c.remove_pod(id).await.context("remove list pod")?;
            }
        }
    }
    if let Some(dir) = keep_logs {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for s in &sides {
            let label = s.kind.label();
            let file = dir.join(format!("{}.log", label.replace(['/', ' '], "-")));
            std::fs::write(&file, s.ep.log())
                .with_context(|| format!("writing {}", file.display()))?;
        }
    }
    Ok(sides.into_iter().map(|s| (s.kind, s.f)).collect())
}

fn row(name: &str, a: f64, b: f64, unit: &str, target: Option<f64>) {
    let ratio = if b > 0.0 { a / b } else { f64::NAN };
    let verdict = match target {
        Some(t) if ratio <= t => format!("≤ {t:.1}× ok"),
        Some(t) => format!("≤ {t:.1}× MISSED"),
        None => String::new(),
    };
    println!("{name:<34} {a:>10.2} {b:>12.2} {unit:<4} {ratio:>7.2}×  {verdict}");
}

const USAGE: &str = "usage: cri-bench [--pods N] [--containers N] [--crius-only] [--keep-logs DIR] [--list-calls N] [--portmap] [--floor-runs N] [--settle-ms N]";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    if std::env::var_os("CRIUS_TEST_TMPDIR").is_none() {
        std::env::set_var("CRIUS_TEST_TMPDIR", "/var/tmp");
    }
    let mut pods = 30usize;
    let mut containers = 1000usize;
    let mut crius_only = false;
    let mut keep_logs: Option<std::path::PathBuf> = None;
    let mut list_calls = 21usize;
    let mut portmap = false;
    let mut floor_runs = 30usize;
    let mut settle_ms = 100u64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = |flag: &str| -> anyhow::Result<usize> {
            args.next()
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("{flag} needs a number"))
        };
        match a.as_str() {
            "--pods" => pods = num("--pods")?,
            "--containers" => containers = num("--containers")?,
            "--crius-only" => crius_only = true,
            "--list-calls" => list_calls = num("--list-calls")?.max(1),
            "--portmap" => portmap = true,
            "--floor-runs" => floor_runs = num("--floor-runs")?,
            "--settle-ms" => settle_ms = num("--settle-ms")? as u64,
            "--keep-logs" => {
                keep_logs = Some(args.next().context("--keep-logs needs a directory")?.into())
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => anyhow::bail!("unknown argument {other:?} ({USAGE})"),
        }
    }
    anyhow::ensure!(pods >= 1, "--pods must be at least 1");
    let crius = host::workspace_binary("crius");
    anyhow::ensure!(
        crius.exists(),
        "{} missing: cargo build --release -p crius -p crius-shim -p crius-integration",
        crius.display()
    );
    let reg = Registry::start(Default::default()).context("registry")?;
    println!(
        "cri-bench: {pods} pods, {containers} containers for ListContainers; crius = {}",
        crius.display()
    );
    // --crius-only: a quick look while tuning; the ratios then read NaN.
    let kinds: &[Kind] = if crius_only {
        &[Kind::Crius("runc")]
    } else {
        &[Kind::Crius("runc"), Kind::Containerd]
    };
    let conflist = if portmap {
        Conflist::new("0.4.0").with_portmap()
    } else {
        Conflist::new("0.4.0")
    };
    let mut figures = measure(
        kinds,
        &reg,
        &Plan {
            pods,
            containers,
            list_calls,
            settle: Duration::from_millis(settle_ms),
        },
        keep_logs.as_deref(),
        &conflist,
    )
    .await?
    .into_iter()
    .map(|(_, f)| f);
    let ours = figures.next().unwrap_or_default();
    let theirs = figures.next().unwrap_or_default();
    // The floor, after both daemons are gone (nothing else running meanwhile).
    let (cni_add, cni_del, pause) = if floor_runs > 0 {
        let net = TestNetwork::new().context("floor network")?;
        let (add, del) = floor::cni_add_del(
            &net.conflist(&conflist),
            std::path::Path::new("/usr/lib/cni"),
            floor_runs,
        )
        .context("bare CNI ADD/DEL")?;
        let pause = floor::pause_start(floor_runs).context("bare runc create+start")?;
        (add, del, pause)
    } else {
        Default::default()
    };

    println!(
        "\n{:<34} {:>10} {:>12} {:<4} {:>8}  target",
        "", "crius", "containerd", "", "ratio"
    );
    let p = |v: &[Duration], q: f64| ms(pct(v, q));
    row(
        "RunPodSandbox p50",
        p(&ours.run_pod, 0.5),
        p(&theirs.run_pod, 0.5),
        "ms",
        Some(T_RUNP),
    );
    if floor_runs > 0 {
        let floor_ms = p(&cni_add, 0.5) + p(&pause, 0.5);
        let runp = p(&ours.run_pod, 0.5);
        let ratio = runp / floor_ms;
        let verdict = if ratio <= T_FLOOR { "ok" } else { "MISSED" };
        println!(
            "{:<34} {runp:>10.2} {floor_ms:>12.2} ms   {ratio:>7.2}×  ≤ {T_FLOOR:.1}× {verdict} (vs floor)",
            "RunPodSandbox p50 vs floor",
        );
        println!(
            "  floor: bare CNI ADD p50 {:.2} ms (DEL {:.2} ms) + bare runc create+start p50 {:.2} ms, {floor_runs} runs each",
            p(&cni_add, 0.5),
            p(&cni_del, 0.5),
            p(&pause, 0.5)
        );
    }
    row(
        "RunPodSandbox p90",
        p(&ours.run_pod, 0.9),
        p(&theirs.run_pod, 0.9),
        "ms",
        None,
    );
    row(
        "CreateContainer+Start p50",
        p(&ours.create_start, 0.5),
        p(&theirs.create_start, 0.5),
        "ms",
        Some(T_START),
    );
    if floor_runs > 0 {
        let cs = p(&ours.create_start, 0.5);
        let floor_ms = p(&pause, 0.5);
        let ratio = cs / floor_ms;
        let verdict = if ratio <= T_START_FLOOR {
            "ok"
        } else {
            "MISSED"
        };
        println!(
            "{:<34} {cs:>10.2} {floor_ms:>12.2} ms   {ratio:>7.2}×  ≤ {T_START_FLOOR:.1}× {verdict} (vs bare runc create+start)",
            "CreateContainer+Start p50 vs floor",
        );
    }
    row(
        "CreateContainer+Start p90",
        p(&ours.create_start, 0.9),
        p(&theirs.create_start, 0.9),
        "ms",
        None,
    );
    row(
        "StopPodSandbox+Remove p50",
        p(&ours.stop_remove, 0.5),
        p(&theirs.stop_remove, 0.5),
        "ms",
        None,
    );
    row(
        "StopPodSandbox+Remove p90",
        p(&ours.stop_remove, 0.9),
        p(&theirs.stop_remove, 0.9),
        "ms",
        None,
    );
    if containers > 0 {
        row(
            &format!("ListContainers@{} p50", ours.containers_listed),
            p(&ours.list, 0.5),
            p(&theirs.list, 0.5),
            "ms",
            Some(T_LIST),
        );
        row(
            "  same, decoded by the client",
            p(&ours.list_decoded, 0.5),
            p(&theirs.list_decoded, 0.5),
            "ms",
            None,
        );
    }
    let mib = |k: u64| k as f64 / 1024.0;
    row(
        &format!("daemon VmRSS, {} pods", ours.pods_at_rss),
        mib(ours.daemon_rss_kib),
        mib(theirs.daemon_rss_kib),
        "MiB",
        Some(T_RSS),
    );
    row(
        "daemon VmHWM (peak so far)",
        mib(ours.daemon_hwm_kib),
        mib(theirs.daemon_hwm_kib),
        "MiB",
        None,
    );
    row(
        &format!("shims RSS total, {} pods", ours.pods_at_rss),
        mib(ours.shims_rss_kib),
        mib(theirs.shims_rss_kib),
        "MiB",
        None,
    );
    Ok(())
}
