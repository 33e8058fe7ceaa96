//! The built-in pause image, `crius.local/pause:builtin`: every pod's sandbox container
//! runs it, so pods start with no registry and no network.
//!
//! The binary is our own (`cri-server/pause/pause.rs`, built by `build.rs`); this module
//! wraps it into OCI image bytes. The bytes are deterministic (no timestamps, fixed tar
//! header fields) so the same binary always gives the same digests, and restarts of crius
//! find the image it stored before. A different toolchain may emit a different binary,
//! hence a different image under the same reference.

use serde::Serialize;
use sha2::{Digest, Sha256};

/// The reference the built-in image is stored and reported under.
pub const PAUSE_IMAGE_REF: &str = "crius.local/pause:builtin";

/// The pause binary: a static x86_64 Linux ELF that blocks until SIGINT/SIGTERM and reaps
/// zombies on SIGCHLD.
pub static PAUSE_BINARY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/pause"));

// OCI media types of the three blobs.
const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";

/// The built-in image as the three blobs an image store keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltinImage {
    /// The OCI image config JSON.
    pub config: Vec<u8>,
    /// The only layer: an uncompressed tar holding `/pause`.
    pub layer: Vec<u8>,
    /// The OCI manifest JSON referencing `config` and `layer`.
    pub manifest: Vec<u8>,
}

/// `sha256:<hex>`, the OCI digest of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

// Structs rather than `json!`: the field order, hence the bytes and digests, then does not
// depend on whether some crate in the build enables serde_json's `preserve_order`.

#[derive(Serialize)]
struct Descriptor {
    #[serde(rename = "mediaType")]
    media_type: &'static str,
    digest: String,
    size: u64,
}

#[derive(Serialize)]
struct Manifest {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: &'static str,
    config: Descriptor,
    layers: Vec<Descriptor>,
}

#[derive(Serialize)]
struct ImageConfig {
    architecture: &'static str,
    os: &'static str,
    config: RunConfig,
    rootfs: RootFs,
}

#[derive(Serialize)]
struct RunConfig {
    #[serde(rename = "Entrypoint")]
    entrypoint: Vec<&'static str>,
}

#[derive(Serialize)]
struct RootFs {
    #[serde(rename = "type")]
    kind: &'static str,
    diff_ids: Vec<String>,
}

/// The layer tar: one regular file `pause`, mode 0755, owned by 0:0, mtime 0.
fn layer_tar() -> Vec<u8> {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(PAUSE_BINARY.len() as u64);
    header.set_mode(0o755);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    let mut builder = tar::Builder::new(Vec::new());
    // Writing into a Vec cannot fail, and "pause" is a valid ustar path.
    builder
        .append_data(&mut header, "pause", PAUSE_BINARY)
        .expect("tar into memory");
    builder.into_inner().expect("tar into memory")
}

/// Builds the image's bytes; the same `PAUSE_BINARY` always gives the same bytes.
pub fn builtin() -> BuiltinImage {
    let layer = layer_tar();
    let layer_digest = sha256_digest(&layer);
    let config = ImageConfig {
        architecture: "amd64",
        os: "linux",
        config: RunConfig {
            entrypoint: vec!["/pause"],
        },
        rootfs: RootFs {
            kind: "layers",
            // Uncompressed layer: its diff_id is its own digest.
            diff_ids: vec![layer_digest.clone()],
        },
    };
    let config = serde_json::to_vec(&config).expect("plain structs serialize");
    let manifest = Manifest {
        schema_version: 2,
        media_type: MANIFEST_MEDIA_TYPE,
        config: Descriptor {
            media_type: CONFIG_MEDIA_TYPE,
            digest: sha256_digest(&config),
            size: config.len() as u64,
        },
        layers: vec![Descriptor {
            media_type: LAYER_MEDIA_TYPE,
            digest: layer_digest,
            size: layer.len() as u64,
        }],
    };
    let manifest = serde_json::to_vec(&manifest).expect("plain structs serialize");
    BuiltinImage {
        config,
        layer,
        manifest,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::Value;
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, ExitStatus, Stdio};
    use std::time::{Duration, Instant};

    const BUSYBOX: &str = "/usr/bin/busybox";

    #[test]
    fn pause_image_bytes_are_deterministic() {
        assert_eq!(builtin(), builtin());
    }

    #[test]
    fn pause_image_digests_and_sizes_match() {
        let img = builtin();
        let config: Value = serde_json::from_slice(&img.config).unwrap();
        assert_eq!(config["architecture"], "amd64");
        assert_eq!(config["os"], "linux");
        assert_eq!(
            config["config"]["Entrypoint"],
            serde_json::json!(["/pause"])
        );
        assert_eq!(config["rootfs"]["type"], "layers");
        assert_eq!(
            config["rootfs"]["diff_ids"],
            serde_json::json!([sha256_digest(&img.layer)])
        );
        assert!(config.get("created").is_none());

        let manifest: Value = serde_json::from_slice(&img.manifest).unwrap();
        assert_eq!(manifest["schemaVersion"], 2);
        assert_eq!(manifest["mediaType"], MANIFEST_MEDIA_TYPE);
        assert_eq!(manifest["config"]["mediaType"], CONFIG_MEDIA_TYPE);
        assert_eq!(manifest["config"]["digest"], sha256_digest(&img.config));
        assert_eq!(manifest["config"]["size"], img.config.len() as u64);
        let layers = manifest["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 1);
        assert_eq!(layers[0]["mediaType"], LAYER_MEDIA_TYPE);
        assert_eq!(layers[0]["digest"], sha256_digest(&img.layer));
        assert_eq!(layers[0]["size"], img.layer.len() as u64);
    }

    #[test]
    fn pause_layer_holds_only_the_binary() {
        let img = builtin();
        let mut archive = tar::Archive::new(img.layer.as_slice());
        let mut entries = archive.entries().unwrap();
        let mut entry = entries.next().unwrap().unwrap();
        assert_eq!(entry.path().unwrap().to_str(), Some("pause"));
        let h = entry.header();
        assert_eq!(h.entry_type(), tar::EntryType::Regular);
        assert_eq!(h.mode().unwrap(), 0o755);
        assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (0, 0));
        assert_eq!(h.mtime().unwrap(), 0);
        let mut body = Vec::new();
        entry.read_to_end(&mut body).unwrap();
        assert_eq!(body, PAUSE_BINARY);
        drop(entry);
        assert!(entries.next().is_none());
    }

    #[test]
    fn pause_binary_is_a_small_static_elf() {
        let b = PAUSE_BINARY;
        assert!(b.len() < 16 * 1024, "pause is {} bytes", b.len());
        assert_eq!(&b[..4], b"\x7fELF");
        assert_eq!(b[4], 2, "ELFCLASS64");
        assert_eq!(b[5], 1, "little endian");
        let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
        assert_eq!(u16_at(16), 2, "ET_EXEC: static, not PIE");
        assert_eq!(u16_at(18), 62, "EM_X86_64");
        let (phoff, phentsize, phnum) = (u64_at(32) as usize, u16_at(54) as usize, u16_at(56));
        assert!(phnum > 0);
        for i in 0..phnum as usize {
            let p_type = u32_at(phoff + i * phentsize);
            assert_ne!(p_type, 3, "PT_INTERP: dynamically linked");
            assert_ne!(p_type, 2, "PT_DYNAMIC: dynamically linked");
        }
    }

    /// Writes the pause binary as an executable `dir/pause`.
    fn write_pause(dir: &Path) -> PathBuf {
        let path = dir.join("pause");
        std::fs::write(&path, PAUSE_BINARY).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// Spawns `cmd`, retrying on ETXTBSY: another test thread may have forked while our
    /// just-written binary was still open for writing.
    fn spawn(cmd: &mut Command) -> Child {
        let mut tries = 0;
        loop {
            match cmd.spawn() {
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 50 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                r => return r.unwrap(),
            }
        }
    }

    fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn send(pid: u32, sig: libc::c_int) {
        // SAFETY: kill(2) takes plain integers; `pid` is our own live (or zombie) child.
        let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
    }

    /// Waits until `pid` sleeps in rt_sigtimedwait (syscall 128), i.e. has blocked its
    /// signals: a signal sent before that would take the default action and kill it.
    fn wait_in_sigtimedwait(pid: u32) {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let sc = std::fs::read_to_string(format!("/proc/{pid}/syscall")).unwrap_or_default();
            if sc.starts_with("128 ") {
                return;
            }
            assert!(Instant::now() < deadline, "pause never waited: {sc:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn pause_binary_exits_0_on_sigterm_and_sigint() {
        let dir = tempfile::tempdir().unwrap();
        let pause = write_pause(dir.path());
        for sig in [libc::SIGTERM, libc::SIGINT] {
            let mut child = spawn(Command::new(&pause).stdin(Stdio::null()));
            wait_in_sigtimedwait(child.id());
            // Another signal it waits for must not stop it.
            send(child.id(), libc::SIGCHLD);
            std::thread::sleep(Duration::from_millis(20));
            assert!(child.try_wait().unwrap().is_none(), "SIGCHLD stopped pause");
            send(child.id(), sig);
            let status = wait_timeout(&mut child, Duration::from_secs(1));
            if status.is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
            let status = status.unwrap_or_else(|| panic!("pause ignored signal {sig} for 1 s"));
            assert_eq!(status.code(), Some(0), "signal {sig}: {status}");
        }
    }

    /// A runc container under its own `--root`, killed and deleted when dropped.
    struct Runc {
        root: PathBuf,
        id: String,
        run: Option<Child>,
    }

    impl Runc {
        fn cmd(&self) -> Command {
            let mut c = Command::new("runc");
            c.arg("--root").arg(&self.root);
            c
        }

        /// `runc exec` of a command in the container; its stdout.
        fn exec(&self, args: &[&str]) -> std::process::Output {
            self.cmd()
                .arg("exec")
                .arg(&self.id)
                .args(args)
                .stdin(Stdio::null())
                .output()
                .unwrap()
        }
    }

    impl Drop for Runc {
        fn drop(&mut self) {
            let quiet = |c: &mut Command| {
                let _ = c.stdout(Stdio::null()).stderr(Stdio::null()).status();
            };
            quiet(self.cmd().args(["kill", &self.id, "KILL"]));
            if let Some(mut run) = self.run.take() {
                let _ = wait_timeout(&mut run, Duration::from_secs(5));
                let _ = run.kill();
                let _ = run.wait();
            }
            quiet(self.cmd().args(["delete", "--force", &self.id]));
        }
    }

    /// `(state, ppid)` of a pid in the container, from its `/proc/<pid>/stat`; None once gone.
    fn stat_in(c: &Runc, pid: &str) -> Option<(String, String)> {
        let out = c.exec(&["/busybox", "cat", &format!("/proc/{pid}/stat")]);
        if !out.status.success() {
            return None;
        }
        let stat = String::from_utf8_lossy(&out.stdout).into_owned();
        // After "pid (comm)": state, ppid.
        let rest = &stat[stat.rfind(')')? + 1..];
        let mut fields = rest.split_whitespace();
        Some((fields.next()?.to_string(), fields.next()?.to_string()))
    }

    /// The real job: pause as PID 1 of a runc container reaps orphans and stops with
    /// status 0 on `runc kill TERM`. The rootfs holds only `/pause`; busybox is bind
    /// mounted at `/busybox` just to make orphans.
    #[test]
    fn pause_under_runc_is_pid1_reaps_and_stops_on_term() {
        // SAFETY: geteuid has no preconditions.
        let root_user = unsafe { libc::geteuid() } == 0;
        let have_runc = Command::new("runc")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !root_user || !have_runc {
            eprintln!("skipping: needs root and runc");
            return;
        }
        let have_busybox = Path::new(BUSYBOX).exists();

        let tmp = tempfile::tempdir().unwrap();
        let bundle = tmp.path().join("bundle");
        std::fs::create_dir_all(bundle.join("rootfs")).unwrap();
        write_pause(&bundle.join("rootfs"));
        let spec = Command::new("runc")
            .arg("spec")
            .current_dir(&bundle)
            .output()
            .unwrap();
        assert!(spec.status.success(), "runc spec: {spec:?}");
        let config_path = bundle.join("config.json");
        let mut config: Value =
            serde_json::from_slice(&std::fs::read(&config_path).unwrap()).unwrap();
        config["process"]["args"] = serde_json::json!(["/pause"]);
        config["process"]["terminal"] = Value::Bool(false);
        if have_busybox {
            config["mounts"]
                .as_array_mut()
                .unwrap()
                .push(serde_json::json!({
                    "destination": "/busybox", "type": "bind", "source": BUSYBOX,
                    "options": ["rbind", "ro"]
                }));
        }
        std::fs::write(&config_path, serde_json::to_vec(&config).unwrap()).unwrap();

        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let mut c = Runc {
            root: tmp.path().join("runc-root"),
            id: format!("crius-pause-test-{}-{nanos}", std::process::id()),
            run: None,
        };
        let log = tmp.path().join("run.log");
        // Foreground `runc run`: its exit status is the container process's.
        c.run = Some(spawn(
            c.cmd()
                .args(["run", "--bundle"])
                .arg(&bundle)
                .arg(&c.id)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap()),
        ));

        // Running, and PID 1 of its pid namespace.
        let deadline = Instant::now() + Duration::from_secs(10);
        let host_pid = loop {
            let out = c.cmd().args(["state", &c.id]).output().unwrap();
            if out.status.success() {
                let state: Value = serde_json::from_slice(&out.stdout).unwrap();
                if state["status"] == "running" {
                    break state["pid"].as_u64().unwrap();
                }
            }
            if let Some(st) = c.run.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "runc run exited {st}: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "container never ran");
            std::thread::sleep(Duration::from_millis(20));
        };
        let status = std::fs::read_to_string(format!("/proc/{host_pid}/status")).unwrap();
        let nspid = status.lines().find(|l| l.starts_with("NSpid:")).unwrap();
        assert_eq!(nspid.split_whitespace().last(), Some("1"), "{nspid}");
        let cmdline = std::fs::read(format!("/proc/{host_pid}/cmdline")).unwrap();
        assert_eq!(cmdline, b"/pause\0");
        wait_in_sigtimedwait(host_pid as u32);

        if have_busybox {
            // The shell exits at once, orphaning its sleep to PID 1; when the sleep ends it
            // must vanish, not linger as a zombie. The sleep's stdio is /dev/null: left on
            // runc exec's pipes, it was gone before we could look at it.
            let out = c.exec(&[
                "/busybox",
                "sh",
                "-c",
                "/busybox sleep 1 </dev/null >/dev/null 2>&1 & echo $!",
            ]);
            assert!(out.status.success(), "exec: {out:?}");
            let orphan = String::from_utf8_lossy(&out.stdout).trim().to_string();
            let (state, ppid) = stat_in(&c, &orphan).expect("the orphan is still sleeping");
            assert_eq!(
                ppid, "1",
                "orphan {orphan} not reparented to pause ({state})"
            );
            let deadline = Instant::now() + Duration::from_secs(5);
            while let Some((state, _)) = stat_in(&c, &orphan) {
                assert!(
                    Instant::now() < deadline,
                    "orphan {orphan} not reaped: state {state}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        } else {
            eprintln!("no {BUSYBOX}: reaping under runc not checked");
        }

        let kill = c.cmd().args(["kill", &c.id, "TERM"]).output().unwrap();
        assert!(kill.status.success(), "runc kill: {kill:?}");
        let status = wait_timeout(c.run.as_mut().unwrap(), Duration::from_secs(5))
            .expect("pause ignored SIGTERM under runc for 5 s");
        c.run = None;
        assert_eq!(
            status.code(),
            Some(0),
            "runc run: {status}: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
}
