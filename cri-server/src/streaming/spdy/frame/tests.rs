//! Frame encodings checked against bytes written out by hand from the SPDY/3 layouts, and
//! the decoder against truncated, oversized and random input.

use super::*;
use flate2::{Decompress, FlushDecompress};

use crate::streaming::spdy::headers::{DICTIONARY, DICTIONARY_ID};

fn encode(frame: &Frame) -> Vec<u8> {
    let mut enc = FrameEncoder::new().expect("encoder");
    let mut buf = BytesMut::new();
    enc.encode(frame, &mut buf).expect("encodes");
    buf.to_vec()
}

fn decode_all(bytes: &[u8]) -> Vec<Frame> {
    let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME_PAYLOAD, DEFAULT_MAX_HEADER_BLOCK);
    let mut buf = BytesMut::from(bytes);
    let mut frames = Vec::new();
    while let Some(f) = dec.decode(&mut buf).expect("decodes") {
        frames.push(f);
    }
    assert!(buf.is_empty(), "left {} bytes", buf.len());
    frames
}

/// Encodes, compares with `expected`, and decodes `expected` back to `frame`.
fn check_exact(frame: Frame, expected: &[u8]) {
    assert_eq!(encode(&frame), expected, "encoding of {frame:?}");
    assert_eq!(decode_all(expected), vec![frame]);
}

#[test]
fn data_frame_bytes() {
    check_exact(
        Frame::Data(Data {
            stream_id: 5,
            fin: true,
            data: Bytes::from_static(b"hi"),
        }),
        &[
            0x00, 0x00, 0x00, 0x05, // C=0, stream id 5
            0x01, 0x00, 0x00, 0x02, // flags FIN, length 2
            b'h', b'i',
        ],
    );
    // Largest stream id, no flags, empty payload.
    check_exact(
        Frame::Data(Data {
            stream_id: MAX_STREAM_ID,
            fin: false,
            data: Bytes::new(),
        }),
        &[0x7f, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00],
    );
}

#[test]
fn rst_stream_bytes() {
    check_exact(
        Frame::RstStream(RstStream {
            stream_id: 7,
            status: RstStatus::Cancel,
        }),
        &[
            0x80, 0x03, 0x00, 0x03, // C=1, version 3, type 3 RST_STREAM
            0x00, 0x00, 0x00, 0x08, // flags 0, length 8
            0x00, 0x00, 0x00, 0x07, // stream id
            0x00, 0x00, 0x00, 0x05, // status 5 CANCEL
        ],
    );
    // An unknown status survives a round trip.
    check_exact(
        Frame::RstStream(RstStream {
            stream_id: 1,
            status: RstStatus::Unknown(0x42),
        }),
        &[
            0x80, 0x03, 0x00, 0x03, 0x00, 0x00, 0x00, 0x08, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00,
            0x00, 0x42,
        ],
    );
    for code in 0..14 {
        assert_eq!(RstStatus::from_code(code).code(), code);
    }
}

#[test]
fn settings_bytes() {
    check_exact(
        Frame::Settings(Settings {
            clear: true,
            entries: vec![
                Setting {
                    flags: 0,
                    id: SETTINGS_INITIAL_WINDOW_SIZE,
                    value: 65536,
                },
                Setting {
                    flags: 1,
                    id: SETTINGS_MAX_CONCURRENT_STREAMS,
                    value: 100,
                },
            ],
        }),
        &[
            0x80, 0x03, 0x00, 0x04, // type 4 SETTINGS
            0x01, 0x00, 0x00, 0x14, // flags CLEAR_SETTINGS, length 4 + 2 * 8
            0x00, 0x00, 0x00, 0x02, // two entries
            0x00, 0x00, 0x00, 0x07, // flags 0, id 7 INITIAL_WINDOW_SIZE
            0x00, 0x01, 0x00, 0x00, // 65536
            0x01, 0x00, 0x00, 0x04, // flags PERSIST_VALUE, id 4 MAX_CONCURRENT_STREAMS
            0x00, 0x00, 0x00, 0x64, // 100
        ],
    );
}

#[test]
fn ping_goaway_window_update_bytes() {
    check_exact(
        Frame::Ping(Ping { id: 0x0102_0304 }),
        &[
            0x80, 0x03, 0x00, 0x06, // type 6 PING
            0x00, 0x00, 0x00, 0x04, // length 4
            0x01, 0x02, 0x03, 0x04, // id
        ],
    );
    check_exact(
        Frame::GoAway(GoAway {
            last_good_stream_id: 9,
            status: GoAwayStatus::ProtocolError,
        }),
        &[
            0x80, 0x03, 0x00, 0x07, // type 7 GOAWAY
            0x00, 0x00, 0x00, 0x08, // length 8 (SPDY/3 added the status)
            0x00, 0x00, 0x00, 0x09, // last good stream id
            0x00, 0x00, 0x00, 0x01, // status 1 PROTOCOL_ERROR
        ],
    );
    check_exact(
        Frame::WindowUpdate(WindowUpdate {
            stream_id: 0,
            delta: 0x7fff_ffff,
        }),
        &[
            0x80, 0x03, 0x00, 0x09, // type 9 WINDOW_UPDATE
            0x00, 0x00, 0x00, 0x08, // length 8
            0x00, 0x00, 0x00, 0x00, // stream 0: the session window (SPDY/3.1)
            0x7f, 0xff, 0xff, 0xff, // delta
        ],
    );
    for code in 0..5 {
        assert_eq!(GoAwayStatus::from_code(code).code(), code);
    }
}

/// Inflates one header block with a fresh, independent zlib context.
fn inflate_first_block(compressed: &[u8]) -> Vec<u8> {
    let mut z = Decompress::new(true);
    let mut out = Vec::with_capacity(4096);
    loop {
        let done = z.total_in() as usize;
        match z.decompress_vec(&compressed[done..], &mut out, FlushDecompress::Sync) {
            Ok(_) if z.total_in() as usize == compressed.len() => return out,
            Ok(_) => {}
            Err(e) => {
                assert_eq!(e.needs_dictionary(), Some(DICTIONARY_ID));
                z.set_dictionary(&DICTIONARY).expect("dictionary");
            }
        }
    }
}

/// The uncompressed block for `{"streamtype": "stdin"}`, written out by hand.
const STDIN_BLOCK: &[u8] = b"\x00\x00\x00\x01\x00\x00\x00\x0astreamtype\x00\x00\x00\x05stdin";

#[test]
fn syn_stream_bytes() {
    let frame = Frame::SynStream(SynStream {
        stream_id: 3,
        associated_stream_id: 1,
        priority: 7,
        slot: 0,
        fin: true,
        unidirectional: true,
        headers: Headers::new().with("streamtype", "stdin"),
    });
    let bytes = encode(&frame);
    let len = bytes.len() - 8;
    assert_eq!(
        &bytes[..18],
        &[
            0x80,
            0x03,
            0x00,
            0x01, // type 1 SYN_STREAM
            0x03, // flags FIN | UNIDIRECTIONAL
            (len >> 16) as u8,
            (len >> 8) as u8,
            len as u8, // length
            0x00,
            0x00,
            0x00,
            0x03, // stream id
            0x00,
            0x00,
            0x00,
            0x01, // associated-to stream id
            0xe0, // priority 7 in the top 3 bits
            0x00, // slot
        ]
    );
    assert_eq!(inflate_first_block(&bytes[18..]), STDIN_BLOCK);
    assert_eq!(decode_all(&bytes), vec![frame]);
}

#[test]
fn syn_reply_and_headers_bytes() {
    for (frame_type, frame) in [
        (
            2u8,
            Frame::SynReply(SynReply {
                stream_id: 0x0102_0304,
                fin: false,
                headers: Headers::new().with("streamtype", "stdin"),
            }),
        ),
        (
            8u8,
            Frame::Headers(HeadersFrame {
                stream_id: 0x0102_0304,
                fin: true,
                headers: Headers::new().with("streamtype", "stdin"),
            }),
        ),
    ] {
        let bytes = encode(&frame);
        let len = bytes.len() - 8;
        let fin = u8::from(frame_type == 8);
        assert_eq!(
            &bytes[..12],
            &[
                0x80,
                0x03,
                0x00,
                frame_type,
                fin,
                (len >> 16) as u8,
                (len >> 8) as u8,
                len as u8,
                0x01,
                0x02,
                0x03,
                0x04,
            ]
        );
        assert_eq!(inflate_first_block(&bytes[12..]), STDIN_BLOCK);
        assert_eq!(decode_all(&bytes), vec![frame]);
    }
}

#[test]
fn header_frames_share_one_compression_context() {
    // Several header frames encoded by one encoder decode in order with one decoder, and
    // the second block is smaller (it refers back into the shared window).
    let mut enc = FrameEncoder::new().expect("encoder");
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for id in [1u32, 3, 5] {
        let f = Frame::SynStream(SynStream {
            stream_id: id,
            associated_stream_id: 0,
            priority: 0,
            slot: 0,
            fin: false,
            unidirectional: false,
            headers: Headers::new()
                .with("streamtype", "data")
                .with("port", "8080")
                .with("requestid", &id.to_string()),
        });
        let before = buf.len();
        enc.encode(&f, &mut buf).expect("encodes");
        frames.push((f, buf.len() - before));
    }
    assert!(frames[1].1 < frames[0].1, "{frames:?}");
    let decoded = decode_all(&buf);
    assert_eq!(
        decoded,
        frames.into_iter().map(|(f, _)| f).collect::<Vec<_>>()
    );
}

#[test]
fn unknown_control_frames_are_skipped() {
    let bytes = [
        0x80, 0x03, 0x00, 0x05, // type 5 (SPDY/2 NOOP): unknown in SPDY/3
        0x00, 0x00, 0x00, 0x03, // length 3
        0xaa, 0xbb, 0xcc, // ignored payload
        0x80, 0x03, 0x00, 0x06, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x02, // PING 2
    ];
    assert_eq!(
        decode_all(&bytes),
        vec![
            Frame::Unknown {
                frame_type: 5,
                flags: 0
            },
            Frame::Ping(Ping { id: 2 })
        ]
    );
}

fn sample_frames() -> Vec<Frame> {
    vec![
        Frame::SynStream(SynStream {
            stream_id: 1,
            associated_stream_id: 0,
            priority: 0,
            slot: 0,
            fin: false,
            unidirectional: false,
            headers: Headers::new().with("streamtype", "error"),
        }),
        Frame::SynReply(SynReply {
            stream_id: 1,
            fin: false,
            headers: Headers::new(),
        }),
        Frame::Data(Data {
            stream_id: 1,
            fin: false,
            data: Bytes::from(vec![7u8; 300]),
        }),
        Frame::Settings(Settings {
            clear: false,
            entries: vec![Setting {
                flags: 0,
                id: SETTINGS_INITIAL_WINDOW_SIZE,
                value: 1024,
            }],
        }),
        Frame::WindowUpdate(WindowUpdate {
            stream_id: 1,
            delta: 300,
        }),
        Frame::Ping(Ping { id: 1 }),
        Frame::Headers(HeadersFrame {
            stream_id: 1,
            fin: true,
            headers: Headers::new().with("a", "b"),
        }),
        Frame::RstStream(RstStream {
            stream_id: 1,
            status: RstStatus::Cancel,
        }),
        Frame::GoAway(GoAway {
            last_good_stream_id: 1,
            status: GoAwayStatus::Ok,
        }),
    ]
}

#[test]
fn every_truncation_needs_more_and_consumes_nothing() {
    let frames = sample_frames();
    let mut enc = FrameEncoder::new().expect("encoder");
    let mut all = BytesMut::new();
    for f in &frames {
        enc.encode(f, &mut all).expect("encodes");
    }
    // Feed the stream one byte at a time: a frame appears exactly when its last byte does.
    let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME_PAYLOAD, DEFAULT_MAX_HEADER_BLOCK);
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    for &b in all.iter() {
        buf.put_u8(b);
        let before = buf.len();
        match dec.decode(&mut buf).expect("decodes") {
            Some(f) => got.push(f),
            None => assert_eq!(buf.len(), before, "partial frame consumed"),
        }
    }
    assert!(buf.is_empty());
    assert_eq!(got, frames);
}

#[test]
fn oversized_frames_are_refused_before_buffering() {
    let mut dec = FrameDecoder::new(1024, DEFAULT_MAX_HEADER_BLOCK);
    // DATA, stream 1, length 1025: only the 8 header bytes are present.
    let mut buf = BytesMut::from(&[0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x04, 0x01][..]);
    assert_eq!(
        dec.decode(&mut buf),
        Err(FrameError::TooLarge {
            len: 1025,
            max: 1024
        })
    );
    // Exactly the cap is fine.
    let mut ok = BytesMut::from(&[0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x04, 0x00][..]);
    assert_eq!(dec.decode(&mut ok), Ok(None));
    ok.extend_from_slice(&[0u8; 1024]);
    assert!(matches!(dec.decode(&mut ok), Ok(Some(Frame::Data(_)))));
    // The default cap refuses a 16 MiB - 1 control frame too.
    let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME_PAYLOAD, DEFAULT_MAX_HEADER_BLOCK);
    let mut big = BytesMut::from(&[0x80, 0x03, 0x00, 0x01, 0x00, 0xff, 0xff, 0xff][..]);
    assert!(matches!(
        dec.decode(&mut big),
        Err(FrameError::TooLarge { .. })
    ));
}

#[test]
fn malformed_control_frames_are_errors() {
    let cases: &[(&[u8], FrameError)] = &[
        (
            // PING with length 5.
            &[0x80, 0x03, 0x00, 0x06, 0, 0, 0, 5, 0, 0, 0, 1, 0],
            FrameError::InvalidLength {
                frame_type: 6,
                len: 5,
            },
        ),
        (
            // SPDY/2 SYN_STREAM.
            &[0x80, 0x02, 0x00, 0x01, 0, 0, 0, 0],
            FrameError::UnsupportedVersion(2),
        ),
        (
            // RST_STREAM on stream 0.
            &[0x80, 0x03, 0x00, 0x03, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 1],
            FrameError::ZeroStreamId(3),
        ),
        (
            // DATA on stream 0.
            &[0, 0, 0, 0, 0, 0, 0, 0],
            FrameError::ZeroStreamId(0),
        ),
        (
            // SETTINGS claiming 2 entries with room for 1.
            &[
                0x80, 0x03, 0x00, 0x04, 0, 0, 0, 12, 0, 0, 0, 2, 0, 0, 0, 7, 0, 0, 1, 0,
            ],
            FrameError::InvalidLength {
                frame_type: 4,
                len: 12,
            },
        ),
        (
            // GOAWAY of SPDY/2 length 4.
            &[0x80, 0x03, 0x00, 0x07, 0, 0, 0, 4, 0, 0, 0, 1],
            FrameError::InvalidLength {
                frame_type: 7,
                len: 4,
            },
        ),
        (
            &[0x80, 0x03, 0x00, 0x06, 0, 0, 0, 4, 0, 0, 0, 0],
            FrameError::ZeroPingId,
        ),
    ];
    for (bytes, want) in cases {
        let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME_PAYLOAD, DEFAULT_MAX_HEADER_BLOCK);
        let mut buf = BytesMut::from(*bytes);
        assert_eq!(dec.decode(&mut buf).as_ref(), Err(want), "{bytes:02x?}");
    }
    // A SYN_STREAM whose header block is not zlib.
    let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME_PAYLOAD, DEFAULT_MAX_HEADER_BLOCK);
    let mut buf = BytesMut::from(
        &[
            0x80, 0x03, 0x00, 0x01, 0, 0, 0, 14, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4,
        ][..],
    );
    assert!(matches!(dec.decode(&mut buf), Err(FrameError::Header(_))));
}

#[test]
fn encoder_refuses_out_of_range_fields() {
    let mut enc = FrameEncoder::new().expect("encoder");
    let mut buf = BytesMut::new();
    let bad = [
        Frame::Data(Data {
            stream_id: 0,
            fin: false,
            data: Bytes::new(),
        }),
        Frame::Data(Data {
            stream_id: 1 << 31,
            fin: false,
            data: Bytes::new(),
        }),
        Frame::Data(Data {
            stream_id: 1,
            fin: false,
            data: Bytes::from(vec![0u8; MAX_PAYLOAD_LEN + 1]),
        }),
        Frame::WindowUpdate(WindowUpdate {
            stream_id: 1,
            delta: 1 << 31,
        }),
        Frame::SynStream(SynStream {
            stream_id: 1,
            associated_stream_id: 0,
            priority: 8,
            slot: 0,
            fin: false,
            unidirectional: false,
            headers: Headers::new(),
        }),
    ];
    for f in bad {
        assert!(
            matches!(enc.encode(&f, &mut buf), Err(FrameError::Unencodable(_))),
            "{f:?}"
        );
    }
    assert!(buf.is_empty());
}

/// xorshift32: deterministic noise without a dependency.
struct Noise(u32);
impl Noise {
    fn next(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 17;
        self.0 ^= self.0 << 5;
        self.0
    }
}

/// Decodes until error or need-more; never panics, never loops.
fn drain(dec: &mut FrameDecoder, buf: &mut BytesMut) {
    for _ in 0..10_000 {
        match dec.decode(buf) {
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return,
        }
    }
    panic!("decoder did not stop");
}

#[test]
fn random_and_mutated_input_never_panics() {
    let mut noise = Noise(0x9e37_79b9);
    // Pure noise, and noise behind a valid control-frame prefix of every type (so that the
    // type-specific parsers and the zlib path see garbage, not only the length check).
    for round in 0..3000u32 {
        let len = (noise.next() % 96) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| noise.next() as u8).collect();
        if round % 2 == 0 {
            let frame_type = (round / 2 % 12) as u8;
            let payload = (noise.next() % 64) as u8;
            let mut prefixed = vec![
                0x80,
                0x03,
                0x00,
                frame_type,
                noise.next() as u8,
                0,
                0,
                payload,
            ];
            prefixed.append(&mut bytes);
            bytes = prefixed;
        }
        let mut dec = FrameDecoder::new(4096, 4096);
        let mut buf = BytesMut::from(&bytes[..]);
        drain(&mut dec, &mut buf);
    }
    // Valid frames with single bytes flipped, fed in random-sized pieces.
    let mut enc = FrameEncoder::new().expect("encoder");
    let mut valid = BytesMut::new();
    for f in sample_frames() {
        enc.encode(&f, &mut valid).expect("encodes");
    }
    for _ in 0..500 {
        let mut bytes = valid.to_vec();
        for _ in 0..3 {
            let at = noise.next() as usize % bytes.len();
            bytes[at] ^= 1 << (noise.next() % 8);
        }
        let mut dec = FrameDecoder::new(4096, 4096);
        let mut buf = BytesMut::new();
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let n = (noise.next() as usize % 17 + 1).min(rest.len());
            buf.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            drain(&mut dec, &mut buf);
        }
    }
}
