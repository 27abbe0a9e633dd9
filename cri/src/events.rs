//! `GetContainerEvents`: container created / started / stopped / deleted, each with its pod's
//! status and the statuses of the pod's containers, for the kubelet's evented PLEG.
//!
//! The container paths send into a bounded broadcast channel and never wait: a subscriber that
//! falls behind loses the oldest events (it is told how many in the log) instead of slowing the
//! runtime. The kubelet relists periodically anyway, so a lost event costs latency, not truth.

use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::broadcast;
use tonic::Status;

use crate::api::*;

/// Events held for the slowest subscriber before it starts losing them.
const BACKLOG: usize = 1024;

pub(crate) type EventStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<ContainerEventResponse, Status>> + Send>>;

/// The channel holds events behind an `Arc`: tokio allocates and writes every slot up front, and
/// slots of whole events (about 470 bytes each) made 470 KiB of the idle daemon's memory.
#[derive(Clone)]
pub(crate) struct Events {
    tx: broadcast::Sender<Arc<ContainerEventResponse>>,
}

impl Default for Events {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(BACKLOG).0,
        }
    }
}

impl Events {
    /// Sends `event` to every subscriber; none is no error.
    pub(crate) fn send(&self, event: ContainerEventResponse) {
        let _ = self.tx.send(Arc::new(event));
    }

    /// Whether anyone listens (so the statuses an event carries are read only then).
    pub(crate) fn has_subscribers(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    /// The events from now on, until the subscriber hangs up.
    pub(crate) fn subscribe(&self) -> EventStream {
        let rx = self.tx.subscribe();
        Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(ev) => return Some((Ok(Arc::unwrap_or_clone(ev)), rx)),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(
                            skipped = n,
                            "a container event subscriber fell behind; skipping events"
                        );
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_stream::StreamExt;

    fn ev(id: &str) -> ContainerEventResponse {
        ContainerEventResponse {
            container_id: id.into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_slow_subscriber_skips_what_it_missed_and_never_blocks_the_sender() {
        let events = Events::default();
        let mut slow = events.subscribe();
        assert!(events.has_subscribers());
        // Far more than the backlog: send never waits.
        for i in 0..BACKLOG + 10 {
            events.send(ev(&i.to_string()));
        }
        let first = slow.next().await.unwrap().unwrap();
        assert_eq!(first.container_id, "10", "the oldest ten were dropped");
        drop(slow);
        assert!(!events.has_subscribers());
        events.send(ev("nobody listens"));
    }
}
