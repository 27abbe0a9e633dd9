//! The answers to the kubelet's list polls, `ListPodSandbox` and `ListContainers` (every second,
//! and again for each pod it relists), built from protobuf bytes kept between calls.
//!
//! The fields a list shows of a pod or a container never change after it is created, except its
//! state. So each item is encoded once, without its state, and an answer is those bytes with the
//! state appended (protobuf takes a message's fields in any order, and a repeated field is its
//! items one after the other). The generated service built every item's maps and strings and
//! encoded them again on every call: with 100 pods that was most of a list's time in the daemon.
//! Those two methods are answered here; every other call goes to the generated service.

use std::collections::HashMap;
use std::convert::Infallible;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{BoxFuture, Service};
use tonic::server::{NamedService, UnaryService};

use crate::api::runtime_service_server::RuntimeServiceServer;
use crate::api::*;
use crate::runtime::RuntimeApi;

/// The field number of the items in both list answers (`items`, `containers`).
const ITEMS: u32 = 1;
/// The field number of `state` in `PodSandbox`.
pub(crate) const POD_STATE: u32 = 3;
/// The field number of `state` in `Container`.
pub(crate) const CONTAINER_STATE: u32 = 6;

/// Encoded list items by record id, with the creation time that tells a reused id apart.
#[derive(Default)]
pub(crate) struct EncodedItems {
    items: Mutex<HashMap<String, (i64, Bytes)>>,
}

/// The items, locked for one answer.
pub(crate) struct Items<'a>(MutexGuard<'a, HashMap<String, (i64, Bytes)>>);

impl EncodedItems {
    pub(crate) fn lock(&self) -> Items<'_> {
        // Every update is one insert or remove: the map is whole even after a panic.
        Items(self.items.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Items<'_> {
    /// The encoding of record `id` created at `created_at`: kept, or made by `encode` now.
    pub(crate) fn get(
        &mut self,
        id: &str,
        created_at: i64,
        encode: impl FnOnce() -> Vec<u8>,
    ) -> Bytes {
        if let Some((at, bytes)) = self.0.get(id)
            && *at == created_at
        {
            return bytes.clone();
        }
        let bytes = Bytes::from(encode());
        self.0.insert(id.to_owned(), (created_at, bytes.clone()));
        bytes
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// Drops the items of removed records, once more are kept than `live` records exist.
    pub(crate) fn prune(&mut self, live: usize, is_live: impl Fn(&str) -> bool) {
        if self.0.len() > live {
            self.0.retain(|id, _| is_live(id));
        }
    }
}

/// The last answer to an unfiltered list, the kubelet's poll, with the count of changes it was
/// made at: the same count means the same answer, sent again as is. With 100 pods, making it
/// again touched every record (ids, states, kept items, scattered over the heap) and was most of
/// the daemon's time in a list.
#[derive(Default)]
pub(crate) struct KeptAnswer(Mutex<Option<(u64, Bytes)>>);

impl KeptAnswer {
    fn kept(&self) -> MutexGuard<'_, Option<(u64, Bytes)>> {
        // One assignment per update: whole after a panic.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The answer made at `changes`, if that is the one kept.
    pub(crate) fn get(&self, changes: u64) -> Option<Bytes> {
        match &*self.kept() {
            Some((at, answer)) if *at == changes => Some(answer.clone()),
            _ => None,
        }
    }

    /// Keeps `answer`, made from what was there when the count was `changes` (read before
    /// reading the records: a change that came meanwhile moved the count on, so this answer is
    /// never taken for a later one). An older answer made concurrently does not replace it.
    pub(crate) fn keep(&self, changes: u64, answer: &Bytes) {
        let mut kept = self.kept();
        if kept.as_ref().is_none_or(|(at, _)| *at <= changes) {
            *kept = Some((changes, answer.clone()));
        }
    }
}

/// A list answer: each item's kept encoding followed by its state field `state_field` (left out
/// when 0, as protobuf leaves a default out).
pub(crate) fn answer<'a>(
    items: impl IntoIterator<Item = (&'a [u8], i32)>,
    state_field: u32,
) -> Bytes {
    let mut buf = BytesMut::new();
    for (item, state) in items {
        let state_len = if state == 0 {
            0
        } else {
            prost::encoding::int32::encoded_len(state_field, &state)
        };
        prost::encoding::encode_key(ITEMS, prost::encoding::WireType::LengthDelimited, &mut buf);
        prost::encoding::encode_varint((item.len() + state_len) as u64, &mut buf);
        buf.put_slice(item);
        if state != 0 {
            prost::encoding::int32::encode(state_field, &state, &mut buf);
        }
    }
    buf.freeze()
}

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

/// A list answer decoded again, for callers inside the crate that want the message.
pub(crate) fn decode<M: Message + Default>(
    bytes: Bytes,
    what: &str,
) -> Result<M, crate::error::Error> {
    M::decode(bytes)
        .map_err(|e| crate::error::Error::Internal(format!("decoding our own {what}: {e}")))
}

/// The CRI runtime service: the two list calls answered from kept encodings, the rest by the
/// generated service.
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
            _ => self.generated.call(req),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_decodes_as_the_generated_message_would_encode_it() {
        let pod = |id: &str, state: i32| PodSandbox {
            id: id.into(),
            metadata: Some(PodSandboxMetadata {
                name: format!("{id}-name"),
                uid: "u".into(),
                namespace: "ns".into(),
                attempt: 2,
            }),
            state,
            created_at: 17,
            labels: [("app".to_string(), "web".to_string())].into(),
            annotations: [("a".to_string(), "b".to_string())].into(),
            runtime_handler: "runc".into(),
        };
        let want = ListPodSandboxResponse {
            items: vec![pod("a", 0), pod("b", 1)],
        };
        let mut kept = EncodedItems::default();
        let items: Vec<(Bytes, i32)> = {
            let mut items = kept.lock();
            want.items
                .iter()
                .map(|p| {
                    let bytes = items.get(&p.id, p.created_at, || {
                        PodSandbox {
                            state: 0,
                            ..p.clone()
                        }
                        .encode_to_vec()
                    });
                    (bytes, p.state)
                })
                .collect()
        };
        let answer = answer(items.iter().map(|(b, s)| (&b[..], *s)), POD_STATE);
        let got = ListPodSandboxResponse::decode(answer).unwrap();
        assert_eq!(got, want);
        assert_eq!(kept.items.get_mut().unwrap().len(), 2);
    }

    #[test]
    fn a_kept_answer_is_given_for_its_own_count_of_changes_only() {
        let kept = KeptAnswer::default();
        assert_eq!(kept.get(0), None);
        kept.keep(3, &Bytes::from_static(b"three"));
        assert_eq!(kept.get(3), Some(Bytes::from_static(b"three")));
        assert_eq!(kept.get(4), None);
        // An answer made earlier, finishing later, does not replace a newer one.
        kept.keep(2, &Bytes::from_static(b"two"));
        assert_eq!(kept.get(3), Some(Bytes::from_static(b"three")));
        assert_eq!(kept.get(2), None);
        kept.keep(4, &Bytes::from_static(b"four"));
        assert_eq!(kept.get(4), Some(Bytes::from_static(b"four")));
        assert_eq!(kept.get(3), None);
    }

    #[test]
    fn kept_items_are_reused_pruned_and_remade_for_a_new_record() {
        let kept = EncodedItems::default();
        let mut items = kept.lock();
        assert_eq!(items.get("a", 1, || vec![1]), Bytes::from(vec![1]));
        // Kept: the encoder is not called again.
        assert_eq!(items.get("a", 1, || unreachable!()), Bytes::from(vec![1]));
        // The same id created again is a new record.
        assert_eq!(items.get("a", 2, || vec![2]), Bytes::from(vec![2]));
        items.get("b", 1, || vec![3]);
        items.prune(1, |id| id == "b");
        assert_eq!(items.get("a", 2, || vec![4]), Bytes::from(vec![4]));
        assert_eq!(items.get("b", 1, || unreachable!()), Bytes::from(vec![3]));
    }
}
