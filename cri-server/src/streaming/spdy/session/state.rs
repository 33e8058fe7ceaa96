//! The state one session shares between its driver and its handles.
//!
//! One `std::sync::Mutex` guards everything: critical sections are short (no I/O, no
//! await under the lock), and a single lock makes the cross-cutting rules (windows,
//! queue bounds, shutdown) easy to keep consistent. Tasks park by leaving a `Waker` in
//! the state; whoever changes the condition they wait for wakes them.

use std::collections::{HashMap, VecDeque};
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes};
use tokio::io::ReadBuf;
use tokio::sync::oneshot;

use super::{Config, FlowControl, Role, SessionError, StreamError};
use crate::streaming::spdy::frame::{
    Data, Frame, GoAway, GoAwayStatus, Ping, RstStatus, RstStream, Setting, Settings, SynReply,
    SynStream, WindowUpdate, MAX_STREAM_ID, SETTINGS_INITIAL_WINDOW_SIZE,
    SETTINGS_MAX_CONCURRENT_STREAMS,
};
use crate::streaming::spdy::headers::Headers;

/// Initial window of every stream and of the session, until SETTINGS / WINDOW_UPDATE say
/// otherwise (SPDY/3.1).
pub(super) const DEFAULT_WINDOW: i64 = 64 * 1024;
/// Largest window the protocol allows; growing past it is a flow control error.
const MAX_WINDOW: i64 = 0x7fff_ffff;
/// The session receive window is credited back in steps of this many bytes.
const SESSION_CREDIT_STEP: u32 = 32 * 1024;
/// Frames queued for the writer beyond which the reader stops reading: bounds what a peer
/// can make us queue by sending PINGs (or data to refuse) while not reading our replies.
pub(super) const MAX_QUEUED_FRAMES: usize = 1024;
/// Frames the writer takes per batch (one write syscall per batch).
const BATCH_FRAMES: usize = 64;

/// A reset: by whom, with which status.
#[derive(Debug, Clone, Copy)]
struct Reset {
    status: RstStatus,
    by_peer: bool,
}

impl Reset {
    fn error(self) -> StreamError {
        StreamError::Reset {
            status: self.status,
            by_peer: self.by_peer,
        }
    }
}

#[derive(Debug)]
struct StreamState {
    /// Opened by us (SYN_STREAM sent) rather than by the peer.
    local: bool,
    /// Handed to the application (always true for local streams).
    accepted: bool,
    /// The SYN_STREAM headers, until `accept` takes them.
    syn_headers: Option<Headers>,
    /// A `RecvStream` (or the `Stream` holding one) is alive.
    recv_handle: bool,
    /// A `SendStream` (or the `Stream` holding one) is alive.
    send_handle: bool,

    /// Received DATA not yet read by the application.
    buf: VecDeque<Bytes>,
    /// Bytes in `buf`.
    buffered: usize,
    /// Most bytes ever in `buf` (tests check it stays within the window).
    high_water: usize,
    /// The peer sent FIN.
    recv_fin: bool,
    /// Bytes read by the application (or discarded) not yet credited by WINDOW_UPDATE.
    recv_unacked: u32,
    read_waker: Option<Waker>,

    /// What the peer still lets us send on this stream.
    send_window: i64,
    /// We sent (queued) FIN, or may never send (UNIDIRECTIONAL from the peer).
    send_fin: bool,
    /// Local stream: SYN_REPLY received. Peer's stream: SYN_REPLY sent.
    replied: bool,
    /// Local stream: the SYN_REPLY's headers.
    reply_headers: Option<Headers>,
    write_waker: Option<Waker>,
    reply_waker: Option<Waker>,

    reset: Option<Reset>,
}

impl StreamState {
    fn new(local: bool, send_window: i64) -> StreamState {
        StreamState {
            local,
            accepted: local,
            syn_headers: None,
            recv_handle: local,
            send_handle: local,
            buf: VecDeque::new(),
            buffered: 0,
            high_water: 0,
            recv_fin: false,
            recv_unacked: 0,
            read_waker: None,
            send_window,
            send_fin: false,
            replied: false,
            reply_headers: None,
            write_waker: None,
            reply_waker: None,
            reset: None,
        }
    }

    /// Nothing more will travel in either direction.
    fn is_closed(&self) -> bool {
        self.reset.is_some() || (self.recv_fin && self.send_fin)
    }

    fn wake_all(&mut self) {
        for w in [
            self.read_waker.take(),
            self.write_waker.take(),
            self.reply_waker.take(),
        ]
        .into_iter()
        .flatten()
        {
            w.wake();
        }
    }

    fn clear_buffer(&mut self) {
        self.buf.clear();
        self.buffered = 0;
    }
}

/// Everything the driver and the handles share.
#[derive(Debug)]
pub(super) struct State {
    role: Role,
    pub(super) config: Config,
    streams: HashMap<u32, StreamState>,
    next_local_id: u32,
    /// Highest stream id the peer opened (and we did not refuse as malformed).
    last_peer_id: u32,
    accept_queue: VecDeque<u32>,
    accept_wakers: Vec<Waker>,
    /// Live `Session` handles.
    sessions: usize,

    /// Frames for the writer, in order.
    out: VecDeque<Frame>,
    /// Why the transport can no longer be written (the peer hung up, say). The session
    /// still reads what the peer sent before; nothing more is sent.
    write_failed: Option<String>,
    /// DATA payload bytes in `out`.
    out_data_bytes: usize,
    writer_waker: Option<Waker>,
    /// Stream writers waiting for room in `out`.
    space_wakers: Vec<Waker>,
    /// The reader, parked because a stream buffer or `out` is over its bound.
    reader_waker: Option<Waker>,
    /// Stream whose buffer made the reader pause.
    paused_on: Option<u32>,
    /// A frame has arrived from the peer (the server writes nothing before; see
    /// `poll_batch`).
    peer_spoke: bool,

    /// The peer's SETTINGS_INITIAL_WINDOW_SIZE: each new stream's send window.
    peer_initial_window: i64,
    session_send_window: i64,
    session_recv_unacked: u32,
    /// The peer has shown that it does flow control (sent SETTINGS INITIAL_WINDOW_SIZE or
    /// a WINDOW_UPDATE).
    peer_flow_control: bool,

    goaway_sent: bool,
    goaway_received: bool,
    /// Why the session ended, once it has.
    closed: Option<String>,

    next_ping_id: u32,
    pings: HashMap<u32, oneshot::Sender<()>>,
}

impl State {
    pub(super) fn new(role: Role, config: Config) -> State {
        let (next_local_id, next_ping_id) = match role {
            Role::Client => (1, 1),
            Role::Server => (2, 2),
        };
        let mut state = State {
            role,
            streams: HashMap::new(),
            next_local_id,
            last_peer_id: 0,
            accept_queue: VecDeque::new(),
            accept_wakers: Vec::new(),
            sessions: 1,
            out: VecDeque::new(),
            out_data_bytes: 0,
            write_failed: None,
            writer_waker: None,
            space_wakers: Vec::new(),
            reader_waker: None,
            paused_on: None,
            peer_spoke: false,
            peer_initial_window: DEFAULT_WINDOW,
            session_send_window: DEFAULT_WINDOW,
            session_recv_unacked: 0,
            peer_flow_control: false,
            goaway_sent: false,
            goaway_received: false,
            closed: None,
            next_ping_id,
            pings: HashMap::new(),
            config,
        };
        // Our receive window, and the signal that we do flow control (which makes a peer
        // running this code in Auto mode honour windows from the start).
        let max_streams = u32::try_from(state.config.max_peer_streams).unwrap_or(u32::MAX);
        state.queue(Frame::Settings(Settings {
            clear: false,
            entries: vec![
                Setting {
                    flags: 0,
                    id: SETTINGS_INITIAL_WINDOW_SIZE,
                    value: state.config.recv_window,
                },
                Setting {
                    flags: 0,
                    id: SETTINGS_MAX_CONCURRENT_STREAMS,
                    value: max_streams,
                },
            ],
        }));
        state
    }

    fn queue(&mut self, frame: Frame) {
        if self.write_failed.is_some() {
            return;
        }
        if let Frame::Data(d) = &frame {
            self.out_data_bytes += d.data.len();
        }
        self.out.push_back(frame);
        if let Some(w) = self.writer_waker.take() {
            w.wake();
        }
    }

    fn rst(&mut self, stream_id: u32, status: RstStatus) {
        self.queue(Frame::RstStream(RstStream { stream_id, status }));
    }

    fn recv_limit(&self) -> usize {
        self.config.recv_window as usize
    }

    fn enforce_windows(&self) -> bool {
        self.config.flow_control == FlowControl::Strict || self.peer_flow_control
    }

    /// Stream and ping ids carry their initiator in their parity: odd for the client,
    /// even for the server.
    fn is_peer_id(&self, id: u32) -> bool {
        let odd = id % 2 == 1;
        match self.role {
            Role::Server => odd,
            Role::Client => !odd,
        }
    }

    fn closed_error(&self) -> StreamError {
        StreamError::SessionClosed(
            self.closed
                .clone()
                .unwrap_or_else(|| "stream no longer exists".to_string()),
        )
    }

    /// The transport cannot be written any more, but may still hold frames the peer sent
    /// before it hung up (an exec's status, its streams' resets), which the reader goes
    /// on delivering. Writers fail from now on; queued frames are dropped.
    pub(super) fn writer_failed(&mut self, reason: String) {
        if self.write_failed.is_none() {
            self.write_failed = Some(reason);
        }
        self.out.clear();
        self.out_data_bytes = 0;
        for s in self.streams.values_mut() {
            if let Some(w) = s.write_waker.take() {
                w.wake();
            }
        }
        for w in self.space_wakers.drain(..) {
            w.wake();
        }
        if let Some(w) = self.reader_waker.take() {
            w.wake();
        }
    }

    /// The error for a write once the session can no longer send.
    fn send_error(&self) -> Option<StreamError> {
        match (&self.closed, &self.write_failed) {
            (Some(_), _) => Some(self.closed_error()),
            (None, Some(why)) => Some(StreamError::SessionClosed(why.clone())),
            (None, None) => None,
        }
    }

    /// Ends the session: every waiter wakes and finds out.
    pub(super) fn close(&mut self, reason: String) {
        if self.closed.is_none() {
            self.closed = Some(reason);
        }
        self.pings.clear();
        for s in self.streams.values_mut() {
            s.wake_all();
        }
        for w in self
            .accept_wakers
            .drain(..)
            .chain(self.space_wakers.drain(..))
        {
            w.wake();
        }
        for w in [self.writer_waker.take(), self.reader_waker.take()]
            .into_iter()
            .flatten()
        {
            w.wake();
        }
    }

    pub(super) fn is_closed(&self) -> bool {
        self.closed.is_some()
    }

    fn has_handles(&self) -> bool {
        self.sessions > 0
            || self
                .streams
                .values()
                .any(|s| s.recv_handle || s.send_handle)
    }

    /// Called whenever a handle goes away: with none left, say GOAWAY and let the writer
    /// finish.
    fn check_shutdown(&mut self) {
        if !self.has_handles() && !self.goaway_sent && self.closed.is_none() {
            self.send_goaway(GoAwayStatus::Ok);
        }
        if let Some(w) = self.writer_waker.take() {
            w.wake();
        }
    }

    pub(super) fn send_goaway(&mut self, status: GoAwayStatus) {
        if self.goaway_sent {
            return;
        }
        self.goaway_sent = true;
        self.queue(Frame::GoAway(GoAway {
            last_good_stream_id: self.last_peer_id,
            status,
        }));
        for w in self.accept_wakers.drain(..) {
            w.wake();
        }
    }

    /// The session is ending on purpose (closed, every handle gone, or GOAWAY with no
    /// stream left open).
    pub(super) fn winding_down(&self) -> bool {
        self.writer_may_finish()
    }

    /// The writer may stop once nothing more can or needs to be written.
    fn writer_may_finish(&self) -> bool {
        self.closed.is_some()
            || !self.has_handles()
            || ((self.goaway_sent || self.goaway_received)
                && self.streams.values().all(StreamState::is_closed))
    }

    // ---------------------------------------------------------------- driver side

    /// The writer's next batch of frames; `None` when it should shut the transport down.
    pub(super) fn poll_batch(&mut self, cx: &mut Context<'_>) -> Poll<Option<Vec<Frame>>> {
        // A server stays silent until the client has spoken: Kubernetes' Go client reads
        // the 101 response through a bufio.Reader and then hands the raw connection to
        // spdystream, so bytes we sent right after the 101 could be swallowed by that
        // buffer and lost (the first of them is our SETTINGS).
        let can_write = self.role == Role::Client || self.peer_spoke;
        if can_write && !self.out.is_empty() {
            let mut batch = Vec::with_capacity(self.out.len().min(BATCH_FRAMES));
            while let Some(frame) = self.out.pop_front() {
                if let Frame::Data(d) = &frame {
                    self.out_data_bytes -= d.data.len();
                }
                batch.push(frame);
                if batch.len() >= BATCH_FRAMES {
                    break;
                }
            }
            for w in self.space_wakers.drain(..) {
                w.wake();
            }
            if let Some(w) = self.reader_waker.take() {
                w.wake();
            }
            return Poll::Ready(Some(batch));
        }
        if self.writer_may_finish() {
            return Poll::Ready(None);
        }
        self.writer_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// The reader may read on unless a stream buffer or the outbound queue is over its
    /// bound (only a peer ignoring our windows, or flooding us, gets there).
    fn must_pause(&self) -> bool {
        if self.closed.is_some() {
            return false;
        }
        let limit = self.recv_limit();
        let stream_full = self
            .paused_on
            .and_then(|id| self.streams.get(&id))
            .is_some_and(|s| s.reset.is_none() && s.buffered > limit);
        stream_full || self.out.len() > MAX_QUEUED_FRAMES
    }

    pub(super) fn poll_resume_reading(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.must_pause() {
            self.reader_waker = Some(cx.waker().clone());
            Poll::Pending
        } else {
            self.paused_on = None;
            Poll::Ready(())
        }
    }

    /// Applies one received frame. `true`: the reader must pause (see
    /// `poll_resume_reading`) before decoding more.
    pub(super) fn on_frame(&mut self, frame: Frame) -> bool {
        if !self.peer_spoke {
            self.peer_spoke = true;
            if let Some(w) = self.writer_waker.take() {
                w.wake();
            }
        }
        match frame {
            Frame::SynStream(syn) => self.on_syn_stream(syn),
            Frame::SynReply(reply) => self.on_syn_reply(reply),
            Frame::Data(data) => self.on_data(data),
            Frame::RstStream(rst) => self.on_rst(rst),
            Frame::Settings(settings) => self.on_settings(&settings),
            Frame::Ping(ping) => self.on_ping(ping),
            Frame::GoAway(goaway) => self.on_goaway(goaway),
            Frame::Headers(h) => {
                // Extra headers carry nothing the k8s protocols use; only FIN matters.
                if h.fin {
                    self.on_remote_fin(h.stream_id);
                }
            }
            Frame::WindowUpdate(wu) => self.on_window_update(wu),
            Frame::Unknown { .. } => {}
        }
        self.must_pause()
    }

    fn on_syn_stream(&mut self, syn: SynStream) {
        if self.goaway_sent {
            // The spec: after GOAWAY, ignore new streams.
            return;
        }
        let id = syn.stream_id;
        if !self.is_peer_id(id) || id <= self.last_peer_id {
            self.rst(id, RstStatus::ProtocolError);
            return;
        }
        self.last_peer_id = id;
        let open_peer_streams = self.streams.values().filter(|s| !s.local).count();
        if self.sessions == 0 || open_peer_streams >= self.config.max_peer_streams {
            self.rst(id, RstStatus::RefusedStream);
            return;
        }
        let mut s = StreamState::new(false, self.peer_initial_window);
        s.syn_headers = Some(syn.headers);
        s.recv_fin = syn.fin;
        s.send_fin = syn.unidirectional;
        self.streams.insert(id, s);
        self.accept_queue.push_back(id);
        for w in self.accept_wakers.drain(..) {
            w.wake();
        }
    }

    fn on_syn_reply(&mut self, reply: SynReply) {
        let id = reply.stream_id;
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        if s.reset.is_some() {
            return;
        }
        if !s.local || s.replied {
            let status = if s.local {
                RstStatus::StreamInUse
            } else {
                RstStatus::ProtocolError
            };
            s.reset = Some(Reset {
                status,
                by_peer: false,
            });
            s.clear_buffer();
            s.wake_all();
            self.rst(id, status);
            return;
        }
        s.replied = true;
        s.reply_headers = Some(reply.headers);
        if reply.fin {
            s.recv_fin = true;
        }
        s.wake_all();
    }

    fn on_data(&mut self, data: Data) {
        let id = data.stream_id;
        let len = data.data.len();
        // SPDY/3.1 session window: credited on receipt, not on consumption. Per-stream
        // windows already bound what each stream buffers, so crediting early never grows
        // memory, and it keeps one slow stream from starving the others of session window.
        self.session_recv_unacked = self
            .session_recv_unacked
            .saturating_add(u32::try_from(len).unwrap_or(u32::MAX));
        if self.session_recv_unacked >= SESSION_CREDIT_STEP {
            let delta = self.session_recv_unacked;
            self.session_recv_unacked = 0;
            self.queue(Frame::WindowUpdate(WindowUpdate {
                stream_id: 0,
                delta,
            }));
        }
        let limit = self.recv_limit();
        let never_opened = if self.is_peer_id(id) {
            id > self.last_peer_id
        } else {
            id >= self.next_local_id
        };
        let Some(s) = self.streams.get_mut(&id) else {
            // Late frames for a stream we already forgot are normal; frames for a stream
            // that never existed are the peer's bug.
            if never_opened {
                self.rst(id, RstStatus::InvalidStream);
            }
            return;
        };
        if s.reset.is_some() {
            return;
        }
        if s.recv_fin {
            s.reset = Some(Reset {
                status: RstStatus::StreamAlreadyClosed,
                by_peer: false,
            });
            s.clear_buffer();
            s.wake_all();
            self.rst(id, RstStatus::StreamAlreadyClosed);
            return;
        }
        if data.fin {
            s.recv_fin = true;
        }
        if s.accepted && !s.recv_handle {
            // Nobody will read: drop the bytes, but give the window back so the peer is
            // not stalled on a stream whose reader is gone.
            if len > 0 {
                self.consumed(id, len);
            }
            return;
        }
        if len > 0 {
            s.buffered += len;
            s.high_water = s.high_water.max(s.buffered);
            s.buf.push_back(data.data);
        }
        if let Some(w) = s.read_waker.take() {
            w.wake();
        }
        if s.buffered > limit {
            // Only a peer that ignores our window gets here (Go's spdystream does). Stop
            // reading the transport until the application drains this stream: TCP then
            // pushes back on the peer, which is what spdystream itself relies on.
            self.paused_on = Some(id);
        }
    }

    /// `n` bytes of stream `id` were read (or discarded): credit them back once enough
    /// accumulate, unless the peer has finished sending.
    fn consumed(&mut self, id: u32, n: usize) {
        let threshold = (self.config.recv_window / 2).max(1);
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        s.recv_unacked = s
            .recv_unacked
            .saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
        if s.recv_fin || s.reset.is_some() || s.recv_unacked < threshold {
            return;
        }
        let delta = s.recv_unacked.min(0x7fff_ffff);
        s.recv_unacked -= delta;
        self.queue(Frame::WindowUpdate(WindowUpdate {
            stream_id: id,
            delta,
        }));
    }

    fn on_remote_fin(&mut self, id: u32) {
        if let Some(s) = self.streams.get_mut(&id) {
            s.recv_fin = true;
            s.wake_all();
        }
        if let Some(w) = self.writer_waker.take() {
            w.wake();
        }
    }

    fn on_rst(&mut self, rst: RstStream) {
        let id = rst.stream_id;
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        if s.reset.is_none() {
            s.reset = Some(Reset {
                status: rst.status,
                by_peer: true,
            });
        }
        s.wake_all();
        if !s.accepted {
            // Reset before the application saw it: forget it entirely.
            self.streams.remove(&id);
            self.accept_queue.retain(|&q| q != id);
        }
        if let Some(w) = self.writer_waker.take() {
            w.wake();
        }
        if let Some(w) = self.reader_waker.take() {
            w.wake();
        }
    }

    fn on_settings(&mut self, settings: &Settings) {
        for e in &settings.entries {
            if e.id != SETTINGS_INITIAL_WINDOW_SIZE || i64::from(e.value) > MAX_WINDOW {
                continue;
            }
            // The spec: a new initial window shifts every open stream's window by the
            // difference (which may leave some negative).
            let new = i64::from(e.value);
            let delta = new - self.peer_initial_window;
            self.peer_initial_window = new;
            self.peer_flow_control = true;
            for s in self.streams.values_mut() {
                s.send_window += delta;
                if let Some(w) = s.write_waker.take() {
                    w.wake();
                }
            }
        }
    }

    fn on_ping(&mut self, ping: Ping) {
        if !self.is_peer_id(ping.id) {
            if let Some(tx) = self.pings.remove(&ping.id) {
                let _ = tx.send(());
            }
        } else {
            self.queue(Frame::Ping(ping));
        }
    }

    fn on_goaway(&mut self, goaway: GoAway) {
        self.goaway_received = true;
        // Streams we opened above the peer's last good id were never seen by it.
        for (&id, s) in self.streams.iter_mut() {
            if s.local && id > goaway.last_good_stream_id && s.reset.is_none() {
                s.reset = Some(Reset {
                    status: RstStatus::RefusedStream,
                    by_peer: true,
                });
                s.wake_all();
            }
        }
        for w in self.accept_wakers.drain(..) {
            w.wake();
        }
        if let Some(w) = self.writer_waker.take() {
            w.wake();
        }
    }

    fn on_window_update(&mut self, wu: WindowUpdate) {
        self.peer_flow_control = true;
        let delta = i64::from(wu.delta);
        if wu.stream_id == 0 {
            self.session_send_window = (self.session_send_window + delta).min(MAX_WINDOW);
            for s in self.streams.values_mut() {
                if let Some(w) = s.write_waker.take() {
                    w.wake();
                }
            }
            return;
        }
        let Some(s) = self.streams.get_mut(&wu.stream_id) else {
            return;
        };
        s.send_window += delta;
        if s.send_window > MAX_WINDOW && s.reset.is_none() {
            s.reset = Some(Reset {
                status: RstStatus::FlowControlError,
                by_peer: false,
            });
            s.clear_buffer();
            s.wake_all();
            self.rst(wu.stream_id, RstStatus::FlowControlError);
            return;
        }
        if let Some(w) = s.write_waker.take() {
            w.wake();
        }
    }

    // ---------------------------------------------------------------- session handle side

    pub(super) fn add_session_handle(&mut self) {
        self.sessions += 1;
    }

    pub(super) fn release_session_handle(&mut self) {
        self.sessions = self.sessions.saturating_sub(1);
        if self.sessions == 0 {
            // Nobody will accept the streams still waiting: refuse them.
            let waiting: Vec<u32> = self.accept_queue.drain(..).collect();
            for id in waiting {
                self.streams.remove(&id);
                self.rst(id, RstStatus::RefusedStream);
            }
        }
        self.check_shutdown();
    }

    pub(super) fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<Option<(u32, Headers)>> {
        while let Some(id) = self.accept_queue.pop_front() {
            if let Some(s) = self.streams.get_mut(&id) {
                s.accepted = true;
                s.recv_handle = true;
                s.send_handle = true;
                return Poll::Ready(Some((id, s.syn_headers.take().unwrap_or_default())));
            }
        }
        if self.closed.is_some() || self.goaway_received || self.goaway_sent {
            return Poll::Ready(None);
        }
        self.accept_wakers.push(cx.waker().clone());
        Poll::Pending
    }

    pub(super) fn open(&mut self, headers: Headers, fin: bool) -> Result<u32, SessionError> {
        if let Some(reason) = self.closed.as_ref().or(self.write_failed.as_ref()) {
            return Err(SessionError::Closed(reason.clone()));
        }
        if self.goaway_sent || self.goaway_received {
            return Err(SessionError::GoingAway);
        }
        headers.to_block().map_err(SessionError::InvalidHeaders)?;
        let id = self.next_local_id;
        if id > MAX_STREAM_ID {
            return Err(SessionError::StreamIdsExhausted);
        }
        self.next_local_id += 2;
        let mut s = StreamState::new(true, self.peer_initial_window);
        s.send_fin = fin;
        self.streams.insert(id, s);
        self.queue(Frame::SynStream(SynStream {
            stream_id: id,
            associated_stream_id: 0,
            priority: 0,
            slot: 0,
            fin,
            unidirectional: false,
            headers,
        }));
        Ok(id)
    }

    pub(super) fn start_ping(&mut self) -> Result<oneshot::Receiver<()>, SessionError> {
        if let Some(reason) = &self.closed {
            return Err(SessionError::Closed(reason.clone()));
        }
        let id = self.next_ping_id;
        // Keeps our parity; wraps after 2^31 pings, long after any earlier one finished.
        self.next_ping_id = self.next_ping_id.wrapping_add(2).max(2 - (id % 2));
        let (tx, rx) = oneshot::channel();
        self.pings.insert(id, tx);
        self.queue(Frame::Ping(Ping { id }));
        Ok(rx)
    }

    // ---------------------------------------------------------------- stream side

    pub(super) fn release_recv(&mut self, id: u32) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        s.recv_handle = false;
        // Unread bytes will never be read: drop them and hand their window back.
        let unread = s.buffered;
        s.clear_buffer();
        if unread > 0 {
            self.consumed(id, unread);
        }
        if let Some(w) = self.reader_waker.take() {
            w.wake();
        }
        self.finish_if_unused(id);
    }

    pub(super) fn release_send(&mut self, id: u32) {
        if let Some(s) = self.streams.get_mut(&id) {
            s.send_handle = false;
        }
        self.finish_if_unused(id);
    }

    /// With both halves gone, forget the stream; if it was not finished both ways, reset
    /// it so the peer stops too.
    fn finish_if_unused(&mut self, id: u32) {
        let Some(s) = self.streams.get(&id) else {
            return;
        };
        if s.recv_handle || s.send_handle {
            return;
        }
        let finished = s.is_closed();
        self.streams.remove(&id);
        if !finished && self.closed.is_none() {
            self.rst(id, RstStatus::Cancel);
        }
        self.check_shutdown();
    }

    pub(super) fn poll_read(
        &mut self,
        id: u32,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<Result<(), StreamError>> {
        let limit = self.recv_limit();
        let closed = self.closed_error();
        let Some(s) = self.streams.get_mut(&id) else {
            return Poll::Ready(Err(closed));
        };
        if let Some(reset) = s.reset.filter(|r| !r.by_peer) {
            return Poll::Ready(Err(reset.error()));
        }
        if out.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        if !s.buf.is_empty() {
            let was_over = s.buffered > limit;
            let mut copied = 0;
            while out.remaining() > 0 {
                let Some(front) = s.buf.front_mut() else {
                    break;
                };
                let n = front.len().min(out.remaining());
                out.put_slice(&front[..n]);
                front.advance(n);
                copied += n;
                if front.is_empty() {
                    s.buf.pop_front();
                }
            }
            s.buffered -= copied;
            let now_under = s.buffered <= limit;
            self.consumed(id, copied);
            if was_over && now_under {
                if let Some(w) = self.reader_waker.take() {
                    w.wake();
                }
            }
            return Poll::Ready(Ok(()));
        }
        // Buffered data first, then: FIN means EOF even if a reset or the end of the
        // session came after it (the peer had said everything).
        if s.recv_fin {
            return Poll::Ready(Ok(()));
        }
        if let Some(reset) = s.reset {
            return Poll::Ready(Err(reset.error()));
        }
        if self.closed.is_some() {
            return Poll::Ready(Err(closed));
        }
        s.read_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    pub(super) fn poll_write(
        &mut self,
        id: u32,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<Result<usize, StreamError>> {
        if let Some(e) = self.send_error() {
            return Poll::Ready(Err(e));
        }
        let enforce = self.enforce_windows();
        let room = self.config.send_buffer.saturating_sub(self.out_data_bytes);
        let max_frame = self.config.max_data_frame;
        let session_window = self.session_send_window;
        let closed = self.closed_error();
        let Some(s) = self.streams.get_mut(&id) else {
            return Poll::Ready(Err(closed));
        };
        if let Some(reset) = s.reset {
            return Poll::Ready(Err(reset.error()));
        }
        if s.send_fin {
            return Poll::Ready(Err(StreamError::SendClosed));
        }
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if s.local && !s.replied {
            // Go's spdystream drops DATA on a stream it has not replied to yet, so wait for
            // the SYN_REPLY like the Kubernetes clients do.
            s.write_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let auto_reply = !s.local && !s.replied;
        if auto_reply {
            // Same reason, other side: the peer ignores DATA before our SYN_REPLY.
            s.replied = true;
        }
        let mut n = data.len().min(max_frame).min(room);
        let mut blocked = n == 0;
        if enforce && !blocked {
            let window = s.send_window.min(session_window);
            if window <= 0 {
                blocked = true;
            } else {
                n = n.min(usize::try_from(window).unwrap_or(usize::MAX));
            }
        }
        if blocked {
            if room == 0 {
                self.space_wakers.push(cx.waker().clone());
            } else {
                s.write_waker = Some(cx.waker().clone());
            }
            if auto_reply {
                self.queue_reply(id, false, Headers::new());
            }
            return Poll::Pending;
        }
        let sent = i64::try_from(n).unwrap_or(i64::MAX);
        s.send_window -= sent;
        self.session_send_window -= sent;
        if auto_reply {
            self.queue_reply(id, false, Headers::new());
        }
        self.queue(Frame::Data(Data {
            stream_id: id,
            fin: false,
            data: Bytes::copy_from_slice(&data[..n]),
        }));
        Poll::Ready(Ok(n))
    }

    fn queue_reply(&mut self, id: u32, fin: bool, headers: Headers) {
        self.queue(Frame::SynReply(SynReply {
            stream_id: id,
            fin,
            headers,
        }));
    }

    pub(super) fn poll_shutdown(
        &mut self,
        id: u32,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), StreamError>> {
        let closed = self.closed_error();
        let cannot_send = self.send_error();
        let Some(s) = self.streams.get_mut(&id) else {
            return Poll::Ready(Err(closed));
        };
        if s.send_fin {
            return Poll::Ready(Ok(()));
        }
        if let Some(reset) = s.reset {
            return Poll::Ready(Err(reset.error()));
        }
        if let Some(e) = cannot_send {
            return Poll::Ready(Err(e));
        }
        if s.local && !s.replied {
            s.write_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        s.send_fin = true;
        if s.replied {
            self.queue(Frame::Data(Data {
                stream_id: id,
                fin: true,
                data: Bytes::new(),
            }));
        } else {
            // Never replied: the SYN_REPLY itself carries the FIN.
            s.replied = true;
            self.queue_reply(id, true, Headers::new());
        }
        Poll::Ready(Ok(()))
    }

    pub(super) fn reply(
        &mut self,
        id: u32,
        headers: Headers,
        fin: bool,
    ) -> Result<(), StreamError> {
        let closed = self.closed_error();
        if let Some(e) = self.send_error() {
            return Err(e);
        }
        headers.to_block().map_err(StreamError::InvalidHeaders)?;
        let Some(s) = self.streams.get_mut(&id) else {
            return Err(closed);
        };
        if s.local {
            return Err(StreamError::NotIncoming);
        }
        if let Some(reset) = s.reset {
            return Err(reset.error());
        }
        if s.replied {
            return Err(StreamError::AlreadyReplied);
        }
        s.replied = true;
        if fin {
            s.send_fin = true;
        }
        self.queue_reply(id, fin, headers);
        Ok(())
    }

    pub(super) fn poll_reply(
        &mut self,
        id: u32,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Headers, StreamError>> {
        let closed = self.closed_error();
        let session_closed = self.closed.is_some();
        let Some(s) = self.streams.get_mut(&id) else {
            return Poll::Ready(Err(closed));
        };
        if !s.local {
            return Poll::Ready(Err(StreamError::NotLocal));
        }
        if let Some(h) = &s.reply_headers {
            return Poll::Ready(Ok(h.clone()));
        }
        if let Some(reset) = s.reset {
            return Poll::Ready(Err(reset.error()));
        }
        if session_closed {
            return Poll::Ready(Err(closed));
        }
        s.reply_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    pub(super) fn reset(&mut self, id: u32, status: RstStatus) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        if s.reset.is_some() || s.is_closed() {
            return;
        }
        s.reset = Some(Reset {
            status,
            by_peer: false,
        });
        s.clear_buffer();
        s.wake_all();
        if let Some(w) = self.reader_waker.take() {
            w.wake();
        }
        if self.closed.is_none() {
            self.rst(id, status);
        }
    }

    #[cfg(test)]
    pub(super) fn recv_high_water(&self, id: u32) -> Option<usize> {
        self.streams.get(&id).map(|s| s.high_water)
    }

    #[cfg(test)]
    pub(super) fn out_data_bytes(&self) -> usize {
        self.out_data_bytes
    }
}
