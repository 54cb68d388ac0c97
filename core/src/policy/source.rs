//! Where a policy comes from: a whole `AccessPolicy` object (a manifest in a directory, an
//! object read from the API server) or an entry of the operator's state stream, which carries
//! the same metadata and spec without the object around them. Every consumer compiles both the
//! same way, through [`Policy::compile`], and never rebuilds an object from an entry.

use super::{Policy, PolicyError, PolicyMeta};
use portcullis_crds::{AccessPolicy, AccessPolicySpec};

/// A policy as its source states it.
pub trait PolicySource {
    /// The namespace, if the source states one (a manifest may leave it out).
    fn namespace(&self) -> Option<&str>;
    /// The name, if the source states one.
    fn name(&self) -> Option<&str>;
    fn spec(&self) -> &AccessPolicySpec;
    /// Everything [`Policy::compile`] needs besides the spec; `None` without a namespace and a
    /// name.
    fn meta(&self) -> Option<PolicyMeta>;

    /// The compiled policy, or why it cannot be enforced as written.
    fn compile(&self) -> Result<Policy, PolicyError> {
        let meta = self.meta().ok_or(PolicyError::MissingName)?;
        Policy::compile(meta, self.spec())
    }
}

impl TryFrom<&AccessPolicy> for Policy {
    type Error = PolicyError;

    fn try_from(policy: &AccessPolicy) -> Result<Self, PolicyError> {
        PolicySource::compile(policy)
    }
}

impl PolicySource for AccessPolicy {
    fn namespace(&self) -> Option<&str> {
        self.metadata.namespace.as_deref()
    }

    fn name(&self) -> Option<&str> {
        self.metadata.name.as_deref()
    }

    fn spec(&self) -> &AccessPolicySpec {
        &self.spec
    }

    fn meta(&self) -> Option<PolicyMeta> {
        Some(PolicyMeta {
            namespace: self.metadata.namespace.clone()?,
            name: self.metadata.name.clone()?,
            uid: self.metadata.uid.clone(),
            generation: self.metadata.generation,
        })
    }
}

impl<T: PolicySource + ?Sized> PolicySource for &T {
    fn namespace(&self) -> Option<&str> {
        (**self).namespace()
    }

    fn name(&self) -> Option<&str> {
        (**self).name()
    }

    fn spec(&self) -> &AccessPolicySpec {
        (**self).spec()
    }

    fn meta(&self) -> Option<PolicyMeta> {
        (**self).meta()
    }
}
