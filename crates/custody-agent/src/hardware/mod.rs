//! Hardware behind traits: lock boards and their door sensors.
//!
//! A lock board releases one compartment's latch per call and is never asked twice for the same
//! command: neither the daemon nor a driver retries an unlock (a retried unlock can open a door
//! twice). Door sensors report changes on a channel. What a board was told is not what a sensor
//! saw; only sensor readings are reported as door state, and a sensor that cannot be read is
//! reported as [`DoorReading::Unknown`], never guessed.
//!
//! Drivers: [`rs485`] (the common RS-485 lock-control board) and [`modbus`] (Modbus RTU relay
//! boards), each a [`driver::Bus`] run by a [`BoardDriver`] over a serial line opened by
//! [`open_serial`]. [`SimulatedBank`] is the doors
//! themselves, for tests and demos: in-process as a [`LockBoard`] of its own, or behind the
//! board emulators in [`emulator`], which speak the drivers' protocols over a pseudo-terminal
//! pair so that tests and the demo run the real framing.

pub mod cable;
pub mod driver;
pub mod emulator;
pub mod modbus;
pub mod rs485;
mod sim;

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use custody_core::compartment::CompartmentNumber;
use custody_proto::device::DoorReading;
use futures_util::future::BoxFuture;

pub use custody_proto::lock_board::{BoardSpec, Channel, DoorBits, MAX_CHANNELS};
pub use driver::{BoardDriver, Timing};
pub use sim::{SimError, SimulatedBank};

/// A hardware failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HardwareError {
    /// The board has no such channel.
    #[error("no such compartment on this board")]
    NoSuchCompartment,
    /// The board did not confirm in time; the latch state is unknown.
    #[error("lock board did not answer")]
    NoAnswer,
    /// The board reported a fault.
    #[error("lock board fault: {0}")]
    Fault(String),
    /// The serial line cannot be opened or used; the message says what to check.
    #[error("{0}")]
    Line(String),
    /// The interlock was engaged (lockdown, or a journal that cannot be written) when the
    /// latch was about to be released: nothing was sent.
    #[error("interlocked: the bank is locked down or its journal cannot be written")]
    Interlocked,
}

/// Whether a board answered its last poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoardStatus {
    /// Its bus address.
    pub address: u8,
    /// Whether it answered.
    pub answering: bool,
}

/// A board that releases compartment latches.
pub trait LockBoard: Send + Sync {
    /// The boards behind it and whether each answered its last poll (none for simulated doors).
    fn boards(&self) -> Vec<BoardStatus> {
        Vec::new()
    }

    /// Releases the latch of `compartment` once, unless `interlock` is engaged at the moment
    /// the board would be told (checked there, after any wait for the line).
    fn unlock(
        &self,
        compartment: CompartmentNumber,
        interlock: Interlock,
    ) -> BoxFuture<'_, Result<(), HardwareError>>;
}

/// The last word before a latch moves: while engaged, no board releases anything. The agent
/// engages it for a lockdown and when its journal cannot be written; the drivers check it
/// immediately before sending an unlock, so an unlock that waited for the line is stopped too.
#[derive(Debug, Clone, Default)]
pub struct Interlock(Arc<AtomicBool>);

impl Interlock {
    /// Engages or releases it.
    pub fn set(&self, engaged: bool) {
        self.0.store(engaged, Ordering::SeqCst);
    }

    /// Whether it is engaged.
    pub fn is_engaged(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// A door sensor reading.
pub type SensorEvent = (u16, DoorReading);

/// Why a board layout is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// No boards at all.
    #[error("a lock-board layout needs at least one board, as ADDRESS:CHANNELS (such as 1:24)")]
    Empty,
    /// Not `ADDRESS:CHANNELS`.
    #[error("{0:?} is not ADDRESS:CHANNELS (such as 1:24)")]
    Syntax(String),
    /// Address 0 is the broadcast address on Modbus and on some lock boards, so every board on
    /// the line would act; above 247 is not an address.
    #[error("board address {0} is not allowed: use 1 to 247 (0 reaches every board on the line)")]
    Address(u16),
    /// No channels, or more than a board has.
    #[error("a board has 1 to {MAX_CHANNELS} channels, not {0}")]
    Channels(u16),
    /// Two boards with one address.
    #[error("two boards have address {0}")]
    Duplicate(u8),
    /// More compartments than a bank may have.
    #[error("the boards have {0} channels; a bank has at most 999 compartments")]
    TooMany(u32),
}

/// How a bank's compartments map to the boards on one serial line: the boards in order, and
/// compartment 1 on the first board's channel 1, counting on through each board's channels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    boards: Vec<BoardSpec>,
}

impl Layout {
    /// A layout of these boards.
    pub fn new(boards: Vec<BoardSpec>) -> Result<Self, LayoutError> {
        if boards.is_empty() {
            return Err(LayoutError::Empty);
        }
        let mut seen = std::collections::BTreeSet::new();
        let mut total = 0_u32;
        for b in &boards {
            if !(1..=247).contains(&b.address) {
                return Err(LayoutError::Address(b.address.into()));
            }
            if Channel::new(b.channels).is_none() {
                return Err(LayoutError::Channels(b.channels.into()));
            }
            if !seen.insert(b.address) {
                return Err(LayoutError::Duplicate(b.address));
            }
            total += u32::from(b.channels);
        }
        if total > 999 {
            return Err(LayoutError::TooMany(total));
        }
        Ok(Self { boards })
    }

    /// Parses `1:24` or `1:24,2:24`.
    pub fn parse(text: &str) -> Result<Self, LayoutError> {
        let boards = text
            .split(',')
            .filter(|part| !part.trim().is_empty())
            .map(|part| {
                let syntax = || LayoutError::Syntax(part.trim().to_owned());
                let (address, channels) = part.split_once(':').ok_or_else(syntax)?;
                let address: u16 = address.trim().parse().map_err(|_| syntax())?;
                let channels: u16 = channels.trim().parse().map_err(|_| syntax())?;
                Ok(BoardSpec {
                    address: u8::try_from(address).map_err(|_| LayoutError::Address(address))?,
                    channels: u8::try_from(channels)
                        .map_err(|_| LayoutError::Channels(channels))?,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(boards)
    }

    /// The boards, in order.
    pub fn boards(&self) -> &[BoardSpec] {
        &self.boards
    }

    /// Every compartment number, in order.
    pub fn compartments(&self) -> impl Iterator<Item = u16> + use<> {
        let total: u16 = self.boards.iter().map(|b| u16::from(b.channels)).sum();
        1..=total
    }

    /// The board and channel of `compartment`.
    pub fn locate(&self, compartment: CompartmentNumber) -> Option<(BoardSpec, Channel)> {
        let mut n = compartment.get();
        for board in &self.boards {
            let channels = u16::from(board.channels);
            if n <= channels {
                return Channel::new(u8::try_from(n).ok()?).map(|c| (*board, c));
            }
            n -= channels;
        }
        None
    }

    /// The compartment on `channel` of the board at `address`.
    pub fn compartment(&self, address: u8, channel: Channel) -> Option<u16> {
        let mut first = 1_u16;
        for board in &self.boards {
            if board.address == address {
                return (channel.get() <= board.channels)
                    .then(|| first + u16::from(channel.get()) - 1);
            }
            first += u16::from(board.channels);
        }
        None
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> =
            self.boards.iter().map(|b| format!("{}:{}", b.address, b.channels)).collect();
        f.write_str(&parts.join(","))
    }
}

/// Opens a serial line at `baud`, 8 data bits, no parity, 1 stop bit, no flow control, for
/// this process alone. The error says what to check.
pub fn open_serial(path: &Path, baud: u32) -> Result<tokio_serial::SerialStream, HardwareError> {
    use tokio_serial::SerialPortBuilderExt as _;
    let shown = path.display();
    if !path.exists() {
        return Err(HardwareError::Line(format!(
            "serial line {shown} does not exist: is the RS-485 adapter plugged in? \
             (`ls /dev/serial/by-id/` lists the adapters this machine sees)"
        )));
    }
    tokio_serial::new(path.to_string_lossy(), baud)
        .data_bits(tokio_serial::DataBits::Eight)
        .parity(tokio_serial::Parity::None)
        .stop_bits(tokio_serial::StopBits::One)
        .flow_control(tokio_serial::FlowControl::None)
        .open_native_async()
        .map_err(|e| {
            let hint = match e.kind {
                tokio_serial::ErrorKind::Io(std::io::ErrorKind::PermissionDenied) => {
                    " (the agent's user needs to be in the `dialout` group)"
                }
                tokio_serial::ErrorKind::NoDevice => " (is another program using it?)",
                _ => "",
            };
            HardwareError::Line(format!("cannot open serial line {shown}: {e}{hint}"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_zero_cannot_be_made() {
        assert_eq!(Channel::new(0), None);
        assert_eq!(Channel::new(1).map(Channel::get), Some(1));
        assert_eq!(Channel::new(MAX_CHANNELS).map(Channel::get), Some(MAX_CHANNELS));
        assert_eq!(Channel::new(MAX_CHANNELS + 1), None);
    }

    #[test]
    fn compartments_count_on_through_the_boards() {
        let layout = Layout::parse("3:8, 1:16").unwrap();
        assert_eq!(layout.compartments().count(), 24);
        let at = |n| {
            layout.locate(CompartmentNumber::new(n).unwrap()).map(|(b, c)| (b.address, c.get()))
        };
        assert_eq!(at(1), Some((3, 1)));
        assert_eq!(at(8), Some((3, 8)));
        assert_eq!(at(9), Some((1, 1)));
        assert_eq!(at(24), Some((1, 16)));
        assert_eq!(at(25), None);
        for n in layout.compartments() {
            let (board, channel) = layout.locate(CompartmentNumber::new(n).unwrap()).unwrap();
            assert_eq!(layout.compartment(board.address, channel), Some(n));
        }
        assert_eq!(layout.compartment(3, Channel::new(9).unwrap()), None);
        assert_eq!(layout.compartment(2, Channel::new(1).unwrap()), None);
        assert_eq!(layout.to_string(), "3:8,1:16");
    }

    #[test]
    fn bad_layouts_say_what_is_wrong() {
        for (text, want) in [
            ("", LayoutError::Empty),
            ("1", LayoutError::Syntax("1".into())),
            ("1:x", LayoutError::Syntax("1:x".into())),
            ("0:8", LayoutError::Address(0)),
            ("248:8", LayoutError::Address(248)),
            ("300:8", LayoutError::Address(300)),
            ("1:0", LayoutError::Channels(0)),
            ("1:49", LayoutError::Channels(49)),
            ("1:8,1:8", LayoutError::Duplicate(1)),
        ] {
            assert_eq!(Layout::parse(text), Err(want), "{text:?}");
        }
        let many: Vec<String> = (1..=21).map(|a| format!("{a}:48")).collect();
        assert_eq!(Layout::parse(&many.join(",")), Err(LayoutError::TooMany(1008)));
    }
}
