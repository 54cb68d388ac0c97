//! Judging a signed-in user against a policy without a request: the question the blast-radius
//! preview (`kubectl portcullis preview`) asks of every live session before an administrator
//! raises an epoch or changes rules. The answer comes from [`Policy::evaluate`] itself, so the
//! preview and the gateways cannot disagree; where the answer depends on something a session
//! record does not hold (the client's address, an ID-token claim other than email and groups)
//! it says so instead of guessing.

use super::{Policy, Selector};
use crate::{identity::Identity, policy::RequestFacts};
use std::net::{IpAddr, Ipv4Addr};

/// How a policy judges one user, wherever they connect from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Judgement {
    /// The rules let the user in.
    Allowed,
    /// The user cannot use the policy's apps: not its identity provider, or no rule allows.
    Refused,
    /// The rules look at something the session record does not carry.
    Undecided(Unknown),
}

/// What a judgement would need to know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unknown {
    /// A rule selects by client address (`ipRanges`).
    ClientAddress,
    /// A rule selects by this ID-token claim.
    Claim(String),
}

impl std::fmt::Display for Unknown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ClientAddress => f.write_str("depends on the client address"),
            Self::Claim(name) => write!(f, "depends on the claim {name:?}"),
        }
    }
}

impl Policy {
    /// How this policy judges `identity`, who logged in through the provider `idp`.
    pub fn judge_user(&self, identity: &Identity, idp: &str) -> Judgement {
        if !self.identity_providers.iter().any(|p| p == idp) {
            return Judgement::Refused;
        }
        for selector in self.rules.iter().flat_map(|rule| rule.selectors()) {
            match selector {
                Selector::IpRanges(_) => return Judgement::Undecided(Unknown::ClientAddress),
                Selector::Claim { name, .. } if !identity.claims.contains_key(name) => {
                    return Judgement::Undecided(Unknown::Claim(name.clone()));
                }
                _ => {}
            }
        }
        // No rule looks at the address: any will do.
        let facts = RequestFacts {
            client_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            service_token: None,
            bearer: None,
        };
        if self.evaluate(&facts, Some(identity)).is_allowed() {
            Judgement::Allowed
        } else {
            Judgement::Refused
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::PolicyMeta;
    use portcullis_crds::AccessPolicySpec;

    fn policy(rules: &str) -> Policy {
        let yaml = format!(
            "hosts: [app.example.com]\nidentityProviders: [dex]\nupstream: {{ url: http://127.0.0.1:1 }}\nrules:\n{rules}"
        );
        let spec: AccessPolicySpec = serde_saphyr::from_str(&yaml).expect("spec");
        let meta = PolicyMeta {
            namespace: "ns".into(),
            name: "p".into(),
            uid: None,
            generation: None,
        };
        Policy::compile(meta, &spec).expect("policy")
    }

    fn user(email: &str, groups: &[&str]) -> Identity {
        Identity {
            subject: format!("sub-{email}"),
            email: Some(email.to_owned()),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            claims: serde_json::Map::new(),
        }
    }

    #[test]
    fn judged_by_the_same_rules_as_requests() {
        let p = policy(
            "  - { action: Deny, include: [{ emails: [mallory@example.com] }] }\n  - { action: Allow, include: [{ emailDomains: [example.com] }, { groups: [contractors] }] }\n",
        );
        assert_eq!(
            p.judge_user(&user("alice@example.com", &[]), "dex"),
            Judgement::Allowed
        );
        assert_eq!(
            p.judge_user(&user("bob@other.test", &["contractors"]), "dex"),
            Judgement::Allowed
        );
        assert_eq!(
            p.judge_user(&user("eve@other.test", &[]), "dex"),
            Judgement::Refused
        );
        assert_eq!(
            p.judge_user(&user("mallory@example.com", &[]), "dex"),
            Judgement::Refused
        );
        // Another identity provider's session never reaches this policy's apps.
        assert_eq!(
            p.judge_user(&user("alice@example.com", &[]), "google"),
            Judgement::Refused
        );
    }

    #[test]
    fn what_a_session_record_cannot_tell_is_said_not_guessed() {
        let by_address = policy(
            "  - { action: Allow, include: [{ emailDomains: [example.com] }], require: [{ ipRanges: [10.0.0.0/8] }] }\n",
        );
        assert_eq!(
            by_address.judge_user(&user("alice@example.com", &[]), "dex"),
            Judgement::Undecided(Unknown::ClientAddress)
        );
        let by_claim = policy(
            "  - { action: Allow, include: [{ claim: { name: hd, values: [example.com] } }] }\n",
        );
        assert_eq!(
            by_claim.judge_user(&user("alice@example.com", &[]), "dex"),
            Judgement::Undecided(Unknown::Claim("hd".into()))
        );
    }
}
