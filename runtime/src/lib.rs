//! Process plumbing the gateway and the operator share, so both stop, serve, log and trace the
//! same way: one shutdown signal threaded to every server and task, HTTPS (h2 and HTTP/1.1 by
//! ALPN) or plain-HTTP serving with a graceful drain, structured logs and OpenTelemetry traces;
//! and the small rules both apply alike: Go-style durations in flags, an error's cause chain as
//! one log line, and what a watch's relist says vanished.

#![forbid(unsafe_code)]

pub mod client_tls;
pub mod duration;
pub mod error;
pub mod relist;
pub mod server;
pub mod shutdown;
pub mod telemetry;

pub use duration::parse_duration;
pub use error::error_chain;
pub use relist::Relist;
pub use telemetry::parse_share;
