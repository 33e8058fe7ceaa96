//! Sessions over `tokio::io::duplex`: two of ours talking, and ours against a "raw" peer
//! driven frame by frame (standing in for Go's spdystream, which does no flow control).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};
use tokio::task::JoinHandle;
use tokio::time::timeout;

use super::*;
use crate::streaming::spdy::frame::{
    Data, Frame, Ping, RstStream, SynReply, SynStream, WindowUpdate, SETTINGS_INITIAL_WINDOW_SIZE,
};

const LIMIT: Duration = Duration::from_secs(20);

type DriverTask = JoinHandle<Result<(), SessionError>>;

fn pair(client: Config, server: Config) -> (Session, Session, DriverTask, DriverTask) {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let (c, cd) = Session::with_config(a, Role::Client, client);
    let (s, sd) = Session::with_config(b, Role::Server, server);
    (c, s, tokio::spawn(cd), tokio::spawn(sd))
}

fn default_pair() -> (Session, Session, DriverTask, DriverTask) {
    pair(Config::default(), Config::default())
}

/// Deterministic, non-periodic bytes (xorshift), so reordering or loss cannot go unseen.
fn pattern(seed: u32, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    match timeout(LIMIT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out: {what}"),
    }
}

async fn read_all<R: AsyncRead + Unpin>(r: &mut R) -> Vec<u8> {
    let mut out = Vec::new();
    within("read to EOF", r.read_to_end(&mut out))
        .await
        .expect("read to EOF");
    out
}

fn stream_error(e: &io::Error) -> Option<&StreamError> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<StreamError>())
}

async fn join_driver(task: DriverTask) -> Result<(), SessionError> {
    within("driver to finish", task).await.expect("driver task")
}

#[tokio::test]
async fn open_accept_reply_and_half_close_both_ways() {
    let (client, server, cd, sd) = default_pair();
    let mut c = client
        .open(Headers::new().with("StreamType", "stdin"), false)
        .expect("open");
    assert_eq!(c.id(), 1);
    let mut s = within("accept", server.accept()).await.expect("a stream");
    assert_eq!(s.id(), 1);
    assert_eq!(s.headers().get("streamtype"), Some("stdin"));
    s.reply(Headers::new().with("x", "y"), false)
        .expect("reply");
    assert_eq!(
        s.reply(Headers::new(), false),
        Err(StreamError::AlreadyReplied)
    );
    let reply = within("reply", c.wait_reply())
        .await
        .expect("reply headers");
    assert_eq!(reply.get("x"), Some("y"));

    // Client -> server, then the client half-closes; the server still answers.
    c.write_all(b"hello").await.expect("write");
    c.shutdown().await.expect("shutdown");
    assert_eq!(read_all(&mut s).await, b"hello");
    s.write_all(b"world")
        .await
        .expect("write after the peer's FIN");
    s.shutdown().await.expect("shutdown");
    assert_eq!(read_all(&mut c).await, b"world");
    let err = c.write_all(b"late").await.expect_err("write after our FIN");
    assert_eq!(stream_error(&err), Some(&StreamError::SendClosed));

    // A stream opened with FIN, replied with FIN: EOF both ways at once.
    let mut c2 = client.open(Headers::new(), true).expect("open");
    assert_eq!(c2.id(), 3);
    let mut s2 = within("accept", server.accept()).await.expect("a stream");
    assert_eq!(read_all(&mut s2).await, b"");
    s2.reply(Headers::new(), true).expect("reply");
    assert_eq!(read_all(&mut c2).await, b"");
    assert!(c2.write_all(b"x").await.is_err());

    drop((c, s, c2, s2, client, server));
    join_driver(cd).await.expect("client driver");
    join_driver(sd).await.expect("server driver");
}

#[tokio::test]
async fn many_concurrent_streams_echo() {
    let (client, server, cd, sd) = default_pair();
    let echo = tokio::spawn(async move {
        let mut tasks = Vec::new();
        while let Some(stream) = server.accept().await {
            tasks.push(tokio::spawn(async move {
                stream.reply(Headers::new(), false).expect("reply");
                let (mut r, mut w) = stream.into_split();
                tokio::io::copy(&mut r, &mut w).await.expect("echo");
                w.shutdown().await.expect("shutdown");
            }));
        }
        for t in tasks {
            t.await.expect("echo task");
        }
    });
    let mut clients = Vec::new();
    for i in 0..8u32 {
        let stream = client
            .open(Headers::new().with("n", &i.to_string()), false)
            .expect("open");
        clients.push(tokio::spawn(async move {
            let data = pattern(i + 1, 300_000 + i as usize * 1000);
            let (mut r, mut w) = stream.into_split();
            let sent = data.clone();
            let writer = tokio::spawn(async move {
                w.write_all(&sent).await.expect("write");
                w.shutdown().await.expect("shutdown");
                w
            });
            let got = read_all(&mut r).await;
            assert!(got == data, "stream {i}: echo differs");
            writer.await.expect("writer")
        }));
    }
    for c in clients {
        within("client stream", c).await.expect("client task");
    }
    drop(client);
    within("echo server", echo).await.expect("echo");
    join_driver(cd).await.expect("client driver");
    join_driver(sd).await.expect("server driver");
}

#[tokio::test]
async fn ten_megabytes_through_a_small_window_to_a_slow_reader() {
    const WINDOW: u32 = 16 * 1024;
    const TOTAL: usize = 10 * 1024 * 1024;
    let small = Config {
        recv_window: WINDOW,
        ..Config::default()
    };
    let (client, server, cd, sd) = pair(small.clone(), small);
    let mut c = client.open(Headers::new(), false).expect("open");
    let data = pattern(7, TOTAL);
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        c.write_all(&sent).await.expect("write");
        c.shutdown().await.expect("shutdown");
        c
    });
    let mut s = within("accept", server.accept()).await.expect("a stream");
    s.reply(Headers::new(), false).expect("reply");
    let mut got = Vec::with_capacity(TOTAL);
    let mut buf = vec![0u8; 4096];
    let mut reads = 0u32;
    loop {
        let n = within("read", s.read(&mut buf)).await.expect("read");
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        reads += 1;
        if reads % 32 == 31 {
            // The slow part: the writer must wait for us, not pile data up.
            tokio::time::sleep(Duration::from_millis(1)).await;
            let high = server.recv_high_water(s.id()).expect("stream state");
            assert!(high <= WINDOW as usize, "receiver buffered {high} bytes");
            assert!(client.out_data_bytes() <= Config::default().send_buffer);
        }
    }
    assert_eq!(got.len(), TOTAL);
    assert!(got == data, "bytes differ");
    let high = server.recv_high_water(s.id()).expect("stream state");
    assert!(high > 0 && high <= WINDOW as usize, "high water {high}");
    drop(within("writer", writer).await.expect("writer"));
    drop((s, client, server));
    join_driver(cd).await.expect("client driver");
    join_driver(sd).await.expect("server driver");
}

#[tokio::test]
async fn a_stream_nobody_reads_does_not_block_the_others() {
    const WINDOW: u32 = 16 * 1024;
    let small = Config {
        recv_window: WINDOW,
        ..Config::default()
    };
    let (client, server, cd, sd) = pair(small.clone(), small);
    let mut stuck = client
        .open(Headers::new().with("n", "a"), false)
        .expect("open");
    let mut flowing = client
        .open(Headers::new().with("n", "b"), false)
        .expect("open");
    let stuck_writer = tokio::spawn(async move {
        stuck.write_all(&pattern(1, 1 << 20)).await.expect("write");
        stuck.shutdown().await.expect("shutdown");
        stuck
    });
    let data = pattern(2, 1 << 20);
    let sent = data.clone();
    let flowing_writer = tokio::spawn(async move {
        flowing.write_all(&sent).await.expect("write");
        flowing.shutdown().await.expect("shutdown");
        flowing
    });
    let mut a = within("accept a", server.accept()).await.expect("stream a");
    let mut b = within("accept b", server.accept()).await.expect("stream b");
    assert_eq!(a.headers().get("n"), Some("a"));
    a.reply(Headers::new(), false).expect("reply");
    b.reply(Headers::new(), false).expect("reply");
    // All of b arrives while nobody reads a.
    assert!(read_all(&mut b).await == data);
    let high = server.recv_high_water(a.id()).expect("stream a");
    assert!(high <= WINDOW as usize, "unread stream buffered {high}");
    assert!(high > 0);
    // Now a drains too.
    assert!(read_all(&mut a).await == pattern(1, 1 << 20));
    drop(within("writer a", stuck_writer).await.expect("writer"));
    drop(within("writer b", flowing_writer).await.expect("writer"));
    drop((a, b, client, server));
    join_driver(cd).await.expect("client driver");
    join_driver(sd).await.expect("server driver");
}

#[tokio::test]
async fn resets_reach_readers_and_writers() {
    let (client, server, cd, sd) = default_pair();

    // The server resets: the client's read and then its write fail with the status.
    let mut c = client.open(Headers::new(), false).expect("open");
    let s = within("accept", server.accept()).await.expect("a stream");
    s.reset(RstStatus::Cancel);
    let mut buf = [0u8; 8];
    let err = within("read", c.read(&mut buf))
        .await
        .expect_err("read after reset");
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
    assert_eq!(
        stream_error(&err),
        Some(&StreamError::Reset {
            status: RstStatus::Cancel,
            by_peer: true
        })
    );
    assert!(c.write_all(b"x").await.is_err());
    assert!(c.wait_reply().await.is_err());

    // The client resets after writing: the server reads what came before, then the error.
    let mut c2 = client.open(Headers::new(), false).expect("open");
    let mut s2 = within("accept", server.accept()).await.expect("a stream");
    s2.reply(Headers::new(), false).expect("reply");
    c2.write_all(b"before").await.expect("write");
    c2.reset(RstStatus::InternalError);
    let mut got = vec![0u8; 6];
    within("read", s2.read_exact(&mut got))
        .await
        .expect("data sent before the reset");
    assert_eq!(got, b"before");
    let err = within("read", s2.read(&mut buf))
        .await
        .expect_err("then the reset");
    assert_eq!(
        stream_error(&err),
        Some(&StreamError::Reset {
            status: RstStatus::InternalError,
            by_peer: true
        })
    );
    // Our own side sees its local reset.
    let err = c2.read(&mut buf).await.expect_err("local reset");
    assert_eq!(
        stream_error(&err),
        Some(&StreamError::Reset {
            status: RstStatus::InternalError,
            by_peer: false
        })
    );
    assert!(!client.is_closed() && !server.is_closed());
    drop((c, s, c2, s2, client, server));
    join_driver(cd).await.expect("client driver");
    join_driver(sd).await.expect("server driver");
}

#[tokio::test]
async fn pings_are_answered_both_ways() {
    let (client, server, cd, sd) = default_pair();
    within("client ping", client.ping())
        .await
        .expect("client ping");
    within("server ping", server.ping())
        .await
        .expect("server ping");
    let (a, b) = tokio::join!(client.ping(), client.ping());
    a.expect("ping");
    b.expect("ping");
    drop((client, server));
    join_driver(cd).await.expect("client driver");
    join_driver(sd).await.expect("server driver");
}

#[tokio::test]
async fn goaway_stops_new_streams_and_ends_the_session_when_streams_finish() {
    let (client, server, cd, sd) = default_pair();
    let mut c = client.open(Headers::new(), false).expect("open");
    let mut s = within("accept", server.accept()).await.expect("a stream");
    s.reply(Headers::new(), false).expect("reply");
    server.goaway(GoAwayStatus::Ok);
    assert!(within("accept after goaway", server.accept())
        .await
        .is_none());
    // The client learns it as soon as the GOAWAY arrives.
    within("client to see GOAWAY", async {
        while !matches!(
            client.open(Headers::new(), false),
            Err(SessionError::GoingAway)
        ) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(within("client accept", client.accept()).await.is_none());
    // The open stream carries on, both ways.
    c.write_all(b"x").await.expect("write");
    c.shutdown().await.expect("shutdown");
    assert_eq!(read_all(&mut s).await, b"x");
    s.write_all(b"y").await.expect("write");
    s.shutdown().await.expect("shutdown");
    assert_eq!(read_all(&mut c).await, b"y");
    // With no stream left open, both drivers end although handles remain.
    join_driver(sd).await.expect("server driver");
    join_driver(cd).await.expect("client driver");
    assert!(client.is_closed() && server.is_closed());
    assert!(matches!(client.ping().await, Err(SessionError::Closed(_))));
}

#[tokio::test]
async fn a_closed_transport_ends_the_session_and_its_streams() {
    let (client, server, cd, sd) = default_pair();
    let mut c = client.open(Headers::new(), false).expect("open");
    let mut s = within("accept", server.accept()).await.expect("a stream");
    s.reply(Headers::new(), false).expect("reply");
    c.write_all(b"partial").await.expect("write");
    let mut got = vec![0u8; 7];
    within("read", s.read_exact(&mut got)).await.expect("read");
    // Kill the client's driver: its end of the transport goes away.
    cd.abort();
    assert!(cd.await.expect_err("aborted").is_cancelled());
    join_driver(sd)
        .await
        .expect("a peer hanging up is a clean end");
    let err = within("read", s.read(&mut got))
        .await
        .expect_err("no FIN came");
    assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
    assert!(server.accept().await.is_none());
    assert!(server.is_closed());
    // The client's handles see their session gone too.
    let err = c.read(&mut got).await.expect_err("driver gone");
    assert!(matches!(
        stream_error(&err),
        Some(StreamError::SessionClosed(_))
    ));
    assert!(matches!(
        client.open(Headers::new(), false),
        Err(SessionError::Closed(_))
    ));
}

#[tokio::test]
async fn dropping_every_handle_winds_both_sides_down() {
    let (client, server, cd, sd) = default_pair();
    let c = client.open(Headers::new(), false).expect("open");
    let s = within("accept", server.accept()).await.expect("a stream");
    // Only the client lets go: it says GOAWAY, resets its unfinished stream, and closes
    // the transport; the server's session ends with it while the server still holds
    // handles.
    drop((c, client));
    join_driver(cd).await.expect("client driver");
    join_driver(sd).await.expect("server driver");
    assert!(server.accept().await.is_none());
    drop((s, server));

    // And with nothing ever opened.
    let (client, server, cd, sd) = default_pair();
    drop((client, server));
    join_driver(cd).await.expect("client driver");
    join_driver(sd).await.expect("server driver");
}

// ------------------------------------------------------------------ raw peer tests

/// The writing side of a hand-driven client.
struct RawWriter {
    wr: WriteHalf<DuplexStream>,
    enc: FrameEncoder,
}

impl RawWriter {
    async fn send(&mut self, frame: Frame) {
        let mut buf = BytesMut::new();
        self.enc.encode(&frame, &mut buf).expect("encode");
        self.wr.write_all(&buf).await.expect("raw write");
    }

    async fn send_bytes(&mut self, bytes: &[u8]) {
        self.wr.write_all(bytes).await.expect("raw write");
    }
}

/// The reading side of a hand-driven client.
struct RawReader {
    rd: ReadHalf<DuplexStream>,
    dec: FrameDecoder,
    buf: BytesMut,
}

impl RawReader {
    /// The next frame; `None` at EOF.
    async fn recv(&mut self) -> Option<Frame> {
        loop {
            if let Some(f) = self.dec.decode(&mut self.buf).expect("valid frames") {
                return Some(f);
            }
            if self.rd.read_buf(&mut self.buf).await.expect("raw read") == 0 {
                return None;
            }
        }
    }

    async fn recv_within(&mut self, d: Duration) -> Option<Option<Frame>> {
        timeout(d, self.recv()).await.ok()
    }
}

fn raw_client(config: Config) -> (Session, DriverTask, RawReader, RawWriter) {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let (server, driver) = Session::with_config(b, Role::Server, config);
    let (rd, wr) = tokio::io::split(a);
    (
        server,
        tokio::spawn(driver),
        RawReader {
            rd,
            dec: FrameDecoder::new(1 << 24, 1 << 20),
            buf: BytesMut::new(),
        },
        RawWriter {
            wr,
            enc: FrameEncoder::new().expect("encoder"),
        },
    )
}

fn syn(stream_id: u32) -> Frame {
    Frame::SynStream(SynStream {
        stream_id,
        associated_stream_id: 0,
        priority: 0,
        slot: 0,
        fin: false,
        unidirectional: false,
        headers: Headers::new().with("streamtype", "stdout"),
    })
}

/// Reads DATA for `stream_id` until FIN, collecting the payload; other frames are
/// returned separately.
async fn collect_data(raw: &mut RawReader, stream_id: u32) -> (Vec<u8>, Vec<Frame>) {
    let mut data = Vec::new();
    let mut others = Vec::new();
    loop {
        match within("raw frame", raw.recv()).await {
            Some(Frame::Data(d)) if d.stream_id == stream_id => {
                data.extend_from_slice(&d.data);
                if d.fin {
                    return (data, others);
                }
            }
            Some(other) => others.push(other),
            None => panic!("EOF before FIN"),
        }
    }
}

#[tokio::test]
async fn the_server_stays_silent_until_the_client_speaks() {
    let (server, driver, mut raw, mut wr) = raw_client(Config::default());
    let pinger = server.clone();
    let ping = tokio::spawn(async move { pinger.ping().await });
    assert!(
        raw.recv_within(Duration::from_millis(200)).await.is_none(),
        "server wrote before the client's first frame"
    );
    wr.send(Frame::Ping(Ping { id: 1 })).await;
    // Its SETTINGS comes first, then the queued PING and the echo.
    match within("settings", raw.recv()).await {
        Some(Frame::Settings(s)) => {
            assert!(s
                .entries
                .iter()
                .any(|e| e.id == SETTINGS_INITIAL_WINDOW_SIZE && e.value == 65536));
        }
        other => panic!("expected SETTINGS, got {other:?}"),
    }
    let mut pings = Vec::new();
    for _ in 0..2 {
        match within("ping", raw.recv()).await {
            Some(Frame::Ping(p)) => pings.push(p.id),
            other => panic!("expected PING, got {other:?}"),
        }
    }
    pings.sort_unstable();
    assert_eq!(pings, vec![1, 2]);
    wr.send(Frame::Ping(Ping { id: 2 })).await;
    within("server ping", ping)
        .await
        .expect("task")
        .expect("answered");
    drop(server);
    join_driver(driver).await.expect("driver");
}

#[tokio::test]
async fn a_peer_without_flow_control_is_not_stalled_in_auto_mode() {
    let (server, driver, mut raw, mut wr) = raw_client(Config::default());
    // Like spdystream: no SETTINGS, no WINDOW_UPDATE, ever.
    wr.send(syn(1)).await;
    let mut s = within("accept", server.accept()).await.expect("a stream");
    let data = pattern(3, 1 << 20);
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        s.write_all(&sent).await.expect("write");
        s.shutdown().await.expect("shutdown");
        s
    });
    let (got, others) = collect_data(&mut raw, 1).await;
    assert!(got == data, "got {} bytes", got.len());
    assert!(matches!(others.first(), Some(Frame::Settings(_))));
    assert!(
        matches!(others.get(1), Some(Frame::SynReply(r)) if r.stream_id == 1),
        "SYN_REPLY precedes DATA: {others:?}"
    );
    drop(within("writer", writer).await.expect("writer"));
    drop(server);
    join_driver(driver).await.expect("driver");
}

#[tokio::test]
async fn strict_mode_waits_for_window_updates() {
    let strict = Config {
        flow_control: FlowControl::Strict,
        ..Config::default()
    };
    let (server, driver, mut raw, mut wr) = raw_client(strict);
    wr.send(syn(1)).await;
    let mut s = within("accept", server.accept()).await.expect("a stream");
    let data = pattern(4, 200_000);
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        s.write_all(&sent).await.expect("write");
        s.shutdown().await.expect("shutdown");
        s
    });
    // Exactly the initial 64 KiB window arrives, then nothing.
    let mut got = Vec::new();
    while got.len() < 65536 {
        match within("data", raw.recv()).await {
            Some(Frame::Data(d)) => got.extend_from_slice(&d.data),
            Some(_) => {}
            None => panic!("EOF"),
        }
    }
    assert_eq!(got.len(), 65536);
    match raw.recv_within(Duration::from_millis(200)).await {
        None => {}
        Some(f) => panic!("sent past the window: {f:?}"),
    }
    // Credit for the stream alone is not enough: the session window is spent too.
    wr.send(Frame::WindowUpdate(WindowUpdate {
        stream_id: 1,
        delta: 1 << 20,
    }))
    .await;
    assert!(raw.recv_within(Duration::from_millis(200)).await.is_none());
    wr.send(Frame::WindowUpdate(WindowUpdate {
        stream_id: 0,
        delta: 1 << 20,
    }))
    .await;
    let (rest, _) = collect_data(&mut raw, 1).await;
    got.extend_from_slice(&rest);
    assert!(got == data);
    drop(within("writer", writer).await.expect("writer"));
    drop(server);
    join_driver(driver).await.expect("driver");
}

#[tokio::test]
async fn a_peer_overrunning_the_window_is_paused_not_buffered() {
    const WINDOW: u32 = 64 * 1024;
    let (server, driver, mut raw, mut wr) = raw_client(Config::default());
    wr.send(syn(1)).await;
    let data = pattern(5, 1 << 20);
    let sent = data.clone();
    // Ignores our window: 1 MiB in 16 KiB frames, as fast as the transport takes it.
    let flood = tokio::spawn(async move {
        for chunk in sent.chunks(16 * 1024) {
            wr.send(Frame::Data(Data {
                stream_id: 1,
                fin: false,
                data: Bytes::copy_from_slice(chunk),
            }))
            .await;
        }
        wr.send(Frame::Data(Data {
            stream_id: 1,
            fin: true,
            data: Bytes::new(),
        }))
        .await;
        wr
    });
    // Keep the raw side's inbound drained so the server's writes never block.
    let drain = tokio::spawn(async move { while raw.recv().await.is_some() {} });
    let mut s = within("accept", server.accept()).await.expect("a stream");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut got = Vec::new();
    let mut buf = vec![0u8; 8192];
    loop {
        let n = within("read", s.read(&mut buf)).await.expect("read");
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        let high = server.recv_high_water(1).expect("stream");
        // At most the window plus the one frame that crossed it.
        assert!(high <= WINDOW as usize + 16 * 1024, "buffered {high}");
    }
    assert!(got == data);
    let wr = within("flood", flood).await.expect("flood");
    drop((s, wr, server));
    join_driver(driver).await.expect("driver");
    within("drain", drain).await.expect("drain");
}

#[tokio::test]
async fn protocol_violations_reset_streams_and_garbage_ends_the_session() {
    let (server, driver, mut raw, mut wr) = raw_client(Config::default());
    // A client opening an even stream, then an odd one twice.
    wr.send(syn(2)).await;
    wr.send(syn(1)).await;
    wr.send(syn(1)).await;
    // DATA for a stream that never existed.
    wr.send(Frame::Data(Data {
        stream_id: 9,
        fin: false,
        data: Bytes::from_static(b"?"),
    }))
    .await;
    let mut resets = Vec::new();
    while resets.len() < 3 {
        match within("frame", raw.recv()).await {
            Some(Frame::RstStream(RstStream { stream_id, status })) => {
                resets.push((stream_id, status))
            }
            Some(_) => {}
            None => panic!("EOF"),
        }
    }
    assert_eq!(
        resets,
        vec![
            (2, RstStatus::ProtocolError),
            (1, RstStatus::ProtocolError),
            (9, RstStatus::InvalidStream)
        ]
    );
    // Stream 1 itself was accepted once.
    let s = within("accept", server.accept()).await.expect("stream 1");
    assert_eq!(s.id(), 1);
    // A SPDY/2 control frame: GOAWAY PROTOCOL_ERROR, then the transport closes.
    wr.send_bytes(&[0x80, 0x02, 0x00, 0x01, 0, 0, 0, 0]).await;
    let mut saw_goaway = false;
    while let Some(f) = within("frame", raw.recv()).await {
        if let Frame::GoAway(g) = f {
            assert_eq!(g.status, GoAwayStatus::ProtocolError);
            assert_eq!(g.last_good_stream_id, 1);
            saw_goaway = true;
        }
    }
    assert!(saw_goaway);
    let res = join_driver(driver).await;
    assert!(
        matches!(
            res,
            Err(SessionError::Protocol(FrameError::UnsupportedVersion(2)))
        ),
        "{res:?}"
    );
    assert!(server.is_closed());
}

#[tokio::test]
async fn streams_nobody_accepts_are_refused() {
    let (server, driver, mut raw, mut wr) = raw_client(Config {
        max_peer_streams: 1,
        ..Config::default()
    });
    wr.send(syn(1)).await;
    wr.send(syn(3)).await;
    loop {
        match within("frame", raw.recv()).await {
            Some(Frame::RstStream(r)) => {
                assert_eq!((r.stream_id, r.status), (3, RstStatus::RefusedStream));
                break;
            }
            Some(_) => {}
            None => panic!("EOF"),
        }
    }
    // Dropping the only Session handle refuses the stream still waiting, and with no
    // handle left the session says GOAWAY and closes.
    drop(server);
    let mut saw = (false, false);
    while let Some(f) = within("frame", raw.recv()).await {
        match f {
            Frame::RstStream(r) if r.stream_id == 1 => {
                assert_eq!(r.status, RstStatus::RefusedStream);
                saw.0 = true;
            }
            Frame::GoAway(g) => {
                assert_eq!(g.status, GoAwayStatus::Ok);
                saw.1 = true;
            }
            _ => {}
        }
    }
    assert_eq!(saw, (true, true));
    join_driver(driver).await.expect("driver");
}

/// A transport whose writes start failing (the peer hung up) while its reads still hold
/// what the peer sent before.
struct HungUpWrites {
    inner: DuplexStream,
    failed: Arc<std::sync::atomic::AtomicBool>,
}

impl AsyncRead for HungUpWrites {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for HungUpWrites {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.failed.load(std::sync::atomic::Ordering::SeqCst) {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[tokio::test]
async fn frames_sent_before_the_peer_hung_up_are_read_after_a_write_fails() {
    // Go's exec server writes the status, resets its streams and closes at once; our
    // next write (a WINDOW_UPDATE, more stdin) then fails with EPIPE while its last
    // frames are still unread. Those must reach the streams.
    let (a, b) = tokio::io::duplex(64 * 1024);
    let failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let transport = HungUpWrites {
        inner: a,
        failed: failed.clone(),
    };
    let (client, driver) = Session::with_config(transport, Role::Client, Config::default());
    let driver = tokio::spawn(driver);
    let (rd, wr) = tokio::io::split(b);
    let mut raw = RawReader {
        rd,
        dec: FrameDecoder::new(1 << 24, 1 << 20),
        buf: BytesMut::new(),
    };
    let mut raw_wr = RawWriter {
        wr,
        enc: FrameEncoder::new().expect("encoder"),
    };
    let mut status = client
        .open(Headers::new().with("streamtype", "error"), false)
        .expect("open");
    let mut stdin = client
        .open(Headers::new().with("streamtype", "stdin"), false)
        .expect("open");
    let mut replied = 0;
    while replied < 2 {
        if let Some(Frame::SynStream(s)) = within("SYN_STREAM", raw.recv()).await {
            raw_wr
                .send(Frame::SynReply(SynReply {
                    stream_id: s.stream_id,
                    fin: false,
                    headers: Headers::new(),
                }))
                .await;
            replied += 1;
        }
    }
    within("reply", status.wait_reply()).await.expect("reply");
    within("reply", stdin.wait_reply()).await.expect("reply");

    failed.store(true, std::sync::atomic::Ordering::SeqCst);
    // Writes go on until the session notices that the transport no longer takes them.
    within("a write to fail", async {
        loop {
            if stdin.write_all(b"more input").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    raw_wr
        .send(Frame::Data(Data {
            stream_id: status.id(),
            fin: true,
            data: Bytes::from_static(b"exit 7"),
        }))
        .await;
    raw_wr
        .send(Frame::RstStream(RstStream {
            stream_id: stdin.id(),
            status: RstStatus::Cancel,
        }))
        .await;
    drop((raw, raw_wr));
    assert_eq!(read_all(&mut status).await, b"exit 7");
    let mut rest = Vec::new();
    let err = within("stdin read", stdin.read_to_end(&mut rest))
        .await
        .expect_err("reset");
    assert!(
        matches!(
            stream_error(&err),
            Some(StreamError::Reset { by_peer: true, .. })
        ),
        "{err}"
    );
    assert!(
        join_driver(driver).await.is_err(),
        "the write failure is reported"
    );
}
