//! The delta log, rendered: every delta is serialized to its NDJSON line once, when it is
//! made, and every stream sends that same buffer. With N gateways connected a change used to
//! be cloned and serialized N times under the index lock; now each stream takes reference
//! counts of lines already rendered, so the fan-out's cost per gateway is a socket write.

use bytes::Bytes;
use portcullis_protocol::{Frame, frame::render_line};
use std::collections::VecDeque;

/// One frame as it goes on the wire: its version, its kind (for metrics) and its line.
#[derive(Clone, Debug)]
pub struct Line {
    pub version: u64,
    pub kind: &'static str,
    pub bytes: Bytes,
}

impl Line {
    /// Renders `frame` (serializing plain data cannot fail; see [`render_line`]).
    pub fn render(frame: &Frame) -> Self {
        Self {
            version: frame.version(),
            kind: frame.kind(),
            bytes: Bytes::from(render_line(frame)),
        }
    }
}

/// The newest deltas, oldest first, at most `capacity` of them.
#[derive(Debug)]
pub struct DeltaLog {
    lines: VecDeque<Line>,
    capacity: usize,
}

impl DeltaLog {
    pub fn new(capacity: usize) -> Self {
        Self {
            lines: VecDeque::new(),
            capacity,
        }
    }

    /// Appends a delta (its version is above every one logged), dropping the oldest beyond
    /// the capacity.
    pub fn push(&mut self, frame: &Frame) {
        self.lines.push_back(Line::render(frame));
        while self.lines.len() > self.capacity {
            self.lines.pop_front();
        }
    }

    /// The deltas after `version` up to `current` (the index's version), if the log still
    /// holds all of them; `None` means the caller must send a snapshot.
    pub fn since(&self, version: u64, current: u64) -> Option<Vec<Line>> {
        if version > current {
            return None;
        }
        if version == current {
            return Some(Vec::new());
        }
        let first = self.lines.front()?.version;
        if first > version + 1 {
            return None;
        }
        // Ordered by version: bisect rather than scan every retained delta, once per change
        // and per connected gateway, under the index lock (a burst of revocations with a long
        // log made that quadratic).
        let start = self.lines.partition_point(|l| l.version <= version);
        Some(self.lines.range(start..).cloned().collect())
    }
}
