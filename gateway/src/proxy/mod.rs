//! The reverse proxy: forwards an authorized request to its upstream and streams the answer back.
//!
//! This is the "rewrite request → forward → rewrite response" part of the request path. It never
//! decides *whether* a request may pass; the caller has done that on exactly the request it hands
//! over (path, method, host), and this module forwards exactly that request:
//!
//! - the path and query are forwarded byte for byte as given in the request URI (the caller puts
//!   the canonical form there); the authority the client used is replaced by the upstream's;
//! - headers are rewritten by [`headers`], in the fixed order its documentation gives;
//! - bodies stream in both directions, never buffered: backpressure flows from the slower side;
//! - `Upgrade` (WebSocket) is carried through when allowed and the upstream answers `101`, then
//!   both upgraded connections are joined byte for byte.
//!
//! # Host, `X-Forwarded-*` and `Forwarded`
//! `Host` is the host the client asked for (what apps build absolute URLs and cookies from). Over
//! an HTTP/2 upstream `:authority` names the upstream (it is also the TLS server name) and `Host`
//! still carries the original host; servers that follow RFC 9113 strictly prefer `:authority`, so
//! apps should read `X-Forwarded-Host`. Making this a per-upstream choice is future work.
//! `X-Forwarded-For/-Proto/-Host/-Port` are always set. `Forwarded` (RFC 7239) is stripped and not
//! generated: two headers saying the same thing can disagree, and upstream frameworks pick either.

mod body;
mod error;
pub mod headers;
mod lapse;
#[cfg(test)]
mod tests;
mod upgrade;
mod upstream;

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, Uri, Version, header, uri::PathAndQuery};
use http_body::Body;
use http_body_util::BodyExt;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioTimer},
};
use rustls::{ClientConfig, RootCertStore, pki_types::CertificateDer, pki_types::pem::PemObject};
use tracing::{debug, warn};

pub use body::ProxyBody;
pub use error::{BoxError, ErrorChain, ProxyError};
pub use headers::{ForwardContext, GatewayCookies};
pub use lapse::Lapse;
pub use upstream::{Upstream, UpstreamError, UpstreamScheme};

use body::RequestBody;
use headers::UpgradeRequest;
use lapse::LapsingBody;
use upgrade::{Joined, accept_switch};

type HttpClient = Client<HttpsConnector<HttpConnector>, RequestBody>;

/// How the [`Proxy`] connects to upstreams.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// Trust the operating system's root store for https upstreams.
    pub native_roots: bool,
    /// Extra roots (PEM, one or more certificates) for https upstreams, e.g. the cluster's
    /// internal CA. Applies to every upstream of this proxy.
    pub extra_roots_pem: Option<Vec<u8>>,
    /// TCP connect timeout. Connect failures answer 502, like other connection failures.
    pub connect_timeout: Duration,
    /// How long an idle pooled upstream connection is kept.
    pub pool_idle_timeout: Duration,
    /// Idle connections kept per upstream.
    pub pool_max_idle_per_host: usize,
    /// `Upgrade` protocols carried through (lower-case, no version). Default: `websocket` only.
    /// `h2c` is refused whatever this says: after an h2c upgrade the client could send any
    /// number of requests to any path over the joined connection, unseen by the gateway.
    pub upgrade_protocols: Vec<String>,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            native_roots: true,
            extra_roots_pem: None,
            connect_timeout: Duration::from_secs(5),
            pool_idle_timeout: Duration::from_secs(60),
            pool_max_idle_per_host: 32,
            upgrade_protocols: vec!["websocket".to_owned()],
        }
    }
}

/// Forwards requests to upstreams over pooled connections. Cheap to clone (shared pools).
#[derive(Clone)]
pub struct Proxy {
    inner: Arc<Inner>,
}

struct Inner {
    /// h2 or HTTP/1.1 by ALPN for https, HTTP/1.1 for http.
    client: HttpClient,
    /// HTTP/1.1 only, also over TLS: upgrades do not exist in h2 (RFC 8441 extended CONNECT is
    /// not implemented), so an upgrade must not land on an h2 connection.
    h1_client: HttpClient,
    upgrade_protocols: Vec<String>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("upgrade_protocols", &self.inner.upgrade_protocols)
            .finish_non_exhaustive()
    }
}

impl Proxy {
    /// Builds the connection pools and the TLS configuration (aws-lc-rs provider, set explicitly
    /// so that the process-wide default cannot change it).
    pub fn new(config: ProxyConfig) -> Result<Self, ProxyError> {
        let tls = tls_config(&config)?;

        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(config.connect_timeout));
        http.set_nodelay(true);

        let both = HttpsConnectorBuilder::new()
            .with_tls_config(tls.clone())
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(http.clone());
        let h1 = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);

        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(config.pool_idle_timeout)
            .pool_max_idle_per_host(config.pool_max_idle_per_host);
        let upgrade_protocols = config
            .upgrade_protocols
            .iter()
            .map(|p| p.to_ascii_lowercase())
            .filter(|p| p != "h2c")
            .collect();
        Ok(Self {
            inner: Arc::new(Inner {
                client: builder.build(both),
                h1_client: builder.build(h1),
                upgrade_protocols,
            }),
        })
    }

    /// Forwards `req` to `upstream` and returns the upstream's response, body streaming.
    ///
    /// `req`'s URI supplies the path and query only; host, client address and identity come from
    /// `ctx`. An inbound HTTP/2 request works the same as an HTTP/1 one: the upstream request is
    /// always HTTP/1.1 semantics (h2 if ALPN picks it), with `Host` set from `ctx`.
    ///
    /// Errors are logged here, once, with their full detail; callers answer with
    /// [`ProxyError::status`] and [`ProxyError::public_message`].
    pub async fn forward<B>(
        &self,
        req: Request<B>,
        upstream: &Upstream,
        ctx: &ForwardContext,
    ) -> Result<Response<ProxyBody>, ProxyError>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        self.forward_leased(req, upstream, ctx, None).await
    }

    /// [`Proxy::forward`], cutting the exchange when `lapse` resolves: an upgraded connection
    /// is closed, a response body still streaming fails (the client sees an aborted response).
    pub async fn forward_leased<B>(
        &self,
        req: Request<B>,
        upstream: &Upstream,
        ctx: &ForwardContext,
        lapse: Option<Lapse>,
    ) -> Result<Response<ProxyBody>, ProxyError>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let result = self.forward_inner(req, upstream, ctx, lapse).await;
        if let Err(e) = &result {
            if e.is_upstream() {
                warn!(%upstream, category = e.category(), error = %e.chain(), "proxying failed");
            } else {
                debug!(%upstream, category = e.category(), error = %e.chain(), "request not proxied");
            }
        }
        result
    }

    /// The request path in order: refuse `CONNECT`, decide on an upgrade, rewrite the request,
    /// send it, accept a `101` only for what was asked, rewrite the response.
    #[tracing::instrument(
        target = "portcullis::trace",
        name = "upstream",
        skip_all,
        fields(otel.kind = "client", http.response.status_code = tracing::field::Empty)
    )]
    async fn forward_inner<B>(
        &self,
        req: Request<B>,
        upstream: &Upstream,
        ctx: &ForwardContext,
        lapse: Option<Lapse>,
    ) -> Result<Response<ProxyBody>, ProxyError>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let (mut parts, body) = req.into_parts();
        if parts.method == Method::CONNECT {
            return Err(ProxyError::UnsupportedRequest("CONNECT"));
        }

        // Decide on the upgrade before the headers are rewritten (that removes `Upgrade`).
        let upgrade = self.allowed_upgrade(&parts);
        let client_upgrade = match &upgrade {
            Some(_) => parts.extensions.remove::<hyper::upgrade::OnUpgrade>(),
            None => None,
        };

        let uri = upstream_uri(&parts.uri, upstream)?;
        headers::rewrite_request(&mut parts.headers, ctx, upgrade.as_ref())?;
        // The upstream's spans join this trace (the client's own context is replaced).
        portcullis_runtime::telemetry::inject(&mut parts.headers);
        let mut response = self
            .send(parts, uri, body, upstream, upgrade.is_some())
            .await?;
        tracing::Span::current().record("http.response.status_code", response.status().as_u16());

        let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
        if switching {
            let joined = Joined {
                client: client_upgrade,
                lapse,
            };
            accept_switch(&mut response, upgrade.as_ref(), joined, upstream)?;
            let (mut parts, _) = response.into_parts();
            headers::rewrite_response(&mut parts.headers, true, &ctx.gateway_cookies);
            return Ok(Response::from_parts(parts, body::empty()));
        }

        let (mut parts, body) = response.into_parts();
        headers::rewrite_response(&mut parts.headers, false, &ctx.gateway_cookies);
        let body = match lapse {
            Some(lapse) => LapsingBody::new(body, lapse).boxed(),
            None => body.map_err(BoxError::from).boxed(),
        };
        Ok(Response::from_parts(parts, body))
    }

    /// Sends the rewritten request as HTTP/1.1 semantics to `uri` and waits for the response
    /// head, within the upstream's timeout as [`body::head_deadline`] counts it. An upgrade
    /// goes over the HTTP/1.1-only pool.
    async fn send<B>(
        &self,
        parts: http::request::Parts,
        uri: Uri,
        body: B,
        upstream: &Upstream,
        upgrade: bool,
    ) -> Result<Response<hyper::body::Incoming>, ProxyError>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let (body, phase) = RequestBody::new(body);
        let mut out = Request::new(body);
        *out.method_mut() = parts.method;
        *out.uri_mut() = uri;
        *out.version_mut() = Version::HTTP_11;
        *out.headers_mut() = parts.headers;

        let client = if upgrade {
            &self.inner.h1_client
        } else {
            &self.inner.client
        };
        let timeout = upstream.response_head_timeout();
        tokio::select! {
            res = client.request(out) => res.map_err(ProxyError::from_client),
            () = body::head_deadline(phase, timeout) => Err(ProxyError::Timeout(timeout)),
        }
    }

    /// The upgrade to carry through, if the client asked for one this proxy allows and the
    /// server layer left hyper's upgrade handle on the request (HTTP/1.1 only).
    fn allowed_upgrade(&self, parts: &http::request::Parts) -> Option<UpgradeRequest> {
        if parts.version != Version::HTTP_11
            || !headers::connection_has(&parts.headers, "upgrade")
            || parts
                .extensions
                .get::<hyper::upgrade::OnUpgrade>()
                .is_none()
        {
            return None;
        }
        let mut values = parts.headers.get_all(header::UPGRADE).iter();
        let value = values.next()?;
        if values.next().is_some() {
            return None;
        }
        let protocols = headers::upgrade_protocols(value);
        let allowed = !protocols.is_empty()
            && protocols
                .iter()
                .all(|p| self.inner.upgrade_protocols.contains(p));
        allowed.then(|| UpgradeRequest {
            protocols: value.clone(),
        })
    }
}

/// `scheme://upstream-authority/path?query`: hyper-util picks the connection from scheme and
/// authority, and sends origin-form on HTTP/1.1 and `:authority` = upstream on h2.
fn upstream_uri(inbound: &Uri, upstream: &Upstream) -> Result<Uri, ProxyError> {
    let path_and_query = match inbound.path_and_query() {
        Some(pq) if pq.path().starts_with('/') => pq.clone(),
        Some(_) => {
            return Err(ProxyError::UnsupportedRequest(
                "request target is not a path",
            ));
        }
        None => PathAndQuery::from_static("/"),
    };
    Uri::builder()
        .scheme(upstream.http_scheme())
        .authority(upstream.authority().clone())
        .path_and_query(path_and_query)
        .build()
        .map_err(|_| ProxyError::UnsupportedRequest("request target is not a path"))
}

fn tls_config(config: &ProxyConfig) -> Result<ClientConfig, ProxyError> {
    let mut roots = RootCertStore::empty();
    if config.native_roots {
        let native = rustls_native_certs::load_native_certs();
        for e in &native.errors {
            warn!(error = %e, "could not load some system root certificates");
        }
        let (added, ignored) = roots.add_parsable_certificates(native.certs);
        debug!(added, ignored, "system roots loaded");
    }
    if let Some(pem) = &config.extra_roots_pem {
        let mut n = 0;
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| ProxyError::Setup(format!("upstream CA PEM: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| ProxyError::Setup(format!("upstream CA certificate: {e}")))?;
            n += 1;
        }
        if n == 0 {
            return Err(ProxyError::Setup(
                "upstream CA PEM holds no certificate".into(),
            ));
        }
    }
    if roots.is_empty() {
        warn!("no root certificates for https upstreams: every https upstream will fail");
    }
    portcullis_runtime::client_tls::config(roots)
        .map_err(|e| ProxyError::Setup(format!("TLS versions: {e}")))
}
