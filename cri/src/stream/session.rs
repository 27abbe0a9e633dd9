//! One SPDY session over an upgraded connection: a reader task that turns frames into per-stream
//! byte queues, a writer task that owns the write half and the header compressor, and stream
//! handles for the exec/attach/port-forward code. It bounds what it buffers (a byte budget shared
//! by all of a session's inbound queues, a cap on streams) and never waits for flow-control
//! windows, because spdystream clients never send WINDOW_UPDATE.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::spdy::{
    Frame, FrameReader, FrameWriter, Headers, RST_CANCEL, RST_PROTOCOL_ERROR, RST_REFUSED_STREAM,
};

/// Payload of the DATA frames this side sends; the Go clients copy with 32 KiB buffers too.
const CHUNK: usize = 32 * 1024;
/// Frames waiting for the writer.
const OUT_QUEUE: usize = 64;
/// Chunks waiting in one stream's inbound queue (also bounded by the session's byte budget).
const STREAM_QUEUE: usize = 16;

#[derive(Debug, Clone, Copy)]
pub(crate) struct SessionLimits {
    /// Streams open at once; more are refused with RST_STREAM.
    pub max_streams: usize,
    /// Largest DATA frame accepted from the peer.
    pub max_frame: usize,
    /// Bytes received but not yet consumed, over all streams of the session.
    pub inbound_budget: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Accepts peer streams (odd ids); the streaming server.
    Server,
    /// Opens streams; the test clients.
    #[cfg_attr(not(test), allow(dead_code))]
    Client,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionError {
    #[error("the SPDY session is closed")]
    Closed,
    #[error("the stream was reset by the peer")]
    Reset,
}

enum Out {
    Frame(Frame),
    /// Flush, shut the write half down and stop.
    Shutdown,
}

/// Bytes from the peer, holding their share of the session's inbound budget until dropped.
pub(crate) struct Chunk {
    pub data: Bytes,
    _permit: OwnedSemaphorePermit,
}

struct Entry {
    data: Option<mpsc::Sender<Chunk>>,
    reply: Option<oneshot::Sender<()>>,
    local_done: bool,
    remote_done: bool,
    reset: Arc<AtomicBool>,
}

struct Shared {
    streams: Mutex<HashMap<u32, Entry>>,
    last_activity: Mutex<Instant>,
    budget: Arc<Semaphore>,
    pongs: AtomicU32,
}

impl Shared {
    fn touch(&self) {
        if let Ok(mut t) = self.last_activity.lock() {
            *t = Instant::now();
        }
    }

    fn last_activity(&self) -> Instant {
        self.last_activity
            .lock()
            .map(|t| *t)
            .unwrap_or_else(|_| Instant::now())
    }

    fn with_streams<T>(&self, f: impl FnOnce(&mut HashMap<u32, Entry>) -> T) -> T {
        let mut g = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }

    /// Marks one direction done; the entry goes once both are.
    fn finish(&self, id: u32, local: bool) {
        self.with_streams(|s| {
            let done = match s.get_mut(&id) {
                Some(e) => {
                    if local {
                        e.local_done = true;
                    } else {
                        e.remote_done = true;
                        e.data = None;
                    }
                    e.local_done && e.remote_done
                }
                None => false,
            };
            if done {
                s.remove(&id);
            }
        });
    }

    fn reset(&self, id: u32) {
        self.with_streams(|s| {
            if let Some(e) = s.remove(&id) {
                e.reset.store(true, Ordering::Release);
            }
        });
    }
}

pub(crate) struct Session {
    out: mpsc::Sender<Out>,
    shared: Arc<Shared>,
    closed: watch::Receiver<bool>,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
    /// Serialises stream creation so ids reach the wire in increasing order.
    #[cfg_attr(not(test), allow(dead_code))]
    next_id: tokio::sync::Mutex<u32>,
}

/// A stream's two halves and its SYN_STREAM headers.
pub(crate) struct SpdyStream {
    pub id: u32,
    pub headers: Headers,
    pub reader: StreamReader,
    pub writer: StreamWriter,
}

pub(crate) struct StreamReader {
    rx: mpsc::Receiver<Chunk>,
}

impl StreamReader {
    /// The next bytes from the peer; `None` once it sent FIN, reset the stream or went away.
    pub(crate) async fn recv(&mut self) -> Option<Chunk> {
        self.rx.recv().await
    }
}

#[derive(Clone)]
pub(crate) struct StreamWriter {
    id: u32,
    out: mpsc::Sender<Out>,
    shared: Arc<Shared>,
    reset: Arc<AtomicBool>,
    fin_sent: Arc<AtomicBool>,
}

impl StreamWriter {
    pub(crate) async fn send(&self, data: &[u8]) -> Result<(), SessionError> {
        for piece in data.chunks(CHUNK) {
            self.frame(Frame::Data {
                id: self.id,
                fin: false,
                data: Bytes::copy_from_slice(piece),
            })
            .await?;
        }
        Ok(())
    }

    /// Half-closes this side (DATA with FIN); later calls do nothing.
    pub(crate) async fn finish(&self) -> Result<(), SessionError> {
        if self.fin_sent.swap(true, Ordering::AcqRel) || self.reset.load(Ordering::Acquire) {
            return Ok(());
        }
        let r = self
            .frame(Frame::Data {
                id: self.id,
                fin: true,
                data: Bytes::new(),
            })
            .await;
        self.shared.finish(self.id, true);
        r
    }

    /// Whether the peer (or this side) reset the stream.
    pub(crate) fn is_reset(&self) -> bool {
        self.reset.load(Ordering::Acquire)
    }

    /// Abandons the stream both ways (RST_STREAM CANCEL).
    pub(crate) async fn reset(&self) {
        if self.reset.swap(true, Ordering::AcqRel) {
            return;
        }
        self.shared.reset(self.id);
        let _ = self
            .out
            .send(Out::Frame(Frame::RstStream {
                id: self.id,
                status: RST_CANCEL,
            }))
            .await;
    }

    async fn frame(&self, f: Frame) -> Result<(), SessionError> {
        if self.reset.load(Ordering::Acquire) {
            return Err(SessionError::Reset);
        }
        self.out
            .send(Out::Frame(f))
            .await
            .map_err(|_| SessionError::Closed)
    }
}

impl Session {
    /// Starts the session's reader and writer on `io`. A server gets the streams its peer opens from
    /// the returned receiver (which holds at most `accept_queue` not yet taken).
    pub(crate) fn start<T>(
        io: T,
        role: Role,
        limits: SessionLimits,
    ) -> Result<(Self, mpsc::Receiver<SpdyStream>), super::spdy::SpdyError>
    where
        T: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (r, w) = tokio::io::split(io);
        let writer = FrameWriter::new(w)?;
        let reader = FrameReader::new(r, limits.max_frame);
        let shared = Arc::new(Shared {
            streams: Mutex::new(HashMap::new()),
            last_activity: Mutex::new(Instant::now()),
            budget: Arc::new(Semaphore::new(limits.inbound_budget.max(limits.max_frame))),
            pongs: AtomicU32::new(0),
        });
        let (out_tx, out_rx) = mpsc::channel(OUT_QUEUE);
        let (accept_tx, accept_rx) = mpsc::channel(limits.max_streams.max(1));
        let (closed_tx, closed) = watch::channel(false);
        let writer = tokio::spawn(write_loop(writer, out_rx, shared.clone()));
        let reader = tokio::spawn(read_loop(ReadLoop {
            frames: reader,
            role,
            shared: shared.clone(),
            out: out_tx.clone(),
            accept: accept_tx,
            limits,
            closed: closed_tx,
        }));
        Ok((
            Self {
                out: out_tx,
                shared,
                closed,
                reader,
                writer,
                next_id: tokio::sync::Mutex::new(1),
            },
            accept_rx,
        ))
    }

    /// Resolves once the peer closed the connection, sent GOAWAY or broke the protocol.
    pub(crate) async fn closed(&self) {
        let mut c = self.closed.clone();
        let _ = c.wait_for(|closed| *closed).await;
    }

    /// Resolves once no frame went either way for `timeout`.
    pub(crate) async fn idle(&self, timeout: Duration) {
        loop {
            let deadline = self.shared.last_activity() + timeout;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline.into()).await;
        }
    }

    /// Sends GOAWAY, flushes and closes the connection; streams still open see EOF.
    pub(crate) async fn close(self) {
        let _ = self
            .out
            .send(Out::Frame(Frame::GoAway {
                last_good: 0,
                status: 0,
            }))
            .await;
        let _ = self.out.send(Out::Shutdown).await;
        // A peer that stopped reading must not hold the session forever.
        let _ = tokio::time::timeout(Duration::from_secs(5), self.writer).await;
        self.reader.abort();
    }

    /// Opens a stream and waits for the peer's SYN_REPLY (client side).
    #[cfg(test)]
    pub(crate) async fn open(&self, headers: Headers) -> Result<SpdyStream, SessionError> {
        let mut next = self.next_id.lock().await;
        let id = *next;
        *next += 2;
        let (data_tx, data_rx) = mpsc::channel(STREAM_QUEUE);
        let (reply_tx, reply_rx) = oneshot::channel();
        let reset = Arc::new(AtomicBool::new(false));
        self.shared.with_streams(|s| {
            s.insert(
                id,
                Entry {
                    data: Some(data_tx),
                    reply: Some(reply_tx),
                    local_done: false,
                    remote_done: false,
                    reset: reset.clone(),
                },
            )
        });
        self.out
            .send(Out::Frame(Frame::SynStream {
                id,
                fin: false,
                unidirectional: false,
                headers: headers.clone(),
            }))
            .await
            .map_err(|_| SessionError::Closed)?;
        drop(next);
        reply_rx.await.map_err(|_| SessionError::Closed)?;
        Ok(SpdyStream {
            id,
            headers,
            reader: StreamReader { rx: data_rx },
            writer: self.writer_for(id, reset),
        })
    }

    /// Sends a frame as is (tests: PING, SETTINGS, WINDOW_UPDATE).
    #[cfg(test)]
    pub(crate) async fn send_raw(&self, f: Frame) -> Result<(), SessionError> {
        self.out
            .send(Out::Frame(f))
            .await
            .map_err(|_| SessionError::Closed)
    }

    /// PINGs of this side's that the peer echoed.
    #[cfg(test)]
    pub(crate) fn pongs(&self) -> u32 {
        self.shared.pongs.load(Ordering::Acquire)
    }

    #[cfg(test)]
    fn writer_for(&self, id: u32, reset: Arc<AtomicBool>) -> StreamWriter {
        StreamWriter {
            id,
            out: self.out.clone(),
            shared: self.shared.clone(),
            reset,
            fin_sent: Arc::new(AtomicBool::new(false)),
        }
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut w: FrameWriter<W>,
    mut rx: mpsc::Receiver<Out>,
    shared: Arc<Shared>,
) {
    while let Some(out) = rx.recv().await {
        match out {
            Out::Frame(f) => {
                if let Err(e) = w.write(&f).await {
                    tracing::debug!(error = %e, "stream session write failed");
                    return;
                }
                shared.touch();
                // Frames queued together leave in one flush.
                if rx.is_empty() && w.flush().await.is_err() {
                    return;
                }
            }
            Out::Shutdown => break,
        }
    }
    let _ = w.flush().await;
    let _ = w.shutdown().await;
}

struct ReadLoop<R> {
    frames: FrameReader<R>,
    role: Role,
    shared: Arc<Shared>,
    out: mpsc::Sender<Out>,
    accept: mpsc::Sender<SpdyStream>,
    limits: SessionLimits,
    closed: watch::Sender<bool>,
}

async fn read_loop<R: AsyncRead + Unpin>(mut l: ReadLoop<R>) {
    loop {
        let frame = match l.frames.read().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(error = %e, "stream session read ended");
                break;
            }
        };
        l.shared.touch();
        if !l.handle(frame).await {
            break;
        }
    }
    // Every stream's reader sees EOF; openers waiting for a reply see the session gone.
    l.shared.with_streams(|s| {
        for e in s.values_mut() {
            e.data = None;
            e.reply = None;
        }
    });
    let _ = l.closed.send(true);
}

impl<R> ReadLoop<R> {
    /// Handles one frame; false ends the session.
    async fn handle(&mut self, frame: Frame) -> bool {
        match frame {
            Frame::SynStream {
                id, fin, headers, ..
            } => self.accept_stream(id, fin, headers).await,
            Frame::SynReply { id, fin, .. } => {
                self.shared.with_streams(|s| {
                    if let Some(r) = s.get_mut(&id).and_then(|e| e.reply.take()) {
                        let _ = r.send(());
                    }
                });
                if fin {
                    self.shared.finish(id, false);
                }
                true
            }
            Frame::Data { id, fin, data } => {
                let tx = self
                    .shared
                    .with_streams(|s| s.get(&id).and_then(|e| e.data.clone()));
                if let Some(tx) = tx {
                    if !data.is_empty() {
                        let Ok(permit) = self
                            .shared
                            .budget
                            .clone()
                            .acquire_many_owned(data.len() as u32)
                            .await
                        else {
                            return false;
                        };
                        // A reader that went away just discards.
                        let _ = tx
                            .send(Chunk {
                                data,
                                _permit: permit,
                            })
                            .await;
                    }
                }
                if fin {
                    self.shared.finish(id, false);
                }
                true
            }
            Frame::Headers { id, fin, .. } => {
                if fin {
                    self.shared.finish(id, false);
                }
                true
            }
            Frame::RstStream { id, .. } => {
                self.shared.reset(id);
                true
            }
            Frame::Ping { id } => {
                // Odd ids are the client's: echo the peer's pings, count our own coming back.
                let ours = (id % 2 == 1) == (self.role == Role::Client);
                if ours {
                    self.shared.pongs.fetch_add(1, Ordering::AcqRel);
                    true
                } else {
                    self.out.send(Out::Frame(Frame::Ping { id })).await.is_ok()
                }
            }
            Frame::GoAway { .. } => false,
            Frame::Ignored { .. } => true,
        }
    }

    async fn accept_stream(&mut self, id: u32, fin: bool, headers: Headers) -> bool {
        let refuse = |status| Out::Frame(Frame::RstStream { id, status });
        if self.role != Role::Server || id % 2 == 0 {
            return self.out.send(refuse(RST_PROTOCOL_ERROR)).await.is_ok();
        }
        let (data_tx, data_rx) = mpsc::channel(STREAM_QUEUE);
        let reset = Arc::new(AtomicBool::new(false));
        let verdict = self.shared.with_streams(|s| {
            if s.contains_key(&id) {
                Some(RST_PROTOCOL_ERROR)
            } else if s.len() >= self.limits.max_streams {
                Some(RST_REFUSED_STREAM)
            } else {
                s.insert(
                    id,
                    Entry {
                        data: (!fin).then_some(data_tx),
                        reply: None,
                        local_done: false,
                        remote_done: fin,
                        reset: reset.clone(),
                    },
                );
                None
            }
        });
        if let Some(status) = verdict {
            return self.out.send(refuse(status)).await.is_ok();
        }
        // The reply goes out before the handler can write, so it precedes the stream's data.
        if self
            .out
            .send(Out::Frame(Frame::SynReply {
                id,
                fin: false,
                headers: Vec::new(),
            }))
            .await
            .is_err()
        {
            return false;
        }
        let stream = SpdyStream {
            id,
            headers,
            reader: StreamReader { rx: data_rx },
            writer: StreamWriter {
                id,
                out: self.out.clone(),
                shared: self.shared.clone(),
                reset,
                fin_sent: Arc::new(AtomicBool::new(false)),
            },
        };
        if self.accept.try_send(stream).is_err() {
            self.shared.reset(id);
            return self.out.send(refuse(RST_REFUSED_STREAM)).await.is_ok();
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> SessionLimits {
        SessionLimits {
            max_streams: 4,
            max_frame: 1 << 20,
            inbound_budget: 2 << 20,
        }
    }

    #[tokio::test]
    async fn streams_carry_bytes_both_ways_and_fin() {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let (server, mut incoming) = Session::start(a, Role::Server, limits()).unwrap();
        let (client, _) = Session::start(b, Role::Client, limits()).unwrap();
        let srv = tokio::spawn(async move {
            let mut s = incoming.recv().await.unwrap();
            assert_eq!(
                super::super::spdy::header(&s.headers, "streamType"),
                Some("stdin")
            );
            let mut got = Vec::new();
            while let Some(c) = s.reader.recv().await {
                got.extend_from_slice(&c.data);
            }
            s.writer.send(&got).await.unwrap();
            s.writer.finish().await.unwrap();
            server
        });
        let mut s = client
            .open(vec![("streamtype".into(), "stdin".into())])
            .await
            .unwrap();
        let big = vec![7u8; 100 * 1024];
        s.writer.send(&big).await.unwrap();
        s.writer.finish().await.unwrap();
        let mut back = Vec::new();
        while let Some(c) = s.reader.recv().await {
            back.extend_from_slice(&c.data);
        }
        assert_eq!(back, big);
        // Tolerated frames, and a PING the server must echo.
        client.send_raw(Frame::Ignored { kind: 4 }).await.unwrap();
        client.send_raw(Frame::Ignored { kind: 9 }).await.unwrap();
        client.send_raw(Frame::Ping { id: 1 }).await.unwrap();
        for _ in 0..100 {
            if client.pongs() == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(client.pongs(), 1);
        let server = srv.await.unwrap();
        server.close().await;
        tokio::time::timeout(Duration::from_secs(5), client.closed())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn streams_beyond_the_limit_are_refused() {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let (_server, _incoming) = Session::start(a, Role::Server, limits()).unwrap();
        let (client, _) = Session::start(b, Role::Client, limits()).unwrap();
        let mut open = Vec::new();
        for _ in 0..4 {
            open.push(client.open(vec![]).await.unwrap());
        }
        // The fifth gets RST_STREAM instead of a reply; its opener sees EOF at once.
        let r = tokio::time::timeout(Duration::from_millis(300), client.open(vec![])).await;
        assert!(r.is_err() || r.unwrap().is_err());
    }
}
