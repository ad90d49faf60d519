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

/// What the cable does, and how many times it has been pulled: a connection relayed before a
/// pull is dead even if the cable is plugged in again at once.
type Wire = (CableState, u64);

/// A relay from a local port to the gateway.
#[derive(Debug)]
pub struct NetworkCable {
    address: SocketAddr,
    state: watch::Sender<Wire>,
    task: JoinHandle<()>,
}

impl NetworkCable {
    /// A plugged cable to `gateway`, listening on a free loopback port.
    pub async fn lay(gateway: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let address = listener.local_addr()?;
        let (state, watched) = watch::channel((CableState::Plugged, 0));
        let task = tokio::spawn(async move {
            while let Ok((agent, _)) = listener.accept().await {
                let (cable, pulls) = *watched.borrow();
                if cable == CableState::Plugged {
                    tokio::spawn(relay(agent, gateway, watched.clone(), pulls));
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
        self.state.send_modify(|(cable, pulls)| {
            *cable = CableState::Pulled;
            *pulls += 1;
        });
    }

    /// Keeps the connections open and lets nothing through.
    pub fn silence(&self) {
        self.state.send_modify(|(cable, _)| *cable = CableState::Silent);
    }

    /// Lets new connections through again. Connections cut or silenced earlier stay dead.
    pub fn plug(&self) {
        self.state.send_modify(|(cable, _)| *cable = CableState::Plugged);
    }

    /// What the cable does now.
    pub fn state(&self) -> CableState {
        self.state.borrow().0
    }
}

impl Drop for NetworkCable {
    fn drop(&mut self) {
        self.task.abort();
        self.pull();
    }
}

/// Relays one connection until either end closes or the cable is pulled (its pull count moves
/// on from `pulls`). Once silenced, it holds both ends open and reads nothing, until then.
async fn relay(
    mut agent: TcpStream,
    gateway: SocketAddr,
    mut state: watch::Receiver<Wire>,
    pulls: u64,
) {
    let Ok(mut server) = TcpStream::connect(gateway).await else { return };
    let (mut a, mut s) = ([0u8; 4096], [0u8; 4096]);
    loop {
        let (cable, now) = *state.borrow_and_update();
        if now != pulls {
            return;
        }
        if cable == CableState::Silent {
            while state.changed().await.is_ok() {
                if state.borrow().1 != pulls {
                    return;
                }
            }
            return;
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
