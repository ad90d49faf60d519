//! The driver for the common RS-485 lock-control board: the frames of
//! [`custody_proto::lock_board`] on a serial line. Several boards share one line, each at its
//! own address.
//!
//! When a board stays silent past the reply timeout the line is drained until it is quiet, and
//! the unlock is reported as unanswered: it is never sent again on the driver's own initiative.
//!
//! Door states come from polling every board; a board that misses several polls in a row has
//! its doors reported as unknown until it answers again.

use std::path::Path;

use custody_proto::lock_board::{BAUD, Expect, Reply, query_frame, take_reply, unlock_frame};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::mpsc;

use super::driver::{BoardDriver, Bus, Timing, drain};
use super::{BoardSpec, Channel, DoorBits, HardwareError, Layout, SensorEvent, open_serial};

/// Bytes kept while looking for a reply; a line that sends more without one is noise.
const BUFFER_LIMIT: usize = 256;

/// The RS-485 lock-board protocol on a line.
#[derive(Debug)]
pub struct Rs485Bus<P> {
    port: P,
    buf: Vec<u8>,
    timing: Timing,
}

/// Opens the serial line at `path` and starts driving the boards of `layout` on it.
pub fn open(
    path: &Path,
    layout: Layout,
    timing: Timing,
) -> Result<(BoardDriver, mpsc::UnboundedReceiver<SensorEvent>), HardwareError> {
    Ok(start(open_serial(path, BAUD)?, layout, timing))
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
    BoardDriver::start(Rs485Bus { port, buf: Vec::new(), timing }, layout, timing)
}

impl<P: AsyncRead + AsyncWrite + Send + Unpin + 'static> Bus for Rs485Bus<P> {
    /// Nothing to do: a lock board times each latch pulse itself and holds no output on.
    async fn reset(&mut self, _board: BoardSpec) -> Result<(), HardwareError> {
        Ok(())
    }

    /// Sends one unlock frame and reads the answer. Never sent twice.
    async fn unlock(&mut self, board: BoardSpec, channel: Channel) -> Result<(), HardwareError> {
        let board = board.address;
        match self
            .exchange(&unlock_frame(board, channel), Expect::Unlock { board, channel })
            .await?
        {
            Reply::Unlock { released: true } => Ok(()),
            Reply::Unlock { released: false } | Reply::Doors(_) => {
                Err(HardwareError::Fault("the latch did not release".into()))
            }
        }
    }

    async fn doors(&mut self, board: BoardSpec) -> Result<DoorBits, HardwareError> {
        match self.exchange(&query_frame(board.address), Expect::Doors { board }).await? {
            Reply::Doors(bits) => Ok(bits),
            Reply::Unlock { .. } => Err(HardwareError::NoAnswer),
        }
    }
}

impl<P: AsyncRead + AsyncWrite + Unpin> Rs485Bus<P> {
    /// Sends `frame` and waits for a valid reply to it; on silence, drains the line.
    async fn exchange(&mut self, frame: &[u8], expect: Expect) -> Result<Reply, HardwareError> {
        self.buf.clear();
        let io = |e: std::io::Error| HardwareError::Line(format!("lock-board line: {e}"));
        self.port.write_all(frame).await.map_err(io)?;
        self.port.flush().await.map_err(io)?;
        let (port, buf) = (&mut self.port, &mut self.buf);
        let read = async {
            let mut chunk = [0_u8; 64];
            loop {
                if let Some(reply) = take_reply(buf, expect) {
                    return Ok(reply);
                }
                match port.read(&mut chunk).await {
                    Ok(0) => return Err(HardwareError::Line("lock-board line closed".into())),
                    Ok(n) => {
                        buf.extend(chunk.get(..n).unwrap_or_default());
                        if buf.len() > BUFFER_LIMIT {
                            buf.drain(..buf.len() - BUFFER_LIMIT);
                        }
                    }
                    Err(e) => return Err(io(e)),
                }
            }
        };
        if let Ok(answer) = tokio::time::timeout(self.timing.reply, read).await {
            answer
        } else {
            drain(&mut self.port, self.timing.quiet, self.timing.drain).await;
            self.buf.clear();
            Err(HardwareError::NoAnswer)
        }
    }
}
