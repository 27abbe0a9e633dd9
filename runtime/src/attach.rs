//! The attach protocol on a monitor's control socket. A client sends
//! `attach <stdin> <stdout> <stderr>\n` (each `0` or `1`), the monitor answers `ok <tty>\n` (or
//! `error <message>\n`), then both sides exchange frames `[kind: u8][length: u32 BE][payload]`:
//! the monitor sends the container's output, the client its input, terminal sizes and the end of
//! its input. The monitor ends the connection once the container's output has ended.

use crate::error::{Error, Result};

/// Client → monitor: bytes for the container's stdin.
pub const STDIN: u8 = 0;
/// Monitor → client: the container's stdout (all output with a terminal).
pub const STDOUT: u8 = 1;
/// Monitor → client: the container's stderr.
pub const STDERR: u8 = 2;
/// Client → monitor: a terminal size, `[width: u16 BE][height: u16 BE]`.
pub const RESIZE: u8 = 4;
/// Client → monitor: this client's input has ended (closes the container's stdin with
/// `stdin_once`).
pub const STDIN_CLOSE: u8 = 5;

/// The largest payload either side sends or accepts in one frame.
pub const MAX_PAYLOAD: usize = 32 * 1024;
/// Bytes of a frame header.
pub const HEADER: usize = 5;

/// Which of the container's streams a client wants.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Streams {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

impl Streams {
    pub(crate) fn request_line(&self) -> String {
        let b = |v: bool| if v { '1' } else { '0' };
        format!(
            "attach {} {} {}",
            b(self.stdin),
            b(self.stdout),
            b(self.stderr)
        )
    }

    pub(crate) fn parse(words: &[&str]) -> Option<Self> {
        let flag = |w: &&str| match *w {
            "0" => Some(false),
            "1" => Some(true),
            _ => None,
        };
        match words {
            [i, o, e] => Some(Self {
                stdin: flag(i)?,
                stdout: flag(o)?,
                stderr: flag(e)?,
            }),
            _ => None,
        }
    }
}

/// One frame, header and payload; `data` longer than [`MAX_PAYLOAD`] is the caller's bug and is
/// cut.
pub fn frame(kind: u8, data: &[u8]) -> Vec<u8> {
    let data = &data[..data.len().min(MAX_PAYLOAD)];
    let mut v = Vec::with_capacity(HEADER + data.len());
    v.push(kind);
    v.extend_from_slice(&(data.len() as u32).to_be_bytes());
    v.extend_from_slice(data);
    v
}

/// A frame header: its kind and payload length; a length over [`MAX_PAYLOAD`] is refused.
pub fn parse_header(h: &[u8; HEADER]) -> Result<(u8, usize)> {
    let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize;
    if len > MAX_PAYLOAD {
        return Err(Error::InvalidArgument(format!(
            "attach frame of {len} bytes is over the {MAX_PAYLOAD}-byte limit"
        )));
    }
    Ok((h[0], len))
}

pub fn resize_payload(width: u16, height: u16) -> [u8; 4] {
    let (w, h) = (width.to_be_bytes(), height.to_be_bytes());
    [w[0], w[1], h[0], h[1]]
}

pub fn parse_resize(p: &[u8]) -> Option<(u16, u16)> {
    match p {
        [a, b, c, d] => Some((u16::from_be_bytes([*a, *b]), u16::from_be_bytes([*c, *d]))),
        _ => None,
    }
}

/// Splits a byte stream into frames, holding at most one partial frame.
#[derive(Debug, Default)]
pub(crate) struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    pub(crate) fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete frame, `Ok(None)` when more bytes are needed.
    pub(crate) fn next_frame(&mut self) -> Result<Option<(u8, Vec<u8>)>> {
        let Some(h) = self.buf.first_chunk::<HEADER>() else {
            return Ok(None);
        };
        let (kind, len) = parse_header(h)?;
        if self.buf.len() < HEADER + len {
            return Ok(None);
        }
        let payload = self.buf[HEADER..HEADER + len].to_vec();
        self.buf.drain(..HEADER + len);
        Ok(Some((kind, payload)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_anywhere_decode_whole() {
        let mut bytes = frame(STDIN, b"hello");
        bytes.extend(frame(RESIZE, &resize_payload(120, 40)));
        bytes.extend(frame(STDIN_CLOSE, b""));
        let mut d = Decoder::default();
        let mut got = Vec::new();
        for chunk in bytes.chunks(3) {
            d.push(chunk);
            while let Some(f) = d.next_frame().unwrap() {
                got.push(f);
            }
        }
        assert_eq!(
            got,
            vec![
                (STDIN, b"hello".to_vec()),
                (RESIZE, vec![0, 120, 0, 40]),
                (STDIN_CLOSE, vec![])
            ]
        );
        assert_eq!(parse_resize(&got[1].1), Some((120, 40)));
    }

    #[test]
    fn an_oversized_frame_is_refused() {
        let mut d = Decoder::default();
        d.push(&[STDIN, 0xff, 0xff, 0xff, 0xff]);
        assert!(d.next_frame().is_err());
    }

    #[test]
    fn the_request_line_round_trips() {
        let s = Streams {
            stdin: true,
            stdout: true,
            stderr: false,
        };
        let line = s.request_line();
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(words[0], "attach");
        assert_eq!(Streams::parse(&words[1..]), Some(s));
        assert_eq!(Streams::parse(&["1", "x", "0"]), None);
    }
}
