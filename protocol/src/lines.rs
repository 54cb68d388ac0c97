//! The stream's bytes, split into lines (a frame per line, [`crate::frame::parse_line`]). A
//! snapshot is one line of many megabytes arriving in chunks of a few kilobytes, so the split
//! must not cost more than the bytes themselves: each byte is searched for the newline once
//! (not once per chunk that arrives after it), a line is handed over where it lies (not copied
//! out first), and a buffer that grew for a snapshot is let go once the snapshot is through,
//! instead of being held for the connection's lifetime.

/// A buffer larger than this that holds at most half of it once its lines are taken is
/// released (or shrunk to the half, when it holds the start of the next line) rather than kept
/// for the next frames, which are deltas and heartbeats of a few hundred bytes.
const RETAINED: usize = 64 * 1024;

/// Bytes read so far that do not yet end a line.
#[derive(Default)]
pub struct Lines {
    buffer: Vec<u8>,
    /// How far `buffer` is known to hold no newline.
    scanned: usize,
}

impl Lines {
    /// Appends bytes read from the stream.
    pub fn extend(&mut self, chunk: &[u8]) {
        self.buffer.extend_from_slice(chunk);
    }

    /// Bytes waiting for the end of their line.
    pub fn pending(&self) -> usize {
        self.buffer.len()
    }

    /// Hands every complete line (without its `\n`) to `each`, in order, and drops it, up to
    /// the first that `each` fails on (that one is dropped too: the caller starts over).
    pub fn take_complete<E>(
        &mut self,
        mut each: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut start = 0;
        let mut result = Ok(());
        while let Some(at) = memchr::memchr(b'\n', &self.buffer[self.scanned..]) {
            let end = self.scanned + at;
            self.scanned = end + 1;
            let line = &self.buffer[start..end];
            start = end + 1;
            if let Err(error) = each(line) {
                result = Err(error);
                break;
            }
        }
        if result.is_ok() {
            self.scanned = self.buffer.len();
        }
        self.buffer.drain(..start);
        self.scanned -= start;
        // What is left is the start of the next line. After a snapshot that is usually nothing,
        // or the first bytes of the frame behind it: either way not a reason to keep megabytes.
        if self.buffer.capacity() > RETAINED && self.buffer.len() <= RETAINED / 2 {
            if self.buffer.is_empty() {
                self.buffer = Vec::new();
            } else {
                self.buffer.shrink_to(RETAINED / 2);
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take(lines: &mut Lines) -> Vec<String> {
        let mut seen = Vec::new();
        lines
            .take_complete(|line| {
                seen.push(String::from_utf8_lossy(line).into_owned());
                Ok::<_, ()>(())
            })
            .expect("no error");
        seen
    }

    #[test]
    fn lines_split_across_chunks_come_out_whole_and_in_order() {
        let mut lines = Lines::default();
        lines.extend(b"{\"a\":1}\n{\"b\"");
        assert_eq!(take(&mut lines), ["{\"a\":1}"]);
        assert_eq!(lines.pending(), 4);
        lines.extend(b":2");
        assert!(take(&mut lines).is_empty());
        lines.extend(b"}\n\n{\"c\":3}\n");
        assert_eq!(take(&mut lines), ["{\"b\":2}", "", "{\"c\":3}"]);
        assert_eq!(lines.pending(), 0);
    }

    #[test]
    fn a_failing_line_stops_the_take_and_is_dropped() {
        let mut lines = Lines::default();
        lines.extend(b"one\nbad\nthree\n");
        let mut seen = Vec::new();
        let result = lines.take_complete(|line| {
            if line == b"bad" {
                return Err("bad line");
            }
            seen.push(line.to_vec());
            Ok(())
        });
        assert_eq!(result, Err("bad line"));
        assert_eq!(seen, [b"one".to_vec()]);
        assert_eq!(take(&mut lines), ["three"]);
    }

    #[test]
    fn a_snapshot_sized_buffer_is_let_go_once_taken() {
        let mut lines = Lines::default();
        let big = vec![b'x'; 4 * RETAINED];
        for chunk in big.chunks(1000) {
            lines.extend(chunk);
            assert!(take(&mut lines).is_empty());
        }
        lines.extend(b"\n");
        assert_eq!(take(&mut lines).len(), 1);
        assert_eq!(lines.buffer.capacity(), 0);
        // A short tail left waiting keeps its bytes.
        lines.extend(b"{}\n{");
        assert_eq!(take(&mut lines), ["{}"]);
        assert_eq!(lines.pending(), 1);
    }

    #[test]
    fn a_snapshot_followed_by_the_start_of_the_next_frame_is_let_go_too() {
        let mut lines = Lines::default();
        let mut read = vec![b'x'; 4 * RETAINED];
        read.extend_from_slice(b"\n{\"next\"");
        lines.extend(&read);
        assert_eq!(take(&mut lines).len(), 1);
        assert_eq!(lines.pending(), 7);
        assert!(
            lines.buffer.capacity() <= RETAINED / 2,
            "{}",
            lines.buffer.capacity()
        );
        lines.extend(b":1}\n");
        assert_eq!(take(&mut lines), ["{\"next\":1}"]);
    }
}
