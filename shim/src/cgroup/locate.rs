//! Finding a process's cgroup dirs from `/proc/<pid>/cgroup` and the mount table.

use super::*;

pub(super) struct ProcLine {
    pub(super) hierarchy: String,
    pub(super) controllers: Vec<String>,
    pub(super) path: String,
}

pub(super) fn parse_proc_cgroup(text: &str, what: &str) -> Result<Vec<ProcLine>, CgroupError> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut parts = line.splitn(3, ':');
        let (Some(hierarchy), Some(controllers), Some(path)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(CgroupError::Parse {
                what: what.into(),
                msg: format!("malformed line {line:?}"),
            });
        };
        out.push(ProcLine {
            hierarchy: hierarchy.to_string(),
            controllers: controllers
                .split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect(),
            path: path.to_string(),
        });
    }
    Ok(out)
}

pub(super) struct Mount {
    /// The root of the mount within its filesystem (mountinfo field 4; "/" from /proc/mounts).
    pub(super) root: String,
    pub(super) mount_point: String,
    pub(super) fstype: String,
    /// Super options (mountinfo) or mount options (/proc/mounts): for v1 they name the
    /// controllers.
    pub(super) options: Vec<String>,
}

/// Parses /proc/self/mountinfo or, failing that format, /proc/self/mounts.
pub(super) fn parse_mounts(text: &str) -> Vec<Mount> {
    let mut out = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // mountinfo: id parent maj:min root mount-point options [optional...] - fstype source super-options
        if let Some(sep) = fields.iter().skip(6).position(|f| *f == "-").map(|p| p + 6) {
            if fields.len() < sep + 3 {
                continue;
            }
            let mut options: Vec<String> = fields[sep + 3].split(',').map(str::to_string).collect();
            options.extend(fields[5].split(',').map(str::to_string));
            out.push(Mount {
                root: unescape(fields[3]),
                mount_point: unescape(fields[4]),
                fstype: fields[sep + 1].to_string(),
                options,
            });
        } else if fields.len() >= 4 {
            // /proc/mounts: source mount-point fstype options dump pass
            out.push(Mount {
                root: "/".into(),
                mount_point: unescape(fields[1]),
                fstype: fields[2].to_string(),
                options: fields[3].split(',').map(str::to_string).collect(),
            });
        }
    }
    out
}

/// Undoes the kernel's octal escaping of spaces, tabs, newlines and backslashes.
pub(super) fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') as u32 * 64
                + (bytes[i + 2] - b'0') as u32 * 8
                + (bytes[i + 3] - b'0') as u32;
            if let Ok(b) = u8::try_from(v) {
                out.push(b);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Picks, among the mounts of one hierarchy, the one whose root best contains `path`, and
/// returns the cgroup's directory through it.
pub(super) fn best_dir<'a>(
    mounts: impl Iterator<Item = &'a Mount>,
    path: &str,
    root: &Path,
) -> Option<PathBuf> {
    let mut best: Option<(usize, PathBuf)> = None;
    for m in mounts {
        let (score, rel) = match relative_to_root(path, &m.root) {
            Some(rel) => (m.root.len() + 1, rel),
            // Outside this mount's root (e.g. a process outside our cgroup namespace): join the
            // whole path, the best we can do.
            None => (0, path.trim_start_matches('/')),
        };
        if best.as_ref().is_some_and(|(s, _)| *s >= score) {
            continue;
        }
        let mut dir = root.join(m.mount_point.trim_start_matches('/'));
        if !rel.is_empty() {
            dir.push(rel);
        }
        best = Some((score, dir));
    }
    best.map(|(_, dir)| dir)
}

/// `path` relative to the mount root `root`, without a leading slash, if it lies under it.
pub(super) fn relative_to_root<'a>(path: &'a str, root: &str) -> Option<&'a str> {
    let root = root.trim_end_matches('/');
    if root.is_empty() {
        return Some(path.trim_start_matches('/'));
    }
    let rest = path.strip_prefix(root)?;
    if rest.is_empty() {
        Some("")
    } else {
        rest.strip_prefix('/')
    }
}

pub(super) fn v1_any_dir(dirs: &BTreeMap<String, PathBuf>) -> PathBuf {
    dirs.get("memory")
        .or_else(|| dirs.values().next())
        .cloned()
        .unwrap_or_default()
}
