//! Spec builder tests: no root needed but for the one that runs runc.

use super::*;
use crate::container::config::{Capabilities, ContainerSecurity, Device, Mount as CriMount};
use crate::image::manifest::ProcessConfig;
use crate::sandbox::config::NamespaceOptions;
use oci_spec::runtime::{Capability, LinuxDeviceType, LinuxSeccompAction};
use std::os::unix::fs::symlink;

struct Fixture {
    dir: tempfile::TempDir,
    pod: PodConfig,
    container: ContainerConfig,
    image: ImageConfig,
    paths: SandboxPaths,
    host: HostFacts,
    target_pid: Option<u32>,
}

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
                      daemon:x:1:1::/:/bin/false\n\
                      app:x:1000:1001:App:/home/app:/bin/sh\n";
const GROUP: &str = "root:x:0:\n\
                     wheel:x:10:root,app\n\
                     appgrp:x:1001:\n\
                     video:x:44:app\n";

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::Builder::new()
            .prefix("crius-spec-")
            .tempdir_in("/var/tmp")
            .expect("tempdir");
        let etc = dir.path().join("rootfs/etc");
        std::fs::create_dir_all(&etc).expect("mkdir");
        std::fs::write(etc.join("passwd"), PASSWD).expect("passwd");
        std::fs::write(etc.join("group"), GROUP).expect("group");
        let mut pod = PodConfig::default();
        pod.metadata.name = "web".into();
        pod.metadata.namespace = "prod".into();
        pod.metadata.uid = "uid-1".into();
        pod.hostname = "web-0".into();
        pod.log_directory = "/var/log/pods/x".into();
        let mut container = ContainerConfig::default();
        container.metadata.name = "app".into();
        container.image = "busybox".into();
        let image = ImageConfig {
            config: Some(ProcessConfig {
                env: Some(vec!["PATH=/bin".into(), "FOO=image".into()]),
                entrypoint: Some(vec!["/entry".into()]),
                cmd: Some(vec!["cmd-arg".into()]),
                working_dir: Some("/srv".into()),
                ..ProcessConfig::default()
            }),
            ..ImageConfig::default()
        };
        let paths = SandboxPaths {
            hostname: dir.path().join("hostname"),
            hosts: dir.path().join("hosts"),
            resolv_conf: dir.path().join("resolv.conf"),
            shm: Some(dir.path().join("shm")),
        };
        Fixture {
            dir,
            pod,
            container,
            image,
            paths,
            host: HostFacts {
                seccomp_enabled: true,
                ..HostFacts::default()
            },
            target_pid: None,
        }
    }

    fn rootfs(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }

    fn sec(&mut self) -> &mut ContainerSecurity {
        &mut self.container.linux.security
    }

    fn spec(&self) -> Result<Spec, SpecError> {
        let rootfs = self.rootfs();
        container_spec(&ContainerSpecInput {
            id: "c1",
            sandbox_id: "s1",
            pod: &self.pod,
            container: &self.container,
            image: &self.image,
            image_name: "docker.io/library/busybox:latest",
            rootfs: &rootfs,
            sandbox_pid: 4242,
            target_pid: self.target_pid,
            paths: &self.paths,
            cgroups_path: "/crius/c1".into(),
            host: &self.host,
        })
    }

    fn ok(&self) -> Spec {
        self.spec().expect("spec builds")
    }

    fn sandbox(&self, netns: Option<&Path>) -> Result<Spec, SpecError> {
        sandbox_spec(&SandboxSpecInput {
            id: "s1",
            pod: &self.pod,
            image: &self.image,
            image_name: "crius.local/pause:builtin",
            netns,
            paths: &self.paths,
            cgroups_path: "/crius/s1".into(),
            host: &self.host,
            runtime_handler: "runc",
        })
    }
}

fn process(spec: &Spec) -> &Process {
    spec.process().as_ref().expect("process")
}

fn linux(spec: &Spec) -> &oci_spec::runtime::Linux {
    spec.linux().as_ref().expect("linux")
}

fn env(spec: &Spec) -> Vec<String> {
    process(spec).env().clone().unwrap_or_default()
}

fn namespaces(spec: &Spec) -> Vec<(LinuxNamespaceType, Option<PathBuf>)> {
    linux(spec)
        .namespaces()
        .iter()
        .flatten()
        .map(|n| (n.typ(), n.path().clone()))
        .collect()
}

fn ns_path(spec: &Spec, typ: LinuxNamespaceType) -> Option<Option<PathBuf>> {
    namespaces(spec)
        .into_iter()
        .find(|(t, _)| *t == typ)
        .map(|(_, p)| p)
}

fn mount_at<'a>(spec: &'a Spec, dest: &str) -> Option<&'a Mount> {
    spec.mounts()
        .iter()
        .flatten()
        .find(|m| m.destination() == Path::new(dest))
}

fn options(m: &Mount) -> Vec<String> {
    m.options().clone().unwrap_or_default()
}

fn user(spec: &Spec) -> (u32, u32, Vec<u32>) {
    let u = process(spec).user();
    (
        u.uid(),
        u.gid(),
        u.additional_gids().clone().unwrap_or_default(),
    )
}

fn caps_of(spec: &Spec) -> oci_spec::runtime::LinuxCapabilities {
    process(spec).capabilities().clone().expect("capabilities")
}

fn v(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

type ArgCase<'a> = (
    &'a [&'a str],
    &'a [&'a str],
    &'a Option<Vec<String>>,
    &'a Option<Vec<String>>,
    &'a [&'a str],
);

#[test]
fn command_merging_follows_kubernetes() {
    let e = Some(v(&["/entry", "e1"]));
    let c = Some(v(&["c1", "c2"]));
    let cases: &[ArgCase] = &[
        (&[], &[], &e, &c, &["/entry", "e1", "c1", "c2"]),
        (&["/cmd"], &[], &e, &c, &["/cmd"]),
        (&[], &["a1"], &e, &c, &["/entry", "e1", "a1"]),
        (&["/cmd"], &["a1"], &e, &c, &["/cmd", "a1"]),
        (&[], &[], &None, &c, &["c1", "c2"]),
        (&[], &["a1"], &None, &c, &["a1"]),
        (&[], &[], &e, &None, &["/entry", "e1"]),
    ];
    for (command, args, entry, cmd, want) in cases {
        let got = merge_args(&v(command), &v(args), entry, cmd).expect("merges");
        assert_eq!(got, v(want), "command={command:?} args={args:?}");
    }
    let err = merge_args(&[], &[], &None, &Some(vec![])).expect_err("empty");
    assert!(matches!(err, SpecError::InvalidArgument(ref m) if m == "no command specified"));
}

#[test]
fn container_without_any_command_is_refused() {
    let mut f = Fixture::new();
    f.image.config = None;
    assert!(matches!(f.spec(), Err(SpecError::InvalidArgument(m)) if m.contains("no command")));
}

#[test]
fn env_is_image_then_config_with_overrides_in_place() {
    let mut f = Fixture::new();
    f.container.envs = vec![
        ("FOO".into(), "config".into()),
        ("BAR".into(), "b=c".into()),
    ];
    let spec = f.ok();
    assert_eq!(
        env(&spec),
        v(&["PATH=/bin", "HOSTNAME=web-0", "FOO=config", "BAR=b=c"])
    );
    f.image.config = Some(ProcessConfig {
        cmd: Some(v(&["x"])),
        ..ProcessConfig::default()
    });
    f.container.envs.clear();
    f.container.tty = true;
    let spec = f.ok();
    assert_eq!(
        env(&spec),
        v(&[DEFAULT_PATH, "HOSTNAME=web-0", "TERM=xterm"])
    );
    assert_eq!(process(&spec).terminal(), Some(true));
}

#[test]
fn working_dir_is_config_then_image_then_root() {
    let mut f = Fixture::new();
    assert_eq!(process(&f.ok()).cwd(), Path::new("/srv"));
    f.container.working_dir = "/work".into();
    assert_eq!(process(&f.ok()).cwd(), Path::new("/work"));
    f.container.working_dir.clear();
    if let Some(c) = f.image.config.as_mut() {
        c.working_dir = None;
    }
    assert_eq!(process(&f.ok()).cwd(), Path::new("/"));
    f.container.working_dir = "rel".into();
    assert!(matches!(f.spec(), Err(SpecError::InvalidArgument(m)) if m.contains("working_dir")));
}

fn set_image_user(f: &mut Fixture, u: &str) {
    if let Some(c) = f.image.config.as_mut() {
        c.user = Some(u.into());
    }
}

#[test]
fn users_resolve_against_the_image_files() {
    let mut f = Fixture::new();
    // No USER: root, with root's memberships.
    assert_eq!(user(&f.ok()), (0, 0, vec![0, 10]));
    set_image_user(&mut f, "app");
    assert_eq!(user(&f.ok()), (1000, 1001, vec![1001, 10, 44]));
    set_image_user(&mut f, "1000");
    assert_eq!(user(&f.ok()), (1000, 1001, vec![1001, 10, 44]));
    // A uid without an entry gets gid 0 and no memberships.
    set_image_user(&mut f, "4321");
    assert_eq!(user(&f.ok()), (4321, 0, vec![0]));
    set_image_user(&mut f, "4321:77");
    assert_eq!(user(&f.ok()), (4321, 77, vec![77]));
    set_image_user(&mut f, "app:video");
    assert_eq!(user(&f.ok()), (1000, 44, vec![44, 10]));
    set_image_user(&mut f, "daemon:10");
    assert_eq!(user(&f.ok()), (1, 10, vec![10]));
    set_image_user(&mut f, "nobody");
    match f.spec() {
        Err(SpecError::NotFound(m)) => assert!(m.contains("\"nobody\""), "{m}"),
        other => panic!("{other:?}"),
    }
    set_image_user(&mut f, "app:nogroup");
    match f.spec() {
        Err(SpecError::NotFound(m)) => assert!(m.contains("\"nogroup\""), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn run_as_fields_override_the_image_user() {
    let mut f = Fixture::new();
    set_image_user(&mut f, "app");
    f.sec().run_as_user = Some(1);
    assert_eq!(user(&f.ok()), (1, 1, vec![1]));
    f.sec().run_as_group = Some(5);
    f.sec().supplemental_groups = vec![7, 5, 8];
    assert_eq!(user(&f.ok()), (1, 5, vec![5, 7, 8]));
    f.sec().run_as_user = None;
    f.sec().run_as_group = None;
    f.sec().run_as_username = "app".into();
    f.sec().supplemental_groups = vec![99];
    assert_eq!(user(&f.ok()), (1000, 1001, vec![1001, 10, 44, 99]));
    f.sec().supplemental_groups_policy = SupplementalGroupsPolicy::Strict;
    assert_eq!(user(&f.ok()), (1000, 1001, vec![1001, 99]));
    f.sec().run_as_username = "ghost".into();
    assert!(matches!(f.spec(), Err(SpecError::NotFound(m)) if m.contains("run_as_username")));
}

#[test]
fn symlinked_passwd_does_not_escape_the_rootfs() {
    let f = Fixture::new();
    let outside = f.dir.path().join("outside-passwd");
    std::fs::write(&outside, "evil:x:666:666::/:/bin/sh\n").expect("write");
    let passwd = f.rootfs().join("etc/passwd");
    std::fs::remove_file(&passwd).expect("rm");
    // Absolute target: resolved inside the rootfs, where it does not exist.
    symlink(&outside, &passwd).expect("symlink");
    let mut f = f;
    set_image_user(&mut f, "evil");
    assert!(matches!(f.spec(), Err(SpecError::NotFound(_))));
    // Relative target climbing out: clamped at the rootfs.
    std::fs::remove_file(&passwd).expect("rm");
    symlink("../../../../../../../../outside-passwd", &passwd).expect("symlink");
    assert!(matches!(f.spec(), Err(SpecError::NotFound(_))));
    // A symlink that stays inside is followed.
    std::fs::remove_file(&passwd).expect("rm");
    std::fs::write(
        f.rootfs().join("etc/passwd.real"),
        "evil:x:5:6::/:/bin/sh\n",
    )
    .expect("write");
    symlink("/etc/passwd.real", &passwd).expect("symlink");
    assert_eq!(user(&f.ok()).0, 5);
}

#[test]
fn a_fifo_passwd_is_refused_without_blocking() {
    let mut f = Fixture::new();
    let passwd = f.rootfs().join("etc/passwd");
    std::fs::remove_file(&passwd).expect("rm");
    let c = std::ffi::CString::new(passwd.to_string_lossy().as_bytes()).expect("cstring");
    // SAFETY: c is a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    set_image_user(&mut f, "app");
    assert!(
        matches!(f.spec(), Err(SpecError::InvalidArgument(m)) if m.contains("not a regular file"))
    );
}

fn has(set: &Option<oci_spec::runtime::Capabilities>, c: Capability) -> bool {
    set.as_ref().is_some_and(|s| s.contains(&c))
}

#[test]
fn default_capabilities_and_add_drop() {
    let mut f = Fixture::new();
    let c = caps_of(&f.ok());
    assert_eq!(
        c.bounding().as_ref().map(|s| s.len()),
        Some(caps::DEFAULT.len())
    );
    assert!(has(c.effective(), Capability::NetBindService));
    assert!(!has(c.effective(), Capability::SysAdmin));
    assert!(c.inheritable().as_ref().is_none_or(|s| s.is_empty()));
    assert!(c.ambient().as_ref().is_none_or(|s| s.is_empty()));
    f.sec().capabilities = Capabilities {
        add: v(&["CAP_SYS_ADMIN"]),
        drop: v(&["CAP_KILL", "CAP_CHOWN"]),
        add_ambient: vec![],
    };
    let c = caps_of(&f.ok());
    assert!(has(c.permitted(), Capability::SysAdmin));
    assert!(!has(c.bounding(), Capability::Kill));
    assert!(!has(c.effective(), Capability::Chown));
    f.sec().capabilities = Capabilities {
        add: v(&["ALL"]),
        ..Capabilities::default()
    };
    let c = caps_of(&f.ok());
    assert_eq!(
        c.bounding().as_ref().map(|s| s.len()),
        Some(caps::ALL.len())
    );
    f.sec().capabilities = Capabilities {
        add: v(&["CAP_NET_RAW"]),
        drop: v(&["ALL"]),
        ..Capabilities::default()
    };
    let c = caps_of(&f.ok());
    assert_eq!(c.effective().as_ref().map(|s| s.len()), Some(1));
    assert!(has(c.effective(), Capability::NetRaw));
}

#[test]
fn privileged_containers_get_everything_and_no_confinement() {
    let mut f = Fixture::new();
    f.sec().privileged = true;
    f.sec().seccomp = Some(SecurityProfile::RuntimeDefault);
    f.sec().capabilities.drop = v(&["ALL"]);
    assert!(matches!(f.spec(), Err(SpecError::InvalidArgument(m)) if m.contains("privileged")));
    f.pod.linux.security.privileged = true;
    let spec = f.ok();
    let c = caps_of(&spec);
    assert_eq!(
        c.effective().as_ref().map(|s| s.len()),
        Some(caps::ALL.len())
    );
    let l = linux(&spec);
    assert!(l.seccomp().is_none());
    assert!(l.masked_paths().as_ref().is_none_or(|p| p.is_empty()));
    assert!(l.readonly_paths().as_ref().is_none_or(|p| p.is_empty()));
    assert!(process(&spec).apparmor_profile().is_none());
    let sys = mount_at(&spec, "/sys").expect("/sys");
    assert!(options(sys).contains(&"rw".to_string()));
    let rules = l
        .resources()
        .as_ref()
        .and_then(|r| r.devices().clone())
        .expect("rules");
    assert_eq!(rules.len(), 1);
    assert!(rules[0].allow() && rules[0].typ().is_none());
    let devs = l.devices().clone().unwrap_or_default();
    let null = devs
        .iter()
        .find(|d| d.path() == Path::new("/dev/null"))
        .expect("host /dev/null is passed through");
    assert_eq!(
        (null.typ(), null.major(), null.minor()),
        (LinuxDeviceType::C, 1, 3)
    );
    assert!(!devs.iter().any(|d| d.path().starts_with("/dev/pts")));
}

#[test]
fn pid_namespace_modes() {
    let mut f = Fixture::new();
    let pid = |f: &Fixture| ns_path(&f.ok(), LinuxNamespaceType::Pid);
    assert_eq!(pid(&f), Some(Some(PathBuf::from("/proc/4242/ns/pid"))));
    f.sec().namespaces.pid = NamespaceMode::Container;
    assert_eq!(pid(&f), Some(None));
    f.sec().namespaces.pid = NamespaceMode::Node;
    assert_eq!(pid(&f), None);
    f.sec().namespaces = NamespaceOptions {
        pid: NamespaceMode::Target,
        target_id: Some("t".into()),
        ..NamespaceOptions::default()
    };
    assert!(matches!(f.spec(), Err(SpecError::InvalidArgument(m)) if m.contains("\"t\"")));
    f.target_pid = Some(77);
    assert_eq!(pid(&f), Some(Some(PathBuf::from("/proc/77/ns/pid"))));
}

#[test]
fn network_ipc_and_uts_follow_the_pod() {
    let mut f = Fixture::new();
    let spec = f.ok();
    assert_eq!(
        ns_path(&spec, LinuxNamespaceType::Network),
        Some(Some(PathBuf::from("/proc/4242/ns/net")))
    );
    assert_eq!(
        ns_path(&spec, LinuxNamespaceType::Uts),
        Some(Some(PathBuf::from("/proc/4242/ns/uts")))
    );
    assert_eq!(
        ns_path(&spec, LinuxNamespaceType::Ipc),
        Some(Some(PathBuf::from("/proc/4242/ns/ipc")))
    );
    assert_eq!(ns_path(&spec, LinuxNamespaceType::Mount), Some(None));
    assert_eq!(ns_path(&spec, LinuxNamespaceType::Cgroup), None);
    assert!(spec.hostname().is_none());
    let shm = mount_at(&spec, "/dev/shm").expect("shm");
    assert_eq!(
        shm.source().as_deref(),
        Some(f.dir.path().join("shm").as_path())
    );
    f.pod.linux.security.namespaces.network = NamespaceMode::Node;
    f.pod.linux.security.namespaces.ipc = NamespaceMode::Node;
    f.host.cgroup_v2 = true;
    let spec = f.ok();
    assert_eq!(ns_path(&spec, LinuxNamespaceType::Network), None);
    assert_eq!(ns_path(&spec, LinuxNamespaceType::Uts), None);
    assert_eq!(ns_path(&spec, LinuxNamespaceType::Ipc), None);
    assert_eq!(ns_path(&spec, LinuxNamespaceType::Cgroup), Some(None));
    let shm = mount_at(&spec, "/dev/shm").expect("shm");
    assert_eq!(shm.source().as_deref(), Some(Path::new("/dev/shm")));
}

#[test]
fn default_and_pod_mounts() {
    let mut f = Fixture::new();
    let spec = f.ok();
    for (dest, typ) in [
        ("/proc", "proc"),
        ("/dev", "tmpfs"),
        ("/dev/pts", "devpts"),
        ("/dev/mqueue", "mqueue"),
        ("/sys", "sysfs"),
        ("/sys/fs/cgroup", "cgroup"),
        ("/etc/hosts", "bind"),
        ("/etc/hostname", "bind"),
        ("/etc/resolv.conf", "bind"),
        ("/dev/shm", "bind"),
    ] {
        let m = mount_at(&spec, dest).unwrap_or_else(|| panic!("{dest} missing"));
        assert_eq!(m.typ().as_deref(), Some(typ), "{dest}");
    }
    assert!(mount_at(&spec, "/run").is_none());
    assert!(options(mount_at(&spec, "/sys").expect("sys")).contains(&"ro".to_string()));
    let hosts = mount_at(&spec, "/etc/hosts").expect("hosts");
    assert_eq!(hosts.source().as_deref(), Some(f.paths.hosts.as_path()));
    assert_eq!(options(hosts), v(&["rbind", "rprivate", "rw"]));
    // A readonly rootfs makes the pod files read-only, but not /dev/shm.
    f.sec().readonly_rootfs = true;
    let spec = f.ok();
    assert_eq!(spec.root().as_ref().and_then(|r| r.readonly()), Some(true));
    assert!(options(mount_at(&spec, "/etc/resolv.conf").expect("resolv")).contains(&"ro".into()));
    assert!(options(mount_at(&spec, "/dev/shm").expect("shm")).contains(&"rw".into()));
    // The container's own /etc/hosts wins.
    let src = f.dir.path().join("my-hosts");
    std::fs::write(&src, "").expect("write");
    f.container.mounts = vec![CriMount {
        container_path: "/etc/hosts".into(),
        host_path: src.to_string_lossy().into_owned(),
        readonly: true,
        ..CriMount::default()
    }];
    let spec = f.ok();
    let hosts: Vec<_> = spec
        .mounts()
        .iter()
        .flatten()
        .filter(|m| m.destination() == Path::new("/etc/hosts"))
        .collect();
    assert_eq!(hosts.len(), 1);
    assert_eq!(hosts[0].source().as_deref(), Some(src.as_path()));
}

#[test]
fn volume_mounts_propagation_and_order() {
    let mut f = Fixture::new();
    let vol = |dest: &str, host: &Path, propagation, readonly| CriMount {
        container_path: dest.into(),
        host_path: host.to_string_lossy().into_owned(),
        readonly,
        propagation,
        ..CriMount::default()
    };
    let a = f.dir.path().join("a");
    let b = f.dir.path().join("does/not/exist/yet");
    f.container.mounts = vec![
        vol("/data/sub", &a, Propagation::Private, false),
        vol("/data", &a, Propagation::HostToContainer, true),
        vol("/shared", &b, Propagation::Bidirectional, false),
    ];
    std::fs::create_dir(&a).expect("mkdir");
    let spec = f.ok();
    assert!(b.is_dir(), "a missing volume source is created");
    assert_eq!(
        options(mount_at(&spec, "/data").expect("data")),
        v(&["rbind", "rslave", "ro"])
    );
    assert_eq!(
        options(mount_at(&spec, "/data/sub").expect("sub")),
        v(&["rbind", "rprivate", "rw"])
    );
    assert_eq!(
        options(mount_at(&spec, "/shared").expect("shared")),
        v(&["rbind", "rshared", "rw"])
    );
    let dests: Vec<_> = spec
        .mounts()
        .iter()
        .flatten()
        .map(|m| m.destination().to_string_lossy().into_owned())
        .collect();
    let pos = |d: &str| dests.iter().position(|x| x == d).expect("present");
    assert!(pos("/data") < pos("/data/sub"), "{dests:?}");
    assert_eq!(
        linux(&spec).rootfs_propagation().as_deref(),
        Some("rshared")
    );
    f.container.mounts.pop();
    assert_eq!(
        linux(&f.ok()).rootfs_propagation().as_deref(),
        Some("rslave")
    );
    f.container.mounts.clear();
    assert_eq!(linux(&f.ok()).rootfs_propagation().as_deref(), None);
}

#[test]
fn a_volume_over_a_default_mount_replaces_it() {
    let mut f = Fixture::new();
    f.container.mounts = vec![CriMount {
        container_path: "/dev".into(),
        host_path: "/dev".into(),
        ..CriMount::default()
    }];
    let spec = f.ok();
    let devs: Vec<_> = spec
        .mounts()
        .iter()
        .flatten()
        .filter(|m| m.destination().starts_with("/dev"))
        .map(|m| m.destination().to_string_lossy().into_owned())
        .collect();
    // Only the volume and the pod's /dev/shm remain under /dev.
    assert_eq!(devs, v(&["/dev", "/dev/shm"]));
}

#[test]
fn config_devices() {
    let mut f = Fixture::new();
    f.container.devices = vec![Device {
        container_path: "/dev/mynull".into(),
        host_path: "/dev/null".into(),
        permissions: "rw".into(),
    }];
    let spec = f.ok();
    let l = linux(&spec);
    let d = &l.devices().clone().expect("devices")[0];
    assert_eq!(d.path(), Path::new("/dev/mynull"));
    assert_eq!((d.typ(), d.major(), d.minor()), (LinuxDeviceType::C, 1, 3));
    let rules = l
        .resources()
        .as_ref()
        .and_then(|r| r.devices().clone())
        .expect("rules");
    assert!(!rules[0].allow(), "deny all first");
    assert!(rules[1].allow());
    assert_eq!((rules[1].major(), rules[1].minor()), (Some(1), Some(3)));
    assert_eq!(rules[1].access().as_deref(), Some("rw"));
    f.container.devices[0].host_path = "/dev/crius-no-such-device".into();
    match f.spec() {
        Err(SpecError::NotFound(m)) => {
            assert!(
                m.contains("config.devices[0].host_path /dev/crius-no-such-device"),
                "{m}"
            )
        }
        other => panic!("{other:?}"),
    }
    f.container.devices[0].host_path = f
        .paths
        .hosts
        .parent()
        .expect("dir")
        .join("x")
        .to_string_lossy()
        .into();
    std::fs::write(&f.container.devices[0].host_path, "").expect("write");
    assert!(matches!(f.spec(), Err(SpecError::InvalidArgument(m)) if m.contains("not a device")));
}

#[test]
fn masked_and_readonly_paths() {
    let mut f = Fixture::new();
    let spec = f.ok();
    let l = linux(&spec);
    assert_eq!(
        l.masked_paths().clone(),
        Some(strings(mounts::DEFAULT_MASKED_PATHS))
    );
    assert_eq!(
        l.readonly_paths().clone(),
        Some(strings(mounts::DEFAULT_READONLY_PATHS))
    );
    f.sec().masked_paths = v(&["/proc/x"]);
    f.sec().readonly_paths = v(&["/proc/y"]);
    let spec = f.ok();
    assert_eq!(linux(&spec).masked_paths().clone(), Some(v(&["/proc/x"])));
    assert_eq!(linux(&spec).readonly_paths().clone(), Some(v(&["/proc/y"])));
}

#[test]
fn resources_and_oom_clamp() {
    let mut f = Fixture::new();
    f.container.linux.resources = Some(Resources {
        cpu_shares: Some(512),
        cpu_quota: Some(50_000),
        cpu_period: Some(100_000),
        memory_limit_in_bytes: Some(64 << 20),
        oom_score_adj: -500,
        cpuset_cpus: "0-1".into(),
        cpuset_mems: "0".into(),
        hugepage_limits: vec![crate::container::config::HugepageLimit {
            page_size: "2MB".into(),
            limit: 4 << 20,
        }],
        ..Resources::default()
    });
    f.host.min_oom_score_adj = -100;
    let spec = f.ok();
    assert_eq!(process(&spec).oom_score_adj(), Some(-100));
    let r = linux(&spec).resources().clone().expect("resources");
    let cpu = r.cpu().clone().expect("cpu");
    assert_eq!(cpu.shares(), Some(512));
    assert_eq!(cpu.quota(), Some(50_000));
    assert_eq!(cpu.period(), Some(100_000));
    assert_eq!(cpu.cpus().as_deref(), Some("0-1"));
    assert_eq!(cpu.mems().as_deref(), Some("0"));
    let mem = (*r.memory()).expect("memory");
    assert_eq!(mem.limit(), Some(64 << 20));
    assert_eq!(mem.swap(), None, "no swap accounting: no swap limit");
    let huge = r.hugepage_limits().clone().expect("hugepages");
    assert_eq!(
        (huge[0].page_size().as_str(), huge[0].limit()),
        ("2MB", 4 << 20)
    );
    assert_eq!(
        linux(&spec).cgroups_path().as_deref(),
        Some(Path::new("/crius/c1"))
    );
    // Above the floor, kept as asked.
    f.host.min_oom_score_adj = -999;
    assert_eq!(process(&f.ok()).oom_score_adj(), Some(-500));
    // Swap: the memory limit (no swap) unless given.
    f.host.swap_accounting = true;
    let mem = |f: &Fixture| {
        linux(&f.ok())
            .resources()
            .clone()
            .and_then(|r| *r.memory())
            .expect("memory")
    };
    assert_eq!(mem(&f).swap(), Some(64 << 20));
    if let Some(r) = f.container.linux.resources.as_mut() {
        r.memory_swap_limit_in_bytes = Some(-1);
    }
    assert_eq!(mem(&f).swap(), Some(-1));
}

#[test]
fn unified_needs_cgroup_v2() {
    let mut f = Fixture::new();
    f.container.linux.resources = Some(Resources {
        unified: [("memory.high".to_string(), "1000000".to_string())].into(),
        ..Resources::default()
    });
    assert!(
        matches!(f.spec(), Err(SpecError::InvalidArgument(m)) if m.contains("config.linux.resources.unified"))
    );
    f.host.cgroup_v2 = true;
    let spec = f.ok();
    let unified = linux(&spec)
        .resources()
        .clone()
        .and_then(|r| r.unified().clone())
        .expect("unified");
    assert_eq!(unified["memory.high"], "1000000");
}

#[test]
fn seccomp_kinds() {
    let mut f = Fixture::new();
    let seccomp = |f: &Fixture| linux(&f.ok()).seccomp().clone();
    assert!(
        seccomp(&f).is_none(),
        "unset is unconfined, as in containerd"
    );
    f.sec().seccomp = Some(SecurityProfile::Unconfined);
    assert!(seccomp(&f).is_none());
    f.sec().seccomp = Some(SecurityProfile::RuntimeDefault);
    let s = seccomp(&f).expect("default profile");
    assert_eq!(s.default_action(), LinuxSeccompAction::ScmpActErrno);
    assert!(seccomp::allows_unconditionally(&s, "read"));
    assert!(!seccomp::allows_unconditionally(&s, "mount"));
    // The capability conditions see the container's capabilities.
    f.sec().capabilities.add = v(&["CAP_SYS_ADMIN"]);
    assert!(seccomp::allows_unconditionally(
        &seccomp(&f).expect("profile"),
        "mount"
    ));
    f.host.seccomp_enabled = false;
    assert!(seccomp(&f).is_none());
    f.host.seccomp_enabled = true;
    let path = f.dir.path().join("profile.json");
    std::fs::write(
        &path,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86_64"],
            "syscalls":[{"names":["chmod"],"action":"SCMP_ACT_ERRNO","errnoRet":13}]}"#,
    )
    .expect("write");
    f.sec().seccomp = Some(SecurityProfile::Localhost(path.to_string_lossy().into()));
    let s = seccomp(&f).expect("localhost profile");
    assert_eq!(s.default_action(), LinuxSeccompAction::ScmpActAllow);
    let rule = &s.syscalls().clone().expect("rules")[0];
    assert_eq!(
        (rule.names()[0].as_str(), rule.errno_ret()),
        ("chmod", Some(13))
    );
    let missing = f.dir.path().join("missing.json");
    f.sec().seccomp = Some(SecurityProfile::Localhost(missing.to_string_lossy().into()));
    match f.spec() {
        Err(SpecError::InvalidArgument(m)) => {
            assert!(m.contains(&*missing.to_string_lossy()), "{m}");
            assert!(m.contains("config.linux.security_context.seccomp"), "{m}");
        }
        other => panic!("{other:?}"),
    }
    std::fs::write(&missing, "not json").expect("write");
    assert!(
        matches!(f.spec(), Err(SpecError::InvalidArgument(m)) if m.contains(&*missing.to_string_lossy()))
    );
}

#[test]
fn apparmor_profiles() {
    let mut f = Fixture::new();
    f.host.apparmor_enabled = true;
    f.sec().apparmor = Some(SecurityProfile::Localhost("k8s-deny".into()));
    assert_eq!(
        process(&f.ok()).apparmor_profile().as_deref(),
        Some("k8s-deny")
    );
    f.sec().apparmor = Some(SecurityProfile::RuntimeDefault);
    assert_eq!(process(&f.ok()).apparmor_profile().as_deref(), None);
    f.host.apparmor_enabled = false;
    f.sec().apparmor = Some(SecurityProfile::Localhost("k8s-deny".into()));
    assert!(matches!(f.spec(), Err(SpecError::InvalidArgument(m)) if m.contains("apparmor")));
}

#[test]
fn no_new_privs_and_rlimits() {
    let mut f = Fixture::new();
    let spec = f.ok();
    assert_eq!(process(&spec).no_new_privileges(), Some(false));
    assert!(
        process(&spec).rlimits().is_none(),
        "rlimits are inherited, as in containerd"
    );
    f.sec().no_new_privs = true;
    assert_eq!(process(&f.ok()).no_new_privileges(), Some(true));
}

#[test]
fn container_annotations() {
    let mut f = Fixture::new();
    f.container.annotations = [
        ("mine".to_string(), "1".to_string()),
        (annotations::SANDBOX_ID.to_string(), "spoofed".to_string()),
    ]
    .into();
    let spec = f.ok();
    let a = spec.annotations().clone().expect("annotations");
    assert_eq!(a[annotations::CONTAINER_TYPE], "container");
    assert_eq!(a[annotations::SANDBOX_ID], "s1");
    assert_eq!(a[annotations::SANDBOX_NAME], "web");
    assert_eq!(a[annotations::SANDBOX_NAMESPACE], "prod");
    assert_eq!(a[annotations::SANDBOX_UID], "uid-1");
    assert_eq!(a[annotations::CONTAINER_NAME], "app");
    assert_eq!(
        a[annotations::IMAGE_NAME],
        "docker.io/library/busybox:latest"
    );
    assert_eq!(a["mine"], "1");
}

#[test]
fn sandbox_spec_defaults() {
    let mut f = Fixture::new();
    f.pod.annotations = [("pod-note".to_string(), "x".to_string())].into();
    f.pod.linux.sysctls = [("net.ipv4.ip_forward".to_string(), "1".to_string())].into();
    f.pod.linux.security.seccomp = Some(SecurityProfile::RuntimeDefault);
    f.pod.linux.security.readonly_rootfs = true;
    f.host.min_oom_score_adj = -999;
    let netns = PathBuf::from("/run/crius/netns/s1");
    let spec = f.sandbox(Some(&netns)).expect("sandbox spec");
    let p = process(&spec);
    assert_eq!(p.args().clone(), Some(v(&["/entry", "cmd-arg"])));
    assert_eq!(p.oom_score_adj(), Some(SANDBOX_OOM_SCORE_ADJ));
    assert_eq!(p.no_new_privileges(), Some(true));
    assert_eq!(p.cwd(), Path::new("/srv"));
    assert_eq!(
        caps_of(&spec).bounding().as_ref().map(|s| s.len()),
        Some(caps::DEFAULT.len())
    );
    assert_eq!(spec.hostname().as_deref(), Some("web-0"));
    assert_eq!(spec.root().as_ref().and_then(|r| r.readonly()), Some(true));
    assert_eq!(
        ns_path(&spec, LinuxNamespaceType::Network),
        Some(Some(netns.clone()))
    );
    assert_eq!(ns_path(&spec, LinuxNamespaceType::Uts), Some(None));
    assert_eq!(ns_path(&spec, LinuxNamespaceType::Ipc), Some(None));
    assert_eq!(ns_path(&spec, LinuxNamespaceType::Pid), Some(None));
    let shm = mount_at(&spec, "/dev/shm").expect("shm");
    assert_eq!(
        shm.source().as_deref(),
        Some(f.dir.path().join("shm").as_path())
    );
    assert!(options(shm).contains(&"ro".into()));
    let l = linux(&spec);
    assert_eq!(
        l.sysctl().clone().expect("sysctls")["net.ipv4.ip_forward"],
        "1"
    );
    assert_eq!(l.cgroups_path().as_deref(), Some(Path::new("/crius/s1")));
    assert!(l.seccomp().is_some());
    let cpu = l
        .resources()
        .clone()
        .and_then(|r| r.cpu().clone())
        .expect("cpu");
    assert_eq!(cpu.shares(), Some(SANDBOX_CPU_SHARES));
    let a = spec.annotations().clone().expect("annotations");
    assert_eq!(a[annotations::CONTAINER_TYPE], "sandbox");
    assert_eq!(a[annotations::SANDBOX_ID], "s1");
    assert_eq!(a[annotations::SANDBOX_NAME], "web");
    assert_eq!(a[annotations::SANDBOX_NAMESPACE], "prod");
    assert_eq!(a[annotations::SANDBOX_UID], "uid-1");
    assert_eq!(a[annotations::IMAGE_NAME], "crius.local/pause:builtin");
    assert_eq!(a["pod-note"], "x");
    // The floor wins over -998.
    f.host.min_oom_score_adj = 0;
    let spec = f.sandbox(Some(&netns)).expect("sandbox spec");
    assert_eq!(process(&spec).oom_score_adj(), Some(0));
}

#[test]
fn sandbox_host_namespaces_and_user() {
    let mut f = Fixture::new();
    f.pod.linux.security.namespaces = NamespaceOptions {
        network: NamespaceMode::Node,
        pid: NamespaceMode::Node,
        ipc: NamespaceMode::Node,
        target_id: None,
    };
    f.paths.shm = None;
    set_image_user(&mut f, "65535:65535");
    let spec = f.sandbox(None).expect("sandbox spec");
    assert_eq!(namespaces(&spec), vec![(LinuxNamespaceType::Mount, None)]);
    assert!(spec.hostname().is_none());
    let shm = mount_at(&spec, "/dev/shm").expect("shm");
    assert_eq!(shm.source().as_deref(), Some(Path::new("/dev/shm")));
    assert_eq!(user(&spec), (65535, 65535, vec![65535]));
    f.pod.linux.security.run_as_user = Some(1);
    f.pod.linux.security.run_as_group = Some(2);
    f.pod.linux.security.supplemental_groups = vec![3];
    let spec = f.sandbox(None).expect("sandbox spec");
    assert_eq!(user(&spec), (1, 2, vec![2, 3]));
    f.image.config = None;
    assert!(matches!(
        f.sandbox(None),
        Err(SpecError::InvalidArgument(_))
    ));
}

#[test]
fn cgroups_paths() {
    assert_eq!(cgroups_path("", "abc", false), "/crius/abc");
    assert_eq!(
        cgroups_path("/kubepods/pod1/", "abc", false),
        "/kubepods/pod1/abc"
    );
    assert_eq!(cgroups_path("kubepods", "abc", false), "/kubepods/abc");
    assert_eq!(cgroups_path("", "abc", true), "system.slice:crius:abc");
    assert_eq!(
        cgroups_path("kubepods-besteffort-pod1.slice", "abc", true),
        "kubepods-besteffort-pod1.slice:crius:abc"
    );
    assert_eq!(
        cgroups_path("/kubepods.slice/kubepods-pod1.slice", "abc", true),
        "kubepods-pod1.slice:crius:abc"
    );
}

#[test]
fn write_spec_and_read_back() {
    let f = Fixture::new();
    let spec = f.ok();
    write_spec(&spec, f.dir.path()).expect("write");
    let back: Spec =
        serde_json::from_slice(&std::fs::read(f.dir.path().join("config.json")).expect("read"))
            .expect("parse");
    assert_eq!(back, spec);
    assert!(!f.dir.path().join(".config.json.tmp").exists());
    let raw: serde_json::Value =
        serde_json::from_slice(&std::fs::read(f.dir.path().join("config.json")).expect("read"))
            .expect("json");
    assert_eq!(raw["root"]["path"], "rootfs");
    assert!(raw.get("hostname").is_none());
    assert!(write_spec(&spec, &f.dir.path().join("missing-dir")).is_err());
}

#[test]
fn exec_process_keeps_the_container_identity() {
    let mut f = Fixture::new();
    set_image_user(&mut f, "app");
    f.sec().no_new_privs = true;
    let spec = f.ok();
    let p = exec_process(&spec, v(&["ls", "-l"]), true).expect("exec");
    assert_eq!(p["args"], serde_json::json!(["ls", "-l"]));
    assert_eq!(p["terminal"], true);
    assert_eq!(p["user"]["uid"], 1000);
    assert_eq!(p["user"]["gid"], 1001);
    assert_eq!(p["cwd"], "/srv");
    assert_eq!(p["noNewPrivileges"], true);
    let env: Vec<String> = serde_json::from_value(p["env"].clone()).expect("env");
    assert!(env.contains(&"FOO=image".to_string()));
    assert!(env.contains(&"TERM=xterm".to_string()));
    assert!(p["capabilities"]["bounding"]
        .as_array()
        .is_some_and(|a| !a.is_empty()));
    let p = exec_process(&spec, v(&["true"]), false).expect("exec");
    assert_eq!(p["terminal"], false);
    assert!(matches!(
        exec_process(&spec, vec![], false),
        Err(SpecError::InvalidArgument(_))
    ));
}

/// Runs a real container with runc from the spec we build: the default seccomp profile
/// lets a shell run and refuses `unshare(CLONE_NEWUSER)`, which the same container without
/// seccomp may do (creating a user namespace needs no capability).
#[test]
fn runc_runs_our_spec_with_the_default_seccomp_profile() {
    let runc = ["/usr/sbin/runc", "/usr/bin/runc"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists());
    let busybox = Path::new("/bin/busybox");
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let (Some(runc), true, true) = (runc, busybox.exists(), root) else {
        eprintln!("skipped: needs root, runc and /bin/busybox");
        return;
    };
    let mut f = Fixture::new();
    let rootfs = f.rootfs();
    std::fs::create_dir_all(rootfs.join("bin")).expect("mkdir");
    std::fs::copy(busybox, rootfs.join("bin/busybox")).expect("copy busybox");
    for applet in ["sh", "unshare", "true"] {
        symlink("busybox", rootfs.join("bin").join(applet)).expect("symlink");
    }
    for p in [&f.paths.hostname, &f.paths.hosts, &f.paths.resolv_conf] {
        std::fs::write(p, "").expect("pod file");
    }
    std::fs::create_dir_all(f.paths.shm.as_ref().expect("shm")).expect("shm dir");
    // A container of its own: new namespaces instead of a pause to join.
    f.pod.linux.security.namespaces.network = NamespaceMode::Node;
    f.pod.linux.security.namespaces.ipc = NamespaceMode::Node;
    f.sec().namespaces = NamespaceOptions {
        pid: NamespaceMode::Container,
        ipc: NamespaceMode::Node,
        ..NamespaceOptions::default()
    };
    f.image.config = Some(ProcessConfig {
        env: Some(vec!["PATH=/bin".into()]),
        ..ProcessConfig::default()
    });
    let script =
        "echo ok; if unshare -U true; then echo unshare-allowed; else echo unshare-refused; fi";
    f.container.command = v(&["/bin/sh", "-c", script]);
    let run = |f: &Fixture, name: &str| -> String {
        let mut spec = f.ok();
        linux_mut(&mut spec).set_cgroups_path(None);
        write_spec(&spec, f.dir.path()).expect("write spec");
        let id = format!("crius-spec-test-{}-{name}", std::process::id());
        let state = f.dir.path().join("runc-state");
        let out = std::process::Command::new(runc)
            .arg("--root")
            .arg(&state)
            .args(["run", "--bundle"])
            .arg(f.dir.path())
            .arg(&id)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("runc runs");
        let _ = std::process::Command::new(runc)
            .arg("--root")
            .arg(&state)
            .args(["delete", "--force", &id])
            .output();
        assert!(
            out.status.success(),
            "runc failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let unconfined = run(&f, "unconfined");
    assert_eq!(unconfined, "ok\nunshare-allowed\n");
    f.sec().seccomp = Some(SecurityProfile::RuntimeDefault);
    let confined = run(&f, "default");
    assert_eq!(confined, "ok\nunshare-refused\n");
}

fn linux_mut(spec: &mut Spec) -> &mut oci_spec::runtime::Linux {
    spec.linux_mut().as_mut().expect("linux")
}

#[test]
fn a_refused_spec_creates_no_volume_source() {
    let mut f = Fixture::new();
    let src = f.dir.path().join("vol");
    f.container.mounts = vec![CriMount {
        container_path: "/vol".into(),
        host_path: src.to_string_lossy().into_owned(),
        ..CriMount::default()
    }];
    f.container.devices = vec![Device {
        container_path: "/dev/x".into(),
        host_path: "/dev/crius-no-such-device".into(),
        permissions: "rwm".into(),
    }];
    assert!(matches!(f.spec(), Err(SpecError::NotFound(_))));
    assert!(!src.exists());
    f.container.devices.clear();
    f.ok();
    assert!(src.is_dir());
}
