//! The operator stream as a gateway reads it: any bytes, cut into lines the way the gateway
//! cuts them, are decoded and merged without a panic; a line that decodes renders back to a
//! line that decodes to the same frame (so what the operator writes is what the gateway reads);
//! and the merge never moves the stream's position backwards within one operator instance.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_protocol::{
    FleetState,
    frame::{parse_line, render_line},
};

fuzz_target!(|data: &[u8]| {
    let mut fleet = FleetState::new(30);
    for line in data.split(|byte| *byte == b'\n') {
        let Ok(frame) = parse_line(line) else {
            continue;
        };
        let rendered = render_line(&frame);
        let again = parse_line(rendered.strip_suffix(b"\n").unwrap_or(&rendered))
            .expect("a rendered frame decodes");
        assert_eq!(again, frame, "a frame changed in a render and decode");
        let before = fleet.position().map(|(instance, version)| (instance.to_owned(), version));
        if fleet.apply(frame, 1_800_000_000).is_ok()
            && let (Some((was, old)), Some((now, new))) = (before, fleet.position())
            && was == now
        {
            assert!(new >= old, "the position moved back from {old} to {new}");
        }
    }
});
