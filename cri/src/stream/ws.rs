//! WebSocket as a byte pipe: client-go's port-forward over WebSocket carries a whole SPDY session
//! in binary messages (subprotocol `SPDY/3.1+portforward.k8s.io`), so this bridges such a socket
//! to an in-memory duplex that the SPDY session reads and writes like a TCP connection.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// Bridges `ws` to the returned duplex until either side ends.
pub(super) fn tunnel<S>(ws: WebSocketStream<S>, max_message: usize) -> DuplexStream
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move {
        let (mut sink, mut source) = ws.split();
        let (mut rd, mut wr) = tokio::io::split(ours);
        let inbound = async {
            while let Some(Ok(msg)) = source.next().await {
                match msg {
                    Message::Binary(b) if wr.write_all(&b).await.is_err() => break,
                    Message::Close(_) => break,
                    // Pings are answered by tungstenite; text has no meaning here.
                    _ => {}
                }
            }
            let _ = wr.shutdown().await;
        };
        let outbound = async {
            let mut buf = vec![0u8; max_message.clamp(1024, 64 * 1024)];
            loop {
                match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let m = Message::Binary(Bytes::copy_from_slice(&buf[..n]));
                        if sink.send(m).await.is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = sink
                .send(Message::Close(Some(CloseFrame {
                    code: CloseCode::Normal,
                    reason: "".into(),
                })))
                .await;
        };
        // The session ends by shutting down its write side: finish sending, then stop reading.
        tokio::pin!(inbound);
        tokio::select! {
            _ = &mut inbound => {}
            _ = outbound => {
                let _ = tokio::time::timeout(std::time::Duration::from_secs(5), inbound).await;
            }
        }
    });
    theirs
}
