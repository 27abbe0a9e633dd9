//! Noticing container exits without polling: one thread waits (epoll) on a pidfd per running
//! container's monitor, which exits right after recording its container's exit, and calls back
//! with the container's id. The thread starts with the first watch and sleeps in the kernel until
//! a monitor ends, so a node of idle containers costs nothing.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

use crate::container::Container;
use crate::error::{Context, Result};

type Callback = Box<dyn Fn(&str) + Send + Sync>;

/// Watches containers' exits and reports each once to a callback.
pub struct ExitWatcher {
    on_exit: Arc<Callback>,
    shared: Mutex<Option<Arc<Shared>>>,
}

struct Shared {
    epoll: Epoll,
    watched: Mutex<Watched>,
}

/// The containers being watched, by the token their pidfd was registered with.
#[derive(Default)]
struct Watched {
    last_token: u64,
    /// Token → (container id, its monitor's pidfd, kept open while watched).
    by_token: HashMap<u64, (String, OwnedFd)>,
}

impl ExitWatcher {
    /// `on_exit` runs on the watcher's own thread with the id of each container whose exit was
    /// recorded; it may block (read state files), which only delays later reports.
    pub fn new(on_exit: impl Fn(&str) + Send + Sync + 'static) -> Self {
        Self {
            on_exit: Arc::new(Box::new(on_exit)),
            shared: Mutex::new(None),
        }
    }

    fn shared(&self) -> Result<Arc<Shared>> {
        let mut s = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = &*s {
            return Ok(s.clone());
        }
        let shared = Arc::new(Shared {
            epoll: Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).ctx("epoll_create")?,
            watched: Mutex::default(),
        });
        let (t, cb) = (shared.clone(), self.on_exit.clone());
        std::thread::Builder::new()
            .name("carapace-exits".into())
            .spawn(move || run(&t, &cb))
            .map_err(|e| crate::Error::internal("spawn the exit watcher", e))?;
        *s = Some(shared.clone());
        Ok(shared)
    }

    /// Starts watching `c`; returns false when it is not running (nothing to watch: its exit,
    /// if any, is already recorded).
    pub fn watch(&self, c: &Container) -> Result<bool> {
        let Some(fd) = c.exit_watch()? else {
            return Ok(false);
        };
        let shared = self.shared()?;
        let mut w = shared.watched.lock().unwrap_or_else(|p| p.into_inner());
        w.last_token += 1;
        let token = w.last_token;
        shared
            .epoll
            .add(&fd, EpollEvent::new(EpollFlags::EPOLLIN, token))
            .ctx("epoll_ctl add")?;
        w.by_token.insert(token, (c.id().to_owned(), fd));
        Ok(true)
    }
}

fn run(shared: &Shared, on_exit: &Callback) {
    let mut events = vec![EpollEvent::empty(); 64];
    loop {
        let n = match shared.epoll.wait(&mut events, EpollTimeout::NONE) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                tracing::error!(error = %e, "the exit watcher stopped: container exits are noticed on the next status read only");
                return;
            }
        };
        for ev in &events[..n] {
            let gone = {
                let mut w = shared.watched.lock().unwrap_or_else(|p| p.into_inner());
                w.by_token.remove(&ev.data())
            };
            // Closing the pidfd takes it out of the epoll set.
            if let Some((id, fd)) = gone {
                drop(fd);
                on_exit(&id);
            }
        }
    }
}
