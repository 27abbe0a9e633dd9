//! The pods' records under the root dir (what a reboot keeps), written off the request path.
//!
//! A record must survive a power loss, so it is written durably (temp, fsync, rename, fsync of
//! the dir); on this node's ext4 that costs about 12 ms, two thirds of a whole pod start. One
//! writer thread takes the writes and removals in the order they were asked for, so a pod run
//! and removed at once never leaves its record behind, and the RPC returns without waiting for
//! the disk. What the writer has not done when the daemon dies is lost only if the node loses
//! its state dir at the same moment (the pod is then forgotten, as before records existed).

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};

enum Op {
    Write(PathBuf, Vec<u8>),
    Remove(PathBuf),
    /// Answered once every earlier op is done.
    Flush(SyncSender<()>),
}

/// The queue to the writer thread, started on the first record.
#[derive(Debug, Default)]
pub(crate) struct RecordWriter {
    queue: Mutex<Option<Sender<Op>>>,
}

impl RecordWriter {
    pub(crate) fn write(&self, path: PathBuf, bytes: Vec<u8>) {
        self.send(Op::Write(path, bytes));
    }

    pub(crate) fn remove(&self, path: PathBuf) {
        self.send(Op::Remove(path));
    }

    /// Waits until every record asked for so far is on disk (or failed, and logged).
    pub(crate) fn flush(&self) {
        let (tx, rx) = sync_channel(1);
        self.send(Op::Flush(tx));
        let _ = rx.recv();
    }

    /// Hands `op` to the writer thread, or, when none can be started, does it here.
    fn send(&self, op: Op) {
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        if queue.is_none() {
            let (tx, rx) = channel();
            match std::thread::Builder::new()
                .name("pod-records".into())
                .spawn(move || run(rx))
            {
                Ok(_) => *queue = Some(tx),
                Err(e) => {
                    tracing::warn!(error = %e, "no thread for the pods' records; writing in line")
                }
            }
        }
        let op = match queue.as_ref() {
            Some(q) => match q.send(op) {
                Ok(()) => return,
                Err(std::sync::mpsc::SendError(op)) => {
                    *queue = None;
                    op
                }
            },
            None => op,
        };
        drop(queue);
        apply(op);
    }
}

fn run(rx: Receiver<Op>) {
    while let Ok(op) = rx.recv() {
        apply(op);
    }
}

fn apply(op: Op) {
    match op {
        Op::Write(path, bytes) => {
            if let Err(e) = carapace_cni::write_durable(&path, &bytes) {
                tracing::warn!(path = %path.display(), error = %e, "writing the pod's record under the root dir");
            }
            carapace_crashpoint::hit("records: pod record written");
        }
        Op::Remove(path) => {
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    tracing::warn!(path = %path.display(), error = %e, "removing the pod's record");
                }
                _ => {}
            }
            carapace_crashpoint::hit("records: pod record removed");
        }
        Op::Flush(done) => {
            let _ = done.send(());
        }
    }
}
