//! The files a sandbox provides to its containers: hostname, hosts, resolv.conf, /dev/shm.
//!
//! They live in the sandbox's directory (`<root>/sandboxes/<id>/`) and every container of
//! the pod bind-mounts them, so that all of them agree (as with containerd 1.6's CRI
//! plugin):
//! - `hostname`: the pod's hostname, or the host's when the pod gives none, plus `\n`;
//! - `hosts`: for host-network pods a copy of the host's `/etc/hosts`, else a default file
//!   with the localhost entries (the kubelet mounts its own over it in Kubernetes);
//! - `resolv.conf`: rendered from the pod's DNS config when it sets anything, else a copy
//!   of the host's `/etc/resolv.conf`;
//! - `shm/`: a tmpfs for `/dev/shm` (`nosuid,nodev,noexec,mode=1777,size=…`), absent for
//!   host-IPC pods, which use the host's `/dev/shm`.

use std::ffi::CString;
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::mount::{MountFlags, UnmountFlags};

/// The size of a pod's `/dev/shm` when none is given, as containerd's.
pub const DEFAULT_SHM_SIZE: u64 = 64 << 20;

const HOST_HOSTS: &str = "/etc/hosts";
const HOST_RESOLV_CONF: &str = "/etc/resolv.conf";
const HOST_HOSTNAME: &str = "/proc/sys/kernel/hostname";

/// `/etc/hosts` of a pod with its own network namespace.
pub const DEFAULT_HOSTS: &str = "127.0.0.1\tlocalhost\n\
::1\tlocalhost ip6-localhost ip6-loopback\n\
fe00::0\tip6-localnet\n\
ff00::0\tip6-mcastprefix\n\
ff02::1\tip6-allnodes\n\
ff02::2\tip6-allrouters\n";

/// A pod's DNS settings (the CRI `DNSConfig`, mapped by the caller).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsConfig {
    /// Name server addresses, one `nameserver` line each.
    pub servers: Vec<String>,
    /// Search domains, on one `search` line.
    pub searches: Vec<String>,
    /// Resolver options (`ndots:5`), on one `options` line.
    pub options: Vec<String>,
}

/// What a sandbox's files are made from.
#[derive(Debug, Clone, Copy)]
pub struct SandboxFilesSpec<'a> {
    /// The pod's hostname; empty means the host's.
    pub hostname: &'a str,
    /// The pod's DNS config, if any.
    pub dns: Option<&'a DnsConfig>,
    /// The pod uses the host's network namespace.
    pub host_network: bool,
    /// The pod uses the host's IPC namespace (and so the host's `/dev/shm`).
    pub host_ipc: bool,
    /// Size of the pod's `/dev/shm` in bytes; 0 means [`DEFAULT_SHM_SIZE`].
    pub shm_size: u64,
}

/// The paths of a sandbox's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxFiles {
    /// The sandbox's directory.
    pub dir: PathBuf,
    /// Mounted at `/etc/hostname`.
    pub hostname: PathBuf,
    /// Mounted at `/etc/hosts`.
    pub hosts: PathBuf,
    /// Mounted at `/etc/resolv.conf`.
    pub resolv_conf: PathBuf,
    /// The tmpfs mounted at `/dev/shm`; `None` for host-IPC pods.
    pub shm: Option<PathBuf>,
}

/// Why a sandbox's files could not be made or removed.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// A pod config value cannot go into the files; `field` names it as CRI does.
    #[error("invalid {field}: {reason}")]
    InvalidArgument { field: &'static str, reason: String },
    /// Reading, writing or creating a file or directory failed.
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// Mounting the shm tmpfs failed.
    #[error("mounting the shm tmpfs at {path}: {source}")]
    Mount { path: PathBuf, source: io::Error },
    /// Unmounting the shm tmpfs failed.
    #[error("unmounting {path}: {source}")]
    Unmount { path: PathBuf, source: io::Error },
    /// The blocking task died.
    #[error("sandbox files task: {0}")]
    Task(String),
}

impl SandboxFilesSpec<'_> {
    /// Checks the pod-supplied values without touching the disk, so bad input is refused
    /// before anything of the sandbox is made.
    pub fn check(&self) -> Result<(), FilesError> {
        Plan::new(self).map(drop)
    }
}

impl SandboxFiles {
    /// Writes the files into `dir` (created if missing) and mounts the shm tmpfs.
    ///
    /// Invalid input is refused before anything is made; a failure later removes `dir`
    /// and everything in it.
    pub async fn create(
        dir: &Path,
        spec: &SandboxFilesSpec<'_>,
    ) -> Result<SandboxFiles, FilesError> {
        let plan = Plan::new(spec)?;
        let files = SandboxFiles::with_shm(dir, plan.shm_size.is_some());
        let f = files.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::task::spawn_blocking(move || {
            let made = Contents::read(&plan, &HostPaths::default())
                .and_then(|c| f.write_all(&c, plan.shm_size));
            if made.is_err() {
                let _ = remove_blocking(&f.dir);
            }
            // The caller went away (its RPC was cancelled): undo, nobody will record it.
            if let Err(Ok(())) = tx.send(made) {
                let _ = remove_blocking(&f.dir);
            }
        });
        rx.await
            .map_err(|_| FilesError::Task("exited without an answer".into()))??;
        Ok(files)
    }

    /// The paths of the files in `dir` (for recovery); `shm` is set, as for a pod with
    /// its own IPC namespace.
    pub fn at(dir: &Path) -> SandboxFiles {
        SandboxFiles::with_shm(dir, true)
    }

    /// Unmounts the shm tmpfs and removes `dir`. Idempotent: a missing directory is fine.
    pub async fn remove(dir: &Path) -> Result<(), FilesError> {
        let dir = dir.to_path_buf();
        tokio::task::spawn_blocking(move || remove_blocking(&dir))
            .await
            .map_err(|e| FilesError::Task(e.to_string()))?
    }

    fn with_shm(dir: &Path, shm: bool) -> SandboxFiles {
        SandboxFiles {
            dir: dir.to_path_buf(),
            hostname: dir.join("hostname"),
            hosts: dir.join("hosts"),
            resolv_conf: dir.join("resolv.conf"),
            shm: shm.then(|| dir.join("shm")),
        }
    }

    fn write_all(&self, c: &Contents, shm_size: Option<u64>) -> Result<(), FilesError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&self.dir)
            .map_err(|source| FilesError::Io {
                what: "creating sandbox directory",
                path: self.dir.clone(),
                source,
            })?;
        write_file(&self.hostname, c.hostname.as_bytes())?;
        write_file(&self.hosts, &c.hosts)?;
        write_file(&self.resolv_conf, &c.resolv_conf)?;
        if let (Some(shm), Some(size)) = (&self.shm, shm_size) {
            mount_shm(shm, size)?;
        }
        Ok(())
    }
}

/// Where the host's own files are read from (tests point these elsewhere).
#[derive(Debug)]
struct HostPaths {
    hosts: PathBuf,
    resolv_conf: PathBuf,
    hostname: PathBuf,
}

impl Default for HostPaths {
    fn default() -> Self {
        HostPaths {
            hosts: HOST_HOSTS.into(),
            resolv_conf: HOST_RESOLV_CONF.into(),
            hostname: HOST_HOSTNAME.into(),
        }
    }
}

/// The bytes of the three files.
#[derive(Debug)]
struct Contents {
    hostname: String,
    hosts: Vec<u8>,
    resolv_conf: Vec<u8>,
}

/// A spec, validated and owned, for the blocking task.
#[derive(Debug)]
struct Plan {
    /// Empty: the host's.
    hostname: String,
    /// Rendered from the DNS config; `None`: the host's.
    resolv_conf: Option<String>,
    host_network: bool,
    /// `None` for host IPC (no tmpfs).
    shm_size: Option<u64>,
}

impl Plan {
    /// Checks every pod-supplied value; nothing is touched on disk.
    fn new(spec: &SandboxFilesSpec<'_>) -> Result<Plan, FilesError> {
        check_hostname(spec.hostname)?;
        let resolv_conf = match spec.dns {
            Some(dns) => render_resolv_conf(dns)?,
            None => None,
        };
        let size = if spec.shm_size == 0 {
            DEFAULT_SHM_SIZE
        } else {
            spec.shm_size
        };
        Ok(Plan {
            hostname: spec.hostname.to_string(),
            resolv_conf,
            host_network: spec.host_network,
            shm_size: (!spec.host_ipc).then_some(size),
        })
    }
}

impl Contents {
    /// The files' bytes, reading from the host what the plan leaves to it.
    fn read(plan: &Plan, host: &HostPaths) -> Result<Contents, FilesError> {
        let hostname = if plan.hostname.is_empty() {
            let read = read_host(&host.hostname, "reading the host's hostname")?;
            let name = String::from_utf8_lossy(&read).trim().to_string();
            check_hostname(&name)?;
            name
        } else {
            plan.hostname.clone()
        };
        let hosts = if plan.host_network {
            read_host_or_empty(&host.hosts, DEFAULT_HOSTS.as_bytes())?
        } else {
            DEFAULT_HOSTS.as_bytes().to_vec()
        };
        let resolv_conf = match &plan.resolv_conf {
            Some(text) => text.clone().into_bytes(),
            None => read_host_or_empty(&host.resolv_conf, b"")?,
        };
        Ok(Contents {
            hostname: render_hostname(&hostname),
            hosts,
            resolv_conf,
        })
    }

    #[cfg(test)]
    fn render(spec: &SandboxFilesSpec<'_>, host: &HostPaths) -> Result<Contents, FilesError> {
        Contents::read(&Plan::new(spec)?, host)
    }
}

/// The `hostname` file's content.
pub fn render_hostname(hostname: &str) -> String {
    format!("{hostname}\n")
}

/// The `resolv.conf` rendered from a DNS config (`search`, `nameserver`s, `options`), or
/// `None` when it sets nothing (the host's file is used then).
pub fn render_resolv_conf(dns: &DnsConfig) -> Result<Option<String>, FilesError> {
    check_entries("dns_config.servers", &dns.servers)?;
    check_entries("dns_config.searches", &dns.searches)?;
    check_entries("dns_config.options", &dns.options)?;
    if dns.servers.is_empty() && dns.searches.is_empty() && dns.options.is_empty() {
        return Ok(None);
    }
    let mut out = String::new();
    if !dns.searches.is_empty() {
        out.push_str("search ");
        out.push_str(&dns.searches.join(" "));
        out.push('\n');
    }
    for server in &dns.servers {
        out.push_str("nameserver ");
        out.push_str(server);
        out.push('\n');
    }
    if !dns.options.is_empty() {
        out.push_str("options ");
        out.push_str(&dns.options.join(" "));
        out.push('\n');
    }
    Ok(Some(out))
}

/// Each entry is one resolv.conf token: no whitespace (it would split it or, as a
/// newline, start a line of its own) and no control characters.
fn check_entries(field: &'static str, entries: &[String]) -> Result<(), FilesError> {
    for e in entries {
        if e.is_empty() {
            return Err(FilesError::InvalidArgument {
                field,
                reason: "empty entry".into(),
            });
        }
        if let Some(c) = e.chars().find(|c| c.is_whitespace() || c.is_control()) {
            return Err(FilesError::InvalidArgument {
                field,
                reason: format!("{e:?} contains {c:?}"),
            });
        }
    }
    Ok(())
}

fn check_hostname(name: &str) -> Result<(), FilesError> {
    if let Some(c) = name.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(FilesError::InvalidArgument {
            field: "hostname",
            reason: format!("{name:?} contains {c:?}"),
        });
    }
    Ok(())
}

fn read_host(path: &Path, what: &'static str) -> Result<Vec<u8>, FilesError> {
    std::fs::read(path).map_err(|source| FilesError::Io {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// The host's file, or `missing` when the host has none (minimal hosts lack
/// `/etc/resolv.conf`; that must not stop every pod).
fn read_host_or_empty(path: &Path, missing: &[u8]) -> Result<Vec<u8>, FilesError> {
    match std::fs::read(path) {
        Ok(b) => Ok(b),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(missing.to_vec()),
        Err(source) => Err(FilesError::Io {
            what: "reading host file",
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Writes a 0644 file whatever the daemon's umask: containers running as any user read
/// them.
fn write_file(path: &Path, data: &[u8]) -> Result<(), FilesError> {
    use std::io::Write;
    let io_err = |source| FilesError::Io {
        what: "writing",
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(io_err)?;
    f.write_all(data).map_err(io_err)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o644))
        .map_err(io_err)
}

fn mount_shm(shm: &Path, size: u64) -> Result<(), FilesError> {
    match std::fs::DirBuilder::new().mode(0o700).create(shm) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(source) => {
            return Err(FilesError::Io {
                what: "creating",
                path: shm.to_path_buf(),
                source,
            });
        }
    }
    let data = CString::new(format!("mode=1777,size={size}")).map_err(|e| FilesError::Mount {
        path: shm.to_path_buf(),
        source: io::Error::other(e),
    })?;
    rustix::mount::mount(
        "shm",
        shm,
        "tmpfs",
        MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
        data.as_c_str(),
    )
    .map_err(|e| FilesError::Mount {
        path: shm.to_path_buf(),
        source: e.into(),
    })
}

fn remove_blocking(dir: &Path) -> Result<(), FilesError> {
    let shm = dir.join("shm");
    // Detach every tmpfs stacked on shm; EINVAL is "not a mount point", ENOENT "no shm".
    // Removing the directory while a tmpfs is still mounted would empty a live /dev/shm,
    // so any other error stops here.
    for _ in 0..16 {
        match rustix::mount::unmount(&shm, UnmountFlags::DETACH | UnmountFlags::NOFOLLOW) {
            Ok(()) => continue,
            Err(
                rustix::io::Errno::INVAL | rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR,
            ) => {
                break;
            }
            Err(e) => {
                return Err(FilesError::Unmount {
                    path: shm,
                    source: e.into(),
                });
            }
        }
    }
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(FilesError::Io {
            what: "removing sandbox directory",
            path: dir.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn dns(servers: &[&str], searches: &[&str], options: &[&str]) -> DnsConfig {
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect();
        DnsConfig {
            servers: v(servers),
            searches: v(searches),
            options: v(options),
        }
    }

    fn spec<'a>(hostname: &'a str, dns: Option<&'a DnsConfig>) -> SandboxFilesSpec<'a> {
        SandboxFilesSpec {
            hostname,
            dns,
            host_network: false,
            host_ipc: false,
            shm_size: 0,
        }
    }

    /// A scratch directory under /var/tmp with fake host files, removed on drop.
    struct Scratch {
        root: PathBuf,
    }

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let root = PathBuf::from(format!(
                "/var/tmp/crius-files-test-{}-{name}",
                std::process::id()
            ));
            let s = Scratch { root };
            s.cleanup();
            std::fs::create_dir_all(&s.root).expect("scratch");
            s
        }

        fn host(&self) -> HostPaths {
            let h = self.root.join("host");
            std::fs::create_dir_all(&h).expect("host dir");
            std::fs::write(h.join("hosts"), "10.0.0.1 node\n").expect("hosts");
            std::fs::write(h.join("resolv.conf"), "nameserver 10.0.0.53\n").expect("resolv");
            std::fs::write(h.join("hostname"), "node-1\n").expect("hostname");
            HostPaths {
                hosts: h.join("hosts"),
                resolv_conf: h.join("resolv.conf"),
                hostname: h.join("hostname"),
            }
        }

        fn cleanup(&self) {
            while rustix::mount::unmount(self.root.join("sb/shm"), UnmountFlags::DETACH).is_ok() {}
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            self.cleanup();
        }
    }

    /// (fstype, mount options + super options) of the mounts at `path`.
    fn mounts_at(path: &Path) -> Vec<(String, String)> {
        let p = path.to_str().expect("utf-8 path");
        let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        info.lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                let sep = f.iter().position(|x| *x == "-")?;
                (f.get(4) == Some(&p)).then(|| {
                    (
                        f[sep + 1].to_string(),
                        format!("{},{}", f[5], f.get(sep + 3).unwrap_or(&"")),
                    )
                })
            })
            .collect()
    }

    #[test]
    fn resolv_conf_renders_search_nameservers_options() {
        let d = dns(
            &["8.8.8.8", "1.1.1.1"],
            &["a.svc", "b.local"],
            &["ndots:5", "edns0"],
        );
        assert_eq!(
            render_resolv_conf(&d).expect("valid").as_deref(),
            Some("search a.svc b.local\nnameserver 8.8.8.8\nnameserver 1.1.1.1\noptions ndots:5 edns0\n")
        );
        assert_eq!(
            render_resolv_conf(&dns(&["::1"], &[], &[]))
                .expect("valid")
                .as_deref(),
            Some("nameserver ::1\n")
        );
        assert_eq!(
            render_resolv_conf(&DnsConfig::default()).expect("valid"),
            None
        );
    }

    #[test]
    fn dns_entries_cannot_inject_lines() {
        for (d, field) in [
            (
                dns(&["8.8.8.8\nnameserver 6.6.6.6"], &[], &[]),
                "dns_config.servers",
            ),
            (
                dns(&[], &["a.svc\nnameserver 6.6.6.6"], &[]),
                "dns_config.searches",
            ),
            (dns(&[], &["a.svc\r"], &[]), "dns_config.searches"),
            (dns(&[], &["a b"], &[]), "dns_config.searches"),
            (dns(&[], &[], &["ndots:1\n"]), "dns_config.options"),
            (dns(&[], &[], &[""]), "dns_config.options"),
            (dns(&["1.1.1.1\0"], &[], &[]), "dns_config.servers"),
        ] {
            match render_resolv_conf(&d) {
                Err(FilesError::InvalidArgument { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{d:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn contents_follow_the_pod_config() {
        let s = Scratch::new("render");
        let host = s.host();
        let c = Contents::render(&spec("pod-a", None), &host).expect("render");
        assert_eq!(c.hostname, "pod-a\n");
        assert_eq!(c.hosts, DEFAULT_HOSTS.as_bytes());
        assert_eq!(c.resolv_conf, b"nameserver 10.0.0.53\n");

        // No hostname: the host's; host network: the host's hosts file.
        let mut sp = spec("", None);
        sp.host_network = true;
        let c = Contents::render(&sp, &host).expect("render");
        assert_eq!(c.hostname, "node-1\n");
        assert_eq!(c.hosts, b"10.0.0.1 node\n");

        // A DNS config replaces the host's resolv.conf; an empty one does not.
        let d = dns(&["9.9.9.9"], &[], &[]);
        let c = Contents::render(&spec("p", Some(&d)), &host).expect("render");
        assert_eq!(c.resolv_conf, b"nameserver 9.9.9.9\n");
        let empty = DnsConfig::default();
        let c = Contents::render(&spec("p", Some(&empty)), &host).expect("render");
        assert_eq!(c.resolv_conf, b"nameserver 10.0.0.53\n");

        // A host without resolv.conf gives an empty one.
        std::fs::remove_file(&host.resolv_conf).expect("rm");
        let c = Contents::render(&spec("p", None), &host).expect("render");
        assert!(c.resolv_conf.is_empty());

        assert!(matches!(
            Contents::render(&spec("a\nb", None), &host),
            Err(FilesError::InvalidArgument {
                field: "hostname",
                ..
            })
        ));
    }

    #[test]
    fn default_hosts_has_localhost_entries() {
        assert!(DEFAULT_HOSTS.lines().any(|l| l == "127.0.0.1\tlocalhost"));
        assert!(DEFAULT_HOSTS
            .lines()
            .any(|l| l == "::1\tlocalhost ip6-localhost ip6-loopback"));
        assert!(DEFAULT_HOSTS.ends_with('\n'));
    }

    #[tokio::test]
    async fn create_writes_files_and_mounts_shm_remove_undoes_it() {
        let s = Scratch::new("create");
        let dir = s.root.join("sb");
        let d = dns(&["9.9.9.9"], &["x.local"], &[]);
        let mut sp = spec("pod-b", Some(&d));
        sp.shm_size = 1 << 20;
        let f = SandboxFiles::create(&dir, &sp).await.expect("create");
        assert_eq!(f, SandboxFiles::at(&dir));
        assert_eq!(
            std::fs::read_to_string(&f.hostname).expect("hostname"),
            "pod-b\n"
        );
        assert_eq!(
            std::fs::read_to_string(&f.hosts).expect("hosts"),
            DEFAULT_HOSTS
        );
        assert_eq!(
            std::fs::read_to_string(&f.resolv_conf).expect("resolv"),
            "search x.local\nnameserver 9.9.9.9\n"
        );
        for p in [&f.hostname, &f.hosts, &f.resolv_conf] {
            assert_eq!(
                std::fs::metadata(p).expect("meta").mode() & 0o7777,
                0o644,
                "{p:?}"
            );
        }
        let shm = f.shm.clone().expect("shm");
        let m = mounts_at(&shm);
        assert_eq!(m.len(), 1, "{m:?}");
        assert_eq!(m[0].0, "tmpfs");
        for opt in ["nosuid", "nodev", "noexec", "size=1024k"] {
            assert!(
                m[0].1.split(',').any(|o| o == opt),
                "{opt} missing: {}",
                m[0].1
            );
        }
        assert_eq!(
            std::fs::metadata(&shm).expect("shm").mode() & 0o7777,
            0o1777
        );

        std::fs::write(shm.join("segment"), b"x").expect("write in shm");
        SandboxFiles::remove(&dir).await.expect("remove");
        assert!(mounts_at(&shm).is_empty());
        assert!(!dir.exists());
        SandboxFiles::remove(&dir).await.expect("remove twice");
    }

    #[tokio::test]
    async fn default_shm_size_and_host_ipc() {
        let s = Scratch::new("sizes");
        let dir = s.root.join("sb");
        let f = SandboxFiles::create(&dir, &spec("p", None))
            .await
            .expect("create");
        let m = mounts_at(f.shm.as_deref().expect("shm"));
        assert!(m[0].1.split(',').any(|o| o == "size=65536k"), "{m:?}");
        SandboxFiles::remove(&dir).await.expect("remove");

        let mut sp = spec("p", None);
        sp.host_ipc = true;
        let f = SandboxFiles::create(&dir, &sp).await.expect("create");
        assert_eq!(f.shm, None);
        assert!(!dir.join("shm").exists());
        assert!(f.hostname.exists());
        SandboxFiles::remove(&dir).await.expect("remove");
        assert!(!dir.exists());
    }

    #[tokio::test]
    async fn invalid_input_makes_nothing_and_a_late_failure_cleans_up() {
        let s = Scratch::new("fail");
        let dir = s.root.join("sb");
        let d = dns(&[], &["evil\nnameserver 6.6.6.6"], &[]);
        let err = SandboxFiles::create(&dir, &spec("p", Some(&d)))
            .await
            .expect_err("invalid");
        assert!(err.to_string().contains("dns_config.searches"), "{err}");
        assert!(!dir.exists());

        // shm cannot be made (a file is in the way) after the other files were written:
        // the whole directory goes.
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("shm"), b"").expect("blocker");
        let err = SandboxFiles::create(&dir, &spec("p", None))
            .await
            .expect_err("mount fails");
        assert!(matches!(err, FilesError::Mount { .. }), "{err}");
        assert!(!dir.exists());

        // And through create(): the sandbox dir is a file, nothing else appears.
        std::fs::write(&dir, b"").expect("file");
        assert!(SandboxFiles::create(&dir.join("x"), &spec("p", None))
            .await
            .is_err());
        assert!(!dir.join("x").exists());
    }
}
