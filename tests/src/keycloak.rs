//! Keycloak, the second OpenID Connect provider of the harness, and a scripted browser for its
//! login form.
//!
//! Unlike Dex, Keycloak keeps a login session of its own (a browser that signed in once gets a
//! code without a password until it ends) and sends `auth_time` in its ID tokens, so the tests
//! that prove a forced re-authentication run against it. It is a Java application (about a
//! minute to start, ~420 MB), so only the tests that need it start one, each its own:
//! [`KeycloakServer::start`].
//!
//! It runs as `kc.sh start --optimized` with the build-time options `hack/build-tools.sh` fixed
//! (an in-memory database), on loopback only, over HTTPS with a certificate from the test CA,
//! with no cluster cache (`--cache=local`: no JGroups listeners), its temporary files under the
//! test's directory. The realm ([`REALM`]: the client, the users and their groups, and a
//! group-membership mapper that puts the `groups` claim into ID tokens) is created through the
//! admin API as soon as Keycloak answers; the bootstrap admin's password is random and reaches
//! Keycloak through its environment, never argv.

mod service_accounts;

pub use service_accounts::ServiceClient;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use url::Url;

use crate::dex::{self, excerpt, random_token, redirect_target, unescape};
use crate::fsutil::write_private;
use crate::pki::Pki;
use crate::process::{ManagedProcess, free_port};
use crate::stack::components;
use crate::tools::Tool;

/// The realm the tests use.
pub const REALM: &str = "portcullis";
/// The confidential client of the gateway.
pub const CLIENT_ID: &str = "portcullis";
/// Password of every user of the realm.
pub const PASSWORD: &str = "password";
/// How long Keycloak may take to answer its discovery document (measured: 18–45 s with
/// `start --optimized`, ~70 s on a loaded 2-CPU machine).
const START_TIMEOUT: Duration = Duration::from_secs(240);
const ADMIN_USER: &str = "portcullis-admin";

/// A user of the test realm.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeycloakUser {
    /// Login name.
    pub username: String,
    /// `email` claim (verified).
    pub email: String,
    /// Plain-text password.
    pub password: String,
    /// Groups (top level), sent in the `groups` claim.
    pub groups: Vec<String>,
}

/// The users of the realm: alice (engineering, admins) and bob (sales), as in Dex, and carol
/// (engineering), whom tests take out of her group, dave (engineering), whose refresh token
/// a test redeems behind the gateway's back, erin (engineering), signed out by a
/// back-channel logout, and frank (engineering), who signs out at the gateway (RP-initiated
/// logout).
pub fn default_users() -> Vec<KeycloakUser> {
    let user = |name: &str, groups: Vec<String>| KeycloakUser {
        username: name.to_owned(),
        email: format!("{name}@example.com"),
        password: PASSWORD.to_owned(),
        groups,
    };
    let mut users: Vec<KeycloakUser> = dex::default_users()
        .into_iter()
        .map(|u| user(&u.username, u.groups))
        .collect();
    users.push(user("carol", vec!["engineering".to_owned()]));
    users.push(user("dave", vec!["engineering".to_owned()]));
    users.push(user("erin", vec!["engineering".to_owned()]));
    users.push(user("frank", vec!["engineering".to_owned()]));
    users
}

/// What a client needs to talk to the test Keycloak.
#[derive(Clone, Debug)]
pub struct KeycloakInfo {
    /// Issuer URL (`https://127.0.0.1:PORT/realms/portcullis`).
    pub issuer: String,
    /// `https://127.0.0.1:PORT`, where the admin API is.
    pub origin: String,
    /// OAuth client id.
    pub client_id: String,
    /// File holding the client secret.
    pub client_secret_file: PathBuf,
    /// CA certificate that signs Keycloak's serving certificate.
    pub ca_file: PathBuf,
    /// The users.
    pub users: Vec<KeycloakUser>,
}

impl KeycloakInfo {
    /// The user named `name`.
    pub fn user(&self, name: &str) -> Result<&KeycloakUser> {
        self.users
            .iter()
            .find(|u| u.username == name)
            .ok_or_else(|| anyhow!("no Keycloak user {name:?}"))
    }

    /// The authorization endpoint (what a gateway's login redirect points at).
    pub fn authorization_endpoint(&self) -> String {
        format!("{}/protocol/openid-connect/auth", self.issuer)
    }

    /// The entry of the gateway's identity-provider file for this Keycloak, named `keycloak`,
    /// with `auth_time` required after a forced re-login (Keycloak sends it).
    pub fn gateway_entry(&self) -> Value {
        json!({
            "name": "keycloak",
            "displayName": "Keycloak (test)",
            "issuer": self.issuer,
            "clientId": self.client_id,
            "clientSecretFile": self.client_secret_file,
            // No `offline_access`: Keycloak's ordinary refresh tokens belong to the user's
            // login session and die with it, which is what a confirmation should see.
            "scopes": ["openid", "email", "profile"],
            "requireAuthTime": true,
        })
    }
}

/// A running Keycloak with the test realm. Dropping it stops Keycloak.
pub struct KeycloakServer {
    /// Issuer, client and users.
    pub info: KeycloakInfo,
    process: ManagedProcess,
    admin_password: String,
    http: reqwest::Client,
}

impl KeycloakServer {
    /// Starts Keycloak on a free loopback port with its files in `dir`, serving with a
    /// certificate from `pki`, and creates the realm with a client accepting `redirect_uris`.
    /// Keycloak trusts `pki`'s CA for its own outgoing calls (back-channel logout), and
    /// resolves each of `loopback_names` (a test gateway's auth host) to 127.0.0.1.
    pub async fn start(
        dir: &Path,
        pki: &Pki,
        redirect_uris: Vec<String>,
        loopback_names: &[&str],
    ) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let port = free_port()?;
        let origin = format!("https://127.0.0.1:{port}");
        let tls = pki.issue_serving("keycloak", &[])?;
        let secret = random_token();
        let secret_file = dir.join("client-secret");
        write_private(&secret_file, secret.as_bytes())?;
        let admin_password = random_token();
        let mut cmd = Command::new(Tool::Keycloak.path()?);
        cmd.args([
            "start",
            "--optimized",
            "--cache=local",
            "--http-enabled=false",
        ])
        .args(["--http-host=127.0.0.1", &format!("--https-port={port}")])
        .arg(format!("--hostname={origin}"))
        .arg(format!("--https-certificate-file={}", tls.cert.display()))
        .arg(format!(
            "--https-certificate-key-file={}",
            tls.key.display()
        ))
        .arg(format!(
            "--truststore-paths={}",
            pki.ca_cert_path().display()
        ))
        .env("KC_BOOTSTRAP_ADMIN_USERNAME", ADMIN_USER)
        .env("KC_BOOTSTRAP_ADMIN_PASSWORD", &admin_password)
        .env("JAVA_OPTS_APPEND", java_options(dir, loopback_names)?);
        let process = ManagedProcess::spawn("keycloak", cmd, &dir.join("keycloak.log"))?;
        let info = KeycloakInfo {
            issuer: format!("{origin}/realms/{REALM}"),
            origin,
            client_id: CLIENT_ID.to_owned(),
            client_secret_file: secret_file,
            ca_file: pki.ca_cert_path(),
            users: default_users(),
        };
        let http = dex::http_client_builder(&info.ca_file)?
            .build()
            .context("building the Keycloak admin client")?;
        let mut server = Self {
            info,
            process,
            admin_password,
            http,
        };
        server.wait_ready().await?;
        let realm = realm(&server.info, &secret, &redirect_uris);
        server
            .admin(Method::POST, "", Some(realm))
            .await
            .context("creating the realm")?;
        Ok(server)
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let client = self.http.clone();
        let master = format!("{}/realms/master", self.info.origin);
        self.process
            .wait_ready("discovery", START_TIMEOUT, || {
                let client = client.clone();
                let master = master.clone();
                async move { components::dex_ready(&client, &master).await }
            })
            .await
    }

    /// A token of the bootstrap admin (the `admin-cli` client of the master realm).
    async fn admin_token(&self) -> Result<String> {
        let url = format!(
            "{}/realms/master/protocol/openid-connect/token",
            self.info.origin
        );
        let form = [
            ("grant_type", "password"),
            ("client_id", "admin-cli"),
            ("username", ADMIN_USER),
            ("password", self.admin_password.as_str()),
        ];
        let response = self.http.post(&url).form(&form).send().await;
        let body: Value = expect_success(response.with_context(|| format!("POST {url}"))?)
            .await?
            .json()
            .await
            .context("parsing the admin token response")?;
        body["access_token"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("no access_token in the admin token response"))
    }

    /// Calls the admin API of the realm: `path` below `/admin/realms/portcullis` (empty:
    /// `POST /admin/realms` creates the realm).
    async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value> {
        let url = if path.is_empty() {
            format!("{}/admin/realms", self.info.origin)
        } else {
            format!("{}/admin/realms/{REALM}{path}", self.info.origin)
        };
        let mut request = self
            .http
            .request(method.clone(), &url)
            .bearer_auth(self.admin_token().await?);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await;
        let response = expect_success(response.with_context(|| format!("{method} {url}"))?)
            .await
            .with_context(|| format!("{method} {url}"))?;
        let text = response.text().await.context("reading the admin answer")?;
        if text.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).with_context(|| format!("parsing the answer to {url}"))
    }

    /// Keycloak's id of the user named `name`.
    pub async fn user_id(&self, name: &str) -> Result<String> {
        let users = self
            .admin(
                Method::GET,
                &format!("/users?exact=true&username={name}"),
                None,
            )
            .await?;
        match users.as_array().map(Vec::as_slice) {
            Some([user]) => user["id"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| anyhow!("user {name} without an id")),
            _ => bail!("expected one user {name}, found {users}"),
        }
    }

    /// Takes the user out of a group (an administrator's change at the provider).
    pub async fn remove_from_group(&self, name: &str, group: &str) -> Result<()> {
        let user = self.user_id(name).await?;
        let groups = self
            .admin(
                Method::GET,
                &format!("/groups?exact=true&search={group}"),
                None,
            )
            .await?;
        let id = groups
            .as_array()
            .into_iter()
            .flatten()
            .find(|g| g["name"] == group)
            .and_then(|g| g["id"].as_str())
            .ok_or_else(|| anyhow!("no group {group} in {groups}"))?;
        let path = format!("/users/{user}/groups/{id}");
        self.admin(Method::DELETE, &path, None).await.map(|_| ())
    }

    /// Sets the client's OpenID Connect back-channel logout URL, with the `sid` claim in its
    /// logout tokens (`backchannel.logout.session.required`): Keycloak then POSTs a
    /// `logout_token` there whenever one of the client's user sessions ends.
    pub async fn enable_backchannel_logout(&self, url: &str) -> Result<()> {
        let (id, mut client) = self.client().await?;
        client["attributes"]["backchannel.logout.url"] = json!(url);
        client["attributes"]["backchannel.logout.session.required"] = json!("true");
        client["attributes"]["backchannel.logout.revoke.offline.tokens"] = json!("false");
        let path = format!("/clients/{id}");
        self.admin(Method::PUT, &path, Some(client))
            .await
            .map(|_| ())
    }

    /// The gateway's client: Keycloak's id for it and its representation.
    async fn client(&self) -> Result<(String, Value)> {
        let clients = self
            .admin(
                Method::GET,
                &format!("/clients?clientId={}", self.info.client_id),
                None,
            )
            .await?;
        let client = match clients.as_array().map(Vec::as_slice) {
            Some([client]) => client.clone(),
            _ => bail!(
                "expected one client {}, found {clients}",
                self.info.client_id
            ),
        };
        let id = client["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("client without an id"))?;
        Ok((id, client))
    }

    /// Configures the client's group-membership mapper to put `groups` into userinfo answers
    /// only, not into ID or access tokens: a provider whose ID tokens lack the groups (for the
    /// gateway's `groupsFrom: userinfo`).
    pub async fn groups_in_userinfo_only(&self) -> Result<()> {
        let (id, _) = self.client().await?;
        let path = format!("/clients/{id}/protocol-mappers/models");
        let mappers = self.admin(Method::GET, &path, None).await?;
        let mut mapper = mappers
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["name"] == "groups")
            .cloned()
            .ok_or_else(|| anyhow!("no groups mapper in {mappers}"))?;
        let mapper_id = mapper["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("a mapper without an id"))?;
        mapper["config"]["id.token.claim"] = json!("false");
        mapper["config"]["access.token.claim"] = json!("false");
        mapper["config"]["userinfo.token.claim"] = json!("true");
        self.admin(Method::PUT, &format!("{path}/{mapper_id}"), Some(mapper))
            .await
            .map(|_| ())
    }

    /// The claims Keycloak would put into `kind` (`id-token` or `userinfo`) for the user named
    /// `name` now: the admin API's example, made with the client's real mappers.
    pub async fn example_claims(&self, kind: &str, name: &str) -> Result<Value> {
        let (id, _) = self.client().await?;
        let user = self.user_id(name).await?;
        let path = format!(
            "/clients/{id}/evaluate-scopes/generate-example-{kind}?scope=openid&userId={user}"
        );
        self.admin(Method::GET, &path, None).await
    }

    /// Ends every login session of the user at Keycloak (the admin console's "Sign out"):
    /// its refresh tokens stop working, and the next login asks for the password.
    pub async fn logout_user(&self, name: &str) -> Result<()> {
        let user = self.user_id(name).await?;
        let path = format!("/users/{user}/logout");
        self.admin(Method::POST, &path, None).await.map(|_| ())
    }

    /// Redeems `refresh_token` at the token endpoint as the gateway's client would (a copy
    /// of the token used elsewhere); returns the new refresh token.
    pub async fn refresh(&self, refresh_token: &str) -> Result<String> {
        let url = format!("{}/protocol/openid-connect/token", self.info.issuer);
        let secret = std::fs::read_to_string(&self.info.client_secret_file)
            .context("reading the client secret")?;
        let form = [
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ];
        let response = self
            .http
            .post(&url)
            .basic_auth(&self.info.client_id, Some(secret.trim()))
            .form(&form)
            .send()
            .await;
        let body: Value = expect_success(response.with_context(|| format!("POST {url}"))?)
            .await?
            .json()
            .await
            .context("parsing the token response")?;
        body["refresh_token"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("no refresh_token in the token response"))
    }

    /// The end of Keycloak's log, for failure messages.
    pub fn log_tail(&self) -> String {
        self.process.log_tail()
    }
}

/// `JAVA_OPTS_APPEND`: Keycloak's temporary files and transaction log under `dir`, not in
/// the tools cache.
/// The JVM's options: its temporary and transaction directories under `dir`, and, with
/// `loopback_names`, a hosts file (`jdk.net.hosts.file`: the JVM then resolves names from
/// it alone) sending them and `localhost` to 127.0.0.1.
fn java_options(dir: &Path, loopback_names: &[&str]) -> Result<String> {
    let tmp = dir.join("tmp");
    let transactions = dir.join("transaction-logs");
    for d in [&tmp, &transactions] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let text = |p: &Path| {
        p.to_str()
            .filter(|s| !s.contains(char::is_whitespace))
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("{} cannot go into JAVA_OPTS", p.display()))
    };
    let mut options = format!(
        "-Djava.io.tmpdir={} -Dquarkus.transaction-manager.object-store.directory={}",
        text(&tmp)?,
        text(&transactions)?
    );
    if !loopback_names.is_empty() {
        let hosts = dir.join("hosts");
        let names = loopback_names.join(" ");
        std::fs::write(&hosts, format!("127.0.0.1 localhost {names}\n"))
            .with_context(|| format!("writing {}", hosts.display()))?;
        options.push_str(&format!(" -Djdk.net.hosts.file={}", text(&hosts)?));
    }
    Ok(options)
}

/// The realm: refresh tokens rotated, groups, users with passwords and group memberships,
/// and the gateway's
/// confidential client (PKCE S256 required) with a mapper putting the user's group names
/// (not paths) into the `groups` claim of ID tokens, access tokens and userinfo. For each
/// gateway redirect URI (`…/.portcullis/callback`) the client accepts that gateway's
/// `…/.portcullis/logged-out` as a post-logout redirect URI, exactly (RP-initiated logout).
fn realm(info: &KeycloakInfo, secret: &str, redirect_uris: &[String]) -> Value {
    let mut uris = vec![dex::HARNESS_REDIRECT_URI.to_owned()];
    uris.extend(redirect_uris.iter().cloned());
    let logged_out: Vec<String> = redirect_uris
        .iter()
        .filter_map(|uri| uri.strip_suffix("/.portcullis/callback"))
        .map(|origin| format!("{origin}/.portcullis/logged-out"))
        .collect();
    let mut groups: Vec<&str> = info
        .users
        .iter()
        .flat_map(|u| u.groups.iter().map(String::as_str))
        .collect();
    groups.sort_unstable();
    groups.dedup();
    let users: Vec<Value> = info.users.iter().map(user).collect();
    json!({
        "realm": REALM,
        "enabled": true,
        // Refresh-token rotation with reuse detection: every refresh returns a new refresh
        // token and the one redeemed is dead (a client that kept using it would be refused).
        "revokeRefreshToken": true,
        "refreshTokenMaxReuse": 0,
        "groups": groups.iter().map(|g| json!({ "name": g })).collect::<Vec<_>>(),
        "users": users,
        "clients": [{
            "clientId": info.client_id,
            "enabled": true,
            "publicClient": false,
            "clientAuthenticatorType": "client-secret",
            "secret": secret,
            "standardFlowEnabled": true,
            "directAccessGrantsEnabled": false,
            "redirectUris": uris,
            "attributes": {
                "pkce.code.challenge.method": "S256",
                "post.logout.redirect.uris": logged_out.join("##"),
            },
            "protocolMappers": [{
                "name": "groups",
                "protocol": "openid-connect",
                "protocolMapper": "oidc-group-membership-mapper",
                "config": {
                    "claim.name": "groups",
                    "full.path": "false",
                    "id.token.claim": "true",
                    "access.token.claim": "true",
                    "userinfo.token.claim": "true",
                },
            }],
        }],
    })
}

fn user(u: &KeycloakUser) -> Value {
    // Keycloak's user profile requires first and last names; without them the first login
    // stops at an "update your account" page.
    json!({
        "username": u.username,
        "email": u.email,
        "emailVerified": true,
        "enabled": true,
        "firstName": u.username,
        "lastName": "Example",
        "groups": u.groups.iter().map(|g| format!("/{g}")).collect::<Vec<_>>(),
        "credentials": [{ "type": "password", "value": u.password, "temporary": false }],
    })
}

async fn expect_success(response: reqwest::Response) -> Result<reqwest::Response> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body = response.text().await.unwrap_or_default();
    bail!("{status}: {}", excerpt(&body))
}

/// Where [`follow`] stopped.
#[derive(Debug)]
pub enum Landing {
    /// A redirect to a URL the caller's `stop` accepted (not fetched).
    Stopped(Url),
    /// Keycloak's password form, shown at `page`; it posts to `action`.
    PasswordForm { page: Url, action: Url },
}

/// Follows redirects from `start` until one points where `stop` says, or a page is Keycloak's
/// password form. Any other page is an error.
pub async fn follow(
    browser: &reqwest::Client,
    start: Url,
    stop: impl Fn(&Url) -> bool,
) -> Result<Landing> {
    let mut url = start;
    for _ in 0..20 {
        let response = browser.get(url.clone()).send().await;
        match step(&url, response.with_context(|| format!("GET {url}"))?, &stop).await? {
            Step::Next(next) => url = next,
            Step::Landed(landing) => return Ok(landing),
        }
    }
    bail!("no stop within 20 redirects")
}

/// Posts the user's credentials to Keycloak's password form and follows the redirects until
/// `stop`. Keycloak answering with the form again (wrong password) is an error.
pub async fn submit_password(
    browser: &reqwest::Client,
    action: Url,
    user: &KeycloakUser,
    stop: impl Fn(&Url) -> bool,
) -> Result<Url> {
    let form = [
        ("username", user.username.as_str()),
        ("password", user.password.as_str()),
        ("credentialId", ""),
    ];
    let response = browser.post(action.clone()).form(&form).send().await;
    let response = response.with_context(|| format!("POST {action}"))?;
    let next = match step(&action, response, &stop).await? {
        Step::Landed(Landing::Stopped(url)) => return Ok(url),
        Step::Landed(Landing::PasswordForm { .. }) => {
            bail!("Keycloak rejected the credentials of {}", user.username)
        }
        Step::Next(next) => next,
    };
    match follow(browser, next, stop).await? {
        Landing::Stopped(url) => Ok(url),
        Landing::PasswordForm { page, .. } => {
            bail!("Keycloak asked for a password again at {page}")
        }
    }
}

/// [`follow`], answering the password form (if Keycloak shows it) as `user`.
pub async fn follow_login(
    browser: &reqwest::Client,
    start: Url,
    user: &KeycloakUser,
    stop: impl Fn(&Url) -> bool,
) -> Result<Url> {
    match follow(browser, start, &stop).await? {
        Landing::Stopped(url) => Ok(url),
        Landing::PasswordForm { action, .. } => submit_password(browser, action, user, &stop).await,
    }
}

enum Step {
    Next(Url),
    Landed(Landing),
}

async fn step(
    url: &Url,
    response: reqwest::Response,
    stop: &impl Fn(&Url) -> bool,
) -> Result<Step> {
    let status = response.status();
    if let Some(target) = redirect_target(url, &response)? {
        return Ok(if stop(&target) {
            Step::Landed(Landing::Stopped(target))
        } else {
            Step::Next(target)
        });
    }
    let body = response.text().await.context("reading a login page")?;
    if status == StatusCode::OK
        && let Some(action) = find_password_form(&body)
    {
        let action = url.join(&action).context("resolving the form action")?;
        return Ok(Step::Landed(Landing::PasswordForm {
            page: url.clone(),
            action,
        }));
    }
    bail!("unexpected page at {url} ({status}): {}", excerpt(&body))
}

/// The `action` of Keycloak's login form (`<form id="kc-form-login" … action="…">` with a
/// `password` input), HTML-unescaped.
fn find_password_form(html: &str) -> Option<String> {
    let form = html.find("id=\"kc-form-login\"")?;
    let start = html[..form].rfind("<form")?;
    let rest = &html[start..];
    let end = rest.find("</form>")?;
    let form = &rest[..end];
    if !form.contains("name=\"password\"") {
        return None;
    }
    let from = form.find("action=\"")? + "action=\"".len();
    let to = form[from..].find('"')?;
    Some(unescape(&form[from..from + to]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_password_form_action() {
        let html = r#"<form id="kc-select-language"></form>
            <form id="kc-form-login" onsubmit="x" action="https://kc/realms/r/login-actions/authenticate?session_code=a&amp;tab_id=b" method="post">
            <input name="username"><input name="password" type="password"></form>"#;
        assert_eq!(
            find_password_form(html).as_deref(),
            Some("https://kc/realms/r/login-actions/authenticate?session_code=a&tab_id=b")
        );
        let no_password = r#"<form id="kc-form-login" action="/x"><input name="otp"></form>"#;
        assert_eq!(find_password_form(no_password), None);
        assert_eq!(find_password_form("<form action=\"/x\"></form>"), None);
    }

    #[test]
    fn the_realm_has_every_group_once_and_the_mapper() {
        let info = KeycloakInfo {
            issuer: "https://127.0.0.1:1/realms/portcullis".into(),
            origin: "https://127.0.0.1:1".into(),
            client_id: CLIENT_ID.into(),
            client_secret_file: PathBuf::new(),
            ca_file: PathBuf::new(),
            users: default_users(),
        };
        let realm = realm(
            &info,
            "s",
            &[
                "https://auth.test:1/cb".into(),
                "https://auth.test:2/.portcullis/callback".into(),
            ],
        );
        assert_eq!(realm["groups"].as_array().map(Vec::len), Some(3));
        assert_eq!(
            realm["users"][0]["groups"],
            json!(["/engineering", "/admins"])
        );
        let client = &realm["clients"][0];
        assert_eq!(client["redirectUris"][1], "https://auth.test:1/cb");
        assert_eq!(client["protocolMappers"][0]["config"]["full.path"], "false");
        assert_eq!(
            client["attributes"]["post.logout.redirect.uris"],
            "https://auth.test:2/.portcullis/logged-out"
        );
    }
}
