//! An async SPDY/3.1 session over any tokio byte stream, in either role.
//!
//! [`Session::new`] returns a cloneable [`Session`] handle and a [`Driver`] future that
//! owns the transport; spawn the driver (`tokio::spawn(driver)`). The driver reads frames
//! and applies them to the shared state, and writes the frames that handles queue. Streams
//! are [`Stream`]s: `AsyncRead` for the peer's DATA, `AsyncWrite` for ours.
//!
//! # Flow control, and peers that do not do it
//!
//! SPDY/3.1 has a send window per stream (64 KiB initially, changed by the peer's SETTINGS
//! INITIAL_WINDOW_SIZE, grown by WINDOW_UPDATE) and one per session (WINDOW_UPDATE on
//! stream 0). This session sends WINDOW_UPDATE as the application reads, so a slow reader
//! holds back only its own stream, and never buffers more than its window per stream.
//!
//! But every Kubernetes peer (kubectl, crictl, the kubelet) uses Go's `moby/spdystream`,
//! which implements no flow control at all: it ignores WINDOW_UPDATE and SETTINGS and never
//! sends either; it relies on TCP back-pressure. A sender that waited for window credit
//! from it would stall after 64 KiB. Hence [`FlowControl::Auto`] (the default): honour the
//! peer's windows once it has shown it keeps them (it sent SETTINGS INITIAL_WINDOW_SIZE or
//! a WINDOW_UPDATE; this session sends SETTINGS first thing, so two of these sessions
//! always use windows), otherwise send as spdystream does. On the receiving side, a peer
//! that overruns our window makes the driver stop reading the transport until the
//! application drains that stream: memory stays bounded, and the peer feels TCP
//! back-pressure exactly as it would from spdystream. With such a peer, a stream nobody
//! reads can therefore hold up the others, as it would between two spdystreams.
//!
//! # Other interoperability choices (all from how spdystream behaves)
//!
//! * A server writes nothing until the client's first frame has arrived: the Go client
//!   reads the HTTP 101 through a `bufio.Reader` and would lose bytes sent right after it.
//! * DATA (and FIN) on a stream waits for its SYN_REPLY: spdystream drops DATA on streams
//!   not yet replied. So [`Stream`] writes on a stream we opened wait for the peer's
//!   SYN_REPLY, and the first write on a peer's stream sends an empty SYN_REPLY if the
//!   application has not called [`Stream::reply`].
//! * Header names are lower-cased and multiple values joined by NUL (Go rejects
//!   duplicates and upper case names with a connection-fatal error).

#[cfg(test)]
mod kubectl_interop;
mod state;
#[cfg(test)]
mod tests;

use std::future::{poll_fn, Future};
use std::io;
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::frame::{
    FrameDecoder, FrameEncoder, FrameError, GoAwayStatus, RstStatus, DEFAULT_MAX_FRAME_PAYLOAD,
    DEFAULT_MAX_HEADER_BLOCK, MAX_PAYLOAD_LEN,
};
use super::headers::{HeaderError, Headers};
use state::State;

/// Which end of the connection this session is: it decides stream id parity (the client
/// opens odd streams, the server even ones) and ping id parity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The side that made the HTTP request (kubectl, crictl).
    Client,
    /// The side that answered 101 Switching Protocols (crius).
    Server,
}

/// How this session treats the peer's flow control windows when sending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowControl {
    /// Honour windows once the peer has shown it keeps them; see the module docs.
    Auto,
    /// Always honour windows, as the spec says (a peer that never grants credit stalls).
    Strict,
}

/// Session tunables. The defaults suit the Kubernetes stream protocols.
#[derive(Debug, Clone)]
pub struct Config {
    /// Per-stream receive window we advertise (SETTINGS INITIAL_WINDOW_SIZE), and the most
    /// a stream buffers before the reader pushes back. Default 64 KiB, the spec's default.
    pub recv_window: u32,
    /// See [`FlowControl`]. Default [`FlowControl::Auto`].
    pub flow_control: FlowControl,
    /// Largest frame payload accepted from the peer. Default 1 MiB.
    pub max_frame_payload: usize,
    /// Largest decompressed header block accepted. Default 256 KiB.
    pub max_header_block: usize,
    /// Largest DATA payload we send per frame. Default 16 KiB: small enough that streams
    /// interleave, large enough that the 8-byte header does not matter.
    pub max_data_frame: usize,
    /// DATA bytes queued for the transport (all streams) before writers wait. Default
    /// 256 KiB: bounds memory when the peer reads slowly and ignores windows.
    pub send_buffer: usize,
    /// Peer-initiated streams open at once before new ones are refused. Default 256.
    pub max_peer_streams: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            recv_window: state::DEFAULT_WINDOW as u32,
            flow_control: FlowControl::Auto,
            max_frame_payload: DEFAULT_MAX_FRAME_PAYLOAD,
            max_header_block: DEFAULT_MAX_HEADER_BLOCK,
            max_data_frame: 16 * 1024,
            send_buffer: 256 * 1024,
            max_peer_streams: 256,
        }
    }
}

impl Config {
    /// Clamps every field into what the protocol and the implementation can use.
    fn sanitized(mut self) -> Config {
        self.recv_window = self.recv_window.clamp(1, 0x7fff_ffff);
        self.max_frame_payload = self.max_frame_payload.clamp(1, MAX_PAYLOAD_LEN);
        self.max_header_block = self.max_header_block.max(4);
        self.max_data_frame = self.max_data_frame.clamp(1, MAX_PAYLOAD_LEN);
        self.send_buffer = self.send_buffer.max(1);
        self
    }
}

/// Session-level failures: of the transport, of the protocol, or of a request made to a
/// session that can no longer honour it.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Reading or writing the transport failed.
    #[error("SPDY transport: {0}")]
    Io(#[from] io::Error),
    /// The peer sent bytes that are not valid SPDY/3 (we answered GOAWAY PROTOCOL_ERROR).
    #[error("SPDY protocol error: {0}")]
    Protocol(#[from] FrameError),
    /// The transport closed in the middle of a frame.
    #[error("SPDY transport closed in the middle of a frame")]
    TruncatedFrame,
    /// The session has ended.
    #[error("SPDY session closed: {0}")]
    Closed(String),
    /// GOAWAY was sent or received: no new streams.
    #[error("SPDY session is going away: no new streams")]
    GoingAway,
    /// All 2^30 stream ids of our parity are used.
    #[error("SPDY stream ids exhausted")]
    StreamIdsExhausted,
    /// Headers SPDY cannot carry.
    #[error("invalid headers: {0}")]
    InvalidHeaders(HeaderError),
}

/// Stream-level failures. Reads and writes report them inside an [`io::Error`] (get them
/// back with `err.get_ref()` and `downcast_ref::<StreamError>()`).
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum StreamError {
    /// RST_STREAM, sent or received.
    #[error("SPDY stream reset by {} with {status:?}", who(.by_peer))]
    Reset {
        /// The status code.
        status: RstStatus,
        /// The peer reset it (rather than this side).
        by_peer: bool,
    },
    /// The session ended before the stream finished.
    #[error("SPDY session closed: {0}")]
    SessionClosed(String),
    /// `reply` on a stream that was already replied to.
    #[error("SPDY stream already replied to")]
    AlreadyReplied,
    /// `reply` on a stream we opened.
    #[error("only streams the peer opened are replied to")]
    NotIncoming,
    /// `wait_reply` on a stream the peer opened.
    #[error("only streams we opened receive a reply")]
    NotLocal,
    /// Writing after FIN (shutdown, `reply(.., fin: true)`, or a UNIDIRECTIONAL stream).
    #[error("SPDY stream is closed for sending")]
    SendClosed,
    /// Headers SPDY cannot carry.
    #[error("invalid headers: {0}")]
    InvalidHeaders(HeaderError),
}

fn who(by_peer: &bool) -> &'static str {
    if *by_peer {
        "the peer"
    } else {
        "us"
    }
}

impl StreamError {
    fn into_io(self) -> io::Error {
        let kind = match &self {
            StreamError::Reset { .. } => io::ErrorKind::ConnectionReset,
            StreamError::SessionClosed(_) => io::ErrorKind::ConnectionAborted,
            StreamError::SendClosed => io::ErrorKind::BrokenPipe,
            _ => io::ErrorKind::InvalidInput,
        };
        io::Error::new(kind, self)
    }
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
}

impl Shared {
    /// Locks the state. A panic while locked cannot leave it half-updated in a way that
    /// matters more than stopping would, so poisoning is ignored.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Handle to a session: opens and accepts streams, pings, says GOAWAY. Cloneable; the
/// session shuts down (GOAWAY, transport closed) once every `Session` and [`Stream`]
/// handle is gone.
#[derive(Debug)]
pub struct Session {
    shared: Arc<Shared>,
}

/// The future that runs a session: spawn it. It resolves when the session is over: `Ok`
/// when the transport closed or the session wound down (every handle dropped, or GOAWAY
/// with no stream left open), `Err` on a transport or protocol error. Dropping it ends the
/// session (handles then see it closed).
pub struct Driver {
    fut: Pin<Box<dyn Future<Output = Result<(), SessionError>> + Send>>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver").finish_non_exhaustive()
    }
}

impl Future for Driver {
    type Output = Result<(), SessionError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.fut.as_mut().poll(cx)
    }
}

/// Marks the session closed however the driver ends, including by being dropped.
struct CloseGuard(Arc<Shared>);

impl Drop for CloseGuard {
    fn drop(&mut self) {
        self.0.lock().close("session driver stopped".to_string());
    }
}

impl Session {
    /// A session with the default [`Config`] over `io`, an already upgraded connection.
    pub fn new<T>(io: T, role: Role) -> (Session, Driver)
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        Session::with_config(io, role, Config::default())
    }

    /// A session with `config`.
    pub fn with_config<T>(io: T, role: Role, config: Config) -> (Session, Driver)
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let config = config.sanitized();
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new(role, config.clone())),
        });
        let guard = CloseGuard(shared.clone());
        let fut = drive(shared.clone(), io, config, guard);
        (Session { shared }, Driver { fut: Box::pin(fut) })
    }

    /// The next stream the peer opened, with its SYN_STREAM headers in
    /// [`Stream::headers`]. `None` once no more can come: the session closed, or GOAWAY
    /// was sent or received (streams that arrived before are still returned first).
    pub async fn accept(&self) -> Option<Stream> {
        let (id, headers) = poll_fn(|cx| self.shared.lock().poll_accept(cx)).await?;
        Some(Stream::new(self.shared.clone(), id, headers))
    }

    /// Opens a stream: queues its SYN_STREAM and returns at once, without waiting for the
    /// SYN_REPLY (use [`Stream::wait_reply`] for that; writes wait for it by themselves).
    /// `fin`: we will send nothing on it.
    pub fn open(&self, headers: Headers, fin: bool) -> Result<Stream, SessionError> {
        let id = self.shared.lock().open(headers, fin)?;
        Ok(Stream::new(self.shared.clone(), id, Headers::new()))
    }

    /// Sends a PING and waits for its echo: the round-trip time.
    pub async fn ping(&self) -> Result<Duration, SessionError> {
        let start = Instant::now();
        let rx = self.shared.lock().start_ping()?;
        rx.await.map_err(|_| {
            SessionError::Closed("session ended before the PING was answered".to_string())
        })?;
        Ok(start.elapsed())
    }

    /// Sends GOAWAY: no new streams either way. Streams already open continue; once all
    /// are finished the driver closes the transport.
    pub fn goaway(&self, status: GoAwayStatus) {
        self.shared.lock().send_goaway(status);
    }

    /// The session has ended (transport closed, protocol error, or wound down).
    pub fn is_closed(&self) -> bool {
        self.shared.lock().is_closed()
    }

    #[cfg(test)]
    fn recv_high_water(&self, id: u32) -> Option<usize> {
        self.shared.lock().recv_high_water(id)
    }

    #[cfg(test)]
    fn out_data_bytes(&self) -> usize {
        self.shared.lock().out_data_bytes()
    }
}

impl Clone for Session {
    fn clone(&self) -> Session {
        self.shared.lock().add_session_handle();
        Session {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.shared.lock().release_session_handle();
    }
}

/// One SPDY stream: read the peer's DATA, write ours. Split it with
/// [`Stream::into_split`] to read and write from different tasks.
///
/// Dropping every half of a stream that is not finished both ways (our FIN sent and the
/// peer's received) resets it with CANCEL; finish with `shutdown()` to end cleanly.
/// `poll_flush` is immediate: writes are queued to the session's writer in order.
#[derive(Debug)]
pub struct Stream {
    headers: Headers,
    recv: RecvStream,
    send: SendStream,
}

/// The reading half of a [`Stream`]. Dropping it discards unread and future DATA of the
/// stream (and keeps granting the peer window for it).
#[derive(Debug)]
pub struct RecvStream {
    shared: Arc<Shared>,
    id: u32,
}

/// The writing half of a [`Stream`].
#[derive(Debug)]
pub struct SendStream {
    shared: Arc<Shared>,
    id: u32,
}

impl Stream {
    fn new(shared: Arc<Shared>, id: u32, headers: Headers) -> Stream {
        Stream {
            headers,
            recv: RecvStream {
                shared: shared.clone(),
                id,
            },
            send: SendStream { shared, id },
        }
    }

    /// The stream id.
    pub fn id(&self) -> u32 {
        self.send.id
    }

    /// The SYN_STREAM headers of a stream the peer opened (empty for ours).
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// See [`SendStream::reply`].
    pub fn reply(&self, headers: Headers, fin: bool) -> Result<(), StreamError> {
        self.send.reply(headers, fin)
    }

    /// See [`SendStream::wait_reply`].
    pub async fn wait_reply(&self) -> Result<Headers, StreamError> {
        self.send.wait_reply().await
    }

    /// Resets the stream (RST_STREAM with `status`): both directions end, reads and writes
    /// fail from now on, unread data is dropped.
    pub fn reset(&self, status: RstStatus) {
        self.send.reset(status);
    }

    /// The two halves, usable from different tasks.
    pub fn into_split(self) -> (RecvStream, SendStream) {
        (self.recv, self.send)
    }
}

impl RecvStream {
    /// The stream id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// See [`Stream::reset`].
    pub fn reset(&self, status: RstStatus) {
        self.shared.lock().reset(self.id, status);
    }
}

impl SendStream {
    /// The stream id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Accepts a stream the peer opened (SYN_REPLY). `fin`: we will send nothing on it.
    /// Optional: the first write (or shutdown) replies with no headers by itself.
    pub fn reply(&self, headers: Headers, fin: bool) -> Result<(), StreamError> {
        self.shared.lock().reply(self.id, headers, fin)
    }

    /// For a stream we opened: waits for the peer's SYN_REPLY and returns its headers.
    pub async fn wait_reply(&self) -> Result<Headers, StreamError> {
        poll_fn(|cx| self.shared.lock().poll_reply(self.id, cx)).await
    }

    /// See [`Stream::reset`].
    pub fn reset(&self, status: RstStatus) {
        self.shared.lock().reset(self.id, status);
    }
}

impl Drop for RecvStream {
    fn drop(&mut self) {
        self.shared.lock().release_recv(self.id);
    }
}

impl Drop for SendStream {
    fn drop(&mut self) {
        self.shared.lock().release_send(self.id);
    }
}

impl AsyncRead for RecvStream {
    /// The peer's DATA; EOF after its FIN. Fails after a reset (the peer's, once data that
    /// arrived before it has been read) or if the session ends before the FIN.
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.shared
            .lock()
            .poll_read(self.id, cx, buf)
            .map_err(StreamError::into_io)
    }
}

impl AsyncWrite for SendStream {
    /// Queues up to one DATA frame's worth of `buf` once the stream's (and session's)
    /// send window and the session's send buffer allow.
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.shared
            .lock()
            .poll_write(self.id, cx, buf)
            .map_err(StreamError::into_io)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// Half-closes: queues FIN after everything written before.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.shared
            .lock()
            .poll_shutdown(self.id, cx)
            .map_err(StreamError::into_io)
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.recv).poll_read(cx, buf)
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.send).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.send).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.send).poll_shutdown(cx)
    }
}

/// How long the reader goes on after the transport failed for writing.
const READ_AFTER_WRITE_FAILURE: std::time::Duration = std::time::Duration::from_secs(5);

/// Bytes asked of the transport per read.
const READ_CHUNK: usize = 32 * 1024;

async fn drive<T>(
    shared: Arc<Shared>,
    io: T,
    config: Config,
    guard: CloseGuard,
) -> Result<(), SessionError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let _guard = guard;
    let (rd, wr) = tokio::io::split(io);
    let mut reader = pin!(read_loop(&shared, rd, &config));
    let mut writer = pin!(write_loop(&shared, wr));
    let first = poll_fn(|cx| {
        if let Poll::Ready(res) = reader.as_mut().poll(cx) {
            return Poll::Ready(Ended::Reader(res));
        }
        writer.as_mut().poll(cx).map(Ended::Writer)
    })
    .await;
    match first {
        Ended::Reader(res) => {
            {
                let mut st = shared.lock();
                let reason = match &res {
                    Ok(()) => "transport closed by the peer".to_string(),
                    Err(e) => {
                        if matches!(e, SessionError::Protocol(_)) {
                            // Tell the peer why before hanging up.
                            st.send_goaway(GoAwayStatus::ProtocolError);
                        }
                        e.to_string()
                    }
                };
                st.close(reason);
            }
            // Flush what is queued (GOAWAY included), then shut the transport down. After a
            // clean EOF the peer is gone: failing to write to it is no news.
            let flushed = writer.await;
            match res {
                Ok(()) => Ok(()),
                Err(e) => {
                    drop(flushed);
                    Err(e)
                }
            }
        }
        Ended::Writer(Ok(())) => {
            shared.lock().close("session finished".to_string());
            Ok(())
        }
        Ended::Writer(Err(e)) => {
            // A peer that hangs up right after its last frames (Go's server writes an
            // exec's status, resets its streams and closes) makes our next write fail
            // while those frames still wait to be read: read them, so that each stream
            // ends as the peer ended it, before the session closes.
            let reason = e.to_string();
            shared.lock().writer_failed(reason.clone());
            let _ = tokio::time::timeout(READ_AFTER_WRITE_FAILURE, reader).await;
            shared.lock().close(reason);
            Err(e)
        }
    }
}

/// Which half of the driver finished first.
enum Ended {
    Reader(Result<(), SessionError>),
    Writer(Result<(), SessionError>),
}

async fn read_loop<R>(shared: &Shared, mut rd: R, config: &Config) -> Result<(), SessionError>
where
    R: AsyncRead + Unpin,
{
    let mut decoder = FrameDecoder::new(config.max_frame_payload, config.max_header_block);
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    loop {
        while let Some(frame) = decoder.decode(&mut buf)? {
            let pause = shared.lock().on_frame(frame);
            if pause {
                poll_fn(|cx| shared.lock().poll_resume_reading(cx)).await;
            }
        }
        if buf.capacity() - buf.len() < READ_CHUNK / 2 {
            buf.reserve(READ_CHUNK);
        }
        if rd.read_buf(&mut buf).await? == 0 {
            return if buf.is_empty() {
                Ok(())
            } else {
                Err(SessionError::TruncatedFrame)
            };
        }
    }
}

async fn write_loop<W>(shared: &Shared, mut wr: W) -> Result<(), SessionError>
where
    W: AsyncWrite + Unpin,
{
    let mut encoder = FrameEncoder::new()?;
    let mut buf = BytesMut::new();
    loop {
        let Some(batch) = poll_fn(|cx| shared.lock().poll_batch(cx)).await else {
            // Best effort: the peer may already be gone.
            let _ = wr.shutdown().await;
            return Ok(());
        };
        buf.clear();
        for frame in &batch {
            encoder.encode(frame, &mut buf)?;
        }
        let written = async {
            wr.write_all(&buf).await?;
            wr.flush().await
        }
        .await;
        if let Err(e) = written {
            // Both ends hanging up at once (GOAWAY crossing the peer's close) is a clean
            // end, not a failure.
            if shared.lock().winding_down() {
                return Ok(());
            }
            return Err(e.into());
        }
    }
}
