//! The node's footprint on the machine's network and kernel settings, and its removal.
//!
//! A node changes the host: the bridge, kube-proxy's `KUBE-*` chains, `ip_forward` (the bridge
//! plugin turns it on) and a few kernel settings the kubelet tunes. [`prepare`] records the
//! settings once (a record left by a crashed run is kept: it holds the values from before that
//! run) and adds the guard that keeps pod and Service traffic on this machine; [`teardown`]
//! undoes all of it and is safe to run any number of times.
//!
//! The guard is in `mangle POSTROUTING`, after routing and DNAT: in `OUTPUT` the out-interface
//! is still the route chosen before DNAT, so a drop there would also break host → ClusterIP
//! traffic that kube-proxy rewrites to a pod.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use super::{BRIDGE, GATEWAY_IP, POD_CIDR};
use crate::stack::SERVICE_CLUSTER_IP_RANGE;

/// The chain holding the guard rules.
pub const GUARD_CHAIN: &str = "PORTCULLIS-NODE-GUARD";

/// Kernel settings the node changes, restored on teardown: `ip_forward` (CNI bridge) and what
/// the kubelet tunes at start (overcommit, panic behaviour, key quotas).
const SYSCTLS: [&str; 7] = [
    "net/ipv4/ip_forward",
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
];

/// Runs a command, failing with its stderr.
pub fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn run_with_stdin(program: &str, args: &[&str], stdin: &str) -> Result<()> {
    use std::io::Write as _;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {program}"))?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(stdin.as_bytes())
        .with_context(|| format!("writing to {program}"))?;
    let out = child.wait_with_output().context("waiting")?;
    if !out.status.success() {
        bail!(
            "{program} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Records the kernel settings (unless a record exists), creates the bridge with the gateway
/// address (so the API relay can listen there before the first pod) and installs the guard.
pub fn prepare(record: &Path) -> Result<()> {
    if !record.exists() {
        let mut values = BTreeMap::new();
        for key in SYSCTLS {
            let path = format!("/proc/sys/{key}");
            let value =
                std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
            values.insert(key.to_owned(), value.trim().to_owned());
        }
        let body = serde_json::to_vec_pretty(&values).context("serializing sysctls")?;
        crate::fsutil::write_public(record, &body)?;
    }
    if run("ip", &["link", "show", BRIDGE]).is_err() {
        run("ip", &["link", "add", BRIDGE, "type", "bridge"])?;
    }
    let addrs = run("ip", &["-4", "-o", "addr", "show", "dev", BRIDGE])?;
    if !addrs.contains(&format!("{GATEWAY_IP}/")) {
        run(
            "ip",
            &["addr", "add", &format!("{GATEWAY_IP}/24"), "dev", BRIDGE],
        )?;
    }
    run("ip", &["link", "set", BRIDGE, "up"])?;
    install_guard()
}

fn install_guard() -> Result<()> {
    remove_chains("iptables", &[GUARD_CHAIN])?;
    let rules = format!(
        "*mangle\n:{GUARD_CHAIN} - [0:0]\n\
         -A POSTROUTING -j {GUARD_CHAIN}\n\
         -A {GUARD_CHAIN} -o lo -j RETURN\n\
         -A {GUARD_CHAIN} -o {BRIDGE} -j RETURN\n\
         -A {GUARD_CHAIN} -s {POD_CIDR} -j DROP\n\
         -A {GUARD_CHAIN} -d {POD_CIDR} -j DROP\n\
         -A {GUARD_CHAIN} -d {SERVICE_CLUSTER_IP_RANGE} -j DROP\n\
         COMMIT\n"
    );
    run_with_stdin("iptables-restore", &["--noflush"], &rules).context("installing the guard")
}

/// Removes every chain whose name starts with one of `prefixes` from every table, with the
/// rules that jump to them, in one `*-restore` per table (atomic per table).
fn remove_chains(family: &str, prefixes: &[&str]) -> Result<()> {
    let save = format!("{family}-save");
    let restore = format!("{family}-restore");
    for table in ["filter", "nat", "mangle", "raw"] {
        let Ok(dump) = run(&save, &["-t", table]) else {
            continue;
        };
        let ours = |name: &str| prefixes.iter().any(|p| name.starts_with(p));
        let keep = |line: &&str| {
            let mut words = line.split_whitespace();
            let first = words.next().unwrap_or_default();
            if let Some(chain) = first.strip_prefix(':') {
                return !ours(chain);
            }
            if first == "-A" && words.next().is_some_and(ours) {
                return false;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            !words
                .windows(2)
                .any(|w| (w[0] == "-j" || w[0] == "-g") && ours(w[1]))
        };
        let filtered: Vec<&str> = dump.lines().filter(keep).collect();
        if filtered.len() != dump.lines().count() {
            run_with_stdin(&restore, &[], &(filtered.join("\n") + "\n"))
                .with_context(|| format!("cleaning table {table}"))?;
        }
    }
    Ok(())
}

/// Undoes [`prepare`] and whatever kube-proxy, the kubelet and the bridge plugin left:
/// `kube-proxy --cleanup`, then any `KUBE-*` chain and the guard, the bridge, mounts under the
/// node directory, and the recorded kernel settings. Collects errors and reports the first.
pub fn teardown(node_dir: &Path, kube_proxy: Option<&Path>) -> Result<()> {
    let mut errors = Vec::new();
    if let Some(bin) = kube_proxy
        && let Err(e) = run(&bin.display().to_string(), &["--cleanup"])
    {
        errors.push(e);
    }
    for family in ["iptables", "ip6tables"] {
        if let Err(e) = remove_chains(family, &["KUBE-", GUARD_CHAIN]) {
            errors.push(e);
        }
    }
    if run("ip", &["link", "show", BRIDGE]).is_ok()
        && let Err(e) = run("ip", &["link", "delete", BRIDGE])
    {
        errors.push(e);
    }
    if let Err(e) = unmount_under(node_dir) {
        errors.push(e);
    }
    if let Err(e) = restore_sysctls(&node_dir.join(super::SYSCTL_RECORD)) {
        errors.push(e);
    }
    errors.into_iter().next().map_or(Ok(()), Err)
}

fn restore_sysctls(record: &Path) -> Result<()> {
    let Ok(bytes) = std::fs::read(record) else {
        return Ok(());
    };
    let values: BTreeMap<String, String> =
        serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", record.display()))?;
    for (key, value) in &values {
        anyhow::ensure!(SYSCTLS.contains(&key.as_str()), "unexpected sysctl {key}");
        let path = format!("/proc/sys/{key}");
        std::fs::write(&path, format!("{value}\n")).with_context(|| format!("writing {path}"))?;
    }
    std::fs::remove_file(record).with_context(|| format!("removing {}", record.display()))
}

/// Lazily unmounts everything mounted below `dir` (volumes of pods the kubelet did not clean
/// up, container root file systems), deepest first.
fn unmount_under(dir: &Path) -> Result<()> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").context("mountinfo")?;
    let prefix = format!("{}/", dir.display());
    let mut points: Vec<&str> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&prefix))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for point in points {
        run("umount", &["-l", point])?;
    }
    Ok(())
}
