//! Standard output that never interrupts a command. A revocation writes to the API server between
//! the lines it prints; if printing could fail the command, `kubectl portcullis revoke user alice
//! | head -1` would stop after the first session. So a failed write (the reader gone, a full
//! disk) is remembered, later output is dropped, the command does all its work, and `main`
//! reports the lost output at the end.

use std::fmt::Display;
use std::io::{self, Write};

use crate::sanitize;

/// Stdout (or any writer) that remembers its first failure instead of returning it.
pub struct Printer<W: Write> {
    inner: W,
    lost: Option<io::Error>,
}

impl<W: Write> Printer<W> {
    pub fn new(inner: W) -> Self {
        Self { inner, lost: None }
    }

    /// Prints one line of the plugin's own report, terminal controls replaced (values in it
    /// should be [`sanitize::value`]d where they are put in, so that they cannot add lines).
    pub fn line(&mut self, text: impl Display) {
        let text = text.to_string();
        let mut bytes = sanitize::message(&text).into_owned().into_bytes();
        bytes.push(b'\n');
        self.put(&bytes);
    }

    /// Writes `bytes` as they are (already formatted and sanitized).
    pub fn put(&mut self, bytes: &[u8]) {
        if self.lost.is_none()
            && let Err(e) = self.inner.write_all(bytes)
        {
            self.lost = Some(e);
        }
    }

    /// Flushes, and returns the first write that failed, if any.
    pub fn finish(mut self) -> Option<io::Error> {
        if self.lost.is_none()
            && let Err(e) = self.inner.flush()
        {
            self.lost = Some(e);
        }
        self.lost
    }
}

/// For formatters that need a writer (`-o json`, tables): never fails, as [`Printer::line`].
impl<W: Write> Write for Printer<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.put(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.lost.is_none()
            && let Err(e) = self.inner.flush()
        {
            self.lost = Some(e);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pipe whose reader left after `room` bytes.
    struct ClosedAfter {
        room: usize,
        written: Vec<u8>,
        attempts: usize,
    }

    impl Write for ClosedAfter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.attempts += 1;
            if self.written.len() + buf.len() > self.room {
                return Err(io::Error::from(io::ErrorKind::BrokenPipe));
            }
            self.written.extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_closed_pipe_is_remembered_and_never_returned() {
        let mut printer = Printer::new(ClosedAfter {
            room: 6,
            written: Vec::new(),
            attempts: 0,
        });
        printer.line("first");
        printer.line("second");
        printer.line("third");
        let _ = writeln!(printer, "fourth");
        assert_eq!(printer.inner.written, b"first\n");
        assert_eq!(
            printer.inner.attempts, 2,
            "nothing written after the failure"
        );
        let lost = printer.finish();
        assert_eq!(
            lost.map(|e| e.kind()),
            Some(io::ErrorKind::BrokenPipe),
            "the failure is reported at the end"
        );
    }

    #[test]
    fn lines_are_sanitized_but_keep_their_newlines() {
        let mut out = Vec::new();
        {
            let mut printer = Printer::new(&mut out);
            printer.line("a\u{1b}[31m\nb");
            printer.line(format_args!("{} revoked", 3));
            assert!(printer.finish().is_none());
        }
        assert_eq!(
            String::from_utf8_lossy(&out),
            "a\u{FFFD}[31m\nb\n3 revoked\n"
        );
    }
}
