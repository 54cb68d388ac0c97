//! HTTP building blocks every handler shares: reading a request ([`request`]) and the
//! gateway's own responses ([`Problem`], redirects, pages, and the security headers they all
//! carry). No routing and no decisions here.

mod forwarded;
mod own_headers;
mod problem;
mod request;
pub mod request_id;

pub use forwarded::{OriginalError, original_target, split_original_url};
pub use own_headers::{Relayed, SECURITY_HEADERS, secure};
pub use problem::{Problem, html_escape, no_store, page, redirect};
pub use request::{ClientAddr, client_ip, is_api_request, query_param, request_host};
