//! Child processes of the stack: spawned with their output in a log file, stopped with SIGTERM
//! and, after a deadline, SIGKILL.

use std::fs::OpenOptions;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::fsutil::tail;

/// How many log lines an error message carries.
pub const LOG_TAIL_LINES: usize = 40;
/// How long a process gets between SIGTERM and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(50);

/// A running child with its log file. Dropping it stops the process.
#[derive(Debug)]
pub struct ManagedProcess {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl ManagedProcess {
    /// Starts `cmd` with stdin closed and stdout/stderr appended to `log` (appended, so a
    /// restarted process keeps the history of the previous run in the same file).
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Result<Self> {
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let err = out.try_clone().context("duplicating the log handle")?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {name} ({:?})", cmd.get_program()))?;
        Ok(ManagedProcess {
            name: name.to_owned(),
            child: Some(child),
            log: log.to_owned(),
        })
    }

    /// The component name used in messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Process id, or `None` once stopped.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The end of the log, for error messages.
    pub fn log_tail(&self) -> String {
        tail(&self.log, LOG_TAIL_LINES)
    }

    /// Fails with the log tail if the process has exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        let Some(child) = self.child.as_mut() else {
            bail!("{} is stopped", self.name);
        };
        if let Some(status) = child.try_wait().context("polling child")? {
            bail!(
                "{} exited with {status}; last lines of {}:\n{}",
                self.name,
                self.log.display(),
                self.log_tail()
            );
        }
        Ok(())
    }

    /// Polls `check` until it returns `Ok(true)`, failing early if the process dies and with
    /// the log tail after `timeout`. `Err` from `check` counts as "not yet" (the last one is
    /// reported).
    pub async fn wait_ready<F, Fut>(
        &mut self,
        what: &str,
        timeout: Duration,
        check: F,
    ) -> Result<()>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<bool>>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            self.ensure_running()?;
            let last = match check().await {
                Ok(true) => return Ok(()),
                Ok(false) => "not ready yet".to_owned(),
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() >= deadline {
                bail!(
                    "{} did not become ready ({what}) within {timeout:?}: {last}; last lines of {}:\n{}",
                    self.name,
                    self.log.display(),
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM, then SIGKILL after `grace`; waits for the exit without blocking the runtime.
    pub async fn stop(&mut self, grace: Duration) -> Result<Option<ExitStatus>> {
        let Some(mut child) = self.child.take() else {
            return Ok(None);
        };
        signal(child.id(), Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        loop {
            if let Some(status) = child.try_wait().context("waiting for child")? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                tracing::warn!(name = %self.name, "did not stop after SIGTERM; sending SIGKILL");
                child.kill().ok();
                return Ok(Some(child.wait().context("reaping killed child")?));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Blocking variant of [`ManagedProcess::stop`] for `Drop`.
    fn stop_blocking(&mut self, grace: Duration) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), Signal::SIGTERM);
            let deadline = Instant::now() + grace;
            while matches!(child.try_wait(), Ok(None)) {
                if Instant::now() >= deadline {
                    child.kill().ok();
                    break;
                }
                std::thread::sleep(POLL);
            }
            child.wait().ok();
        }
    }
}

impl Drop for ManagedProcess {
    fn drop(&mut self) {
        self.stop_blocking(STOP_GRACE);
    }
}

fn signal(pid: u32, sig: Signal) {
    if let Ok(pid) = i32::try_from(pid) {
        // ESRCH (already gone) is fine: that is the goal.
        let _ = kill(Pid::from_raw(pid), sig);
    }
}

/// Whether `pid` names a live (non-zombie) process.
pub fn pid_alive(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    if kill(Pid::from_raw(raw), None).is_err() {
        return false;
    }
    // A zombie still answers signal 0 until its parent reaps it; it is dead for our purposes.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Whether the command line of `pid` contains `needle`.
pub fn cmdline_contains(pid: u32, needle: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            String::from_utf8_lossy(&raw)
                .replace('\0', " ")
                .contains(needle)
        })
        .unwrap_or(false)
}

/// Stops a process that is not our child (recorded in `stack.json`): SIGTERM, then SIGKILL
/// after `grace`. Returns once it is gone.
pub async fn terminate_pid(pid: u32, grace: Duration) -> Result<()> {
    if !pid_alive(pid) {
        return Ok(());
    }
    signal(pid, Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while pid_alive(pid) {
        if Instant::now() >= deadline {
            signal(pid, Signal::SIGKILL);
            let hard = Instant::now() + Duration::from_secs(5);
            while pid_alive(pid) {
                if Instant::now() >= hard {
                    bail!("process {pid} survived SIGKILL");
                }
                tokio::time::sleep(POLL).await;
            }
            return Ok(());
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(())
}

/// The ports [`free_port`] hands out: below the kernel's ephemeral range (32768 and up by
/// default), so no outgoing connection can take one between the pick and the child's bind.
const PORTS: std::ops::Range<u16> = 20_000..32_000;

/// Picks a free loopback port for a child process to bind.
///
/// A port the kernel assigned (`bind(0)`) and released is in the ephemeral range, where any
/// outgoing connection on the machine may take it before the child binds it. Ports are handed
/// out instead from [`PORTS`], each at most once per test process (a counter from a start that
/// differs per process), and only if nothing listens there now.
pub fn free_port() -> Result<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let span = u32::from(PORTS.end - PORTS.start);
    let seed = std::process::id().wrapping_mul(7919)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
    let _ = NEXT.compare_exchange(u32::MAX, seed % span, Ordering::SeqCst, Ordering::SeqCst);
    for _ in 0..span {
        let offset = NEXT.fetch_add(1, Ordering::SeqCst) % span;
        let port = PORTS.start + u16::try_from(offset).context("port offset")?;
        if unused(port) {
            return Ok(port);
        }
    }
    bail!("no free port in {PORTS:?}")
}

/// Whether nothing listens on `port`, on loopback or on every address.
fn unused(port: u16) -> bool {
    ["127.0.0.1", "0.0.0.0"].into_iter().all(|address| {
        // Each probe is closed before the next.
        std::net::TcpListener::bind((address, port)).is_ok()
    })
}
