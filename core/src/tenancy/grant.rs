//! An `AccessHost` as the ownership rule reads it: the host patterns it covers and the
//! namespaces it admits.

use crate::host::Host;
use portcullis_crds::{AccessHost, NamespacesFrom};
use std::collections::{BTreeMap, BTreeSet};

/// Labels of a namespace.
pub type Labels = BTreeMap<String, String>;

/// A hostname of a grant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostPattern {
    /// Exactly this host.
    Exact(Host),
    /// Every host ending in this suffix (which starts with `.`): `*.example.com` is `.example.com`
    /// and covers `a.example.com` and `a.b.example.com`, not `example.com`.
    Wildcard(String),
}

impl HostPattern {
    /// Parses `name` or `*.name`; `None` for anything else (the schema refuses it already).
    pub fn parse(raw: &str) -> Option<Self> {
        match raw.strip_prefix("*.") {
            Some(rest) => {
                let base = Host::parse(rest).ok()?;
                (base.as_str() == rest && !rest.starts_with('['))
                    .then(|| Self::Wildcard(format!(".{rest}")))
            }
            None => {
                let host = Host::parse(raw).ok()?;
                (host.as_str() == raw).then_some(Self::Exact(host))
            }
        }
    }

    /// How specifically this pattern covers `host`, higher is more specific; `None` when it does
    /// not cover it. An exact name beats every wildcard; a longer wildcard beats a shorter one.
    pub fn specificity(&self, host: &Host) -> Option<usize> {
        match self {
            Self::Exact(exact) => (exact == host).then_some(usize::MAX),
            Self::Wildcard(suffix) => {
                let name = host.as_str();
                (name.len() > suffix.len() && name.ends_with(suffix.as_str()))
                    .then_some(suffix.len())
            }
        }
    }
}

/// Which namespaces a grant admits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admits {
    All,
    Names(BTreeSet<String>),
    Selector(NamespaceSelector),
    /// The grant could not be read (an unknown selector operator): it still covers its
    /// hostnames, and admits no namespace, so a mistake closes a host instead of opening it.
    Nobody,
}

/// A label selector: every `matchLabels` entry and every expression must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NamespaceSelector {
    pub match_labels: Labels,
    pub expressions: Vec<Expression>,
}

/// One `matchExpressions` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expression {
    In(String, BTreeSet<String>),
    NotIn(String, BTreeSet<String>),
    Exists(String),
    DoesNotExist(String),
}

impl NamespaceSelector {
    pub fn matches(&self, labels: &Labels) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.expressions.iter().all(|e| match e {
                Expression::In(k, values) => labels.get(k).is_some_and(|v| values.contains(v)),
                Expression::NotIn(k, values) => labels.get(k).is_none_or(|v| !values.contains(v)),
                Expression::Exists(k) => labels.contains_key(k),
                Expression::DoesNotExist(k) => !labels.contains_key(k),
            })
    }
}

/// A compiled `AccessHost`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostGrant {
    /// The `AccessHost`'s name, for messages.
    pub name: String,
    pub patterns: Vec<HostPattern>,
    pub admits: Admits,
}

impl HostGrant {
    /// How specifically the grant covers `host` (its most specific pattern), or `None`.
    pub fn specificity(&self, host: &Host) -> Option<usize> {
        self.patterns
            .iter()
            .filter_map(|p| p.specificity(host))
            .max()
    }

    /// Whether a policy in `namespace` (with `labels`, when known) may claim the hosts this
    /// grant covers.
    pub fn admits(&self, namespace: &str, labels: Option<&Labels>) -> bool {
        match &self.admits {
            Admits::All => true,
            Admits::Names(names) => names.contains(namespace),
            // Labels not known (yet): not admitted; the claim is judged again when they are.
            Admits::Selector(selector) => labels.is_some_and(|l| selector.matches(l)),
            Admits::Nobody => false,
        }
    }
}

impl From<&AccessHost> for HostGrant {
    fn from(object: &AccessHost) -> Self {
        let spec = &object.spec;
        let allowed = &spec.allowed_namespaces;
        let admits = match allowed.from {
            NamespacesFrom::All => Admits::All,
            NamespacesFrom::Names => Admits::Names(allowed.names.iter().cloned().collect()),
            NamespacesFrom::Selector => allowed
                .selector
                .as_ref()
                .and_then(selector)
                .map_or(Admits::Nobody, Admits::Selector),
        };
        Self {
            name: object.metadata.name.clone().unwrap_or_default(),
            patterns: spec
                .hostnames
                .iter()
                .filter_map(|h| HostPattern::parse(h))
                .collect(),
            admits,
        }
    }
}

/// The selector, or `None` when it uses an operator this rule does not know.
fn selector(spec: &portcullis_crds::host::LabelSelector) -> Option<NamespaceSelector> {
    let expressions = spec
        .match_expressions
        .iter()
        .flatten()
        .map(|e| {
            let key = e.key.clone();
            let values = || e.values.iter().flatten().cloned().collect();
            match e.operator.as_str() {
                "In" => Some(Expression::In(key, values())),
                "NotIn" => Some(Expression::NotIn(key, values())),
                "Exists" => Some(Expression::Exists(key)),
                "DoesNotExist" => Some(Expression::DoesNotExist(key)),
                _ => None,
            }
        })
        .collect::<Option<Vec<_>>>()?;
    Some(NamespaceSelector {
        match_labels: spec.match_labels.clone().unwrap_or_default(),
        expressions,
    })
}
