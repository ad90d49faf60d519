//! Modbus RTU relay boards (through `tokio-modbus`), 9600 8N1 by default.
//!
//! Each board is a Modbus server at its own address, never 0 (the broadcast address, which
//! every board on the line obeys). Relay `k - 1` (a coil) drives the latch of channel `k`, and
//! discrete input `k - 1` reads its door switch, wired so that the circuit is closed only while
//! the door is shut: a cut wire reads as an open door, never as a closed one.
//!
//! At start every relay of every board is switched off. An unlock switches one relay on and,
//! after the pulse, off again; the off is sent even when the on went unanswered (off is the
//! safe state), and the on is never sent twice. Every request waits at most the reply timeout;
//! after a silence the line is drained before the next request, and `tokio-modbus` checks each
//! reply's CRC, address and function.

use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tokio_modbus::client::{Context as Client, Reader as _, Writer as _};
use tokio_modbus::prelude::{Slave, SlaveContext as _};

use super::driver::{BoardDriver, Bus, Timing, drain};
use super::{BoardSpec, Channel, DoorBits, HardwareError, Layout, SensorEvent, open_serial};

/// The usual line speed of these boards.
pub const BAUD: u32 = 9600;

/// Opens the serial line at `path` at `baud` and starts driving the boards of `layout`.
pub fn open(
    path: &Path,
    baud: u32,
    layout: Layout,
    timing: Timing,
) -> Result<(BoardDriver, mpsc::UnboundedReceiver<SensorEvent>), HardwareError> {
    Ok(start(open_serial(path, baud)?, layout, timing))
}

/// Starts driving the boards of `layout` on a line already open.
pub fn start<P>(
    port: P,
    layout: Layout,
    timing: Timing,
) -> (BoardDriver, mpsc::UnboundedReceiver<SensorEvent>)
where
    P: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let port = Shared(Arc::new(Mutex::new(port)));
    let client = tokio_modbus::client::rtu::attach_slave(port.clone(), Slave(1));
    BoardDriver::start(ModbusBus { client, port, timing }, layout, timing)
}

/// The line, shared by the Modbus client and the drain after a silence. Both are used from the
/// driver's one task, one after the other, so the lock is never contended.
#[derive(Debug)]
struct Shared<P>(Arc<Mutex<P>>);

impl<P> Clone for Shared<P> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<P: AsyncRead + Unpin> AsyncRead for Shared<P> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let mut port = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        Pin::new(&mut *port).poll_read(cx, buf)
    }
}

impl<P: AsyncWrite + Unpin> AsyncWrite for Shared<P> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let mut port = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        Pin::new(&mut *port).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let mut port = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        Pin::new(&mut *port).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let mut port = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        Pin::new(&mut *port).poll_shutdown(cx)
    }
}

/// Modbus RTU relay boards on a line.
struct ModbusBus<P> {
    client: Client,
    port: Shared<P>,
    timing: Timing,
}

impl<P> std::fmt::Debug for ModbusBus<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModbusBus").field("timing", &self.timing).finish_non_exhaustive()
    }
}

/// Why a Modbus request failed, as a hardware error.
fn failed<T>(
    outcome: Result<tokio_modbus::Result<T>, tokio::time::error::Elapsed>,
) -> Result<T, HardwareError> {
    match outcome {
        Ok(Ok(Ok(value))) => Ok(value),
        Ok(Ok(Err(exception))) => {
            Err(HardwareError::Fault(format!("the board refused: {exception}")))
        }
        Ok(Err(tokio_modbus::Error::Transport(e))) => {
            Err(HardwareError::Line(format!("relay-board line: {e}")))
        }
        // A reply for another board or function, or one that did not decode: not an answer.
        Ok(Err(tokio_modbus::Error::Protocol(_))) | Err(_) => Err(HardwareError::NoAnswer),
    }
}

impl<P: AsyncRead + AsyncWrite + Send + Unpin + 'static> ModbusBus<P> {
    /// Writes one coil of `board`, waiting at most the reply timeout; drains after a silence.
    async fn coil(&mut self, board: BoardSpec, coil: u16, on: bool) -> Result<(), HardwareError> {
        self.client.set_slave(Slave(board.address));
        let result = failed(
            tokio::time::timeout(self.timing.reply, self.client.write_single_coil(coil, on)).await,
        );
        self.settle(&result).await;
        result
    }

    /// After a silence or an unreadable reply, lets the line go quiet.
    async fn settle<T>(&mut self, result: &Result<T, HardwareError>) {
        if matches!(result, Err(HardwareError::NoAnswer)) {
            drain(&mut self.port, self.timing.quiet, self.timing.drain).await;
        }
    }
}

impl<P: AsyncRead + AsyncWrite + Send + Unpin + 'static> Bus for ModbusBus<P> {
    async fn reset(&mut self, board: BoardSpec) -> Result<(), HardwareError> {
        self.client.set_slave(Slave(board.address));
        let off = vec![false; usize::from(board.channels)];
        let result = failed(
            tokio::time::timeout(self.timing.reply, self.client.write_multiple_coils(0, &off))
                .await,
        );
        self.settle(&result).await;
        result
    }

    async fn unlock(&mut self, board: BoardSpec, channel: Channel) -> Result<(), HardwareError> {
        let coil = u16::from(channel.get() - 1);
        let on = self.coil(board, coil, true).await;
        if on.is_ok() {
            // The relay's pulse is a physical duration on the wire, not a time the agent
            // decides anything by, so it is measured on tokio's clock (which a test can pause).
            tokio::time::sleep_until(tokio::time::Instant::now() + self.timing.pulse).await;
        }
        // Off is the safe state: sent whatever the on's answer, and again if unanswered.
        let mut off = self.coil(board, coil, false).await;
        for _ in 0..2 {
            if off.is_ok() {
                break;
            }
            off = self.coil(board, coil, false).await;
        }
        if let Err(e) = &off {
            tracing::error!(board = board.address, channel = channel.get(), error = %e, "a relay did not confirm off");
        }
        on
    }

    async fn doors(&mut self, board: BoardSpec) -> Result<DoorBits, HardwareError> {
        self.client.set_slave(Slave(board.address));
        let result = failed(
            tokio::time::timeout(
                self.timing.reply,
                self.client.read_discrete_inputs(0, u16::from(board.channels)),
            )
            .await,
        );
        self.settle(&result).await;
        let closed = result?;
        if closed.len() < usize::from(board.channels) {
            return Err(HardwareError::Fault("the board sent too few inputs".into()));
        }
        let open = closed
            .iter()
            .take(usize::from(board.channels))
            .enumerate()
            .filter(|(_, shut)| !**shut)
            .fold(0_u64, |bits, (k, _)| bits | 1 << k);
        Ok(DoorBits(open))
    }
}
