//! What the plugin prints: kubectl-style tables with relative times, `-o name` lines that pipe
//! into `kubectl`, and `v1` Lists in JSON or YAML.

use std::io::Write;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use portcullis_crds::AccessSession;
use serde::Serialize;

use crate::cli::Output;
use crate::error::Error;
use crate::printer::Printer;
use crate::sanitize;
use crate::sessions::expired;

/// `kubectl get -o name` prefix of a session.
pub const SESSION_RESOURCE: &str = "accesssession.access.portcullis.dev";

/// Columns separated by three spaces, each as wide as its widest cell (as kubectl prints). Cells
/// are [`sanitize::value`]d: emails, subjects and reasons come from identity providers and other
/// admins, and must not reach the terminal as control sequences or extra lines.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            row.iter()
                .map(|cell| sanitize::value(cell).into_owned())
                .collect()
        })
        .collect();
    let rows = rows.as_slice();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line += cell;
            } else {
                let pad = widths.get(i).copied().unwrap_or(0);
                line += &format!("{cell:<pad$}   ");
            }
        }
        out += line.trim_end();
        out.push('\n');
    }
    out
}

/// A duration the way kubectl's AGE column shows it: `45s`, `5m12s`, `47m`, `3h5m`, `20h`,
/// `3d4h`, `120d`, `2y30d`.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    let (m, h, days) = (s / 60, s / 3600, s / 86_400);
    let with = |big: u64, big_unit: &str, small: u64, small_unit: &str| {
        if small == 0 {
            format!("{big}{big_unit}")
        } else {
            format!("{big}{big_unit}{small}{small_unit}")
        }
    };
    match () {
        () if s < 120 => format!("{s}s"),
        () if m < 10 => with(m, "m", s % 60, "s"),
        () if m < 180 => format!("{m}m"),
        () if h < 8 => with(h, "h", m % 60, "m"),
        () if h < 48 => format!("{h}h"),
        () if h < 24 * 8 => with(days, "d", h % 24, "h"),
        () if days < 365 * 2 => format!("{days}d"),
        () if days < 365 * 8 => with(days / 365, "y", days % 365, "d"),
        () => format!("{}y", days / 365),
    }
}

/// How long ago `at` was (`3h`), or `in 3s` for a time still ahead (clock skew).
pub fn ago(at: Timestamp, now: Timestamp) -> String {
    match signed_seconds(now, at) {
        s if s >= 0 => human(Duration::from_secs(s.unsigned_abs())),
        s => format!("in {}", human(Duration::from_secs(s.unsigned_abs()))),
    }
}

/// `in 8h` for a time ahead, `5m ago` for one passed.
pub fn until(at: Timestamp, now: Timestamp) -> String {
    match signed_seconds(at, now) {
        s if s > 0 => format!("in {}", human(Duration::from_secs(s.unsigned_abs()))),
        s => format!("{} ago", human(Duration::from_secs(s.unsigned_abs()))),
    }
}

fn signed_seconds(later: Timestamp, earlier: Timestamp) -> i64 {
    later.as_second().saturating_sub(earlier.as_second())
}

/// The ENFORCED cell: `2/3` gateways from status, `-` while the session is not revoked or the
/// operator has not written status.
fn enforced_cell(session: &AccessSession) -> String {
    if !session.spec.revoked {
        return "-".to_owned();
    }
    session
        .status
        .as_ref()
        .and_then(|s| s.enforcement.as_ref())
        .map_or_else(|| "?".to_owned(), |e| e.summary.clone())
}

/// The rows of the sessions table.
pub fn session_rows(sessions: &[AccessSession], now: Timestamp, wide: bool) -> Vec<Vec<String>> {
    sessions
        .iter()
        .map(|s| {
            let user = s
                .spec
                .email
                .clone()
                .unwrap_or_else(|| s.spec.subject.clone());
            let expires = if expired(s, now) {
                format!("expired {}", until(s.spec.expires_at.0, now))
            } else {
                until(s.spec.expires_at.0, now)
            };
            let mut row = vec![
                s.metadata.name.clone().unwrap_or_default(),
                user,
                s.spec.identity_provider.clone(),
                ago(s.spec.issued_at.0, now),
                expires,
                s.spec.revoked.to_string(),
                enforced_cell(s),
            ];
            if wide {
                row.push(s.spec.subject.clone());
                row.push(s.spec.revocation_reason.clone().unwrap_or_default());
            }
            row
        })
        .collect()
}

/// The headers of the sessions table.
pub fn session_headers(wide: bool) -> Vec<&'static str> {
    let mut headers = vec![
        "NAME", "USER", "IDP", "ISSUED", "EXPIRES", "REVOKED", "ENFORCED",
    ];
    if wide {
        headers.extend(["SUBJECT", "REASON"]);
    }
    headers
}

/// A `v1` List, as `kubectl get -o json` prints several objects.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct List<'a, T> {
    api_version: &'static str,
    kind: &'static str,
    items: &'a [T],
}

/// Prints sessions in the chosen format. Tables and names are sanitized; JSON and YAML are
/// exact, their serializers escape control characters.
pub fn print_sessions(
    out: &mut Printer<impl Write>,
    sessions: &[AccessSession],
    format: Output,
    now: Timestamp,
) -> Result<(), Error> {
    let list = List {
        api_version: "v1",
        kind: "List",
        items: sessions,
    };
    match format {
        Output::Table | Output::Wide => {
            let wide = format == Output::Wide;
            out.put(table(&session_headers(wide), &session_rows(sessions, now, wide)).as_bytes());
        }
        Output::Name => {
            for s in sessions {
                out.line(format_args!(
                    "{SESSION_RESOURCE}/{}",
                    sanitize::value(s.metadata.name.as_deref().unwrap_or_default())
                ));
            }
        }
        Output::Json => {
            serde_json::to_writer_pretty(&mut *out, &list)?;
            out.put(b"\n");
        }
        Output::Yaml => out.put(serde_saphyr::to_string(&list)?.as_bytes()),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sessions::tests::session;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    #[test]
    fn durations_read_like_kubectls_age() {
        let cases = [
            (45, "45s"),
            (119, "119s"),
            (312, "5m12s"),
            (300, "5m"),
            (47 * 60, "47m"),
            (3 * 3600 + 5 * 60, "3h5m"),
            (20 * 3600, "20h"),
            (3 * 86_400 + 4 * 3600, "3d4h"),
            (120 * 86_400, "120d"),
            ((2 * 365 + 30) * 86_400, "2y30d"),
            (10 * 365 * 86_400, "10y"),
        ];
        for (secs, text) in cases {
            assert_eq!(human(Duration::from_secs(secs)), text, "{secs}s");
        }
        assert_eq!(until(at(1_060), at(1_000)), "in 60s");
        assert_eq!(until(at(1_000), at(1_060)), "60s ago");
        assert_eq!(ago(at(1_000), at(1_060)), "60s");
        assert_eq!(ago(at(1_003), at(1_000)), "in 3s");
    }

    #[test]
    fn table_columns_line_up() {
        let text = table(
            &["NAME", "USER"],
            &[
                vec!["a".into(), "alice@example.com".into()],
                vec!["longer-name".into(), "".into()],
            ],
        );
        assert_eq!(
            text,
            "NAME          USER\na             alice@example.com\nlonger-name\n"
        );
    }

    #[test]
    fn session_rows_show_user_state_and_enforcement() {
        let mut revoked = session("s1", "dex", "sub", "alice@example.com");
        revoked.spec.revoked = true;
        revoked.spec.revocation_reason = Some("left".into());
        let mut no_email = session("s2", "dex", "sub-2", "x");
        no_email.spec.email = None;
        let rows = session_rows(&[revoked, no_email], at(1_500), true);
        assert_eq!(
            rows[0],
            [
                "s1",
                "alice@example.com",
                "dex",
                "8m20s",
                "in 8m20s",
                "true",
                "?",
                "sub",
                "left"
            ]
        );
        assert_eq!(
            rows[1][1], "sub-2",
            "the subject stands in for a missing email"
        );
        assert_eq!(rows[1][6], "-");
        let expired = session_rows(&[session("s3", "dex", "s", "e")], at(2_100), false);
        assert_eq!(expired[0][4], "expired 100s ago");
        assert_eq!(expired[0].len(), session_headers(false).len());
    }

    /// Runs [`print_sessions`] into a buffer.
    fn printed(sessions: &[AccessSession], format: Output) -> Result<Vec<u8>, Error> {
        let mut buffer = Vec::new();
        let mut printer = Printer::new(&mut buffer);
        print_sessions(&mut printer, sessions, format, at(0))?;
        assert!(printer.finish().is_none());
        Ok(buffer)
    }

    #[test]
    fn json_and_yaml_are_v1_lists_of_the_objects() -> Result<(), Error> {
        let sessions = [session("s1", "dex", "sub", "alice@example.com")];
        let value: serde_json::Value = serde_json::from_slice(&printed(&sessions, Output::Json)?)?;
        assert_eq!(value["kind"], "List");
        assert_eq!(value["items"][0]["kind"], "AccessSession");
        assert_eq!(value["items"][0]["metadata"]["name"], "s1");
        let yaml = printed(&sessions, Output::Yaml)?;
        let text = String::from_utf8_lossy(&yaml);
        assert!(text.starts_with("apiVersion: v1\nkind: List\n"), "{text}");
        assert_eq!(
            printed(&sessions, Output::Name)?,
            b"accesssession.access.portcullis.dev/s1\n"
        );
        Ok(())
    }

    /// What an identity provider or another admin puts in a session cannot drive the terminal
    /// or add a line to the table; JSON and YAML keep it exactly, escaped.
    #[test]
    fn provider_text_is_sanitized_in_tables_and_escaped_in_json_and_yaml() -> Result<(), Error> {
        let evil_email = "eve\u{1b}]0;owned\u{7}@example.com";
        let mut s = session("s1", "dex", "sub\u{1b}[2J\nroot", evil_email);
        s.spec.revoked = true;
        s.spec.revocation_reason = Some("ok\u{202e}\u{9b}31mred".into());
        let sessions = [s];
        for format in [Output::Table, Output::Wide] {
            let text = String::from_utf8(printed(&sessions, format)?).unwrap_or_default();
            assert!(
                !text.chars().any(|c| c != '\n' && sanitize::is_unsafe(c)),
                "{text:?}"
            );
            assert_eq!(text.lines().count(), 2, "a header and one row: {text:?}");
            assert!(
                text.contains("eve\u{FFFD}]0;owned\u{FFFD}@example.com"),
                "{text:?}"
            );
        }
        let wide = String::from_utf8(printed(&sessions, Output::Wide)?).unwrap_or_default();
        assert!(wide.contains("sub\u{FFFD}[2J\u{FFFD}root"), "{wide:?}");
        assert!(wide.contains("ok\u{FFFD}\u{FFFD}31mred"), "{wide:?}");

        for format in [Output::Json, Output::Yaml] {
            let bytes = printed(&sessions, format)?;
            assert!(
                !bytes.iter().any(|b| *b == 0x1b || *b == 0x07),
                "{format:?} printed a raw control character: {}",
                String::from_utf8_lossy(&bytes)
            );
            let value: serde_json::Value = if format == Output::Json {
                serde_json::from_slice(&bytes)?
            } else {
                serde_saphyr::from_slice(&bytes).map_err(|e| Error::Usage(e.to_string()))?
            };
            assert_eq!(value["items"][0]["spec"]["email"], evil_email, "{format:?}");
        }
        Ok(())
    }
}
