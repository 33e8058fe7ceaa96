//! The CRI RuntimeService scenario suite, run against any CRI endpoint: crius on each
//! RuntimeClass handler (`runc`, `youki`, `runc-go`, `crun`) and containerd 1.6's CRI plugin
//! (Go shim + runc), each pulling the same busybox images from one real registry.
//!
//! Each scenario runs on pods of its own, concurrently with the others, and records the
//! observations every runtime must agree on (states, exit codes, reasons, gRPC codes).
//! `crius_runc_vs_containerd` runs the suite on both and compares those key by key; where
//! the two disagree on purpose the scenario asserts each side's value and says why.
//!
//! `cargo test -p crius-integration --test runtime_suite` (crius built in the same target
//! dir); `-- --ignored containerd_peer` validates the scenarios against containerd alone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use crius_integration::pod::{
    container_config, log_file, namespaces, pod_security, poll, push_test_images, resources,
    security, sh, Endpoint, Kind, TestImages,
};
use crius_integration::registry::Registry;
use crius_integration::scenario::{
    assert_all_passed, differences, parse_cri_log, rebuild, run_all, Cx, Outcomes, ScenarioFn,
};
use crius_integration::shim::random_id;
use crius_proto::cri::{self, ContainerState, NamespaceMode, PodSandboxState};
use tonic::Code;

const WAIT: Duration = Duration::from_secs(30);

type R = anyhow::Result<()>;

fn code<T>(r: &Result<T, tonic::Status>) -> Code {
    match r {
        Ok(_) => Code::Ok,
        Err(e) => e.code(),
    }
}

/// The unified way to read a container's memory limit, cgroup v1 or v2.
const READ_MEMORY_LIMIT: &str = "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null \
                                 || cat /sys/fs/cgroup/memory.max";

fn sleeper(cx: &Cx, name: &str) -> cri::ContainerConfig {
    container_config(name, &cx.ep.images.busybox, &["sleep", "1000000"])
}

async fn exec_out(cx: &Cx, id: &str, cmd: &[&str]) -> anyhow::Result<String> {
    let mut c = cx.client();
    let r = tokio::time::timeout(Duration::from_secs(30), c.exec_sync(id, cmd, 10))
        .await
        .with_context(|| format!("ExecSync {cmd:?} (timeout 10 s) hung for 30 s"))?
        .with_context(|| format!("ExecSync {cmd:?}"))?;
    ensure!(
        r.exit_code == 0,
        "ExecSync {cmd:?} exited {}: {}",
        r.exit_code,
        String::from_utf8_lossy(&r.stderr)
    );
    Ok(String::from_utf8_lossy(&r.stdout).into_owned())
}

/// Waits until the container has exited; its status.
async fn exited(cx: &Cx, id: &str) -> anyhow::Result<cri::ContainerStatus> {
    let st = cx
        .client()
        .wait_state(id, ContainerState::ContainerExited, WAIT)
        .await?;
    ensure!(
        st.state == ContainerState::ContainerExited as i32,
        "container {id} did not exit: {st:?}"
    );
    Ok(st)
}

// ---------------------------------------------------------------------------------------
// Scenarios

async fn version_and_status(cx: Arc<Cx>) -> R {
    let mut c = cx.client();
    let v = c.version().await?;
    ensure!(v.runtime_api_version == "v1", "{v:?}");
    if cx.crius() {
        ensure!(v.runtime_name == "crius", "{v:?}");
    } else {
        ensure!(v.runtime_name == "containerd", "{v:?}");
    }
    let st = c.status(false).await?;
    let conds = st.status.map(|s| s.conditions).unwrap_or_default();
    let cond = |t: &str| conds.iter().find(|c| c.r#type == t).map(|c| c.status);
    cx.same("RuntimeReady", cond("RuntimeReady"));
    // Both have a loadable CNI config: containerd a test bridge network, crius's test
    // daemon a loopback-only conflist.
    ensure!(cond("NetworkReady") == Some(true), "{conds:?}");
    cx.same("NetworkReady", cond("NetworkReady"));
    Ok(())
}

async fn pod_lifecycle(cx: Arc<Cx>) -> R {
    let mut c = cx.client();
    let mut ca = cx.ep.pod_config("life-a");
    ca.labels.insert("which".into(), "a".into());
    let mut cb = cx.ep.pod_config("life-b");
    cb.labels.insert("which".into(), "b".into());
    let a = cx.run_pod(&ca).await?;
    let b = cx.run_pod(&cb).await?;
    ensure!(
        a.len() == 64 && a.chars().all(|ch| ch.is_ascii_hexdigit()),
        "id {a}"
    );
    let st = c.pod_status(&a, false).await?.status.context("no status")?;
    ensure!(st.state == PodSandboxState::SandboxReady as i32, "{st:?}");
    ensure!(st.created_at > 0, "{st:?}");
    ensure!(st.metadata == ca.metadata, "metadata echoed: {st:?}");
    ensure!(st.labels.get("which").map(String::as_str) == Some("a"));
    // containerd reports the handler it was asked for (here the empty default).
    ensure!(st.runtime_handler == cx.ep.handler(), "{st:?}");
    cx.same("ready_state", st.state);
    // Verbose info: a JSON document in both.
    let v = c.pod_status(&a, true).await?;
    let info = v
        .info
        .get("info")
        .context("verbose info has an `info` key")?;
    ensure!(
        serde_json::from_str::<serde_json::Value>(info).is_ok(),
        "{info}"
    );

    // Filters: id prefix, state, label.
    let filter = |id: &str, state: Option<PodSandboxState>, label: Option<&str>| {
        Some(cri::PodSandboxFilter {
            id: id.into(),
            state: state.map(|s| cri::PodSandboxStateValue { state: s as i32 }),
            label_selector: label
                .map(|l| [("which".to_string(), l.to_string())].into())
                .unwrap_or_default(),
        })
    };
    let ids = |v: Vec<cri::PodSandbox>| v.into_iter().map(|p| p.id).collect::<Vec<_>>();
    ensure!(ids(c.list_pods(filter(&a[..12], None, None)).await?) == vec![a.clone()]);
    ensure!(ids(c.list_pods(filter(&a, None, None)).await?) == vec![a.clone()]);
    ensure!(ids(c.list_pods(filter("", None, Some("b"))).await?) == vec![b.clone()]);
    let ready = ids(c
        .list_pods(filter("", Some(PodSandboxState::SandboxReady), None))
        .await?);
    ensure!(ready.contains(&a) && ready.contains(&b), "{ready:?}");

    // Stop: NotReady, listed as such; stop again is fine.
    c.stop_pod(&a).await?;
    let st = c.pod_status(&a, false).await?.status.context("no status")?;
    ensure!(
        st.state == PodSandboxState::SandboxNotready as i32,
        "{st:?}"
    );
    cx.same("stopped_state", st.state);
    let notready = ids(c
        .list_pods(filter("", Some(PodSandboxState::SandboxNotready), None))
        .await?);
    ensure!(
        notready.contains(&a) && !notready.contains(&b),
        "{notready:?}"
    );
    cx.same("stop_twice", code(&c.stop_pod(&a).await));

    // Remove: gone; status NotFound; remove again fine.
    c.remove_pod(&a).await?;
    let gone = c.pod_status(&a, false).await;
    cx.same("status_after_remove", code(&gone));
    ensure!(code(&gone) == Code::NotFound, "{gone:?}");
    ensure!(!ids(c.list_pods(None).await?).contains(&a));
    cx.same("remove_twice", code(&c.remove_pod(&a).await));
    // RemovePodSandbox of a running pod stops it first (the CRI says "forcibly").
    cx.same("remove_running", code(&c.remove_pod(&b).await));
    ensure!(!ids(c.list_pods(None).await?).contains(&b));
    Ok(())
}

async fn unknown_ids(cx: Arc<Cx>) -> R {
    let mut c = cx.client();
    let unknown = "f".repeat(64);
    let stop_pod = code(&c.stop_pod(&unknown).await);
    let stop_ctr = code(&c.stop(&unknown, 0).await);
    let remove_pod = code(&c.remove_pod(&unknown).await);
    let remove_ctr = code(&c.remove(&unknown).await);
    cx.same("pod_status", code(&c.pod_status(&unknown, false).await));
    cx.same(
        "container_status",
        code(&c.container_status(&unknown, false).await),
    );
    cx.same("start", code(&c.start(&unknown).await));
    cx.same(
        "exec_sync",
        code(&c.exec_sync(&unknown, &["true"], 1).await),
    );
    // RemovePodSandbox / RemoveContainer of an unknown id: success in both.
    cx.same("remove_pod", remove_pod);
    cx.same("remove_container", remove_ctr);
    ensure!(remove_pod == Code::Ok && remove_ctr == Code::Ok);
    // StopPodSandbox / StopContainer of an unknown id: the CRI says "if there are any
    // running containers … it must forcibly terminate them … this call is idempotent, and
    // must not return an error if all relevant resources have already been reclaimed";
    // the kubelet retries stops after a runtime restart. crius answers success. containerd
    // 1.6 answers NotFound ("an error occurred when try to find sandbox/container"): crius
    // is the one following the contract.
    if cx.crius() {
        ensure!(
            stop_pod == Code::Ok && stop_ctr == Code::Ok,
            "{stop_pod:?} {stop_ctr:?}"
        );
    } else {
        ensure!(
            stop_pod == Code::NotFound && stop_ctr == Code::NotFound,
            "{stop_pod:?} {stop_ctr:?}"
        );
    }
    Ok(())
}

async fn container_exit_codes(cx: Arc<Cx>) -> R {
    let mut c = cx.client();
    let pod = cx.ep.pod_config("exit");
    let pid = cx.run_pod(&pod).await?;
    for (name, want, reason) in [("ok", 0, "Completed"), ("three", 3, "Error")] {
        let cfg = container_config(
            name,
            &cx.ep.images.busybox,
            &["sh", "-c", &format!("sleep 0.2; exit {want}")],
        );
        let id = c.create_container(&pid, &cfg, &pod).await?;
        let st = c.status_of(&id).await?;
        ensure!(
            st.state == ContainerState::ContainerCreated as i32,
            "{st:?}"
        );
        ensure!(st.created_at > 0 && st.started_at == 0, "{st:?}");
        let listed = c
            .list_containers(Some(cri::ContainerFilter {
                id: id.clone(),
                ..Default::default()
            }))
            .await?;
        ensure!(
            listed.len() == 1 && listed[0].pod_sandbox_id == pid,
            "{listed:?}"
        );
        // A list entry names its image by id in image_ref, as containerd does: kubelets
        // before 1.30 read that field as the image id for image GC, where a digested
        // reference would make the image look unused. ContainerStatus gives the digested
        // reference (below); crius also fills the newer image_id, which containerd 1.6
        // predates.
        let listed_ref = &listed[0].image_ref;
        cx.same(
            &format!("{name}/list_image_ref_is_an_id"),
            listed_ref.starts_with("sha256:") && !listed_ref.contains('@'),
        );
        if cx.crius() {
            ensure!(
                *listed_ref == listed[0].image_id && listed_ref.starts_with("sha256:"),
                "list image_ref and image_id: {listed:?}"
            );
        }
        c.start(&id).await?;
        let st = exited(&cx, &id).await?;
        ensure!(st.exit_code == want, "{st:?}");
        ensure!(st.reason == reason, "{st:?}");
        // containerd 1.6 stamps started_at when Start returns, so under load its started_at
        // trails the real start and can even pass finished_at; crius stamps it before the
        // Start RPC and never after a recorded exit. Only crius's timestamps are held to it.
        if cx.crius() {
            ensure!(
                st.created_at <= st.started_at && st.started_at < st.finished_at,
                "timestamps ordered: {st:?}"
            );
            ensure!(
                st.finished_at - st.started_at >= 150_000_000,
                "ran ≥ 0.2 s: {st:?}"
            );
        }
        ensure!(
            st.log_path == log_file(&pod, &cfg).display().to_string(),
            "{st:?}"
        );
        ensure!(st.image.as_ref().map(|i| i.image.as_str()) == Some(&cx.ep.images.busybox[..]));
        cx.same(
            &format!("{name}/status_image_ref_is_digested"),
            st.image_ref.contains("@sha256:"),
        );
        cx.same(&format!("{name}/state"), st.state);
        cx.same(&format!("{name}/exit_code"), st.exit_code);
        cx.same(&format!("{name}/reason"), &st.reason);
        // Start of an exited container is refused: FailedPrecondition (wrong state) in
        // crius; containerd 1.6 answers Unknown ("container is in CONTAINER_EXITED state").
        // Stop of it is fine in both.
        let again = code_of(c.start(&id).await);
        let want_again = if cx.crius() {
            Code::FailedPrecondition
        } else {
            Code::Unknown
        };
        ensure!(
            again == want_again,
            "start of an exited container: {again:?}"
        );
        cx.same(
            &format!("{name}/stop_exited"),
            code_of(c.stop(&id, 0).await),
        );
        // Filters: pod and state.
        let exited_here = c
            .list_containers(Some(cri::ContainerFilter {
                pod_sandbox_id: pid.clone(),
                state: Some(cri::ContainerStateValue {
                    state: ContainerState::ContainerExited as i32,
                }),
                ..Default::default()
            }))
            .await?;
        ensure!(exited_here.iter().any(|x| x.id == id), "{exited_here:?}");
        c.remove(&id).await?;
        cx.same(
            &format!("{name}/status_after_remove"),
            code(&c.status_of(&id).await),
        );
    }
    Ok(())
}

fn code_of(r: Result<(), tonic::Status>) -> Code {
    code(&r)
}

async fn stop_timeout_kills(cx: Arc<Cx>) -> R {
    let mut c = cx.client();
    let pod = cx.ep.pod_config("stop");
    let pid = cx.run_pod(&pod).await?;
    let mut cfg = container_config("stubborn", &cx.ep.images.busybox, &[]);
    cfg.command = sh("trap '' TERM; echo ready; while :; do sleep 1; done");
    let id = cx.ep.run_container(&pid, &pod, &cfg).await?;
    let log = log_file(&pod, &cfg);
    poll(WAIT, || async {
        std::fs::read_to_string(&log)
            .ok()
            .filter(|s| s.contains("ready"))
    })
    .await
    .context("container never printed ready")?;
    let t = Instant::now();
    c.stop(&id, 2).await?;
    let took = t.elapsed();
    ensure!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(10),
        "SIGKILL after the 2 s grace period: took {took:?}"
    );
    let st = exited(&cx, &id).await?;
    ensure!(st.exit_code == 137, "{st:?}");
    cx.same("exit_code", st.exit_code);
    cx.same("reason", &st.reason);
    Ok(())
}

async fn logs_50mb(cx: Arc<Cx>) -> R {
    let pod = cx.ep.pod_config("biglog");
    let pid = cx.run_pod(&pod).await?;
    // 524288 lines of 99 chars + '\n' = exactly 50 MiB.
    let line = "0123456789".repeat(10)[..99].to_string();
    let mut cfg = container_config("big", &cx.ep.images.busybox, &[]);
    // Not `yes | head -c`: youki (a Rust binary) starts the container with SIGPIPE ignored,
    // so `yes` would outlive `head` forever there.
    cfg.command = sh(&format!(
        "awk 'BEGIN {{ for (i = 0; i < 524288; i++) print \"{line}\" }}'"
    ));
    let id = cx.ep.run_container(&pid, &pod, &cfg).await?;
    let st = cx
        .client()
        .wait_state(
            &id,
            ContainerState::ContainerExited,
            Duration::from_secs(120),
        )
        .await?;
    ensure!(st.exit_code == 0, "{st:?}");
    let log = log_file(&pod, &cfg);
    // The log may trail the exit by a little for a daemon that drains fifos.
    let expected = 524_288usize;
    let entries = poll(Duration::from_secs(60), || async {
        let bytes = std::fs::read(&log).ok()?;
        let entries = parse_cri_log(&bytes).ok()?;
        (entries.len() >= expected).then_some(entries)
    })
    .await
    .with_context(|| format!("{} never held {expected} entries", log.display()))?;
    ensure!(entries.len() == expected, "{} entries", entries.len());
    for (n, e) in entries.iter().enumerate() {
        ensure!(
            e.stream == "stdout" && e.tag == "F" && e.content == line.as_bytes(),
            "entry {n}: {e:?}"
        );
    }
    cx.same("entries", entries.len());
    Ok(())
}

async fn logs_long_line_and_no_newline(cx: Arc<Cx>) -> R {
    let pod = cx.ep.pod_config("longlog");
    let pid = cx.run_pod(&pod).await?;
    let mut cfg = container_config("long", &cx.ep.images.busybox, &[]);
    cfg.command = sh("head -c 40000 /dev/zero | tr '\\0' x; echo; echo short; \
         printf 'to-err\\n' >&2; sleep 0.2; printf 'abc'");
    let id = cx.ep.run_container(&pid, &pod, &cfg).await?;
    let st = exited(&cx, &id).await?;
    ensure!(st.exit_code == 0, "{st:?}");
    let log = log_file(&pod, &cfg);
    let entries = poll(Duration::from_secs(10), || async {
        let e = parse_cri_log(&std::fs::read(&log).ok()?).ok()?;
        let out = rebuild(&e, "stdout");
        out.ends_with(b"abc").then_some(e)
    })
    .await
    .with_context(|| {
        format!(
            "log never ended with abc: {:?}",
            std::fs::read(&log)
                .map(|b| String::from_utf8_lossy(&b[b.len().saturating_sub(300)..]).into_owned())
        )
    })?;
    let partial = entries.iter().filter(|e| e.tag == "P").count();
    // 40000 bytes cut at 16 KiB: two P entries then an F with the rest.
    ensure!(
        partial >= 2,
        "the 40000-byte line is cut into P entries: {partial}"
    );
    ensure!(
        entries.iter().all(|e| e.content.len() <= 16 * 1024),
        "no entry longer than 16 KiB"
    );
    ensure!(rebuild(&entries, "stderr") == b"to-err\n");
    let out = rebuild(&entries, "stdout");
    let mut want = vec![b'x'; 40000];
    want.extend_from_slice(b"\nshort\nabc");
    let last = entries.last().context("no entries")?;
    // Output that ends without a newline is a final P entry, so the log rebuilds to exactly
    // what the container wrote (containerd 1.6 and CRI-O do this too).
    ensure!(last.tag == "P" && last.content == b"abc", "last {last:?}");
    ensure!(out == want, "stdout rebuilt: {} bytes", out.len());
    cx.same("partial_entries", partial);
    Ok(())
}

async fn exec_sync(cx: Arc<Cx>) -> R {
    let mut c = cx.client();
    let pod = cx.ep.pod_config("exec");
    let pid = cx.run_pod(&pod).await?;
    let id = cx
        .ep
        .run_container(&pid, &pod, &sleeper(&cx, "exec"))
        .await?;
    let r = c
        .exec_sync(&id, &["sh", "-c", "echo out; echo err >&2; exit 5"], 10)
        .await?;
    ensure!(
        r.exit_code == 5 && r.stdout == b"out\n" && r.stderr == b"err\n",
        "{r:?}"
    );
    cx.same("exit_code", r.exit_code);
    let t = Instant::now();
    let r = c.exec_sync(&id, &["sleep", "30"], 1).await;
    ensure!(
        t.elapsed() < Duration::from_secs(15),
        "timeout honoured: {:?}",
        t.elapsed()
    );
    cx.same("timeout", code(&r));
    ensure!(code(&r) == Code::DeadlineExceeded, "{r:?}");
    // The timed-out process is gone (killed, not left running).
    let ps = exec_out(&cx, &id, &["ps"]).await?;
    ensure!(
        !ps.contains("sleep 30"),
        "the timed-out exec was killed: {ps}"
    );
    // A command that does not exist: both refuse it with an error (runc cannot exec it),
    // with different codes: crius Internal, containerd 1.6 Unknown. Neither is clearly
    // right (CRI-O and Docker answer exit code 126/127 instead); only the failure is
    // compared.
    let r = c.exec_sync(&id, &["/no/such/binary"], 5).await;
    cx.same("missing_binary_fails", r.is_err());
    Ok(())
}

async fn env_command_args(cx: Arc<Cx>) -> R {
    let pod = cx.ep.pod_config("merge");
    let pid = cx.run_pod(&pod).await?;
    // args only: image entrypoint (`sh -c`) + args.
    let mut a = container_config("args", &cx.ep.images.entry, &[]);
    a.args = vec!["sleep 1000001; true".into()];
    a.envs = vec![
        cri::KeyValue {
            key: "OVERRIDE".into(),
            value: "config".into(),
        },
        cri::KeyValue {
            key: "CFG_ENV".into(),
            value: "from config".into(),
        },
    ];
    // neither: image entrypoint + image cmd.
    let n = container_config("neither", &cx.ep.images.entry, &[]);
    // command + args: the image's entrypoint and cmd are both ignored.
    let mut b = container_config("both", &cx.ep.images.entry, &["sleep"]);
    b.args = vec!["1000002".into()];
    b.working_dir = "/bin".into();
    let ia = cx.ep.run_container(&pid, &pod, &a).await?;
    let inn = cx.ep.run_container(&pid, &pod, &n).await?;
    let ib = cx.ep.run_container(&pid, &pod, &b).await?;
    let cmdline = |s: String| s.replace('\0', " ").trim_end().to_string();
    let ca = cmdline(exec_out(&cx, &ia, &["cat", "/proc/1/cmdline"]).await?);
    let cn = cmdline(exec_out(&cx, &inn, &["cat", "/proc/1/cmdline"]).await?);
    let cb = cmdline(exec_out(&cx, &ib, &["cat", "/proc/1/cmdline"]).await?);
    ensure!(ca == "sh -c sleep 1000001; true", "{ca:?}");
    ensure!(cn == "sh -c sleep 1000004; true", "{cn:?}");
    ensure!(cb == "sleep 1000002", "{cb:?}");
    let env = exec_out(&cx, &ia, &["env"]).await?;
    let lines: Vec<&str> = env.lines().collect();
    for want in [
        "IMG_ENV=from-image",
        "OVERRIDE=config",
        "CFG_ENV=from config",
    ] {
        ensure!(lines.contains(&want), "{want} in env: {env}");
    }
    ensure!(!lines.contains(&"OVERRIDE=image"), "{env}");
    ensure!(lines.iter().any(|l| l.starts_with("PATH=")), "{env}");
    ensure!(lines.iter().any(|l| l.starts_with("HOSTNAME=")), "{env}");
    ensure!(
        exec_out(&cx, &ia, &["pwd"]).await?.trim() == "/tmp",
        "image WorkingDir"
    );
    ensure!(
        exec_out(&cx, &ib, &["pwd"]).await?.trim() == "/bin",
        "config working_dir"
    );
    cx.same("cmdlines", (ca, cn, cb));
    Ok(())
}

async fn run_as_user(cx: Arc<Cx>) -> R {
    let pod = cx.ep.pod_config("user");
    let pid = cx.run_pod(&pod).await?;
    let mut cfg = sleeper(&cx, "nobody");
    security(&mut cfg).run_as_user = Some(cri::Int64Value { value: 65534 });
    let id = cx.ep.run_container(&pid, &pod, &cfg).await?;
    let ids = exec_out(&cx, &id, &["sh", "-c", "id -u; id -g"]).await?;
    ensure!(ids == "65534\n65534\n", "{ids:?}");
    let st = cx.client().status_of(&id).await?;
    cx.same("ids", ids);
    // ContainerStatus.user is newer than containerd 1.6 (and not asked of crius by issue
    // 5): when reported, it must be right.
    if let Some(user) = st.user.and_then(|u| u.linux) {
        ensure!(user.uid == 65534 && user.gid == 65534, "{user:?}");
    }
    Ok(())
}

async fn readonly_rootfs(cx: Arc<Cx>) -> R {
    let pod = cx.ep.pod_config("rofs");
    let pid = cx.run_pod(&pod).await?;
    let mut cfg = sleeper(&cx, "ro");
    security(&mut cfg).readonly_rootfs = true;
    let id = cx.ep.run_container(&pid, &pod, &cfg).await?;
    let r = cx.client().exec_sync(&id, &["touch", "/x"], 10).await?;
    ensure!(r.exit_code != 0, "{r:?}");
    ensure!(
        String::from_utf8_lossy(&r.stderr).contains("Read-only"),
        "{r:?}"
    );
    cx.same("touch_fails", r.exit_code != 0);
    // /dev/shm and /etc/hosts still work.
    exec_out(&cx, &id, &["touch", "/dev/shm/ok"]).await?;
    Ok(())
}

async fn bind_mount(cx: Arc<Cx>) -> R {
    let pod = cx.ep.pod_config("bind");
    let pid = cx.run_pod(&pod).await?;
    let host = cx.ep.scratch().join(random_id("bind-"));
    std::fs::create_dir_all(&host)?;
    std::fs::write(host.join("f"), "from host\n")?;
    let mut cfg = sleeper(&cx, "bind");
    cfg.mounts = vec![
        cri::Mount {
            container_path: "/data".into(),
            host_path: host.display().to_string(),
            ..Default::default()
        },
        cri::Mount {
            container_path: "/ro".into(),
            host_path: host.display().to_string(),
            readonly: true,
            ..Default::default()
        },
    ];
    let id = cx.ep.run_container(&pid, &pod, &cfg).await?;
    ensure!(exec_out(&cx, &id, &["cat", "/data/f"]).await? == "from host\n");
    exec_out(&cx, &id, &["sh", "-c", "echo from container > /data/w"]).await?;
    ensure!(std::fs::read_to_string(host.join("w"))? == "from container\n");
    let r = cx.client().exec_sync(&id, &["touch", "/ro/x"], 10).await?;
    ensure!(r.exit_code != 0, "read-only bind: {r:?}");
    let st = cx.client().status_of(&id).await?;
    let paths: Vec<&str> = st
        .mounts
        .iter()
        .map(|m| m.container_path.as_str())
        .collect();
    ensure!(
        paths.contains(&"/data") && paths.contains(&"/ro"),
        "{paths:?}"
    );
    cx.same("ro_write_fails", r.exit_code != 0);
    Ok(())
}

async fn hostname_and_dns(cx: Arc<Cx>) -> R {
    let mut pod = cx.ep.pod_config("dns");
    pod.hostname = format!("host-{}", &random_id("")[..6]);
    pod.dns_config = Some(cri::DnsConfig {
        servers: vec!["10.96.0.10".into()],
        searches: vec!["svc.cluster.test".into(), "cluster.test".into()],
        options: vec!["ndots:5".into()],
    });
    let pid = cx.run_pod(&pod).await?;
    let id = cx
        .ep
        .run_container(&pid, &pod, &sleeper(&cx, "dns"))
        .await?;
    let h = exec_out(&cx, &id, &["hostname"]).await?;
    ensure!(h.trim() == pod.hostname, "{h:?}");
    let resolv = exec_out(&cx, &id, &["cat", "/etc/resolv.conf"]).await?;
    for want in [
        "nameserver 10.96.0.10",
        "search svc.cluster.test cluster.test",
        "options ndots:5",
    ] {
        ensure!(
            resolv.lines().any(|l| l.trim() == want),
            "{want:?} in {resolv:?}"
        );
    }
    let hostname_file = exec_out(&cx, &id, &["cat", "/etc/hostname"]).await?;
    ensure!(hostname_file.trim() == pod.hostname, "{hostname_file:?}");
    let hosts = exec_out(&cx, &id, &["cat", "/etc/hosts"]).await?;
    ensure!(hosts.contains("localhost"), "{hosts:?}");
    Ok(())
}

async fn pid_namespaces(cx: Arc<Cx>) -> R {
    // POD: the pod shares one PID namespace; PID 1 is the pause process.
    let mut shared = cx.ep.pod_config("pidpod");
    pod_security(&mut shared).namespace_options =
        Some(namespaces(NamespaceMode::Pod, NamespaceMode::Pod));
    let ps = cx.run_pod(&shared).await?;
    let mut a = sleeper(&cx, "a");
    security(&mut a).namespace_options = Some(namespaces(NamespaceMode::Pod, NamespaceMode::Pod));
    let mut b = container_config("b", &cx.ep.images.busybox, &["sleep", "1000003"]);
    security(&mut b).namespace_options = Some(namespaces(NamespaceMode::Pod, NamespaceMode::Pod));
    let ia = cx.ep.run_container(&ps, &shared, &a).await?;
    cx.ep.run_container(&ps, &shared, &b).await?;
    let one = exec_out(&cx, &ia, &["cat", "/proc/1/cmdline"]).await?;
    ensure!(
        !one.contains("1000000"),
        "PID 1 is the pause, not the container: {one:?}"
    );
    let all = exec_out(
        &cx,
        &ia,
        &["sh", "-c", "cat /proc/[0-9]*/cmdline | tr '\\0' ' '"],
    )
    .await?;
    ensure!(all.contains("sleep 1000003"), "sees its sibling: {all:?}");
    // CONTAINER: its own namespace, PID 1 is itself.
    let private = cx.ep.pod_config("pidctr");
    let pp = cx.run_pod(&private).await?;
    let ic = cx
        .ep
        .run_container(&pp, &private, &sleeper(&cx, "c"))
        .await?;
    let one = exec_out(&cx, &ic, &["cat", "/proc/1/cmdline"]).await?;
    ensure!(one.replace('\0', " ").trim() == "sleep 1000000", "{one:?}");
    Ok(())
}

fn cap_line(status: &str, field: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .map(|v| v.trim().to_string())
        .unwrap_or_default()
}

async fn capabilities(cx: Arc<Cx>) -> R {
    let pod = cx.ep.pod_config("caps");
    let pid = cx.run_pod(&pod).await?;
    let mut none = sleeper(&cx, "none");
    security(&mut none).capabilities = Some(cri::Capability {
        drop_capabilities: vec!["ALL".into()],
        ..Default::default()
    });
    let mut net = sleeper(&cx, "net");
    security(&mut net).capabilities = Some(cri::Capability {
        drop_capabilities: vec!["ALL".into()],
        add_capabilities: vec!["NET_ADMIN".into()],
        ..Default::default()
    });
    let dflt = sleeper(&cx, "default");
    let inone = cx.ep.run_container(&pid, &pod, &none).await?;
    let inet = cx.ep.run_container(&pid, &pod, &net).await?;
    let idef = cx.ep.run_container(&pid, &pod, &dflt).await?;
    let eff = |s: String| cap_line(&s, "CapEff:");
    let e_none = eff(exec_out(&cx, &inone, &["cat", "/proc/self/status"]).await?);
    let e_net = eff(exec_out(&cx, &inet, &["cat", "/proc/self/status"]).await?);
    let e_def = eff(exec_out(&cx, &idef, &["cat", "/proc/self/status"]).await?);
    ensure!(e_none == "0000000000000000", "{e_none}");
    ensure!(
        e_net == "0000000000001000",
        "CAP_NET_ADMIN is bit 12: {e_net}"
    );
    // containerd's default set (14 caps) = 0x00000000a80425fb.
    ensure!(e_def == "00000000a80425fb", "{e_def}");
    cx.same("caps", (e_none, e_net, e_def));
    Ok(())
}

async fn privileged(cx: Arc<Cx>) -> R {
    let mut pod = cx.ep.pod_config("priv");
    pod_security(&mut pod).privileged = true;
    let pid = cx.run_pod(&pod).await?;
    let mut cfg = sleeper(&cx, "priv");
    security(&mut cfg).privileged = true;
    let id = cx.ep.run_container(&pid, &pod, &cfg).await?;
    let status = exec_out(&cx, &id, &["cat", "/proc/self/status"]).await?;
    let ours = std::fs::read_to_string("/proc/self/status")?;
    // All the capabilities the host allows (this host lacks CAP_SYS_RESOURCE in its
    // bounding set, so "all" means the bounding set, not every cap the kernel knows).
    ensure!(
        cap_line(&status, "CapEff:") == cap_line(&ours, "CapBnd:"),
        "{} vs host {}",
        cap_line(&status, "CapEff:"),
        cap_line(&ours, "CapBnd:")
    );
    let mounts = exec_out(&cx, &id, &["cat", "/proc/mounts"]).await?;
    let sys = mounts
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("/sys"))
        .context("/sys mounted")?;
    let sys_mode = sys
        .split_whitespace()
        .nth(3)
        .unwrap_or_default()
        .split(',')
        .next();
    // The spec asks for a read-write sysfs for privileged containers, but a container that
    // joins the pod's network namespace (rather than creating it) gets sysfs read-only
    // from the kernel/runc whatever the spec says (containerd issues 3221, 8445): both
    // runtimes must show the same thing here.
    cx.same("sysfs_mode", sys_mode);
    // Host devices are visible.
    let devs = exec_out(&cx, &id, &["ls", "/dev"]).await?;
    ensure!(
        devs.lines().any(|d| d == "kmsg" || d.starts_with("loop")),
        "{devs}"
    );
    // A privileged container in a pod that is not privileged is refused.
    let plain = cx.ep.pod_config("unpriv");
    let pp = cx.run_pod(&plain).await?;
    let r = cx.client().create_container(&pp, &cfg, &plain).await;
    // Both refuse it; containerd 1.6 answers Unknown, crius InvalidArgument naming the field,
    // which is the right code for a config that can never be run (the CRI's own words).
    cx.same("privileged_in_unprivileged_pod_refused", r.is_err());
    if cx.crius() {
        ensure!(code(&r) == Code::InvalidArgument, "{r:?}");
    }
    Ok(())
}

/// A created, not yet started container: StopContainer leaves it Created, an update of its
/// resources is what it starts with, and a command the runtime cannot run fails at
/// StartContainer (the task is made there, by crius as by containerd) with StartError.
async fn created_container(cx: Arc<Cx>) -> R {
    let pod = cx.ep.pod_config("created");
    let pid = cx.run_pod(&pod).await?;
    let mut c = cx.client();
    let mut cfg = sleeper(&cx, "created");
    resources(&mut cfg).memory_limit_in_bytes = 64 << 20;
    let id = c.create_container(&pid, &cfg, &pod).await?;
    cx.same("stop_created", code(&c.stop(&id, 5).await));
    let st = c.status_of(&id).await?;
    cx.same("state_after_stop", st.state);
    ensure!(
        st.state == cri::ContainerState::ContainerCreated as i32,
        "{st:?}"
    );
    c.update_resources(
        &id,
        cri::LinuxContainerResources {
            memory_limit_in_bytes: 96 << 20,
            ..Default::default()
        },
    )
    .await?;
    c.start(&id).await?;
    let lim = exec_out(&cx, &id, &["sh", "-c", READ_MEMORY_LIMIT]).await?;
    cx.same("limit_after_update_then_start", lim.trim());
    ensure!(lim.trim() == (96u64 << 20).to_string(), "{lim:?}");

    let bad = container_config("bad", &cx.ep.images.busybox, &["/no/such/binary"]);
    let bid = c.create_container(&pid, &bad, &pod).await?;
    cx.same("create_of_missing_binary", "ok");
    let r = c.start(&bid).await;
    cx.same("start_of_missing_binary_fails", r.is_err());
    let st = c.status_of(&bid).await?;
    cx.same(
        "start_error_status",
        (
            st.state,
            st.exit_code,
            st.reason.as_str(),
            st.started_at == 0,
        ),
    );
    ensure!(st.reason == "StartError" && st.exit_code == 128, "{st:?}");
    c.remove(&bid).await?;
    cx.same("status_after_remove", code(&c.status_of(&bid).await));
    Ok(())
}

async fn memory_limit_and_update(cx: Arc<Cx>) -> R {
    let pod = cx.ep.pod_config("mem");
    let pid = cx.run_pod(&pod).await?;
    let mut cfg = sleeper(&cx, "mem");
    resources(&mut cfg).memory_limit_in_bytes = 64 << 20;
    resources(&mut cfg).cpu_shares = 256;
    let id = cx.ep.run_container(&pid, &pod, &cfg).await?;
    let lim = exec_out(&cx, &id, &["sh", "-c", READ_MEMORY_LIMIT]).await?;
    ensure!(lim.trim() == (64u64 << 20).to_string(), "{lim:?}");
    let mut c = cx.client();
    c.update_resources(
        &id,
        cri::LinuxContainerResources {
            memory_limit_in_bytes: 128 << 20,
            cpu_shares: 512,
            ..Default::default()
        },
    )
    .await?;
    let lim = exec_out(&cx, &id, &["sh", "-c", READ_MEMORY_LIMIT]).await?;
    ensure!(
        lim.trim() == (128u64 << 20).to_string(),
        "after update: {lim:?}"
    );
    let shares = exec_out(
        &cx,
        &id,
        &["sh", "-c", "cat /sys/fs/cgroup/cpu/cpu.shares 2>/dev/null || cat /sys/fs/cgroup/cpu,cpuacct/cpu.shares"],
    )
    .await;
    if let Ok(s) = shares {
        ensure!(s.trim() == "512", "cpu.shares after update: {s:?}");
    }
    let st = c.status_of(&id).await?;
    let mem = st
        .resources
        .and_then(|r| r.linux)
        .map(|l| l.memory_limit_in_bytes);
    cx.same("status_memory_after_update", mem);
    // Updating a container that does not exist.
    cx.same(
        "update_unknown",
        code_of(
            c.update_resources(&"e".repeat(64), Default::default())
                .await,
        ),
    );
    Ok(())
}

async fn oom_killed(cx: Arc<Cx>) -> R {
    let pod = cx.ep.pod_config("oom");
    let pid = cx.run_pod(&pod).await?;
    let mut cfg = container_config(
        "oom",
        &cx.ep.images.busybox,
        &["dd", "if=/dev/zero", "of=/dev/null", "bs=96M", "count=1"],
    );
    resources(&mut cfg).memory_limit_in_bytes = 32 << 20;
    let id = cx.ep.run_container(&pid, &pod, &cfg).await?;
    let mut st = exited(&cx, &id).await?;
    cx.same("exit_code", st.exit_code);
    if cx.crius() && cx.ep.handler() == "runc-go" {
        // containerd's Go shim sends /tasks/oom after /tasks/exit now and then, or never
        // (containerd/containerd#8180, #8893): crius applies a late one to the exit it
        // recorded, so wait for it a little; a Go shim that never sent it is let through.
        let deadline = Instant::now() + Duration::from_secs(5);
        while st.reason != "OOMKilled" && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            st = cx.client().status_of(&id).await?;
        }
        ensure!(
            st.exit_code == 137 && (st.reason == "OOMKilled" || st.reason == "Error"),
            "{st:?}"
        );
    } else if cx.crius() {
        // Our shim reads the cgroup's OOM count before it reports the exit.
        ensure!(st.exit_code == 137 && st.reason == "OOMKilled", "{st:?}");
    } else {
        // containerd 1.6 now and then reports "Error" for a container OOM-killed right
        // after its start: it handles the exit before the /tasks/oom event that comes
        // after it (containerd/containerd#8180; seen in this suite). crius with its own
        // shim is held to OOMKilled every time.
        ensure!(
            st.exit_code == 137 && (st.reason == "OOMKilled" || st.reason == "Error"),
            "{st:?}"
        );
    }
    Ok(())
}

async fn stats(cx: Arc<Cx>) -> R {
    let pod = cx.ep.pod_config("stats");
    let pid = cx.run_pod(&pod).await?;
    let mut cfg = container_config("busy", &cx.ep.images.busybox, &[]);
    cfg.command = sh("i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done; \
                      echo data > /tmp/f; exec sleep 1000000");
    let id = cx.ep.run_container(&pid, &pod, &cfg).await?;
    let mut c = cx.client();
    let s = poll(WAIT, || {
        let mut c = c.clone();
        let id = id.clone();
        async move {
            let s = c.container_stats(&id).await.ok()?;
            let cpu = s.cpu.as_ref()?.usage_core_nano_seconds.as_ref()?.value;
            let mem = s.memory.as_ref()?.working_set_bytes.as_ref()?.value;
            (cpu > 50_000_000 && mem > 0).then_some(s)
        }
    })
    .await
    .context("stats never showed CPU > 50 ms and memory > 0")?;
    let attrs = s.attributes.context("attributes")?;
    ensure!(attrs.id == id, "{attrs:?}");
    ensure!(attrs.metadata.map(|m| m.name).as_deref() == Some("busy"));
    ensure!(s.writable_layer.is_some(), "writable layer usage reported");
    let listed = c
        .runtime
        .list_container_stats(cri::ListContainerStatsRequest {
            filter: Some(cri::ContainerStatsFilter {
                pod_sandbox_id: pid.clone(),
                ..Default::default()
            }),
        })
        .await?
        .into_inner()
        .stats;
    ensure!(
        listed.len() == 1,
        "ListContainerStats by pod: {}",
        listed.len()
    );
    cx.same("listed", listed.len());
    Ok(())
}

async fn reopen_log(cx: Arc<Cx>) -> R {
    let pod = cx.ep.pod_config("reopen");
    let pid = cx.run_pod(&pod).await?;
    let mut cfg = container_config("tick", &cx.ep.images.busybox, &[]);
    cfg.command = sh("while :; do echo tick; sleep 0.1; done");
    let id = cx.ep.run_container(&pid, &pod, &cfg).await?;
    let log = log_file(&pod, &cfg);
    let has_tick = |p: std::path::PathBuf| async move {
        std::fs::read_to_string(&p)
            .ok()
            .filter(|s| s.contains("stdout F tick"))
    };
    poll(WAIT, || has_tick(log.clone()))
        .await
        .context("no tick")?;
    let rotated = log.with_extension("log.1");
    std::fs::rename(&log, &rotated)?;
    let mut c = cx.client();
    c.reopen_log(&id).await?;
    poll(WAIT, || has_tick(log.clone()))
        .await
        .context("no tick in the reopened log")?;
    // Nothing keeps going to the rotated file after the reopen returned.
    let before = std::fs::metadata(&rotated)?.len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    ensure!(
        std::fs::metadata(&rotated)?.len() == before,
        "rotated log still growing"
    );
    c.stop(&id, 0).await?;
    exited(&cx, &id).await?;
    // Reopen of a stopped container: FailedPrecondition in crius (wrong state); containerd
    // 1.6 answers Unknown ("container is not running").
    let r = code(&c.reopen_log(&id).await);
    let want = if cx.crius() {
        Code::FailedPrecondition
    } else {
        Code::Unknown
    };
    ensure!(r == want, "reopen of a stopped container: {r:?}");
    Ok(())
}

async fn events(cx: Arc<Cx>) -> R {
    let mut c = cx.client();
    let stream = c.container_events().await;
    let mut stream = match stream {
        Ok(s) => s,
        Err(e) => {
            // containerd 1.6 predates GetContainerEvents (added to CRI for Kubernetes 1.25's
            // evented PLEG; containerd implements it from 1.7).
            ensure!(!cx.crius() && e.code() == Code::Unimplemented, "{e:?}");
            return Ok(());
        }
    };
    ensure!(
        cx.crius(),
        "containerd 1.6 unexpectedly serves GetContainerEvents"
    );
    let pod = cx.ep.pod_config("events");
    let pid = cx.run_pod(&pod).await?;
    // A container that lives a while, and one that exits at once (its exit may reach
    // crius before StartContainer has its answer): the same order for both.
    let cfg = container_config("ev", &cx.ep.images.busybox, &["sleep", "0.3"]);
    let id = cx.ep.run_container(&pid, &pod, &cfg).await?;
    let quick = container_config("quick", &cx.ep.images.busybox, &["true"]);
    let qid = cx.ep.run_container(&pid, &pod, &quick).await?;
    exited(&cx, &id).await?;
    exited(&cx, &qid).await?;
    c.remove(&id).await?;
    c.remove(&qid).await?;
    let mut seen: std::collections::HashMap<String, Vec<i32>> = Default::default();
    let deadline = tokio::time::Instant::now() + WAIT;
    while seen.values().map(Vec::len).sum::<usize>() < 8 {
        let next = tokio::time::timeout_at(deadline, stream.message()).await;
        let Ok(Ok(Some(ev))) = next else { break };
        if ev.container_id == id || ev.container_id == qid {
            seen.entry(ev.container_id)
                .or_default()
                .push(ev.container_event_type);
        }
    }
    use cri::ContainerEventType as E;
    let want = vec![
        E::ContainerCreatedEvent as i32,
        E::ContainerStartedEvent as i32,
        E::ContainerStoppedEvent as i32,
        E::ContainerDeletedEvent as i32,
    ];
    for c in [&id, &qid] {
        ensure!(seen.get(c) == Some(&want), "events of {c}: {seen:?}");
    }
    Ok(())
}

async fn shared_net_ipc(cx: Arc<Cx>) -> R {
    let pod = cx.ep.pod_config("share");
    let pid = cx.run_pod(&pod).await?;
    let ia = cx.ep.run_container(&pid, &pod, &sleeper(&cx, "a")).await?;
    let ib = cx.ep.run_container(&pid, &pod, &sleeper(&cx, "b")).await?;
    let ns = "for n in net ipc uts pid; do readlink /proc/self/ns/$n; done";
    let na = exec_out(&cx, &ia, &["sh", "-c", ns]).await?;
    let nb = exec_out(&cx, &ib, &["sh", "-c", ns]).await?;
    let la: Vec<&str> = na.lines().collect();
    let lb: Vec<&str> = nb.lines().collect();
    ensure!(la.len() == 4 && lb.len() == 4, "{na} {nb}");
    ensure!(la[..3] == lb[..3], "net, ipc, uts shared: {la:?} vs {lb:?}");
    ensure!(la[3] != lb[3], "pid per container: {la:?}");
    let ours = std::fs::read_link("/proc/self/ns/net")?;
    ensure!(la[0] != ours.display().to_string(), "not the host's netns");
    let dev = exec_out(&cx, &ia, &["cat", "/proc/net/dev"]).await?;
    ensure!(dev.contains("lo:"), "{dev}");
    // Loopback works across containers of the pod: a listener in a third container, a
    // client in b. (The listener is a container rather than a background process of an
    // ExecSync: an exec whose background child keeps stdout open makes containerd 1.6's
    // ExecSync hang past its own timeout.)
    let mut srv = container_config("srv", &cx.ep.images.busybox, &[]);
    srv.command = sh("while :; do echo hi | nc -l -p 7777; done");
    cx.ep.run_container(&pid, &pod, &srv).await?;
    let c = cx.client();
    let got = poll(Duration::from_secs(10), || {
        let mut c = c.clone();
        let ib = ib.clone();
        async move {
            let r = c
                .exec_sync(&ib, &["nc", "127.0.0.1", "7777"], 5)
                .await
                .ok()?;
            (r.stdout == b"hi\n").then_some(())
        }
    })
    .await;
    ensure!(got.is_some(), "loopback between containers of one pod");
    // The pod's /dev/shm is one mount shared by its containers (POSIX shared memory).
    exec_out(&cx, &ia, &["sh", "-c", "echo shm > /dev/shm/from-a"]).await?;
    let shm = exec_out(&cx, &ib, &["cat", "/dev/shm/from-a"]).await?;
    ensure!(shm == "shm\n", "{shm:?}");
    cx.same("shared", true);
    Ok(())
}

async fn unknown_handler(cx: Arc<Cx>) -> R {
    let pod = cx.ep.pod_config("nohandler");
    let r = cx.client().run_pod(&pod, "no-such-handler").await;
    if let Ok(id) = &r {
        cx.track(id);
    }
    let e = r.err().context("an unknown handler must fail")?;
    ensure!(e.message().contains("no-such-handler"), "{e:?}");
    if cx.crius() {
        ensure!(e.code() == Code::InvalidArgument, "{e:?}");
        ensure!(
            e.message().contains("runc") && e.message().contains("youki"),
            "lists the known handlers: {e:?}"
        );
    } else {
        // containerd 1.6: Unknown ("failed to get sandbox runtime: no runtime for
        // \"no-such-handler\" is configured"); the argument is what is wrong, so
        // InvalidArgument (crius) is the better code.
        ensure!(e.code() == Code::Unknown, "{e:?}");
    }
    let mut c = cx.client();
    let listed = c.list_pods(None).await?;
    let name = pod.metadata.as_ref().map(|m| m.name.clone());
    ensure!(
        !listed
            .iter()
            .any(|p| p.metadata.as_ref().map(|m| m.name.clone()) == name),
        "a failed RunPodSandbox leaves no pod"
    );
    // The name is free again: the same config runs on a real handler.
    let id = cx.run_pod(&pod).await?;
    ensure!(!id.is_empty());
    Ok(())
}

macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        vec![$((stringify!($name), (|cx| Box::pin($name(cx))) as ScenarioFn)),*]
    };
}

fn all() -> Vec<(&'static str, ScenarioFn)> {
    scenarios![
        logs_50mb,
        version_and_status,
        pod_lifecycle,
        unknown_ids,
        container_exit_codes,
        stop_timeout_kills,
        logs_long_line_and_no_newline,
        exec_sync,
        env_command_args,
        run_as_user,
        readonly_rootfs,
        bind_mount,
        hostname_and_dns,
        pid_namespaces,
        capabilities,
        privileged,
        memory_limit_and_update,
        created_container,
        oom_killed,
        stats,
        reopen_log,
        events,
        shared_net_ipc,
        unknown_handler,
    ]
}

/// The scenarios to run: all, or those named in `$CRIUS_RT_ONLY` (comma-separated).
fn selected() -> Vec<(&'static str, ScenarioFn)> {
    let only = std::env::var("CRIUS_RT_ONLY").unwrap_or_default();
    let names: Vec<&str> = only.split(',').filter(|s| !s.is_empty()).collect();
    all()
        .into_iter()
        .filter(|(n, _)| names.is_empty() || names.contains(n))
        .collect()
}

/// Runs the whole suite on one endpoint; the outcomes, the endpoint (for its log) and what
/// was left behind after every scenario cleaned up.
async fn suite_on(
    kind: Kind,
    reg: &Registry,
    images: &TestImages,
) -> (Outcomes, Arc<Endpoint>, Vec<String>) {
    let ep = Arc::new(Endpoint::start(kind, reg, images).await.expect("endpoint"));
    let before = crius_integration::leaks::Footprint::take(&ep)
        .await
        .expect("footprint");
    let out = run_all(ep.clone(), &selected(), 6, Duration::from_secs(120)).await;
    let left = crius_integration::leaks::left_behind(&ep, &before, Duration::from_secs(3))
        .await
        .expect("footprint");
    (out, ep, left)
}

fn assert_clean(ep: &Endpoint, left: &[String]) {
    assert!(
        left.is_empty(),
        "{}: left behind: {left:#?}",
        ep.kind.label()
    );
}

async fn suite(kind: Kind) {
    let reg = Registry::start(Default::default()).expect("registry");
    let images = push_test_images(&reg).await.expect("push images");
    let (out, ep, left) = suite_on(kind, &reg, &images).await;
    assert_all_passed(&ep, &out);
    assert_clean(&ep, &left);
}

/// The peer alone: validates the scenarios against containerd 1.6 (the differential test
/// runs them on containerd too).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "covered by crius_runc_vs_containerd; run alone to validate scenarios on the peer"]
async fn containerd_peer() {
    suite(Kind::Containerd).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crius_runc_vs_containerd() {
    let reg = Registry::start(Default::default()).expect("registry");
    // Pushed once: two pushes of the same blob at once into one docker-registry race in
    // its storage (seen in CI: a HEAD answered 500, a manifest refused as DIGEST_INVALID).
    let images = push_test_images(&reg).await.expect("push images");
    let ((ours, ep_ours, left_ours), (theirs, ep_theirs, left_theirs)) = tokio::join!(
        suite_on(Kind::Crius("runc"), &reg, &images),
        suite_on(Kind::Containerd, &reg, &images)
    );
    assert_all_passed(&ep_theirs, &theirs);
    assert_clean(&ep_theirs, &left_theirs);
    assert_all_passed(&ep_ours, &ours);
    assert_clean(&ep_ours, &left_ours);
    let diff = differences(&ours, &theirs);
    assert!(
        diff.is_empty(),
        "crius and containerd disagree:\n{}",
        diff.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crius_youki() {
    suite(Kind::Crius("youki")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crius_runc_go() {
    suite(Kind::Crius("runc-go")).await
}

/// crun 1.8 refuses this cgroup v1 "hybrid" host: a pod on it must fail with crun's clear
/// cgroup error and leave nothing behind. On a host where crun works, the whole suite runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crius_crun() {
    let reg = Registry::start(Default::default()).expect("registry");
    let images = push_test_images(&reg).await.expect("push images");
    let ep = Endpoint::start(Kind::Crius("crun"), &reg, &images)
        .await
        .expect("endpoint");
    let before = crius_integration::leaks::Footprint::take(&ep)
        .await
        .expect("footprint");
    let pod = ep.pod_config("crun-probe");
    let probe = tokio::time::timeout(Duration::from_secs(60), ep.run_pod(&pod))
        .await
        .unwrap_or_else(|_| panic!("RunPodSandbox on crun hung for 60 s\n{}", ep.log_tail()));
    match probe {
        Ok(id) => {
            ep.teardown(&id).await;
            drop(ep);
            suite(Kind::Crius("crun")).await;
        }
        Err(e) => {
            assert!(e.message().contains("cgroup"), "clear cgroup error: {e:?}");
            let left = crius_integration::leaks::left_behind(&ep, &before, Duration::from_secs(3))
                .await
                .expect("footprint");
            assert!(left.is_empty(), "a failed crun pod left: {left:#?}");
        }
    }
}
