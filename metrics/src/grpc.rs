//! The tower layer that counts and times every gRPC call, so handlers carry no metrics code.
//!
//! A call ends when its response body ends, not when the handler returns: the gRPC status of a
//! successful call arrives in the trailers, and a streaming call lasts as long as its stream.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame};
use tower::{Layer, Service};

use crate::Metrics;

/// Wraps a gRPC server so that each call is counted and timed in [`Metrics`].
#[derive(Clone)]
pub struct CriMetricsLayer {
    metrics: Metrics,
}

impl CriMetricsLayer {
    pub fn new(metrics: Metrics) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for CriMetricsLayer {
    type Service = CriMetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CriMetricsService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone)]
pub struct CriMetricsService<S> {
    inner: S,
    metrics: Metrics,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for CriMetricsService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Body,
{
    type Response = Response<TimedBody<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let (service, method) = split_path(req.uri().path());
        let call = Call {
            metrics: self.metrics.clone(),
            service,
            method,
            started: Instant::now(),
            done: false,
        };
        let fut = self.inner.call(req);
        Box::pin(async move {
            let mut call = call;
            match fut.await {
                Ok(resp) => {
                    // A trailers-only response (every error tonic returns) carries the status in
                    // the headers; otherwise it comes in the trailers at the end of the body.
                    if let Some(code) = grpc_code(resp.headers()) {
                        call.finish(code);
                    } else if resp.status() != http::StatusCode::OK {
                        call.finish("Unknown");
                    }
                    Ok(resp.map(|inner| TimedBody { inner, call }))
                }
                Err(e) => {
                    call.finish("Internal");
                    Err(e)
                }
            }
        })
    }
}

/// One call in flight: records itself once, at the end of its body or when dropped unfinished
/// (the client went away), so no call is ever missed or counted twice.
struct Call {
    metrics: Metrics,
    service: String,
    method: String,
    started: Instant,
    done: bool,
}

impl Call {
    fn finish(&mut self, code: &str) {
        if self.done {
            return;
        }
        self.done = true;
        let secs = self.started.elapsed().as_secs_f64();
        self.metrics
            .observe_cri_call(&self.service, &self.method, code, secs);
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.finish("Cancelled");
    }
}

pin_project_lite::pin_project! {
    /// A response body that reports the call's status when its trailers (or its end) go by.
    pub struct TimedBody<B> {
        #[pin]
        inner: B,
        call: Call,
    }
}

impl<B: Body> Body for TimedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    this.call.finish(grpc_code(trailers).unwrap_or("Unknown"));
                }
            }
            Poll::Ready(Some(Err(_))) => this.call.finish("Internal"),
            Poll::Ready(None) => this.call.finish("Unknown"),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// `/runtime.v1.RuntimeService/Version` → (`runtime.v1.RuntimeService`, `Version`). Anything else
/// is one bucket, so a scanner probing random paths cannot blow up the label set.
fn split_path(path: &str) -> (String, String) {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    match (parts.next(), parts.next()) {
        (Some(s), Some(m)) if is_known_service(s) && !m.is_empty() && m.len() <= 64 => {
            (s.to_owned(), m.to_owned())
        }
        _ => ("unknown".to_owned(), "unknown".to_owned()),
    }
}

fn is_known_service(service: &str) -> bool {
    matches!(
        service,
        "runtime.v1.RuntimeService" | "runtime.v1.ImageService"
    )
}

/// The gRPC status code named as gRPC names it (`OK`, `NotFound`, ...).
fn grpc_code(headers: &HeaderMap) -> Option<&'static str> {
    let raw = headers.get("grpc-status")?.to_str().ok()?;
    Some(code_name(raw.parse().ok()?))
}

fn code_name(code: u32) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "Cancelled",
        "Unknown",
        "InvalidArgument",
        "DeadlineExceeded",
        "NotFound",
        "AlreadyExists",
        "PermissionDenied",
        "ResourceExhausted",
        "FailedPrecondition",
        "Aborted",
        "OutOfRange",
        "Unimplemented",
        "Internal",
        "Unavailable",
        "DataLoss",
        "Unauthenticated",
    ];
    NAMES.get(code as usize).copied().unwrap_or("Unknown")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_service_and_method() {
        assert_eq!(
            split_path("/runtime.v1.RuntimeService/Version"),
            ("runtime.v1.RuntimeService".into(), "Version".into())
        );
        assert_eq!(
            split_path("/evil/../x"),
            ("unknown".into(), "unknown".into())
        );
        assert_eq!(split_path("/"), ("unknown".into(), "unknown".into()));
    }

    #[test]
    fn codes_are_named_as_grpc_names_them() {
        let mut h = HeaderMap::new();
        assert_eq!(grpc_code(&h), None);
        h.insert("grpc-status", "12".parse().unwrap());
        assert_eq!(grpc_code(&h), Some("Unimplemented"));
        h.insert("grpc-status", "99".parse().unwrap());
        assert_eq!(grpc_code(&h), Some("Unknown"));
    }
}
