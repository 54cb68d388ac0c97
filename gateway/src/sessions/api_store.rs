//! Session records at the Kubernetes API server (cluster mode).

use super::store::{Part, SessionPatch, SessionStore, StoreError};
use futures::future::BoxFuture;
use kube::{
    Api, Client,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use portcullis_crds::AccessSession;
use portcullis_crds::session::escape_field_value;
use portcullis_runtime::telemetry::api_server_span;
use tracing::Instrument as _;

/// The field manager of every write the gateway makes to an `AccessSession`.
const FIELD_MANAGER: &str = "portcullis-gateway";

/// The `AccessSession`s of one namespace.
pub struct ApiStore {
    api: Api<AccessSession>,
}

impl ApiStore {
    pub fn new(client: Client, namespace: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
        }
    }
}

impl SessionStore for ApiStore {
    fn create<'a>(&'a self, session: &'a AccessSession) -> BoxFuture<'a, Result<(), StoreError>> {
        let span = api_server_span("create AccessSession");
        Box::pin(
            async move {
                self.api
                    .create(
                        &PostParams {
                            field_manager: Some(FIELD_MANAGER.to_owned()),
                            ..PostParams::default()
                        },
                        session,
                    )
                    .await
                    .map(|_| ())
                    .map_err(store_error)
            }
            .instrument(span),
        )
    }

    fn get<'a>(&'a self, sid: &'a str) -> BoxFuture<'a, Result<Option<AccessSession>, StoreError>> {
        let span = api_server_span("get AccessSession");
        Box::pin(async move { self.api.get_opt(sid).await.map_err(store_error) }.instrument(span))
    }

    fn patch<'a>(
        &'a self,
        sid: &'a str,
        patch: &'a SessionPatch,
    ) -> BoxFuture<'a, Result<Option<String>, StoreError>> {
        let span = api_server_span(match patch.part {
            Part::Status => "patch AccessSession status",
            Part::Spec | Part::Metadata => "patch AccessSession",
        });
        Box::pin(
            async move {
                // Named, so a logout's revocation reads "set by portcullis-gateway" in the
                // operator's Event and condition (the field manager the API server records).
                let params = PatchParams {
                    field_manager: Some(FIELD_MANAGER.to_owned()),
                    ..PatchParams::default()
                };
                let body = patch.body();
                let merge = Patch::Merge(&body);
                let written = match patch.part {
                    Part::Status => self.api.patch_status(sid, &params, &merge).await,
                    Part::Spec | Part::Metadata => self.api.patch(sid, &params, &merge).await,
                };
                written
                    .map(|object| object.metadata.resource_version)
                    .map_err(store_error)
            }
            .instrument(span),
        )
    }

    fn list_by_provider<'a>(
        &'a self,
        identity_provider: &'a str,
    ) -> BoxFuture<'a, Result<Vec<AccessSession>, StoreError>> {
        let span = api_server_span("list AccessSessions");
        // `spec.identityProvider` is a selectable field of the CRD.
        let value = escape_field_value(identity_provider);
        let params = ListParams::default().fields(&format!("spec.identityProvider={value}"));
        Box::pin(
            async move {
                let list = self.api.list(&params).await.map_err(store_error)?;
                Ok(list.items)
            }
            .instrument(span),
        )
    }
}

/// The API server's answer as a [`StoreError`]: 409 and 404 by name, 429 and 5xx (and no
/// answer at all) transient, any other status a refusal.
fn store_error(error: kube::Error) -> StoreError {
    match error {
        kube::Error::Api(status) => match status.code {
            409 => StoreError::Conflict,
            404 => StoreError::NotFound,
            429 | 500 | 502 | 503 | 504 => {
                StoreError::Unavailable(Box::new(kube::Error::Api(status)))
            }
            _ => StoreError::Refused(kube::Error::Api(status).to_string()),
        },
        other => StoreError::Unavailable(Box::new(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(code: u16) -> StoreError {
        store_error(kube::Error::Api(Box::new(kube::core::Status {
            code,
            message: format!("status {code}"),
            ..kube::core::Status::default()
        })))
    }

    #[test]
    fn the_api_servers_answers_map_to_store_errors() {
        assert!(matches!(answer(409), StoreError::Conflict));
        assert!(matches!(answer(404), StoreError::NotFound));
        for code in [429, 500, 502, 503, 504] {
            assert!(answer(code).is_transient(), "{code}");
        }
        for code in [400, 401, 403, 422, 501] {
            let error = answer(code);
            assert!(
                matches!(&error, StoreError::Refused(m) if m.contains(&format!("status {code}"))),
                "{code}: {error:?}"
            );
        }
    }
}
