//! SPDY/3 header blocks: name/value pairs, and their zlib compression.
//!
//! A header block is `count:u32` followed by `count` pairs of `len:u32 name len:u32 value`
//! (SPDY/3 widened SPDY/2's 16-bit lengths to 32). Names are lower case; several values of
//! one name travel as one value joined by NUL. The whole block is compressed with zlib,
//! primed with the SPDY/3 dictionary, and each direction of a connection keeps ONE
//! compression context for its whole life: every block is a `SYNC_FLUSH` chunk of the same
//! zlib stream. That is why the compressor/decompressor here are stateful objects owned by
//! the frame encoder/decoder, and why a block that fails to decompress poisons the
//! connection (the peer's context and ours no longer agree).

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// Why a header block could not be encoded or decoded.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum HeaderError {
    /// A header name that SPDY cannot carry (empty, or containing NUL).
    #[error("invalid header name {0:?}")]
    InvalidName(String),
    /// A header value containing NUL, which SPDY uses to separate values.
    #[error("header {0:?} has a value containing NUL")]
    InvalidValue(String),
    /// A block longer than the 32-bit lengths of the format (never in practice).
    #[error("header block too large to encode")]
    TooLargeToEncode,
    /// The decompressed block is larger than the configured limit: a zlib bomb or a peer
    /// with absurd headers; either way we stop before allocating it.
    #[error("decompressed header block exceeds {limit} bytes")]
    TooLarge {
        /// The limit that was exceeded.
        limit: usize,
    },
    /// The peer's zlib stream asked for a dictionary other than SPDY/3's.
    #[error("header block wants zlib dictionary {0:#010x}, not the SPDY/3 one")]
    WrongDictionary(u32),
    /// zlib rejected the compressed bytes.
    #[error("header block decompression failed: {0}")]
    Decompress(String),
    /// zlib failed to compress (an internal error).
    #[error("header block compression failed: {0}")]
    Compress(String),
    /// The decompressed bytes are not a well-formed name/value block.
    #[error("malformed header block: {0}")]
    Malformed(&'static str),
}

/// Header names and values of one SYN_STREAM, SYN_REPLY or HEADERS frame.
///
/// Kept as an ordered list of `(name, value)` with one entry per value: that is what the
/// k8s stream protocols need (`streamtype`, `port`, `requestid`: one value each) and it
/// preserves order for byte-exact tests. Names are lower-cased on insertion because SPDY
/// requires it (Go's framer rejects upper-case names with an error that kills the
/// connection).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    entries: Vec<(String, String)>,
}

impl Headers {
    /// An empty header set.
    pub fn new() -> Headers {
        Headers::default()
    }

    /// Adds a value for `name` (lower-cased), after any existing ones.
    pub fn append(&mut self, name: &str, value: &str) {
        self.entries
            .push((name.to_ascii_lowercase(), value.to_string()));
    }

    /// Builder form of [`Headers::append`].
    pub fn with(mut self, name: &str, value: &str) -> Headers {
        self.append(name, value);
        self
    }

    /// The first value of `name` (case-insensitive), if any.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name` (case-insensitive), in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.entries
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// All `(name, value)` entries in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// Number of `(name, value)` entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The uncompressed SPDY/3 block: values of one name joined by NUL, one pair per
    /// distinct name in order of first appearance (Go's framer rejects duplicate names).
    pub fn to_block(&self) -> Result<Vec<u8>, HeaderError> {
        let mut grouped: Vec<(&str, Vec<&str>)> = Vec::new();
        for (name, value) in &self.entries {
            if name.is_empty() || name.contains('\0') {
                return Err(HeaderError::InvalidName(name.clone()));
            }
            if value.contains('\0') {
                return Err(HeaderError::InvalidValue(name.clone()));
            }
            match grouped.iter_mut().find(|(n, _)| n == name) {
                Some((_, values)) => values.push(value),
                None => grouped.push((name, vec![value])),
            }
        }
        let mut out = Vec::new();
        put_len(&mut out, grouped.len())?;
        for (name, values) in grouped {
            put_len(&mut out, name.len())?;
            out.extend_from_slice(name.as_bytes());
            let joined = values.join("\0");
            put_len(&mut out, joined.len())?;
            out.extend_from_slice(joined.as_bytes());
        }
        Ok(out)
    }

    /// Parses an uncompressed block. Lenient where Go is lenient (duplicate names merge,
    /// upper case is lowered) and strict about structure: every length must fit and no
    /// byte may trail the last pair. Non-UTF-8 bytes are replaced (k8s headers are ASCII).
    pub fn from_block(block: &[u8]) -> Result<Headers, HeaderError> {
        let mut rest = block;
        let count = take_u32(&mut rest)?;
        // Each pair needs at least its two length fields: bounds `count` by the input, so a
        // lying count cannot make us loop or allocate.
        if (count as usize) > rest.len() / 8 {
            return Err(HeaderError::Malformed("pair count exceeds block length"));
        }
        let mut headers = Headers::new();
        for _ in 0..count {
            let name = take_bytes(&mut rest)?;
            let value = take_bytes(&mut rest)?;
            let name = String::from_utf8_lossy(name).to_ascii_lowercase();
            let value = String::from_utf8_lossy(value);
            for v in value.split('\0') {
                headers.entries.push((name.clone(), v.to_string()));
            }
        }
        if !rest.is_empty() {
            return Err(HeaderError::Malformed("bytes after the last pair"));
        }
        Ok(headers)
    }
}

fn put_len(out: &mut Vec<u8>, len: usize) -> Result<(), HeaderError> {
    let len = u32::try_from(len).map_err(|_| HeaderError::TooLargeToEncode)?;
    out.extend_from_slice(&len.to_be_bytes());
    Ok(())
}

fn take_u32(rest: &mut &[u8]) -> Result<u32, HeaderError> {
    let Some((head, tail)) = rest.split_first_chunk::<4>() else {
        return Err(HeaderError::Malformed("truncated length"));
    };
    *rest = tail;
    Ok(u32::from_be_bytes(*head))
}

fn take_bytes<'a>(rest: &mut &'a [u8]) -> Result<&'a [u8], HeaderError> {
    let len = take_u32(rest)? as usize;
    if len > rest.len() {
        return Err(HeaderError::Malformed("length runs past the block"));
    }
    let (bytes, tail) = rest.split_at(len);
    *rest = tail;
    Ok(bytes)
}

/// The words of the SPDY/3 dictionary (draft 3, section 2.6.10.1), each stored in the
/// dictionary as a 32-bit big-endian length followed by the word, then [`DICT_TAIL`]
/// verbatim. Written as text rather than a hex table so that it can be read; the test
/// `dictionary_matches_spdy3` pins its Adler-32 to the value real SPDY/3 peers put in their
/// zlib headers.
const DICT_WORDS: &[&str] = &[
    "options",
    "head",
    "post",
    "put",
    "delete",
    "trace",
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "connection",
    "content-base",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-md5",
    "content-range",
    "content-type",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "location",
    "max-forwards",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "retry-after",
    "server",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "vary",
    "via",
    "warning",
    "www-authenticate",
    "method",
    "get",
    "status",
    "200 OK",
    "version",
    "HTTP/1.1",
    "url",
    "public",
    "set-cookie",
    "keep-alive",
    "origin",
];

/// The unprefixed text that ends the SPDY/3 dictionary.
const DICT_TAIL: &str = concat!(
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
    "203 Non-Authoritative Information",
    "204 No Content",
    "301 Moved Permanently",
    "400 Bad Request",
    "401 Unauthorized",
    "403 Forbidden",
    "404 Not Found",
    "500 Internal Server Error",
    "501 Not Implemented",
    "503 Service Unavailable",
    "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 ",
    "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT",
    "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,",
    "text/plain,text/javascript,publicprivatemax-age=gzip,deflate,sdch",
    "charset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
);

const fn dictionary_len() -> usize {
    let mut len = DICT_TAIL.len();
    let mut i = 0;
    while i < DICT_WORDS.len() {
        len += 4 + DICT_WORDS[i].len();
        i += 1;
    }
    len
}

const fn build_dictionary() -> [u8; dictionary_len()] {
    let mut out = [0u8; dictionary_len()];
    let mut pos = 0;
    let mut i = 0;
    while i < DICT_WORDS.len() {
        let word = DICT_WORDS[i].as_bytes();
        let len = (word.len() as u32).to_be_bytes();
        let mut j = 0;
        while j < 4 {
            out[pos] = len[j];
            pos += 1;
            j += 1;
        }
        j = 0;
        while j < word.len() {
            out[pos] = word[j];
            pos += 1;
            j += 1;
        }
        i += 1;
    }
    let tail = DICT_TAIL.as_bytes();
    let mut j = 0;
    while j < tail.len() {
        out[pos] = tail[j];
        pos += 1;
        j += 1;
    }
    out
}

/// The SPDY/3 zlib dictionary, byte for byte (1423 bytes).
pub static DICTIONARY: [u8; dictionary_len()] = build_dictionary();

/// Adler-32 of [`DICTIONARY`]: the DICTID every SPDY/3 zlib stream carries in its header.
pub const DICTIONARY_ID: u32 = 0xe3c6_a7c2;

/// Compresses the header blocks of one direction of a connection.
pub struct HeaderCompressor {
    zlib: Compress,
}

impl std::fmt::Debug for HeaderCompressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeaderCompressor").finish_non_exhaustive()
    }
}

impl HeaderCompressor {
    /// A fresh context: zlib header with the SPDY/3 DICTID, best compression like Go's
    /// framer (the blocks are tiny, so the level costs nothing measurable).
    pub fn new() -> Result<HeaderCompressor, HeaderError> {
        let mut zlib = Compress::new(Compression::best(), true);
        zlib.set_dictionary(&DICTIONARY)
            .map_err(|e| HeaderError::Compress(e.to_string()))?;
        Ok(HeaderCompressor { zlib })
    }

    /// Compresses `headers` as the next block of this context and appends it to `out`.
    pub fn compress(&mut self, headers: &Headers, out: &mut Vec<u8>) -> Result<(), HeaderError> {
        let block = headers.to_block()?;
        self.compress_raw(&block, out)
    }

    /// Compresses an already-built uncompressed block (tests use it for odd blocks).
    pub fn compress_raw(&mut self, block: &[u8], out: &mut Vec<u8>) -> Result<(), HeaderError> {
        let start_in = self.zlib.total_in();
        loop {
            // zlib signals "flush complete" by leaving output space unused; keep at least
            // some headroom so that a full buffer means "call again".
            out.reserve(block.len() / 2 + 64);
            let consumed = usize::try_from(self.zlib.total_in() - start_in)
                .map_err(|_| HeaderError::Compress("input counter overflow".into()))?;
            let input = block.get(consumed..).unwrap_or_default();
            self.zlib
                .compress_vec(input, out, FlushCompress::Sync)
                .map_err(|e| HeaderError::Compress(e.to_string()))?;
            let consumed = usize::try_from(self.zlib.total_in() - start_in)
                .map_err(|_| HeaderError::Compress("input counter overflow".into()))?;
            if consumed >= block.len() && out.len() < out.capacity() {
                return Ok(());
            }
        }
    }
}

/// Decompresses the header blocks of one direction of a connection.
pub struct HeaderDecompressor {
    zlib: Decompress,
    max_len: usize,
}

impl std::fmt::Debug for HeaderDecompressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeaderDecompressor")
            .field("max_len", &self.max_len)
            .finish_non_exhaustive()
    }
}

impl HeaderDecompressor {
    /// A fresh context that refuses blocks decompressing to more than `max_len` bytes.
    pub fn new(max_len: usize) -> HeaderDecompressor {
        HeaderDecompressor {
            zlib: Decompress::new(true),
            max_len,
        }
    }

    /// Decompresses and parses the next block of this context.
    ///
    /// An empty compressed block is an empty header set and leaves the context untouched
    /// (some peers send nothing at all for "no headers").
    pub fn decompress(&mut self, compressed: &[u8]) -> Result<Headers, HeaderError> {
        if compressed.is_empty() {
            return Ok(Headers::new());
        }
        let block = self.decompress_raw(compressed)?;
        Headers::from_block(&block)
    }

    /// Decompresses the next block without parsing it.
    pub fn decompress_raw(&mut self, compressed: &[u8]) -> Result<Vec<u8>, HeaderError> {
        let limit = self.max_len;
        let initial = compressed.len().saturating_mul(4).clamp(256, limit.max(1));
        let mut out: Vec<u8> = Vec::with_capacity(initial);
        let start_in = self.zlib.total_in();
        let consumed = |zlib: &Decompress| {
            usize::try_from(zlib.total_in() - start_in)
                .map_err(|_| HeaderError::Decompress("input counter overflow".into()))
        };
        loop {
            if out.len() == out.capacity() {
                // Grow, but never past limit + 1: a bomb is caught at the limit rather
                // than after inflating it.
                if out.capacity() > limit {
                    return Err(HeaderError::TooLarge { limit });
                }
                let room = out.capacity().max(256).min(limit + 1 - out.capacity());
                out.reserve_exact(room);
            }
            let before_in = consumed(&self.zlib)?;
            let before_out = out.len();
            let input = compressed.get(before_in..).unwrap_or_default();
            let status = match self
                .zlib
                .decompress_vec(input, &mut out, FlushDecompress::Sync)
            {
                Ok(status) => status,
                Err(e) => match e.needs_dictionary() {
                    Some(DICTIONARY_ID) => {
                        self.zlib
                            .set_dictionary(&DICTIONARY)
                            .map_err(|e| HeaderError::Decompress(e.to_string()))?;
                        continue;
                    }
                    Some(other) => return Err(HeaderError::WrongDictionary(other)),
                    None => return Err(HeaderError::Decompress(e.to_string())),
                },
            };
            if out.len() > limit {
                return Err(HeaderError::TooLarge { limit });
            }
            let after_in = consumed(&self.zlib)?;
            let output_full = out.len() == out.capacity();
            if after_in >= compressed.len() && !output_full {
                return Ok(out);
            }
            if status == Status::StreamEnd {
                return Err(HeaderError::Decompress(
                    "zlib stream ended inside a header block".into(),
                ));
            }
            if !output_full && after_in == before_in && out.len() == before_out {
                // Input left, room left, and zlib took nothing: it is stuck on input it
                // cannot report as corrupt. Refuse rather than spin.
                return Err(HeaderError::Decompress("no progress".into()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Adler-32 as RFC 1950 defines it, written out here so the dictionary check does not
    /// trust the zlib implementation it is meant to feed.
    fn adler32(bytes: &[u8]) -> u32 {
        let (mut a, mut b) = (1u32, 0u32);
        for &byte in bytes {
            a = (a + u32::from(byte)) % 65521;
            b = (b + a) % 65521;
        }
        (b << 16) | a
    }

    #[test]
    fn dictionary_matches_spdy3() {
        // 1423 bytes and DICTID e3c6a7c2: the DICTID is what real SPDY/3 SYN_STREAMs
        // (Chrome, Firefox captures) carry right after their `38 ea`/`78 xx` zlib header.
        assert_eq!(DICTIONARY.len(), 1423);
        assert_eq!(adler32(&DICTIONARY), DICTIONARY_ID);
        assert_eq!(&DICTIONARY[..11], b"\x00\x00\x00\x07options");
        assert!(DICTIONARY.ends_with(b",*,enq=0."));
    }

    #[test]
    fn block_layout_is_byte_exact() {
        let headers = Headers::new()
            .with("StreamType", "error")
            .with("port", "80")
            .with("port", "443");
        let block = headers.to_block().expect("encodes");
        let mut expected = Vec::new();
        expected.extend_from_slice(&[0, 0, 0, 2]); // two distinct names
        expected.extend_from_slice(&[0, 0, 0, 10]);
        expected.extend_from_slice(b"streamtype"); // lower-cased
        expected.extend_from_slice(&[0, 0, 0, 5]);
        expected.extend_from_slice(b"error");
        expected.extend_from_slice(&[0, 0, 0, 4]);
        expected.extend_from_slice(b"port");
        expected.extend_from_slice(&[0, 0, 0, 6]);
        expected.extend_from_slice(b"80\x00443"); // values joined by NUL
        assert_eq!(block, expected);
        let back = Headers::from_block(&block).expect("parses");
        assert_eq!(back.get("streamtype"), Some("error"));
        assert_eq!(back.get_all("port").collect::<Vec<_>>(), vec!["80", "443"]);
        assert_eq!(back, headers);
    }

    #[test]
    fn invalid_names_and_values_are_refused() {
        assert!(matches!(
            Headers::new().with("", "x").to_block(),
            Err(HeaderError::InvalidName(_))
        ));
        assert!(matches!(
            Headers::new().with("a\0b", "x").to_block(),
            Err(HeaderError::InvalidName(_))
        ));
        assert!(matches!(
            Headers::new().with("a", "x\0y").to_block(),
            Err(HeaderError::InvalidValue(_))
        ));
    }

    #[test]
    fn malformed_blocks_are_refused() {
        // Count says 1000 pairs in 4 bytes.
        assert!(Headers::from_block(&[0, 0, 3, 0xe8, 0, 0, 0, 0]).is_err());
        // Name length past the end.
        assert!(Headers::from_block(&[0, 0, 0, 1, 0, 0, 0, 9, b'a', 0, 0, 0, 0]).is_err());
        // Trailing byte.
        assert!(Headers::from_block(&[0, 0, 0, 0, 7]).is_err());
        // Truncated count.
        assert!(Headers::from_block(&[0, 0]).is_err());
        assert_eq!(Headers::from_block(&[0, 0, 0, 0]), Ok(Headers::new()));
    }

    /// Inflates with a fresh flate2 context primed the documented way (wait for zlib's
    /// NEED_DICT, then give it the dictionary): independent of `HeaderDecompressor`.
    fn independent_inflate(ctx: &mut Decompress, input: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 * 1024);
        let start = ctx.total_in();
        loop {
            let done = (ctx.total_in() - start) as usize;
            match ctx.decompress_vec(&input[done..], &mut out, FlushDecompress::Sync) {
                Ok(_) => {}
                Err(e) => {
                    assert_eq!(e.needs_dictionary(), Some(DICTIONARY_ID));
                    ctx.set_dictionary(&DICTIONARY).expect("dictionary");
                    continue;
                }
            }
            if (ctx.total_in() - start) as usize == input.len() {
                return out;
            }
        }
    }

    #[test]
    fn compressed_blocks_decode_with_an_independent_context() {
        let mut compressor = HeaderCompressor::new().expect("compressor");
        let first = Headers::new().with("streamtype", "stdout");
        let second = Headers::new()
            .with("streamtype", "data")
            .with("port", "8080")
            .with("requestid", "0");
        let mut a = Vec::new();
        compressor.compress(&first, &mut a).expect("compress");
        let mut b = Vec::new();
        compressor.compress(&second, &mut b).expect("compress");

        // zlib header: CMF 0x78 (deflate, 32K window), FLG 0xf9 (level 3 = best, FDICT set,
        // FCHECK so that 0x78f9 % 31 == 0), then the DICTID.
        assert_eq!(&a[..6], &[0x78, 0xf9, 0xe3, 0xc6, 0xa7, 0xc2]);
        // SYNC_FLUSH: every block ends with the empty stored block 00 00 ff ff.
        assert!(a.ends_with(&[0x00, 0x00, 0xff, 0xff]));
        assert!(b.ends_with(&[0x00, 0x00, 0xff, 0xff]));
        // The second block continues the stream: no zlib header of its own.
        assert_ne!(&b[..2], &[0x78, 0xf9]);

        let mut ctx = Decompress::new(true);
        assert_eq!(
            independent_inflate(&mut ctx, &a),
            first.to_block().expect("block")
        );
        assert_eq!(
            independent_inflate(&mut ctx, &b),
            second.to_block().expect("block")
        );

        let mut ours = HeaderDecompressor::new(1 << 16);
        assert_eq!(ours.decompress(&a), Ok(first));
        assert_eq!(ours.decompress(&b), Ok(second));
    }

    /// A hand-built zlib stream (stored, i.e. uncompressed, deflate blocks) as any SPDY/3
    /// peer could legally send it: checks the decompressor against bytes we did not
    /// produce with our own compressor.
    #[test]
    fn decodes_a_hand_built_zlib_stream() {
        let mut stream = vec![
            0x78, 0x20, // CMF, FLG: FDICT set, level 0, 0x7820 % 31 == 0
            0xe3, 0xc6, 0xa7, 0xc2, // DICTID of the SPDY/3 dictionary
        ];
        // Block 1: {"streamtype": "error"}, 27 bytes, as a non-final stored block.
        let block1: &[u8] = b"\x00\x00\x00\x01\x00\x00\x00\x0astreamtype\x00\x00\x00\x05error";
        assert_eq!(block1.len(), 27);
        stream.extend_from_slice(&[0x00, 27, 0x00, !27u8, 0xff]); // BFINAL=0 BTYPE=00, LEN, NLEN
        stream.extend_from_slice(block1);
        let first_len = stream.len();
        // Block 2 in the same stream: zero headers.
        stream.extend_from_slice(&[0x00, 4, 0x00, !4u8, 0xff, 0, 0, 0, 0]);

        let mut ours = HeaderDecompressor::new(1024);
        let h1 = ours.decompress(&stream[..first_len]).expect("first block");
        assert_eq!(h1, Headers::new().with("streamtype", "error"));
        let h2 = ours.decompress(&stream[first_len..]).expect("second block");
        assert!(h2.is_empty());
    }

    #[test]
    fn refuses_a_foreign_dictionary() {
        // FDICT with DICTID 0x00000001.
        let stream = [0x78, 0x20, 0, 0, 0, 1, 0x00, 0, 0, 0xff, 0xff];
        let mut ours = HeaderDecompressor::new(1024);
        assert_eq!(
            ours.decompress(&stream),
            Err(HeaderError::WrongDictionary(1))
        );
    }

    #[test]
    fn bounds_the_decompressed_size() {
        let mut compressor = HeaderCompressor::new().expect("compressor");
        // 1 MiB of one byte compresses to ~1 KiB: a bomb against a 64 KiB limit.
        let value = "a".repeat(1 << 20);
        let mut compressed = Vec::new();
        compressor
            .compress(&Headers::new().with("x", &value), &mut compressed)
            .expect("compress");
        assert!(compressed.len() < 8 * 1024);
        let mut ours = HeaderDecompressor::new(64 * 1024);
        assert_eq!(
            ours.decompress(&compressed),
            Err(HeaderError::TooLarge { limit: 64 * 1024 })
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut seed = 0x1234_5678_u32;
        for round in 0..200 {
            let mut ours = HeaderDecompressor::new(4096);
            let len = (round % 40) + 1;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    seed as u8
                })
                .collect();
            let _ = ours.decompress(&bytes);
            // A valid header followed by garbage must not panic either.
            let mut prefixed = vec![0x78, 0xf9, 0xe3, 0xc6, 0xa7, 0xc2];
            prefixed.extend_from_slice(&bytes);
            let _ = HeaderDecompressor::new(4096).decompress(&prefixed);
        }
    }
}
