//! Dex, the OpenID Connect provider of the stack: its configuration and a scripted browser
//! login that the gateway tests reuse.
//!
//! Dex runs two connectors:
//!
//! * `local`: the password database with the static users, logged in through Dex's real HTML
//!   form (or `grant_type=password`); since Dex v2.45 a static user has groups, so tokens carry
//!   email, name and the user's **groups** ([`DexUser::groups`]);
//! * `header`: Dex's built-in `authproxy` connector, which trusts `X-Remote-User`,
//!   `X-Remote-User-Email`, `X-Remote-User-Id` and `X-Remote-Group` on its callback; the login
//!   helper sends them from [`DexUser`], so tokens carry the same identity by another route: a
//!   second connector, as a provider with several upstream logins has. Anyone who can reach Dex
//!   can assert any identity through it, so it exists only where [`DexInfo::trusted_header`]
//!   asks for it: the test stacks, on loopback. The demo's Dex (`devstack up --demo`, which a
//!   person opens in a browser) has only the password connector.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail, ensure};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::Rng as _;
use reqwest::header::{HeaderMap, HeaderValue, LOCATION};
use serde::{Deserialize, Serialize};
use url::Url;

/// The static OAuth client of the stack.
pub const CLIENT_ID: &str = "portcullis";
/// Connector id of the password database.
pub const PASSWORD_CONNECTOR: &str = "local";
/// Connector id of the trusted-header connector.
pub const HEADER_CONNECTOR: &str = "header";
/// Password of every static user.
pub const PASSWORD: &str = "password";
/// Redirect URI always registered for the harness's own logins; nothing listens there, the
/// helper stops at the redirect and reads the code from it.
pub const HARNESS_REDIRECT_URI: &str = "https://127.0.0.1/portcullis-tests/callback";
/// Environment variable through which Dex receives the client secret (never argv).
pub const CLIENT_SECRET_ENV: &str = "PORTCULLIS_DEX_CLIENT_SECRET";

/// A static user of the test Dex.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DexUser {
    /// Login name and `email` claim.
    pub email: String,
    /// `name` claim.
    pub username: String,
    /// Stable user id (`sub` is derived from it and the connector).
    pub user_id: String,
    /// Plain-text password for the `local` connector.
    pub password: String,
    /// The `groups` claim: the static user's groups, and what the `header` connector sends.
    pub groups: Vec<String>,
}

/// The users every stack has: alice (engineering, admins) and bob (sales).
pub fn default_users() -> Vec<DexUser> {
    let user = |name: &str, id: &str, groups: &[&str]| DexUser {
        email: format!("{name}@example.com"),
        username: name.to_owned(),
        user_id: id.to_owned(),
        password: PASSWORD.to_owned(),
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
    };
    vec![
        user(
            "alice",
            "08a8684b-db88-4b73-90a9-3cd1661f5466",
            &["engineering", "admins"],
        ),
        user("bob", "41331323-6f44-45e6-b3b9-2c4b60c02be5", &["sales"]),
    ]
}

/// What a client needs to talk to the test Dex.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DexInfo {
    /// Issuer URL (`https://127.0.0.1:PORT/dex`), served with the stack CA.
    pub issuer: String,
    /// OAuth client id.
    pub client_id: String,
    /// File holding the client secret.
    pub client_secret_file: std::path::PathBuf,
    /// CA certificate that signs Dex's serving certificate.
    pub ca_file: std::path::PathBuf,
    /// Registered redirect URIs.
    pub redirect_uris: Vec<String>,
    /// The static users.
    pub users: Vec<DexUser>,
    /// Whether Dex runs the trusted-header connector ([`HEADER_CONNECTOR`]), through which
    /// anyone who reaches Dex logs in as anyone: tests that need groups only, never the demo.
    #[serde(default)]
    pub trusted_header: bool,
}

impl DexInfo {
    /// Reads the client secret from its file.
    pub fn client_secret(&self) -> Result<String> {
        let secret = std::fs::read_to_string(&self.client_secret_file)
            .with_context(|| format!("reading {}", self.client_secret_file.display()))?;
        Ok(secret.trim().to_owned())
    }

    /// The user with this name (`alice`) or email.
    pub fn user(&self, name: &str) -> Result<&DexUser> {
        self.users
            .iter()
            .find(|u| u.username == name || u.email == name)
            .ok_or_else(|| anyhow!("no Dex user {name:?}"))
    }

    /// A reqwest client for back-channel calls (discovery, token endpoint) trusting the CA.
    pub fn http_client(&self) -> Result<reqwest::Client> {
        http_client_builder(&self.ca_file)?
            .build()
            .context("building HTTP client")
    }
}

/// A reqwest builder trusting only the stack CA, with a timeout; redirects not followed.
pub fn http_client_builder(ca_file: &Path) -> Result<reqwest::ClientBuilder> {
    crate::install_crypto_provider();
    let pem = std::fs::read(ca_file).with_context(|| format!("reading {}", ca_file.display()))?;
    let ca = reqwest::Certificate::from_pem(&pem).context("parsing the stack CA")?;
    Ok(reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(30)))
}

/// A scripted browser: cookie jar, stack CA, redirects followed by [`follow_login`].
pub fn browser(ca_file: &Path) -> Result<reqwest::Client> {
    http_client_builder(ca_file)?
        .cookie_store(true)
        .build()
        .context("building browser client")
}

/// Writes Dex's configuration (JSON, which is valid YAML). The client secret is not in it: Dex
/// reads it from [`CLIENT_SECRET_ENV`].
pub fn write_config(
    path: &Path,
    issuer: &str,
    listen: &str,
    tls: &crate::pki::CertFiles,
    info: &DexInfo,
) -> Result<()> {
    let mut passwords = Vec::new();
    // One hash per distinct password: benchmarks give thousands of users the same one.
    let mut hashes = BTreeMap::new();
    for u in &info.users {
        // Dex enforces a bcrypt cost of at least 10; hashed at start so no hash is committed.
        let hash = match hashes.get(&u.password) {
            Some(hash) => String::clone(hash),
            None => {
                let hash = bcrypt::hash_with_result(&u.password, 10)
                    .context("bcrypt")?
                    .format_for_version(bcrypt::Version::TwoA);
                hashes.insert(u.password.clone(), hash.clone());
                hash
            }
        };
        passwords.push(serde_json::json!({
            "email": u.email, "hash": hash, "username": u.username, "userID": u.user_id,
            "groups": u.groups,
        }));
    }
    let config = serde_json::json!({
        "issuer": issuer,
        "storage": { "type": "memory" },
        "web": { "https": listen, "tlsCert": tls.cert, "tlsKey": tls.key },
        "logger": { "level": "debug", "format": "text" },
        "oauth2": {
            "skipApprovalScreen": true,
            "responseTypes": ["code"],
            // Enables grant_type=password against the local users, for tests that only need
            // a token.
            "passwordConnector": PASSWORD_CONNECTOR,
        },
        "expiry": { "idTokens": "1h", "signingKeys": "6h" },
        "enablePasswordDB": true,
        "staticPasswords": passwords,
        "staticClients": [{
            "id": info.client_id,
            "name": "Portcullis",
            "secretEnv": CLIENT_SECRET_ENV,
            "redirectURIs": info.redirect_uris,
        }],
        "connectors": connectors(info.trusted_header),
    });
    let body = serde_json::to_vec_pretty(&config).context("serializing Dex config")?;
    crate::fsutil::write_public(path, &body)
}

/// Dex's connectors besides the password database: the trusted-header one only when asked.
fn connectors(trusted_header: bool) -> serde_json::Value {
    if !trusted_header {
        return serde_json::json!([]);
    }
    serde_json::json!([{
        "type": "authproxy",
        "id": HEADER_CONNECTOR,
        "name": "Trusted header (tests only)",
        "config": {},
    }])
}

/// Which Dex connector a login goes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Connector {
    /// The HTML password form of the static users.
    Password,
    /// The trusted-header connector (test stacks only).
    Header,
}

impl Connector {
    /// The Dex connector id.
    pub fn id(self) -> &'static str {
        match self {
            Connector::Password => PASSWORD_CONNECTOR,
            Connector::Header => HEADER_CONNECTOR,
        }
    }
}

/// Tokens from Dex's token endpoint.
#[derive(Clone, Debug, Deserialize)]
pub struct Tokens {
    /// The ID token (JWT).
    pub id_token: String,
    /// The access token.
    pub access_token: String,
    /// Present when `offline_access` was requested.
    pub refresh_token: Option<String>,
    /// Lifetime of the access token in seconds.
    pub expires_in: Option<u64>,
    /// Anything else Dex returned.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// Drives a browser from `start` through redirects and Dex's login pages until a redirect
/// points at a URL for which `stop` is true, and returns that URL (not fetched).
///
/// `start` can be Dex's authorization endpoint or any app that redirects to it (the gateway).
/// The connector-selection page is answered with `connector`; the password form with the
/// user's email and password; for [`Connector::Header`] the identity headers are sent.
pub async fn follow_login(
    browser: &reqwest::Client,
    start: Url,
    user: &DexUser,
    connector: Connector,
    stop: impl Fn(&Url) -> bool,
) -> Result<Url> {
    let headers = identity_headers(user, connector)?;
    let mut next = Request::Get(start);
    for _ in 0..20 {
        let posted = matches!(next, Request::PostLogin(_));
        let (url, resp) = match next {
            Request::Get(url) => {
                let resp = browser.get(url.clone()).headers(headers.clone()).send();
                (
                    url.clone(),
                    resp.await.with_context(|| format!("GET {url}"))?,
                )
            }
            Request::PostLogin(url) => {
                let form = [("login", &user.email), ("password", &user.password)];
                let resp = browser.post(url.clone()).form(&form).send();
                (
                    url.clone(),
                    resp.await.with_context(|| format!("POST {url}"))?,
                )
            }
        };
        let status = resp.status();
        if let Some(target) = redirect_target(&url, &resp)? {
            if stop(&target) {
                return Ok(target);
            }
            next = Request::Get(target);
            continue;
        }
        let body = resp.text().await.context("reading login page")?;
        // Dex answers a failed password POST (401) with the form again.
        if posted && find_login_form(&body).is_some() {
            bail!(
                "Dex rejected the credentials of {} ({status}): {}",
                user.email,
                excerpt(&body)
            );
        }
        ensure!(
            status.is_success(),
            "{status} from {url} during login: {}",
            excerpt(&body)
        );
        if let Some(action) = find_login_form(&body) {
            next = Request::PostLogin(url.join(&action).context("resolving form action")?);
        } else if let Some(link) = find_connector_link(&body, connector.id()) {
            next = Request::Get(url.join(&link).context("resolving connector link")?);
        } else {
            bail!("unexpected page at {url} during login: {}", excerpt(&body));
        }
    }
    bail!("login did not finish within 20 redirects")
}

/// Logs `user` in at the test Dex with the authorization-code flow (PKCE S256, state, nonce,
/// `offline_access`) and exchanges the code for tokens.
pub async fn login(info: &DexInfo, user: &DexUser, connector: Connector) -> Result<Tokens> {
    let redirect = HARNESS_REDIRECT_URI;
    let state = random_token();
    let nonce = random_token();
    let verifier = random_token();
    let challenge = URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        verifier.as_bytes(),
    ));
    let mut auth = Url::parse(&format!("{}/auth", info.issuer)).context("issuer URL")?;
    auth.query_pairs_mut()
        .append_pair("client_id", &info.client_id)
        .append_pair("redirect_uri", redirect)
        .append_pair("response_type", "code")
        .append_pair("scope", "openid email profile groups offline_access")
        .append_pair("state", &state)
        .append_pair("nonce", &nonce)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256")
        .append_pair("connector_id", connector.id());
    let browser = browser(&info.ca_file)?;
    let back = follow_login(&browser, auth, user, connector, |u| {
        u.as_str().starts_with(redirect)
    })
    .await?;
    let params: BTreeMap<_, _> = back.query_pairs().into_owned().collect();
    if let Some(err) = params.get("error") {
        bail!(
            "Dex returned error {err}: {:?}",
            params.get("error_description")
        );
    }
    ensure!(
        params.get("state") == Some(&state),
        "state mismatch in {back}"
    );
    let code = params
        .get("code")
        .ok_or_else(|| anyhow!("no code in {back}"))?;
    let tokens = token_request(
        info,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect),
            ("code_verifier", &verifier),
        ],
    )
    .await?;
    let claims = unverified_claims(&tokens.id_token)?;
    ensure!(
        claims["nonce"] == serde_json::Value::String(nonce),
        "nonce mismatch in id_token"
    );
    Ok(tokens)
}

/// Redeems a refresh token.
pub async fn refresh(info: &DexInfo, refresh_token: &str) -> Result<Tokens> {
    token_request(
        info,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ],
    )
    .await
}

/// `grant_type=password` against the local users: a token without a browser.
pub async fn password_grant(info: &DexInfo, user: &DexUser) -> Result<Tokens> {
    token_request(
        info,
        &[
            ("grant_type", "password"),
            ("username", &user.email),
            ("password", &user.password),
            ("scope", "openid email profile groups offline_access"),
        ],
    )
    .await
}

async fn token_request(info: &DexInfo, form: &[(&str, &str)]) -> Result<Tokens> {
    let endpoint = format!("{}/token", info.issuer);
    let resp = info
        .http_client()?
        .post(&endpoint)
        .basic_auth(&info.client_id, Some(info.client_secret()?))
        .form(form)
        .send()
        .await
        .with_context(|| format!("POST {endpoint}"))?;
    let status = resp.status();
    let body = resp.text().await.context("reading token response")?;
    ensure!(
        status.is_success(),
        "token endpoint answered {status}: {body}"
    );
    serde_json::from_str(&body).with_context(|| format!("parsing token response {body}"))
}

/// Where a redirect answer to a request for `url` points (`None` for any other answer).
pub(crate) fn redirect_target(url: &Url, response: &reqwest::Response) -> Result<Option<Url>> {
    let status = response.status();
    if !status.is_redirection() {
        return Ok(None);
    }
    let location = response
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| anyhow!("{status} from {url} without a usable Location"))?;
    url.join(location).context("resolving Location").map(Some)
}

/// The claims of a JWT **without verifying it**: for assertions in tests only.
pub fn unverified_claims(jwt: &str) -> Result<serde_json::Value> {
    let payload = jwt.split('.').nth(1).ok_or_else(|| anyhow!("not a JWT"))?;
    let bytes = URL_SAFE_NO_PAD
        .decode(payload)
        .context("JWT payload is not base64url")?;
    serde_json::from_slice(&bytes).context("JWT payload is not JSON")
}

enum Request {
    Get(Url),
    PostLogin(Url),
}

fn identity_headers(user: &DexUser, connector: Connector) -> Result<HeaderMap> {
    let mut headers = HeaderMap::new();
    if connector == Connector::Header {
        let mut put = |name: &'static str, value: &str| -> Result<()> {
            headers.insert(
                name,
                HeaderValue::from_str(value).with_context(|| format!("header {name}"))?,
            );
            Ok(())
        };
        put("X-Remote-User", &user.email)?;
        put("X-Remote-User-Email", &user.email)?;
        put("X-Remote-User-Id", &user.user_id)?;
        if !user.groups.is_empty() {
            put("X-Remote-Group", &user.groups.join(","))?;
        }
    }
    Ok(headers)
}

/// The `action` of Dex's password form (`<form method="post" action="...">` containing a
/// `password` input), HTML-unescaped.
fn find_login_form(html: &str) -> Option<String> {
    if !html.contains("name=\"password\"") {
        return None;
    }
    let form = html.find("<form")?;
    let rest = &html[form..];
    let start = rest.find("action=\"")? + "action=\"".len();
    let end = rest[start..].find('"')?;
    Some(unescape(&rest[start..start + end]))
}

/// The link to `connector` on Dex's connector-selection page.
fn find_connector_link(html: &str, connector: &str) -> Option<String> {
    let needle = format!("/auth/{connector}");
    html.match_indices("href=\"").find_map(|(i, m)| {
        let start = i + m.len();
        let end = html[start..].find('"')?;
        let href = unescape(&html[start..start + end]);
        let path = href.split('?').next().unwrap_or_default();
        path.ends_with(&needle).then_some(href)
    })
}

pub(crate) fn unescape(s: &str) -> String {
    s.replace("&amp;", "&")
        .replace("&#43;", "+")
        .replace("&#x2B;", "+")
        .replace("&#34;", "\"")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
}

pub(crate) fn excerpt(body: &str) -> String {
    body.chars().take(400).collect()
}

/// 32 random bytes, base64url: state, nonce and PKCE verifier.
pub fn random_token() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_password_form_action() {
        let html = r#"<form method="post" action="/dex/auth/local/login?back=&amp;state=abc">
            <input name="login"><input type="password" name="password"></form>"#;
        assert_eq!(
            find_login_form(html).as_deref(),
            Some("/dex/auth/local/login?back=&state=abc")
        );
        assert_eq!(find_login_form("<form action=\"/x\"></form>"), None);
    }

    #[test]
    fn finds_the_connector_link() {
        let html = r#"<a href="/dex/auth/header?client_id=portcullis&amp;state=s">x</a>
            <a href="/dex/auth/local?client_id=portcullis&amp;state=s">y</a>"#;
        assert_eq!(
            find_connector_link(html, "local").as_deref(),
            Some("/dex/auth/local?client_id=portcullis&state=s")
        );
        assert_eq!(find_connector_link(html, "github"), None);
    }

    #[test]
    fn header_connector_sends_groups_and_password_connector_sends_nothing() {
        let alice = default_users().remove(0);
        let headers = identity_headers(&alice, Connector::Header).expect("headers");
        assert_eq!(headers["x-remote-group"], "engineering,admins");
        assert_eq!(headers["x-remote-user"], "alice@example.com");
        assert!(
            identity_headers(&alice, Connector::Password)
                .expect("headers")
                .is_empty()
        );
    }

    #[test]
    fn reads_jwt_claims() {
        let payload = URL_SAFE_NO_PAD.encode(br#"{"email":"a@example.com"}"#);
        let claims = unverified_claims(&format!("e30.{payload}.sig")).expect("claims");
        assert_eq!(claims["email"], "a@example.com");
        assert!(unverified_claims("garbage").is_err());
    }
}
