//! Looking at the host: binaries, processes, zombies and mounts, so tests can assert that
//! nothing was left behind.

use std::path::{Path, PathBuf};

/// Finds `name` in `PATH`, then in `~/.cargo/bin` (where `cargo install` puts youki).
pub fn find_binary(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .collect();
    if let Ok(home) = std::env::var("HOME") {
        dirs.push(Path::new(&home).join(".cargo/bin"));
    }
    dirs.push(PathBuf::from("/usr/sbin"));
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

/// The directory holding the workspace's built binaries (`target/debug` or `target/release`),
/// found from the running test executable (`target/<profile>/deps/<test>`).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// Path of a workspace binary built next to the test executable.
pub fn workspace_binary(name: &str) -> PathBuf {
    target_dir().join(name)
}

/// Whether a process with this pid exists (zombies count as existing).
pub fn pid_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The state letter of a process (`R`, `S`, `Z`, …) from `/proc/<pid>/stat`.
pub fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    after.trim_start().chars().next()
}

/// Parent pid of a process.
pub fn parent_pid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    after.split_whitespace().nth(1)?.parse().ok()
}

/// Children of `pid` that are zombies.
pub fn zombie_children(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| parent_pid(*p) == Some(pid) && process_state(*p) == Some('Z'))
        .collect()
}

/// Mount points at or below `dir`, from `/proc/self/mountinfo`.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    info.lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect()
}

/// Resident set size of a process in KiB, from `/proc/<pid>/status`.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Sends a signal to a process, ignoring a process that is already gone.
pub fn kill(pid: u32, signal: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}

/// Waits until `cond` holds or `timeout` passes; true when it held.
pub async fn wait_until(timeout: std::time::Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A fifo the test reads, as containerd reads a process's output: created now, read to EOF
/// by a thread (opening blocks until the shim opens the write end).
pub struct FifoCapture {
    path: PathBuf,
    reader: std::thread::JoinHandle<Vec<u8>>,
}

impl FifoCapture {
    /// Creates the fifo at `path` and starts reading it.
    pub fn new(path: &Path) -> std::io::Result<FifoCapture> {
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        // SAFETY: `c` is a valid NUL-terminated path.
        if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let p = path.to_path_buf();
        let reader = std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = Vec::new();
            if let Ok(mut f) = std::fs::File::open(&p) {
                let _ = f.read_to_end(&mut buf);
            }
            buf
        });
        Ok(FifoCapture {
            path: path.to_path_buf(),
            reader,
        })
    }

    /// The fifo's path (what the shim is given as stdout).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Everything read until EOF (the writer closed), waiting at most `timeout`.
    pub fn finish(self, timeout: std::time::Duration) -> String {
        let deadline = std::time::Instant::now() + timeout;
        while !self.reader.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        if !self.reader.is_finished() {
            return String::from("<fifo not closed>");
        }
        self.reader
            .join()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }
}

/// Where tests and benchmarks put daemon roots: `$CRIUS_TEST_TMPDIR`, else `/tmp`.
///
/// Benchmarks point it elsewhere: on the test machines `/tmp` creates inodes ~40× slower than
/// the rest of the same ext4 filesystem (≈0.6 ms per mkdir/symlink), which would swamp what
/// an image pull costs in either runtime.
pub fn scratch_dir() -> PathBuf {
    std::env::var_os("CRIUS_TEST_TMPDIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"))
}
