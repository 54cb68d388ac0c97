//! The loop breaker: no sequence of redirects between an app host and the auth host ever
//! loops. However a loop could arise (an app host that cannot confirm a session the auth host
//! believes in; a clock or a cache that disagrees), the app host counts the hand-offs it
//! redeemed for one browser in a short window, and past a few it ends on a clear page with a
//! retry link instead of sending the browser round again (a browser would end on "too many
//! redirects").
//!
//! The count rides in a host-only cookie that lives [`WINDOW`] after the last hand-off. It is
//! not signed: it can only stop the browser that holds it, and a browser that rewrites it can
//! loop itself by other means anyway. Ordinary use never reaches the limit: a hand-off leads
//! to the app, and a second one for the same app within seconds happens only in a loop.

use crate::{
    cookies,
    http::{html_escape, no_store, page},
};
use axum::response::{Html, IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use std::time::Duration;

/// The count of recent hand-offs on this app host.
pub const COOKIE: &str = "__Host-portcullis-bounce";
/// How long after the last hand-off the count is kept.
const WINDOW: Duration = Duration::from_secs(30);
/// Hand-offs within the window that count as a loop.
pub const LIMIT: u32 = 4;
/// What the page suggests, in seconds.
const RETRY_AFTER_SECS: u64 = 5;

/// What counting a hand-off decided.
#[derive(Debug)]
pub enum Counted {
    /// Go on to the app, with the cookie that counts this hand-off.
    Next(Option<HeaderValue>),
    /// The browser is going round: end on [`loop_page`].
    Loop,
}

/// Counts the hand-off about to be redeemed.
pub fn count(headers: &HeaderMap) -> Counted {
    let jar = cookies::parse(headers);
    let seen = cookies::get(&jar, COOKIE)
        .and_then(|v| v.parse::<u32>().ok())
        .unwrap_or(0)
        .min(LIMIT);
    let now = seen + 1;
    if now >= LIMIT {
        return Counted::Loop;
    }
    Counted::Next(cookies::set(COOKIE, &now.to_string(), WINDOW))
}

/// The page a loop ends on: 503 with `Retry-After`, a retry link to where the user was going,
/// and the count cleared so the retry starts afresh.
pub fn loop_page(retry: &str) -> Response {
    let body = format!(
        "<p>Your sign-in could not be completed: this application could not confirm your \
         session right now.</p><p><a class=\"button\" href=\"{}\">Try again</a></p>\
         <p><small>sign_in_loop</small></p>",
        html_escape(retry)
    );
    let mut response = (
        StatusCode::SERVICE_UNAVAILABLE,
        Html(page("Sign-in could not be completed", &body)),
    )
        .into_response();
    let headers = response.headers_mut();
    headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
    if let Some(clear) = cookies::clear(COOKIE) {
        headers.append(header::SET_COOKIE, clear);
    }
    no_store(headers);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_cookie(value: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(v) = value {
            let cookie = format!("{COOKIE}={v}");
            headers.insert(
                header::COOKIE,
                HeaderValue::from_str(&cookie).expect("ascii"),
            );
        }
        headers
    }

    #[test]
    fn hand_offs_are_counted_and_the_limit_ends_on_a_page_never_another_redirect() {
        let mut value: Option<String> = None;
        for round in 1..LIMIT {
            let Counted::Next(Some(set)) = count(&with_cookie(value.as_deref())) else {
                panic!("round {round} cut");
            };
            let set = set.to_str().expect("ascii").to_owned();
            assert!(set.starts_with(&format!("{COOKIE}={round};")), "{set}");
            value = Some(round.to_string());
        }
        assert!(matches!(
            count(&with_cookie(value.as_deref())),
            Counted::Loop
        ));
        let page = loop_page("https://app.test/?a=\"x\"");
        assert_eq!(page.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(page.headers()[header::RETRY_AFTER], "5");
        assert!(page.headers().get(header::LOCATION).is_none());
        let cleared = page.headers()[header::SET_COOKIE].to_str().expect("ascii");
        assert!(cleared.starts_with(&format!("{COOKIE}=;")) && cleared.contains("Max-Age=0"));
    }

    #[test]
    fn a_forged_or_huge_count_still_ends_on_the_page_and_garbage_counts_as_none() {
        for forged in ["4", "99", "4294967295"] {
            assert!(
                matches!(count(&with_cookie(Some(forged))), Counted::Loop),
                "{forged}"
            );
        }
        for garbage in ["-1", "x", ""] {
            assert!(
                matches!(count(&with_cookie(Some(garbage))), Counted::Next(_)),
                "{garbage}"
            );
        }
    }
}
