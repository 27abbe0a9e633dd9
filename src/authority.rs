//! The HTTP/2 `:authority` of calls on the CRI socket, made acceptable to h2.
//!
//! gRPC clients built on grpc-core (Python `grpcio`, C++, Ruby, PHP) and grpc-java send a unix
//! socket's path (`/run/carapace/carapace.sock`, `unix:///…`) as the `:authority` of every call.
//! h2, under tonic, parses it as a URI authority, refuses the request with `RST_STREAM
//! PROTOCOL_ERROR` and has no option to accept it. [`AuthorityRewrite`] wraps each accepted
//! connection: its read side follows the client's frames, hands every frame on as it came except
//! header blocks, which it decodes (HPACK, keeping the client's dynamic table) and re-encodes with
//! an `:authority` that is not a URI authority replaced by `localhost`. Every field is re-encoded
//! as a literal that is not indexed, so h2's dynamic table stays empty and can never disagree
//! with what the client meant; the client's table size updates are passed on, so that h2's
//! empty table has the client's table's size limit.
//!
//! It never refuses anything itself. What it does not understand — a header frame that is
//! malformed or over the frame size h2 advertises, a header block it cannot decode, a flood of
//! CONTINUATION frames — makes it stop rewriting and hand h2 the bytes as they came, from that
//! frame on, so h2 refuses them as it would have without this module. Falling back is safe at any
//! point: h2's table, empty until then and of the same size limit, gets the entries the client
//! adds from then on and so holds the newest of the client's entries at the same indexes; an index
//! either means what the client meant or, into the client's older entries, is refused as out of
//! range.
//! The write side is untouched.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UnixStream;
use tonic::transport::server::{Connected, UdsConnectInfo};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEAD_LEN: usize = 9;
/// The SETTINGS_MAX_FRAME_SIZE h2 advertises (the protocol's default; the server never raises
/// it). A header frame over it is h2's to refuse; frames this module emits keep within it.
const MAX_FRAME: usize = 16_384;
/// h2 refuses a header block with more CONTINUATION frames than this before the last one (its
/// limit for its 16 KiB header list and frame size): such a block goes on as it came, for h2 to
/// refuse, and so a block held here until it is complete is at most 7 frames long.
const MAX_CONTINUATIONS: usize = 5;
/// A rewritten block longer than this (7 frames would not hold it within h2's limit) is not
/// emitted: its fields were over h2's header list limit anyway, and the block goes on as it came.
/// It also bounds what a block of indexes into the client's table can make this module allocate.
const MAX_REWRITTEN: usize = (1 + MAX_CONTINUATIONS) * MAX_FRAME - 5;
/// The SETTINGS_HEADER_TABLE_SIZE h2 advertises (the protocol's default): the most the client's
/// encoder may use, and so the most this decoder accepts in a table size update.
const HEADER_TABLE_SIZE: usize = 4_096;
const LOCALHOST: &[u8] = b"localhost";

const HEADERS: u8 = 0x1;
const PUSH_PROMISE: u8 = 0x5;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

/// A connection whose header blocks are rewritten on the way in (see the module's doc).
pub struct AuthorityRewrite<S = UnixStream> {
    io: S,
    scan: Scanner,
}

impl<S> AuthorityRewrite<S> {
    pub fn new(io: S) -> Self {
        Self {
            io,
            scan: Scanner::default(),
        }
    }
}

impl Connected for AuthorityRewrite<UnixStream> {
    type ConnectInfo = UdsConnectInfo;

    fn connect_info(&self) -> UdsConnectInfo {
        self.io.connect_info()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityRewrite<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if this.scan.hand_on(buf) {
                return Poll::Ready(Ok(()));
            }
            if this.scan.pending.is_empty() {
                // Straight into h2's buffer: only a header frame (and what follows it in the same
                // read) is taken back out of it, so DATA frames are never copied here.
                let start = buf.filled().len();
                ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
                let end = buf.filled().len();
                if end == start {
                    return Poll::Ready(Ok(()));
                }
                let open = this.scan.block.is_some();
                let passed = pass(&mut this.scan.phase, open, &buf.filled()[start..end]);
                if start + passed < end {
                    this.scan
                        .pending
                        .extend_from_slice(&buf.filled()[start + passed..end]);
                    buf.set_filled(start + passed);
                    this.scan.process();
                }
                if buf.filled().len() > start {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            // The rest of a frame that must be seen whole, and no more: what follows it goes
            // the direct way above.
            let have = this.scan.pending.len();
            this.scan.pending.resize(have + this.scan.want.max(1), 0);
            let mut into = ReadBuf::new(&mut this.scan.pending[have..]);
            let res = Pin::new(&mut this.io).poll_read(cx, &mut into);
            let got = into.filled().len();
            this.scan.pending.truncate(have + got);
            ready!(res)?;
            if got == 0 {
                // The client ended inside a frame: h2 gets what came, as it came, then the end.
                this.scan.give_up();
                this.scan.hand_on(buf);
                return Poll::Ready(Ok(()));
            }
            this.scan.process();
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityRewrite<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Where the scan is in the client's byte stream.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Phase {
    /// In the connection preface, this many bytes of it seen.
    Preface(usize),
    /// At the start of a frame.
    Frame,
    /// Inside a frame handed on as it comes, this many bytes of it still to come.
    Forward(usize),
    /// Handing everything on as it comes, for the rest of the connection.
    Raw,
}

/// A header block being gathered from a HEADERS frame and its CONTINUATION frames.
struct Block {
    stream: u32,
    end_stream: bool,
    priority: Option<[u8; 5]>,
    fragment: Vec<u8>,
    /// CONTINUATION frames so far (all without END_HEADERS).
    continuations: usize,
    /// The frames as they came: what h2 gets if the block is not rewritten.
    raw: Vec<u8>,
}

struct Scanner {
    phase: Phase,
    /// Bytes read but not yet handed on: a frame's head, and a header frame, until complete.
    pending: Vec<u8>,
    /// How many more bytes `pending` needs before it can be scanned further.
    want: usize,
    /// Bytes scanned and handed on before anything read later.
    ready: Vec<u8>,
    ready_at: usize,
    block: Option<Block>,
    table: Table,
}

impl Default for Scanner {
    fn default() -> Self {
        Self {
            phase: Phase::Preface(0),
            pending: Vec::new(),
            want: 0,
            ready: Vec::new(),
            ready_at: 0,
            block: None,
            table: Table::new(HEADER_TABLE_SIZE),
        }
    }
}

struct Head {
    len: usize,
    kind: u8,
    flags: u8,
    stream: u32,
}

impl Head {
    fn parse(b: &[u8]) -> Head {
        Head {
            len: usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]),
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        }
    }
}

fn put_head(out: &mut Vec<u8>, len: usize, kind: u8, flags: u8, stream: u32) {
    // `len` is at most MAX_FRAME: the three bytes hold it.
    out.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
}

impl Scanner {
    /// Moves ready bytes into `buf`; whether there were any.
    fn hand_on(&mut self, buf: &mut ReadBuf<'_>) -> bool {
        let left = &self.ready[self.ready_at..];
        if left.is_empty() {
            return false;
        }
        let n = left.len().min(buf.remaining());
        buf.put_slice(&left[..n]);
        self.ready_at += n;
        if self.ready_at == self.ready.len() {
            self.ready.clear();
            self.ready_at = 0;
        }
        true
    }

    /// Scans `pending` as far as it goes, moving what is done to `ready`; sets `want`.
    fn process(&mut self) {
        loop {
            self.want = 0;
            if self.pending.is_empty() {
                return;
            }
            let passed = pass(&mut self.phase, self.block.is_some(), &self.pending);
            if passed > 0 {
                self.ready.extend_from_slice(&self.pending[..passed]);
                self.pending.drain(..passed);
                continue;
            }
            if self.pending.len() < HEAD_LEN {
                self.want = HEAD_LEN - self.pending.len();
                return;
            }
            let head = Head::parse(&self.pending[..HEAD_LEN]);
            let fits = head.len <= MAX_FRAME;
            let follows = match &self.block {
                Some(b) => head.kind == CONTINUATION && head.stream == b.stream,
                None => head.kind == HEADERS && head.stream != 0,
            };
            if !fits || !follows {
                self.give_up();
                return;
            }
            let total = HEAD_LEN + head.len;
            if self.pending.len() < total {
                self.want = total - self.pending.len();
                return;
            }
            let rest = self.pending.split_off(total);
            let frame = std::mem::replace(&mut self.pending, rest);
            self.phase = Phase::Frame;
            if !self.take(&head, frame) {
                self.give_up();
                return;
            }
        }
    }

    /// Adds a whole HEADERS or CONTINUATION frame to the block, and rewrites the block once it
    /// is complete; false when it cannot, the frame then being in the block's `raw`.
    fn take(&mut self, head: &Head, frame: Vec<u8>) -> bool {
        let (fragment, priority) = if head.kind == HEADERS {
            match header_fragment(head.flags, &frame[HEAD_LEN..]) {
                Some((range, priority)) => (range, priority),
                None => {
                    self.block = Some(Block::new(head, None, frame));
                    return false;
                }
            }
        } else {
            (0..frame.len() - HEAD_LEN, None)
        };
        let payload = &frame[HEAD_LEN..];
        if self.block.is_none() && head.flags & END_HEADERS != 0 {
            // A whole block in one frame, as most are: rewritten from where it lies.
            let block = Block::new(head, priority, Vec::new());
            let Some(fields) = rewrite(&mut self.table, &payload[fragment]) else {
                self.block = Some(Block {
                    raw: frame,
                    ..block
                });
                return false;
            };
            emit(&mut self.ready, &block, &fields);
            return true;
        }
        let block = self
            .block
            .get_or_insert_with(|| Block::new(head, priority, Vec::new()));
        block.fragment.extend_from_slice(&payload[fragment]);
        block.raw.extend_from_slice(&frame);
        if head.flags & END_HEADERS == 0 {
            if head.kind == CONTINUATION {
                block.continuations += 1;
            }
            return block.continuations <= MAX_CONTINUATIONS;
        }
        let Some(fields) = rewrite(&mut self.table, &block.fragment) else {
            return false;
        };
        if let Some(block) = self.block.take() {
            emit(&mut self.ready, &block, &fields);
        }
        true
    }

    /// Hands on the open block's frames and everything pending as they came, and everything
    /// after them too.
    fn give_up(&mut self) {
        if let Some(block) = self.block.take() {
            self.ready.extend_from_slice(&block.raw);
        }
        self.ready.append(&mut self.pending);
        self.phase = Phase::Raw;
        self.want = 0;
    }
}

/// How many leading bytes of `data`, which follows all bytes scanned so far, go on as they
/// came, `phase` moved past them. It stops at a frame this scan must see whole (a header frame,
/// or any frame while a header block is open) and at a frame head not yet complete.
fn pass(phase: &mut Phase, block_open: bool, data: &[u8]) -> usize {
    let mut at = 0;
    while at < data.len() {
        match *phase {
            Phase::Raw => return data.len(),
            Phase::Preface(seen) => {
                let n = (PREFACE.len() - seen).min(data.len() - at);
                *phase = if data[at..at + n] != PREFACE[seen..seen + n] {
                    // Not HTTP/2 with prior knowledge: h2 says so.
                    Phase::Raw
                } else if seen + n == PREFACE.len() {
                    Phase::Frame
                } else {
                    Phase::Preface(seen + n)
                };
                at += n;
            }
            Phase::Forward(left) => {
                let n = left.min(data.len() - at);
                at += n;
                *phase = if n == left {
                    Phase::Frame
                } else {
                    Phase::Forward(left - n)
                };
            }
            Phase::Frame => {
                if data.len() - at < HEAD_LEN || block_open {
                    return at;
                }
                let head = Head::parse(&data[at..at + HEAD_LEN]);
                if matches!(head.kind, HEADERS | CONTINUATION | PUSH_PROMISE) {
                    return at;
                }
                at += HEAD_LEN;
                *phase = Phase::Forward(head.len);
            }
        }
    }
    at
}

impl Block {
    fn new(head: &Head, priority: Option<[u8; 5]>, raw: Vec<u8>) -> Block {
        Block {
            stream: head.stream,
            end_stream: head.flags & END_STREAM != 0,
            priority,
            fragment: Vec::new(),
            continuations: 0,
            raw,
        }
    }
}

/// Where a HEADERS frame's header block fragment is in its payload (without padding), and its
/// priority fields; `None` when they do not fit in the payload (h2 refuses such a frame).
fn header_fragment(flags: u8, payload: &[u8]) -> Option<(std::ops::Range<usize>, Option<[u8; 5]>)> {
    let (mut start, mut end) = (0, payload.len());
    if flags & PADDED != 0 {
        let pad = usize::from(*payload.first()?);
        start = 1;
        end = end.checked_sub(pad).filter(|&e| e >= start)?;
    }
    let mut priority = None;
    if flags & PRIORITY != 0 {
        let fields = payload.get(start..start + 5).filter(|_| start + 5 <= end)?;
        priority = Some([fields[0], fields[1], fields[2], fields[3], fields[4]]);
        start += 5;
    }
    Some((start..end, priority))
}

/// The block's re-encoded fields as a HEADERS frame and as many CONTINUATION frames as needed,
/// each within MAX_FRAME; END_STREAM and the priority fields as the client sent them, no padding.
fn emit(out: &mut Vec<u8>, block: &Block, fields: &[u8]) {
    let prio_len = if block.priority.is_some() { 5 } else { 0 };
    let (first, mut rest) = fields.split_at(fields.len().min(MAX_FRAME - prio_len));
    let mut flags = 0;
    if block.end_stream {
        flags |= END_STREAM;
    }
    if block.priority.is_some() {
        flags |= PRIORITY;
    }
    if rest.is_empty() {
        flags |= END_HEADERS;
    }
    put_head(out, prio_len + first.len(), HEADERS, flags, block.stream);
    if let Some(p) = &block.priority {
        out.extend_from_slice(p);
    }
    out.extend_from_slice(first);
    while !rest.is_empty() {
        let (chunk, after) = rest.split_at(rest.len().min(MAX_FRAME));
        let flags = if after.is_empty() { END_HEADERS } else { 0 };
        put_head(out, chunk.len(), CONTINUATION, flags, block.stream);
        out.extend_from_slice(chunk);
        rest = after;
    }
}

/// Decodes a complete header block against the client's dynamic table (updating it as the
/// client's encoder did) and re-encodes every field as a literal h2 will not index, with an
/// `:authority` that is not a URI authority replaced; table size updates as they came. `None` where h2's decoder would refuse
/// the block: then it is handed on as it came, for h2 to say so.
fn rewrite(table: &mut Table, block: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(block.len() * 2 + 64);
    let mut at = 0;
    let mut fields = false;
    while let Some(&first) = block.get(at) {
        if out.len() > MAX_REWRITTEN {
            return None;
        }
        if first & 0x80 != 0 {
            let (index, n) = integer(&block[at..], 7)?;
            at += n;
            let (name, value) = table.get(index)?;
            put_field(&mut out, name, value, false);
            fields = true;
        } else if first & 0xe0 == 0x20 {
            // A table size update: only before the block's first field, never over the size
            // h2 advertised.
            let (size, n) = integer(&block[at..], 5)?;
            at += n;
            if fields || size > HEADER_TABLE_SIZE {
                return None;
            }
            table.resize(size);
            put_integer(&mut out, size, 5, 0x20);
        } else {
            // A literal: with incremental indexing (01), never indexed (0001) or not indexed
            // (0000).
            let (indexing, prefix) = if first & 0x40 != 0 {
                (true, 6)
            } else {
                (false, 4)
            };
            let (index, n) = integer(&block[at..], prefix)?;
            at += n;
            let name = if index == 0 {
                let (name, n) = string(&block[at..])?;
                at += n;
                name
            } else {
                table.get(index)?.0.to_vec()
            };
            let (value, n) = string(&block[at..])?;
            at += n;
            put_field(&mut out, &name, &value, first & 0xf0 == 0x10);
            if indexing {
                table.insert(name, value);
            }
            fields = true;
        }
    }
    (out.len() <= MAX_REWRITTEN).then_some(out)
}

/// A literal field with a literal name, not indexed (never indexed when the client said so);
/// the `:authority` replaced by `localhost` when h2 would refuse it.
fn put_field(out: &mut Vec<u8>, name: &[u8], value: &[u8], never_indexed: bool) {
    let value = if name == b":authority" && http::uri::Authority::try_from(value).is_err() {
        LOCALHOST
    } else {
        value
    };
    out.push(if never_indexed { 0x10 } else { 0x00 });
    put_integer(out, name.len(), 7, 0);
    out.extend_from_slice(name);
    put_integer(out, value.len(), 7, 0);
    out.extend_from_slice(value);
}

/// An HPACK integer with a `prefix`-bit prefix, the first byte's other bits `flags`.
fn put_integer(out: &mut Vec<u8>, mut value: usize, prefix: u32, flags: u8) {
    let max = (1usize << prefix) - 1;
    if value < max {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | max as u8);
    value -= max;
    while value >= 0x80 {
        out.push(0x80 | (value & 0x7f) as u8);
        value >>= 7;
    }
    out.push(value as u8);
}

/// An HPACK integer and the bytes it took. As h2: at most 5 bytes.
fn integer(b: &[u8], prefix: u32) -> Option<(usize, usize)> {
    let max = (1usize << prefix) - 1;
    let mut value = usize::from(*b.first()?) & max;
    if value < max {
        return Some((value, 1));
    }
    for (i, &byte) in b.iter().enumerate().skip(1).take(4) {
        value += usize::from(byte & 0x7f) << (7 * (i - 1));
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// An HPACK string literal (raw or Huffman-coded) and the bytes it took.
fn string(b: &[u8]) -> Option<(Vec<u8>, usize)> {
    let huffman = *b.first()? & 0x80 != 0;
    let (len, n) = integer(b, 7)?;
    let raw = b.get(n..n.checked_add(len)?)?;
    let s = if huffman {
        huffman_decode(raw)?
    } else {
        raw.to_vec()
    };
    Some((s, n + len))
}

/// A node of the Huffman code's tree: each child is another node's index, a symbol (`LEAF`
/// set) or absent (0: the root is no one's child).
const LEAF: u16 = 0x8000;
const EOS: u16 = 256;

/// The tree of HPACK's Huffman code (RFC 7541 appendix B), built once from the code table the
/// `httlib-huffman` crate publishes.
fn huffman_tree() -> &'static [[u16; 2]] {
    static TREE: OnceLock<Vec<[u16; 2]>> = OnceLock::new();
    TREE.get_or_init(|| {
        let mut nodes = vec![[0u16; 2]];
        for (symbol, &(len, code)) in httlib_huffman::encoder::table::ENCODE_TABLE
            .iter()
            .enumerate()
        {
            let mut node = 0;
            for i in (0..u32::from(len)).rev() {
                let bit = ((code >> i) & 1) as usize;
                if i == 0 {
                    nodes[node][bit] = LEAF | symbol as u16;
                } else {
                    if nodes[node][bit] == 0 {
                        nodes.push([0; 2]);
                        nodes[node][bit] = (nodes.len() - 1) as u16;
                    }
                    node = usize::from(nodes[node][bit]);
                }
            }
        }
        nodes
    })
}

/// Decodes a Huffman-coded string as strictly as RFC 7541 5.2 asks (and h2 does): EOS inside
/// the string, padding over 7 bits, or padding that is not the EOS code's leading ones refuse it.
fn huffman_decode(src: &[u8]) -> Option<Vec<u8>> {
    let tree = huffman_tree();
    let mut out = Vec::with_capacity(src.len() * 8 / 5);
    let (mut node, mut depth, mut ones) = (0usize, 0u32, true);
    for &byte in src {
        for shift in (0..8).rev() {
            let bit = (byte >> shift) & 1;
            let next = tree.get(node)?[usize::from(bit)];
            depth += 1;
            ones &= bit == 1;
            if next & LEAF != 0 {
                let symbol = next & !LEAF;
                if symbol == EOS {
                    return None;
                }
                out.push(symbol as u8);
                (node, depth, ones) = (0, 0, true);
            } else if next == 0 {
                return None;
            } else {
                node = usize::from(next);
            }
        }
    }
    (depth <= 7 && ones).then_some(out)
}

/// HPACK's static table (RFC 7541 appendix A), index 1 first.
const STATIC: [(&[u8], &[u8]); 61] = [
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""),
    (b"accept-ranges", b""),
    (b"accept", b""),
    (b"access-control-allow-origin", b""),
    (b"age", b""),
    (b"allow", b""),
    (b"authorization", b""),
    (b"cache-control", b""),
    (b"content-disposition", b""),
    (b"content-encoding", b""),
    (b"content-language", b""),
    (b"content-length", b""),
    (b"content-location", b""),
    (b"content-range", b""),
    (b"content-type", b""),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"expect", b""),
    (b"expires", b""),
    (b"from", b""),
    (b"host", b""),
    (b"if-match", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"if-range", b""),
    (b"if-unmodified-since", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"max-forwards", b""),
    (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""),
    (b"range", b""),
    (b"referer", b""),
    (b"refresh", b""),
    (b"retry-after", b""),
    (b"server", b""),
    (b"set-cookie", b""),
    (b"strict-transport-security", b""),
    (b"transfer-encoding", b""),
    (b"user-agent", b""),
    (b"vary", b""),
    (b"via", b""),
    (b"www-authenticate", b""),
];

/// The client encoder's table as the client keeps it: the static table, then the dynamic one
/// (newest first), its size counted as RFC 7541 4.1 counts it.
struct Table {
    dynamic: VecDeque<(Vec<u8>, Vec<u8>)>,
    size: usize,
    max: usize,
}

impl Table {
    fn new(max: usize) -> Table {
        Table {
            dynamic: VecDeque::new(),
            size: 0,
            max,
        }
    }

    fn get(&self, index: usize) -> Option<(&[u8], &[u8])> {
        match index {
            0 => None,
            1..=61 => Some(STATIC[index - 1]),
            _ => self
                .dynamic
                .get(index - 62)
                .map(|(n, v)| (n.as_slice(), v.as_slice())),
        }
    }

    fn insert(&mut self, name: Vec<u8>, value: Vec<u8>) {
        let size = name.len() + value.len() + 32;
        // An entry larger than the table empties it and is not added (RFC 7541 4.4).
        self.evict_to(self.max.saturating_sub(size));
        if size <= self.max {
            self.dynamic.push_front((name, value));
            self.size += size;
        }
    }

    fn resize(&mut self, max: usize) {
        self.max = max;
        self.evict_to(max);
    }

    fn evict_to(&mut self, size: usize) {
        while self.size > size {
            match self.dynamic.pop_back() {
                Some((n, v)) => self.size -= n.len() + v.len() + 32,
                None => self.size = 0,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    const PATH: &str = "/run/carapace/carapace.sock";
    const DATA: u8 = 0x0;
    const SETTINGS: u8 = 0x4;

    /// A client connection that arrives in the given pieces, one read each.
    struct Pieces(VecDeque<Vec<u8>>);

    impl AsyncRead for Pieces {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            if let Some(mut piece) = self.0.pop_front() {
                let n = piece.len().min(buf.remaining());
                buf.put_slice(&piece[..n]);
                if n < piece.len() {
                    self.0.push_front(piece.split_off(n));
                }
            }
            Poll::Ready(Ok(()))
        }
    }

    /// What h2 reads when the client's bytes arrive in `pieces`, read `read_size` bytes at most
    /// at a time.
    async fn through(pieces: Vec<Vec<u8>>, read_size: usize) -> Vec<u8> {
        let mut conn = AuthorityRewrite::new(Pieces(pieces.into()));
        let mut out = Vec::new();
        let mut buf = vec![0; read_size];
        loop {
            let n = conn.read(&mut buf).await.unwrap();
            if n == 0 {
                return out;
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    async fn whole(bytes: Vec<u8>) -> Vec<u8> {
        through(vec![bytes], 64 * 1024).await
    }

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        put_head(&mut f, payload.len(), kind, flags, stream);
        f.extend_from_slice(payload);
        f
    }

    /// The preface and an empty SETTINGS frame, as every client starts.
    fn start() -> Vec<u8> {
        let mut b = PREFACE.to_vec();
        b.extend(frame(SETTINGS, 0, 0, &[]));
        b
    }

    /// A literal field with incremental indexing, name and value raw (as grpc-core sends a new
    /// field): it enters the client's dynamic table.
    fn indexed_literal(name: &[u8], value: &[u8]) -> Vec<u8> {
        let mut b = vec![0x40];
        put_integer(&mut b, name.len(), 7, 0);
        b.extend_from_slice(name);
        put_integer(&mut b, value.len(), 7, 0);
        b.extend_from_slice(value);
        b
    }

    fn request_fields(authority: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
        [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/runtime.v1.RuntimeService/Version"),
            (":authority", authority),
            ("te", "trailers"),
            ("content-type", "application/grpc"),
            (
                "user-agent",
                "grpc-python/1.85.4 grpc-c/50.0.0 (linux; chttp2)",
            ),
        ]
        .iter()
        .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
    }

    fn names_values(fields: &[(Vec<u8>, Vec<u8>)]) -> Vec<(&[u8], &[u8])> {
        fields.iter().map(|(n, v)| (&n[..], &v[..])).collect()
    }

    type Fields = Vec<(Vec<u8>, Vec<u8>)>;

    struct Frame {
        kind: u8,
        flags: u8,
        stream: u32,
        payload: Vec<u8>,
    }

    /// The frames h2 reads, after the preface (which must be there unchanged).
    fn frames(out: &[u8]) -> Vec<Frame> {
        assert_eq!(&out[..PREFACE.len()], PREFACE);
        let mut rest = &out[PREFACE.len()..];
        let mut frames = Vec::new();
        while !rest.is_empty() {
            let head = Head::parse(rest);
            frames.push(Frame {
                kind: head.kind,
                flags: head.flags,
                stream: head.stream,
                payload: rest[HEAD_LEN..HEAD_LEN + head.len].to_vec(),
            });
            rest = &rest[HEAD_LEN + head.len..];
        }
        frames
    }

    /// Each header block h2 reads, decoded by an HPACK decoder that is not this module's, with
    /// the HEADERS frame that began it.
    fn blocks(out: &[u8]) -> Vec<(Frame, Fields)> {
        let mut decoder = loona_hpack::Decoder::new();
        let mut blocks = Vec::new();
        let mut open: Option<(Frame, Vec<u8>)> = None;
        for f in frames(out) {
            assert!(f.payload.len() <= MAX_FRAME, "a frame over 16 KiB");
            let fragment = match f.kind {
                HEADERS => {
                    assert!(open.is_none(), "HEADERS inside a header block");
                    let (range, _) = header_fragment(f.flags, &f.payload).unwrap();
                    f.payload[range].to_vec()
                }
                CONTINUATION => f.payload.clone(),
                _ => {
                    assert!(open.is_none(), "another frame inside a header block");
                    continue;
                }
            };
            let end = f.flags & END_HEADERS != 0;
            let (first, mut block) = match (open.take(), f.kind) {
                (None, HEADERS) => (f, Vec::new()),
                (Some(o), CONTINUATION) => o,
                _ => panic!("a CONTINUATION outside a header block"),
            };
            block.extend(fragment);
            if end {
                blocks.push((first, decoder.decode(&block).unwrap()));
            } else {
                open = Some((first, block));
            }
        }
        assert!(open.is_none(), "a header block left open");
        blocks
    }

    fn authority_of(fields: &[(Vec<u8>, Vec<u8>)]) -> String {
        let (_, v) = fields.iter().find(|(n, _)| n == b":authority").unwrap();
        String::from_utf8(v.clone()).unwrap()
    }

    #[tokio::test]
    async fn a_path_authority_comes_out_as_localhost() {
        // As grpc-core sends it: the path enters the dynamic table with the first call, and
        // the next call names it by index (62: the newest dynamic entry).
        let mut first = indexed_literal(b":authority", PATH.as_bytes());
        first.extend([0x83, 0x86]); // :method POST, :scheme http
        first.extend(indexed_literal(
            b":path",
            b"/runtime.v1.RuntimeService/Version",
        ));
        let second = [0xbf, 0x83, 0x86, 0xbe]; // :authority (63), POST, http, :path (62)
        let mut input = start();
        input.extend(frame(HEADERS, END_HEADERS, 1, &first));
        input.extend(frame(HEADERS, END_HEADERS | END_STREAM, 3, &second));
        let out = whole(input).await;
        let blocks = blocks(&out);
        assert_eq!(blocks.len(), 2);
        for (head, fields) in &blocks {
            assert_eq!(authority_of(fields), "localhost");
            let path = fields.iter().find(|(n, _)| n == b":path").unwrap();
            assert_eq!(path.1, b"/runtime.v1.RuntimeService/Version");
            assert_eq!(fields.len(), 4);
            assert!(head.flags & PRIORITY == 0);
        }
        assert_eq!(blocks[0].0.stream, 1);
        assert_eq!(blocks[0].0.flags & END_STREAM, 0);
        assert_eq!(blocks[1].0.stream, 3);
        assert_eq!(blocks[1].0.flags & END_STREAM, END_STREAM);
        // The SETTINGS frame before them went on unchanged.
        let settings = &frames(&out)[0];
        assert_eq!((settings.kind, settings.payload.len()), (SETTINGS, 0));
    }

    #[tokio::test]
    async fn unix_uri_and_empty_authorities_come_out_as_localhost() {
        for authority in [
            "unix:///run/carapace/carapace.sock",
            "unix:/run/carapace/carapace.sock",
            "",
        ] {
            let mut encoder = loona_hpack::Encoder::new();
            let fields = request_fields(authority);
            let mut input = start();
            input.extend(frame(
                HEADERS,
                END_HEADERS,
                1,
                &encoder.encode(names_values(&fields)),
            ));
            let out = whole(input).await;
            assert_eq!(
                authority_of(&blocks(&out)[0].1),
                "localhost",
                "{authority:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_valid_authority_is_kept_and_so_is_every_other_field() {
        for authority in [
            "localhost",
            "example.com:8443",
            "127.0.0.1:10010",
            "[::1]:80",
        ] {
            let mut encoder = loona_hpack::Encoder::new();
            let fields = request_fields(authority);
            let mut input = start();
            // Twice: the second block is mostly indexes into the client's dynamic table.
            for stream in [1, 3] {
                input.extend(frame(
                    HEADERS,
                    END_HEADERS,
                    stream,
                    &encoder.encode(names_values(&fields)),
                ));
            }
            let out = whole(input).await;
            for (_, decoded) in blocks(&out) {
                assert_eq!(decoded, fields, "{authority}");
            }
        }
    }

    #[tokio::test]
    async fn a_table_size_update_reaches_h2_and_keeps_the_tables_in_step() {
        // The client shrinks its table to 64 octets: the path (27 + 10 + 32 = 69) no longer
        // enters it, so the next block's 62 is the `:path`, as h2 must read it.
        let mut first = vec![0x3f, 0x21]; // size update to 64
        first.extend(indexed_literal(b":authority", PATH.as_bytes()));
        first.extend(indexed_literal(b":path", b"/a"));
        let mut input = start();
        input.extend(frame(HEADERS, END_HEADERS, 1, &first));
        input.extend(frame(HEADERS, END_HEADERS, 3, &[0xbe]));
        let out = whole(input.clone()).await;
        assert_eq!(frames(&out)[1].payload[..2], [0x3f, 0x21]);
        let decoded = blocks(&out);
        assert_eq!(authority_of(&decoded[0].1), "localhost");
        assert_eq!(decoded[1].1, [(b":path".to_vec(), b"/a".to_vec())]);
        // 63 is no entry of the client's: h2 gets the block as it came, to refuse it.
        let odd = frame(HEADERS, END_HEADERS, 5, &[0xbf]);
        input.extend(&odd);
        assert!(whole(input).await.ends_with(&odd));
    }

    #[tokio::test]
    async fn a_block_split_over_continuation_frames_is_reassembled() {
        let mut encoder = loona_hpack::Encoder::new();
        let block = encoder.encode(names_values(&request_fields(PATH)));
        // Cut inside field strings, not at field boundaries.
        let (a, rest) = block.split_at(7);
        let (b, c) = rest.split_at(30);
        let mut input = start();
        input.extend(frame(HEADERS, END_STREAM, 1, a));
        input.extend(frame(CONTINUATION, 0, 1, b));
        input.extend(frame(CONTINUATION, END_HEADERS, 1, c));
        input.extend(frame(DATA, END_STREAM, 3, b"after"));
        let out = whole(input).await;
        let decoded = blocks(&out);
        assert_eq!(decoded.len(), 1);
        let (head, fields) = &decoded[0];
        assert_eq!(head.flags & END_STREAM, END_STREAM);
        let mut want = request_fields("localhost");
        want.sort();
        let mut got = fields.clone();
        got.sort();
        assert_eq!(got, want);
        assert!(out.ends_with(&frame(DATA, END_STREAM, 3, b"after")));

        // As many CONTINUATION frames as h2 takes, one byte each.
        let mut input = start();
        input.extend(frame(HEADERS, 0, 1, &block[..1]));
        for i in 1..=MAX_CONTINUATIONS {
            input.extend(frame(CONTINUATION, 0, 1, &block[i..i + 1]));
        }
        let last = MAX_CONTINUATIONS + 1;
        input.extend(frame(CONTINUATION, END_HEADERS, 1, &block[last..]));
        let out = whole(input).await;
        assert_eq!(authority_of(&blocks(&out)[0].1), "localhost");
    }

    #[tokio::test]
    async fn a_padded_headers_frame_with_priority_keeps_its_priority_and_loses_its_padding() {
        let mut encoder = loona_hpack::Encoder::new();
        let block = encoder.encode(names_values(&request_fields(PATH)));
        let priority = [0x80, 0, 0, 0, 41]; // exclusive, on stream 0, weight 42
        let mut payload = vec![10];
        payload.extend(priority);
        payload.extend(&block);
        payload.extend([0; 10]);
        let mut input = start();
        input.extend(frame(HEADERS, END_HEADERS | PADDED | PRIORITY, 5, &payload));
        let out = whole(input).await;
        let f = &frames(&out)[1];
        assert_eq!(f.kind, HEADERS);
        assert_eq!(f.flags, END_HEADERS | PRIORITY);
        assert_eq!(f.payload[..5], priority);
        let blocks = blocks(&out);
        assert_eq!(authority_of(&blocks[0].1), "localhost");
        assert_eq!(blocks[0].1.len(), request_fields(PATH).len());
    }

    #[tokio::test]
    async fn data_frames_go_through_byte_for_byte() {
        let mut input = start();
        let body: Vec<u8> = (0..MAX_FRAME).map(|i| (i * 7 % 251) as u8).collect();
        input.extend(frame(DATA, 0, 1, &body));
        // Bytes that would be a HEADERS frame's head, inside a DATA frame's payload.
        input.extend(frame(DATA, END_STREAM, 1, &frame(HEADERS, 4, 1, b"\x41")));
        input.extend(frame(0x8, 0, 0, &[0, 0, 1, 0])); // WINDOW_UPDATE
        assert_eq!(whole(input.clone()).await, input);
    }

    #[tokio::test]
    async fn frames_split_across_reads_come_out_the_same() {
        let mut encoder = loona_hpack::Encoder::new();
        let mut input = start();
        for stream in [1, 3] {
            let block = encoder.encode(names_values(&request_fields(PATH)));
            let (a, b) = block.split_at(block.len() / 2);
            input.extend(frame(HEADERS, 0, stream, a));
            input.extend(frame(CONTINUATION, END_HEADERS, stream, b));
            input.extend(frame(DATA, END_STREAM, stream, b"\0\0\0\0\x04\x0a\x02v1"));
        }
        let expected = whole(input.clone()).await;
        assert_eq!(blocks(&expected).len(), 2);
        for piece in [1, 2, 5, 9, 10, 13, 64] {
            let pieces = input.chunks(piece).map(<[u8]>::to_vec).collect();
            assert_eq!(through(pieces, 4096).await, expected, "pieces of {piece}");
        }
        // A reader asking for a few bytes at a time.
        for read_size in [1, 3, 8] {
            assert_eq!(through(vec![input.clone()], read_size).await, expected);
        }
    }

    #[tokio::test]
    async fn a_large_block_is_reemitted_in_frames_within_16_kib() {
        let mut fields = request_fields(PATH);
        fields.push((b"x-big".to_vec(), vec![b'a'; 20_000]));
        let block = loona_hpack::Encoder::new().encode(names_values(&fields));
        let mut input = start();
        let (a, b) = block.split_at(MAX_FRAME);
        input.extend(frame(HEADERS, 0, 1, a));
        input.extend(frame(CONTINUATION, END_HEADERS, 1, b));
        let out = whole(input).await;
        let kinds: Vec<u8> = frames(&out).iter().map(|f| f.kind).collect();
        assert_eq!(kinds, [SETTINGS, HEADERS, CONTINUATION]);
        let blocks = blocks(&out);
        assert_eq!(authority_of(&blocks[0].1), "localhost");
        assert_eq!(blocks[0].1.last().unwrap().1.len(), 20_000);
    }

    /// What the rewrite does not understand goes on as it came, and so does everything after.
    async fn passes_through_from(prefix: Vec<u8>, odd: Vec<u8>) {
        let mut after = frame(
            HEADERS,
            END_HEADERS,
            7,
            &indexed_literal(b":authority", b"/x"),
        );
        after.extend(frame(DATA, END_STREAM, 7, b"data"));
        let mut input = start();
        input.extend(&prefix);
        input.extend(&odd);
        input.extend(&after);
        let out = whole(input).await;
        let mut tail = odd;
        tail.extend(after);
        assert!(out.ends_with(&tail), "{out:?}");
    }

    #[tokio::test]
    async fn what_h2_must_refuse_reaches_h2_as_it_came() {
        let block = indexed_literal(b":authority", PATH.as_bytes());
        // A CONTINUATION with no header block open.
        passes_through_from(vec![], frame(CONTINUATION, END_HEADERS, 1, &block)).await;
        // A header block interrupted by another frame.
        let mut odd = frame(HEADERS, 0, 1, &block);
        odd.extend(frame(DATA, 0, 1, b"x"));
        passes_through_from(vec![], odd).await;
        // A CONTINUATION of another stream.
        let mut odd = frame(HEADERS, 0, 1, &block);
        odd.extend(frame(CONTINUATION, END_HEADERS, 3, &block));
        passes_through_from(vec![], odd).await;
        // HEADERS on stream 0, a PUSH_PROMISE from a client.
        passes_through_from(vec![], frame(HEADERS, END_HEADERS, 0, &block)).await;
        passes_through_from(vec![], frame(PUSH_PROMISE, END_HEADERS, 1, &block)).await;
        // More padding than payload; PRIORITY fields cut short.
        passes_through_from(
            vec![],
            frame(HEADERS, END_HEADERS | PADDED, 1, &[200, 0x82]),
        )
        .await;
        passes_through_from(vec![], frame(HEADERS, END_HEADERS | PRIORITY, 1, &[0, 0])).await;
        // A header frame over the frame size h2 advertises.
        let big = vec![0x82; MAX_FRAME + 1];
        passes_through_from(vec![], frame(HEADERS, END_HEADERS, 1, &big)).await;
        // An index nobody defined; a string longer than the block; a table size update after a
        // field, or over the size h2 advertised; Huffman padding of zeros.
        for bad in [
            vec![0xbe],
            vec![0x80],
            vec![0x41, 0x05, b'a'],
            vec![0x82, 0x20],
            vec![0x3f, 0xe2, 0x1f], // size update to 4097
            vec![0x41, 0x81, 0x00],
        ] {
            passes_through_from(vec![], frame(HEADERS, END_HEADERS, 1, &bad)).await;
        }
        // A flood of CONTINUATION frames (h2 allows 5 before the last).
        let mut odd = frame(HEADERS, 0, 1, &block);
        for _ in 0..=MAX_CONTINUATIONS {
            odd.extend(frame(CONTINUATION, 0, 1, &[]));
        }
        odd.extend(frame(CONTINUATION, END_HEADERS, 1, &[]));
        passes_through_from(vec![], odd).await;
        // Indexes that would rewrite into more than h2 takes: 40 of a 4 KiB entry.
        let mut odd = indexed_literal(b"x-big", &[b'a'; 4000]);
        odd.extend([0xbe; 40]);
        passes_through_from(vec![], frame(HEADERS, END_HEADERS, 1, &odd)).await;
        // After a block that was rewritten, too.
        let good = frame(HEADERS, END_HEADERS, 1, &block);
        passes_through_from(good, frame(CONTINUATION, END_HEADERS, 1, &block)).await;
    }

    #[tokio::test]
    async fn not_http2_goes_through_untouched() {
        let input = b"GET / HTTP/1.1\r\nHost: /run/x.sock\r\n\r\n".to_vec();
        assert_eq!(whole(input.clone()).await, input);
        // Cut short inside a frame: what came, then the end.
        let mut input = start();
        input.extend(&frame(HEADERS, END_HEADERS, 1, &[0x82; 40])[..20]);
        assert_eq!(whole(input.clone()).await, input);
    }

    #[test]
    fn the_static_table_and_the_huffman_code_are_hpacks() {
        let mut table = Table::new(HEADER_TABLE_SIZE);
        let mut other = loona_hpack::Decoder::new();
        // 1 is `:authority` with an empty value, which h2 refuses and so is rewritten.
        for index in 2..=61u8 {
            let ours = rewrite(&mut table, &[0x80 | index]).unwrap();
            let theirs = other.decode(&[0x80 | index]).unwrap();
            assert_eq!(loona_hpack::Decoder::new().decode(&ours).unwrap(), theirs);
        }
        // RFC 7541 C.4.1: a request with Huffman-coded strings.
        let block = [
            0x82, 0x86, 0x84, 0x41, 0x8c, 0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab,
            0x90, 0xf4, 0xff,
        ];
        let ours = rewrite(&mut Table::new(HEADER_TABLE_SIZE), &block).unwrap();
        let decoded = loona_hpack::Decoder::new().decode(&ours).unwrap();
        assert_eq!(decoded[3].1, b"www.example.com");
        // Every octet, through another implementation's encoder.
        let all: Vec<u8> = (0..=255).collect();
        let mut coded = Vec::new();
        httlib_huffman::encode(&all, &mut coded).unwrap();
        assert_eq!(huffman_decode(&coded).unwrap(), all);
    }

    #[test]
    fn the_dynamic_table_evicts_as_the_client_does() {
        let mut t = Table::new(100);
        t.insert(b"a".to_vec(), vec![b'x'; 30]); // 63
        t.insert(b"b".to_vec(), b"y".to_vec()); // 34: 97 in all
        assert_eq!(t.get(62).unwrap().0, b"b");
        assert_eq!(t.get(63).unwrap().0, b"a");
        t.insert(b"c".to_vec(), b"z".to_vec()); // evicts "a"
        assert_eq!(t.get(63).unwrap().0, b"b");
        assert!(t.get(64).is_none());
        t.insert(b"d".to_vec(), vec![b'w'; 100]); // larger than the table: empties it
        assert!(t.get(62).is_none());
        assert_eq!(t.size, 0);
    }
}
