//! What every lock-board driver shares: one task owns the serial line, takes unlocks first,
//! and polls every board's doors between them, reporting changes, and reporting a board's doors
//! as unknown once it has missed several polls in a row. A protocol is a [`Bus`]: how to
//! release one channel, and how to read one board's doors.

use std::collections::BTreeMap;
use std::time::Duration;

use custody_core::compartment::CompartmentNumber;
use custody_proto::device::DoorReading;
use futures_util::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncReadExt as _};
use tokio::sync::{mpsc, oneshot, watch};

use super::{
    BoardSpec, BoardStatus, Channel, DoorBits, HardwareError, Interlock, Layout, LockBoard,
    SensorEvent,
};

/// A protocol on a serial line.
pub trait Bus: Send + 'static {
    /// Puts every output of `board` in its safe state (latches held), once at start.
    fn reset(&mut self, board: BoardSpec)
    -> impl Future<Output = Result<(), HardwareError>> + Send;

    /// Releases `channel` of `board` once: never repeated, whatever the answer.
    fn unlock(
        &mut self,
        board: BoardSpec,
        channel: Channel,
    ) -> impl Future<Output = Result<(), HardwareError>> + Send;

    /// Reads the doors of `board`.
    fn doors(
        &mut self,
        board: BoardSpec,
    ) -> impl Future<Output = Result<DoorBits, HardwareError>> + Send;
}

/// How long the driver waits, and how often it polls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// For a reply (a board answers within a few tens of milliseconds).
    pub reply: Duration,
    /// Of silence that ends a drain.
    pub quiet: Duration,
    /// At most, draining.
    pub drain: Duration,
    /// Between polls of every board's doors.
    pub poll: Duration,
    /// Missed polls in a row after which a board's doors are reported unknown.
    pub unknown_after: u32,
    /// How long a relay stays on to release a latch (relay boards; a lock board times its own
    /// pulse).
    pub pulse: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            reply: Duration::from_millis(500),
            quiet: Duration::from_millis(50),
            drain: Duration::from_secs(1),
            poll: Duration::from_millis(250),
            unknown_after: 3,
            pulse: Duration::from_millis(500),
        }
    }
}

/// What was last reported for each door, and how many polls each board has missed: decides
/// which readings to report (changes only; unknown after too many misses).
#[derive(Debug, Default)]
pub struct DoorTracker {
    reported: BTreeMap<u16, DoorReading>,
    misses: BTreeMap<u8, u32>,
}

impl DoorTracker {
    /// A board answered with `doors`: the readings that changed.
    pub fn answered(
        &mut self,
        layout: &Layout,
        board: BoardSpec,
        doors: DoorBits,
    ) -> Vec<SensorEvent> {
        self.misses.insert(board.address, 0);
        self.report(layout, board, |channel| {
            if doors.is_open(channel) { DoorReading::Open } else { DoorReading::Closed }
        })
    }

    /// A board missed a poll: after `unknown_after` in a row, its doors become unknown.
    pub fn missed(
        &mut self,
        layout: &Layout,
        board: BoardSpec,
        unknown_after: u32,
    ) -> Vec<SensorEvent> {
        let misses = self.misses.entry(board.address).or_insert(0);
        *misses = misses.saturating_add(1);
        if *misses < unknown_after {
            return Vec::new();
        }
        self.report(layout, board, |_| DoorReading::Unknown)
    }

    fn report(
        &mut self,
        layout: &Layout,
        board: BoardSpec,
        reading: impl Fn(Channel) -> DoorReading,
    ) -> Vec<SensorEvent> {
        (1..=board.channels)
            .filter_map(Channel::new)
            .filter_map(|channel| {
                let n = layout.compartment(board.address, channel)?;
                let now = reading(channel);
                (self.reported.insert(n, now) != Some(now)).then_some((n, now))
            })
            .collect()
    }
}

type UnlockRequest = (CompartmentNumber, Interlock, oneshot::Sender<Result<(), HardwareError>>);

/// A running driver, as the daemon sees it: a [`LockBoard`].
#[derive(Debug, Clone)]
pub struct BoardDriver {
    requests: mpsc::Sender<UnlockRequest>,
    status: watch::Receiver<Vec<BoardStatus>>,
}

impl BoardDriver {
    /// Starts driving `bus` with the boards of `layout`; door readings come out of the receiver.
    pub fn start<B: Bus>(
        bus: B,
        layout: Layout,
        timing: Timing,
    ) -> (Self, mpsc::UnboundedReceiver<SensorEvent>) {
        let (requests, inbox) = mpsc::channel(16);
        let (sensors, events) = mpsc::unbounded_channel();
        // Not answering until the first poll says otherwise.
        let (status_tx, status) = watch::channel(
            layout
                .boards()
                .iter()
                .map(|b| BoardStatus { address: b.address, answering: false })
                .collect(),
        );
        tokio::spawn(drive(bus, layout, timing, inbox, sensors, status_tx));
        (Self { requests, status }, events)
    }
}

impl LockBoard for BoardDriver {
    fn boards(&self) -> Vec<BoardStatus> {
        self.status.borrow().clone()
    }

    fn unlock(
        &self,
        compartment: CompartmentNumber,
        interlock: Interlock,
    ) -> BoxFuture<'_, Result<(), HardwareError>> {
        Box::pin(async move {
            let stopped = || HardwareError::Line("the lock-board driver has stopped".into());
            let (tx, rx) = oneshot::channel();
            self.requests.send((compartment, interlock, tx)).await.map_err(|_| stopped())?;
            rx.await.map_err(|_| stopped())?
        })
    }
}

async fn drive<B: Bus>(
    mut bus: B,
    layout: Layout,
    timing: Timing,
    mut requests: mpsc::Receiver<UnlockRequest>,
    sensors: mpsc::UnboundedSender<SensorEvent>,
    status: watch::Sender<Vec<BoardStatus>>,
) {
    for &board in layout.boards() {
        if let Err(e) = bus.reset(board).await {
            tracing::warn!(board = board.address, error = %e, "a lock board did not confirm its outputs off at start");
        }
    }
    let mut doors = DoorTracker::default();
    let mut poll = tokio::time::interval(timing.poll);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            request = requests.recv() => {
                let Some((compartment, interlock, answer)) = request else { return };
                let result = match layout.locate(compartment) {
                    // The last check before the frame goes out: the request may have waited.
                    Some(_) if interlock.is_engaged() => Err(HardwareError::Interlocked),
                    Some((board, channel)) => bus.unlock(board, channel).await,
                    None => Err(HardwareError::NoSuchCompartment),
                };
                let _ = answer.send(result);
            }
            _ = poll.tick() => {
                let mut seen = Vec::with_capacity(layout.boards().len());
                for &board in layout.boards() {
                    let polled = bus.doors(board).await;
                    seen.push(BoardStatus { address: board.address, answering: polled.is_ok() });
                    let changes = match polled {
                        Ok(bits) => doors.answered(&layout, board, bits),
                        Err(_) => doors.missed(&layout, board, timing.unknown_after),
                    };
                    for change in changes {
                        let _ = sensors.send(change);
                    }
                }
                status.send_replace(seen);
            }
        }
    }
}

/// Reads and discards until the line has been quiet for `quiet` (at most `limit`), so that a
/// late reply is not read as the answer to the next question.
pub async fn drain<P: AsyncRead + Unpin>(port: &mut P, quiet: Duration, limit: Duration) {
    let discard = async {
        let mut chunk = [0_u8; 64];
        while let Ok(Ok(n)) = tokio::time::timeout(quiet, port.read(&mut chunk)).await {
            if n == 0 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(limit, discard).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn board(address: u8, channels: u8) -> BoardSpec {
        BoardSpec { address, channels }
    }

    #[test]
    fn doors_are_reported_on_change_and_unknown_after_missed_polls() {
        let layout = Layout::parse("4:2,5:2").unwrap();
        let (first, second) = (board(4, 2), board(5, 2));
        let mut t = DoorTracker::default();
        assert_eq!(
            t.answered(&layout, second, DoorBits(0b01)),
            [(3, DoorReading::Open), (4, DoorReading::Closed)]
        );
        assert_eq!(t.answered(&layout, second, DoorBits(0b01)), [], "no change, no report");
        assert_eq!(t.answered(&layout, second, DoorBits(0b11)), [(4, DoorReading::Open)]);
        assert_eq!(t.missed(&layout, first, 2), [], "one miss is not enough");
        assert_eq!(
            t.missed(&layout, first, 2),
            [(1, DoorReading::Unknown), (2, DoorReading::Unknown)]
        );
        assert_eq!(t.missed(&layout, first, 2), [], "reported once");
        assert_eq!(t.missed(&layout, second, 2), []);
        assert_eq!(t.answered(&layout, second, DoorBits(0b11)), [], "a miss in between resets");
        assert_eq!(
            t.answered(&layout, first, DoorBits(0)),
            [(1, DoorReading::Closed), (2, DoorReading::Closed)]
        );
    }
}
