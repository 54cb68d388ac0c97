//! The fault matrix (`docs/operations.md`, "Fault matrix"), the rows that need many
//! revocations for a percentile: real etcd and API server, the real `portcullis-operator` and
//! two real `portcullis-gateway` processes in cluster mode, sessions created as a login creates
//! them and app tokens signed with the gateways' key (`portcullis_tests::fleet`).
//!
//! Each row keeps a steady loop of requests for live sessions at every ready gateway, and makes
//! revocations spread over the whole fault, from its first moment (before any gateway can have
//! noticed it). Each prints one `FAULT` line with its figures: failed requests for live
//! sessions, the time from the API server accepting a revocation to every gateway refusing it
//! (p50, p99, max), and whether anything revoked was admitted after recovery. The length of a
//! fault is `PORTCULLIS_FAULT_SECS` (20 s by default; the table was measured with longer ones).

use anyhow::{Context as _, Result, ensure};
use kube::Client;
use portcullis_tests::{
    cluster::private_stack,
    etcd::{compact_etcd, revoke_in_etcd},
    fleet::{Fleet, FleetOptions, Probe, Verdict},
    relay::Relay,
};
use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

const POLL: Duration = Duration::from_millis(20);
const LIMIT: Duration = Duration::from_secs(30);
/// Revocations made during each fault.
const REVOCATIONS: usize = 20;

/// How long each fault lasts.
fn fault_length() -> Duration {
    let secs = std::env::var("PORTCULLIS_FAULT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    Duration::from_secs(secs)
}

/// The chart's fallback settings (`--api-fallback-after` 5 s), a staleness threshold far below
/// any fault, and a short jitter to keep the test short. Revocations must not depend on the
/// fallback's timing at all.
fn fault_env() -> Vec<(String, String)> {
    [
        ("PORTCULLIS_STATE_STALE_AFTER", "3s"),
        ("PORTCULLIS_API_FALLBACK_AFTER", "5s"),
        ("PORTCULLIS_API_FALLBACK_JITTER", "1s"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

async fn start_fleet(client: &Client, kubeconfig: &std::path::Path, ns: &str) -> Result<Fleet> {
    let dir = portcullis_tests::fsutil::scratch_dir("faults", ns)?;
    Fleet::start(FleetOptions {
        dir: &dir,
        client,
        kubeconfig,
        namespace: ns,
        gateway_bin: &portcullis_tests::fsutil::sibling_binary("portcullis-gateway")?,
        operator_bin: &portcullis_tests::fsutil::sibling_binary("portcullis-operator")?,
        gateways: 1,
        gateway_env: fault_env(),
        operator_env: Vec::new(),
    })
    .await
}

/// Runs `row` against a control plane of its own, namespace `ns` in it. Every row does: a row
/// that stops operators and gateways mid-fault must leave nothing behind in the shared cluster
/// that later suites (whose operators watch every namespace) would meet.
async fn on_private_stack<F, Fut>(ns: &str, row: F) -> Result<()>
where
    F: FnOnce(Client, String, PathBuf) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let dir = portcullis_tests::fsutil::scratch_dir("faults-stack", ns)?;
    let (stack, client) = private_stack(&dir.join("stack"), ns).await?;
    let kubeconfig = stack.info().kubeconfig.clone();
    let result = row(client, ns.to_owned(), kubeconfig).await;
    stack.stop().await?;
    result
}

/// A control plane of its own (so its API server can be stopped) with an operator and two
/// gateways, for the rows that take the API server down.
async fn private_fleet(ns: &str) -> Result<(portcullis_tests::stack::Stack, Fleet)> {
    // Not the fleet's own scratch directory: that one is emptied when the fleet starts.
    let dir = portcullis_tests::fsutil::scratch_dir("faults-stack", ns)?;
    let (stack, client) = private_stack(&dir.join("stack"), ns).await?;
    let kubeconfig = stack.info().kubeconfig.clone();
    let mut fleet = start_fleet(&client, &kubeconfig, ns).await?;
    fleet.add_gateway().await?;
    Ok((stack, fleet))
}

/// What gateway `index`'s `/readyz` answers: (status, text); an unreachable gateway is 0.
async fn readyz(fleet: &Fleet, index: usize) -> (u16, String) {
    let url = format!("http://{}/readyz", fleet.gateways[index].ops_addr);
    match reqwest::get(url).await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

/// Waits until every gateway's `/readyz` is 200 and says `words`.
async fn until_ready_saying(fleet: &Fleet, words: &str, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    for i in 0..fleet.gateways.len() {
        loop {
            let (status, text) = readyz(fleet, i).await;
            if status == 200 && text.contains(words) {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "gateway {i} not ready with `{words}` within {limit:?}: {status} {text}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// A steady loop of requests for the live sessions' tokens at every probe, until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(usize, Vec<String>)>,
}

impl Load {
    fn start(probes: Vec<Probe>, tokens: Vec<String>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let (mut asked, mut failed) = (0, Vec::new());
            while !flag.load(Ordering::SeqCst) {
                for (i, probe) in probes.iter().enumerate() {
                    for token in &tokens {
                        asked += 1;
                        match probe.ask(token).await {
                            Ok(Verdict::Accepted) => {}
                            Ok(Verdict::Refused) => failed.push(format!("gateway {i}: refused")),
                            Err(e) => failed.push(format!("gateway {i}: {e:#}")),
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (asked, failed)
        });
        Self { stop, task }
    }

    /// Stops the loop: requests asked, and the failures.
    async fn finish(self) -> Result<(usize, Vec<String>)> {
        self.stop.store(true, Ordering::SeqCst);
        Ok(self.task.await?)
    }
}

/// Waits until every probe refuses `token`.
async fn until_refused(probes: &[Probe], token: &str) -> Result<()> {
    futures::future::try_join_all(
        probes
            .iter()
            .map(|p| p.until(token, Verdict::Refused, POLL, LIMIT)),
    )
    .await
    .map(|_| ())
}

/// Revokes `victims` (sid, token) one by one, spread evenly over `length` from now; the time
/// from the API server accepting each to every probe refusing it.
async fn revoke_spread(
    fleet: &Fleet,
    probes: &[Probe],
    victims: &[(String, String)],
    length: Duration,
) -> Result<Vec<Duration>> {
    let start = Instant::now();
    let step = length / u32::try_from(victims.len().max(1))?;
    let mut took = Vec::new();
    for (i, (sid, token)) in victims.iter().enumerate() {
        let at = start + step * u32::try_from(i)?;
        tokio::time::sleep_until(at.into()).await;
        fleet.revoke(sid).await?;
        let accepted = Instant::now();
        until_refused(probes, token)
            .await
            .with_context(|| format!("revocation {i} ({sid})"))?;
        took.push(accepted.elapsed());
    }
    tokio::time::sleep_until((start + length).into()).await;
    Ok(took)
}

/// The bars of every row: no live session refused, revocations enforced within 2 s p99, and
/// nothing revoked admitted after recovery.
fn bars(failed: &[String], took: &[Duration], admitted: usize) -> Result<()> {
    ensure!(failed.is_empty(), "live sessions refused: {failed:?}");
    if !took.is_empty() {
        let (_, p99, _) = spread(took);
        ensure!(
            p99 <= Duration::from_secs(2),
            "p99 {p99:?} over 2 s: {took:?}"
        );
    }
    ensure!(
        admitted == 0,
        "{admitted} revoked tokens admitted after recovery"
    );
    Ok(())
}

/// p50, p99 (nearest rank) and max of `samples`, for the report.
fn spread(samples: &[Duration]) -> (Duration, Duration, Duration) {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = |p: f64| {
        let i = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
        sorted[i]
    };
    (rank(0.50), rank(0.99), sorted[sorted.len() - 1])
}

/// Live sessions named `{prefix}-{i}`, accepted everywhere: (sid, token) pairs.
async fn sessions(fleet: &Fleet, prefix: &str, count: usize) -> Result<Vec<(String, String)>> {
    let sids: Vec<String> = (0..count).map(|i| format!("{prefix}-{i}")).collect();
    let names: Vec<&str> = sids.iter().map(String::as_str).collect();
    let tokens = fleet.live_sessions(&names, POLL, LIMIT).await?;
    Ok(sids.into_iter().zip(tokens).collect())
}

/// What every row starts from: both gateways watching revocations, a probe of each, two live
/// sessions (for the load) and `victims` more (to revoke during the fault).
struct Prepared {
    probes: Vec<Probe>,
    live_tokens: Vec<String>,
    victims: Vec<(String, String)>,
}

async fn prepare(fleet: &Fleet, victims: usize) -> Result<Prepared> {
    until_ready_saying(fleet, "revocations watched", LIMIT).await?;
    let probes = (0..fleet.gateways.len())
        .map(|i| fleet.probe(i))
        .collect::<Result<Vec<_>>>()?;
    let live = sessions(fleet, "live", 2).await?;
    let victims = sessions(fleet, "victim", victims).await?;
    Ok(Prepared {
        probes,
        live_tokens: live.into_iter().map(|(_, t)| t).collect(),
        victims,
    })
}

/// Whether any of `tokens` is admitted by any of `probes` (after recovery: must be none).
async fn any_admitted(probes: &[Probe], tokens: &[&str]) -> Result<usize> {
    let mut admitted = 0;
    for probe in probes {
        for token in tokens {
            if probe.ask(token).await? == Verdict::Accepted {
                admitted += 1;
            }
        }
    }
    Ok(admitted)
}

/// Row "the operator partitioned from one gateway only": the network between the operator and
/// the second gateway drops everything (no reset), the gateway stays Ready, and every
/// revocation made during the partition, from its first second, is enforced at both gateways
/// within 2 s p99. Restarted during the partition, that gateway has no state and stays
/// NotReady until the partition heals; after it heals, nothing revoked is admitted.
#[tokio::test]
async fn an_operator_partitioned_from_one_gateway_loses_no_revocation() -> Result<()> {
    on_private_stack(
        "fault-partition",
        |client: Client, ns: String, kubeconfig: PathBuf| async move {
            let mut fleet = start_fleet(&client, &kubeconfig, &ns).await?;
            let relay = Relay::start(fleet.operator.addr).await?;
            let through_relay = format!("https://localhost:{}", relay.addr.port());
            fleet
                .add_gateway_with(vec![("PORTCULLIS_OPERATOR_URL".into(), through_relay)])
                .await?;
            let Prepared {
                probes,
                live_tokens,
                victims,
            } = prepare(&fleet, REVOCATIONS).await?;
            let load = Load::start(probes.clone(), live_tokens.clone());

            relay.partition();
            let partitioned = Instant::now();
            let took = revoke_spread(&fleet, &probes, &victims, fault_length()).await?;
            let (status, text) = readyz(&fleet, 1).await;
            ensure!(
                status == 200,
                "the partitioned gateway went NotReady: {text}"
            );
            let (asked, failed) = load.finish().await?;

            // An epoch raise during the partition ends the live sessions too.
            fleet.raise_epoch(&client, 1).await?;
            let raised = Instant::now();
            for token in &live_tokens {
                until_refused(&probes, token).await.context("epoch raise")?;
            }
            let epoch_took = raised.elapsed();
            // The partitioned gateway restarted: no operator answers it, so it has no state
            // and admits nobody until the partition heals.
            fleet.restart_gateway_unready(1).await?;
            tokio::time::sleep(Duration::from_secs(3)).await;
            let (restarted, restarted_text) = readyz(&fleet, 1).await;
            ensure!(
                restarted == 503,
                "a gateway without state is ready: {restarted_text}"
            );
            let lasted = partitioned.elapsed();

            relay.heal();
            until_ready_saying(&fleet, "source operator_stream", Duration::from_secs(60)).await?;
            let mut revoked: Vec<&str> = victims.iter().map(|(_, t)| t.as_str()).collect();
            revoked.extend(live_tokens.iter().map(String::as_str));
            let admitted = any_admitted(&probes, &revoked).await?;
            let (p50, p99, max) = spread(&took);
            eprintln!(
                "FAULT partition ({lasted:.1?}, gateway 1 on `{text}`): {asked} requests for \
                 live sessions, {} failed; {} revocations enforced at both gateways after p50 \
                 {p50:?}, p99 {p99:?}, max {max:?}; epoch raise after {epoch_took:?}; gateway 1 \
                 restarted in the partition: {restarted} until it healed; revoked admitted \
                 after recovery: {admitted}",
                failed.len(),
                took.len()
            );
            bars(&failed, &took, admitted)?;
            ensure!(
                epoch_took <= Duration::from_secs(2),
                "epoch raise took {epoch_took:?}"
            );
            fleet.stop().await
        },
    )
    .await
}

/// Row "both operator replicas down": the gateways stay Ready, and every revocation made
/// during the outage, from its first second, is enforced at both within 2 s p99. A gateway
/// restarted during the outage holds no state and stays NotReady (admitting nobody) until the
/// operator is back, while the other keeps serving; nothing revoked is admitted after.
#[tokio::test]
async fn an_operator_outage_loses_no_revocation_from_its_first_second() -> Result<()> {
    on_private_stack(
        "fault-operator-down",
        |client: Client, ns: String, kubeconfig: PathBuf| async move {
            let mut fleet = start_fleet(&client, &kubeconfig, &ns).await?;
            fleet.add_gateway().await?;
            let Prepared {
                probes,
                live_tokens,
                victims,
            } = prepare(&fleet, REVOCATIONS).await?;
            let load = Load::start(vec![probes[0].clone()], live_tokens.clone());
            let steady = Load::start(vec![probes[1].clone()], live_tokens.clone());

            fleet.operator.stop().await?;
            let down = Instant::now();
            let length = fault_length();
            let (half, rest) = victims.split_at(REVOCATIONS / 2);
            let mut took = revoke_spread(&fleet, &probes, half, length / 2).await?;
            // Gateway 1 restarted mid-outage: stopped under load first.
            let (asked_1, failed_1) = steady.finish().await?;
            fleet.restart_gateway_unready(1).await?;
            took.extend(revoke_spread(&fleet, &probes[..1], rest, length / 2).await?);
            let (restarted, text) = readyz(&fleet, 1).await;
            let (asked, failed) = load.finish().await?;
            let lasted = down.elapsed();

            fleet.operator.restart().await?;
            let back = Instant::now();
            until_ready_saying(&fleet, "source operator_stream", Duration::from_secs(60)).await?;
            let ready_again = back.elapsed();
            let revoked: Vec<&str> = victims.iter().map(|(_, t)| t.as_str()).collect();
            let admitted = any_admitted(&probes, &revoked).await?;
            let (p50, p99, max) = spread(&took);
            eprintln!(
                "FAULT operator-down ({lasted:.1?}): {} requests for live sessions, {} failed; \
                 {} revocations enforced at every ready gateway after p50 {p50:?}, p99 {p99:?}, \
                 max {max:?}; gateway restarted during the outage: {restarted} ({text}), ready \
                 {ready_again:?} after the operator was back; revoked admitted after recovery: \
                 {admitted}",
                asked + asked_1,
                failed.len() + failed_1.len(),
                took.len()
            );
            bars(&[failed, failed_1].concat(), &took, admitted)?;
            fleet.stop().await
        },
    )
    .await
}

/// Row "etcd compacted past the gateways' watches (410 Gone) during an operator outage": the
/// gateways follow the API server; a revocation is written (in etcd itself, while the API
/// server is down, so no watch can have delivered it) and etcd compacted past it, so every
/// resumed watch is answered 410 and must list again. Live sessions are served throughout, the
/// revocation is enforced at both gateways once the API server is back, and nothing revoked is
/// admitted after the operator returns.
#[tokio::test]
async fn a_compacted_watch_during_an_operator_outage_loses_no_revocation() -> Result<()> {
    let ns = "fault-compacted";
    let (mut stack, mut fleet) = private_fleet(ns).await?;
    let result = async {
        let Prepared {
            probes,
            live_tokens,
            victims,
        } = prepare(&fleet, 1).await?;
        let load = Load::start(probes.clone(), live_tokens);

        fleet.operator.stop().await?;
        until_ready_saying(&fleet, "source api_server", Duration::from_secs(30)).await?;
        let etcd = stack.info().etcd.url.clone().context("etcd url")?;
        let http = reqwest::Client::new();
        stack.stop_apiserver().await?;
        revoke_in_etcd(&http, &etcd, ns, &victims[0].0).await?;
        compact_etcd(&http, &etcd).await?;
        stack.start_apiserver().await?;
        let back = Instant::now();
        until_refused(&probes, &victims[0].1).await?;
        let enforced = back.elapsed();
        let (asked, failed) = load.finish().await?;
        let gone: usize = fleet
            .gateways
            .iter()
            .map(|g| std::fs::read_to_string(g.log_path()).unwrap_or_default())
            .map(|log| log.lines().filter(|l| gone_answer(l)).count())
            .sum();

        fleet.operator.restart().await?;
        until_ready_saying(&fleet, "source operator_stream", Duration::from_secs(60)).await?;
        let admitted = any_admitted(&probes, &[victims[0].1.as_str()]).await?;
        eprintln!(
            "FAULT compacted-during-operator-outage: {asked} requests for live sessions, {} \
             failed; {gone} watches answered 410 Gone and listed again; the revocation made \
             while the API server was down enforced at both gateways {enforced:?} after it was \
             back; revoked admitted after recovery: {admitted}",
            failed.len()
        );
        ensure!(
            gone > 0,
            "no watch was answered 410, so this did not test a relist:\n{}",
            fleet.gateways[0].log_tail()
        );
        bars(&failed, &[], admitted)?;
        Ok(())
    }
    .await;
    fleet.stop().await?;
    stack.stop().await?;
    result
}

/// The resource version of the `AccessSession`s of `ns` now (where a watch would resume).
async fn sessions_version(client: &Client, ns: &str) -> Result<String> {
    let api: kube::Api<portcullis_crds::AccessSession> = kube::Api::namespaced(client.clone(), ns);
    api.list_metadata(&kube::api::ListParams::default().limit(1))
        .await?
        .metadata
        .resource_version
        .context("a list without a resource version")
}

/// Waits until the API server answers a watch of `AccessSession`s resuming from `version` (from
/// before it stopped), as every watcher of them (the operator's, the gateways') resumes. A
/// restarted API server answers `/readyz` before it answers those (with 410 Gone: it has no
/// history from before its restart): its watch cache of each custom resource is made on the
/// first request and must list from etcd first. Until then a revocation it accepts can reach
/// nobody, however the watchers retry.
async fn until_sessions_watchable(client: &Client, ns: &str, version: &str) -> Result<()> {
    use futures::StreamExt as _;
    let api: kube::Api<portcullis_crds::AccessSession> = kube::Api::namespaced(client.clone(), ns);
    let deadline = Instant::now() + LIMIT;
    loop {
        let first = tokio::time::timeout(Duration::from_secs(10), async {
            let mut events = api
                .watch(&kube::api::WatchParams::default().timeout(5), version)
                .await?
                .boxed();
            anyhow::Ok(events.next().await.is_some_and(|e| e.is_ok()))
        })
        .await;
        if matches!(first, Ok(Ok(true))) {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "no watch of AccessSessions served: {first:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until every gateway's revoked-session watch has been answered by the restarted API
/// server: a watch that was listed before resumes and is answered 410 Gone (its log says so); a
/// gateway restarted meanwhile lists for the first time (its `/readyz` says so).
async fn until_resumed(fleet: &Fleet, listed_before: &[bool]) -> Result<()> {
    let deadline = Instant::now() + LIMIT;
    for (i, gateway) in fleet.gateways.iter().enumerate() {
        loop {
            let answered = if listed_before[i] {
                let log = std::fs::read_to_string(gateway.log_path()).unwrap_or_default();
                log.lines()
                    .any(|l| l.contains("watch=\"revoked sessions\"") && gone_answer(l))
            } else {
                readyz(fleet, i).await.1.contains("revocations watched")
            };
            if answered {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "no resumed watch:\n{}",
                gateway.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(())
}

/// A gateway log line saying a watch could not resume: the API server's 410 Gone.
fn gone_answer(line: &str) -> bool {
    line.contains("watch failed") && (line.contains("410") || line.contains("too old"))
}

/// Row "the API server down, and restarted": live sessions are served throughout; a gateway
/// restarted during the outage gets its state from the operator and serves; revocations made
/// as soon as the API server is back (spread over its first seconds, when every watch is
/// reconnecting) are enforced at both gateways within 2 s p99.
#[tokio::test]
async fn after_an_api_server_outage_revocations_are_enforced_at_once() -> Result<()> {
    let ns = "fault-apiserver";
    let (mut stack, mut fleet) = private_fleet(ns).await?;
    let result = async {
        let Prepared {
            probes,
            live_tokens,
            victims,
        } = prepare(&fleet, REVOCATIONS).await?;
        let load = Load::start(vec![probes[0].clone()], live_tokens.clone());

        let version = sessions_version(&stack.client().await?, ns).await?;
        stack.stop_apiserver().await?;
        let down = Instant::now();
        tokio::time::sleep(fault_length() / 2).await;
        fleet.restart_gateway(1).await?;
        let restarted = down.elapsed();
        let again = Load::start(vec![probes[1].clone()], live_tokens.clone());
        tokio::time::sleep_until((down + fault_length()).into()).await;
        let mut listed_before = Vec::new();
        for i in 0..fleet.gateways.len() {
            listed_before.push(readyz(&fleet, i).await.1.contains("revocations watched"));
        }
        stack.start_apiserver().await?;
        let lasted = down.elapsed();
        let warm = Instant::now();
        until_sessions_watchable(&stack.client().await?, ns, &version).await?;
        let answered = warm.elapsed();
        until_resumed(&fleet, &listed_before).await?;
        let resumed = warm.elapsed();
        let took = revoke_spread(&fleet, &probes, &victims, Duration::from_secs(5)).await?;
        let (asked, failed) = load.finish().await?;
        let (asked_1, failed_1) = again.finish().await?;
        let revoked: Vec<&str> = victims.iter().map(|(_, t)| t.as_str()).collect();
        let admitted = any_admitted(&probes, &revoked).await?;
        let (p50, p99, max) = spread(&took);
        eprintln!(
            "FAULT apiserver-down ({lasted:.1?}; gateway 1 restarted {restarted:.1?} into it \
             and ready from the operator's state): {} requests for live sessions, {} failed; \
             it answered a resumed watch {answered:.1?} after its /readyz, the gateways' \
             {resumed:.1?} after; {} revocations in the 5 s after that enforced at both gateways after p50 {p50:?}, p99 {p99:?}, max \
             {max:?}; revoked admitted: {admitted}",
            asked + asked_1,
            failed.len() + failed_1.len(),
            took.len()
        );
        bars(&[failed, failed_1].concat(), &took, admitted)?;
        Ok(())
    }
    .await;
    fleet.stop().await?;
    stack.stop().await?;
    result
}
