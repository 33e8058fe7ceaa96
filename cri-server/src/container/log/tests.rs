use super::*;
use std::process::Command;
use std::time::Instant;

fn at(secs: u64, nanos: u32) -> SystemTime {
    UNIX_EPOCH + Duration::new(secs, nanos)
}

/// A tiny deterministic PRNG (xorshift64*), enough for test data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// One parsed entry.
#[derive(Debug, PartialEq)]
struct Entry {
    ts: String,
    stream: String,
    partial: bool,
    content: Vec<u8>,
}

/// Parses a CRI log strictly (every line must be a well-formed entry).
fn parse(log: &[u8]) -> Vec<Entry> {
    assert!(log.is_empty() || log.ends_with(b"\n"), "log ends mid-entry");
    let mut out = Vec::new();
    let mut rest = log;
    while !rest.is_empty() {
        let nl = rest.iter().position(|b| *b == b'\n').expect("newline");
        let line = &rest[..nl];
        rest = &rest[nl + 1..];
        let mut parts = line.splitn(4, |b| *b == b' ');
        let ts = String::from_utf8(parts.next().expect("ts").to_vec()).expect("ts utf-8");
        let stream = String::from_utf8(parts.next().expect("stream").to_vec()).expect("utf-8");
        let tag = parts.next().expect("tag");
        let content = parts.next().expect("content").to_vec();
        assert!(
            ts.len() >= 20 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T',
            "{ts}"
        );
        assert!(stream == "stdout" || stream == "stderr", "{stream}");
        assert!(tag == b"F" || tag == b"P", "{tag:?}");
        assert!(
            content.len() <= MAX_LINE,
            "entry of {} bytes",
            content.len()
        );
        out.push(Entry {
            ts,
            stream,
            partial: tag == b"P",
            content,
        });
    }
    out
}

/// The bytes of one stream, rebuilt by joining partials and adding `\n` after `F`s.
fn join(entries: &[Entry], stream: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries.iter().filter(|e| e.stream == stream) {
        out.extend_from_slice(&e.content);
        if !e.partial {
            out.push(b'\n');
        }
    }
    out
}

fn split_all(stream: Stream, chunks: &[&[u8]]) -> Vec<Entry> {
    let mut s = LineSplitter::new(stream);
    let mut out = Vec::new();
    for c in chunks {
        s.feed(c, at(1, 0), &mut out);
    }
    s.finish(at(2, 0), &mut out);
    parse(&out)
}

fn summary(entries: &[Entry]) -> Vec<(bool, String)> {
    entries
        .iter()
        .map(|e| (e.partial, String::from_utf8_lossy(&e.content).into_owned()))
        .collect()
}

#[test]
fn timestamps_match_go_rfc3339nano() {
    assert_eq!(rfc3339_nano(at(0, 0)), "1970-01-01T00:00:00Z");
    // Go's documented example of RFC3339Nano.
    assert_eq!(
        rfc3339_nano(at(1_475_713_029, 669_794_202)),
        "2016-10-06T00:17:09.669794202Z"
    );
    assert_eq!(
        rfc3339_nano(at(951_782_400, 500_000_000)),
        "2000-02-29T00:00:00.5Z"
    );
    assert_eq!(
        rfc3339_nano(at(1_704_164_645, 123_456_789)),
        "2024-01-02T03:04:05.123456789Z"
    );
    assert_eq!(
        rfc3339_nano(at(4_102_444_799, 1)),
        "2099-12-31T23:59:59.000000001Z"
    );
}

#[test]
fn format_entry_writes_one_line() {
    let mut out = Vec::new();
    format_entry(
        at(1_704_164_645, 123_456_789),
        Stream::Stderr,
        true,
        b"a b\r",
        &mut out,
    );
    format_entry(at(0, 0), Stream::Stdout, false, b"", &mut out);
    assert_eq!(
        out,
        b"2024-01-02T03:04:05.123456789Z stderr P a b\r\n1970-01-01T00:00:00Z stdout F \n"
    );
}

#[test]
fn lines_empty_lines_crlf_and_no_trailing_newline() {
    let e = split_all(Stream::Stdout, &[b"a\nb", b"c\n\n\r\nd\r\n", b"tail"]);
    assert_eq!(
        summary(&e),
        vec![
            (false, "a".into()),
            (false, "bc".into()),
            (false, "".into()),
            (false, "\r".into()),
            (false, "d\r".into()),
            (true, "tail".into()),
        ]
    );
    assert!(e.iter().all(|e| e.stream == "stdout"));
    // Data fed at t=1 is stamped 1 s; the final partial at finish time.
    assert_eq!(e[0].ts, "1970-01-01T00:00:01Z");
    assert_eq!(e[5].ts, "1970-01-01T00:00:02Z");
    // Nothing at all, or output ending in a newline, gives no trailing partial.
    assert!(split_all(Stream::Stdout, &[]).is_empty());
    assert_eq!(
        summary(&split_all(Stream::Stderr, &[b"x\n"])),
        vec![(false, "x".into())]
    );
}

#[test]
fn long_lines_are_cut_at_max_line() {
    let exact = vec![b'x'; MAX_LINE];
    let e = split_all(Stream::Stdout, &[&exact, b"\n"]);
    assert_eq!(e.len(), 1);
    assert!(!e[0].partial && e[0].content.len() == MAX_LINE);

    let mut long = vec![b'y'; 2 * MAX_LINE + 10];
    long.push(b'\n');
    // Whole in one read, and byte by byte.
    for chunks in [vec![&long[..]], long.chunks(1).collect::<Vec<_>>()] {
        let e = split_all(Stream::Stderr, &chunks);
        let lens: Vec<(bool, usize)> = e.iter().map(|e| (e.partial, e.content.len())).collect();
        assert_eq!(lens, vec![(true, MAX_LINE), (true, MAX_LINE), (false, 10)]);
    }

    // An overlong unfinished line: partials, then the rest as the final partial.
    let e = split_all(Stream::Stdout, &[&vec![b'z'; MAX_LINE + 1]]);
    let lens: Vec<(bool, usize)> = e.iter().map(|e| (e.partial, e.content.len())).collect();
    assert_eq!(lens, vec![(true, MAX_LINE), (true, 1)]);
}

#[test]
fn random_data_round_trips_exactly() {
    for seed in 1..=40u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let mut data = Vec::new();
        let lines = rng.below(40);
        for _ in 0..lines {
            let len = match rng.below(6) {
                0 => 0,
                1 => MAX_LINE,
                2 => MAX_LINE + rng.below(3 * MAX_LINE),
                _ => rng.below(200),
            };
            for _ in 0..len {
                // Any byte but '\n', '\r' often.
                let b = match rng.below(10) {
                    0 => b'\r',
                    _ => (rng.next() % 256) as u8,
                };
                data.push(if b == b'\n' { b'.' } else { b });
            }
            if rng.below(8) != 0 {
                data.push(b'\n');
            }
        }
        // Random read boundaries.
        let mut chunks = Vec::new();
        let mut rest = &data[..];
        while !rest.is_empty() {
            let n = 1 + rng.below(rest.len().min(40_000));
            chunks.push(&rest[..n]);
            rest = &rest[n..];
        }
        let e = split_all(Stream::Stdout, &chunks);
        assert_eq!(join(&e, "stdout"), data, "seed {seed}");
        // Partials are full-size except a last one.
        for (i, x) in e.iter().enumerate() {
            if x.partial && i + 1 != e.len() {
                assert_eq!(x.content.len(), MAX_LINE, "seed {seed} entry {i}");
            }
        }
    }
}

/// Scratch directory under /var/tmp, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let p = PathBuf::from(format!(
            "/var/tmp/crius-log-test-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("scratch");
        Scratch(p)
    }

    fn fifo(&self, name: &str) -> PathBuf {
        let p = self.0.join(name);
        let st = Command::new("mkfifo").arg(&p).status().expect("mkfifo");
        assert!(st.success());
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `sh -c script` with args; returns its exit status once done (off the runtime).
async fn sh(script: &str, args: &[&Path]) -> std::process::ExitStatus {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c").arg(script).arg("sh").args(args);
    tokio::task::spawn_blocking(move || cmd.status().expect("sh runs"))
        .await
        .expect("join")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifos_drain_50_mb_exactly_into_one_log() {
    let s = Scratch::new("big");
    let out = s.fifo("stdout");
    let err = s.fifo("stderr");
    let log = s.0.join("c.log");
    let data_path = s.0.join("data");
    let mut rng = Rng(0x1234_5678);
    let mut data = vec![0u8; 50 << 20];
    for chunk in data.chunks_mut(8) {
        let v = rng.next().to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
    // No trailing newline: the last piece must come back as a partial.
    if let Some(last) = data.last_mut() {
        *last = b'!';
    }
    std::fs::write(&data_path, &data).expect("data");

    let pipe = LogPipe::spawn(Some(log.clone()), Some(&out), Some(&err))
        .await
        .expect("spawn");
    let status = sh(
        r#"cat "$1" > "$2" &
           { i=0; while [ $i -lt 200 ]; do echo "err line $i"; i=$((i+1)); done; printf 'crlf\r\nlast'; } > "$3"
           wait"#,
        &[&data_path, &out, &err],
    )
    .await;
    assert!(status.success());
    let t = Instant::now();
    pipe.finish().await;
    assert!(
        t.elapsed() < FINISH_TIMEOUT,
        "finish waited for the timeout"
    );

    let text = std::fs::read(&log).expect("log");
    let entries = parse(&text);
    let got = join(&entries, "stdout");
    assert_eq!(got.len(), data.len());
    assert!(got == data, "stdout bytes differ");
    let mut want_err = String::new();
    for i in 0..200 {
        want_err.push_str(&format!("err line {i}\n"));
    }
    want_err.push_str("crlf\r\nlast");
    assert_eq!(
        String::from_utf8(join(&entries, "stderr")).expect("utf-8"),
        want_err
    );
    let last_err = entries
        .iter()
        .rev()
        .find(|e| e.stream == "stderr")
        .expect("stderr entries");
    assert!(last_err.partial && last_err.content == b"last");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_follows_the_kubelets_rename() {
    let s = Scratch::new("reopen");
    let out = s.fifo("stdout");
    let log = s.0.join("c.log");
    let pipe = LogPipe::spawn(Some(log.clone()), Some(&out), None)
        .await
        .expect("spawn");
    // One writer for the whole test, fed line by line from here.
    let mut w = std::fs::OpenOptions::new()
        .write(true)
        .open(&out)
        .expect("writer");
    w.write_all(b"one\n").expect("write");
    wait_for(&log, b"one\n").await;
    std::fs::rename(&log, s.0.join("c.log.1")).expect("rotate");
    pipe.reopen().await.expect("reopen");
    w.write_all(b"two\n").expect("write");
    drop(w);
    pipe.finish().await;
    let old = parse(&std::fs::read(s.0.join("c.log.1")).expect("old"));
    let new = parse(&std::fs::read(&log).expect("new"));
    assert_eq!(join(&old, "stdout"), b"one\n");
    assert_eq!(join(&new, "stdout"), b"two\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_reopen_drops_output_and_never_creates_the_file() {
    let s = Scratch::new("reopenfail");
    let out = s.fifo("stdout");
    let dir = s.0.join("pods");
    std::fs::create_dir(&dir).expect("dir");
    let log = dir.join("c.log");
    let pipe = LogPipe::spawn(Some(log.clone()), Some(&out), None)
        .await
        .expect("spawn");
    let mut w = std::fs::OpenOptions::new()
        .write(true)
        .open(&out)
        .expect("writer");
    w.write_all(b"before\n").expect("write");
    wait_for(&log, b"before\n").await;

    std::fs::remove_dir_all(&dir).expect("remove log dir");
    let err = pipe.reopen().await.expect_err("reopen fails");
    assert!(matches!(err, LogError::Open { .. }), "{err}");
    // The directory comes back (as the kubelet might make it), output goes on: still no
    // file, the output of this period is dropped.
    std::fs::create_dir(&dir).expect("dir again");
    w.write_all(b"dropped\n").expect("write");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!log.exists(), "a log file appeared after a failed reopen");

    // A later successful reopen writes there again.
    pipe.reopen().await.expect("reopen");
    w.write_all(b"after\n").expect("write");
    drop(w);
    pipe.finish().await;
    let e = parse(&std::fs::read(&log).expect("log"));
    assert_eq!(join(&e, "stdout"), b"after\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finish_is_bounded_and_keeps_what_was_written() {
    let s = Scratch::new("bounded");
    let out = s.fifo("stdout");
    let log = s.0.join("c.log");
    let pipe = LogPipe::spawn(Some(log.clone()), Some(&out), None)
        .await
        .expect("spawn");
    // A writer that never closes its end (a stuck shim).
    let mut w = std::fs::OpenOptions::new()
        .write(true)
        .open(&out)
        .expect("writer");
    w.write_all(b"kept\nunfinished").expect("write");
    let t = Instant::now();
    pipe.finish_within(Duration::from_millis(300)).await;
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    let e = parse(&std::fs::read(&log).expect("log"));
    assert_eq!(join(&e, "stdout"), b"kept\nunfinished");
    assert!(e.last().is_some_and(|x| x.partial));
    drop(w);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_writer_no_early_eof_and_quick_finish() {
    let s = Scratch::new("nowriter");
    let out = s.fifo("stdout");
    let log = s.0.join("c.log");
    let pipe = LogPipe::spawn(Some(log.clone()), Some(&out), None)
        .await
        .expect("spawn");
    // The writer comes late (the shim starts after the drain): its output still arrives.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let status = sh(r#"printf 'late\n' > "$1""#, &[&out]).await;
    assert!(status.success());
    // A second writer after the first closed: no EOF came in between.
    let status = sh(r#"printf 'later\n' > "$1""#, &[&out]).await;
    assert!(status.success());
    let t = Instant::now();
    pipe.finish().await;
    assert!(t.elapsed() < Duration::from_millis(500));
    assert_eq!(
        join(&parse(&std::fs::read(&log).expect("log")), "stdout"),
        b"late\nlater\n"
    );

    // Never any writer: finish returns at once, the log exists and is empty.
    let other = s.fifo("idle");
    let log2 = s.0.join("idle.log");
    let pipe = LogPipe::spawn(Some(log2.clone()), Some(&other), None)
        .await
        .expect("spawn");
    let t = Instant::now();
    pipe.finish().await;
    assert!(t.elapsed() < Duration::from_millis(500));
    assert_eq!(std::fs::read(&log2).expect("log"), b"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_log_path_output_is_drained_and_dropped() {
    let s = Scratch::new("nolog");
    let out = s.fifo("stdout");
    let pipe = LogPipe::spawn(None, Some(&out), None).await.expect("spawn");
    // 4 MiB is far more than a pipe holds: the writer only finishes if we drain.
    let status = tokio::time::timeout(
        Duration::from_secs(20),
        sh(r#"head -c 4194304 /dev/zero > "$1""#, &[&out]),
    )
    .await
    .expect("writer was not drained");
    assert!(status.success());
    pipe.reopen()
        .await
        .expect("reopen without a path is a no-op");
    pipe.finish().await;
    let names: Vec<_> = std::fs::read_dir(&s.0)
        .expect("dir")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("stdout")]);
}

#[tokio::test]
async fn spawn_errors_name_the_path() {
    let s = Scratch::new("errors");
    let missing = s.0.join("no/such/dir/c.log");
    let err = LogPipe::spawn(Some(missing.clone()), None, None)
        .await
        .expect_err("no dir");
    assert!(err.to_string().contains("no/such/dir"), "{err}");
    // A regular file is not a fifo.
    let plain = s.0.join("plain");
    std::fs::write(&plain, b"").expect("file");
    let err = LogPipe::spawn(None, Some(&plain), None)
        .await
        .expect_err("not a fifo");
    assert!(matches!(err, LogError::Fifo { .. }), "{err}");
}

/// Waits (up to 5 s) until the log file holds `want` as stdout.
async fn wait_for(log: &Path, want: &[u8]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(b) = std::fs::read(log) {
            if join(&parse(&b), "stdout") == want {
                return;
            }
        }
        assert!(Instant::now() < deadline, "log never held {want:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
