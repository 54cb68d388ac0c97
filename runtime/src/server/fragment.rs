//! Request targets with a fragment. A browser never sends `#…` (RFC 9110 §4.2.4: the fragment
//! stays with the client), but a hand-made request can, and the HTTP stack below every handler
//! (the `http` crate's URI parser, used by hyper) drops a raw `#` and everything after it without
//! a word. A handler would then judge `/public` for a request line `GET /public#/../admin
//! HTTP/1.1`, and an ingress or backend that reads the raw target differently (as a literal `#`
//! in a path, then resolving the dot segments) would serve another path than the one judged.
//!
//! So the bytes a client sends are watched as they are read, before hyper parses them: a line
//! that starts like an HTTP/1 request line (`METHOD /target`) and holds a `#` in its target
//! marks the connection, and every request on a marked connection is refused with 400 and the
//! connection closed. The watch costs two `memchr` scans per read and a few bytes of state: a
//! `#` is looked at only where one is, and only the prefix of the current line is carried over
//! from one read to the next. (A body line that happens to start `GET /x#` would mark its
//! connection too: that refuses, it never admits.) HTTP/2 carries `:path` compressed: the `h2`
//! crate refuses or drops a fragment there, which the gateway's own path checks cannot see; an
//! ingress in front speaks HTTP/1 to the gateway's forward-auth endpoints.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Longest request method looked for (`OPTIONS`, `CONNECT`, extension methods).
const MAX_METHOD: u8 = 20;

/// Where the current line stands against the shape `METHOD SP /target`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Prefix {
    /// Upper-case letters of a method so far.
    Method(u8),
    /// The method and one space: the target must start with `/`.
    Space,
    /// Inside an origin-form target (no space yet).
    Target,
    /// Not a request line.
    Other,
}

impl Prefix {
    const LINE_START: Self = Self::Method(0);

    fn step(self, byte: u8) -> Self {
        match (self, byte) {
            (Self::Method(n), b'A'..=b'Z') if n < MAX_METHOD => Self::Method(n + 1),
            (Self::Method(n), b' ') if n > 0 => Self::Space,
            (Self::Space, b'/') | (Self::Target, _) if !matches!(byte, b' ' | b'\r' | b'\n') => {
                Self::Target
            }
            _ => Self::Other,
        }
    }

    /// The state after `bytes` (none of them a line feed), stopping as soon as it is `Other`.
    fn run(mut self, bytes: &[u8]) -> Self {
        for &byte in bytes {
            if self == Self::Other {
                break;
            }
            self = self.step(byte);
        }
        self
    }
}

/// Whether a connection has sent a request target with a fragment; shared between the socket
/// watch and the service that answers its requests.
#[derive(Clone, Debug, Default)]
pub(super) struct Marked(Arc<AtomicBool>);

impl Marked {
    pub(super) fn is_set(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    fn set(&self) {
        self.0.store(true, Ordering::Release);
    }
}

/// The client's byte stream, watched for request targets with a fragment.
pub(super) struct FragmentWatch<S> {
    inner: S,
    /// The state of the line the last read ended in.
    line: Prefix,
    marked: Marked,
}

impl<S> FragmentWatch<S> {
    pub(super) fn new(inner: S, marked: Marked) -> Self {
        Self {
            inner,
            line: Prefix::LINE_START,
            marked,
        }
    }

    /// Looks at bytes just read, in order.
    fn scan(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        for hash in memchr::memchr_iter(b'#', bytes) {
            let before = &bytes[..hash];
            let state = match memchr::memrchr(b'\n', before) {
                Some(newline) => Prefix::LINE_START.run(&before[newline + 1..]),
                None => self.line.run(before),
            };
            if state == Prefix::Target {
                self.marked.set();
                break;
            }
        }
        self.line = match memchr::memrchr(b'\n', bytes) {
            Some(newline) => Prefix::LINE_START.run(&bytes[newline + 1..]),
            None => self.line.run(bytes),
        };
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FragmentWatch<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &polled {
            let this = &mut *self;
            this.scan(&buf.filled()[before..]);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FragmentWatch<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `reads` in order to a fresh watch; whether it marked the connection.
    fn marks(reads: &[&[u8]]) -> bool {
        let marked = Marked::default();
        let mut watch = FragmentWatch::new((), marked.clone());
        for read in reads {
            watch.scan(read);
        }
        marked.is_set()
    }

    #[test]
    fn a_fragment_in_a_request_target_marks_the_connection() {
        for head in [
            &b"GET /public#/../admin HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            b"GET /.portcullis/auth/envoy/admin#x HTTP/1.1\r\n\r\n",
            b"POST /a?b=c#d HTTP/1.1\r\n\r\n",
            b"GET /# HTTP/1.1\r\n\r\n",
            b"OPTIONS /x#y HTTP/1.0\r\n\r\n",
        ] {
            assert!(marks(&[head]), "{}", String::from_utf8_lossy(head));
        }
    }

    #[test]
    fn a_fragment_is_found_whatever_the_reads_split() {
        let head = b"GET /ok HTTP/1.1\r\nHost: a\r\n\r\nGET /public#/../admin HTTP/1.1\r\n\r\n";
        for split in 0..head.len() {
            let (a, b) = head.split_at(split);
            assert!(marks(&[a, b]), "split at {split}");
        }
        let bytes: Vec<&[u8]> = head.chunks(1).collect();
        assert!(marks(&bytes), "one byte per read");
    }

    #[test]
    fn a_hash_outside_a_request_target_does_not() {
        for head in [
            &b"GET /ok HTTP/1.1\r\nCookie: a=#b\r\nX-Color: #fff\r\n\r\n"[..],
            b"GET /ok HTTP/1.1\r\nReferer: https://a/#x\r\n\r\n",
            b"GET /ok?q=%23 HTTP/1.1\r\n\r\n",
            b"POST /ok HTTP/1.1\r\nContent-Length: 9\r\n\r\n{\"#\":\"#\"}",
            b"GET /ok HTTP/1.1 #\r\n\r\n",
            b"get /lower#case HTTP/1.1\r\n\r\n",
        ] {
            assert!(!marks(&[head]), "{}", String::from_utf8_lossy(head));
        }
        let head = b"GET /ok HTTP/1.1\r\nX-Color: #fff\r\n\r\n";
        for split in 0..head.len() {
            let (a, b) = head.split_at(split);
            assert!(!marks(&[a, b]), "split at {split}");
        }
    }
}
