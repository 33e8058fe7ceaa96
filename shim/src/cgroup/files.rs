//! Reading cgroup files: numbers, `max`, key-value lists.

use super::*;

pub(super) fn read_required(path: &Path) -> Result<String, CgroupError> {
    fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.to_path_buf(),
        source,
    })
}

pub(super) fn read_opt(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok()
}

/// A file holding one number; "max" reads as `max_value`.
pub(super) fn read_u64(path: &Path, max_value: u64) -> Option<u64> {
    let text = read_opt(path)?;
    let t = text.trim();
    if t == "max" {
        return Some(max_value);
    }
    t.parse().ok()
}

/// A flat-keyed file (`key value` lines).
pub(super) fn parse_kv(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let (k, v) = (it.next()?, it.next()?);
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

pub(super) fn read_kv(path: &Path) -> Option<BTreeMap<String, u64>> {
    read_opt(path).map(|t| parse_kv(&t))
}

pub(super) fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions; it only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|t| *t > 0).unwrap_or(100)
}
