//! A TCP relay on loopback that can be partitioned: the network between one gateway and the
//! operator, for the fault matrix. Partitioned, it forwards nothing in either direction and
//! holds every connection open (new ones are accepted and left silent), as a network that drops
//! packets does; nobody sees a reset. Healed, it forwards again.

use anyhow::{Context as _, Result};
use std::net::SocketAddr;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::watch,
};

/// A running relay to one target.
pub struct Relay {
    pub addr: SocketAddr,
    partitioned: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    /// Listens on a free loopback port and forwards each connection to `target`.
    pub async fn start(target: SocketAddr) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the relay")?;
        let addr = listener.local_addr()?;
        let (partitioned, state) = watch::channel(false);
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                tokio::spawn(relay(inbound, target, state.clone()));
            }
        });
        Ok(Self {
            addr,
            partitioned,
            task,
        })
    }

    /// Stops forwarding, both ways, on every connection (open or new).
    pub fn partition(&self) {
        self.partitioned.send_replace(true);
    }

    /// Forwards again.
    pub fn heal(&self) {
        self.partitioned.send_replace(false);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One connection: connects to `target` once not partitioned, then pumps both ways.
async fn relay(inbound: TcpStream, target: SocketAddr, mut state: watch::Receiver<bool>) {
    if wait_healed(&mut state).await.is_err() {
        return;
    }
    let Ok(outbound) = TcpStream::connect(target).await else {
        return;
    };
    let (in_read, in_write) = inbound.into_split();
    let (out_read, out_write) = outbound.into_split();
    tokio::select! {
        () = pump(in_read, out_write, state.clone()) => {}
        () = pump(out_read, in_write, state) => {}
    }
}

/// Copies `from` to `to` while not partitioned; returns when either side closes.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut state: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if wait_healed(&mut state).await.is_err() {
            return;
        }
        // Reading is cancel-safe: a partition that starts mid-read loses nothing.
        let read = tokio::select! {
            read = from.read(&mut buf) => read,
            changed = state.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
        };
        match read {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if to.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Waits while partitioned; Err once the relay is gone.
async fn wait_healed(state: &mut watch::Receiver<bool>) -> Result<(), watch::error::RecvError> {
    while *state.borrow_and_update() {
        state.changed().await?;
    }
    Ok(())
}
