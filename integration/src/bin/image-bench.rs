//! image-bench: cold image pulls over CRI `PullImage`, crius vs containerd 1.6, side by side.
//!
//! Reproduce (as root, after `make test` installed the dependencies):
//!
//! ```sh
//! make bench-images     # = cargo build --release --workspace --bins && target/release/image-bench
//! target/release/image-bench --runs 9
//! ```
//!
//! The bench must be the release build: `Daemon::start` runs the `crius` found next to the
//! running executable (`host::target_dir()`), so `target/release/image-bench` drives
//! `target/release/crius`. Build both (`cargo build --release --workspace --bins`) first.
//!
//! Set-up: one local `docker-registry` (plain HTTP on loopback) holding
//! * `bench/big:v1`: 10 gzip layers, ~100 MB uncompressed (`image_builder::big_image`);
//! * `bench/small:v1`: one gzip busybox layer.
//!
//! A cold pull is a fresh daemon on a fresh temp root (nothing cached): start the daemon,
//! connect, one `Version` call (so the connection and the CRI service are up), then time
//! `PullImage` (fetch, verify, unpack into snapshots, record the image) while sampling the
//! daemon's RSS every 10 ms; then stop the daemon. crius and containerd alternate run by run
//! (and which goes first alternates too), `--runs` each per image (default 7).
//!
//! Daemon roots live under `$CRIUS_TEST_TMPDIR` (default here `/var/tmp`, not `/tmp`: on the
//! test machines `/tmp` creates inodes ~40× slower than the rest of the same filesystem).
//!
//! Figures: median and p90 of the pull time, crius/containerd ratio of the medians (target
//! ≤ 0.6), and the median over runs of each daemon's peak RSS during the pull.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use crius_integration::containerd::{Containerd, ContainerdOptions};
use crius_integration::cri::{CriClient, Daemon};
use crius_integration::host;
use crius_integration::image_builder::{
    big_image, Compression, Image, ImageConfig, Layer, LinkStyle,
};
use crius_integration::registry::Registry;
use crius_proto::cri;

/// The target: crius's median pull time at most this fraction of containerd's.
const TARGET_RATIO: f64 = 0.6;

fn percentile<T: Copy + Default>(sorted: &[T], p: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// One timed pull.
#[derive(Debug, Clone, Copy)]
struct Sample {
    time: Duration,
    peak_rss_kib: u64,
}

/// Samples a process's RSS every 10 ms on a thread of its own, keeping the peak.
struct RssSampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = 0;
            loop {
                let done = flag.load(Ordering::Relaxed);
                peak = peak.max(host::rss_kib(pid).unwrap_or(0));
                if done {
                    return peak;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        RssSampler { stop, thread }
    }

    /// Stops sampling (after one last sample) and returns the peak, KiB.
    fn finish(self) -> anyhow::Result<u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("RSS sampler thread panicked"))
    }
}

/// Connects to the CRI socket, then times one `PullImage` of `image` while sampling `pid`.
async fn timed_pull(socket: &std::path::Path, pid: u32, image: &str) -> anyhow::Result<Sample> {
    let mut client = CriClient::connect(socket)
        .await
        .with_context(|| format!("connect to {}", socket.display()))?;
    client
        .runtime
        .version(cri::VersionRequest::default())
        .await
        .context("CRI Version")?;
    let sampler = RssSampler::start(pid);
    let t = Instant::now();
    let resp = client
        .image
        .pull_image(cri::PullImageRequest {
            image: Some(cri::ImageSpec {
                image: image.to_string(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await;
    let time = t.elapsed();
    let peak_rss_kib = sampler.finish()?;
    let resp = resp
        .with_context(|| format!("PullImage {image}"))?
        .into_inner();
    anyhow::ensure!(
        !resp.image_ref.is_empty(),
        "PullImage {image}: empty image_ref"
    );
    Ok(Sample { time, peak_rss_kib })
}

/// The last `n` bytes of a log, for error messages.
fn tail(log: &str, n: usize) -> &str {
    let mut start = log.len().saturating_sub(n);
    while !log.is_char_boundary(start) {
        start += 1;
    }
    &log[start..]
}

/// A cold pull into a fresh crius on a fresh root.
async fn pull_crius(registry: &str, image: &str) -> anyhow::Result<Sample> {
    let extra = format!("\n[registry.hosts.\"{registry}\"]\ninsecure = true\n");
    let mut daemon = Daemon::start(&extra).context("start crius")?;
    let result = timed_pull(&daemon.socket, daemon.pid(), image).await;
    let result = result.with_context(|| format!("crius log:\n{}", tail(&daemon.log(), 4000)));
    daemon.stop();
    result
}

/// A cold pull into a fresh containerd (CRI plugin on) on a fresh root.
async fn pull_containerd(registry: &str, image: &str) -> anyhow::Result<Sample> {
    let extra_config = format!(
        "[plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.\"{registry}\"]\n  \
         endpoint = [\"http://{registry}\"]\n"
    );
    let ctd = Containerd::start(ContainerdOptions {
        cri: true,
        extra_config,
        ..Default::default()
    })
    .context("start containerd")?;
    let result = timed_pull(&ctd.socket, ctd.pid(), image).await;
    result.with_context(|| format!("containerd log:\n{}", tail(&ctd.log(), 4000)))
}

/// One image's figures over all runs.
struct Row {
    name: &'static str,
    layers: usize,
    compressed: usize,
    crius: Vec<Sample>,
    containerd: Vec<Sample>,
}

struct Summary {
    median: Duration,
    p90: Duration,
    rss_kib: u64,
}

fn summarize(samples: &[Sample]) -> Summary {
    let mut times: Vec<Duration> = samples.iter().map(|s| s.time).collect();
    times.sort();
    let mut rss: Vec<u64> = samples.iter().map(|s| s.peak_rss_kib).collect();
    rss.sort();
    Summary {
        median: percentile(&times, 0.5),
        p90: percentile(&times, 0.9),
        rss_kib: percentile(&rss, 0.5),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    // Daemon roots go to /var/tmp unless told otherwise: see `host::scratch_dir`.
    if std::env::var_os("CRIUS_TEST_TMPDIR").is_none() {
        std::env::set_var("CRIUS_TEST_TMPDIR", "/var/tmp");
    }
    let mut runs = 7usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--runs" => {
                runs = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .context("--runs needs a number")?
            }
            other => anyhow::bail!("unknown argument {other:?} (usage: image-bench [--runs N])"),
        }
    }
    anyhow::ensure!(runs >= 1, "--runs must be at least 1");
    let crius = host::workspace_binary("crius");
    anyhow::ensure!(
        crius.exists(),
        "{} missing: build it first (cargo build --release --workspace --bins)",
        crius.display()
    );

    let registry = Registry::start(Default::default()).context("start docker-registry")?;
    let client = registry.client();
    let big = big_image(10, 100 << 20).context("build the big image")?;
    let small = Image::new(
        ImageConfig::default(),
        vec![Layer::new()
            .busybox(LinkStyle::Symlink)
            .context("busybox layer")?
            .build(Compression::Gzip)
            .context("gzip busybox layer")?],
    );
    let mut rows = Vec::new();
    for (name, repo, image) in [
        ("bench/big:v1", "bench/big", &big),
        ("bench/small:v1", "bench/small", &small),
    ] {
        client
            .push_image(repo, "v1", image)
            .await
            .with_context(|| format!("push {name}"))?;
        rows.push(Row {
            name,
            layers: image.layers.len(),
            compressed: image.layers.iter().map(|l| l.blob.bytes.len()).sum(),
            crius: Vec::with_capacity(runs),
            containerd: Vec::with_capacity(runs),
        });
    }
    drop((big, small));

    let addr = registry.addr().to_string();
    println!(
        "cold pulls over CRI PullImage from {addr} (fresh daemon and root each run), \
         {runs} runs each, interleaved; crius = {}",
        crius.display()
    );
    for run in 0..runs {
        for row in rows.iter_mut() {
            let reference = format!("{addr}/{}", row.name);
            let crius_first = run % 2 == 0;
            for turn in 0..2 {
                if (turn == 0) == crius_first {
                    row.crius.push(
                        pull_crius(&addr, &reference)
                            .await
                            .with_context(|| format!("crius run {run} {}", row.name))?,
                    );
                } else {
                    row.containerd.push(
                        pull_containerd(&addr, &reference)
                            .await
                            .with_context(|| format!("containerd run {run} {}", row.name))?,
                    );
                }
            }
        }
        eprintln!("run {}/{runs} done", run + 1);
    }

    println!();
    println!(
        "{:<15} {:>6} {:>8} | {:>9} {:>9} | {:>9} {:>9} | {:>6} | {:>10} {:>10}",
        "image",
        "layers",
        "MB gz",
        "crius ms",
        "p90",
        "ctrd ms",
        "p90",
        "ratio",
        "crius RSS",
        "ctrd RSS"
    );
    let mut verdicts = Vec::new();
    for row in &rows {
        let ours = summarize(&row.crius);
        let theirs = summarize(&row.containerd);
        let ratio = ours.median.as_secs_f64() / theirs.median.as_secs_f64().max(f64::MIN_POSITIVE);
        println!(
            "{:<15} {:>6} {:>8.1} | {:>9.1} {:>9.1} | {:>9.1} {:>9.1} | {:>6.2} | {:>10} {:>10}",
            row.name,
            row.layers,
            row.compressed as f64 / 1e6,
            ms(ours.median),
            ms(ours.p90),
            ms(theirs.median),
            ms(theirs.p90),
            ratio,
            ours.rss_kib,
            theirs.rss_kib
        );
        verdicts.push((row.name, ratio));
    }
    println!("(times: median and p90 in ms; RSS: median over runs of the daemon's peak during the pull, KiB)");
    println!();
    for (name, ratio) in verdicts {
        println!(
            "target crius <= {TARGET_RATIO} x containerd, {name}: {} (ratio {ratio:.2})",
            if ratio <= TARGET_RATIO {
                "met"
            } else {
                "NOT met"
            }
        );
    }
    Ok(())
}
