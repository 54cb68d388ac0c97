//! The identity headers an upstream trusts, built from a verified user. Claim values come from
//! an identity provider and may hold anything; a header must say exactly one thing:
//!
//! - `X-Auth-Request-User` is the `sub`, verbatim. Logins refuse a `sub` that is not visible
//!   ASCII, so it always can be; should one still not be (a token minted before that check),
//!   the request is refused — never sent with the header missing.
//! - `X-Auth-Request-Email` is the strictly parsed, lower-cased address (letters, digits and
//!   a few symbols, see `portcullis_core::email`); one that does not parse refuses the request.
//! - `X-Auth-Request-Groups` is a comma-separated list in which each group name is
//!   percent-encoded (RFC 3986 style, upper-case hex, over the UTF-8 bytes): every byte that
//!   is not visible ASCII (controls, space, non-ASCII) and the three bytes `%`, `,` and `"`
//!   become `%XX`. A name made only of other visible ASCII — the usual case — is sent as it
//!   is. Split the value on `,` and percent-decode each item to get the names back exactly.

use http::{HeaderName, HeaderValue};
use portcullis_core::EmailAddress;

pub const USER: HeaderName = HeaderName::from_static("x-auth-request-user");
pub const EMAIL: HeaderName = HeaderName::from_static("x-auth-request-email");
pub const GROUPS: HeaderName = HeaderName::from_static("x-auth-request-groups");
/// The client id of a machine let in by a bearer token (see [`machine_values`]).
pub const CLIENT_ID: HeaderName = HeaderName::from_static("portcullis-client-id");

/// Why a user cannot be described to an upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdentityHeaderError {
    #[error("the user id cannot be sent in a header")]
    Subject,
    #[error("the email does not parse strictly")]
    Email,
}

/// The user, email and groups headers for a verified user.
pub fn identity_values(
    subject: &str,
    email: Option<&str>,
    groups: &[String],
) -> Result<Vec<(HeaderName, HeaderValue)>, IdentityHeaderError> {
    let mut headers = Vec::with_capacity(3);
    if subject.is_empty() || !subject.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(IdentityHeaderError::Subject);
    }
    let user = HeaderValue::from_str(subject).map_err(|_| IdentityHeaderError::Subject)?;
    headers.push((USER, user));
    if let Some(email) = email {
        let email = EmailAddress::parse(email).map_err(|_| IdentityHeaderError::Email)?;
        let value =
            HeaderValue::from_str(email.as_str()).map_err(|_| IdentityHeaderError::Email)?;
        headers.push((EMAIL, value));
    }
    if !groups.is_empty() {
        let list = groups
            .iter()
            .map(|g| encode_group(g))
            .collect::<Vec<_>>()
            .join(",");
        // Only visible ASCII is left after encoding: this cannot fail.
        if let Ok(value) = HeaderValue::from_str(&list) {
            headers.push((GROUPS, value));
        }
    }
    Ok(headers)
}

/// One group name as an item of `X-Auth-Request-Groups` (see the module documentation).
pub fn encode_group(group: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(group.len());
    for &b in group.as_bytes() {
        if b.is_ascii_graphic() && !matches!(b, b'%' | b',' | b'"') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    out
}

/// The group names back from an `X-Auth-Request-Groups` value: what an upstream does. Used by
/// the tests to show the encoding loses nothing; `None` for a value this encoding never makes.
pub fn decode_groups(value: &str) -> Option<Vec<String>> {
    if value.is_empty() {
        return Some(Vec::new());
    }
    value
        .split(',')
        .map(|item| {
            let bytes = item.as_bytes();
            let mut out = Vec::with_capacity(bytes.len());
            let mut i = 0;
            while i < bytes.len() {
                if bytes[i] == b'%' {
                    let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                    out.push(u8::from_str_radix(hex, 16).ok()?);
                    i += 3;
                } else {
                    out.push(bytes[i]);
                    i += 1;
                }
            }
            String::from_utf8(out).ok()
        })
        .collect()
}

/// The headers for a machine let in by a bearer token: `X-Auth-Request-User` is the token's
/// `sub` (the service account) and `Portcullis-Client-Id` its client id (`azp`), both
/// verbatim and both refused unless visible ASCII, like a user's `sub`. No email, no groups,
/// no `Portcullis-Jwt-Assertion`: those describe signed-in users, and an upstream reading them
/// must not mistake a machine for one.
pub fn machine_values(
    subject: &str,
    client_id: &str,
) -> Result<Vec<(HeaderName, HeaderValue)>, IdentityHeaderError> {
    let mut headers = identity_values(subject, None, &[])?;
    if client_id.is_empty() || !client_id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(IdentityHeaderError::Subject);
    }
    let client = HeaderValue::from_str(client_id).map_err(|_| IdentityHeaderError::Subject)?;
    headers.push((CLIENT_ID, client));
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_machine_is_its_subject_and_client_id_and_nothing_else() {
        let headers = machine_values("0b5c-sa", "billing").expect("ascii");
        assert_eq!(value(&headers, &USER), Some("0b5c-sa"));
        assert_eq!(value(&headers, &CLIENT_ID), Some("billing"));
        assert_eq!(headers.len(), 2);
        assert!(machine_values("sa", "bill ing").is_err());
        assert!(machine_values("sa\u{e9}", "billing").is_err());
    }

    fn value<'a>(headers: &'a [(HeaderName, HeaderValue)], name: &HeaderName) -> Option<&'a str> {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.to_str().ok())
    }

    #[test]
    fn groups_with_separators_controls_or_non_ascii_are_encoded_and_round_trip() {
        let groups: Vec<String> = [
            "eng",
            "a,b",
            "admins, x",
            "Domain Users",
            "caf\u{e9}",
            "\u{0430}dmins",
            "tab\there",
            "cr\r\nx-auth-request-user: admin",
            "nul\0",
            "100%",
            "%2C",
            "\"quoted\"",
            "semi;colon",
        ]
        .iter()
        .map(|g| (*g).to_owned())
        .collect();
        let headers = identity_values("alice", Some("Alice@Example.com"), &groups).expect("built");
        let list = value(&headers, &GROUPS).expect("groups header");
        assert!(list.bytes().all(|b| b.is_ascii_graphic()), "{list}");
        assert_eq!(list.split(',').count(), groups.len(), "{list}");
        assert!(list.starts_with("eng,a%2Cb,admins%2C%20x,Domain%20Users,caf%C3%A9,"));
        assert_eq!(decode_groups(list), Some(groups));
        assert_eq!(value(&headers, &USER), Some("alice"));
        assert_eq!(value(&headers, &EMAIL), Some("alice@example.com"));
    }

    #[test]
    fn a_user_that_cannot_be_described_exactly_is_refused() {
        for subject in ["", "alice\r\n", "alice\n", "ali ce", "\u{e9}", "a\0"] {
            assert_eq!(
                identity_values(subject, None, &[]),
                Err(IdentityHeaderError::Subject),
                "{subject:?}"
            );
        }
        for email in [
            "a@evil.test@example.com",
            "a@example.com\r\n",
            "a@example.com.",
        ] {
            assert_eq!(
                identity_values("alice", Some(email), &[]),
                Err(IdentityHeaderError::Email),
                "{email:?}"
            );
        }
        let plain = identity_values("alice", None, &[]).expect("built");
        assert_eq!(plain.len(), 1);
    }
}
