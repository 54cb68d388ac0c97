//! Lightweight clients of the operator's state stream, for measuring the operator's fan-out
//! without a gateway process per stream: each is one authenticated `GET /v1/state` on its own
//! TLS connection that parses every NDJSON frame as a gateway does, acknowledges what it
//! received (`POST /v1/ack`, in the background and coalesced, as a gateway does after
//! applying), and reports when a session reaches it as ended.
//!
//! A thousand of them cost the benchmark one process; a thousand real gateways would not fit
//! on the machine. They stand for the operator's side of the path only: what a gateway does
//! with a frame after it arrives is measured with real gateways.

use anyhow::{Context, Result, bail};
use futures::{StreamExt, stream};
use portcullis_protocol::{
    Ack, Frame,
    frame::{ACK_COALESCE_MS, ACK_PATH, GATEWAY_ID_HEADER, STATE_PATH},
    lines::Lines,
};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::{
    sync::{mpsc, watch},
    task::JoinSet,
};

/// Where and how to reach the operator's stream.
#[derive(Clone, Debug)]
pub struct StreamAccess {
    /// `https://host:port` of the operator.
    pub url: String,
    /// The CA that signed the operator's serving certificate.
    pub ca_file: PathBuf,
    /// A token of a ServiceAccount the operator serves the state to.
    pub token_file: PathBuf,
}

/// A session reaching one client as ended.
#[derive(Clone, Debug)]
pub struct Receipt {
    pub client: usize,
    pub sid: String,
    /// The stream version of the frame that carried it.
    pub version: u64,
    pub at: Instant,
}

/// Running stream clients. Dropping it closes every stream.
pub struct StreamClients {
    receipts: mpsc::UnboundedReceiver<Receipt>,
    tasks: JoinSet<Result<()>>,
    count: usize,
}

impl StreamClients {
    /// Opens `count` streams (named `<prefix>-<n>`), at most `concurrency` connecting at once,
    /// and waits until each has received its snapshot.
    pub async fn connect(
        access: &StreamAccess,
        prefix: &str,
        count: usize,
        concurrency: usize,
    ) -> Result<Self> {
        if count > 250 * 250 {
            bail!("at most 62 500 stream clients (one loopback address each)");
        }
        let token = std::fs::read_to_string(&access.token_file)
            .with_context(|| format!("reading {}", access.token_file.display()))?
            .trim()
            .to_owned();
        let (receipts_tx, receipts) = mpsc::unbounded_channel();
        let (ready_tx, mut ready) = mpsc::unbounded_channel();
        let opened = stream::iter(0..count)
            .map(|n| {
                let id = format!("{prefix}-{n}");
                open(access, token.clone(), id, n)
            })
            .buffered(concurrency.max(1))
            .collect::<Vec<_>>()
            .await;
        let mut tasks = JoinSet::new();
        for (n, client) in opened.into_iter().enumerate() {
            let client = client?;
            let receipts = receipts_tx.clone();
            let ready = ready_tx.clone();
            tasks.spawn(client.follow(n, receipts, ready));
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        for got in 0..count {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, ready.recv()).await {
                Ok(Some(())) => {}
                _ => bail!("only {got} of {count} stream clients received a snapshot"),
            }
        }
        Ok(Self {
            receipts,
            tasks,
            count,
        })
    }

    /// How many clients there are.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Waits until every client has received session `sid` as ended; their receipts. Fails
    /// after `limit`, or when a client's stream ended.
    pub async fn until_ended(&mut self, sid: &str, limit: Duration) -> Result<Vec<Receipt>> {
        let deadline = Instant::now() + limit;
        let mut seen = vec![false; self.count];
        let mut got = Vec::with_capacity(self.count);
        while got.len() < self.count {
            if let Some(ended) = self.tasks.try_join_next() {
                bail!(
                    "a stream client stopped: {:?}",
                    ended.map_err(|e| e.to_string())
                );
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let receipt = match tokio::time::timeout(left, self.receipts.recv()).await {
                Ok(Some(receipt)) => receipt,
                _ => bail!("{} of {} clients saw {sid} end", got.len(), self.count),
            };
            if receipt.sid == sid && !std::mem::replace(&mut seen[receipt.client], true) {
                got.push(receipt);
            }
        }
        Ok(got)
    }
}

impl StreamClients {
    /// Waits until every client has received every session of `sids` as ended; when the last
    /// one arrived. Fails after `limit`, or when a client's stream ended.
    pub async fn until_all_ended(
        &mut self,
        sids: &std::collections::HashSet<String>,
        limit: Duration,
    ) -> Result<Instant> {
        let deadline = Instant::now() + limit;
        let mut seen = vec![std::collections::HashSet::new(); self.count];
        let mut complete = 0;
        let mut last = Instant::now();
        while complete < self.count {
            if let Some(ended) = self.tasks.try_join_next() {
                bail!(
                    "a stream client stopped: {:?}",
                    ended.map_err(|e| e.to_string())
                );
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let receipt = match tokio::time::timeout(left, self.receipts.recv()).await {
                Ok(Some(receipt)) => receipt,
                _ => bail!(
                    "{complete} of {} clients saw all {} sessions end",
                    self.count,
                    sids.len()
                ),
            };
            if sids.contains(&receipt.sid) && seen[receipt.client].insert(receipt.sid) {
                last = last.max(receipt.at);
                if seen[receipt.client].len() == sids.len() {
                    complete += 1;
                }
            }
        }
        Ok(last)
    }
}

/// One opened stream.
struct Client {
    http: reqwest::Client,
    response: reqwest::Response,
    ack_url: String,
    token: String,
    id: String,
}

/// Connects client `n` on a connection of its own (its own `reqwest::Client`: one pool would
/// multiplex every stream over a single HTTP/2 connection, which no fleet of gateways does),
/// from a loopback address of its own: gateways are pods with addresses of their own, and the
/// operator allows each address a bounded number of connections (256 by default).
async fn open(access: &StreamAccess, token: String, id: String, n: usize) -> Result<Client> {
    let url = url::Url::parse(&access.url).context("the operator's URL")?;
    let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
        bail!("{}: no host or port", access.url);
    };
    let source = std::net::Ipv4Addr::new(127, 1, (n / 250) as u8, (n % 250 + 1) as u8);
    let http = crate::dex::http_client_builder(&access.ca_file)?
        .timeout(Duration::from_secs(24 * 3600))
        .local_address(std::net::IpAddr::V4(source))
        .resolve(host, std::net::SocketAddr::from(([127, 0, 0, 1], port)))
        .build()
        .context("building a stream client")?;
    let response = http
        .get(format!("{}{STATE_PATH}", access.url))
        .bearer_auth(&token)
        .header(GATEWAY_ID_HEADER, &id)
        .send()
        .await
        .with_context(|| format!("opening the stream of {id}"))?;
    if !response.status().is_success() {
        bail!("the operator answered {} to {id}", response.status());
    }
    Ok(Client {
        http,
        response,
        ack_url: format!("{}{ACK_PATH}", access.url),
        token,
        id,
    })
}

impl Client {
    async fn follow(
        mut self,
        n: usize,
        receipts: mpsc::UnboundedSender<Receipt>,
        ready: mpsc::UnboundedSender<()>,
    ) -> Result<()> {
        let mut lines = Lines::default();
        let mut instance = None;
        let acks = self.acker();
        while let Some(chunk) = self.response.chunk().await? {
            let at = Instant::now();
            lines.extend(&chunk);
            let mut version = None;
            lines.take_complete(|line| {
                let frame: Frame = serde_json::from_slice(line)
                    .with_context(|| format!("{}: a frame that does not parse", self.id))?;
                version = Some(frame.version());
                match frame {
                    Frame::Snapshot { instance: i, .. } => {
                        instance = Some(i);
                        let _ = ready.send(());
                    }
                    Frame::Session { version, session } if session.ended => {
                        let sid = session.sid;
                        let _ = receipts.send(Receipt {
                            client: n,
                            sid,
                            version,
                            at,
                        });
                    }
                    _ => {}
                }
                Ok::<_, anyhow::Error>(())
            })?;
            if let (Some(instance), Some(version)) = (&instance, version) {
                acks.send_replace(Some((instance.clone(), version)));
            }
        }
        bail!("{}: the operator ended the stream", self.id)
    }

    /// Acknowledges in the background, after the same wait and coalescing to the latest
    /// version, as a gateway does (`gateway/src/state/operator_stream/ack.rs`): reading the
    /// stream never waits for an ack.
    fn acker(&self) -> watch::Sender<Option<(String, u64)>> {
        let (latest, mut rx) = watch::channel::<Option<(String, u64)>>(None);
        let (http, url, token, id) = (
            self.http.clone(),
            self.ack_url.clone(),
            self.token.clone(),
            self.id.clone(),
        );
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                tokio::time::sleep(Duration::from_millis(ACK_COALESCE_MS)).await;
                let Some((instance, version)) = rx.borrow_and_update().clone() else {
                    continue;
                };
                let sent = http
                    .post(&url)
                    .bearer_auth(&token)
                    .header(GATEWAY_ID_HEADER, &id)
                    .json(&Ack { instance, version })
                    .send()
                    .await;
                match sent {
                    Ok(answer) if answer.status().is_success() => {}
                    // Acks are not what is measured: a refused one is reported, not fatal.
                    Ok(answer) => {
                        eprintln!("{id}: the operator answered {} to an ack", answer.status())
                    }
                    Err(error) => eprintln!("{id}: acknowledging failed: {error}"),
                }
            }
        });
        latest
    }
}

/// The [`StreamAccess`] of a fleet's operator: the gateways' own token and CA.
pub fn access(url: String, ca_file: &Path, token_file: &Path) -> StreamAccess {
    StreamAccess {
        url,
        ca_file: ca_file.to_owned(),
        token_file: token_file.to_owned(),
    }
}
