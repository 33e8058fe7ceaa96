//! What the store keeps of a container.

use serde::{Deserialize, Serialize};

use super::config::ContainerConfig;

/// A container's lifecycle as the store records it. `Creating` is written before anything
/// is made on the host, so a crash during CreateContainer is rolled back at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerState {
    /// CreateContainer is in progress (or crashed half-way).
    Creating,
    /// Created in its shim, not started.
    Created,
    /// Started.
    Running,
    /// Its process ended; `exit` says how.
    Exited,
}

/// How a container's process ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exit {
    pub code: i32,
    /// Unix nanoseconds.
    pub at: i64,
    /// `Completed`, `Error`, `OOMKilled` or `Unknown`.
    pub reason: String,
    pub message: String,
}

/// One container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerRecord {
    /// 64 hex characters.
    pub id: String,
    pub sandbox_id: String,
    /// The reserved name, `<name>_<pod name>_<namespace>_<uid>_<attempt>`.
    pub name: String,
    pub config: ContainerConfig,
    /// The image id (`sha256:…`).
    pub image_id: String,
    /// The image as the kubelet named it.
    pub image_name: String,
    /// A digest reference of the image, when known.
    pub image_ref: String,
    pub state: ContainerState,
    /// Unix nanoseconds.
    pub created_at: i64,
    pub started_at: i64,
    pub exit: Option<Exit>,
    /// Whether the kernel OOM-killed something in it.
    #[serde(default)]
    pub oom_killed: bool,
    pub pid: u32,
    /// The full log path (`log_directory/log_path`), empty when none.
    pub log_path: String,
    /// The spec it runs with, as JSON (for exec and verbose status).
    pub spec: Option<crate::spec::StoredSpec>,
    /// The image's `StopSignal`, if any.
    #[serde(default)]
    pub stop_signal: Option<String>,
}

impl ContainerRecord {
    /// The signal StopContainer sends first: the image's `StopSignal`, else SIGTERM.
    pub fn stop_signal(&self) -> u32 {
        self.stop_signal
            .as_deref()
            .and_then(parse_signal)
            .unwrap_or(libc::SIGTERM as u32)
    }
}

/// A signal as images write it: `SIGQUIT`, `QUIT` or `3`.
pub fn parse_signal(s: &str) -> Option<u32> {
    let s = s.trim();
    if let Ok(n) = s.parse::<u32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let name = s.to_ascii_uppercase();
    let name = name.strip_prefix("SIG").unwrap_or(&name);
    let n = match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "TERM" => libc::SIGTERM,
        "STOP" => libc::SIGSTOP,
        "CONT" => libc::SIGCONT,
        "WINCH" => libc::SIGWINCH,
        "PWR" => libc::SIGPWR,
        _ => return None,
    };
    Some(n as u32)
}

#[cfg(test)]
mod tests {
    use super::parse_signal;

    #[test]
    fn signals_parse_by_name_and_number() {
        assert_eq!(parse_signal("SIGQUIT"), Some(3));
        assert_eq!(parse_signal("quit"), Some(3));
        assert_eq!(parse_signal("9"), Some(9));
        assert_eq!(parse_signal("0"), None);
        assert_eq!(parse_signal("SIGNOPE"), None);
    }
}
