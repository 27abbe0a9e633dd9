//! The answers to the kubelet's list polls, `ListPodSandbox` and `ListContainers` (every second,
//! and again for each pod it relists), built from protobuf bytes kept between calls.
//!
//! The fields a list shows of a pod or a container never change after it is created, except its
//! state. So each item is encoded once, without its state, and an answer is those bytes with the
//! state appended (protobuf takes a message's fields in any order, and a repeated field is its
//! items one after the other). The generated service built every item's maps and strings and
//! encoded them again on every call: with 100 pods that was most of a list's time in the daemon.
//! [`crate::service`] sends these answers as they are.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;

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

/// A list answer decoded again, for callers inside the crate that want the message.
pub(crate) fn decode<M: Message + Default>(
    bytes: Bytes,
    what: &str,
) -> Result<M, crate::error::Error> {
    M::decode(bytes)
        .map_err(|e| crate::error::Error::Internal(format!("decoding our own {what}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::*;

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
