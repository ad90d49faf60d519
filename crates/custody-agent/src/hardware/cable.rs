//! The bank's network cable, for tests and the demo: a TCP relay between the agent and the
//! server's device gateway that can be pulled, or go silent, in the middle of a workload.
//!
//! The agent connects to [`NetworkCable::address`] instead of the gateway; each connection is
//! relayed byte for byte, TLS and all, to the gateway. [`NetworkCable::pull`] closes every
//! relayed connection and refuses new ones, as a router that restarts would. [`NetworkCable::silence`]
//! keeps the connections open and drops every byte, as a cable cut beyond the building would:
//! neither end hears of it, and the agent must notice by itself. [`NetworkCable::plug`] restores
//! the link for new connections.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the cable does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CableState {
    /// Bytes pass.
    Plugged,
    /// Connections are closed and refused.
    Pulled,
    /// Connections stay open and nothing passes either way.
    Silent,
}

/// A relay from a local port to the gateway.
#[derive(Debug)]
pub struct NetworkCable {
    address: SocketAddr,
    state: watch::Sender<CableState>,
    task: JoinHandle<()>,
}

impl NetworkCable {
    /// A plugged cable to `gateway`, listening on a free loopback port.
    pub async fn lay(gateway: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let address = listener.local_addr()?;
        let (state, watched) = watch::channel(CableState::Plugged);
        let task = tokio::spawn(async move {
            while let Ok((agent, _)) = listener.accept().await {
                if *watched.borrow() == CableState::Plugged {
                    tokio::spawn(relay(agent, gateway, watched.clone()));
                }
                // Otherwise the connection is dropped at once: nothing reaches the server.
            }
        });
        Ok(Self { address, state, task })
    }

    /// Where the agent connects (`127.0.0.1:port`).
    pub const fn address(&self) -> SocketAddr {
        self.address
    }

    /// Closes every relayed connection and refuses new ones.
    pub fn pull(&self) {
        self.state.send_replace(CableState::Pulled);
    }

    /// Keeps the connections open and lets nothing through.
    pub fn silence(&self) {
        self.state.send_replace(CableState::Silent);
    }

    /// Lets new connections through again. Connections cut or silenced earlier stay dead.
    pub fn plug(&self) {
        self.state.send_replace(CableState::Plugged);
    }

    /// What the cable does now.
    pub fn state(&self) -> CableState {
        *self.state.borrow()
    }
}

impl Drop for NetworkCable {
    fn drop(&mut self) {
        self.task.abort();
        self.state.send_replace(CableState::Pulled);
    }
}

/// Relays one connection until either end closes or the cable is pulled. Once silenced, it
/// holds both ends open and reads nothing, until the cable is pulled or dropped.
async fn relay(mut agent: TcpStream, gateway: SocketAddr, mut state: watch::Receiver<CableState>) {
    let Ok(mut server) = TcpStream::connect(gateway).await else { return };
    let (mut a, mut s) = ([0u8; 4096], [0u8; 4096]);
    loop {
        let cable = *state.borrow_and_update();
        match cable {
            CableState::Pulled => return,
            CableState::Silent => {
                while state.changed().await.is_ok() {
                    if *state.borrow() == CableState::Pulled {
                        return;
                    }
                }
                return;
            }
            CableState::Plugged => {}
        }
        tokio::select! {
            changed = state.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            n = agent.read(&mut a) => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if server.write_all(a.get(..n).unwrap_or_default()).await.is_err() {
                        return;
                    }
                }
            },
            n = server.read(&mut s) => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if agent.write_all(s.get(..n).unwrap_or_default()).await.is_err() {
                        return;
                    }
                }
            },
        }
    }
}
