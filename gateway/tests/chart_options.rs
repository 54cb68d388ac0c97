//! Every identity-provider option of the gateway can be set through the Helm chart: the fields
//! of `IdpConfig` (read off the type itself) each have a property in the chart's
//! `values.schema.json`, and a provider entry that sets every property, rendered by the real
//! Helm, is read back by the gateway's own parser with each value in place.

use anyhow::{Context as _, Result, bail, ensure};
use portcullis_gateway::config::{ForcedLoginPrompt, GroupsSource, IdpConfig, IdpFile};
use portcullis_tests::tools::Tool;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The fields `IdpConfig` accepts, as serde names them: the parser itself lists them when it
/// refuses an unknown one (the type denies unknown fields).
fn gateway_fields() -> Result<BTreeSet<String>> {
    let Err(error) = serde_json::from_str::<IdpConfig>(r#"{"notAField": 1}"#) else {
        bail!("IdpConfig accepted an unknown field");
    };
    let message = error.to_string();
    let listed = message
        .split_once("expected one of ")
        .map(|(_, rest)| rest)
        .with_context(|| format!("serde no longer lists the fields: {message}"))?;
    let fields: BTreeSet<String> = listed
        .split(',')
        .filter_map(|f| f.trim().strip_prefix('`'))
        .filter_map(|f| f.split('`').next())
        .map(str::to_owned)
        .collect();
    ensure!(fields.contains("issuer") && fields.len() > 10, "{message}");
    Ok(fields)
}

/// The identity-provider properties the chart's schema allows.
fn chart_properties() -> Result<BTreeSet<String>> {
    let text = std::fs::read_to_string(repo().join("charts/portcullis/values.schema.json"))?;
    let schema: serde_json::Value = serde_json::from_str(&text)?;
    let properties = schema["properties"]["identityProviders"]["items"]["properties"]
        .as_object()
        .context("no identityProviders item properties")?;
    Ok(properties.keys().cloned().collect())
}

/// A value for every chart property, none of them the gateway's default.
fn every_option() -> serde_json::Value {
    serde_json::json!({
        "name": "corp",
        "displayName": "Corporate login",
        "issuer": "https://idp.example.com/realms/corp",
        "issuerAliases": ["idp.example.com/realms/corp"],
        "clientId": "portcullis",
        "clientSecret": { "existingSecret": "corp-client", "key": "secret" },
        "scopes": ["openid", "email"],
        "trustUnverifiedEmail": true,
        "forwardClaims": ["hd"],
        "requireAuthTime": false,
        "jwksRefreshCooldown": "45s",
        "refreshInterval": "7m",
        "refreshRejectionErrors": ["invalid_grant", "invalid_request"],
        "endSessionEndpoint": "https://idp.example.com/realms/corp/logout",
        "backchannelLogout": true,
        "authorizationParams": { "access_type": "offline", "prompt": "consent" },
        "groupsFrom": "userinfo",
        "forcedLoginPrompt": "select_account",
        "rpInitiatedLogout": false,
    })
}

#[test]
fn every_identity_provider_option_has_a_path_from_the_chart() -> Result<()> {
    let fields = gateway_fields()?;
    let properties = chart_properties()?;
    // The chart takes the client secret from a Secret and mounts it as the file.
    let chart_name = |field: &str| match field {
        "clientSecretFile" => "clientSecret".to_owned(),
        other => other.to_owned(),
    };
    let missing: Vec<&String> = fields
        .iter()
        .filter(|f| !properties.contains(&chart_name(f)))
        .collect();
    ensure!(
        missing.is_empty(),
        "gateway identity-provider options the chart cannot set (add them to values.schema.json \
         and values.yaml): {missing:?}"
    );
    let sample = every_option();
    let untried: Vec<&String> = properties
        .iter()
        .filter(|p| sample.get(p.as_str()).is_none())
        .collect();
    ensure!(untried.is_empty(), "no sample value for {untried:?}");

    let rendered = render(&sample)?;
    let file: IdpFile = serde_saphyr::from_str(&rendered)
        .with_context(|| format!("the gateway refuses the rendered file:\n{rendered}"))?;
    let [corp] = file.identity_providers.as_slice() else {
        bail!("one provider expected:\n{rendered}");
    };
    ensure!(corp.display_name.as_deref() == Some("Corporate login"));
    ensure!(corp.issuer_aliases == ["idp.example.com/realms/corp"]);
    ensure!(corp.scopes == ["openid", "email"]);
    ensure!(corp.trust_unverified_email && !corp.require_auth_time);
    ensure!(corp.backchannel_logout && !corp.rp_initiated_logout);
    ensure!(corp.groups_from == GroupsSource::Userinfo);
    ensure!(corp.forced_login_prompt == ForcedLoginPrompt::SelectAccount);
    ensure!(corp.authorization_params.extra().collect::<Vec<_>>() == [("access_type", "offline")]);
    ensure!(corp.authorization_params.prompt(None) == ["consent"]);
    ensure!(corp.forward_claims == ["hd"]);
    ensure!(corp.jwks_refresh_cooldown == Duration::from_secs(45));
    ensure!(corp.refresh_interval == Duration::from_secs(420));
    ensure!(corp.refresh_rejection_errors == ["invalid_grant", "invalid_request"]);
    ensure!(
        corp.end_session_endpoint.as_ref().map(url::Url::as_str)
            == Some("https://idp.example.com/realms/corp/logout")
    );
    ensure!(
        corp.client_secret_file
            .components()
            .any(|c| c.as_os_str() == "corp"),
        "{}",
        corp.client_secret_file.display()
    );
    Ok(())
}

/// `helm template` with `provider` as the only identity provider; the rendered
/// `identity-providers.yaml`.
fn render(provider: &serde_json::Value) -> Result<String> {
    let dir = std::env::temp_dir().join(format!("portcullis-chart-options-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let values = dir.join("values.json");
    std::fs::write(
        &values,
        serde_json::to_string(&serde_json::json!({ "identityProviders": [provider] }))?,
    )?;
    let out = Command::new(Tool::Helm.path()?)
        .args(["template", "portcullis"])
        .arg(repo().join("charts/portcullis"))
        .arg("-f")
        .arg(repo().join("examples/ingress/traefik/values.yaml"))
        .arg("-f")
        .arg(&values)
        .args(["--show-only", "templates/identity-providers.yaml"])
        .env("HELM_CACHE_HOME", dir.join("cache"))
        .env("HELM_CONFIG_HOME", dir.join("config"))
        .env("HELM_DATA_HOME", dir.join("data"))
        .output()
        .context("running helm template")?;
    let _ = std::fs::remove_dir_all(&dir);
    ensure!(
        out.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config_map: serde_json::Value = serde_saphyr::from_str(&String::from_utf8(out.stdout)?)?;
    config_map["data"]["identity-providers.yaml"]
        .as_str()
        .map(str::to_owned)
        .context("no identity-providers.yaml in the ConfigMap")
}
