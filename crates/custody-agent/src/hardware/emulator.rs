//! Board emulators: a [`SimulatedBank`]'s doors behind a lock board's protocol on a serial
//! line, so the real drivers run against them in tests and the demo. [`PtyPair`] makes the line:
//! two pseudo-terminals joined by `socat`, one for the driver and one for the emulator.
//!
//! [`Rs485Emulator`] answers as the boards of a [`Layout`] would, with faults to inject into
//! the next unlock's reply (none, a corrupt checksum, noise before it, held back until the next
//! question) and an unplugged line that answers nothing. It counts the unlock frames it receives, so tests can show that
//! nothing was sent twice, and it obeys channel 0 as a real board would (every latch of the
//! board released), so tests can show the driver never sends it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use custody_core::compartment::CompartmentNumber;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::task::JoinHandle;

use super::rs485::{self, DoorBits, Request};
use super::{Channel, HardwareError, Layout, LockBoard as _, SimulatedBank, open_serial};

#[derive(Debug, Default)]
struct Faults {
    silent_next: bool,
    corrupt_next: bool,
    noise_next: bool,
    late_next: bool,
    unplugged: bool,
    /// A reply held back until the next question.
    held: Option<Vec<u8>>,
    unlock_frames: u32,
    open_all_frames: u32,
}

/// The boards of a layout on one line, answering for a simulated bank's doors.
#[derive(Debug)]
pub struct Rs485Emulator {
    faults: Arc<Mutex<Faults>>,
    task: JoinHandle<()>,
}

impl Rs485Emulator {
    /// Opens the serial line at `path` and answers on it.
    pub fn open(path: &Path, bank: SimulatedBank, layout: Layout) -> Result<Self, HardwareError> {
        Ok(Self::serve(open_serial(path, rs485::BAUD)?, bank, layout))
    }

    /// Answers on a line already open.
    pub fn serve<P>(port: P, bank: SimulatedBank, layout: Layout) -> Self
    where
        P: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let faults = Arc::new(Mutex::new(Faults::default()));
        let task = tokio::spawn(answer(port, bank, layout, faults.clone()));
        Self { faults, task }
    }

    fn faults(&self) -> std::sync::MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next unlock gets no reply (a board that missed it, or a broken wire); the latch
    /// still releases.
    pub fn silence_next(&self) {
        self.faults().silent_next = true;
    }

    /// The reply to the next unlock has a wrong checksum.
    pub fn corrupt_next(&self) {
        self.faults().corrupt_next = true;
    }

    /// The reply to the next unlock comes after bytes of noise (header bytes among them).
    pub fn noise_next(&self) {
        self.faults().noise_next = true;
    }

    /// The reply to the next unlock is held back and sent just before the reply to the
    /// question after it.
    pub fn delay_next(&self) {
        self.faults().late_next = true;
    }

    /// Unplugs the boards (nothing answers) or plugs them back.
    pub fn unplug(&self, unplugged: bool) {
        self.faults().unplugged = unplugged;
    }

    /// Unlock frames received for a single channel.
    pub fn unlock_frames(&self) -> u32 {
        self.faults().unlock_frames
    }

    /// Unlock frames received for channel 0 ("open every lock").
    pub fn open_all_frames(&self) -> u32 {
        self.faults().open_all_frames
    }
}

impl Drop for Rs485Emulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer<P: AsyncRead + AsyncWrite + Unpin>(
    mut port: P,
    bank: SimulatedBank,
    layout: Layout,
    faults: Arc<Mutex<Faults>>,
) {
    let mut buf = Vec::new();
    let mut chunk = [0_u8; 64];
    loop {
        match port.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend(chunk.get(..n).unwrap_or_default()),
        }
        while let Some(request) = rs485::take_request(&mut buf) {
            let Some(reply) = reply_to(request, &bank, &layout, &faults).await else { continue };
            if port.write_all(&reply).await.is_err() || port.flush().await.is_err() {
                return;
            }
        }
    }
}

/// What the boards send in answer to `request`, faults applied.
async fn reply_to(
    request: Request,
    bank: &SimulatedBank,
    layout: &Layout,
    faults: &Mutex<Faults>,
) -> Option<Vec<u8>> {
    let lock = || faults.lock().unwrap_or_else(PoisonError::into_inner);
    let (address, is_unlock) = match request {
        Request::Unlock { board, .. } => (board, true),
        Request::Query { board } => (board, false),
    };
    let board = *layout.boards().iter().find(|b| b.address == address)?;
    {
        let mut f = lock();
        if f.unplugged {
            return None;
        }
        if is_unlock {
            f.unlock_frames += 1;
            if matches!(request, Request::Unlock { channel: 0, .. }) {
                f.open_all_frames += 1;
            }
        }
    }
    let mut reply = match request {
        Request::Unlock { channel: 0, .. } => {
            for c in (1..=board.channels).filter_map(Channel::new) {
                if let Some(n) =
                    layout.compartment(address, c).and_then(|n| CompartmentNumber::new(n).ok())
                {
                    let _ = bank.unlock(n).await;
                }
            }
            rs485::unlock_reply(address, 0, true).to_vec()
        }
        Request::Unlock { channel, .. } => {
            let compartment = Channel::new(channel)
                .and_then(|c| layout.compartment(address, c))
                .and_then(|n| CompartmentNumber::new(n).ok());
            let released = match compartment {
                Some(n) => match bank.unlock(n).await {
                    Ok(()) => true,
                    // The simulated board was told to fail this one: it stays silent.
                    Err(HardwareError::NoAnswer) => return None,
                    Err(_) => false,
                },
                None => false,
            };
            rs485::unlock_reply(address, channel, released).to_vec()
        }
        Request::Query { .. } => {
            let mut bits = 0_u64;
            for c in (1..=board.channels).filter_map(Channel::new) {
                if layout.compartment(address, c).is_some_and(|n| bank.is_open(n)) {
                    bits |= 1 << (c.get() - 1);
                }
            }
            rs485::doors_reply(board, DoorBits(bits))
        }
    };
    let mut f = lock();
    if is_unlock {
        if std::mem::take(&mut f.silent_next) {
            return None;
        }
        if std::mem::take(&mut f.corrupt_next)
            && let Some(last) = reply.last_mut()
        {
            *last ^= 0x5A;
        }
        if std::mem::take(&mut f.noise_next) {
            let mut noisy = vec![0x00, 0x8A, 0x80, 0x13, 0x37];
            noisy.append(&mut reply);
            reply = noisy;
        }
        if std::mem::take(&mut f.late_next) {
            f.held = Some(reply);
            return None;
        }
    }
    match f.held.take() {
        Some(mut stale) => {
            stale.append(&mut reply);
            Some(stale)
        }
        None => Some(reply),
    }
}

/// Two pseudo-terminals joined by `socat`: what is written to one is read from the other, as
/// on a serial cable. Dropping it ends `socat` and with it the line.
#[derive(Debug)]
pub struct PtyPair {
    /// The driver's end.
    pub agent: PathBuf,
    /// The board's end.
    pub board: PathBuf,
    child: tokio::process::Child,
}

impl PtyPair {
    /// Makes the pair as `agent` and `board` in `dir`.
    pub async fn spawn(dir: &Path) -> Result<Self, HardwareError> {
        let (agent, board) = (dir.join("agent"), dir.join("board"));
        let end = |p: &Path| format!("pty,raw,echo=0,link={}", p.display());
        let mut child = tokio::process::Command::new("socat")
            .arg(end(&agent))
            .arg(end(&board))
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                HardwareError::Line(format!(
                    "cannot start socat for the emulated lock boards ({e}); install it with \
                     `apt-get install socat`"
                ))
            })?;
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        for _ in 0..500 {
            if agent.exists() && board.exists() {
                return Ok(Self { agent, board, child });
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(HardwareError::Line(format!("socat stopped: {status}")));
            }
            tick.tick().await;
        }
        Err(HardwareError::Line("socat did not make the pseudo-terminals within 5 s".into()))
    }

    /// Cuts the line, as a pulled cable would.
    pub async fn cut(&mut self) {
        let _ = self.child.kill().await;
    }
}
