//! Upgraded connections (WebSocket): the upstream's `101` is accepted only as the answer to the
//! upgrade the proxy carried through, then both connections are joined byte for byte until
//! either side closes, or the exchange's admission lapses.

use super::{BoxError, Lapse, ProxyError, Upstream, headers, headers::UpgradeRequest};
use http::{Response, header};
use hyper_util::rt::TokioIo;
use tracing::debug;

/// Accepts the upstream's `101` only as the answer to an upgrade this proxy carried through,
/// to exactly one of the protocols the client offered; then joins the two upgraded connections
/// in the background.
pub(super) fn accept_switch(
    response: &mut Response<hyper::body::Incoming>,
    requested: Option<&UpgradeRequest>,
    Joined { client, lapse }: Joined,
    upstream: &Upstream,
) -> Result<(), ProxyError> {
    let (Some(requested), Some(client_upgrade)) = (requested, client) else {
        return Err(ProxyError::UpstreamMisbehaved(
            "101 without an upgrade request",
        ));
    };
    let accepted = response
        .headers()
        .get(header::UPGRADE)
        .map(headers::upgrade_protocols)
        .unwrap_or_default();
    let offered = headers::upgrade_protocols(&requested.protocols);
    if accepted.len() != 1 || !offered.contains(&accepted[0]) {
        return Err(ProxyError::UpstreamMisbehaved(
            "101 to a protocol not requested",
        ));
    }
    let upstream_upgrade = hyper::upgrade::on(response);
    let target = upstream.to_string();
    tokio::spawn(async move {
        let joined = join_upgraded(client_upgrade, upstream_upgrade);
        let result = match lapse {
            Some(lapse) => tokio::select! {
                result = joined => result,
                reason = lapse => {
                    debug!(upstream = %target, reason, "upgraded connection cut: its admission lapsed");
                    return;
                }
            },
            None => joined.await,
        };
        if let Err(e) = result {
            debug!(upstream = %target, error = %e, "upgraded connection ended with an error");
        }
    });
    Ok(())
}

/// The client's side of an upgrade, and what ends it early.
pub(super) struct Joined {
    pub(super) client: Option<hyper::upgrade::OnUpgrade>,
    pub(super) lapse: Option<Lapse>,
}

/// Joins the client's and the upstream's upgraded connections until either side closes.
async fn join_upgraded(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
) -> Result<(u64, u64), BoxError> {
    let (client, upstream) = tokio::try_join!(client, upstream)?;
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    Ok(tokio::io::copy_bidirectional(&mut client, &mut upstream).await?)
}
