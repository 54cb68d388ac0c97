//! Provider specifics, against a provider this test serves (`providers/idp.rs`): extra
//! authorization parameters and how a forced re-login's `prompt=login` joins them, groups
//! read from the userinfo endpoint at login and at refresh, Entra ID's groups overage refusing
//! the login, `requireAuthTime` checked against discovery's `claims_supported`, and a `claim`
//! selector on Google Workspace's `hd` that an email domain alone does not satisfy. Keycloak's
//! real userinfo-only groups are in `keycloak.rs`.

#[path = "providers/idp.rs"]
mod idp;

use anyhow::{Context as _, Result, ensure};
use idp::{CLIENT, Discovery, Idp};
use portcullis_core::{
    Identity,
    policy::{Decision, Policy, PolicyMeta, RequestFacts},
};
use portcullis_gateway::{
    clock::now,
    config::IdpFile,
    idp::{OidcError, Provider, Providers, RefreshError, VerifiedLogin},
};
use serde_json::{Value, json};
use std::{collections::HashMap, sync::Arc};

/// The providers of a file with `entry` (name `corp`, this provider's issuer and client
/// filled in) as its one provider.
fn providers(idp: &Idp, mut entry: Value) -> Result<Providers> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let secret = std::env::temp_dir().join(format!("portcullis-providers-{}", std::process::id()));
    std::fs::write(&secret, "secret")?;
    entry["name"] = json!("corp");
    entry["issuer"] = json!(idp.issuer);
    entry["clientId"] = json!(CLIENT);
    entry["clientSecretFile"] = json!(secret);
    let file: IdpFile = serde_json::from_value(json!({ "identityProviders": [entry] }))?;
    let redirect = "https://auth.portcullis.test/.portcullis/callback";
    Ok(Providers::new(
        file.identity_providers,
        redirect,
        reqwest::Client::new(),
    )?)
}

fn corp(providers: &Providers) -> Result<Arc<Provider>> {
    Ok(providers.get("corp")?.clone())
}

/// A login whose ID token has `claims` and whose userinfo answer is `userinfo`.
async fn log_in(
    idp: &Idp,
    provider: &Provider,
    claims: Value,
    userinfo: Value,
) -> Result<VerifiedLogin, OidcError> {
    let request = provider.authorize(false).await?;
    {
        let mut answers = idp.answers();
        answers.id_claims = claims;
        answers.nonce = Some(request.nonce.clone());
        answers.userinfo = userinfo;
    }
    provider
        .complete("code", &request.pkce_verifier, &request.nonce, None, now())
        .await
}

/// The query of an authorization request, each name with all its values.
async fn query(provider: &Provider, force_login: bool) -> Result<HashMap<String, Vec<String>>> {
    let request = provider.authorize(force_login).await?;
    let mut query: HashMap<String, Vec<String>> = HashMap::new();
    for (name, value) in request.url.query_pairs() {
        query
            .entry(name.into_owned())
            .or_default()
            .push(value.into_owned());
    }
    Ok(query)
}

#[tokio::test]
async fn authorization_params_reach_the_provider_and_a_forced_login_joins_prompt() -> Result<()> {
    let idp = Idp::start(Discovery::default()).await;
    let google = json!({ "authorizationParams":
        { "access_type": "offline", "prompt": "consent", "hd": "example.com" } });
    let provider = corp(&providers(&idp, google)?)?;
    let plain = query(&provider, false).await?;
    ensure!(plain["access_type"] == ["offline"], "{plain:?}");
    ensure!(plain["hd"] == ["example.com"], "{plain:?}");
    ensure!(plain["prompt"] == ["consent"], "{plain:?}");
    ensure!(!plain.contains_key("max_age"), "{plain:?}");
    let forced = query(&provider, true).await?;
    ensure!(forced["prompt"] == ["consent login"], "{forced:?}");
    ensure!(forced["max_age"] == ["0"], "{forced:?}");
    for owned in [
        "state",
        "nonce",
        "code_challenge",
        "redirect_uri",
        "client_id",
        "scope",
    ] {
        ensure!(forced[owned].len() == 1, "{owned} in {forced:?}");
    }
    // Without authorizationParams: the forced login alone.
    let provider = corp(&providers(&idp, json!({}))?)?;
    ensure!(!query(&provider, false).await?.contains_key("prompt"));
    ensure!(query(&provider, true).await?["prompt"] == ["login"]);
    Ok(())
}

/// Google answers `prompt=login` with an error page and honours no `max_age`: with
/// `forcedLoginPrompt: select_account` a forced re-login asks for the account instead, and the
/// gateway refuses to start if `requireAuthTime` would then refuse every forced login.
#[tokio::test]
async fn google_forces_a_new_login_with_the_account_chooser() -> Result<()> {
    let idp = Idp::start(Discovery::default()).await;
    let google = json!({
        "authorizationParams": { "access_type": "offline", "prompt": "consent" },
        "forcedLoginPrompt": "select_account",
        "requireAuthTime": false,
    });
    let provider = corp(&providers(&idp, google.clone())?)?;
    ensure!(query(&provider, false).await?["prompt"] == ["consent"]);
    let forced = query(&provider, true).await?;
    ensure!(forced["prompt"] == ["consent select_account"], "{forced:?}");
    ensure!(!forced.contains_key("max_age"), "{forced:?}");

    let mut contradictory = google;
    contradictory["requireAuthTime"] = json!(true);
    let Err(error) = providers(&idp, contradictory) else {
        anyhow::bail!("select_account with requireAuthTime was accepted");
    };
    let message = format!("{error:#}");
    ensure!(message.contains("requireAuthTime: false"), "{message}");
    let Err(error) = providers(&idp, json!({ "forcedLoginPrompt": "none" })) else {
        anyhow::bail!("an unknown forcedLoginPrompt was accepted");
    };
    ensure!(
        format!("{error:#}").contains("forcedLoginPrompt")
            || format!("{error:#}").contains("unknown variant")
    );
    Ok(())
}

#[tokio::test]
async fn a_parameter_the_gateway_owns_is_refused_when_the_file_is_read() -> Result<()> {
    let idp = Idp::start(Discovery::default()).await;
    for (params, expected) in [
        (json!({ "state": "x" }), "\"state\" is set by the gateway"),
        (
            json!({ "redirect_uri": "https://evil.test/" }),
            "is set by the gateway",
        ),
        (json!({ "max_age": "3600" }), "is set by the gateway"),
        (json!({ "Nonce": "n" }), "is set by the gateway"),
        (json!({ "prompt": "none" }), "prompt \"none\" is not one of"),
    ] {
        let Err(error) = providers(&idp, json!({ "authorizationParams": params })) else {
            anyhow::bail!("{params} was accepted");
        };
        let message = format!("{error:#}");
        ensure!(message.contains("authorizationParams"), "{message}");
        ensure!(message.contains(expected), "{message}");
    }
    Ok(())
}

#[tokio::test]
async fn groups_from_userinfo_at_login_and_at_every_refresh() -> Result<()> {
    let idp = Idp::start(Discovery::default()).await;
    let provider = corp(&providers(&idp, json!({ "groupsFrom": "userinfo" }))?)?;
    let claims = json!({ "sub": "alice" });
    let login = log_in(
        &idp,
        &provider,
        claims,
        json!({ "sub": "alice", "groups": ["admins"] }),
    )
    .await?;
    ensure!(login.groups == ["admins"], "{login:?}");
    ensure!(idp.answers().userinfo_calls == 1);

    // A refresh reads them again, with the new access token.
    idp.answers().userinfo = json!({ "sub": "alice", "groups": ["staff"] });
    let refresh_token = login.refresh_token.context("no refresh token")?;
    let refreshed = provider
        .refresh(&refresh_token, "alice", None, now())
        .await?;
    let identity = refreshed.identity?.context("no refreshed identity")?;
    ensure!(identity.groups == ["staff"], "{identity:?}");
    ensure!(idp.answers().userinfo_calls == 2);

    // Userinfo about someone else is no statement about this user.
    let other = log_in(
        &idp,
        &provider,
        json!({ "sub": "alice" }),
        json!({ "sub": "mallory", "groups": ["admins"] }),
    )
    .await;
    ensure!(
        matches!(other, Err(OidcError::UserinfoSubject(_))),
        "{other:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_refresh_without_an_id_token_still_reads_userinfo_groups() -> Result<()> {
    let idp = Idp::start(Discovery::default()).await;
    let provider = corp(&providers(&idp, json!({ "groupsFrom": "userinfo" }))?)?;
    let login = log_in(
        &idp,
        &provider,
        json!({ "sub": "alice", "email": "alice@example.com", "email_verified": true }),
        json!({ "sub": "alice", "groups": ["admins", "staff"] }),
    )
    .await?;
    ensure!(login.groups == ["admins", "staff"], "{login:?}");
    let refresh_token = login.refresh_token.context("no refresh token")?;

    // The group is removed at the provider; its refresh answer carries no ID token.
    {
        let mut answers = idp.answers();
        answers.refresh_without_id_token = true;
        answers.userinfo = json!({ "sub": "alice", "groups": ["staff"] });
    }
    let email = Some("alice@example.com");
    let refreshed = provider
        .refresh(&refresh_token, "alice", email, now())
        .await?;
    ensure!(refreshed.id_token.is_none());
    let identity = refreshed.identity?.context("no refreshed identity")?;
    ensure!(identity.groups == ["staff"], "{identity:?}");
    ensure!(identity.email.as_deref() == email, "{identity:?}");
    ensure!(idp.answers().userinfo_calls == 2);

    // Userinfo about someone else: the grant now speaks for another user, and the session
    // ends (as with a refreshed ID token of another subject), rather than being retried.
    idp.answers().userinfo = json!({ "sub": "mallory", "groups": ["admins"] });
    let refreshed = provider.refresh("refresh-2", "alice", email, now()).await?;
    let identity = refreshed.identity;
    ensure!(
        matches!(identity, Err(RefreshError::Rejected(_))),
        "{identity:?}"
    );

    // An endpoint that fails is retried.
    idp.answers().userinfo = json!("not an object");
    let refreshed = provider.refresh("refresh-3", "alice", email, now()).await?;
    let identity = refreshed.identity;
    ensure!(
        matches!(identity, Err(RefreshError::Transient(_))),
        "{identity:?}"
    );
    Ok(())
}

#[tokio::test]
async fn groups_from_the_id_token_do_not_ask_userinfo() -> Result<()> {
    let idp = Idp::start(Discovery::default()).await;
    let provider = corp(&providers(&idp, json!({}))?)?;
    let login = log_in(
        &idp,
        &provider,
        json!({ "sub": "alice", "groups": ["staff"] }),
        json!({ "sub": "alice", "groups": ["admins"] }),
    )
    .await?;
    ensure!(login.groups == ["staff"], "{login:?}");
    ensure!(idp.answers().userinfo_calls == 0);

    // A refresh answer without an ID token restates nothing: the groups stay as they were.
    idp.answers().refresh_without_id_token = true;
    let refresh_token = login.refresh_token.context("no refresh token")?;
    let refreshed = provider
        .refresh(&refresh_token, "alice", None, now())
        .await?;
    let identity = refreshed.identity;
    ensure!(matches!(identity, Ok(None)), "{identity:?}");
    ensure!(idp.answers().userinfo_calls == 0);
    Ok(())
}

#[tokio::test]
async fn userinfo_groups_need_a_userinfo_endpoint() -> Result<()> {
    let idp = Idp::start(Discovery {
        userinfo: false,
        ..Discovery::default()
    })
    .await;
    let provider = corp(&providers(&idp, json!({ "groupsFrom": "userinfo" }))?)?;
    let login = log_in(&idp, &provider, json!({ "sub": "alice" }), json!({})).await;
    let Err(OidcError::Userinfo(message)) = login else {
        anyhow::bail!("{login:?}");
    };
    ensure!(message.contains("no userinfo_endpoint"), "{message}");
    Ok(())
}

/// What Entra ID sends for a user in more groups than fit in a token (over 200 in a JWT).
fn overage(sub: &str) -> Value {
    json!({
        "sub": sub,
        "_claim_names": { "groups": "src1" },
        "_claim_sources": { "src1": {
            "endpoint": "https://graph.microsoft.com/v1.0/users/0000/getMemberObjects" } },
    })
}

#[tokio::test]
async fn an_entra_groups_overage_refuses_the_login_and_ends_the_session() -> Result<()> {
    let idp = Idp::start(Discovery::default()).await;
    let provider = corp(&providers(&idp, json!({}))?)?;
    let login = log_in(&idp, &provider, overage("alice"), json!({})).await;
    let Err(error @ OidcError::GroupsUnavailable(_)) = login else {
        anyhow::bail!("an overage was taken for a login: {login:?}");
    };
    ensure!(error.category() == "groups_unavailable");
    ensure!(error.to_string().contains("_claim_names"), "{error}");

    // A user who joins too many groups during a session: the confirmation ends it.
    let login = log_in(
        &idp,
        &provider,
        json!({ "sub": "bob", "groups": ["a"] }),
        json!({}),
    )
    .await?;
    idp.answers().id_claims = overage("bob");
    let refresh_token = login.refresh_token.context("no refresh token")?;
    let refreshed = provider.refresh(&refresh_token, "bob", None, now()).await?;
    let identity = refreshed.identity;
    ensure!(
        matches!(identity, Err(RefreshError::Rejected(_))),
        "{identity:?}"
    );
    Ok(())
}

#[tokio::test]
async fn require_auth_time_is_checked_against_claims_supported() -> Result<()> {
    let without = Idp::start(Discovery {
        claims_supported: Some(vec!["sub", "iss", "aud", "email"]),
        ..Discovery::default()
    })
    .await;
    let error = providers(&without, json!({}))?
        .check_discovery()
        .await
        .err()
        .context("requireAuthTime accepted without auth_time in claims_supported")?;
    ensure!(matches!(error, OidcError::Config(_)), "{error}");
    ensure!(error.to_string().contains("requireAuthTime"), "{error}");
    // Turned off for it: fine.
    providers(&without, json!({ "requireAuthTime": false }))?
        .check_discovery()
        .await?;
    // Advertised, or not stated at all (a warning): on.
    let with = Idp::start(Discovery::default()).await;
    providers(&with, json!({}))?.check_discovery().await?;
    let silent = Idp::start(Discovery {
        claims_supported: None,
        ..Discovery::default()
    })
    .await;
    providers(&silent, json!({}))?.check_discovery().await?;
    Ok(())
}

/// Google Workspace: `hd` is signed by Google and names the Workspace domain; an email in a
/// domain proves nothing of the sort (a consumer Google account can have any email).
#[tokio::test]
async fn a_claim_selector_on_hd_needs_the_signed_hd_claim() -> Result<()> {
    let idp = Idp::start(Discovery::default()).await;
    let provider = corp(&providers(&idp, json!({ "forwardClaims": ["hd"] }))?)?;
    let policy = workspace_policy()?;
    let decide = |login: &VerifiedLogin| -> Result<Decision> {
        let identity = Identity::checked(
            login.subject.clone(),
            login.email.as_deref(),
            login.groups.clone(),
            login.ext.clone(),
        )?;
        let facts = RequestFacts {
            client_ip: "192.0.2.1".parse()?,
            service_token: None,
            bearer: None,
        };
        Ok(policy.evaluate(&facts, Some(&identity)))
    };
    let member = json!({ "sub": "1", "email": "alice@example.com", "email_verified": true,
        "hd": "example.com" });
    let member = log_in(&idp, &provider, member, json!({})).await?;
    ensure!(
        member.ext.get("hd") == Some(&json!("example.com")),
        "{member:?}"
    );
    ensure!(matches!(decide(&member)?, Decision::Allow { .. }));

    let consumer = json!({ "sub": "2", "email": "bob@example.com", "email_verified": true });
    let consumer = log_in(&idp, &provider, consumer, json!({})).await?;
    ensure!(consumer.email.as_deref() == Some("bob@example.com"));
    ensure!(decide(&consumer)? == Decision::NoRuleMatched);

    let other = json!({ "sub": "3", "email": "eve@example.com", "email_verified": true,
        "hd": "example.com.evil.test" });
    let other = log_in(&idp, &provider, other, json!({})).await?;
    ensure!(decide(&other)? == Decision::NoRuleMatched);
    Ok(())
}

/// The policy of docs/providers/google.md: Workspace members of example.com.
fn workspace_policy() -> Result<Policy> {
    let spec: portcullis_crds::AccessPolicySpec = serde_json::from_value(json!({
        "hosts": ["app.example.test"],
        "identityProviders": ["google"],
        "rules": [{ "name": "workspace", "action": "Allow",
            "include": [{ "claim": { "name": "hd", "values": ["example.com"] } }] }],
    }))?;
    let meta = PolicyMeta {
        namespace: "default".into(),
        name: "app".into(),
        uid: None,
        generation: None,
    };
    Ok(Policy::compile(meta, &spec)?)
}
