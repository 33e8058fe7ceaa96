//! The CRI log format, written by the shim itself so that a container's log keeps flowing
//! while the daemon is down: `<RFC3339Nano> <stdout|stderr> <F|P> <content>\n`.
//!
//! A line longer than [`MAX_LINE`] is cut into `P` (partial) entries ending with an `F`
//! entry. Output that ends without a newline ends with a `P` entry, so that a reader that
//! joins partials reproduces the bytes exactly (no newline is invented).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// The longest content of one entry; longer lines are split into partials.
pub const MAX_LINE: usize = 16 * 1024;

/// Which stream an entry came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// The process's stdout.
    Stdout,
    /// The process's stderr.
    Stderr,
}

impl Stream {
    fn tag(self) -> &'static [u8] {
        match self {
            Stream::Stdout => b"stdout",
            Stream::Stderr => b"stderr",
        }
    }
}

/// A CRI log file shared by a process's stdout and stderr; reopenable for log rotation.
#[derive(Debug)]
pub struct CriLog {
    path: PathBuf,
    file: Mutex<File>,
}

impl CriLog {
    /// Opens (creating, appending) the log at `path`.
    pub fn open(path: &Path) -> io::Result<CriLog> {
        Ok(CriLog {
            path: path.to_path_buf(),
            file: Mutex::new(open_log(path)?),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Closes the file and opens the path again: after the kubelet rotated it away, new
    /// entries go to a new file at the same path.
    pub fn reopen(&self) -> io::Result<()> {
        let f = open_log(&self.path)?;
        *self.lock() = f;
        Ok(())
    }

    /// Appends formatted entries in one write.
    pub fn write_entries(&self, entries: &[u8]) -> io::Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        self.lock().write_all(entries)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, File> {
        self.file.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn open_log(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

/// Turns a stream of bytes into CRI log entries.
#[derive(Debug)]
pub struct LineSplitter {
    stream: Stream,
    partial: Vec<u8>,
}

impl LineSplitter {
    /// A splitter for `stream`.
    pub fn new(stream: Stream) -> Self {
        LineSplitter {
            stream,
            partial: Vec::new(),
        }
    }

    /// Formats every complete line of `data` (and any overlong partial) into `out`.
    pub fn feed(&mut self, data: &[u8], now: SystemTime, out: &mut Vec<u8>) {
        let ts = rfc3339_nano(now);
        let mut rest = data;
        while !rest.is_empty() {
            match memchr(b'\n', rest) {
                Some(i) => {
                    self.partial.extend_from_slice(&rest[..i]);
                    rest = &rest[i + 1..];
                    self.flush_long(&ts, out);
                    self.entry(&ts, b'F', out);
                }
                None => {
                    self.partial.extend_from_slice(rest);
                    rest = &[];
                    self.flush_long(&ts, out);
                }
            }
        }
    }

    /// End of stream: whatever is left becomes a final `P` entry.
    pub fn finish(&mut self, now: SystemTime, out: &mut Vec<u8>) {
        if !self.partial.is_empty() {
            let ts = rfc3339_nano(now);
            self.entry(&ts, b'P', out);
        }
    }

    /// Emits `P` entries while more than one entry's worth is buffered.
    fn flush_long(&mut self, ts: &str, out: &mut Vec<u8>) {
        while self.partial.len() > MAX_LINE {
            let rest = self.partial.split_off(MAX_LINE);
            self.entry(ts, b'P', out);
            self.partial = rest;
        }
    }

    fn entry(&mut self, ts: &str, tag: u8, out: &mut Vec<u8>) {
        out.extend_from_slice(ts.as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.stream.tag());
        out.push(b' ');
        out.push(tag);
        out.push(b' ');
        out.extend_from_slice(&self.partial);
        out.push(b'\n');
        self.partial.clear();
    }
}

fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|b| *b == needle)
}

/// Go's `time.RFC3339Nano` of a UTC time: nanoseconds with trailing zeros trimmed.
pub fn rfc3339_nano(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let nanos = d.subsec_nanos();
    let days = (secs / 86_400) as i64;
    let sod = secs % 86_400;
    let (y, m, dd) = civil_from_days(days);
    let mut s = format!(
        "{y:04}-{m:02}-{dd:02}T{:02}:{:02}:{:02}",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    );
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64, nanos: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(secs, nanos)
    }

    #[test]
    fn timestamps_match_go() {
        assert_eq!(rfc3339_nano(at(0, 0)), "1970-01-01T00:00:00Z");
        // 2016-10-06T00:17:09.669794202Z is Go's documented example.
        assert_eq!(
            rfc3339_nano(at(1_475_713_029, 669_794_202)),
            "2016-10-06T00:17:09.669794202Z"
        );
        assert_eq!(
            rfc3339_nano(at(951_782_400, 500_000_000)),
            "2000-02-29T00:00:00.5Z"
        );
    }

    fn lines(out: &[u8]) -> Vec<String> {
        String::from_utf8_lossy(out)
            .lines()
            .map(|l| l.split_once(' ').map_or("", |x| x.1).to_string())
            .collect()
    }

    #[test]
    fn full_lines_partials_and_no_trailing_newline() {
        let mut s = LineSplitter::new(Stream::Stdout);
        let mut out = Vec::new();
        s.feed(b"a\nb", at(1, 0), &mut out);
        s.feed(b"c\n\nd", at(1, 0), &mut out);
        s.finish(at(2, 0), &mut out);
        assert_eq!(
            lines(&out),
            vec!["stdout F a", "stdout F bc", "stdout F ", "stdout P d"]
        );
    }

    #[test]
    fn long_lines_are_cut_at_max_line() {
        let mut s = LineSplitter::new(Stream::Stderr);
        let mut out = Vec::new();
        let long = vec![b'x'; MAX_LINE * 2 + 10];
        s.feed(&long, at(1, 0), &mut out);
        s.feed(b"\n", at(1, 0), &mut out);
        let l = lines(&out);
        assert_eq!(l.len(), 3);
        assert!(l[0].starts_with("stderr P ") && l[0].len() == 9 + MAX_LINE);
        assert!(l[1].starts_with("stderr P "));
        assert_eq!(l[2], format!("stderr F {}", "x".repeat(10)));
    }

    #[test]
    fn reopen_follows_the_path() {
        let d = tempfile::tempdir().expect("tmp");
        let p = d.path().join("c.log");
        let log = CriLog::open(&p).expect("open");
        log.write_entries(b"one\n").expect("write");
        std::fs::rename(&p, d.path().join("c.log.1")).expect("rotate");
        log.reopen().expect("reopen");
        log.write_entries(b"two\n").expect("write");
        assert_eq!(std::fs::read_to_string(&p).expect("new"), "two\n");
        assert_eq!(
            std::fs::read_to_string(d.path().join("c.log.1")).expect("old"),
            "one\n"
        );
    }
}
