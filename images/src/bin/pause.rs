//! `pause`: the pod sandbox ("pause") program of the test node's containerd.
//!
//! It holds the pod's namespaces open and does nothing else: it sleeps until SIGTERM or SIGINT
//! and exits 0, and as PID 1 of a pod that shares its process namespace it reaps every child
//! that is re-parented to it, so no zombie piles up. The signals are blocked and taken with
//! `sigwait`, so there is no handler and no race between a check and a sleep.

use nix::errno::Errno;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};

fn main() -> std::process::ExitCode {
    match run() {
        Ok(signal) => {
            eprintln!("pause: {signal}, exiting");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pause: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Waits for SIGTERM or SIGINT, reaping children on every SIGCHLD; returns the ending signal.
fn run() -> Result<Signal, Errno> {
    let mut set = SigSet::empty();
    for signal in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGCHLD] {
        set.add(signal);
    }
    set.thread_block()?;
    loop {
        match set.wait()? {
            Signal::SIGCHLD => reap(),
            other => return Ok(other),
        }
    }
}

/// Collects every exited child without blocking (one SIGCHLD may stand for several).
fn reap() {
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(_) => {}
        }
    }
}
