//! Board emulators: a [`SimulatedBank`]'s doors behind a lock board's protocol on a serial
//! line, so the real drivers run against them in tests and the demo. [`PtyPair`] makes the line:
//! two pseudo-terminals joined by `socat`, one for the driver and one for the emulator.
//!
//! [`ModbusEmulator`] is relay boards served by `tokio-modbus`'s RTU server: a relay switched on
//! releases its latch, the door switches read closed while a door is shut, relays can be left on
//! at power-up (to show the driver switches them off), and broadcasts are obeyed and counted.
//!
//! [`Rs485Emulator`] answers as the boards of a [`Layout`] would, with faults to inject into
//! the next unlock's reply (none, a corrupt checksum, noise before it, held back until the next
//! question) and an unplugged line that answers nothing. It counts the unlock frames it receives, so tests can show that
//! nothing was sent twice, and it obeys channel 0 as a real board would (every latch of the
//! board released), so tests can show the driver never sends it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use custody_core::compartment::CompartmentNumber;
use custody_proto::lock_board::{self, Request};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::task::JoinHandle;

use tokio_modbus::prelude::{ExceptionCode, Request as ModbusRequest, Response, SlaveRequest};

use super::{
    BoardSpec, Channel, DoorBits, HardwareError, Layout, SimulatedBank, modbus, open_serial,
};

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
        Ok(Self::serve(open_serial(path, lock_board::BAUD)?, bank, layout))
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
        while let Some(request) = lock_board::take_request(&mut buf) {
            let Some(reply) = reply_to(request, &bank, &layout, &faults) else { continue };
            if port.write_all(&reply).await.is_err() || port.flush().await.is_err() {
                return;
            }
        }
    }
}

/// What the boards send in answer to `request`, faults applied.
fn reply_to(
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
                    let _ = bank.release(n);
                }
            }
            lock_board::unlock_reply(address, 0, true).to_vec()
        }
        Request::Unlock { channel, .. } => {
            let compartment = Channel::new(channel)
                .and_then(|c| layout.compartment(address, c))
                .and_then(|n| CompartmentNumber::new(n).ok());
            let released = match compartment {
                Some(n) => match bank.release(n) {
                    Ok(()) => true,
                    // The simulated board was told to fail this one: it stays silent.
                    Err(HardwareError::NoAnswer) => return None,
                    Err(_) => false,
                },
                None => false,
            };
            lock_board::unlock_reply(address, channel, released).to_vec()
        }
        Request::Query { .. } => {
            let mut bits = 0_u64;
            for c in (1..=board.channels).filter_map(Channel::new) {
                if layout.compartment(address, c).is_some_and(|n| bank.is_open(n)) {
                    bits |= 1 << (c.get() - 1);
                }
            }
            lock_board::doors_reply(board, DoorBits(bits))
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

#[derive(Debug, Default)]
struct RelayState {
    /// Relays switched on, by compartment.
    on: BTreeMap<u16, bool>,
    unplugged: bool,
    silent_next_on: bool,
    on_writes: u32,
    broadcasts: u32,
}

/// Modbus RTU relay boards on one line, answering for a simulated bank's doors.
#[derive(Debug)]
pub struct ModbusEmulator {
    state: Arc<Mutex<RelayState>>,
    task: JoinHandle<()>,
}

impl ModbusEmulator {
    /// Opens the serial line at `path` and answers on it.
    pub fn open(path: &Path, bank: SimulatedBank, layout: Layout) -> Result<Self, HardwareError> {
        let port = open_serial(path, modbus::BAUD)?;
        let state = Arc::new(Mutex::new(RelayState::default()));
        let boards = RelayBoards { bank, layout, state: state.clone() };
        let task = tokio::spawn(async move {
            if let Err(e) = tokio_modbus::server::rtu::Server::new(port).serve_forever(boards).await
            {
                tracing::debug!(error = %e, "the emulated relay boards stopped");
            }
        });
        Ok(Self { state, task })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, RelayState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Powers up with every relay on, as a board that lost power mid-pulse might.
    pub fn relays_on_at_power_up(&self, compartments: impl IntoIterator<Item = u16>) {
        self.state().on.extend(compartments.into_iter().map(|n| (n, true)));
    }

    /// How many relays are on now.
    pub fn relays_on(&self) -> usize {
        self.state().on.values().filter(|on| **on).count()
    }

    /// How many times a relay was switched on.
    pub fn on_writes(&self) -> u32 {
        self.state().on_writes
    }

    /// Requests to the broadcast address, which every board obeys.
    pub fn broadcasts(&self) -> u32 {
        self.state().broadcasts
    }

    /// The next relay switched on answers nothing (its latch still releases).
    pub fn silence_next_on(&self) {
        self.state().silent_next_on = true;
    }

    /// Unplugs the boards (nothing answers) or plugs them back.
    pub fn unplug(&self, unplugged: bool) {
        self.state().unplugged = unplugged;
    }
}

impl Drop for ModbusEmulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Debug, Clone)]
struct RelayBoards {
    bank: SimulatedBank,
    layout: Layout,
    state: Arc<Mutex<RelayState>>,
}

type Answer = Result<Option<Response>, ExceptionCode>;

impl tokio_modbus::server::Service for RelayBoards {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = Pin<Box<dyn Future<Output = Answer> + Send>>;

    fn call(&self, request: Self::Request) -> Self::Future {
        let answer = self.answer(&request);
        Box::pin(async move { answer })
    }
}

impl RelayBoards {
    fn state(&self) -> std::sync::MutexGuard<'_, RelayState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn compartment(&self, board: BoardSpec, coil: u16) -> Result<u16, ExceptionCode> {
        u8::try_from(coil + 1)
            .ok()
            .and_then(Channel::new)
            .and_then(|c| self.layout.compartment(board.address, c))
            .ok_or(ExceptionCode::IllegalDataAddress)
    }

    /// Switches the relay of `n`; on releases its latch. `false` when the board fails it.
    fn switch(&self, n: u16, on: bool) -> bool {
        if on {
            self.state().on_writes += 1;
            let Ok(compartment) = CompartmentNumber::new(n) else {
                return false;
            };
            if self.bank.release(compartment).is_err() {
                return false;
            }
        }
        self.state().on.insert(n, on);
        true
    }

    fn answer(&self, request: &SlaveRequest<'static>) -> Answer {
        if self.state().unplugged {
            return Ok(None);
        }
        let boards: Vec<BoardSpec> = if request.slave == 0 {
            self.state().broadcasts += 1;
            self.layout.boards().to_vec()
        } else {
            self.layout.boards().iter().copied().filter(|b| b.address == request.slave).collect()
        };
        let mut response = None;
        for board in boards {
            response = Some(self.act(board, &request.request)?);
        }
        // A broadcast is obeyed and never answered.
        Ok(response.filter(|_| request.slave != 0).flatten())
    }

    fn act(&self, board: BoardSpec, request: &ModbusRequest<'static>) -> Answer {
        match request {
            ModbusRequest::WriteSingleCoil(coil, on) => {
                let n = self.compartment(board, *coil)?;
                let silent = *on && std::mem::take(&mut self.state().silent_next_on);
                let switched = self.switch(n, *on);
                Ok((switched && !silent).then_some(Response::WriteSingleCoil(*coil, *on)))
            }
            ModbusRequest::WriteMultipleCoils(first, values) => {
                for (coil, on) in (*first..).zip(values.iter()) {
                    let n = self.compartment(board, coil)?;
                    self.switch(n, *on);
                }
                let count =
                    u16::try_from(values.len()).map_err(|_| ExceptionCode::IllegalDataValue)?;
                Ok(Some(Response::WriteMultipleCoils(*first, count)))
            }
            ModbusRequest::ReadDiscreteInputs(first, count) => {
                let shut = (*first..first.saturating_add(*count))
                    .map(|coil| self.compartment(board, coil).map(|n| !self.bank.is_open(n)))
                    .collect::<Result<Vec<bool>, _>>()?;
                Ok(Some(Response::ReadDiscreteInputs(shut)))
            }
            ModbusRequest::ReadCoils(first, count) => {
                let on = (*first..first.saturating_add(*count))
                    .map(|coil| {
                        self.compartment(board, coil)
                            .map(|n| self.state().on.get(&n) == Some(&true))
                    })
                    .collect::<Result<Vec<bool>, _>>()?;
                Ok(Some(Response::ReadCoils(on)))
            }
            _ => Err(ExceptionCode::IllegalFunction),
        }
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
