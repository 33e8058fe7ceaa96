//! Running CRI scenarios against an [`Endpoint`]: each scenario gets a context that tracks
//! the pods it made (torn down afterwards, whatever happened) and records observations that
//! every runtime must agree on, so a differential test can compare crius and containerd
//! key by key.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crius_proto::cri;

use crate::cri::CriClient;
use crate::pod::Endpoint;

/// Observations that must be equal across runtimes: `key → value`.
pub type Obs = BTreeMap<String, String>;

/// What one scenario gets.
pub struct Cx {
    /// The endpoint under test.
    pub ep: Arc<Endpoint>,
    pods: Mutex<Vec<String>>,
    obs: Mutex<Obs>,
}

impl Cx {
    /// A context on `ep`.
    pub fn new(ep: Arc<Endpoint>) -> Cx {
        Cx {
            ep,
            pods: Mutex::new(Vec::new()),
            obs: Mutex::new(Obs::new()),
        }
    }

    /// A client.
    pub fn client(&self) -> CriClient {
        self.ep.client()
    }

    /// Whether the endpoint is crius.
    pub fn crius(&self) -> bool {
        self.ep.kind.is_crius()
    }

    /// Records an observation every runtime must agree on.
    pub fn same(&self, key: &str, value: impl std::fmt::Debug) {
        if let Ok(mut o) = self.obs.lock() {
            o.insert(key.to_string(), format!("{value:?}"));
        }
    }

    /// Runs a pod (on the endpoint's handler) and remembers it for teardown.
    pub async fn run_pod(&self, config: &cri::PodSandboxConfig) -> anyhow::Result<String> {
        let id = self
            .ep
            .run_pod(config)
            .await
            .map_err(|e| anyhow::anyhow!("{}: RunPodSandbox: {e:?}", self.ep.kind.label()))?;
        self.track(&id);
        Ok(id)
    }

    /// Remembers a pod for teardown.
    pub fn track(&self, pod_id: &str) {
        if let Ok(mut p) = self.pods.lock() {
            p.push(pod_id.to_string());
        }
    }

    /// Stops and removes every pod this scenario made; the observations.
    pub async fn finish(&self) -> Obs {
        let pods = self.pods.lock().map(|p| p.clone()).unwrap_or_default();
        for p in pods {
            self.ep.teardown(&p).await;
        }
        self.obs.lock().map(|o| o.clone()).unwrap_or_default()
    }
}

/// A boxed scenario.
pub type ScenarioFn =
    fn(Arc<Cx>) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send + 'static>>;

/// The result of a whole run: per scenario, its observations or its failure.
pub type Outcomes = BTreeMap<&'static str, Result<Obs, String>>;

/// Runs `scenarios` on `ep`, at most `parallel` at once, each bounded by `timeout`.
pub async fn run_all(
    ep: Arc<Endpoint>,
    scenarios: &[(&'static str, ScenarioFn)],
    parallel: usize,
    timeout: Duration,
) -> Outcomes {
    let sem = Arc::new(tokio::sync::Semaphore::new(parallel.max(1)));
    let mut set = tokio::task::JoinSet::new();
    for (name, f) in scenarios.iter().copied() {
        let ep = ep.clone();
        let sem = sem.clone();
        set.spawn(async move {
            let _permit = sem.acquire_owned().await;
            let cx = Arc::new(Cx::new(ep.clone()));
            let started = std::time::Instant::now();
            let r = tokio::time::timeout(timeout, f(cx.clone())).await;
            let obs = cx.finish().await;
            eprintln!(
                "[{}] {name}: {} in {:.1}s",
                ep.kind.label(),
                match &r {
                    Ok(Ok(())) => "ok",
                    Ok(Err(_)) => "FAILED",
                    Err(_) => "TIMED OUT",
                },
                started.elapsed().as_secs_f64()
            );
            let r = match r {
                Ok(Ok(())) => Ok(obs),
                Ok(Err(e)) => Err(format!("{e:#}")),
                Err(_) => Err(format!("timed out after {timeout:?}")),
            };
            (name, r)
        });
    }
    let mut out = Outcomes::new();
    while let Some(j) = set.join_next().await {
        match j {
            Ok((name, r)) => {
                out.insert(name, r);
            }
            Err(e) => {
                out.insert("<panicked>", Err(format!("{e}")));
            }
        }
    }
    out
}

/// Panics listing every failed scenario (with the daemon's log tail) if any failed.
pub fn assert_all_passed(ep: &Endpoint, out: &Outcomes) {
    let failed: Vec<String> = out
        .iter()
        .filter_map(|(n, r)| r.as_ref().err().map(|e| format!("  {n}: {e}")))
        .collect();
    assert!(
        failed.is_empty(),
        "{}: {} of {} scenarios failed:\n{}\n--- daemon log tail ---\n{}",
        ep.kind.label(),
        failed.len(),
        out.len(),
        failed.join("\n"),
        ep.log_tail()
    );
}

/// Differences between two runs' observations, scenario by scenario (only scenarios that
/// passed on both sides are compared).
pub fn differences(a: &Outcomes, b: &Outcomes) -> Vec<String> {
    let mut out = Vec::new();
    for (name, ra) in a {
        let (Ok(oa), Some(Ok(ob))) = (ra, b.get(name)) else {
            continue;
        };
        let keys: std::collections::BTreeSet<&String> = oa.keys().chain(ob.keys()).collect();
        for k in keys {
            let (va, vb) = (oa.get(k), ob.get(k));
            if va != vb {
                out.push(format!("{name}/{k}: {va:?} vs {vb:?}"));
            }
        }
    }
    out
}

/// One entry of a CRI-format log line: `<time> <stream> <P|F> <content>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// RFC 3339 timestamp as written.
    pub time: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// `P` (partial) or `F` (full).
    pub tag: String,
    /// The bytes after the tag.
    pub content: Vec<u8>,
}

/// Parses a CRI log file; a malformed line is an error naming it.
pub fn parse_cri_log(bytes: &[u8]) -> anyhow::Result<Vec<LogEntry>> {
    let mut out = Vec::new();
    for (n, line) in bytes.split(|b| *b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let mut parts = line.splitn(4, |b| *b == b' ');
        let time = parts.next().unwrap_or_default();
        let stream = parts.next().unwrap_or_default();
        let tag = parts.next().unwrap_or_default();
        let content = parts.next().unwrap_or_default();
        let time = String::from_utf8_lossy(time).into_owned();
        let stream = String::from_utf8_lossy(stream).into_owned();
        let tag = String::from_utf8_lossy(tag).into_owned();
        anyhow::ensure!(
            time.len() >= 20
                && time.contains('T')
                && (stream == "stdout" || stream == "stderr")
                && (tag == "P" || tag == "F"),
            "log line {n} is not CRI format: {:?}",
            String::from_utf8_lossy(&line[..line.len().min(200)])
        );
        out.push(LogEntry {
            time,
            stream,
            tag,
            content: content.to_vec(),
        });
    }
    Ok(out)
}

/// The bytes of one stream rebuilt from CRI log entries: `F` ends a line, `P` does not.
pub fn rebuild(entries: &[LogEntry], stream: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries.iter().filter(|e| e.stream == stream) {
        out.extend_from_slice(&e.content);
        if e.tag == "F" {
            out.push(b'\n');
        }
    }
    out
}
