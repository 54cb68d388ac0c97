//! Keys changed under a running gateway, the way the kubelet changes a mounted Secret (every
//! file of the volume at once, by swapping a `..data` link), against the real
//! `portcullis-gateway` process and the real Dex: a signing-key rotation logs nobody out, new
//! tokens are signed with the new key and the JWKS lists both; a refresh token sealed with the
//! old session key is still redeemed (and sealed again with the new one); a key file that does
//! not load keeps the keys in force and is counted; a new client secret is used by the next
//! login.

use anyhow::{Context as _, Result, ensure};
use base64::Engine as _;
use portcullis_core::token::KeySet;
use portcullis_crds::AccessSession;
use portcullis_gateway::sessions::seal::SessionKey;
use portcullis_tests::{
    dex::{self, Connector},
    gateway::{DexServer, GatewayProcess, SessionRecords, start_recording},
    upstream,
};
use reqwest::Url;
use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

const AUTH: &str = "auth.portcullis.test";
const APP: &str = "app.portcullis.test";
const OTHER: &str = "other.portcullis.test";

fn manifests(upstream: &str) -> String {
    portcullis_tests::fixtures::email_domain_policies(upstream, &[("app", APP), ("other", OTHER)])
}

/// A directory of key files mounted the way the kubelet mounts a Secret: each name is a link
/// into `..data`, itself a link to the current version's directory.
struct MountedKeys {
    dir: PathBuf,
    version: u32,
}

/// What the mounted Secret holds.
#[derive(Clone)]
struct Keys {
    signing: String,
    next_signing: String,
    previous_signing: String,
    session: Vec<u8>,
    previous_session: Vec<u8>,
    client_secret: String,
}

impl MountedKeys {
    const NAMES: [&str; 6] = [
        "signing-key.pem",
        "next-signing-key.pem",
        "previous-signing-key.pem",
        "session-key",
        "previous-session-key",
        "client-secret",
    ];

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Writes `keys` as a new version and swaps `..data` to it in one rename.
    fn publish(&mut self, keys: &Keys) -> Result<()> {
        use std::os::unix::fs::symlink;
        self.version += 1;
        let version = format!("..v{}", self.version);
        let data = self.dir.join(&version);
        std::fs::create_dir_all(&data)?;
        let contents: [&[u8]; 6] = [
            keys.signing.as_bytes(),
            keys.next_signing.as_bytes(),
            keys.previous_signing.as_bytes(),
            &keys.session,
            &keys.previous_session,
            keys.client_secret.as_bytes(),
        ];
        for (name, content) in Self::NAMES.iter().zip(contents) {
            std::fs::write(data.join(name), content)?;
        }
        let staged = self.dir.join("..data_tmp");
        let _ = std::fs::remove_file(&staged);
        symlink(&version, &staged)?;
        std::fs::rename(&staged, self.dir.join("..data"))?;
        for name in Self::NAMES {
            if std::fs::symlink_metadata(self.path(name)).is_err() {
                symlink(format!("..data/{name}"), self.path(name))?;
            }
        }
        Ok(())
    }
}

fn signing_pem() -> Result<String> {
    Ok(rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?.serialize_pem())
}

fn kid(pem: &str) -> Result<String> {
    Ok(KeySet::from_pems(pem.as_bytes(), None, &[])?
        .current_kid()
        .to_owned())
}

fn session_key() -> Vec<u8> {
    let mut key = [0u8; 32];
    rand::Rng::fill(&mut rand::rng(), &mut key);
    base64::engine::general_purpose::STANDARD
        .encode(key)
        .into_bytes()
}

fn session_key_id(content: &[u8]) -> Result<String> {
    Ok(SessionKey::from_file_content(content)?.id().to_owned())
}

/// The gateway (following `mounted`, every second) with its own Dex.
async fn start(dir: &Path, mounted: &mut MountedKeys, keys: &mut Keys) -> Result<GatewayRun> {
    let echo = upstream::echo().await?;
    let store = dir.join("sessions.json");
    let records = SessionRecords::Local {
        file: store.clone(),
    };
    let mut setup_error = None;
    let (gateway, dex) = start_recording(
        env!("CARGO_BIN_EXE_portcullis-gateway").as_ref(),
        dir,
        &records,
        (AUTH, &[APP, OTHER]),
        &manifests(&echo.to_string()),
        |config| {
            // Dex has started and written its client secret: the mounted Secret holds it.
            let secret = std::fs::read_to_string(dir.join("dex").join("dex-client-secret"));
            match secret {
                Ok(secret) => keys.client_secret = secret.trim().to_owned(),
                Err(error) => setup_error = Some(anyhow::Error::from(error)),
            }
            if let Err(error) = mounted.publish(keys) {
                setup_error = Some(error);
            }
            let file = |name: &str| mounted.path(name).display().to_string();
            config.env.extend(
                [
                    ("PORTCULLIS_SIGNING_KEY_FILE", file("signing-key.pem")),
                    (
                        "PORTCULLIS_NEXT_SIGNING_KEY_FILE",
                        file("next-signing-key.pem"),
                    ),
                    (
                        "PORTCULLIS_PREVIOUS_SIGNING_KEY_FILES",
                        file("previous-signing-key.pem"),
                    ),
                    ("PORTCULLIS_SESSION_KEY_FILE", file("session-key")),
                    (
                        "PORTCULLIS_PREVIOUS_SESSION_KEY_FILES",
                        file("previous-session-key"),
                    ),
                    ("PORTCULLIS_KEY_RELOAD_INTERVAL", "1s".to_owned()),
                ]
                .map(|(k, v)| (k.to_owned(), v)),
            );
            config
                .idp_options
                .insert("refreshInterval".into(), "2s".into());
            config
                .idp_options
                .insert("clientSecretFile".into(), file("client-secret").into());
        },
    )
    .await?;
    if let Some(error) = setup_error {
        return Err(error);
    }
    Ok(GatewayRun {
        gateway,
        dex,
        store,
    })
}

struct GatewayRun {
    gateway: GatewayProcess,
    dex: DexServer,
    store: PathBuf,
}

impl GatewayRun {
    fn url(&self, host: &str) -> Result<Url> {
        Ok(Url::parse(&format!("{}/", self.gateway.origin(host)))?)
    }

    /// Logs alice in on `host` in `browser` (by single sign-on when it has a session).
    async fn login(&self, browser: &reqwest::Client, host: &str) -> Result<()> {
        let user = self.dex.info.user("alice")?.clone();
        dex::follow_login(browser, self.url(host)?, &user, Connector::Password, |u| {
            u.host_str() == Some(host) && u.path() == "/"
        })
        .await
        .map(|_| ())
    }

    /// The status an API request of `browser` gets from `host`.
    async fn status(&self, browser: &reqwest::Client, host: &str) -> Result<u16> {
        let response = browser
            .get(self.url(host)?)
            .header("accept", "application/json")
            .send()
            .await?;
        Ok(response.status().as_u16())
    }

    async fn jwks_kids(&self) -> Result<Vec<String>> {
        let browser = self.gateway.browser()?;
        let jwks: serde_json::Value = browser
            .get(format!(
                "{}/.well-known/jwks.json",
                self.gateway.origin(AUTH)
            ))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let mut kids: Vec<String> = jwks["keys"]
            .as_array()
            .context("no keys in the JWKS")?
            .iter()
            .filter_map(|k| k["kid"].as_str().map(str::to_owned))
            .collect();
        kids.sort();
        Ok(kids)
    }

    /// The value of one sample on `/metrics` (0 when absent).
    async fn metric(&self, sample: &str) -> Result<f64> {
        let text = reqwest::get(format!("http://{}/metrics", self.gateway.ops_addr))
            .await?
            .error_for_status()?
            .text()
            .await?;
        Ok(text
            .lines()
            .find_map(|line| line.strip_prefix(sample)?.trim().parse().ok())
            .unwrap_or(0.0))
    }

    /// Waits (up to 15 s) until `sample` reaches `value`.
    async fn metric_reaches(&self, sample: &str, value: f64) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let now = self.metric(sample).await?;
            if now >= value {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "{sample} is {now}, not {value}, after 15 s\n{}",
                self.gateway.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn session(&self) -> Result<AccessSession> {
        let all: Vec<AccessSession> = serde_json::from_slice(&std::fs::read(&self.store)?)?;
        ensure!(all.len() == 1, "expected one session, found {}", all.len());
        Ok(all[0].clone())
    }

    fn sealed_token(&self) -> Result<String> {
        self.session()?
            .status
            .and_then(|s| s.refresh)
            .and_then(|r| r.sealed_token)
            .context("no sealed refresh token")
    }
}

/// The key id in the header of the app token `jar` holds for `host`.
fn app_token_kid(jar: &reqwest::cookie::Jar, host: &str) -> Result<String> {
    use reqwest::cookie::CookieStore as _;
    let url = Url::parse(&format!("https://{host}/"))?;
    let cookies = jar.cookies(&url).context("no cookies")?;
    for cookie in cookies.to_str()?.split("; ") {
        let Some((_, value)) = cookie.split_once('=') else {
            continue;
        };
        let Ok(header) = jsonwebtoken::decode_header(value) else {
            continue;
        };
        if header.typ.as_deref() == Some("portcullis-app+jwt") {
            return header.kid.context("an app token without kid");
        }
    }
    anyhow::bail!("no app token for {host} in {cookies:?}")
}

fn sorted(kids: &[&str]) -> Vec<String> {
    let mut kids: Vec<String> = kids.iter().map(|k| (*k).to_owned()).collect();
    kids.sort();
    kids
}

const SIGNING_OK: &str = r#"portcullis_gateway_key_reloads_total{kind="signing",result="success"}"#;
const SIGNING_FAILED: &str =
    r#"portcullis_gateway_key_reloads_total{kind="signing",result="failure"}"#;
const SIGNING_REJECTED: &str = r#"portcullis_gateway_key_files_rejected{kind="signing"}"#;
const SESSION_OK: &str = r#"portcullis_gateway_key_reloads_total{kind="session",result="success"}"#;
const SECRET_OK: &str =
    r#"portcullis_gateway_key_reloads_total{kind="client_secret",result="success"}"#;

#[tokio::test]
async fn keys_rotated_under_a_running_gateway_log_nobody_out() -> Result<()> {
    let dir = portcullis_tests::fsutil::scratch_dir("key-rotation", "rotate")?;
    let (a, b, c) = (signing_pem()?, signing_pem()?, signing_pem()?);
    let (first_session, second_session) = (session_key(), session_key());
    let mut keys = Keys {
        signing: a.clone(),
        next_signing: b.clone(),
        previous_signing: String::new(),
        session: first_session.clone(),
        previous_session: Vec::new(),
        client_secret: String::new(),
    };
    let mut mounted = MountedKeys {
        dir: dir.join("keys"),
        version: 0,
    };
    let run = start(&dir, &mut mounted, &mut keys).await?;
    let jar = Arc::new(reqwest::cookie::Jar::default());
    let browser = run.gateway.browser_with_jar(jar.clone())?;
    run.login(&browser, APP).await?;
    ensure!(run.status(&browser, APP).await? == 200);
    ensure!(app_token_kid(&jar, APP)? == kid(&a)?);
    ensure!(run.jwks_kids().await? == sorted(&[&kid(&a)?, &kid(&b)?]));
    let sealed = run.sealed_token()?;
    let old_session_id = session_key_id(&first_session)?;
    ensure!(
        sealed.starts_with(&format!("v1.{old_session_id}.")),
        "{sealed}"
    );

    // The rotation, in one swap: current → previous, next → current, a new next; the same for
    // the session key.
    keys.previous_signing = a.clone();
    keys.signing = b.clone();
    keys.next_signing = c.clone();
    keys.previous_session = first_session.clone();
    keys.session = second_session.clone();
    mounted.publish(&keys)?;
    run.metric_reaches(SIGNING_OK, 1.0).await?;
    run.metric_reaches(SESSION_OK, 1.0).await?;
    let rotated = sorted(&[&kid(&a)?, &kid(&b)?, &kid(&c)?]);
    ensure!(run.jwks_kids().await? == rotated, "the JWKS after rotation");

    // The token signed with the key now previous still works; the SSO session (signed with it
    // too) carries alice to another app, whose new token is signed with the new key.
    ensure!(
        run.status(&browser, APP).await? == 200,
        "logged out by the rotation"
    );
    ensure!(
        app_token_kid(&jar, APP)? == kid(&a)?,
        "the old token was replaced"
    );
    run.login(&browser, OTHER).await?;
    ensure!(run.status(&browser, OTHER).await? == 200);
    ensure!(
        app_token_kid(&jar, OTHER)? == kid(&b)?,
        "not signed with the new key"
    );

    // The refresh token sealed with the old session key is redeemed, and stored sealed with
    // the new key (confirmations run every 2 s while the session is active).
    let new_session_id = session_key_id(&second_session)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        ensure!(run.status(&browser, APP).await? == 200);
        let session = run.session()?;
        let refresh = session.status.and_then(|s| s.refresh).unwrap_or_default();
        ensure!(!session.spec.revoked, "revoked: {:?}", refresh.last_error);
        if refresh
            .sealed_token
            .as_deref()
            .is_some_and(|t| t.starts_with(&format!("v1.{new_session_id}.")))
        {
            ensure!(refresh.failing_since.is_none(), "{refresh:?}");
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the session was not confirmed with the new key within 30 s: {refresh:?}\n{}",
            run.gateway.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // Garbage in the current key file: every key in force stays, the failure is counted, and
    // the files are flagged until a good change lands.
    let good = keys.clone();
    keys.signing = "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n".into();
    mounted.publish(&keys)?;
    run.metric_reaches(SIGNING_FAILED, 1.0).await?;
    ensure!(run.metric(SIGNING_REJECTED).await? == 1.0);
    ensure!(
        run.jwks_kids().await? == rotated,
        "garbage changed the JWKS"
    );
    ensure!(run.status(&browser, APP).await? == 200);
    ensure!(run.status(&browser, OTHER).await? == 200);
    ensure!(
        !run.gateway.log_tail().contains("not a key"),
        "the log shows key material"
    );
    mounted.publish(&good)?;
    run.metric_reaches(SIGNING_OK, 2.0).await?;
    ensure!(run.metric(SIGNING_REJECTED).await? == 0.0);

    // A new client secret is used by the next login: a wrong one fails it, the right one
    // (put back) makes it work again, without a restart.
    let mut wrong = good.clone();
    wrong.client_secret = dex::random_token();
    mounted.publish(&wrong)?;
    run.metric_reaches(SECRET_OK, 1.0).await?;
    let refused = run.login(&run.gateway.browser()?, APP).await;
    let refused = refused
        .err()
        .context("a login with a wrong client secret worked")?;
    ensure!(
        format!("{refused:#}").contains("/.portcullis/callback")
            && run.gateway.log_tail().contains("invalid_client"),
        "the login did not fail at the code exchange: {refused:#}"
    );
    mounted.publish(&good)?;
    run.metric_reaches(SECRET_OK, 2.0).await?;
    run.login(&run.gateway.browser()?, APP)
        .await
        .with_context(|| run.gateway.log_tail())?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
