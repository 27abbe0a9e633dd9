//! `GET /metrics` over HTTP/1.1, for Prometheus to scrape.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::{Error, Metrics};

type Body = http_body_full::Full;

/// Binds `addr` and serves the registry until `shutdown` resolves. Returns the bound address (the
/// port is chosen by the kernel when `addr` has port 0) and the server future to spawn.
pub async fn serve(
    addr: SocketAddr,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(SocketAddr, impl Future<Output = ()> + Send + 'static), Error> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| Error::Bind { addr, source })?;
    let server = async move {
        tokio::pin!(shutdown);
        loop {
            let (stream, _) = tokio::select! {
                _ = &mut shutdown => return,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of fds or similar: keep serving once the pressure is gone.
                        tracing::warn!(error = %e, "metrics endpoint accept");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let metrics = metrics.clone();
                    async move {
                        // Scrape hooks may read files: off the async threads.
                        let page = if is_scrape(&req) {
                            let m = metrics.clone();
                            tokio::task::spawn_blocking(move || m.render()).await.ok()
                        } else {
                            None
                        };
                        Ok::<_, Infallible>(respond(page, &req))
                    }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc);
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "metrics connection");
                }
            });
        }
    };
    Ok((local, server))
}

fn is_scrape<B>(req: &Request<B>) -> bool {
    req.method() == Method::GET && req.uri().path() == "/metrics"
}

/// The answer to `req`; `page` is the rendered registry for a scrape (`None`: rendering failed).
fn respond<B>(page: Option<Vec<u8>>, req: &Request<B>) -> Response<Body> {
    let (status, content_type, body) = match (req.method(), req.uri().path(), page) {
        (&Method::GET, "/metrics", Some(page)) => (
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            Bytes::from(page),
        ),
        (&Method::GET, "/metrics", None) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            Bytes::from_static(b"rendering the metrics failed\n"),
        ),
        (_, "/metrics", _) => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            Bytes::from_static(b"only GET\n"),
        ),
        (_, _, _) => (
            StatusCode::NOT_FOUND,
            "text/plain",
            Bytes::from_static(b"carapace serves /metrics\n"),
        ),
    };
    let mut resp = Response::new(http_body_full::Full::new(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    resp
}

/// A body that is one chunk, known in full; hyper wants a `Body`, and pulling in `http-body-util`
/// for this alone is not worth it.
mod http_body_full {
    use std::convert::Infallible;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use http_body::{Body, Frame, SizeHint};
    use hyper::body::Bytes;

    pub struct Full(Option<Bytes>);

    impl Full {
        pub fn new(b: Bytes) -> Self {
            Self(Some(b))
        }
    }

    impl Body for Full {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Ready(self.0.take().map(|b| Ok(Frame::data(b))))
        }

        fn is_end_stream(&self) -> bool {
            self.0.is_none()
        }

        fn size_hint(&self) -> SizeHint {
            SizeHint::with_exact(self.0.as_ref().map_or(0, |b| b.len() as u64))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn serves_metrics_and_404_elsewhere() {
        let m = Metrics::new("0.0.0-test").unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (addr, server) = serve("127.0.0.1:0".parse().unwrap(), m, async {
            let _ = rx.await;
        })
        .await
        .unwrap();
        let handle = tokio::spawn(server);
        let page = get(addr, "/metrics").await;
        assert!(
            page.starts_with("HTTP/1.0 200") || page.starts_with("HTTP/1.1 200"),
            "{page}"
        );
        assert!(page.contains("carapace_build_info"));
        assert!(get(addr, "/nope").await.contains(" 404 "));
        tx.send(()).unwrap();
        handle.await.unwrap();
    }
}
