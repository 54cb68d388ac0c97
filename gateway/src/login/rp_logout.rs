//! RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0): where the auth host's logout
//! sends the browser so the identity provider ends its own session too.
//!
//! The endpoint is the provider's (`crate::idp::Provider::end_session_endpoint`: configured,
//! else discovered, unless `rpInitiatedLogout: false`). The request carries `client_id`, the
//! fixed `post_logout_redirect_uri` `https://<auth host>/.portcullis/logged-out`, the
//! (already allow-listed) back link as `state`, and — when the session's record holds it —
//! the ID token the provider issued for this session as `id_token_hint`. With the hint the
//! provider knows which of its sessions to end and that the request comes from its client,
//! so it ends it without asking the user again (Keycloak asks "Do you want to log out?"
//! without one). A session recorded before ID tokens were kept, or by a gateway without a
//! session key, has none: the request then names only `client_id`, as before.
//!
//! The ID token travels only in this redirect's URL, to the provider that issued it; it is
//! never logged and never put in a cookie.

use crate::{gateway::Gateway, tokens::SsoClaims};
use std::time::Duration;
use tracing::warn;

/// How long a logout waits for the provider's discovery document, and for the session
/// record, before it ends the gateway's session without the provider's: a slow provider or
/// API server must not hold the user's logout.
const LOOKUP_WAIT: Duration = Duration::from_secs(3);

/// The provider's logout URL for `session`, or `None` when its provider has none (or
/// RP-initiated logout is off for it): then only the gateway's session ends.
pub(super) async fn provider_logout_url(
    gateway: &Gateway,
    session: &SsoClaims,
    back: Option<&str>,
) -> Option<url::Url> {
    let provider = gateway.providers().get(&session.idp).ok()?.clone();
    let endpoint = tokio::time::timeout(LOOKUP_WAIT, provider.end_session_endpoint())
        .await
        .unwrap_or_else(|_| {
            warn!(idp = %session.idp, "discovery took too long: logout ends only our session");
            None
        })?;
    let hint = id_token_hint(gateway, &session.sid).await;
    let request = EndSessionRequest {
        client_id: &provider.config().client_id,
        post_logout_redirect_uri: &format!("{}/.portcullis/logged-out", gateway.issuer()),
        id_token_hint: hint.as_deref(),
        state: back,
    };
    Some(request.url(endpoint))
}

/// The ID token of session `sid`, from its record, opened with the session keys; `None` when
/// there is none (an older session, no session key, no record) or it cannot be read now.
async fn id_token_hint(gateway: &Gateway, sid: &str) -> Option<String> {
    let (recorder, refresher) = (gateway.sessions().as_ref()?, gateway.refresher().as_ref()?);
    let record = match tokio::time::timeout(LOOKUP_WAIT, recorder.read(sid)).await {
        Ok(Ok(record)) => record?,
        Ok(Err(error)) => {
            warn!(%error, sid, "cannot read the session for its ID token; logout without it");
            return None;
        }
        Err(_) => {
            warn!(
                sid,
                "reading the session took too long; logout without its ID token"
            );
            return None;
        }
    };
    let sealed = record.status?.refresh?.sealed_id_token?;
    refresher
        .key()
        .open_id_token(sid, &sealed)
        .inspect_err(|error| warn!(%error, sid, "the session's ID token does not open"))
        .ok()
}

/// One request to a provider's end-session endpoint.
pub struct EndSessionRequest<'a> {
    pub client_id: &'a str,
    pub post_logout_redirect_uri: &'a str,
    /// The ID token the provider issued for the session, when the gateway kept it.
    pub id_token_hint: Option<&'a str>,
    /// The back link, already allow-listed.
    pub state: Option<&'a str>,
}

impl EndSessionRequest<'_> {
    /// `endpoint` with this request's parameters added to whatever query it has (a tenant,
    /// say).
    pub fn url(&self, mut endpoint: url::Url) -> url::Url {
        {
            let mut query = endpoint.query_pairs_mut();
            if let Some(hint) = self.id_token_hint {
                query.append_pair("id_token_hint", hint);
            }
            query
                .append_pair("client_id", self.client_id)
                .append_pair("post_logout_redirect_uri", self.post_logout_redirect_uri);
            if let Some(state) = self.state {
                query.append_pair("state", state);
            }
        }
        endpoint
    }
}

#[cfg(test)]
mod tests {
    use super::EndSessionRequest;

    fn request(hint: Option<&'static str>) -> EndSessionRequest<'static> {
        EndSessionRequest {
            client_id: "portcullis",
            post_logout_redirect_uri: "https://auth.test/.portcullis/logged-out",
            id_token_hint: hint,
            state: Some("https://app.test/"),
        }
    }

    fn query(url: &url::Url) -> Vec<(String, String)> {
        url.query_pairs().into_owned().collect()
    }

    #[test]
    fn the_hint_is_sent_with_client_id_and_the_endpoints_own_query_is_kept() {
        let endpoint = url::Url::parse("https://idp.test/logout?tenant=t1").expect("url");
        let url = request(Some("h.e.s")).url(endpoint);
        let pairs = |list: &[(&str, &str)]| -> Vec<(String, String)> {
            list.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        assert_eq!(
            query(&url),
            pairs(&[
                ("tenant", "t1"),
                ("id_token_hint", "h.e.s"),
                ("client_id", "portcullis"),
                (
                    "post_logout_redirect_uri",
                    "https://auth.test/.portcullis/logged-out"
                ),
                ("state", "https://app.test/"),
            ])
        );
        assert_eq!(url.host_str(), Some("idp.test"));
        assert_eq!(url.path(), "/logout");
    }

    #[test]
    fn without_a_hint_only_client_id_names_the_client() {
        let endpoint = url::Url::parse("https://idp.test/logout").expect("url");
        let url = request(None).url(endpoint);
        assert!(query(&url).iter().all(|(k, _)| k != "id_token_hint"));
        assert!(query(&url).contains(&("client_id".into(), "portcullis".into())));
    }
}
