//! The sample app's HTML pages: the identity it received, and the background-refresh check.

use super::{App, AssertionStatus, POLL_SECONDS, Whoami};

/// The poll page's script (`poll.js`), served inline after the two values it reads.
const POLL_SCRIPT: &str = include_str!("poll.js");

pub(super) fn identity_page(app: &App, who: &Whoami, path: &str) -> String {
    let show = |v: &Option<String>| v.as_deref().map_or_else(|| "(none)".into(), escape);
    let verdict = verdict(&who.assertion);
    let claims = claims_section(&who.assertion);
    let poll = if app.poll_page {
        format!(
            r#"<p><a href="{0}/poll">Background-refresh check</a> (calls {0}/api/whoami every {POLL_SECONDS}s)</p>"#,
            escape(&who.prefix)
        )
    } else {
        String::new()
    };
    let title = format!("{} {}", app.name, who.prefix);
    format!(
        r#"<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>{STYLE}</head><body>
<h1>{title}</h1>
<p>You reached <code>{path}</code> through the Portcullis gateway.</p>
<table>
<tr><th>X-Auth-Request-User</th><td id="user">{user}</td></tr>
<tr><th>X-Auth-Request-Email</th><td id="email">{email}</td></tr>
<tr><th>X-Auth-Request-Groups</th><td id="groups">{groups}</td></tr>
</table>
{verdict}
{claims}
{poll}
<p><a href="{prefix}/api/whoami">{prefix}/api/whoami</a> (JSON)</p>
</body></html>
"#,
        title = escape(&title),
        path = escape(path),
        user = show(&who.user),
        email = show(&who.email),
        groups = escape(&who.groups.join(", ")),
        prefix = escape(&who.prefix),
    )
}

pub(super) fn poll_page(app: &App, prefix: &str) -> String {
    // The script builds the page with textContent only: nothing from the API becomes markup.
    format!(
        r##"<!doctype html><html><head><meta charset="utf-8"><title>{name}: background refresh</title>{STYLE}</head><body>
<h1>{name}: background refresh</h1>
<p>This page calls <code>{prefix}/api/whoami</code> with <code>fetch</code> every {POLL_SECONDS} seconds, like a
single-page app. While the session lives, every call succeeds, also after the app token's lifetime.</p>
<table>
<tr><th>status</th><td id="status">starting</td></tr>
<tr><th>email</th><td id="email"></td></tr>
<tr><th>successful calls</th><td id="count">0</td></tr>
<tr><th>assertion issued at</th><td id="issued"></td></tr>
<tr><th>last answer</th><td id="last"></td></tr>
</table>
<p id="ended" hidden>Your session ended. <a id="login" href="#">Sign in again</a></p>
<script>
const api = {api};
const pollSeconds = {POLL_SECONDS};
</script>
<script>{script}</script>
</body></html>
"##,
        name = escape(&app.name),
        prefix = escape(prefix),
        script = POLL_SCRIPT,
        // A JSON string is a valid JavaScript string literal; `<` is escaped so it cannot end
        // the script element.
        api = serde_json::to_string(&format!("{prefix}/api/whoami"))
            .unwrap_or_else(|_| "\"/api/whoami\"".into())
            .replace('<', "\\u003c"),
    )
}

const STYLE: &str = "<style>body{font-family:system-ui,sans-serif;max-width:52rem;margin:2rem auto;padding:0 1rem}\
th{text-align:left;padding-right:1rem}td,th{vertical-align:top}.ok{color:#064}.bad{color:#a00}\
pre{background:#f4f4f4;padding:.5rem}</style>";

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// Whether the assertion verified, as a paragraph.
fn verdict(assertion: &AssertionStatus) -> String {
    match assertion {
        a if a.verified => {
            let same = if a.matches_headers == Some(true) {
                "it names the same user as the headers"
            } else {
                "but it names a different user than the headers"
            };
            format!(
                r#"<p class="ok"><b>assertion verified</b> against the gateway's JWKS; {same}.</p>"#
            )
        }
        a => format!(
            r#"<p class="bad"><b>assertion rejected</b>: {}</p>"#,
            escape(a.error.as_deref().unwrap_or("unknown"))
        ),
    }
}

/// The verified claims, if any, as a section.
fn claims_section(assertion: &AssertionStatus) -> String {
    assertion
        .claims
        .as_ref()
        .and_then(|c| serde_json::to_string_pretty(c).ok())
        .map(|c| {
            format!(
                "<h2>Verified assertion claims</h2><pre>{}</pre>",
                escape(&c)
            )
        })
        .unwrap_or_default()
}
