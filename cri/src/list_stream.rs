//! The list-streaming calls of cri-api v0.36 (KEP-5825: `StreamPodSandboxes`, `StreamContainers`,
//! `StreamContainerStats`, `StreamPodSandboxStats`, `StreamPodSandboxMetrics`, `StreamImages`):
//! the items of the unary List with the same filter, each once, then the end of the stream. They
//! go in messages of about [`BATCH_BYTES`], so that a list too large for one gRPC message (a
//! client's 4 or 16 MiB limit, the reason these calls exist) still arrives.

use bytes::Bytes;
use prost::Message;
use tonic::codegen::BoxStream;

use crate::error::Error;

/// A message is closed before the item that would take it past this many bytes (an item larger
/// than this alone is a message of its own).
pub(crate) const BATCH_BYTES: usize = 1 << 20;

/// `items` in order, as the messages `wrap` makes of each batch.
pub(crate) fn stream<I, T>(items: Vec<I>, wrap: fn(Vec<I>) -> T) -> BoxStream<T>
where
    I: Message,
    T: Send + 'static,
{
    let mut messages = Vec::new();
    let mut batch = Vec::new();
    let mut size = 0;
    for item in items {
        // With the item's field key and length, as the message will carry it.
        let len = prost::encoding::message::encoded_len(1, &item);
        if !batch.is_empty() && size + len > BATCH_BYTES {
            messages.push(wrap(std::mem::take(&mut batch)));
            size = 0;
        }
        size += len;
        batch.push(item);
    }
    if !batch.is_empty() {
        messages.push(wrap(batch));
    }
    Box::pin(tokio_stream::iter(messages.into_iter().map(Ok)))
}

/// An encoded list answer (its items, each a length-delimited field 1; see [`crate::listing`])
/// cut between items into messages of the same shape: the stream answers' items are field 1 as
/// well, so each part is a valid stream message as it is.
pub(crate) fn split_encoded(answer: Bytes) -> Result<Vec<Bytes>, Error> {
    let malformed = |what: &str| Error::Internal(format!("splitting our own list answer: {what}"));
    let mut parts = Vec::new();
    let (mut start, mut at) = (0, 0);
    while at < answer.len() {
        let mut rest = &answer[at..];
        let before = rest.len();
        let (_, wire) =
            prost::encoding::decode_key(&mut rest).map_err(|e| malformed(&e.to_string()))?;
        if wire != prost::encoding::WireType::LengthDelimited {
            return Err(malformed("an item that is not length-delimited"));
        }
        let len =
            prost::encoding::decode_varint(&mut rest).map_err(|e| malformed(&e.to_string()))?;
        let end = usize::try_from(len)
            .ok()
            .and_then(|len| (at + before - rest.len()).checked_add(len))
            .filter(|end| *end <= answer.len())
            .ok_or_else(|| malformed("an item longer than the answer"))?;
        if at > start && end - start > BATCH_BYTES {
            parts.push(answer.slice(start..at));
            start = at;
        }
        at = end;
    }
    if at > start {
        parts.push(answer.slice(start..at));
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::*;
    use tokio_stream::StreamExt;

    fn pod(i: usize, pad: usize) -> PodSandbox {
        PodSandbox {
            id: format!("{i:064}"),
            annotations: [("pad".to_string(), "x".repeat(pad))].into(),
            ..Default::default()
        }
    }

    #[test]
    fn an_encoded_list_splits_between_items_into_stream_messages() {
        let items: Vec<PodSandbox> = (0..40).map(|i| pod(i, 100 << 10)).collect();
        let list = ListPodSandboxResponse {
            items: items.clone(),
        }
        .encode_to_vec();
        let parts = split_encoded(Bytes::from(list)).unwrap();
        assert!(parts.len() > 1, "{} parts", parts.len());
        let mut got = Vec::new();
        for p in parts {
            assert!(p.len() <= BATCH_BYTES, "{}", p.len());
            got.extend(StreamPodSandboxesResponse::decode(p).unwrap().pod_sandboxes);
        }
        assert_eq!(got, items);
        assert!(split_encoded(Bytes::new()).unwrap().is_empty());
        assert!(split_encoded(Bytes::from_static(b"\x0a\x05ab")).is_err());
    }

    #[tokio::test]
    async fn items_stream_in_order_each_once_in_bounded_messages() {
        let items: Vec<PodSandbox> = (0..40).map(|i| pod(i, 100 << 10)).collect();
        let mut s = stream(items.clone(), |pod_sandboxes| StreamPodSandboxesResponse {
            pod_sandboxes,
        });
        let (mut got, mut messages) = (Vec::new(), 0);
        while let Some(m) = s.next().await {
            let m = m.unwrap();
            assert!(m.encoded_len() <= BATCH_BYTES);
            messages += 1;
            got.extend(m.pod_sandboxes);
        }
        assert!(messages > 1);
        assert_eq!(got, items);
        let mut none = stream(Vec::<PodSandbox>::new(), |pod_sandboxes| {
            StreamPodSandboxesResponse { pod_sandboxes }
        });
        assert!(none.next().await.is_none());
    }
}
