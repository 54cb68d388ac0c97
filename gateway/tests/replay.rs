//! Single use of a login's `state` and of hand-off tickets, through two real gateway replicas
//! recording sessions in the real API server, logging in through the real Dex: a ticket
//! redeemed on one replica is refused by the other (both ways, for a first login and for single
//! sign-on), and a login state used once is refused with a kept copy of its cookie before the
//! identity provider is asked again.

use anyhow::{Context as _, Result, ensure};
use kube::{Api, Client};
use portcullis_crds::AccessSession;
use portcullis_tests::{
    cluster::TestCluster,
    dex::{self, Connector},
    gateway::{GatewayProcess, SessionRecords, start_recording},
    upstream,
};
use reqwest::{StatusCode, Url, cookie::CookieStore as _, header};
use std::sync::Arc;

const AUTH: &str = "auth.portcullis.test";
const APP: &str = "one.portcullis.test";
const APP2: &str = "two.portcullis.test";

fn manifests(upstream: &str) -> String {
    portcullis_tests::fixtures::email_domain_policies(upstream, &[("one", APP), ("two", APP2)])
}

/// `url` with its port replaced by `gateway`'s own, to reach that replica directly.
fn on(gateway: &GatewayProcess, url: &Url) -> Result<Url> {
    let mut direct = url.clone();
    direct
        .set_port(Some(gateway.addr.port()))
        .map_err(|()| anyhow::anyhow!("cannot set the port of {url}"))?;
    Ok(direct)
}

/// Asserts that `response` is the refusal `code` (a 400), and that it set no app cookie.
async fn refused(response: reqwest::Response, code: &str, what: &str) -> Result<()> {
    let status = response.status();
    let cookies: Vec<String> = response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect();
    let body = response.text().await?;
    ensure!(
        status == StatusCode::BAD_REQUEST && body.contains(code),
        "{what}: expected 400 {code}, got {status} {body}"
    );
    ensure!(
        !cookies
            .iter()
            .any(|c| c.starts_with("__Host-portcullis-app-")),
        "{what}: an app cookie was set: {cookies:?}"
    );
    Ok(())
}

#[tokio::test]
async fn login_states_and_handoff_tickets_are_single_use_across_replicas() -> Result<()> {
    let cluster = TestCluster::shared().await;
    let kubeconfig = cluster.info().kubeconfig.clone();
    cluster
        .with_temp_ns("replay", |client: Client, ns: String| async move {
            scenario(
                client,
                SessionRecords::Cluster {
                    kubeconfig,
                    namespace: ns,
                },
            )
            .await
        })
        .await
}

async fn scenario(client: Client, records: SessionRecords) -> Result<()> {
    let SessionRecords::Cluster { namespace, .. } = &records else {
        anyhow::bail!("a cluster scenario");
    };
    let sessions: Api<AccessSession> = Api::namespaced(client, namespace);
    let dir = portcullis_tests::fsutil::scratch_dir("replay", "replicas")?;
    let binary = env!("CARGO_BIN_EXE_portcullis-gateway");
    let echo = upstream::echo().await?;
    let (first, dex) = start_recording(
        binary.as_ref(),
        &dir,
        &records,
        (AUTH, &[APP, APP2]),
        &manifests(&echo.to_string()),
        |_| {},
    )
    .await?;
    let second = first.start_replica(binary.as_ref()).await?;
    let jar = Arc::new(reqwest::cookie::Jar::default());
    // Through the public port (the first replica), and the second replica directly.
    let browser = first.browser_with_jar(jar.clone())?;
    let at_second = second.direct_browser_with_jar(jar.clone())?;
    let user = dex.info.user("alice")?.clone();
    let logs = || format!("{}\n{}", first.log_tail(), second.log_tail());

    // A login, up to the identity provider's callback; the browser's cookies kept aside.
    let app = Url::parse(&format!("{}/", first.origin(APP)))?;
    let callback = dex::follow_login(&browser, app, &user, Connector::Password, |u| {
        u.path() == "/.portcullis/callback"
    })
    .await
    .with_context(logs)?;
    let auth = Url::parse(&first.origin(AUTH))?;
    let kept = jar
        .cookies(&auth)
        .context("no login cookie")?
        .to_str()?
        .to_owned();
    let done = browser.get(callback.clone()).send().await?;
    ensure!(
        done.status() == StatusCode::FOUND,
        "callback: {}\n{}",
        done.status(),
        logs()
    );
    let handoff = Url::parse(done.headers()[header::LOCATION].to_str()?)?;
    ensure!(handoff.path() == "/.portcullis/handoff", "{handoff}");

    // The same state with the kept cookie, on the replica that took it: refused before the
    // identity provider is asked.
    let stranger = dex::http_client_builder(&first.files.ca_file)?
        .resolve(AUTH, first.addr)
        .build()?;
    let again = stranger
        .get(callback.clone())
        .header(header::COOKIE, &kept)
        .send()
        .await?;
    refused(again, "login_used", "the state again").await?;

    // The ticket, redeemed on the second replica, is refused by the first (and the second).
    let redeemed = at_second.get(on(&second, &handoff)?).send().await?;
    ensure!(
        redeemed.status() == StatusCode::FOUND,
        "hand-off on the second replica: {} {}",
        redeemed.status(),
        logs()
    );
    refused(
        browser.get(handoff.clone()).send().await?,
        "ticket_used",
        "replay on the first",
    )
    .await?;
    refused(
        at_second.get(on(&second, &handoff)?).send().await?,
        "ticket_used",
        "replay on the second",
    )
    .await?;

    // Single sign-on to the second app: a ticket redeemed on the first replica is refused by
    // the second.
    let app2 = Url::parse(&format!("{}/", first.origin(APP2)))?;
    let sso = dex::follow_login(&browser, app2, &user, Connector::Password, |u| {
        u.path() == "/.portcullis/handoff"
    })
    .await
    .with_context(logs)?;
    let redeemed = browser.get(sso.clone()).send().await?;
    ensure!(
        redeemed.status() == StatusCode::FOUND,
        "SSO hand-off: {}",
        redeemed.status()
    );
    refused(
        at_second.get(on(&second, &sso)?).send().await?,
        "ticket_used",
        "SSO replay on the second",
    )
    .await?;

    // The session records both redemptions (which is how every replica knows).
    let session = sessions.list(&Default::default()).await?.items;
    ensure!(session.len() == 1, "{} sessions", session.len());
    let annotations = session[0].metadata.annotations.clone().unwrap_or_default();
    let tickets = annotations
        .keys()
        .filter(|k| k.starts_with("handoff.access.portcullis.dev/"))
        .count();
    ensure!(tickets == 2, "redeemed tickets recorded: {annotations:?}");

    // Both apps work in the browser that logged in.
    for host in [APP, APP2] {
        let page = browser
            .get(format!("{}/", first.origin(host)))
            .send()
            .await?;
        ensure!(page.status() == StatusCode::OK, "{host}: {}", page.status());
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
