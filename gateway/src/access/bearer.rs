//! The bearer JWT a machine client presents (`Authorization: Bearer`), verified before the
//! policy's rules run, for policies whose `ServiceAuth` rules have `bearer` selectors.
//!
//! Only those policies look at `Authorization`: for every other policy the header is the app's
//! own business and passes through untouched. Where the policy does look, a bearer token that
//! does not verify is refused with 401 `invalid_token` (RFC 6750 §3.1) and never turns into a
//! login redirect: the client is a program, and a redirect would hide why it was refused.

use super::Subject;
use crate::{
    gateway::Gateway,
    idp::bearer::{BearerError, unverified_issuer},
    state::Snapshot,
};
use http::{HeaderMap, header::AUTHORIZATION};
use portcullis_core::{BearerToken, Route};
use std::sync::Arc;

/// The bearer token of a request, as far as the policy it is routed to cares.
#[derive(Clone, Debug)]
pub enum Bearer {
    /// None presented, or the policy accepts none (then the header is left to the app).
    Absent,
    /// Verified: signature, issuer and lifetime. The rules judge the rest.
    Verified(Arc<BearerToken>),
    /// Presented and refused.
    Refused(BearerError),
}

/// The request's bearer token, verified with the provider its `iss` names among those the
/// routed policy's `bearer` selectors accept.
pub async fn bearer(
    gateway: &Gateway,
    snapshot: &Snapshot,
    subject: &Subject<'_>,
    now: u64,
) -> Bearer {
    let Some(Route::Policy(policy)) = snapshot.routes.route(subject.host, subject.path) else {
        return Bearer::Absent;
    };
    let accepted = policy.bearer_providers();
    if accepted.is_empty() {
        return Bearer::Absent;
    }
    let token = match presented(subject.headers) {
        Ok(None) => return Bearer::Absent,
        Ok(Some(token)) => token,
        Err(error) => return Bearer::Refused(error),
    };
    let issuer = match unverified_issuer(token) {
        Ok(issuer) => issuer,
        Err(error) => return Bearer::Refused(error),
    };
    let provider = accepted
        .iter()
        .filter_map(|name| gateway.providers().get(name).ok())
        .find(|provider| provider.issues(&issuer));
    let Some(provider) = provider else {
        return Bearer::Refused(BearerError::UnknownIssuer);
    };
    match provider.verify_bearer(token, now).await {
        Ok(verified) => Bearer::Verified(verified),
        Err(error) => Bearer::Refused(error),
    }
}

/// The token of an `Authorization: Bearer` header: `Ok(None)` without the header or with
/// another scheme (`Basic`…, the app's); refused when there are several `Authorization`
/// headers (which one would the app read?) or the value is not one RFC 6750 `b64token`.
fn presented(headers: &HeaderMap) -> Result<Option<&str>, BearerError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return match headers.contains_key(AUTHORIZATION) {
            true => Err(BearerError::Malformed("more than one Authorization header")),
            false => Ok(None),
        };
    };
    let value = value
        .to_str()
        .map_err(|_| BearerError::Malformed("the Authorization header is not ASCII"))?;
    let Some((scheme, token)) = value.split_once(' ') else {
        return Ok(None);
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Ok(None);
    }
    let b64token = |b: u8| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b);
    let body = token.trim_end_matches('=');
    if body.is_empty() || !body.bytes().all(b64token) {
        return Err(BearerError::Malformed(
            "the Authorization header holds no b64token",
        ));
    }
    Ok(Some(token))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(AUTHORIZATION, HeaderValue::from_str(value).expect("value"));
        }
        headers
    }

    #[test]
    fn only_one_well_formed_bearer_header_is_read() {
        assert_eq!(presented(&headers(&[])), Ok(None));
        assert_eq!(presented(&headers(&["Basic dXNlcjpwdw=="])), Ok(None));
        assert_eq!(presented(&headers(&["bearer a.b.c"])), Ok(Some("a.b.c")));
        for refused in [
            &["Bearer a.b.c", "Bearer d.e.f"][..],
            &["Bearer "],
            &["Bearer  a.b.c"],
            &["Bearer a.b.c junk"],
            &["Bearer a,b"],
        ] {
            assert!(presented(&headers(refused)).is_err(), "{refused:?}");
        }
    }
}
