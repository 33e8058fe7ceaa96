//! SPDY/3.1 frames as typed values, and their wire encoding.
//!
//! Every frame starts with 8 bytes. A control frame: `1 | version:15 | type:16`, then
//! `flags:8 | length:24`. A data frame: `0 | stream-id:31`, then `flags:8 | length:24`.
//! `length` counts the bytes after those 8.
//!
//! Decoding is incremental ([`FrameDecoder::decode`] returns `Ok(None)` until a whole frame
//! is buffered) and refuses a frame longer than a configured cap as soon as its 8-byte
//! header arrives, before buffering it. The cap exists because the 24-bit length would let
//! a peer make us hold 16 MiB per connection; the default, [`DEFAULT_MAX_FRAME_PAYLOAD`]
//! (1 MiB), is 32 times what the Kubernetes clients ever send (they write from 32 KiB
//! `io.Copy` buffers, one DATA frame per write).
//!
//! The decoder owns the inbound header decompression context and the encoder the outbound
//! compression context, because header blocks must be (de)compressed in exactly the order
//! the frames travel.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::headers::{HeaderCompressor, HeaderDecompressor, HeaderError, Headers};

/// The SPDY version these frames carry (the framing of SPDY/3.1 is SPDY/3's).
pub const VERSION: u16 = 3;
/// Bytes of the common frame header.
pub const FRAME_HEADER_LEN: usize = 8;
/// Largest payload the 24-bit length field can describe.
pub const MAX_PAYLOAD_LEN: usize = (1 << 24) - 1;
/// Default cap on a received frame's payload; see the module documentation.
pub const DEFAULT_MAX_FRAME_PAYLOAD: usize = 1 << 20;
/// Default cap on a decompressed header block: k8s headers are a few dozen bytes.
pub const DEFAULT_MAX_HEADER_BLOCK: usize = 256 * 1024;
/// Largest stream id (31 bits).
pub const MAX_STREAM_ID: u32 = 0x7fff_ffff;

/// Control frame type codes.
mod kind {
    pub const SYN_STREAM: u16 = 1;
    pub const SYN_REPLY: u16 = 2;
    pub const RST_STREAM: u16 = 3;
    pub const SETTINGS: u16 = 4;
    pub const PING: u16 = 6;
    pub const GOAWAY: u16 = 7;
    pub const HEADERS: u16 = 8;
    pub const WINDOW_UPDATE: u16 = 9;
}

/// FIN flag of DATA, SYN_STREAM, SYN_REPLY and HEADERS: the sender sends nothing more.
pub const FLAG_FIN: u8 = 0x01;
/// UNIDIRECTIONAL flag of SYN_STREAM: the recipient must not send on the stream.
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;
/// CLEAR_SETTINGS flag of SETTINGS.
pub const FLAG_SETTINGS_CLEAR: u8 = 0x01;

/// SETTINGS id: the sender's initial per-stream receive window.
pub const SETTINGS_INITIAL_WINDOW_SIZE: u32 = 7;
/// SETTINGS id: how many streams the sender lets its peer open at once.
pub const SETTINGS_MAX_CONCURRENT_STREAMS: u32 = 4;

/// One SPDY frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// DATA.
    Data(Data),
    /// SYN_STREAM: opens a stream.
    SynStream(SynStream),
    /// SYN_REPLY: accepts a stream.
    SynReply(SynReply),
    /// RST_STREAM: aborts a stream.
    RstStream(RstStream),
    /// SETTINGS.
    Settings(Settings),
    /// PING (echoed by the receiver when the id has the sender's parity).
    Ping(Ping),
    /// GOAWAY: no new streams on this session.
    GoAway(GoAway),
    /// HEADERS: more headers for a stream.
    Headers(HeadersFrame),
    /// WINDOW_UPDATE: flow control credit (stream 0: the whole session, SPDY/3.1).
    WindowUpdate(WindowUpdate),
    /// A version-3 control frame of a type we do not know; the spec says to ignore it.
    /// Its payload has been skipped.
    Unknown {
        /// The control frame type.
        frame_type: u16,
        /// Its flags.
        flags: u8,
    },
}

/// A DATA frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Data {
    /// Stream id (nonzero).
    pub stream_id: u32,
    /// Last frame the sender sends on this stream.
    pub fin: bool,
    /// Payload.
    pub data: Bytes,
}

/// A SYN_STREAM frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynStream {
    /// The new stream's id: odd from the client, even from the server.
    pub stream_id: u32,
    /// Stream this one is associated with (server push); 0 for none.
    pub associated_stream_id: u32,
    /// Priority 0 (highest) to 7.
    pub priority: u8,
    /// Credential slot (SPDY/3; always 0 in practice).
    pub slot: u8,
    /// The opener sends nothing more.
    pub fin: bool,
    /// The recipient may not send on this stream.
    pub unidirectional: bool,
    /// The stream's headers.
    pub headers: Headers,
}

/// A SYN_REPLY frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynReply {
    /// Stream id.
    pub stream_id: u32,
    /// The replier sends nothing more.
    pub fin: bool,
    /// Reply headers.
    pub headers: Headers,
}

/// A HEADERS frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadersFrame {
    /// Stream id.
    pub stream_id: u32,
    /// The sender sends nothing more.
    pub fin: bool,
    /// The headers.
    pub headers: Headers,
}

/// A RST_STREAM frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RstStream {
    /// Stream id.
    pub stream_id: u32,
    /// Why.
    pub status: RstStatus,
}

/// RST_STREAM status codes (SPDY/3 section 2.6.3). Unknown codes are kept, not rejected,
/// so that a newer peer's reset still resets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RstStatus {
    /// 1: generic protocol violation.
    ProtocolError,
    /// 2: frame for a stream that is not active.
    InvalidStream,
    /// 3: stream refused before any processing.
    RefusedStream,
    /// 4: unsupported SPDY version.
    UnsupportedVersion,
    /// 5: the stream is no longer needed.
    Cancel,
    /// 6: internal error.
    InternalError,
    /// 7: flow control violated.
    FlowControlError,
    /// 8: SYN_REPLY for an already open stream.
    StreamInUse,
    /// 9: data or SYN_REPLY on a half-closed stream.
    StreamAlreadyClosed,
    /// 10: invalid credentials (SPDY/3).
    InvalidCredentials,
    /// 11: frame too large for the receiver.
    FrameTooLarge,
    /// Any other code.
    Unknown(u32),
}

impl RstStatus {
    /// The wire code.
    pub fn code(self) -> u32 {
        match self {
            RstStatus::ProtocolError => 1,
            RstStatus::InvalidStream => 2,
            RstStatus::RefusedStream => 3,
            RstStatus::UnsupportedVersion => 4,
            RstStatus::Cancel => 5,
            RstStatus::InternalError => 6,
            RstStatus::FlowControlError => 7,
            RstStatus::StreamInUse => 8,
            RstStatus::StreamAlreadyClosed => 9,
            RstStatus::InvalidCredentials => 10,
            RstStatus::FrameTooLarge => 11,
            RstStatus::Unknown(code) => code,
        }
    }

    /// The status for a wire code.
    pub fn from_code(code: u32) -> RstStatus {
        match code {
            1 => RstStatus::ProtocolError,
            2 => RstStatus::InvalidStream,
            3 => RstStatus::RefusedStream,
            4 => RstStatus::UnsupportedVersion,
            5 => RstStatus::Cancel,
            6 => RstStatus::InternalError,
            7 => RstStatus::FlowControlError,
            8 => RstStatus::StreamInUse,
            9 => RstStatus::StreamAlreadyClosed,
            10 => RstStatus::InvalidCredentials,
            11 => RstStatus::FrameTooLarge,
            other => RstStatus::Unknown(other),
        }
    }
}

/// A SETTINGS frame.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Settings {
    /// CLEAR_SETTINGS flag: forget persisted settings.
    pub clear: bool,
    /// The entries, in order.
    pub entries: Vec<Setting>,
}

/// One SETTINGS entry: `flags:8 | id:24 | value:32` on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// Entry flags (1 = PERSIST_VALUE, 2 = PERSISTED).
    pub flags: u8,
    /// Setting id (24 bits), e.g. [`SETTINGS_INITIAL_WINDOW_SIZE`].
    pub id: u32,
    /// Value.
    pub value: u32,
}

/// A PING frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ping {
    /// Ping id: odd from the client, even from the server.
    pub id: u32,
}

/// A GOAWAY frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoAway {
    /// Highest peer-initiated stream the sender processed.
    pub last_good_stream_id: u32,
    /// Why.
    pub status: GoAwayStatus,
}

/// GOAWAY status codes; unknown codes are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GoAwayStatus {
    /// 0: normal teardown.
    Ok,
    /// 1: protocol error.
    ProtocolError,
    /// 2: internal error.
    InternalError,
    /// Any other code.
    Unknown(u32),
}

impl GoAwayStatus {
    /// The wire code.
    pub fn code(self) -> u32 {
        match self {
            GoAwayStatus::Ok => 0,
            GoAwayStatus::ProtocolError => 1,
            GoAwayStatus::InternalError => 2,
            GoAwayStatus::Unknown(code) => code,
        }
    }

    /// The status for a wire code.
    pub fn from_code(code: u32) -> GoAwayStatus {
        match code {
            0 => GoAwayStatus::Ok,
            1 => GoAwayStatus::ProtocolError,
            2 => GoAwayStatus::InternalError,
            other => GoAwayStatus::Unknown(other),
        }
    }
}

/// A WINDOW_UPDATE frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowUpdate {
    /// Stream id; 0 means the session window (SPDY/3.1).
    pub stream_id: u32,
    /// Bytes of credit (31 bits).
    pub delta: u32,
}

/// Why a frame could not be decoded or encoded. Every decoding error is fatal to the
/// connection: after one, the byte stream (or the header compression context) can no
/// longer be trusted.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The frame's declared payload exceeds the decoder's cap.
    #[error("frame payload of {len} bytes exceeds the {max} byte limit")]
    TooLarge {
        /// Declared payload length.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// A control frame of another SPDY version.
    #[error("unsupported SPDY version {0}")]
    UnsupportedVersion(u16),
    /// A control frame whose length does not fit its type.
    #[error("control frame type {frame_type} with invalid length {len}")]
    InvalidLength {
        /// The control frame type.
        frame_type: u16,
        /// Its length.
        len: usize,
    },
    /// Stream id 0 where a stream is required.
    #[error("frame type {0} on stream 0")]
    ZeroStreamId(u16),
    /// PING id 0 (Go's framer rejects it too).
    #[error("PING with id 0")]
    ZeroPingId,
    /// A header block that could not be (de)compressed or parsed.
    #[error(transparent)]
    Header(#[from] HeaderError),
    /// Encoding: a field out of its range (stream id over 31 bits, priority over 7, a
    /// payload over 24 bits).
    #[error("cannot encode frame: {0}")]
    Unencodable(&'static str),
}

/// Decodes frames from bytes, keeping the inbound header decompression context.
#[derive(Debug)]
pub struct FrameDecoder {
    headers: HeaderDecompressor,
    max_payload: usize,
}

impl FrameDecoder {
    /// A decoder refusing payloads over `max_payload` (clamped to the 24-bit maximum) and
    /// header blocks decompressing to more than `max_header_block`.
    pub fn new(max_payload: usize, max_header_block: usize) -> FrameDecoder {
        FrameDecoder {
            headers: HeaderDecompressor::new(max_header_block),
            max_payload: max_payload.min(MAX_PAYLOAD_LEN),
        }
    }

    /// Takes the next complete frame off the front of `buf`.
    ///
    /// `Ok(None)`: not a whole frame yet, nothing consumed (capacity for the rest may have
    /// been reserved). `Err`: the connection is unusable.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        let Some(header) = buf.first_chunk::<FRAME_HEADER_LEN>() else {
            return Ok(None);
        };
        let word = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        let flags = header[4];
        let len =
            usize::from(header[5]) << 16 | usize::from(header[6]) << 8 | usize::from(header[7]);
        if len > self.max_payload {
            return Err(FrameError::TooLarge {
                len,
                max: self.max_payload,
            });
        }
        let control = word & 0x8000_0000 != 0;
        if control {
            // Checked before buffering the payload: a frame we cannot parse anyway should
            // not make us wait for (and hold) up to max_payload bytes.
            let version = ((word >> 16) & 0x7fff) as u16;
            if version != VERSION {
                return Err(FrameError::UnsupportedVersion(version));
            }
        }
        if buf.len() < FRAME_HEADER_LEN + len {
            buf.reserve(FRAME_HEADER_LEN + len - buf.len());
            return Ok(None);
        }
        buf.advance(FRAME_HEADER_LEN);
        let payload = buf.split_to(len).freeze();
        if !control {
            let stream_id = word & MAX_STREAM_ID;
            if stream_id == 0 {
                return Err(FrameError::ZeroStreamId(0));
            }
            return Ok(Some(Frame::Data(Data {
                stream_id,
                fin: flags & FLAG_FIN != 0,
                data: payload,
            })));
        }
        let frame_type = (word & 0xffff) as u16;
        self.control(frame_type, flags, payload).map(Some)
    }

    fn control(&mut self, frame_type: u16, flags: u8, mut p: Bytes) -> Result<Frame, FrameError> {
        let len = p.len();
        let bad_len = || FrameError::InvalidLength { frame_type, len };
        let fin = flags & FLAG_FIN != 0;
        Ok(match frame_type {
            kind::SYN_STREAM => {
                if len < 10 {
                    return Err(bad_len());
                }
                let stream_id = stream_id(frame_type, p.get_u32())?;
                let associated_stream_id = p.get_u32() & MAX_STREAM_ID;
                let priority = p.get_u8() >> 5;
                let slot = p.get_u8();
                let headers = self.headers.decompress(&p)?;
                Frame::SynStream(SynStream {
                    stream_id,
                    associated_stream_id,
                    priority,
                    slot,
                    fin,
                    unidirectional: flags & FLAG_UNIDIRECTIONAL != 0,
                    headers,
                })
            }
            kind::SYN_REPLY | kind::HEADERS => {
                if len < 4 {
                    return Err(bad_len());
                }
                let stream_id = stream_id(frame_type, p.get_u32())?;
                let headers = self.headers.decompress(&p)?;
                if frame_type == kind::SYN_REPLY {
                    Frame::SynReply(SynReply {
                        stream_id,
                        fin,
                        headers,
                    })
                } else {
                    Frame::Headers(HeadersFrame {
                        stream_id,
                        fin,
                        headers,
                    })
                }
            }
            kind::RST_STREAM => {
                if len != 8 {
                    return Err(bad_len());
                }
                let stream_id = stream_id(frame_type, p.get_u32())?;
                Frame::RstStream(RstStream {
                    stream_id,
                    status: RstStatus::from_code(p.get_u32()),
                })
            }
            kind::SETTINGS => {
                if len < 4 {
                    return Err(bad_len());
                }
                let count = p.get_u32() as usize;
                // The count must describe exactly the rest of the payload, which also
                // bounds the allocation by the (already capped) frame length.
                if count.checked_mul(8) != Some(p.len()) {
                    return Err(bad_len());
                }
                let entries = (0..count)
                    .map(|_| {
                        let flags_id = p.get_u32();
                        Setting {
                            flags: (flags_id >> 24) as u8,
                            id: flags_id & 0x00ff_ffff,
                            value: p.get_u32(),
                        }
                    })
                    .collect();
                Frame::Settings(Settings {
                    clear: flags & FLAG_SETTINGS_CLEAR != 0,
                    entries,
                })
            }
            kind::PING => {
                if len != 4 {
                    return Err(bad_len());
                }
                let id = p.get_u32();
                if id == 0 {
                    return Err(FrameError::ZeroPingId);
                }
                Frame::Ping(Ping { id })
            }
            kind::GOAWAY => {
                if len != 8 {
                    return Err(bad_len());
                }
                Frame::GoAway(GoAway {
                    last_good_stream_id: p.get_u32() & MAX_STREAM_ID,
                    status: GoAwayStatus::from_code(p.get_u32()),
                })
            }
            kind::WINDOW_UPDATE => {
                if len != 8 {
                    return Err(bad_len());
                }
                Frame::WindowUpdate(WindowUpdate {
                    stream_id: p.get_u32() & MAX_STREAM_ID,
                    delta: p.get_u32() & 0x7fff_ffff,
                })
            }
            _ => Frame::Unknown { frame_type, flags },
        })
    }
}

fn stream_id(frame_type: u16, word: u32) -> Result<u32, FrameError> {
    match word & MAX_STREAM_ID {
        0 => Err(FrameError::ZeroStreamId(frame_type)),
        id => Ok(id),
    }
}

/// Encodes frames to bytes, keeping the outbound header compression context.
#[derive(Debug)]
pub struct FrameEncoder {
    headers: HeaderCompressor,
    scratch: Vec<u8>,
}

impl FrameEncoder {
    /// A fresh encoder (new compression context).
    pub fn new() -> Result<FrameEncoder, FrameError> {
        Ok(FrameEncoder {
            headers: HeaderCompressor::new()?,
            scratch: Vec::new(),
        })
    }

    /// Appends the encoding of `frame` to `dst`.
    ///
    /// An error from a frame with headers leaves the compression context in an unknown
    /// state: the connection must not be used further. `Unknown` frames encode as an
    /// empty control frame of their type (tests use that).
    pub fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        match frame {
            Frame::Data(d) => {
                let id = check_stream_id(d.stream_id, true)?;
                put_header(dst, id, flag(d.fin, FLAG_FIN), d.data.len())?;
                dst.put_slice(&d.data);
            }
            Frame::SynStream(s) => {
                if s.priority > 7 {
                    return Err(FrameError::Unencodable("priority over 7"));
                }
                let id = check_stream_id(s.stream_id, true)?;
                let associated = check_stream_id(s.associated_stream_id, false)?;
                let block = self.compress(&s.headers)?;
                let flags = flag(s.fin, FLAG_FIN) | flag(s.unidirectional, FLAG_UNIDIRECTIONAL);
                put_header(dst, control_word(kind::SYN_STREAM), flags, 10 + block.len())?;
                dst.put_u32(id);
                dst.put_u32(associated);
                dst.put_u8(s.priority << 5);
                dst.put_u8(s.slot);
                dst.put_slice(block);
            }
            Frame::SynReply(s) => {
                self.headers_frame(dst, kind::SYN_REPLY, s.stream_id, s.fin, &s.headers)?;
            }
            Frame::Headers(h) => {
                self.headers_frame(dst, kind::HEADERS, h.stream_id, h.fin, &h.headers)?;
            }
            Frame::RstStream(r) => {
                let id = check_stream_id(r.stream_id, true)?;
                put_header(dst, control_word(kind::RST_STREAM), 0, 8)?;
                dst.put_u32(id);
                dst.put_u32(r.status.code());
            }
            Frame::Settings(s) => {
                let len = s
                    .entries
                    .len()
                    .checked_mul(8)
                    .and_then(|n| n.checked_add(4))
                    .ok_or(FrameError::Unencodable("too many settings"))?;
                put_header(
                    dst,
                    control_word(kind::SETTINGS),
                    flag(s.clear, FLAG_SETTINGS_CLEAR),
                    len,
                )?;
                dst.put_u32(s.entries.len() as u32);
                for e in &s.entries {
                    if e.id > 0x00ff_ffff {
                        return Err(FrameError::Unencodable("setting id over 24 bits"));
                    }
                    dst.put_u32(u32::from(e.flags) << 24 | e.id);
                    dst.put_u32(e.value);
                }
            }
            Frame::Ping(p) => {
                put_header(dst, control_word(kind::PING), 0, 4)?;
                dst.put_u32(p.id);
            }
            Frame::GoAway(g) => {
                let id = check_stream_id(g.last_good_stream_id, false)?;
                put_header(dst, control_word(kind::GOAWAY), 0, 8)?;
                dst.put_u32(id);
                dst.put_u32(g.status.code());
            }
            Frame::WindowUpdate(w) => {
                let id = check_stream_id(w.stream_id, false)?;
                if w.delta > 0x7fff_ffff {
                    return Err(FrameError::Unencodable("window delta over 31 bits"));
                }
                put_header(dst, control_word(kind::WINDOW_UPDATE), 0, 8)?;
                dst.put_u32(id);
                dst.put_u32(w.delta);
            }
            Frame::Unknown { frame_type, flags } => {
                put_header(dst, control_word(*frame_type), *flags, 0)?;
            }
        }
        Ok(())
    }

    fn compress(&mut self, headers: &Headers) -> Result<&[u8], FrameError> {
        self.scratch.clear();
        self.headers.compress(headers, &mut self.scratch)?;
        Ok(&self.scratch)
    }

    fn headers_frame(
        &mut self,
        dst: &mut BytesMut,
        frame_type: u16,
        stream_id: u32,
        fin: bool,
        headers: &Headers,
    ) -> Result<(), FrameError> {
        let id = check_stream_id(stream_id, true)?;
        let block = self.compress(headers)?;
        put_header(
            dst,
            control_word(frame_type),
            flag(fin, FLAG_FIN),
            4 + block.len(),
        )?;
        dst.put_u32(id);
        dst.put_slice(block);
        Ok(())
    }
}

fn flag(set: bool, bit: u8) -> u8 {
    if set {
        bit
    } else {
        0
    }
}

fn control_word(frame_type: u16) -> u32 {
    0x8000_0000 | u32::from(VERSION) << 16 | u32::from(frame_type)
}

fn check_stream_id(id: u32, nonzero: bool) -> Result<u32, FrameError> {
    if id > MAX_STREAM_ID {
        return Err(FrameError::Unencodable("stream id over 31 bits"));
    }
    if nonzero && id == 0 {
        return Err(FrameError::Unencodable("stream id 0"));
    }
    Ok(id)
}

fn put_header(dst: &mut BytesMut, word: u32, flags: u8, len: usize) -> Result<(), FrameError> {
    if len > MAX_PAYLOAD_LEN {
        return Err(FrameError::Unencodable("payload over 24 bits"));
    }
    dst.reserve(FRAME_HEADER_LEN + len);
    dst.put_u32(word);
    dst.put_u32(u32::from(flags) << 24 | len as u32);
    Ok(())
}

#[cfg(test)]
mod tests;
