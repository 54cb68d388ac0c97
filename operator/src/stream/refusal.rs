//! Why a request to the stream API or the peer API was refused: its HTTP status, the error
//! code of its body and its metric label, in one place.

use crate::metrics::Metrics;
use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use portcullis_protocol::ErrorBody;

/// A refused request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A gateway's token belongs to a user that is not an allowed gateway.
    Forbidden,
    /// The TokenReview of a gateway's token failed.
    ReviewFailed,
    /// No token, or one the API server does not accept.
    Unauthenticated,
    /// This replica has not listed everything yet.
    NotSynced,
    MissingGatewayId,
    MalformedAck,
    /// An ack of versions another replica sent.
    OtherInstance,
    /// A relay from a user that is not a replica of this operator.
    PeerForbidden,
    PeerUnauthenticated,
    PeerReviewFailed,
    /// A relay to a replica that does not lead.
    NotLeader,
    MalformedRelay,
    /// A relay delta the leader cannot build on: the follower must send a full one.
    Resync,
}

impl Refusal {
    pub fn status(self) -> StatusCode {
        match self {
            Refusal::Forbidden | Refusal::PeerForbidden => StatusCode::FORBIDDEN,
            Refusal::Unauthenticated | Refusal::PeerUnauthenticated => StatusCode::UNAUTHORIZED,
            Refusal::ReviewFailed | Refusal::PeerReviewFailed | Refusal::NotSynced => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Refusal::MissingGatewayId | Refusal::MalformedAck | Refusal::MalformedRelay => {
                StatusCode::BAD_REQUEST
            }
            Refusal::OtherInstance | Refusal::NotLeader | Refusal::Resync => StatusCode::CONFLICT,
        }
    }

    /// The `error` of the JSON body.
    pub fn code(self) -> &'static str {
        match self {
            Refusal::Forbidden | Refusal::PeerForbidden => "forbidden",
            Refusal::ReviewFailed | Refusal::PeerReviewFailed => "review_failed",
            Refusal::Unauthenticated | Refusal::PeerUnauthenticated => "unauthenticated",
            Refusal::NotSynced => "not_synced",
            Refusal::MissingGatewayId => "missing_gateway_id",
            Refusal::MalformedAck => "malformed_ack",
            Refusal::OtherInstance => "other_instance",
            Refusal::NotLeader => "not_leader",
            Refusal::MalformedRelay => "malformed",
            Refusal::Resync => "resync",
        }
    }

    /// The `requests_refused` label, for the refusals counted there.
    fn metric(self) -> Option<&'static str> {
        match self {
            Refusal::Forbidden => Some("forbidden"),
            Refusal::ReviewFailed => Some("review_failed"),
            Refusal::Unauthenticated => Some("unauthenticated"),
            Refusal::NotSynced => Some("not_synced"),
            Refusal::PeerForbidden => Some("peer_forbidden"),
            Refusal::PeerUnauthenticated => Some("peer_unauthenticated"),
            _ => None,
        }
    }

    /// Counts the refusal and answers it with `message`.
    pub fn respond(self, metrics: &Metrics, message: String) -> Response {
        if let Some(label) = self.metric() {
            metrics.refused(label);
        }
        (
            self.status(),
            Json(ErrorBody {
                error: self.code().to_owned(),
                message,
            }),
        )
            .into_response()
    }
}
