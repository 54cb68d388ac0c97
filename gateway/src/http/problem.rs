//! Every response the gateway makes itself (not an upstream's), built in one place: precise
//! status codes, small bodies, no internals, no tokens, and caching forbidden.

use axum::{
    body::Body,
    response::{IntoResponse, Response},
};
use http::{HeaderValue, StatusCode, header};

/// An error response of the gateway's own. `code` is a stable machine-readable reason.
#[derive(Debug)]
pub struct Problem {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Where to log in, for 401 answers.
    pub login_url: Option<String>,
    /// Answer with JSON (API clients) rather than HTML (browsers).
    pub json: bool,
    /// Seconds after which trying again may work (`Retry-After`), for a passing outage.
    pub retry_after: Option<u64>,
}

impl Problem {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            login_url: None,
            json: false,
            retry_after: None,
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn forbidden(code: &'static str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            code,
            "You do not have access to this page.",
        )
    }

    /// A failure of the gateway's own (signing, sealing) that the client can do nothing about:
    /// 500 with a stable `code` and no details.
    pub fn internal(code: &'static str) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, code, "Internal error.")
    }

    /// The gateway has not applied its access state yet: nobody is admitted (503).
    pub fn not_ready() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "The gateway is starting; try again in a moment.",
        )
    }

    /// Says when trying again may work (`Retry-After`).
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    pub fn json(mut self, json: bool) -> Self {
        self.json = json;
        self
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let (content_type, body) = if self.json {
            let mut body = serde_json::json!({ "error": self.code, "message": self.message });
            if let Some(login) = &self.login_url {
                body["login_url"] = serde_json::Value::String(login.clone());
            }
            ("application/json", body.to_string())
        } else {
            let login = self
                .login_url
                .as_deref()
                .map(|url| format!(r#"<p><a href="{}">Log in</a></p>"#, html_escape(url)))
                .unwrap_or_default();
            (
                "text/html; charset=utf-8",
                page(
                    &format!(
                        "{} {}",
                        self.status.as_u16(),
                        self.status.canonical_reason().unwrap_or("")
                    ),
                    &format!(
                        "<p>{}</p>{login}<p><small>{}</small></p>",
                        html_escape(&self.message),
                        self.code
                    ),
                ),
            )
        };
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        no_store(headers);
        response
    }
}

/// A minimal HTML page.
pub fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title>\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <style>body{{font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem}}\
         a.button{{display:block;padding:.75rem 1rem;margin:.5rem 0;border:1px solid #888;border-radius:.4rem;text-decoration:none}}</style>\
         </head><body><h1>{t}</h1>{body}</body></html>",
        t = html_escape(title)
    )
}

/// A 302 to `location`, with the given `Set-Cookie` values.
pub fn redirect(location: &str, cookies: Vec<HeaderValue>) -> Response {
    let Ok(location) = HeaderValue::from_str(location) else {
        return Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "bad_redirect",
            "Cannot redirect.",
        )
        .into_response();
    };
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::FOUND;
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, location);
    for cookie in cookies {
        headers.append(header::SET_COOKIE, cookie);
    }
    no_store(headers);
    response
}

/// Forbid caching of a response that depends on who asked.
pub fn no_store(headers: &mut http::HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// Escapes text for HTML.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
