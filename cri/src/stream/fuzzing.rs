//! The streaming server's wire parsers, driven by the fuzz targets through [`crate::fuzzing`].

use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker};

use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use super::Limits;
use super::remotecommand::{RESIZE, ResizeDecoder, WsProto, ws_decode};
use super::spdy::{FrameReader, FrameWriter};

/// Runs `f` to completion when it never has to wait, which holds for I/O on in-memory bytes.
fn ready<F: Future>(f: F) -> Option<F::Output> {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    match f.as_mut().poll(&mut cx) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}

/// Reads `data` as the client's side of a SPDY session until the end or the first error, then
/// writes every frame read and reads the result back, which must give the same frames. Returns
/// the number of frames read.
pub(crate) fn spdy(data: &[u8]) -> usize {
    let max_data = Limits::default().max_frame;
    let mut frames = Vec::new();
    let mut reader = FrameReader::new(data, max_data);
    while let Some(Ok(Some(f))) = ready(reader.read()) {
        if let super::spdy::Frame::SynStream { headers, .. } = &f {
            let _ = super::spdy::header(headers, "streamtype");
        }
        frames.push(f);
    }
    let mut wire = Vec::new();
    let Some(Ok(mut writer)) = ready(async { FrameWriter::new(&mut wire) }) else {
        return frames.len();
    };
    let mut written = Vec::new();
    for f in &frames {
        // A header value that was not UTF-8 grows when made so: it may no longer fit.
        match ready(writer.write(f)) {
            Some(Ok(())) => written.push(f.clone()),
            Some(Err(_)) => break,
            None => panic!("writing to memory waited"),
        }
    }
    drop(writer);
    let mut back = FrameReader::new(&wire[..], max_data);
    for f in &written {
        match ready(back.read()) {
            Some(Ok(Some(g))) => assert_eq!(&g, f, "a frame changed in a write and read back"),
            other => panic!("frame {f:?} written, read back as {other:?}"),
        }
    }
    frames.len()
}

/// The client's bytes of a WebSocket connection, and a sink for what the server sends.
struct Wire<'a>(&'a [u8]);

impl AsyncRead for Wire<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Wire<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Reads `data` as what a client sends on an upgraded WebSocket connection under subprotocol
/// `protocol`, with the server's message limits, and decodes every message into its channel as
/// an exec session does, terminal resizes included. Returns the number of messages read.
pub(crate) fn websocket(protocol: &str, data: &[u8]) -> usize {
    let proto = WsProto::from_name(protocol);
    let max = Limits::default().max_frame;
    // As `http::websocket_stream` configures it.
    let config = WebSocketConfig::default()
        .max_message_size(Some(max))
        .max_frame_size(Some(max));
    let (tx, mut rx) = mpsc::channel(16);
    let mut resize = Some(ResizeDecoder {
        buf: Vec::new(),
        tx,
    });
    let read = async {
        let mut ws = WebSocketStream::from_raw_socket(Wire(data), Role::Server, Some(config)).await;
        let mut n = 0;
        while let Some(Ok(msg)) = ws.next().await {
            n += 1;
            let Some((channel, payload)) = ws_decode(proto, msg) else {
                continue;
            };
            if channel == RESIZE
                && let Some(d) = resize.as_mut()
                && !d.push(&payload)
            {
                resize = None;
            }
            // The decoder's queue is the session's: keep it drained as the session would.
            while rx.try_recv().is_ok() {}
        }
        n
    };
    ready(read).unwrap_or(0)
}
