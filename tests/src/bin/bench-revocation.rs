//! `bench-revocation`: how long a revocation takes to reach every gateway, and how much memory
//! the operator and a gateway need for many sessions. Run by `hack/bench-revocation.sh`.
//!
//! Starts a private control plane (etcd, kube-apiserver, controller manager) in `--dir`, one
//! real `portcullis-operator` and N real `portcullis-gateway` processes in cluster mode
//! following it (see [`portcullis_tests::fleet`]). For each N in `--gateways`:
//!
//! 1. creates `--revocations` AccessSessions directly in the API server (the object a login
//!    writes) and mints an app token for each with the gateways' own signing key;
//! 2. waits until every gateway accepts every token;
//! 3. for each session in turn: checks once more that every gateway accepts it, sends
//!    `{"spec":{"revoked":true}}` as a merge patch, and from the moment the API server answers
//!    the patch polls every gateway (one keep-alive connection each, `--poll-pause` between
//!    requests) until each answers 401; the sample is the time until the *last* gateway
//!    refused.
//!
//! Then, with `--memory-sessions M`, it stops all but two gateways, creates M more sessions,
//! revokes `--memory-revoked` of them, waits until both gateways refuse the last one revoked,
//! and reports the VmRSS of the gateways and the operator and how long a new gateway takes to
//! become ready with that state.

use anyhow::{Context, Result, bail, ensure};
use clap::Parser;
use futures::{StreamExt, TryStreamExt, stream};
use portcullis_tests::{
    StackConfig,
    cluster::{create_namespace, install_crds},
    fleet::{Fleet, FleetOptions, Probe, Verdict, rss_bytes},
    stack::Stack,
    stream_clients::StreamClients,
};
use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

const NAMESPACE: &str = "bench";

#[derive(Parser)]
#[command(about = "Revocation propagation to N gateways, and memory with many sessions")]
struct Cli {
    /// The `portcullis-gateway` executable (a release build for meaningful numbers).
    #[arg(long)]
    gateway_bin: PathBuf,
    /// The `portcullis-operator` executable.
    #[arg(long)]
    operator_bin: PathBuf,
    /// Working directory: the private control plane, keys, logs.
    #[arg(long)]
    dir: PathBuf,
    /// Fleet sizes to measure, in increasing order (gateways are added, never restarted).
    #[arg(long, value_delimiter = ',', default_value = "2,10,20")]
    gateways: Vec<usize>,
    /// Revocations measured per fleet size.
    #[arg(long, default_value_t = 100)]
    revocations: usize,
    /// Pause between two requests of one gateway's poller (0: back to back).
    #[arg(long, default_value = "1ms", value_parser = humantime_ms)]
    poll_pause: Duration,
    /// How a gateway's refusal is timed. `applied`: each gateway's own clock of the moment it
    /// applied the stream version carrying the revocation (its
    /// `portcullis_gateway_operator_stream_advanced_timestamp_seconds`), read after the fact,
    /// then one request per gateway confirms it refuses; `poll`: the moment a poller first got
    /// a 401 (with many gateways on two CPUs the pollers themselves load the machine).
    #[arg(long, default_value = "applied", value_parser = ["applied", "poll"])]
    measure: String,
    /// Sizes of a simulated fleet of stream clients (`portcullis_tests::stream_clients`):
    /// after the gateways, the time from the patch's answer until every client has the
    /// revocation, with all but two gateways stopped (empty: skip).
    #[arg(long, value_delimiter = ',')]
    stream_clients: Vec<usize>,
    /// Revocations sent at once (32 concurrent patches) to each simulated fleet after its
    /// latency samples: how many frames per second the operator delivers (0: skip).
    #[arg(long, default_value_t = 1000)]
    burst: usize,
    /// In `applied` mode, how long to wait after the witness has the revocation before reading
    /// the gateways' metrics: the gateways time themselves, and reading 100 of them while the
    /// last are still applying would slow exactly those.
    #[arg(long, default_value = "250ms", value_parser = humantime_ms)]
    scrape_after: Duration,
    /// Pause after each revocation before the next one.
    #[arg(long, default_value = "100ms", value_parser = humantime_ms)]
    settle: Duration,
    /// Sessions to create for the memory measurement (0: skip it).
    #[arg(long, default_value_t = 0)]
    memory_sessions: usize,
    /// How many of those to revoke.
    #[arg(long, default_value_t = 0)]
    memory_revoked: usize,
    /// Concurrent API requests while creating sessions in bulk.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// `RUST_LOG` of the gateways and the operator.
    #[arg(long, default_value = "warn")]
    log: String,
}

/// `250ms`, `2s` or a plain number of milliseconds.
fn humantime_ms(text: &str) -> Result<Duration, String> {
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map_or((text, "ms"), |i| text.split_at(i));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("bad duration {text:?}"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        _ => Err(format!("bad duration unit in {text:?} (ms or s)")),
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    portcullis_tests::tool_main("bench-revocation", "warn", run()).await
}

async fn run() -> Result<()> {
    let cli = Cli::parse();
    ensure!(
        cli.gateways.windows(2).all(|w| w[0] < w[1]) && cli.gateways.first() > Some(&0),
        "--gateways must be increasing and positive"
    );
    ensure!(
        cli.memory_revoked <= cli.memory_sessions,
        "--memory-revoked exceeds --memory-sessions"
    );
    std::fs::create_dir_all(&cli.dir).context("creating the working directory")?;
    eprintln!("starting a private control plane in {}", cli.dir.display());
    let stack = Stack::start(StackConfig::new(cli.dir.join("stack"))).await?;
    let result = bench(&cli, &stack).await;
    stack.stop().await?;
    result
}

async fn bench(cli: &Cli, stack: &Stack) -> Result<()> {
    let client = stack.client().await?;
    install_crds(&client).await?;
    create_namespace(&client, NAMESPACE, &[]).await?;
    let log = vec![("RUST_LOG".to_owned(), cli.log.clone())];
    let mut fleet = Fleet::start(FleetOptions {
        dir: &cli.dir.join("fleet"),
        client: &client,
        kubeconfig: &stack.info().kubeconfig,
        namespace: NAMESPACE,
        gateway_bin: &cli.gateway_bin,
        operator_bin: &cli.operator_bin,
        gateways: 0,
        gateway_env: log.clone(),
        operator_env: log,
    })
    .await?;
    let result = measure(cli, &mut fleet).await;
    fleet.stop().await?;
    result
}

async fn measure(cli: &Cli, fleet: &mut Fleet) -> Result<()> {
    println!(
        "| gateways | revocations | p50 (ms) | p99 (ms) | max (ms) | min (ms) | from sending the patch: p50 (ms) | p99 (ms) | patch round trip p50 (ms) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &n in &cli.gateways {
        while fleet.gateways.len() < n {
            fleet.add_gateway().await?;
        }
        let run = propagation(cli, fleet, &format!("n{n}")).await?;
        let mut samples = run.samples.clone();
        samples.sort_by(f64::total_cmp);
        let mut patches = run.patch_round_trips.clone();
        patches.sort_by(f64::total_cmp);
        let mut from_sent = run.from_sent.clone();
        from_sent.sort_by(f64::total_cmp);
        println!(
            "| {n} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
            samples.len(),
            percentile(&samples, 50.0),
            percentile(&samples, 99.0),
            samples.last().copied().unwrap_or_default(),
            samples.first().copied().unwrap_or_default(),
            percentile(&from_sent, 50.0),
            percentile(&from_sent, 99.0),
            percentile(&patches, 50.0),
        );
        let rss: Vec<u64> = fleet
            .gateways
            .iter()
            .filter_map(|g| g.pid())
            .filter_map(|pid| rss_bytes(pid).ok())
            .collect();
        eprintln!(
            "N={n}: gateway VmRSS max {:.1} MiB; operator {:.1} MiB; samples (ms): {:?}",
            mib(rss.iter().copied().max().unwrap_or_default()),
            mib(fleet.operator.pid().map_or(Ok(0), rss_bytes)?),
            samples
        );
    }
    if !cli.stream_clients.is_empty() {
        simulated::fleets(cli, fleet).await?;
    }
    if cli.memory_sessions > 0 {
        memory(cli, fleet).await?;
    }
    Ok(())
}

struct Propagation {
    /// Milliseconds from the API server's answer to the patch until the last gateway refused.
    samples: Vec<f64>,
    /// Milliseconds from sending the patch until the last gateway refused: the watch event
    /// can reach the operator before the patch's answer reaches the client.
    from_sent: Vec<f64>,
    /// Milliseconds the patch request itself took.
    patch_round_trips: Vec<f64>,
}

async fn propagation(cli: &Cli, fleet: &Fleet, tag: &str) -> Result<Propagation> {
    let sids: Vec<String> = (0..cli.revocations).map(|i| format!("{tag}-{i}")).collect();
    create_sessions(fleet, &sids, cli.concurrency).await?;
    let tokens = sids
        .iter()
        .map(|sid| fleet.app_token(sid))
        .collect::<Result<Vec<_>>>()?;
    let probes = (0..fleet.gateways.len())
        .map(|i| fleet.probe(i))
        .collect::<Result<Vec<_>>>()?;
    // Every gateway accepts every token before anything is revoked.
    for token in &tokens {
        fleet
            .until_everywhere(
                token,
                Verdict::Accepted,
                Duration::from_millis(20),
                Duration::from_secs(30),
            )
            .await
            .context("waiting until every gateway accepts the new sessions")?;
    }
    let mut witness = match cli.measure.as_str() {
        "applied" => Some(
            StreamClients::connect(&fleet.stream_access(), &format!("witness-{tag}"), 1, 1).await?,
        ),
        _ => None,
    };
    let mut samples = Vec::with_capacity(sids.len());
    let mut patch_round_trips = Vec::with_capacity(sids.len());
    let mut from_sent = Vec::with_capacity(sids.len());
    for (sid, token) in sids.iter().zip(&tokens) {
        every(&probes, |p| {
            let token = token.clone();
            async move {
                ensure!(
                    p.ask(&token).await? == Verdict::Accepted,
                    "refused before its revocation"
                );
                Ok(())
            }
        })
        .await?;
        let sent = Instant::now();
        let sent_wall = unix_now();
        fleet.revoke(sid).await?;
        let accepted = Instant::now();
        let accepted_wall = unix_now();
        if let Some(witness) = witness.as_mut() {
            // Each gateway's own time of applying the version that carries the revocation.
            let version = witness.until_ended(sid, Duration::from_secs(30)).await?[0].version;
            tokio::time::sleep(cli.scrape_after).await;
            let applied = applied::every(fleet, version).await?;
            let last = applied.iter().copied().fold(f64::MIN, f64::max);
            samples.push(((last - accepted_wall) * 1000.0).max(0.0));
            from_sent.push(((last - sent_wall) * 1000.0).max(0.0));
            // And each of them refuses the token now.
            every(&probes, |p| {
                let token = token.clone();
                async move {
                    ensure!(
                        p.ask(&token).await? == Verdict::Refused,
                        "applied the revocation but accepts the token"
                    );
                    Ok(())
                }
            })
            .await?;
        } else {
            let pause = cli.poll_pause;
            let refused_at = stream::iter(probes.iter().cloned())
                .map(|p| {
                    let token = token.clone();
                    async move {
                        p.until(&token, Verdict::Refused, pause, Duration::from_secs(30))
                            .await?;
                        Ok::<_, anyhow::Error>(Instant::now())
                    }
                })
                .buffer_unordered(probes.len())
                .try_collect::<Vec<_>>()
                .await
                .with_context(|| format!("waiting until every gateway refuses {sid}"))?;
            let last = refused_at.into_iter().max().context("no gateways")?;
            samples.push(ms(last.saturating_duration_since(accepted)));
            from_sent.push(ms(last - sent));
        }
        patch_round_trips.push(ms(accepted - sent));
        tokio::time::sleep(cli.settle).await;
    }
    Ok(Propagation {
        samples,
        from_sent,
        patch_round_trips,
    })
}

/// Runs `f` against every probe at once; the first error wins.
async fn every<F, Fut>(probes: &[Probe], f: F) -> Result<()>
where
    F: Fn(Probe) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    stream::iter(probes.iter().cloned().map(&f))
        .buffer_unordered(probes.len().max(1))
        .try_collect::<Vec<_>>()
        .await
        .map(|_| ())
}

async fn create_sessions(fleet: &Fleet, sids: &[String], concurrency: usize) -> Result<()> {
    stream::iter(sids)
        .map(|sid| fleet.create_session(sid))
        .buffer_unordered(concurrency.max(1))
        .try_collect::<Vec<_>>()
        .await
        .map(|_| ())
}

async fn memory(cli: &Cli, fleet: &mut Fleet) -> Result<()> {
    while fleet.gateways.len() > 2 {
        if let Some(mut g) = fleet.gateways.pop() {
            g.stop().await?;
        }
    }
    let before_gateway = gateway_rss(fleet)?;
    let before_operator = fleet.operator.pid().map_or(Ok(0), rss_bytes)?;
    let sids: Vec<String> = (0..cli.memory_sessions)
        .map(|i| format!("mem-{i}"))
        .collect();
    let started = Instant::now();
    for (i, chunk) in sids.chunks(5000).enumerate() {
        create_sessions(fleet, chunk, cli.concurrency).await?;
        eprintln!(
            "created {} sessions in {:.0?}",
            (i * 5000 + chunk.len()),
            started.elapsed()
        );
    }
    let created_in = started.elapsed();
    let revoked = &sids[..cli.memory_revoked];
    let started = Instant::now();
    stream::iter(revoked)
        .map(|sid| fleet.revoke(sid))
        .buffer_unordered(cli.concurrency.max(1))
        .try_collect::<Vec<_>>()
        .await?;
    let revoked_in = started.elapsed();
    // Enforced everywhere: the last revoked and one live session, at both gateways.
    if let Some(last) = revoked.last() {
        let token = fleet.app_token(last)?;
        fleet
            .until_everywhere(
                &token,
                Verdict::Refused,
                Duration::from_millis(50),
                Duration::from_secs(120),
            )
            .await?;
    }
    if let Some(live) = sids.last().filter(|_| cli.memory_revoked < sids.len()) {
        let token = fleet.app_token(live)?;
        fleet
            .until_everywhere(
                &token,
                Verdict::Accepted,
                Duration::from_millis(50),
                Duration::from_secs(120),
            )
            .await?;
    }
    // Let allocations settle after the bulk deltas.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after_gateway = gateway_rss(fleet)?;
    let after_operator = fleet.operator.pid().map_or(Ok(0), rss_bytes)?;
    let started = Instant::now();
    let mut fresh = fleet.start_extra_gateway().await?;
    let ready_in = started.elapsed();
    let fresh_rss = fresh.pid().map_or(Ok(0), rss_bytes)?;
    // What of that is the snapshot's passing memory (the allocator returns freed pages after
    // a delay): the same gateway once it has settled.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let settled_rss = fresh.pid().map_or(Ok(0), rss_bytes)?;
    fresh.stop().await?;
    println!();
    println!(
        "memory: {} sessions created in {:.1} s, {} revoked in {:.1} s (plus the {} of the propagation runs)",
        sids.len(),
        created_in.as_secs_f64(),
        revoked.len(),
        revoked_in.as_secs_f64(),
        cli.revocations * cli.gateways.len(),
    );
    println!();
    println!("| process | VmRSS before (MiB) | VmRSS after (MiB) |");
    println!("|---|---:|---:|");
    println!(
        "| gateway (max of {}) | {:.1} | {:.1} |",
        fleet.gateways.len(),
        mib(before_gateway),
        mib(after_gateway)
    );
    println!(
        "| operator | {:.1} | {:.1} |",
        mib(before_operator),
        mib(after_operator)
    );
    println!("| new gateway, just ready | – | {:.1} |", mib(fresh_rss));
    println!(
        "| new gateway, 5 s after ready | – | {:.1} |",
        mib(settled_rss)
    );
    println!();
    println!(
        "new gateway ready with that state in {:.0} ms (process start to /readyz 200, polled every 50 ms)",
        ms(ready_in)
    );
    if ready_in > Duration::from_secs(60) {
        bail!("the new gateway took {ready_in:?}");
    }
    Ok(())
}

fn gateway_rss(fleet: &Fleet) -> Result<u64> {
    let mut max = 0;
    for gateway in &fleet.gateways {
        let pid = gateway.pid().context("a gateway is not running")?;
        max = max.max(rss_bytes(pid)?);
    }
    Ok(max)
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Seconds since the Unix epoch, the clock the gateways' timestamps use.
fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// When each gateway applied a stream version, from its own metrics.
mod applied {
    use super::*;

    /// The time (Unix seconds) each gateway of `fleet` applied `version` or a later one
    /// (nothing else changes during a run, so it is that version's), asking each every 5 ms
    /// until it has.
    pub async fn every(fleet: &Fleet, version: u64) -> Result<Vec<f64>> {
        let client = reqwest::Client::new();
        let urls: Vec<String> = fleet
            .gateways
            .iter()
            .map(|g| format!("http://{}/metrics", g.ops_addr))
            .collect();
        stream::iter(urls)
            .map(|url| {
                let client = client.clone();
                async move { at(&client, &url, version).await }
            })
            .buffer_unordered(16)
            .try_collect()
            .await
    }

    async fn at(client: &reqwest::Client, url: &str, version: u64) -> Result<f64> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = client.get(url).send().await?.text().await?;
            let value = |name: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                    .and_then(|v| v.trim().parse::<f64>().ok())
            };
            let now = value("portcullis_gateway_operator_stream_version").unwrap_or(0.0);
            if now >= version as f64 {
                return value("portcullis_gateway_operator_stream_advanced_timestamp_seconds")
                    .with_context(|| format!("{url}: no advance timestamp"));
            }
            if Instant::now() > deadline {
                bail!("{url}: still at version {now}, not {version}");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// The operator's fan-out to a simulated fleet of stream clients.
mod simulated {
    use super::*;

    pub async fn fleets(cli: &Cli, fleet: &mut Fleet) -> Result<()> {
        while fleet.gateways.len() > 2 {
            if let Some(mut g) = fleet.gateways.pop() {
                g.stop().await?;
            }
        }
        println!();
        println!(
            "| stream clients | real gateways | revocations | p50 (ms) | p99 (ms) | max (ms) | min (ms) | burst: revocations | burst: API server took them in (ms) | burst: every client has all (ms) | of which after the last patch (ms) | frames delivered per s | operator VmRSS (MiB) |"
        );
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for &n in &cli.stream_clients {
            let mut clients =
                StreamClients::connect(&fleet.stream_access(), &format!("sim{n}"), n, 64).await?;
            let sids: Vec<String> = (0..cli.revocations)
                .map(|i| format!("sim{n}-{i}"))
                .collect();
            create_sessions(fleet, &sids, cli.concurrency).await?;
            tokio::time::sleep(Duration::from_secs(2)).await;
            let mut samples = Vec::with_capacity(sids.len());
            for sid in &sids {
                fleet.revoke(sid).await?;
                let accepted = Instant::now();
                let receipts = clients.until_ended(sid, Duration::from_secs(30)).await?;
                let last = receipts.iter().map(|r| r.at).max().context("no clients")?;
                samples.push(ms(last.saturating_duration_since(accepted)));
                tokio::time::sleep(cli.settle).await;
            }
            samples.sort_by(f64::total_cmp);
            let burst_ms = burst(cli, fleet, &mut clients).await?;
            println!(
                "| {n} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.1} |",
                fleet.gateways.len(),
                samples.len(),
                percentile(&samples, 50.0),
                percentile(&samples, 99.0),
                samples.last().copied().unwrap_or_default(),
                samples.first().copied().unwrap_or_default(),
                cli.burst,
                burst_ms.patches,
                burst_ms.total,
                burst_ms.after_patches,
                (cli.burst * n) as f64 / (burst_ms.total / 1000.0).max(1e-9),
                mib(fleet.operator.pid().map_or(Ok(0), rss_bytes)?),
            );
            eprintln!("{n} stream clients: samples (ms): {samples:?}");
        }
        Ok(())
    }

    /// A burst's times, in milliseconds.
    #[derive(Default)]
    pub struct Burst {
        /// From sending the first revocation until every client has every one of them.
        total: f64,
        /// From the API server's answer to the last patch until then.
        after_patches: f64,
        /// Until the API server had answered every patch.
        patches: f64,
    }

    /// `--burst` concurrent revocations, timed until every client has every one of them.
    async fn burst(cli: &Cli, fleet: &Fleet, clients: &mut StreamClients) -> Result<Burst> {
        if cli.burst == 0 {
            return Ok(Burst::default());
        }
        let tag = format!("burst{}", clients.len());
        let sids: Vec<String> = (0..cli.burst).map(|i| format!("{tag}-{i}")).collect();
        create_sessions(fleet, &sids, cli.concurrency).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let set = sids.iter().cloned().collect();
        let started = Instant::now();
        let wait = clients.until_all_ended(&set, Duration::from_secs(300));
        let revoke = async {
            stream::iter(&sids)
                .map(|sid| fleet.revoke(sid))
                .buffer_unordered(cli.concurrency.max(1))
                .try_collect::<Vec<_>>()
                .await?;
            Ok::<_, anyhow::Error>(Instant::now())
        };
        let (last, patched) = tokio::join!(wait, revoke);
        let (last, patched) = (last?, patched?);
        Ok(Burst {
            total: ms(last.saturating_duration_since(started)),
            after_patches: ms(last.saturating_duration_since(patched)),
            patches: ms(patched.saturating_duration_since(started)),
        })
    }
}
