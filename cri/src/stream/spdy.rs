//! SPDY/3 framing as the Kubernetes streaming clients speak it (moby/spdystream, which client-go
//! uses and calls "SPDY/3.1"): frame encoding and decoding, and header blocks compressed with one
//! zlib stream per direction primed with the SPDY/3 dictionary. It owns bytes on the wire only;
//! streams and their lifetimes are [`super::session`]'s. No Rust crate does server-side SPDY/3 with
//! Kubernetes' conventions, so this is ours.

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub(crate) const VERSION: u16 = 3;

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;

const FLAG_FIN: u8 = 0x01;
const FLAG_UNIDIRECTIONAL: u8 = 0x02;

/// RST_STREAM status codes (SPDY/3 §2.4.2).
pub(crate) const RST_PROTOCOL_ERROR: u32 = 1;
pub(crate) const RST_REFUSED_STREAM: u32 = 3;
pub(crate) const RST_CANCEL: u32 = 5;

/// Header blocks larger than this, compressed or not, end the session: the clients send a handful
/// of short headers per stream.
const MAX_HEADER_BLOCK: usize = 64 * 1024;
const MAX_HEADER_PAIRS: u32 = 64;

/// One SPDY header block: names are lower case on the wire.
pub(crate) type Headers = Vec<(String, String)>;

/// The value of `name` (case-insensitive), first of several NUL-separated values.
pub(crate) fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.split('\0').next().unwrap_or(""))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Frame {
    SynStream {
        id: u32,
        fin: bool,
        unidirectional: bool,
        headers: Headers,
    },
    SynReply {
        id: u32,
        fin: bool,
        headers: Headers,
    },
    RstStream {
        id: u32,
        status: u32,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good: u32,
        status: u32,
    },
    Headers {
        id: u32,
        fin: bool,
        headers: Headers,
    },
    Data {
        id: u32,
        fin: bool,
        data: Bytes,
    },
    /// SETTINGS, WINDOW_UPDATE and unknown control frames: tolerated and ignored, as spdystream
    /// does (it implements no flow control, so neither side may wait for window updates).
    Ignored {
        kind: u16,
    },
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum SpdyError {
    #[error("spdy: {0}")]
    Io(#[from] std::io::Error),
    #[error("spdy protocol error: {0}")]
    Protocol(String),
}

fn protocol(msg: impl Into<String>) -> SpdyError {
    SpdyError::Protocol(msg.into())
}

/// The SPDY/3 header compression dictionary (draft-mbelshe-httpbis-spdy-00 §2.6.10.1): 65
/// length-prefixed header names and values, then a run of common strings. Built rather than written
/// out as 1423 bytes so that it can be read; a test pins its Adler-32.
pub(crate) fn dictionary() -> &'static [u8] {
    static DICT: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    DICT.get_or_init(|| {
        const WORDS: &[&str] = &[
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
        const TAIL: &str = concat!(
            "100101201202205206300302303304305306307402405406407408409410411412413414415416417",
            "502504505",
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
            "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec",
            " 00:00:00",
            " Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT",
            "chunked,text/html,image/png,image/jpg,image/gif,application/xml,",
            "application/xhtml+xml,text/plain,text/javascript,",
            "publicprivatemax-age=gzip,deflate,sdch",
            "charset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
        );
        let mut d = Vec::with_capacity(1423);
        for w in WORDS {
            d.extend_from_slice(&(w.len() as u32).to_be_bytes());
            d.extend_from_slice(w.as_bytes());
        }
        d.extend_from_slice(TAIL.as_bytes());
        d
    })
}

/// Reads frames from one direction of a session, with that direction's header decompressor.
pub(crate) struct FrameReader<R> {
    io: R,
    inflate: Decompress,
    max_data: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// `max_data` caps one DATA frame's payload; a larger one ends the session rather than being
    /// buffered.
    pub(crate) fn new(io: R, max_data: usize) -> Self {
        Self {
            io,
            inflate: Decompress::new(true),
            max_data,
        }
    }

    /// The next frame, or `None` at a clean end of stream between frames.
    pub(crate) async fn read(&mut self) -> Result<Option<Frame>, SpdyError> {
        let mut head = [0u8; 8];
        // A clean EOF is only one that falls before the first byte of a frame.
        let n = self.io.read(&mut head).await?;
        if n == 0 {
            return Ok(None);
        }
        self.io.read_exact(&mut head[n..]).await?;
        let flags = head[4];
        let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
        if head[0] & 0x80 == 0 {
            let id = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) & 0x7fff_ffff;
            if len > self.max_data {
                return Err(protocol(format!(
                    "data frame of {len} bytes is larger than {}",
                    self.max_data
                )));
            }
            let mut data = vec![0u8; len];
            self.io.read_exact(&mut data).await?;
            return Ok(Some(Frame::Data {
                id,
                fin: flags & FLAG_FIN != 0,
                data: Bytes::from(data),
            }));
        }
        let version = u16::from_be_bytes([head[0] & 0x7f, head[1]]);
        let kind = u16::from_be_bytes([head[2], head[3]]);
        if version != VERSION {
            return Err(protocol(format!("unsupported SPDY version {version}")));
        }
        if len > MAX_HEADER_BLOCK {
            return Err(protocol(format!("control frame of {len} bytes")));
        }
        let mut body = vec![0u8; len];
        self.io.read_exact(&mut body).await?;
        let fin = flags & FLAG_FIN != 0;
        let frame = match kind {
            SYN_STREAM => {
                if body.len() < 10 {
                    return Err(protocol("short SYN_STREAM"));
                }
                Frame::SynStream {
                    id: be31(&body[0..4]),
                    fin,
                    unidirectional: flags & FLAG_UNIDIRECTIONAL != 0,
                    headers: self.header_block(&body[10..])?,
                }
            }
            SYN_REPLY | HEADERS => {
                if body.len() < 4 {
                    return Err(protocol("short SYN_REPLY/HEADERS"));
                }
                let id = be31(&body[0..4]);
                let headers = self.header_block(&body[4..])?;
                if kind == SYN_REPLY {
                    Frame::SynReply { id, fin, headers }
                } else {
                    Frame::Headers { id, fin, headers }
                }
            }
            RST_STREAM => {
                if body.len() < 8 {
                    return Err(protocol("short RST_STREAM"));
                }
                Frame::RstStream {
                    id: be31(&body[0..4]),
                    status: be32(&body[4..8]),
                }
            }
            PING => {
                if body.len() < 4 {
                    return Err(protocol("short PING"));
                }
                Frame::Ping {
                    id: be32(&body[0..4]),
                }
            }
            GOAWAY => {
                if body.len() < 4 {
                    return Err(protocol("short GOAWAY"));
                }
                Frame::GoAway {
                    last_good: be31(&body[0..4]),
                    // SPDY/2 peers send no status.
                    status: if body.len() >= 8 {
                        be32(&body[4..8])
                    } else {
                        0
                    },
                }
            }
            kind => Frame::Ignored { kind },
        };
        Ok(Some(frame))
    }

    fn header_block(&mut self, compressed: &[u8]) -> Result<Headers, SpdyError> {
        let raw = inflate_block(&mut self.inflate, compressed)?;
        parse_headers(&raw)
    }
}

fn be31(b: &[u8]) -> u32 {
    be32(b) & 0x7fff_ffff
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Decompresses one header block: the peer ends each with a zlib sync flush, so all of it is
/// available once the input is consumed. The first block asks for the dictionary.
fn inflate_block(inflate: &mut Decompress, input: &[u8]) -> Result<Vec<u8>, SpdyError> {
    let mut out = Vec::with_capacity(1024);
    let mut pos = 0usize;
    loop {
        if out.len() == out.capacity() {
            if out.capacity() >= MAX_HEADER_BLOCK {
                return Err(protocol("header block too large"));
            }
            out.reserve(out.capacity());
        }
        let before = inflate.total_in();
        let res = inflate.decompress_vec(&input[pos..], &mut out, FlushDecompress::Sync);
        pos += (inflate.total_in() - before) as usize;
        match res {
            Ok(Status::StreamEnd) => return Err(protocol("header zlib stream ended")),
            Ok(_) => {
                if pos >= input.len() && out.len() < out.capacity() {
                    return Ok(out);
                }
            }
            Err(e) if e.needs_dictionary().is_some() => {
                inflate
                    .set_dictionary(dictionary())
                    .map_err(|e| protocol(format!("header dictionary: {e}")))?;
            }
            Err(e) => return Err(protocol(format!("header block: {e}"))),
        }
    }
}

fn parse_headers(raw: &[u8]) -> Result<Headers, SpdyError> {
    let mut rest = raw;
    let mut take = |n: usize| -> Result<&[u8], SpdyError> {
        if rest.len() < n {
            return Err(protocol("truncated header block"));
        }
        let (a, b) = rest.split_at(n);
        rest = b;
        Ok(a)
    };
    let count = be32(take(4)?);
    if count > MAX_HEADER_PAIRS {
        return Err(protocol(format!("{count} headers")));
    }
    let mut headers = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let n = be32(take(4)?) as usize;
        let name = String::from_utf8_lossy(take(n)?).to_ascii_lowercase();
        let n = be32(take(4)?) as usize;
        let value = String::from_utf8_lossy(take(n)?).into_owned();
        headers.push((name, value));
    }
    Ok(headers)
}

/// Writes frames in one direction of a session, with that direction's header compressor. Frames
/// must leave through one writer in order, since every header block continues the same zlib stream.
pub(crate) struct FrameWriter<W> {
    io: W,
    deflate: Compress,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    pub(crate) fn new(io: W) -> Result<Self, SpdyError> {
        let mut deflate = Compress::new(Compression::default(), true);
        deflate
            .set_dictionary(dictionary())
            .map_err(|e| protocol(format!("header dictionary: {e}")))?;
        Ok(Self { io, deflate })
    }

    pub(crate) async fn write(&mut self, frame: &Frame) -> Result<(), SpdyError> {
        let mut buf = Vec::with_capacity(64);
        match frame {
            Frame::Data { id, fin, data } => {
                buf.extend_from_slice(&(id & 0x7fff_ffff).to_be_bytes());
                buf.push(if *fin { FLAG_FIN } else { 0 });
                buf.extend_from_slice(&len24(data.len())?);
                self.io.write_all(&buf).await?;
                self.io.write_all(data).await?;
                return Ok(());
            }
            Frame::SynStream {
                id,
                fin,
                unidirectional,
                headers,
            } => {
                let mut body = Vec::with_capacity(64);
                body.extend_from_slice(&id.to_be_bytes());
                body.extend_from_slice(&0u32.to_be_bytes()); // associated stream
                body.extend_from_slice(&[0, 0]); // priority, slot
                body.extend_from_slice(&self.header_block(headers)?);
                let mut flags = if *fin { FLAG_FIN } else { 0 };
                if *unidirectional {
                    flags |= FLAG_UNIDIRECTIONAL;
                }
                control(&mut buf, SYN_STREAM, flags, &body)?;
            }
            Frame::SynReply { id, fin, headers } | Frame::Headers { id, fin, headers } => {
                let kind = if matches!(frame, Frame::SynReply { .. }) {
                    SYN_REPLY
                } else {
                    HEADERS
                };
                let mut body = Vec::with_capacity(32);
                body.extend_from_slice(&id.to_be_bytes());
                body.extend_from_slice(&self.header_block(headers)?);
                control(&mut buf, kind, if *fin { FLAG_FIN } else { 0 }, &body)?;
            }
            Frame::RstStream { id, status } => {
                let mut body = id.to_be_bytes().to_vec();
                body.extend_from_slice(&status.to_be_bytes());
                control(&mut buf, RST_STREAM, 0, &body)?;
            }
            Frame::Ping { id } => control(&mut buf, PING, 0, &id.to_be_bytes())?,
            Frame::GoAway { last_good, status } => {
                let mut body = last_good.to_be_bytes().to_vec();
                body.extend_from_slice(&status.to_be_bytes());
                control(&mut buf, GOAWAY, 0, &body)?;
            }
            Frame::Ignored { kind } => {
                // Only tests send these, to check that the other side tolerates them.
                let body: &[u8] = match *kind {
                    SETTINGS => &[0, 0, 0, 0],
                    WINDOW_UPDATE => &[0, 0, 0, 1, 0, 0, 0x10, 0],
                    _ => &[],
                };
                control(&mut buf, *kind, 0, body)?;
            }
        }
        self.io.write_all(&buf).await?;
        Ok(())
    }

    pub(crate) async fn flush(&mut self) -> Result<(), SpdyError> {
        Ok(self.io.flush().await?)
    }

    pub(crate) async fn shutdown(&mut self) -> Result<(), SpdyError> {
        Ok(self.io.shutdown().await?)
    }

    fn header_block(&mut self, headers: &Headers) -> Result<Vec<u8>, SpdyError> {
        let mut raw = Vec::with_capacity(64);
        raw.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        for (n, v) in headers {
            raw.extend_from_slice(&(n.len() as u32).to_be_bytes());
            raw.extend_from_slice(n.to_ascii_lowercase().as_bytes());
            raw.extend_from_slice(&(v.len() as u32).to_be_bytes());
            raw.extend_from_slice(v.as_bytes());
        }
        if raw.len() > MAX_HEADER_BLOCK {
            return Err(protocol("header block too large"));
        }
        let mut out = Vec::with_capacity(raw.len() + 64);
        let mut pos = 0usize;
        loop {
            out.reserve(256);
            let before = self.deflate.total_in();
            self.deflate
                .compress_vec(&raw[pos..], &mut out, FlushCompress::Sync)
                .map_err(|e| protocol(format!("compressing headers: {e}")))?;
            pos += (self.deflate.total_in() - before) as usize;
            // Room left after a sync flush means the flush is complete.
            if pos >= raw.len() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }
}

fn control(buf: &mut Vec<u8>, kind: u16, flags: u8, body: &[u8]) -> Result<(), SpdyError> {
    buf.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    buf.extend_from_slice(&kind.to_be_bytes());
    buf.push(flags);
    buf.extend_from_slice(&len24(body.len())?);
    buf.extend_from_slice(body);
    Ok(())
}

fn len24(n: usize) -> Result<[u8; 3], SpdyError> {
    if n >= 1 << 24 {
        return Err(protocol("frame too long"));
    }
    let b = (n as u32).to_be_bytes();
    Ok([b[1], b[2], b[3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dictionary_is_the_spdy3_one() {
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        // Adler-32 of the dictionary, as zlib puts it in the header of every SPDY/3 header stream.
        let (mut a, mut b) = (1u32, 0u32);
        for &x in d {
            a = (a + x as u32) % 65521;
            b = (b + a) % 65521;
        }
        assert_eq!((b << 16) | a, 0xe3c6_a7c2);
    }

    /// A SYN_STREAM as a zlib with a preset dictionary (Python's `zlib.compressobj(zdict=..)`,
    /// like Go's `zlib.NewWriterLevelDict`) writes it: stream 1, `streamtype: error`, then a second
    /// one continuing the same zlib stream, `streamtype: stdout` on stream 3.
    #[tokio::test]
    async fn decodes_header_blocks_from_another_zlib() {
        let wire = hex(concat!(
            "80030001000000280000000100000000000078f9e3c6a7c202a62346703a2b294a4dcc851625aca9a0",
            "8006000000ffff",
            "800300010000001900000003000000000000c22a054ccc29f9a52500000000ffff",
        ));
        let mut r = FrameReader::new(&wire[..], 1 << 20);
        let f = r.read().await.unwrap().unwrap();
        assert_eq!(
            f,
            Frame::SynStream {
                id: 1,
                fin: false,
                unidirectional: false,
                headers: vec![("streamtype".into(), "error".into())],
            }
        );
        let f = r.read().await.unwrap().unwrap();
        assert_eq!(
            f,
            Frame::SynStream {
                id: 3,
                fin: false,
                unidirectional: false,
                headers: vec![("streamtype".into(), "stdout".into())],
            }
        );
        assert!(r.read().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn round_trips_every_frame() {
        let frames = vec![
            Frame::SynStream {
                id: 1,
                fin: true,
                unidirectional: false,
                headers: vec![("streamtype".into(), "error".into())],
            },
            Frame::SynReply {
                id: 1,
                fin: false,
                headers: vec![],
            },
            Frame::Data {
                id: 1,
                fin: true,
                data: Bytes::from_static(b"hello"),
            },
            Frame::RstStream { id: 3, status: 5 },
            Frame::Ping { id: 7 },
            Frame::GoAway {
                last_good: 9,
                status: 0,
            },
            Frame::Headers {
                id: 5,
                fin: false,
                headers: vec![("port".into(), "80".into())],
            },
            Frame::Ignored { kind: SETTINGS },
            Frame::Ignored {
                kind: WINDOW_UPDATE,
            },
        ];
        let mut buf = Vec::new();
        let mut w = FrameWriter::new(&mut buf).unwrap();
        for f in &frames {
            w.write(f).await.unwrap();
        }
        let mut r = FrameReader::new(&buf[..], 1 << 20);
        for f in &frames {
            assert_eq!(&r.read().await.unwrap().unwrap(), f);
        }
        assert!(r.read().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn oversized_data_frame_is_refused() {
        let mut buf = Vec::new();
        let mut w = FrameWriter::new(&mut buf).unwrap();
        w.write(&Frame::Data {
            id: 1,
            fin: false,
            data: Bytes::from(vec![0u8; 100]),
        })
        .await
        .unwrap();
        let mut r = FrameReader::new(&buf[..], 99);
        assert!(matches!(r.read().await, Err(SpdyError::Protocol(_))));
    }

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }
}
