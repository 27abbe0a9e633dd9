//! The `runtime.v1.RuntimeService` the gRPC server runs: `ListPodSandbox` and `ListContainers`,
//! and their streams `StreamPodSandboxes` and `StreamContainers`, answered with the bytes
//! [`crate::listing`] keeps, written as they are through gRPC's framing;
//! every other call goes to the generated service over [`RuntimeApi`].

use std::convert::Infallible;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes};
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{BoxFuture, BoxStream, Service};
use tonic::server::{NamedService, ServerStreamingService, UnaryService};

use crate::api::runtime_service_server::RuntimeServiceServer;
use crate::api::*;
use crate::runtime::RuntimeApi;

/// A gRPC codec whose answers are already encoded; requests are decoded as usual.
struct Encoded<Req>(PhantomData<Req>);

impl<Req> Default for Encoded<Req> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

struct BytesEncoder;

impl Encoder for BytesEncoder {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

struct MessageDecoder<Req>(PhantomData<Req>);

impl<Req: Message + Default> Decoder for MessageDecoder<Req> {
    type Item = Req;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Req>, tonic::Status> {
        Req::decode(src)
            .map(Some)
            .map_err(|e| tonic::Status::invalid_argument(format!("malformed request: {e}")))
    }
}

impl<Req: Message + Default + Send + 'static> Codec for Encoded<Req> {
    type Encode = Bytes;
    type Decode = Req;
    type Encoder = BytesEncoder;
    type Decoder = MessageDecoder<Req>;

    fn encoder(&mut self) -> BytesEncoder {
        BytesEncoder
    }

    fn decoder(&mut self) -> MessageDecoder<Req> {
        MessageDecoder(PhantomData)
    }
}

/// How one list call is answered: the encoded answer to a decoded request.
type ListFn<Req> = fn(Arc<RuntimeApi>, Req) -> BoxFuture<Bytes, crate::error::Error>;

struct List<Req> {
    api: Arc<RuntimeApi>,
    answer: ListFn<Req>,
}

impl<Req: Send + 'static> UnaryService<Req> for List<Req> {
    type Response = Bytes;
    type Future = BoxFuture<tonic::Response<Bytes>, tonic::Status>;

    fn call(&mut self, req: tonic::Request<Req>) -> Self::Future {
        let answer = (self.answer)(self.api.clone(), req.into_inner());
        Box::pin(async move { Ok(tonic::Response::new(answer.await?)) })
    }
}

/// Serves one call of a list method through gRPC's framing, with the encoded answer as is.
fn serve<Req: Message + Default + Send + 'static>(
    list: List<Req>,
    req: http::Request<tonic::body::Body>,
) -> BoxFuture<http::Response<tonic::body::Body>, Infallible> {
    Box::pin(async move {
        let mut grpc = tonic::server::Grpc::new(Encoded::<Req>::default());
        Ok(grpc.unary(list, req).await)
    })
}

/// A list stream served the same way: the encoded list answer cut between items into messages
/// (see [`crate::list_stream::split_encoded`]).
struct StreamList<Req> {
    api: Arc<RuntimeApi>,
    answer: ListFn<Req>,
}

impl<Req: Send + 'static> ServerStreamingService<Req> for StreamList<Req> {
    type Response = Bytes;
    type ResponseStream = BoxStream<Bytes>;
    type Future = BoxFuture<tonic::Response<BoxStream<Bytes>>, tonic::Status>;

    fn call(&mut self, req: tonic::Request<Req>) -> Self::Future {
        let answer = (self.answer)(self.api.clone(), req.into_inner());
        Box::pin(async move {
            let parts = crate::list_stream::split_encoded(answer.await?)?;
            let stream: BoxStream<Bytes> = Box::pin(tokio_stream::iter(parts.into_iter().map(Ok)));
            Ok(tonic::Response::new(stream))
        })
    }
}

/// Serves one call of a list stream through gRPC's framing.
fn serve_stream<Req: Message + Default + Send + 'static>(
    list: StreamList<Req>,
    req: http::Request<tonic::body::Body>,
) -> BoxFuture<http::Response<tonic::body::Body>, Infallible> {
    Box::pin(async move {
        let mut grpc = tonic::server::Grpc::new(Encoded::<Req>::default());
        Ok(grpc.server_streaming(list, req).await)
    })
}

/// The CRI runtime service: the two list calls and their streams answered from kept encodings,
/// the rest by the generated service.
#[derive(Clone)]
pub struct RuntimeService {
    api: Arc<RuntimeApi>,
    generated: RuntimeServiceServer<RuntimeApi>,
}

impl RuntimeService {
    pub(crate) fn new(api: RuntimeApi) -> Self {
        let api = Arc::new(api);
        Self {
            generated: RuntimeServiceServer::from_arc(api.clone()),
            api,
        }
    }
}

impl NamedService for RuntimeService {
    const NAME: &'static str = runtime_service_server::SERVICE_NAME;
}

impl Service<http::Request<tonic::body::Body>> for RuntimeService {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let api = self.api.clone();
        match req.uri().path() {
            "/runtime.v1.RuntimeService/ListPodSandbox" => serve(
                List::<ListPodSandboxRequest> {
                    api,
                    answer: |api, r| Box::pin(async move { api.list_pods_encoded(r).await }),
                },
                req,
            ),
            "/runtime.v1.RuntimeService/ListContainers" => serve(
                List::<ListContainersRequest> {
                    api,
                    answer: |api, r| Box::pin(async move { api.list_containers_encoded(r).await }),
                },
                req,
            ),
            "/runtime.v1.RuntimeService/StreamPodSandboxes" => serve_stream(
                StreamList::<StreamPodSandboxesRequest> {
                    api,
                    answer: |api, r| {
                        Box::pin(async move {
                            let r = ListPodSandboxRequest { filter: r.filter };
                            api.list_pods_encoded(r).await
                        })
                    },
                },
                req,
            ),
            "/runtime.v1.RuntimeService/StreamContainers" => serve_stream(
                StreamList::<StreamContainersRequest> {
                    api,
                    answer: |api, r| {
                        Box::pin(async move {
                            let r = ListContainersRequest { filter: r.filter };
                            api.list_containers_encoded(r).await
                        })
                    },
                },
                req,
            ),
            _ => self.generated.call(req),
        }
    }
}
