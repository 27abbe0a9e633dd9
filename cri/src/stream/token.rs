//! Single-use tokens for pending streaming requests: random, expiring, bounded in number. A token
//! is consumed by the first request that presents it, whether or not its upgrade then succeeds,
//! as the kubelet's request cache does.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{AttachRequest, ExecRequest, PortForwardRequest, StreamError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Pending {
    Exec(ExecRequest),
    Attach(AttachRequest),
    PortForward(PortForwardRequest),
}

impl Pending {
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Pending::Exec(_) => "exec",
            Pending::Attach(_) => "attach",
            Pending::PortForward(_) => "portforward",
        }
    }
}

pub(crate) struct Tokens {
    ttl: Duration,
    max: usize,
    pending: Mutex<HashMap<String, (Instant, Pending)>>,
}

/// 128 bits: not guessable within a token's minute.
const TOKEN_BYTES: usize = 16;

impl Tokens {
    pub(crate) fn new(ttl: Duration, max: usize) -> Self {
        Self {
            ttl,
            max,
            pending: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn insert(&self, p: Pending) -> Result<String, StreamError> {
        let mut raw = [0u8; TOKEN_BYTES];
        getrandom::fill(&mut raw).map_err(|e| StreamError::Random(e.to_string()))?;
        let token: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        let now = Instant::now();
        let mut m = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        m.retain(|_, (expires, _)| *expires > now);
        if m.len() >= self.max {
            return Err(StreamError::TooManyPending(self.max));
        }
        m.insert(token.clone(), (now + self.ttl, p));
        Ok(token)
    }

    /// Consumes `token` if it is known, unexpired and was issued for `kind`.
    pub(crate) fn take(&self, token: &str, kind: &str) -> Option<Pending> {
        let mut m = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let (expires, p) = m.remove(token)?;
        (expires > Instant::now() && p.kind() == kind).then_some(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pf() -> Pending {
        Pending::PortForward(PortForwardRequest {
            pod_sandbox_id: "p".into(),
            ports: vec![],
        })
    }

    #[test]
    fn tokens_are_single_use_and_typed() {
        let t = Tokens::new(Duration::from_secs(60), 10);
        let a = t.insert(pf()).unwrap();
        assert_eq!(a.len(), 32);
        assert!(t.take(&a, "exec").is_none(), "wrong kind");
        assert!(
            t.take(&a, "portforward").is_none(),
            "consumed by the wrong kind"
        );
        let b = t.insert(pf()).unwrap();
        assert_ne!(a, b);
        assert_eq!(t.take(&b, "portforward"), Some(pf()));
        assert!(t.take(&b, "portforward").is_none(), "reused");
    }

    #[test]
    fn tokens_expire_and_are_bounded() {
        let t = Tokens::new(Duration::from_millis(200), 2);
        let a = t.insert(pf()).unwrap();
        t.insert(pf()).unwrap();
        assert!(matches!(
            t.insert(pf()),
            Err(StreamError::TooManyPending(2))
        ));
        std::thread::sleep(Duration::from_millis(300));
        assert!(t.take(&a, "portforward").is_none(), "expired");
        // Expired entries make room.
        t.insert(pf()).unwrap();
    }
}
