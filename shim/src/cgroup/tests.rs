//! Unit tests on fixture trees, and one on a real v1 memory cgroup.
#![allow(clippy::unwrap_used)]

use super::*;

const MOUNTINFO_V1_SEPARATE: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

const PROC_V1_SEPARATE: &str = "\
9:name=systemd:/k8s/abc
8:pids:/k8s/abc
4:memory:/k8s/abc
3:blkio:/k8s/abc
2:cpuacct:/k8s/abc
1:cpu:/k8s/abc
0::/k8s/abc
";

const MOUNTINFO_V1_COMOUNTED: &str = "\
25 18 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
29 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,cpu,cpuacct
30 25 0:27 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:12 - cgroup cgroup rw,memory
31 25 0:28 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,pids
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
";

const PROC_V1_COMOUNTED: &str = "\
5:pids:/ctr
4:memory:/ctr
3:cpu,cpuacct:/ctr
1:name=systemd:/ctr
0::/ctr
";

const MOUNTINFO_V2: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

fn write(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

fn decode_v1(any: &Any) -> v1m::Metrics {
    assert_eq!(any.type_url, V1_METRICS_TYPE_URL);
    v1m::Metrics::parse_from_bytes(&any.value).unwrap()
}

fn decode_v2(any: &Any) -> v2m::Metrics {
    assert_eq!(any.type_url, V2_METRICS_TYPE_URL);
    v2m::Metrics::parse_from_bytes(&any.value).unwrap()
}

#[test]
fn v1_separate_mounts_locate_dirs() {
    let root = Path::new("/r");
    let cg = Cgroup::from_parts(PROC_V1_SEPARATE, MOUNTINFO_V1_SEPARATE, root).unwrap();
    assert!(!cg.is_v2());
    assert_eq!(
        cg.v1_dir("cpu").unwrap(),
        Path::new("/r/sys/fs/cgroup/cpu/k8s/abc")
    );
    assert_eq!(
        cg.v1_dir("cpuacct").unwrap(),
        Path::new("/r/sys/fs/cgroup/cpuacct/k8s/abc")
    );
    assert_eq!(
        cg.v1_dir("memory").unwrap(),
        Path::new("/r/sys/fs/cgroup/memory/k8s/abc")
    );
    assert_eq!(
        cg.v1_dir("name=systemd").unwrap(),
        Path::new("/r/sys/fs/cgroup/systemd/k8s/abc")
    );
    // blkio is listed but not mounted.
    assert!(cg.v1_dir("blkio").is_none());
}

#[test]
fn v1_comounted_cpu_cpuacct() {
    let cg = Cgroup::from_parts(PROC_V1_COMOUNTED, MOUNTINFO_V1_COMOUNTED, Path::new("/")).unwrap();
    assert!(!cg.is_v2());
    let want = Path::new("/sys/fs/cgroup/cpu,cpuacct/ctr");
    assert_eq!(cg.v1_dir("cpu").unwrap(), want);
    assert_eq!(cg.v1_dir("cpuacct").unwrap(), want);
    assert_eq!(
        cg.v1_dir("pids").unwrap(),
        Path::new("/sys/fs/cgroup/pids/ctr")
    );
}

#[test]
fn v1_from_proc_mounts_format() {
    let mounts = "\
cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,nosuid,nodev,noexec,relatime,cpu,cpuacct 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,nosuid,nodev,noexec,relatime,memory 0 0
";
    let cg = Cgroup::from_parts(PROC_V1_COMOUNTED, mounts, Path::new("/")).unwrap();
    assert_eq!(
        cg.v1_dir("cpuacct").unwrap(),
        Path::new("/sys/fs/cgroup/cpu,cpuacct/ctr")
    );
    assert_eq!(
        cg.v1_dir("memory").unwrap(),
        Path::new("/sys/fs/cgroup/memory/ctr")
    );
}

#[test]
fn v1_mount_root_is_stripped() {
    // Inside a cgroup namespace / bind mount: the mount shows the hierarchy from /outer.
    let mounts = "\
40 31 0:32 /outer /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
41 31 0:32 / /host/memory rw - cgroup cgroup rw,memory
";
    let cg = Cgroup::from_parts("4:memory:/outer/ctr\n", mounts, Path::new("/")).unwrap();
    assert_eq!(
        cg.v1_dir("memory").unwrap(),
        Path::new("/sys/fs/cgroup/memory/ctr")
    );
    let cg = Cgroup::from_parts("4:memory:/elsewhere/ctr\n", mounts, Path::new("/")).unwrap();
    assert_eq!(
        cg.v1_dir("memory").unwrap(),
        Path::new("/host/memory/elsewhere/ctr")
    );
    let cg = Cgroup::from_parts("4:memory:/outer\n", mounts, Path::new("/")).unwrap();
    assert_eq!(
        cg.v1_dir("memory").unwrap(),
        Path::new("/sys/fs/cgroup/memory")
    );
}

#[test]
fn v2_locate_and_escapes() {
    let cg =
        Cgroup::from_parts("0::/system.slice/ctr.scope\n", MOUNTINFO_V2, Path::new("/")).unwrap();
    assert!(cg.is_v2());
    assert_eq!(
        cg.v2_dir().unwrap(),
        Path::new("/sys/fs/cgroup/system.slice/ctr.scope")
    );

    let mounts = "35 24 0:30 /ns /my\\040cg rw - cgroup2 cgroup2 rw\n";
    let cg = Cgroup::from_parts("0::/ns/a\n", mounts, Path::new("/")).unwrap();
    assert_eq!(cg.v2_dir().unwrap(), Path::new("/my cg/a"));
}

#[test]
fn only_named_v1_hierarchy_is_v2() {
    let proc = "1:name=systemd:/x\n0::/x\n";
    let mounts = format!(
        "{MOUNTINFO_V2}40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd\n"
    );
    let cg = Cgroup::from_parts(proc, &mounts, Path::new("/")).unwrap();
    assert!(cg.is_v2());
}

#[test]
fn errors_name_what_is_missing() {
    let e = Cgroup::from_parts("4:memory:/x\n", MOUNTINFO_V2, Path::new("/")).unwrap_err();
    assert!(matches!(e, CgroupError::NotMounted { .. }), "{e}");
    let e = Cgroup::from_parts(
        "0::/x\n",
        MOUNTINFO_V1_COMOUNTED.lines().next().unwrap(),
        Path::new("/"),
    )
    .unwrap_err();
    assert!(e.to_string().contains("cgroup2"), "{e}");
    let e = Cgroup::from_parts("garbage\n", MOUNTINFO_V2, Path::new("/")).unwrap_err();
    assert!(e.to_string().contains("/proc/<pid>/cgroup"), "{e}");
    let e = Cgroup::for_pid(u32::MAX).unwrap_err();
    assert!(
        e.to_string()
            .contains(&format!("/proc/{}/cgroup", u32::MAX)),
        "{e}"
    );
}

#[test]
fn send_and_sync() {
    fn send<T: Send>(_: &T) {}
    fn sync<T: Send + Sync>() {}
    sync::<Cgroup>();
    sync::<CgroupError>();
    let cg = Cgroup::from_parts("0::/x\n", MOUNTINFO_V2, Path::new("/nonexistent")).unwrap();
    let mut watch = OomWatch {
        flavour: Flavour::V2,
        dir: PathBuf::new(),
        counter_file: PathBuf::new(),
        last: None,
        fd: None,
        afd: None,
        done: true,
    };
    send(&watch.next());
    assert!(cg.watch_oom().is_err());
}

#[test]
fn for_self_works() {
    let cg = Cgroup::for_pid(std::process::id()).unwrap();
    assert!(cg.procs().unwrap().contains(&std::process::id()));
    cg.metrics().unwrap();
}

fn v1_fixture(root: &Path, cpu_dir: &str, cpuacct_dir: &str) {
    let base = root.join("sys/fs/cgroup");
    let cpuacct = base.join(cpuacct_dir).join("ctr");
    write(&cpuacct.join("cpuacct.usage"), "123456789\n");
    write(&cpuacct.join("cpuacct.usage_percpu"), "100 200 \n");
    write(&cpuacct.join("cpuacct.stat"), "user 150\nsystem 25\n");
    let cpu = base.join(cpu_dir).join("ctr");
    write(
        &cpu.join("cpu.stat"),
        "nr_periods 10\nnr_throttled 3\nthrottled_time 999\n",
    );
    let mem = base.join("memory/ctr");
    write(&mem.join("memory.usage_in_bytes"), "4096000\n");
    write(&mem.join("memory.limit_in_bytes"), "67108864\n");
    write(&mem.join("memory.max_usage_in_bytes"), "5000000\n");
    write(&mem.join("memory.failcnt"), "2\n");
    write(
        &mem.join("memory.stat"),
        "cache 1000\nrss 2000\nrss_huge 0\npgpgin 7\ninactive_file 300\nhierarchical_memsw_limit 9\n\
         total_cache 1100\ntotal_rss 2200\ntotal_inactive_file 330\ntotal_pgmajfault 4\n",
    );
    write(
        &mem.join("memory.oom_control"),
        "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
    );
    write(&mem.join("cgroup.procs"), "42\n43\n");
    let pids = base.join("pids/ctr");
    write(&pids.join("pids.current"), "2\n");
    write(&pids.join("pids.max"), "max\n");
    write(&pids.join("cgroup.procs"), "42\n43\n");
}

fn check_v1_metrics(m: &v1m::Metrics) {
    let usage = &m.cpu.usage;
    assert_eq!(usage.total, 123456789);
    assert_eq!(usage.per_cpu, vec![100, 200]);
    let ticks = clock_ticks();
    assert_eq!(usage.user, 150 * 1_000_000_000 / ticks);
    assert_eq!(usage.kernel, 25 * 1_000_000_000 / ticks);
    assert_eq!(m.cpu.throttling.throttled_periods, 3);
    assert_eq!(m.cpu.throttling.throttled_time, 999);
    let mem = &m.memory;
    assert_eq!(mem.usage.usage, 4096000);
    assert_eq!(mem.usage.limit, 67108864);
    assert_eq!(mem.usage.max, 5000000);
    assert_eq!(mem.usage.failcnt, 2);
    assert_eq!(mem.cache, 1000);
    assert_eq!(mem.rss, 2000);
    assert_eq!(mem.pg_pg_in, 7);
    assert_eq!(mem.inactive_file, 300);
    assert_eq!(mem.hierarchical_swap_limit, 9);
    assert_eq!(mem.total_inactive_file, 330);
    assert_eq!(mem.total_rss, 2200);
    assert_eq!(mem.total_pg_maj_fault, 4);
    // memsw / kmem not present: zero, no error.
    assert_eq!(mem.swap.limit, 0);
    assert_eq!(m.memory_oom_control.oom_kill, 3);
    assert_eq!(m.pids.current, 2);
    assert_eq!(m.pids.limit, 0);
}

#[test]
fn v1_metrics_separate() {
    let tmp = tempfile::tempdir().unwrap();
    v1_fixture(tmp.path(), "cpu", "cpuacct");
    let cg = Cgroup::from_parts(
        PROC_V1_SEPARATE.replace("/k8s/abc", "/ctr").as_str(),
        MOUNTINFO_V1_SEPARATE,
        tmp.path(),
    )
    .unwrap();
    let m = decode_v1(&cg.metrics().unwrap());
    check_v1_metrics(&m);
    // blkio is not mounted.
    assert!(m.blkio.is_none());
    assert_eq!(cg.procs().unwrap(), vec![42, 43]);
    assert_eq!(cg.oom_kills(), Some(3));
}

#[test]
fn v1_metrics_comounted_and_blkio() {
    let tmp = tempfile::tempdir().unwrap();
    v1_fixture(tmp.path(), "cpu,cpuacct", "cpu,cpuacct");
    let blkio = tmp.path().join("sys/fs/cgroup/blkio/ctr");
    write(
        &blkio.join("blkio.throttle.io_service_bytes"),
        "8:0 Read 4096\n8:0 Write 8192\n8:0 Total 12288\nTotal 12288\n",
    );
    write(
        &blkio.join("blkio.throttle.io_serviced"),
        "8:0 Read 1\nTotal 1\n",
    );
    let mounts = format!(
        "{MOUNTINFO_V1_COMOUNTED}32 25 0:29 / /sys/fs/cgroup/blkio rw - cgroup cgroup rw,blkio\n"
    );
    let proc = format!("{PROC_V1_COMOUNTED}6:blkio:/ctr\n");
    let cg = Cgroup::from_parts(&proc, &mounts, tmp.path()).unwrap();
    let m = decode_v1(&cg.metrics().unwrap());
    check_v1_metrics(&m);
    let bytes = &m.blkio.io_service_bytes_recursive;
    assert_eq!(bytes.len(), 3);
    assert_eq!(
        (
            bytes[1].major,
            bytes[1].minor,
            bytes[1].op.as_str(),
            bytes[1].value
        ),
        (8, 0, "Write", 8192)
    );
    assert_eq!(m.blkio.io_serviced_recursive.len(), 1);
}

#[test]
fn v1_missing_controllers_and_gone() {
    let tmp = tempfile::tempdir().unwrap();
    let mem = tmp.path().join("sys/fs/cgroup/memory/ctr");
    write(&mem.join("memory.usage_in_bytes"), "10\n");
    let cg = Cgroup::from_parts(PROC_V1_COMOUNTED, MOUNTINFO_V1_COMOUNTED, tmp.path()).unwrap();
    let m = decode_v1(&cg.metrics().unwrap());
    assert_eq!(m.memory.usage.usage, 10);
    assert!(m.cpu.is_none());
    assert!(m.pids.is_none());
    assert!(m.memory_oom_control.is_none());
    assert_eq!(cg.oom_kills(), None);
    fs::remove_dir_all(tmp.path().join("sys")).unwrap();
    let e = cg.metrics().unwrap_err();
    assert!(matches!(e, CgroupError::Gone { .. }), "{e}");
    assert!(e.to_string().contains("memory/ctr"), "{e}");
    assert!(matches!(cg.procs().unwrap_err(), CgroupError::Gone { .. }));
}

fn v2_fixture(dir: &Path) {
    write(&dir.join("cgroup.procs"), "7\n8\n9\n");
    write(&dir.join("pids.current"), "3\n");
    write(&dir.join("pids.max"), "100\n");
    write(
        &dir.join("cpu.stat"),
        "usage_usec 5000\nuser_usec 3000\nsystem_usec 2000\nnr_periods 4\nnr_throttled 1\nthrottled_usec 77\n",
    );
    write(&dir.join("cpu.pressure"), "some avg10=1.50 avg60=0.00 avg300=0.00 total=12\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=3\n");
    write(&dir.join("memory.current"), "1048576\n");
    write(&dir.join("memory.max"), "max\n");
    write(
        &dir.join("memory.stat"),
        "anon 500\nfile 600\ninactive_file 123\nactive_anon 9\npgmajfault 2\n",
    );
    write(
        &dir.join("memory.events"),
        "low 0\nhigh 0\nmax 5\noom 2\noom_kill 1\noom_group_kill 0\n",
    );
    write(
        &dir.join("io.stat"),
        "8:16 rbytes=1459200 wbytes=314773504 rios=192 wios=353 dbytes=0 dios=0\n",
    );
}

#[test]
fn v2_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sys/fs/cgroup/pod/ctr");
    v2_fixture(&dir);
    let cg = Cgroup::from_parts("0::/pod/ctr\n", MOUNTINFO_V2, tmp.path()).unwrap();
    assert!(cg.is_v2());
    assert_eq!(cg.procs().unwrap(), vec![7, 8, 9]);
    assert_eq!(cg.oom_kills(), Some(1));
    let m = decode_v2(&cg.metrics().unwrap());
    assert_eq!((m.pids.current, m.pids.limit), (3, 100));
    assert_eq!(
        (m.cpu.usage_usec, m.cpu.user_usec, m.cpu.system_usec),
        (5000, 3000, 2000)
    );
    assert_eq!(m.cpu.throttled_usec, 77);
    assert_eq!(m.cpu.psi.some.avg10, 1.5);
    assert_eq!(m.cpu.psi.full.total, 3);
    assert_eq!(m.memory.usage, 1048576);
    assert_eq!(m.memory.usage_limit, u64::MAX);
    assert_eq!(m.memory.inactive_file, 123);
    assert_eq!(m.memory.anon, 500);
    assert_eq!(m.memory.pgmajfault, 2);
    // memory.swap.* absent: zero.
    assert_eq!(m.memory.swap_limit, 0);
    assert!(m.memory.psi.is_none());
    assert_eq!(m.memory_events.oom_kill, 1);
    assert_eq!(m.memory_events.max, 5);
    assert_eq!(m.io.usage.len(), 1);
    assert_eq!(
        (m.io.usage[0].major, m.io.usage[0].minor, m.io.usage[0].wios),
        (8, 16, 353)
    );

    fs::remove_dir_all(&dir).unwrap();
    let e = cg.metrics().unwrap_err();
    assert!(matches!(e, CgroupError::Gone { .. }), "{e}");
    assert_eq!(cg.oom_kills(), None);
}

#[test]
fn v2_metrics_missing_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sys/fs/cgroup/x");
    fs::create_dir_all(&dir).unwrap();
    let cg = Cgroup::from_parts("0::/x\n", MOUNTINFO_V2, tmp.path()).unwrap();
    let m = decode_v2(&cg.metrics().unwrap());
    assert_eq!(m.memory.usage, 0);
    assert!(m.memory_events.is_none());
    assert!(cg.watch_oom().is_err());
}

#[tokio::test(flavor = "current_thread")]
async fn v2_watch_fixture() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sys/fs/cgroup/ctr");
    v2_fixture(&dir);
    let cg = Cgroup::from_parts("0::/ctr\n", MOUNTINFO_V2, tmp.path()).unwrap();
    let mut watch = cg.watch_oom().unwrap();
    let events = dir.join("memory.events");
    // A modification without a new kill is not reported.
    fs::write(&events, "low 0\nhigh 0\nmax 6\noom 2\noom_kill 1\n").unwrap();
    let r = tokio::time::timeout(Duration::from_millis(100), watch.next()).await;
    assert!(r.is_err(), "no new kill yet");
    fs::write(&events, "low 0\nhigh 0\nmax 7\noom 3\noom_kill 2\n").unwrap();
    let r = tokio::time::timeout(Duration::from_secs(2), watch.next()).await;
    assert_eq!(r.unwrap(), Some(()));
    fs::remove_dir_all(&dir).unwrap();
    let r = tokio::time::timeout(Duration::from_secs(3), watch.next()).await;
    assert_eq!(r.unwrap(), None);
    assert_eq!(watch.next().await, None);
}

/// A real v1 memory cgroup: procs, metrics, and an OOM kill seen through the eventfd.
#[tokio::test(flavor = "current_thread")]
async fn v1_real_memory_cgroup() {
    struct Cleanup(Vec<PathBuf>, Vec<std::process::Child>);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            for c in &mut self.1 {
                let _ = c.kill();
                let _ = c.wait();
            }
            for d in &self.0 {
                let _ = fs::remove_dir(d);
            }
        }
    }
    let name = format!("crius-unit-{}", std::process::id());
    let memory = Path::new("/sys/fs/cgroup/memory");
    let dir = memory.join(&name);
    if !memory.join("cgroup.event_control").exists() || fs::create_dir(&dir).is_err() {
        eprintln!("skipping: no writable cgroup v1 memory hierarchy");
        return;
    }
    let mut cleanup = Cleanup(vec![dir.clone()], Vec::new());
    // As runc does, put the container at the same path in the pids hierarchy too.
    let pids_dir = Path::new("/sys/fs/cgroup/pids").join(&name);
    if fs::create_dir(&pids_dir).is_ok() {
        cleanup.0.push(pids_dir.clone());
    }
    let limit = 32u64 << 20;
    fs::write(dir.join("memory.limit_in_bytes"), limit.to_string()).unwrap();
    if dir.join("memory.memsw.limit_in_bytes").exists() {
        let _ = fs::write(dir.join("memory.memsw.limit_in_bytes"), limit.to_string());
    }
    let sleeper = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let pid = sleeper.id();
    cleanup.1.push(sleeper);
    for d in &cleanup.0 {
        fs::write(d.join("cgroup.procs"), pid.to_string()).unwrap();
    }

    let cg = Cgroup::for_pid(pid).unwrap();
    assert!(!cg.is_v2());
    assert_eq!(cg.v1_dir("memory").unwrap(), dir);
    assert_eq!(cg.procs().unwrap(), vec![pid]);
    let m = decode_v1(&cg.metrics().unwrap());
    assert_eq!(m.memory.usage.limit, limit);
    assert!(m.memory_oom_control.is_some());
    if cleanup.0.len() > 1 {
        assert_eq!(m.pids.current, 1);
    }
    assert_eq!(cg.oom_kills(), Some(0));

    // An OOM kill: dd's 64 MiB buffer does not fit in 32 MiB.
    let mut watch = cg.watch_oom().unwrap();
    let script = format!(
        "echo $$ > {}/cgroup.procs && exec dd if=/dev/zero of=/dev/null bs=64M count=1 2>/dev/null",
        dir.display()
    );
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .status()
        .unwrap();
    assert!(!status.success());
    let r = tokio::time::timeout(Duration::from_secs(5), watch.next()).await;
    assert_eq!(r.unwrap(), Some(()));
    assert_eq!(cg.oom_kills(), Some(1));
    let m = decode_v1(&cg.metrics().unwrap());
    assert_eq!(m.memory_oom_control.oom_kill, 1);

    // Removal ends the watch.
    drop(cleanup);
    assert!(!dir.exists());
    let r = tokio::time::timeout(Duration::from_secs(5), watch.next()).await;
    assert_eq!(r.unwrap(), None);
    assert_eq!(cg.oom_kills(), None);
}
