//! Finding sessions: the API server filters by subject and identity provider (the CRD's
//! selectable fields), the plugin by email and validity.

use std::collections::BTreeMap;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Api;
use kube::api::ListParams;
use portcullis_crds::AccessSession;
use portcullis_crds::session::escape_field_value;

use crate::cli::SessionFilter;
use crate::error::{Error, Target};
use crate::retry;
use crate::sanitize;

/// Page size of list requests: a namespace with 100k sessions is listed in pages, not in one
/// response the API server has to build in memory.
const PAGE: u32 = 500;

/// The sessions API in one namespace, with the request descriptions errors need.
pub struct Sessions {
    pub api: Api<AccessSession>,
    pub namespace: String,
    /// The user revocations are written as (`spec.revokedBy`), when the API server said who
    /// this client is.
    pub revoker: Option<String>,
}

impl Sessions {
    pub fn new(client: kube::Client, namespace: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
            revoker: None,
        }
    }

    /// Revocations name `user` in `spec.revokedBy`.
    pub fn revoked_by(mut self, user: Option<String>) -> Self {
        self.revoker = user;
        self
    }

    /// What a request on `name` (or on the collection) is, for error messages.
    pub fn target<'a>(&'a self, verb: &'static str, name: Option<&'a str>) -> Target<'a> {
        Target {
            verb,
            resource: "accesssessions",
            kind: "AccessSession",
            namespace: Some(&self.namespace),
            name,
        }
    }

    /// Every session matching `filter`'s subject, identity provider and email, in pages (each
    /// page asked for again after a transient failure).
    pub async fn list(&self, filter: &SessionFilter) -> Result<Vec<AccessSession>, Error> {
        let mut params = ListParams::default().limit(PAGE);
        if let Some(selector) = field_selector(filter) {
            params = params.fields(&selector);
        }
        let mut out = Vec::new();
        loop {
            let page = retry::transient(|| async {
                self.api
                    .list(&params)
                    .await
                    .map_err(|e| self.target("list", None).error(e))
            })
            .await?;
            out.extend(page.items.into_iter().filter(|s| matches_email(s, filter)));
            match page.metadata.continue_ {
                Some(token) if !token.is_empty() => params = params.continue_token(&token),
                _ => return Ok(out),
            }
        }
    }

    /// One session, `None` if it does not exist (asked for again after a transient failure).
    pub async fn get(&self, name: &str) -> Result<Option<AccessSession>, Error> {
        retry::transient(|| async {
            self.api
                .get_opt(name)
                .await
                .map_err(|e| self.target("get", Some(name)).error(e))
        })
        .await
    }
}

/// `spec.subject=…,spec.identityProvider=…` for the filter's server-side parts.
pub fn field_selector(filter: &SessionFilter) -> Option<String> {
    let terms: Vec<String> = [
        ("spec.subject", filter.user.as_deref()),
        ("spec.identityProvider", filter.idp.as_deref()),
    ]
    .into_iter()
    .filter_map(|(field, value)| value.map(|v| format!("{field}={}", escape_field_value(v))))
    .collect();
    (!terms.is_empty()).then(|| terms.join(","))
}

fn matches_email(session: &AccessSession, filter: &SessionFilter) -> bool {
    filter.email.as_deref().is_none_or(|wanted| {
        session
            .spec
            .email
            .as_deref()
            .is_some_and(|email| email.eq_ignore_ascii_case(wanted))
    })
}

/// Whether the session has passed its absolute expiry on this machine's clock. A gateway whose
/// clock is behind may still accept it for a while: see [`expired_everywhere`].
pub fn expired(session: &AccessSession, now: Timestamp) -> bool {
    session.spec.expires_at.0 <= now
}

/// How far the gateways' clocks may be behind this one: the clock-skew allowance they apply to
/// `exp` (and keep ended sessions for past their expiry).
pub const GATEWAY_CLOCK_SKEW: SignedDuration =
    SignedDuration::from_secs(portcullis_core::token::CLOCK_SKEW_SECS as i64);

/// Whether no gateway accepts the session any more because it expired: `expiresAt` plus the
/// gateways' clock-skew allowance has passed on this machine's clock. (An admin may move
/// `expiresAt` earlier to end a session; a gateway whose clock is behind accepts it until then.)
pub fn expired_everywhere(session: &AccessSession, now: Timestamp) -> bool {
    session
        .spec
        .expires_at
        .0
        .saturating_add(GATEWAY_CLOCK_SKEW)
        .is_ok_and(|end| end <= now)
}

/// Not revoked and not expired.
pub fn active(session: &AccessSession, now: Timestamp) -> bool {
    !session.spec.revoked && !expired(session, now)
}

/// A user as the identity provider names them: (identity provider, subject).
pub type Identity = (String, String);

/// The one identity the sessions carrying `email` belong to. Email is not an identity: a
/// provider may reassign an address, and two providers may both vouch for it. So only when every
/// session with that email (preferring still-valid ones) has the same subject and provider;
/// otherwise the error lists the candidates and the commands that name each exactly (`options`
/// is appended to each, e.g. ` --reason 'left'`).
pub fn resolve_email(
    email: &str,
    sessions: &[AccessSession],
    now: Timestamp,
    options: &str,
) -> Result<Option<Identity>, Error> {
    let identities = prefer(sessions, |s| active(s, now));
    if identities.len() <= 1 {
        return Ok(identities.into_keys().next());
    }
    Err(ambiguous(
        format!(
            "the email {} does not name one user: sessions with it belong to {} identities.\n\
             An email is not a stable identity (identity providers can reassign it, and two \
             providers can both vouch for it), so revoke by subject instead; nothing was revoked:",
            sanitize::value(email),
            identities.len()
        ),
        &identities,
        options,
    ))
}

/// The one identity provider under which `subject` has sessions (`sessions` are the subject's).
/// A subject names a user only within its identity provider: two providers can both have a
/// user `1077`. So without `--idp` only when the sessions still to be revoked (else all of them)
/// come from one provider; otherwise the error prints the `--idp` command for each.
pub fn resolve_subject(
    subject: &str,
    sessions: &[AccessSession],
    options: &str,
) -> Result<Option<String>, Error> {
    let identities = prefer(sessions, |s| !s.spec.revoked);
    if identities.len() <= 1 {
        return Ok(identities.into_keys().next().map(|(idp, _)| idp));
    }
    Err(ambiguous(
        format!(
            "the subject {} has sessions under {} identity providers, and a subject names one \
             user only within its identity provider; nothing was revoked. Name the provider:",
            shell_quote(subject),
            identities.len()
        ),
        &identities,
        options,
    ))
}

/// How many sessions each identity has, counting only those `preferred` when there are any.
fn prefer(
    sessions: &[AccessSession],
    preferred: impl Fn(&AccessSession) -> bool,
) -> BTreeMap<Identity, usize> {
    let count = |only_preferred: bool| {
        let mut identities: BTreeMap<Identity, usize> = BTreeMap::new();
        for s in sessions.iter().filter(|s| !only_preferred || preferred(s)) {
            *identities
                .entry((s.spec.identity_provider.clone(), s.spec.subject.clone()))
                .or_default() += 1;
        }
        identities
    };
    let identities = count(true);
    if identities.is_empty() {
        count(false)
    } else {
        identities
    }
}

/// The refusal: `intro`, then one exact command per identity.
fn ambiguous(intro: String, identities: &BTreeMap<Identity, usize>, options: &str) -> Error {
    let mut message = intro + "\n";
    for ((idp, subject), n) in identities {
        message += &format!(
            "  kubectl portcullis revoke user {} --idp {}{options}    # {n} session{}\n",
            shell_quote(subject),
            shell_quote(idp),
            if *n == 1 { "" } else { "s" }
        );
    }
    Error::Ambiguous(message.trim_end().to_owned())
}

/// Quotes a word for a shell command line when it needs it: `'…'`, or `$'…'` with escapes when
/// it holds characters a terminal would act on (so the printed command is exact and harmless).
pub fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@:/+=".contains(c));
    if plain {
        return word.to_owned();
    }
    if !word.chars().any(sanitize::is_unsafe) {
        return format!("'{}'", word.replace('\'', r"'\''"));
    }
    let mut quoted = String::from("$'");
    for c in word.chars() {
        match c {
            '\\' => quoted += r"\\",
            '\'' => quoted += r"\'",
            '\n' => quoted += r"\n",
            '\t' => quoted += r"\t",
            '\r' => quoted += r"\r",
            c if c.is_ascii_control() => quoted += &format!("\\x{:02x}", u32::from(c)),
            c if sanitize::is_unsafe(c) => quoted += &format!("\\u{:04x}", u32::from(c)),
            c => quoted.push(c),
        }
    }
    quoted.push('\'');
    quoted
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use portcullis_crds::AccessSessionSpec;

    pub(crate) fn session(name: &str, idp: &str, subject: &str, email: &str) -> AccessSession {
        let at = |s: i64| Time(Timestamp::from_second(s).unwrap_or(Timestamp::UNIX_EPOCH));
        AccessSession::new(
            name,
            AccessSessionSpec {
                subject: subject.to_owned(),
                email: Some(email.to_owned()),
                groups: Vec::new(),
                identity_provider: idp.to_owned(),
                issued_at: at(1_000),
                expires_at: at(2_000),
                revoked: false,
                revocation_reason: None,
                revoked_by: None,
                provider_session_id: None,
            },
        )
    }

    fn now() -> Timestamp {
        Timestamp::from_second(1_500).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    #[test]
    fn field_selector_values_are_escaped() {
        assert_eq!(escape_field_value("a=b,c\\d"), r"a\=b\,c\\d");
        let filter = SessionFilter {
            user: Some("CiQw=".into()),
            idp: Some("dex".into()),
            email: Some("ignored@server.side".into()),
        };
        assert_eq!(
            field_selector(&filter).as_deref(),
            Some(r"spec.subject=CiQw\=,spec.identityProvider=dex")
        );
        assert_eq!(field_selector(&SessionFilter::default()), None);
    }

    #[test]
    fn email_matches_case_insensitively() {
        let s = session("a", "dex", "sub", "Alice@Example.com");
        let filter = SessionFilter {
            email: Some("alice@example.COM".into()),
            ..SessionFilter::default()
        };
        assert!(matches_email(&s, &filter));
        let other = SessionFilter {
            email: Some("bob@example.com".into()),
            ..SessionFilter::default()
        };
        assert!(!matches_email(&s, &other));
    }

    #[test]
    fn an_email_resolves_only_to_one_identity() {
        let one = [
            session("a", "dex", "sub-1", "alice@example.com"),
            session("b", "dex", "sub-1", "alice@example.com"),
        ];
        assert_eq!(
            resolve_email("alice@example.com", &one, now(), "")
                .ok()
                .flatten(),
            Some(("dex".to_owned(), "sub-1".to_owned()))
        );
        assert!(matches!(resolve_email("x@y.z", &[], now(), ""), Ok(None)));

        let two = [
            session("a", "dex", "sub-1", "alice@example.com"),
            session("b", "google", "1077", "alice@example.com"),
        ];
        let Err(Error::Ambiguous(message)) =
            resolve_email("alice@example.com", &two, now(), " --reason 'left'")
        else {
            panic!("two identities must be ambiguous");
        };
        assert!(
            message.contains("revoke user sub-1 --idp dex --reason 'left'    # 1 session"),
            "{message}"
        );
        assert!(
            message.contains("revoke user 1077 --idp google --reason 'left'"),
            "{message}"
        );
    }

    #[test]
    fn a_subject_without_idp_resolves_only_to_one_provider() {
        let one = [
            session("a", "dex", "1077", "a@example.com"),
            session("b", "dex", "1077", "a@example.com"),
        ];
        assert_eq!(
            resolve_subject("1077", &one, "").ok().flatten().as_deref(),
            Some("dex")
        );
        assert!(matches!(resolve_subject("1077", &[], ""), Ok(None)));

        let mut two = vec![
            session("a", "dex", "1077", "a@example.com"),
            session("b", "google", "1077", "b@example.com"),
            session("c", "google", "1077", "b@example.com"),
        ];
        let Err(Error::Ambiguous(message)) = resolve_subject("1077", &two, " --wait=60s") else {
            panic!("one subject under two providers must be ambiguous");
        };
        assert_eq!(
            message,
            "the subject 1077 has sessions under 2 identity providers, and a subject names one \
             user only within its identity provider; nothing was revoked. Name the provider:\n  \
             kubectl portcullis revoke user 1077 --idp dex --wait=60s    # 1 session\n  \
             kubectl portcullis revoke user 1077 --idp google --wait=60s    # 2 sessions"
        );
        // Sessions already revoked under one provider leave nothing to decide there.
        two[0].spec.revoked = true;
        assert_eq!(
            resolve_subject("1077", &two, "").ok().flatten().as_deref(),
            Some("google")
        );
    }

    #[test]
    fn revoked_sessions_of_another_identity_do_not_make_an_email_ambiguous() {
        let mut old = session("a", "old-idp", "sub-0", "alice@example.com");
        old.spec.revoked = true;
        let sessions = [old, session("b", "dex", "sub-1", "alice@example.com")];
        assert_eq!(
            resolve_email("alice@example.com", &sessions, now(), "")
                .ok()
                .flatten(),
            Some(("dex".to_owned(), "sub-1".to_owned()))
        );
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(shell_quote("CiQw="), "CiQw=");
        assert_eq!(shell_quote("a b'c"), r"'a b'\''c'");
        assert_eq!(shell_quote(""), "''");
        // Terminal controls are written as escapes: the command stays exact, the terminal safe.
        assert_eq!(
            shell_quote("a\u{1b}[2J'\n\u{202e}"),
            r"$'a\x1b[2J\'\n\u202e'"
        );
        assert!(!shell_quote("x\u{9b}y").chars().any(sanitize::is_unsafe));
    }
}
