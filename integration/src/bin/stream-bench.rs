//! stream-bench: exec through the streaming server, crius vs containerd 1.6, side by side.
//!
//! Reproduce (as root, after `make test` installed the dependencies):
//!
//! ```sh
//! cargo build --release --workspace --bins
//! target/release/stream-bench --runs 30 --mb 100
//! ```
//!
//! Both daemons are up at once, each with one pod running a busybox `sleep`; the same
//! client (`integration::streaming`, WebSocket `v4.channel.k8s.io`, which containerd 1.6
//! speaks too) alternates between them, the order flipping each round.
//!
//! * round trip: the `Exec` RPC, then a session running `true` to its exit status;
//!   median over `--runs`;
//! * throughput: a session streaming `--mb` MiB of stdout (`head -c N /dev/zero`) to the
//!   client; median MiB/s over `--runs / 3` (at least 3) sessions.
//!
//! Targets: round trip ≤ 0.7 × containerd, throughput ≥ 1.5 × containerd.

use std::time::{Duration, Instant};

use anyhow::Context;
use crius_integration::pod::{container_config, push_test_images, Endpoint, Kind};
use crius_integration::registry::Registry;
use crius_integration::streaming::{self, Input};
use crius_proto::cri;

const PROTO: &str = "v4.channel.k8s.io";

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

struct Side {
    kind: Kind,
    ep: Endpoint,
    container: String,
    rtt_ms: Vec<f64>,
    mib_s: Vec<f64>,
}

async fn session(side: &Side, cmd: &[&str]) -> anyhow::Result<streaming::Session> {
    let mut c = side.ep.client();
    let url = c
        .runtime
        .exec(cri::ExecRequest {
            container_id: side.container.clone(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            tty: false,
            stdin: false,
            stdout: true,
            stderr: true,
        })
        .await
        .with_context(|| format!("{}: Exec", side.kind.label()))?
        .into_inner()
        .url;
    streaming::exec(&url, &[PROTO], Input::default(), Duration::from_secs(300)).await
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    if std::env::var_os("CRIUS_TEST_TMPDIR").is_none() {
        std::env::set_var("CRIUS_TEST_TMPDIR", "/var/tmp");
    }
    let mut runs = 30usize;
    let mut mb = 100usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = |flag: &str| -> anyhow::Result<usize> {
            args.next()
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("{flag} needs a number"))
        };
        match a.as_str() {
            "--runs" => runs = num("--runs")?.max(1),
            "--mb" => mb = num("--mb")?.max(1),
            other => anyhow::bail!(
                "unknown argument {other:?} (usage: stream-bench [--runs N] [--mb N])"
            ),
        }
    }
    let reg = Registry::start(Default::default()).context("registry")?;
    let images = push_test_images(&reg).await?;
    let mut sides = Vec::new();
    for kind in [Kind::Crius("runc"), Kind::Containerd] {
        let ep = Endpoint::start(kind, &reg, &images).await?;
        let pod = ep.pod_config("stream-bench");
        let pod_id = ep.run_pod(&pod).await?;
        let ctr = container_config("sleeper", &images.busybox, &["sleep", "1000000"]);
        let container = ep.run_container(&pod_id, &pod, &ctr).await?;
        sides.push(Side {
            kind,
            ep,
            container,
            rtt_ms: Vec::new(),
            mib_s: Vec::new(),
        });
    }
    println!("stream-bench: {runs} round trips, {mb} MiB streams, WebSocket {PROTO}");
    for round in 0..runs {
        let order: Vec<usize> = if round % 2 == 0 {
            vec![0, 1]
        } else {
            vec![1, 0]
        };
        for &k in &order {
            let s = &sides[k];
            let t = Instant::now();
            let out = session(s, &["true"]).await?;
            anyhow::ensure!(
                out.exit_code() == Some(0),
                "{}: true: {out:?}",
                s.kind.label()
            );
            sides[k].rtt_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    let bytes = mb * 1024 * 1024;
    let cmd = format!("head -c {bytes} /dev/zero");
    for round in 0..(runs / 3).max(3) {
        let order: Vec<usize> = if round % 2 == 0 {
            vec![0, 1]
        } else {
            vec![1, 0]
        };
        for &k in &order {
            let s = &sides[k];
            let t = Instant::now();
            let out = session(s, &["sh", "-c", &cmd]).await?;
            anyhow::ensure!(
                out.stdout.len() == bytes,
                "{}: got {} of {bytes} bytes",
                s.kind.label(),
                out.stdout.len()
            );
            let secs = t.elapsed().as_secs_f64();
            sides[k].mib_s.push(mb as f64 / secs);
        }
    }
    let rtt: Vec<f64> = sides.iter().map(|s| median(s.rtt_ms.clone())).collect();
    let tput: Vec<f64> = sides.iter().map(|s| median(s.mib_s.clone())).collect();
    println!(
        "\n{:<28} {:>10} {:>12} {:>8}  target",
        "", "crius", "containerd", "ratio"
    );
    let rr = rtt[0] / rtt[1];
    println!(
        "{:<28} {:>10.2} {:>12.2} {:>7.2}×  ≤ 0.7× {}",
        "exec `true` round trip ms",
        rtt[0],
        rtt[1],
        rr,
        if rr <= 0.7 { "ok" } else { "MISSED" }
    );
    let tr = tput[0] / tput[1];
    println!(
        "{:<28} {:>10.1} {:>12.1} {:>7.2}×  ≥ 1.5× {}",
        format!("{mb} MiB stdout, MiB/s"),
        tput[0],
        tput[1],
        tr,
        if tr >= 1.5 { "ok" } else { "MISSED" }
    );
    Ok(())
}
