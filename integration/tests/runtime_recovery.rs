//! crius survives `kill -9`: (a) running pods and containers are found again untouched,
//! (b) pods being created concurrently are each either fully present or fully gone,
//! (c) containers that exit while the daemon is down are recorded with their real exit code
//! and time. Each case ends with everything removed and no orphan shim, mount, netns pin or
//! store row.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crius_integration::leaks::Footprint;
use crius_integration::pod::{container_config, push_test_images, sh, Endpoint, Kind};
use crius_integration::registry::Registry;
use crius_proto::cri::{self, ContainerState, PodSandboxState};

const HANDLER: &str = "runc";

async fn endpoint() -> (Registry, Endpoint, Footprint) {
    let reg = Registry::start(Default::default()).expect("registry");
    let images = push_test_images(&reg).await.expect("images");
    let ep = Endpoint::start(Kind::Crius(HANDLER), &reg, &images)
        .await
        .expect("crius");
    let base = Footprint::take(&ep).await.expect("footprint");
    (reg, ep, base)
}

/// kill -9, then start again on the same root and state, and reconnect.
async fn crash_and_restart(ep: &mut Endpoint) {
    let d = ep.crius().expect("crius");
    d.kill9();
    d.restart().expect("restart crius");
    ep.client = crius_integration::cri::CriClient::connect(&ep.socket())
        .await
        .expect("reconnect");
}

/// The host pid of a container (or pod) from verbose info `{"pid": …}`.
fn info_pid(info: &std::collections::HashMap<String, String>) -> Option<u32> {
    let v: serde_json::Value = serde_json::from_str(info.get("info")?).ok()?;
    v.get("pid")?.as_u64().map(|p| p as u32)
}

/// Start time of a process in clock ticks since boot (`/proc/<pid>/stat` field 22).
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or_default()
}

async fn remove_all_and_check(ep: &Endpoint, base: &Footprint) {
    let mut c = ep.client();
    for p in c.list_pods(None).await.expect("list") {
        c.stop_pod(&p.id).await.expect("stop pod");
        c.remove_pod(&p.id).await.expect("remove pod");
    }
    let left = crius_integration::leaks::left_behind(ep, base, Duration::from_secs(3))
        .await
        .expect("footprint");
    assert!(left.is_empty(), "left behind: {left:#?}\n{}", ep.log_tail());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_pods_survive_kill9() {
    let (_reg, mut ep, base) = endpoint().await;
    let mut c = ep.client();
    let mut running = Vec::new();
    let mut first_pod = None;
    for i in 0..5 {
        let pod = ep.pod_config(&format!("survive{i}"));
        if i == 0 {
            first_pod = Some(pod.clone());
        }
        let pid = ep.run_pod(&pod).await.expect("run pod");
        let host = ep.scratch().join(format!("ticks{i}"));
        std::fs::create_dir_all(&host).expect("dir");
        let mut cfg = container_config("ticker", &ep.images.busybox, &[]);
        cfg.command = sh("i=0; while :; do i=$((i+1)); echo $i >> /data/ticks; sleep 0.1; done");
        cfg.mounts = vec![cri::Mount {
            container_path: "/data".into(),
            host_path: host.display().to_string(),
            ..Default::default()
        }];
        let id = ep.run_container(&pid, &pod, &cfg).await.expect("container");
        let info = c.container_status(&id, true).await.expect("status").info;
        let cpid = info_pid(&info).expect("verbose info carries the pid");
        let st = start_time(cpid).expect("start time");
        running.push((pid, id, cpid, st, host.join("ticks")));
    }
    // A container created but not started: its task is made at StartContainer, so the
    // restarted daemon must keep it Created (not lost) and able to start.
    let created_pod_id = running[0].0.clone();
    let created_pod = first_pod.expect("five pods");
    let mut late = container_config("late", &ep.images.busybox, &[]);
    late.command = sh("echo late-start; sleep 100000");
    late.log_path = "late.log".into();
    let late_id = c
        .create_container(&created_pod_id, &late, &created_pod)
        .await
        .expect("create late");
    tokio::time::sleep(Duration::from_millis(500)).await;
    crash_and_restart(&mut ep).await;
    {
        let mut c = ep.client();
        let st = c.status_of(&late_id).await.expect("status of late");
        assert_eq!(
            st.state,
            ContainerState::ContainerCreated as i32,
            "a created container stays Created across a restart: {st:?}"
        );
        c.start(&late_id).await.expect("start late after restart");
        let log = crius_integration::pod::log_file(&created_pod, &late);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("late-start")
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the container started after the restart logs nothing"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let st = c.status_of(&late_id).await.expect("status of late");
        assert_eq!(st.state, ContainerState::ContainerRunning as i32, "{st:?}");
    }
    // The daemon was down; the containers were not.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut c = ep.client();
    for (pid, id, cpid, st, ticks) in &running {
        let ps = c.pod_status(pid, false).await.expect("pod status");
        assert_eq!(
            ps.status.map(|s| s.state),
            Some(PodSandboxState::SandboxReady as i32),
            "pod {pid} Ready after restart"
        );
        let cs = c
            .container_status(id, true)
            .await
            .expect("container status");
        let status = cs.status.expect("status");
        assert_eq!(
            status.state,
            ContainerState::ContainerRunning as i32,
            "{status:?}"
        );
        assert_eq!(info_pid(&cs.info), Some(*cpid), "same pid");
        assert_eq!(
            start_time(*cpid),
            Some(*st),
            "same process (never restarted)"
        );
        // The counter never went back to 1: one uninterrupted run.
        let text = std::fs::read_to_string(ticks).expect("ticks");
        let n: Vec<u64> = text.lines().filter_map(|l| l.parse().ok()).collect();
        assert!(n.len() >= 8, "kept ticking: {}", n.len());
        assert!(
            n.windows(2).all(|w| w[1] == w[0] + 1),
            "one uninterrupted sequence"
        );
        // Still usable after the restart.
        let r = c
            .exec_sync(id, &["cat", "/proc/1/cmdline"], 5)
            .await
            .expect("exec");
        assert_eq!(r.exit_code, 0);
    }
    remove_all_and_check(&ep, &base).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_are_all_or_nothing() {
    let (_reg, mut ep, base) = endpoint().await;
    let mut set = tokio::task::JoinSet::new();
    let mut names = BTreeSet::new();
    for i in 0..10 {
        let pod = ep.pod_config(&format!("inflight{i}"));
        names.insert(
            pod.metadata
                .as_ref()
                .map(|m| m.name.clone())
                .unwrap_or_default(),
        );
        let mut c = ep.client();
        let h = ep.handler();
        set.spawn(async move { c.run_pod(&pod, h).await });
    }
    // Kill once a couple have completed: the others are mid-way.
    let mut done = Vec::new();
    while done.len() < 2 {
        match set.join_next().await {
            Some(Ok(Ok(id))) => done.push(id),
            Some(_) => {}
            None => break,
        }
    }
    crash_and_restart(&mut ep).await;
    set.abort_all();
    let mut c = ep.client();
    let pods = c.list_pods(None).await.expect("list");
    for id in &done {
        assert!(
            pods.iter().any(|p| &p.id == id),
            "a pod that was acknowledged is kept"
        );
    }
    for p in &pods {
        let name = p
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default();
        assert!(names.contains(&name), "unexpected pod {name}");
        assert_eq!(
            p.state,
            PodSandboxState::SandboxReady as i32,
            "{name}: fully present\n--- daemon log tail ---\n{}",
            ep.log_tail()
        );
        let info = c.pod_status(&p.id, true).await.expect("status").info;
        let pause = info_pid(&info).expect("pause pid");
        assert!(
            crius_integration::host::pid_exists(pause),
            "{name}: its pause runs"
        );
    }
    // Exactly one netns pin and one shim per present pod: nothing of the vanished ones.
    let fp = Footprint::take(&ep).await.expect("footprint");
    assert_eq!(fp.netns.len(), pods.len(), "netns pins: {:?}", fp.netns);
    assert_eq!(fp.shims.len(), pods.len(), "shims: {:?}", fp.shims);
    eprintln!("{} of 10 pods survived the crash", pods.len());
    remove_all_and_check(&ep, &base).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exits_while_down_are_recorded() {
    let (_reg, mut ep, base) = endpoint().await;
    let pod = ep.pod_config("exit-down");
    let pid = ep.run_pod(&pod).await.expect("pod");
    let mut ids = Vec::new();
    for (name, code) in [("seven", 7), ("zero", 0)] {
        let cfg = container_config(
            name,
            &ep.images.busybox,
            &["sh", "-c", &format!("sleep 2; exit {code}")],
        );
        ids.push((ep.run_container(&pid, &pod, &cfg).await.expect("ctr"), code));
    }
    let killed_at = now_ns();
    ep.crius().expect("crius").kill9();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let restarted_at = now_ns();
    crash_and_restart(&mut ep).await;
    let mut c = ep.client();
    for (id, code) in &ids {
        let st = c
            .wait_state(id, ContainerState::ContainerExited, Duration::from_secs(10))
            .await
            .expect("status");
        assert_eq!(st.state, ContainerState::ContainerExited as i32, "{st:?}");
        assert_eq!(st.exit_code, *code, "{st:?}");
        assert_eq!(st.reason, if *code == 0 { "Completed" } else { "Error" });
        assert!(
            st.finished_at > killed_at && st.finished_at < restarted_at,
            "finished while the daemon was down: {} not in ({killed_at}, {restarted_at})",
            st.finished_at
        );
    }
    remove_all_and_check(&ep, &base).await;
}
