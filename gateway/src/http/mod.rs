//! HTTP building blocks every handler shares: reading a request ([`request`]) and the
//! gateway's own responses ([`Problem`], redirects, pages). No routing and no decisions here.

mod problem;
mod request;
pub mod request_id;

pub use problem::{Problem, html_escape, no_store, page, redirect};
pub use request::{ClientAddr, client_ip, is_api_request, query_param, request_host};
