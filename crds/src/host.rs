//! `AccessHost`: a cluster administrator's statement of which namespaces may protect which hosts.
//!
//! An `AccessPolicy` is namespaced, but the hosts it claims are shared by the whole cluster: left
//! alone, anyone who may create a policy in one namespace could claim another team's host under a
//! longer path prefix and open it with `Bypass`. Like a Gateway API listener's `allowedRoutes`,
//! an `AccessHost` is cluster-scoped (only a cluster administrator writes it) and names the
//! namespaces whose policies may claim its hostnames. A policy claiming a host outside what is
//! granted is refused: the operator reports `HostNotAllowed` in its status and an Event, and no
//! gateway routes it. Hosts no `AccessHost` covers belong to the namespace that claimed them first
//! (see `docs/security.md`, "Tenancy").

pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Desired state of an `AccessHost`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    cel,
    group = "access.portcullis.dev",
    version = "v1alpha1",
    kind = "AccessHost",
    plural = "accesshosts",
    singular = "accesshost",
    shortname = "ah",
    category = "portcullis",
    derive = "PartialEq",
    doc = "AccessHost is cluster-scoped and owned by the cluster administrator: it states which \
           namespaces may claim its hostnames in an AccessPolicy. A claim outside it is refused \
           (condition Ready=False, reason HostNotAllowed, and an Event) and never routed.",
    printcolumn(
        name = "Hostnames",
        type_ = "string",
        json_path = ".spec.hostnames",
        description = "Hostnames this grant covers"
    ),
    printcolumn(
        name = "From",
        type_ = "string",
        json_path = ".spec.allowedNamespaces.from",
        description = "Which namespaces may claim them"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct AccessHostSpec {
    /// Hostnames this grant covers: exact lowercase DNS names (`app.example.com`), or a wildcard
    /// `*.` followed by a DNS name (`*.example.com`), which covers every name ending in
    /// `.example.com` (any number of labels) but not `example.com` itself. When several grants
    /// cover a host, only the most specific ones count: an exact name over any wildcard, a longer
    /// wildcard over a shorter one; grants equally specific add up.
    #[schemars(length(min = 1, max = 64), inner(length(min = 1, max = 253), regex(pattern = HOST_PATTERN)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub hostnames: Vec<String>,

    /// Which namespaces may claim these hostnames in an `AccessPolicy`.
    pub allowed_namespaces: AllowedNamespaces,
}

/// A lowercase DNS name, optionally preceded by `*.`.
pub const HOST_PATTERN: &str =
    r"^(\*\.)?[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$";

/// The namespaces a grant admits.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.from != 'Names' || (has(self.names) && size(self.names) > 0)").message("from: Names needs at least one entry in names"))]
#[x_kube(validation = Rule::new("self.from != 'Selector' || has(self.selector)").message("from: Selector needs a selector"))]
#[x_kube(validation = Rule::new("self.from == 'Names' || !has(self.names) || size(self.names) == 0").message("names is only read with from: Names"))]
#[x_kube(validation = Rule::new("self.from == 'Selector' || !has(self.selector)").message("selector is only read with from: Selector"))]
#[serde(rename_all = "camelCase")]
pub struct AllowedNamespaces {
    /// `All`: every namespace; `Names`: the namespaces listed in `names`; `Selector`: the
    /// namespaces whose labels match `selector`.
    pub from: NamespacesFrom,

    /// The namespaces admitted when `from` is `Names`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 256),
        inner(
            length(min = 1, max = 63),
            regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
        )
    )]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub names: Vec<String>,

    /// The labels of the namespaces admitted when `from` is `Selector` (`matchLabels` and
    /// `matchExpressions` with `In`, `NotIn`, `Exists`, `DoesNotExist`; an empty selector
    /// admits every namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

/// Where admitted namespaces come from.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum NamespacesFrom {
    /// Every namespace.
    All,
    /// The namespaces listed in `names`.
    Names,
    /// The namespaces whose labels match `selector`.
    Selector,
}
