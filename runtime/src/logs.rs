//! CRI-format container logs: `<RFC3339Nano> <stdout|stderr> <F|P> <line>\n`, a line longer than
//! the maximum split into `P` chunks ending with an `F` one, the file reopened on request
//! (ReopenContainerLog, after the kubelet rotates it). Used by the monitor only; it never reads
//! the container's pipes itself.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::error::{Error, Result};
use crate::fsutil::rfc3339_nano;

/// containerd's default `max_container_log_line_size`.
pub const MAX_LINE: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Writes one container's output to its log file. Each record is one `write(2)` on an `O_APPEND`
/// file, so a reader never sees half a record from us.
pub struct LogWriter {
    path: Option<PathBuf>,
    file: Option<File>,
    max_line: usize,
    pending: [Vec<u8>; 2],
    strip_cr: bool,
}

fn open(path: &Path) -> Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("create log dir", dir, e))?;
    }
    // Only a regular file: the path comes from the request (pod log directory + container log
    // path), and opening a FIFO would park the monitor until a reader comes, a device would be
    // written to. Checked before the open (opening some devices does something) and again on
    // the opened file; non-blocking, so a FIFO swapped in between fails with ENXIO, not a hang.
    let not_a_file = || {
        Error::FailedPrecondition(format!(
            "the log path {} is not a regular file",
            path.display()
        ))
    };
    if std::fs::metadata(path).is_ok_and(|m| !m.is_file()) {
        return Err(not_a_file());
    }
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            // Something on the node (not the request, not us) put a directory where the log
            // file goes, or a file where one of its directories goes.
            Some(libc::EISDIR | libc::ENOTDIR) => Error::FailedPrecondition(format!(
                "the log path {} is not usable as a file: {e}",
                path.display()
            )),
            Some(libc::ENXIO) => not_a_file(),
            _ => Error::io("open log", path, e),
        })?;
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        return Err(not_a_file());
    }
    Ok(file)
}

impl LogWriter {
    /// `None` discards output (a container without a log path).
    pub fn new(path: Option<PathBuf>, max_line: usize) -> Result<Self> {
        let file = path.as_deref().map(open).transpose()?;
        Ok(Self {
            path,
            file,
            max_line: max_line.max(1),
            pending: [Vec::new(), Vec::new()],
            strip_cr: false,
        })
    }

    /// Drops the `\r` before each line's `\n` (a terminal's output ends lines with `\r\n`).
    pub fn set_strip_cr(&mut self, on: bool) {
        self.strip_cr = on;
    }

    /// Closes and reopens the file at the same path (the old one was renamed away).
    pub fn reopen(&mut self) -> Result<()> {
        if let Some(p) = &self.path {
            self.file = Some(open(p)?);
        }
        Ok(())
    }

    fn record(&mut self, stream: Stream, tag: &str, line: &[u8]) {
        let Some(f) = self.file.as_mut() else { return };
        let mut rec = Vec::with_capacity(line.len() + 48);
        rec.extend_from_slice(rfc3339_nano(SystemTime::now()).as_bytes());
        rec.push(b' ');
        rec.extend_from_slice(stream.name().as_bytes());
        rec.push(b' ');
        rec.extend_from_slice(tag.as_bytes());
        rec.push(b' ');
        rec.extend_from_slice(line);
        rec.push(b'\n');
        // A full disk must not kill the container: drop the record, as containerd does.
        let _ = f.write_all(&rec);
    }

    /// Feeds bytes read from a stream; complete lines are written as `F`, overlong ones as `P`.
    pub fn write(&mut self, stream: Stream, mut data: &[u8]) {
        let i = stream as usize;
        while !data.is_empty() {
            let room = self.max_line - self.pending[i].len();
            // A newline right after a full-length chunk still ends a full line.
            match data.iter().take(room + 1).position(|b| *b == b'\n') {
                Some(n) => {
                    let mut line = std::mem::take(&mut self.pending[i]);
                    line.extend_from_slice(&data[..n]);
                    if self.strip_cr && line.last() == Some(&b'\r') {
                        line.pop();
                    }
                    self.record(stream, "F", &line);
                    data = &data[n + 1..];
                }
                None if data.len() > room => {
                    let mut line = std::mem::take(&mut self.pending[i]);
                    line.extend_from_slice(&data[..room]);
                    self.record(stream, "P", &line);
                    data = &data[room..];
                }
                None => {
                    self.pending[i].extend_from_slice(data);
                    data = &[];
                }
            }
        }
    }

    /// At end of stream a trailing partial line is written as a full one.
    pub fn finish(&mut self, stream: Stream) {
        let line = std::mem::take(&mut self.pending[stream as usize]);
        if !line.is_empty() {
            self.record(stream, "F", &line);
        }
        if let Some(f) = self.file.as_mut() {
            let _ = f.sync_data();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(p: &Path) -> Vec<(String, String, String)> {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(|l| {
                let mut it = l.splitn(4, ' ');
                let ts = it.next().unwrap();
                assert!(ts.ends_with('Z') && ts.contains('T'), "{ts}");
                (
                    it.next().unwrap().to_string(),
                    it.next().unwrap().to_string(),
                    it.next().unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn lines_are_tagged_and_split_at_the_maximum() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c/0.log");
        let mut w = LogWriter::new(Some(p.clone()), 4).unwrap();
        w.write(Stream::Stdout, b"hi\nabc");
        w.write(Stream::Stderr, b"err\n");
        w.write(Stream::Stdout, b"defgh\n\ntail");
        w.finish(Stream::Stdout);
        let got = lines(&p);
        let want = [
            ("stdout", "F", "hi"),
            ("stderr", "F", "err"),
            ("stdout", "P", "abcd"),
            ("stdout", "F", "efgh"),
            ("stdout", "F", ""),
            ("stdout", "F", "tail"),
        ];
        assert_eq!(got.len(), want.len(), "{got:?}");
        for (g, w) in got.iter().zip(want) {
            assert_eq!((g.0.as_str(), g.1.as_str(), g.2.as_str()), w);
        }
    }

    #[test]
    fn a_terminal_line_is_logged_without_its_carriage_return() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("0.log");
        let mut w = LogWriter::new(Some(p.clone()), MAX_LINE).unwrap();
        w.set_strip_cr(true);
        w.write(Stream::Stdout, b"one\r\ntwo\r");
        w.write(Stream::Stdout, b"\n");
        let got: Vec<String> = lines(&p).into_iter().map(|l| l.2).collect();
        assert_eq!(got, ["one", "two"]);
    }

    #[test]
    fn reopen_writes_to_a_new_file_after_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("0.log");
        let mut w = LogWriter::new(Some(p.clone()), MAX_LINE).unwrap();
        w.write(Stream::Stdout, b"one\n");
        std::fs::rename(&p, dir.path().join("0.log.1")).unwrap();
        w.reopen().unwrap();
        w.write(Stream::Stdout, b"two\n");
        assert_eq!(lines(&p)[0].2, "two");
        assert_eq!(lines(&dir.path().join("0.log.1"))[0].2, "one");
    }

    #[test]
    fn reopen_onto_a_directory_is_a_failed_precondition() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("0.log");
        let mut w = LogWriter::new(Some(p.clone()), MAX_LINE).unwrap();
        std::fs::rename(&p, dir.path().join("0.log.1")).unwrap();
        std::fs::create_dir(&p).unwrap();
        match w.reopen() {
            Err(Error::FailedPrecondition(m)) => assert!(m.contains("0.log"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    /// A FIFO at the log path parked the monitor (and StartContainer with it) until a reader came.
    #[test]
    fn a_fifo_or_a_device_at_the_log_path_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("0.log");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let started = std::time::Instant::now();
        for p in [fifo, PathBuf::from("/dev/null")] {
            match LogWriter::new(Some(p.clone()), MAX_LINE) {
                Err(Error::FailedPrecondition(m)) => assert!(m.contains("regular file"), "{m}"),
                other => panic!("{}: {:?}", p.display(), other.map(|_| ())),
            }
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }
}
