//! The plugin's one error type, and the translation of API-server answers into messages a
//! platform engineer can act on: which verb on which resource RBAC refused, that the CRDs are
//! missing rather than "404 page not found", which object does not exist.

use kube::config::KubeconfigError;

/// Exit code of a run that did everything it was asked.
pub const EXIT_OK: u8 = 0;
/// Exit code of a failure: an object not found, RBAC, missing CRDs, the API server unreachable…
pub const EXIT_FAILED: u8 = 1;
/// Exit code of a usage error (clap uses it for bad flags, and so do we), and of a user that the
/// arguments do not name unambiguously: nothing was written, the command needs more arguments.
pub const EXIT_USAGE: u8 = 2;
/// Exit code of `--wait` running out of time: the revocation is written, but status does not
/// show every connected gateway enforcing it yet.
pub const EXIT_NOT_ENFORCED: u8 = 3;

/// Everything that can go wrong in the plugin.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad arguments clap cannot check on its own.
    #[error("{0}")]
    Usage(String),
    /// No kubeconfig and not inside a cluster.
    #[error(
        "no Kubernetes configuration found: pass --kubeconfig, set KUBECONFIG, or create \
         ~/.kube/config ({0})"
    )]
    NoConfig(String),
    /// The kubeconfig could not be read or has no usable context.
    #[error("loading the kubeconfig{}: {source}", path.as_deref().map(|p| format!(" {p}")).unwrap_or_default())]
    Kubeconfig {
        path: Option<String>,
        #[source]
        source: KubeconfigError,
    },
    /// The client could not be built from a valid configuration (TLS material, proxy…).
    #[error("creating the Kubernetes client: {0}")]
    Client(#[source] kube::Error),
    /// RBAC said no.
    #[error(
        "forbidden: you may not {verb} {resource}{scope} (see the RBAC each command needs in \
         docs/cli.md)\n  the API server said: {server}"
    )]
    Forbidden {
        verb: &'static str,
        resource: &'static str,
        scope: String,
        server: String,
    },
    /// The credentials were refused.
    #[error(
        "unauthorized: the API server did not accept the kubeconfig's credentials ({0}); log in \
         again or pick another --context"
    )]
    Unauthorized(String),
    /// A named object does not exist.
    #[error("{kind} {name:?} not found in namespace {namespace}")]
    NotFound {
        kind: &'static str,
        name: String,
        namespace: String,
    },
    /// The API server does not serve the resource at all.
    #[error(
        "this cluster does not serve {resource}.access.portcullis.dev: the Portcullis CRDs are \
         not installed (helm install charts/portcullis, or kubectl apply -f crds/yaml/)"
    )]
    CrdMissing { resource: &'static str },
    /// The API server refused the request (validation, conflict, bad selector…).
    #[error("the API server refused to {verb} {target}: (HTTP {code} {reason}) {message}")]
    Refused {
        verb: &'static str,
        target: String,
        code: u16,
        reason: String,
        message: String,
    },
    /// The request did not get an answer (network, TLS, timeout…).
    #[error("could not {verb} {target}: {source}")]
    Unreachable {
        verb: &'static str,
        target: String,
        #[source]
        source: kube::Error,
    },
    /// `--email`, or a subject without `--idp`, matches sessions of more than one user.
    #[error("{0}")]
    Ambiguous(String),
    /// Concurrent writers kept changing the policy between our read and our write.
    #[error(
        "gave up raising the revocation epoch of accesspolicy {namespace}/{name}: {attempts} \
         writes in a row conflicted with other writers; try again"
    )]
    TooManyConflicts {
        namespace: String,
        name: String,
        attempts: u32,
    },
    /// Some sessions could not be revoked; the others were, and each failure is on stderr.
    #[error(
        "not revoked: {} (the errors are above); the other {others} session{} {} revoked",
        names.iter().map(|n| format!("accesssession/{n}")).collect::<Vec<_>>().join(", "),
        if *others == 1 { "" } else { "s" },
        if *others == 1 { "is" } else { "are" }
    )]
    NotRevoked { names: Vec<String>, others: usize },
    /// A later listing of `revoke user` failed for good: a login in flight may be missed.
    #[error(
        "could not list the user's sessions again to catch logins in flight: {0}\n(every \
         session listed before is handled as reported; run the command again to catch a login \
         that landed meanwhile)"
    )]
    InFlightUnchecked(Box<Error>),
    /// `--wait` ran out of time.
    #[error("{0}")]
    NotEnforced(String),
    /// JSON output could not be produced.
    #[error("formatting JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// YAML output could not be produced.
    #[error("formatting YAML: {0}")]
    Yaml(#[from] serde_saphyr::SerializeError),
}

impl Error {
    /// The process exit code for this error (documented in `--help` and docs/cli.md).
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) | Self::Ambiguous(_) => EXIT_USAGE,
            Self::NotEnforced(_) => EXIT_NOT_ENFORCED,
            _ => EXIT_FAILED,
        }
    }

    /// Whether polling may go on after this error (the API server was briefly unreachable or
    /// answered 5xx / 429), as opposed to an answer that will not change by asking again.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unreachable { .. } => true,
            Self::Refused { code, .. } => *code >= 500 || *code == 429,
            _ => false,
        }
    }
}

/// What a request was about, so that its failure can say so.
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    /// The Kubernetes verb (`get`, `list`, `patch`).
    pub verb: &'static str,
    /// The plural resource (`accesssessions`).
    pub resource: &'static str,
    /// The kind, for "not found" messages.
    pub kind: &'static str,
    /// The namespace, or `None` for all namespaces.
    pub namespace: Option<&'a str>,
    /// The object, for requests on one object.
    pub name: Option<&'a str>,
}

impl Target<'_> {
    /// `kind/name in namespace ns`, `accesssessions in namespace ns`, `accesspolicies in all
    /// namespaces`.
    fn describe(&self) -> String {
        let what = match self.name {
            Some(name) => format!("{}/{name}", self.kind.to_ascii_lowercase()),
            None => self.resource.to_owned(),
        };
        format!("{what}{}", self.scope())
    }

    fn scope(&self) -> String {
        match self.namespace {
            Some(ns) => format!(" in namespace {ns}"),
            None => " in all namespaces".to_owned(),
        }
    }

    /// Turns a failed request into the error a person can act on.
    pub fn error(&self, error: kube::Error) -> Error {
        let kube::Error::Api(status) = error else {
            return Error::Unreachable {
                verb: self.verb,
                target: self.describe(),
                source: error,
            };
        };
        match status.code {
            401 => Error::Unauthorized(status.message.clone()),
            403 => Error::Forbidden {
                verb: self.verb,
                resource: self.resource,
                scope: self.scope(),
                server: status.message.clone(),
            },
            // A missing object comes with its name in the details; a missing resource (no CRD)
            // is a bare "404 page not found".
            404 => match self.name {
                Some(name) if status.details.as_ref().is_some_and(|d| !d.name.is_empty()) => {
                    Error::NotFound {
                        kind: self.kind,
                        name: name.to_owned(),
                        namespace: self.namespace.unwrap_or_default().to_owned(),
                    }
                }
                _ => Error::CrdMissing {
                    resource: self.resource,
                },
            },
            code => Error::Refused {
                verb: self.verb,
                target: self.describe(),
                code,
                reason: status.reason.clone(),
                message: status.message.clone(),
            },
        }
    }
}

/// Whether a failed write lost a race: the object changed since we read it.
pub fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::{Status, response::StatusDetails};

    fn api(code: u16, reason: &str, message: &str, name: Option<&str>) -> kube::Error {
        let mut status = Status::failure(message, reason).with_code(code);
        if let Some(name) = name {
            status.details = Some(StatusDetails {
                name: name.to_owned(),
                group: "access.portcullis.dev".to_owned(),
                kind: "accesssessions".to_owned(),
                uid: String::new(),
                causes: Vec::new(),
                retry_after_seconds: 0,
            });
        }
        kube::Error::Api(Box::new(status))
    }

    const GET: Target<'static> = Target {
        verb: "get",
        resource: "accesssessions",
        kind: "AccessSession",
        namespace: Some("portcullis"),
        name: Some("abc"),
    };

    #[test]
    fn a_missing_object_is_not_found_and_a_missing_resource_is_a_missing_crd() {
        let e = GET.error(api(404, "NotFound", "\"abc\" not found", Some("abc")));
        assert!(matches!(e, Error::NotFound { .. }), "{e}");
        assert_eq!(
            e.to_string(),
            "AccessSession \"abc\" not found in namespace portcullis"
        );
        let e = GET.error(api(404, "NotFound", "404 page not found", None));
        assert!(matches!(e, Error::CrdMissing { .. }), "{e}");
        assert!(e.to_string().contains("CRDs are not installed"), "{e}");
        let list = Target {
            name: None,
            verb: "list",
            ..GET
        };
        let e = list.error(api(404, "NotFound", "404 page not found", None));
        assert!(matches!(e, Error::CrdMissing { .. }), "{e}");
    }

    #[test]
    fn forbidden_names_the_verb_resource_and_namespace() {
        let list = Target {
            name: None,
            verb: "list",
            ..GET
        };
        let e = list.error(api(403, "Forbidden", "User \"x\" cannot list", None));
        let text = e.to_string();
        assert!(
            text.starts_with("forbidden: you may not list accesssessions in namespace portcullis"),
            "{text}"
        );
        assert!(text.contains("User \"x\" cannot list"), "{text}");
        assert_eq!(e.exit_code(), EXIT_FAILED);
    }

    #[test]
    fn other_refusals_carry_the_servers_message() {
        let patch = Target {
            verb: "patch",
            ..GET
        };
        let e = patch.error(api(
            422,
            "Invalid",
            "a revoked session cannot be un-revoked",
            None,
        ));
        assert_eq!(
            e.to_string(),
            "the API server refused to patch accesssession/abc in namespace portcullis: (HTTP 422 \
             Invalid) a revoked session cannot be un-revoked"
        );
        assert!(!e.is_transient());
        assert!(
            patch
                .error(api(503, "ServiceUnavailable", "x", None))
                .is_transient()
        );
        assert!(is_conflict(&api(409, "Conflict", "x", None)));
    }

    #[test]
    fn only_a_timed_out_wait_exits_with_three() {
        assert_eq!(
            Error::NotEnforced(String::new()).exit_code(),
            EXIT_NOT_ENFORCED
        );
        assert_eq!(Error::Usage(String::new()).exit_code(), EXIT_USAGE);
        assert_eq!(Error::Ambiguous(String::new()).exit_code(), EXIT_USAGE);
        let partial = Error::NotRevoked {
            names: vec!["a".into(), "b".into()],
            others: 1,
        };
        assert_eq!(partial.exit_code(), EXIT_FAILED);
        assert_eq!(
            partial.to_string(),
            "not revoked: accesssession/a, accesssession/b (the errors are above); the other 1 \
             session is revoked"
        );
    }
}
