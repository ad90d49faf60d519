//! A simulated bank: doors whose latches open on command and which a simulated person opens
//! and closes, with fault injection.
//!
//! It is a [`LockBoard`] of its own (in-process, for fast tests), and it is the doors behind the
//! board emulator (`super::emulator`), which the real drivers talk to over a serial line.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use custody_core::compartment::CompartmentNumber;
use custody_proto::device::DoorReading;
use futures_util::future::BoxFuture;
use tokio::sync::mpsc;

use super::{HardwareError, Interlock, LockBoard, SensorEvent};

#[derive(Debug, Default)]
struct SimDoor {
    latched: bool,
    open: bool,
    unlocks: u32,
}

#[derive(Debug, Default)]
struct SimState {
    doors: BTreeMap<u16, SimDoor>,
    fail_next_unlock: bool,
}

/// A simulated bank: doors with latches and sensors.
#[derive(Debug, Clone)]
pub struct SimulatedBank {
    state: Arc<Mutex<SimState>>,
    sensors: mpsc::UnboundedSender<SensorEvent>,
}

/// What a simulated person cannot do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    /// No such compartment.
    #[error("no such compartment")]
    NoSuchDoor,
    /// The latch holds: the door does not open.
    #[error("the door is locked")]
    Locked,
}

impl SimulatedBank {
    /// A bank with these compartment numbers, all closed and latched, and its sensor channel.
    pub fn new(
        numbers: impl IntoIterator<Item = u16>,
    ) -> (Self, mpsc::UnboundedReceiver<SensorEvent>) {
        let (sensors, events) = mpsc::unbounded_channel();
        let doors = numbers
            .into_iter()
            .map(|n| (n, SimDoor { latched: true, open: false, unlocks: 0 }))
            .collect();
        (
            Self {
                state: Arc::new(Mutex::new(SimState { doors, fail_next_unlock: false })),
                sensors,
            },
            events,
        )
    }

    fn state(&self) -> std::sync::MutexGuard<'_, SimState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A person pulls the door of `n`: it opens only if its latch was released.
    pub fn open_door(&self, n: u16) -> Result<(), SimError> {
        let mut s = self.state();
        let door = s.doors.get_mut(&n).ok_or(SimError::NoSuchDoor)?;
        if door.latched && !door.open {
            return Err(SimError::Locked);
        }
        door.open = true;
        let _ = self.sensors.send((n, DoorReading::Open));
        Ok(())
    }

    /// Someone forces the door of `n` (a pry bar, the override key): it opens, latched or not.
    pub fn force_door(&self, n: u16) -> Result<(), SimError> {
        let mut s = self.state();
        let door = s.doors.get_mut(&n).ok_or(SimError::NoSuchDoor)?;
        door.open = true;
        let _ = self.sensors.send((n, DoorReading::Open));
        Ok(())
    }

    /// A person closes the door of `n`; the latch catches again.
    pub fn close_door(&self, n: u16) -> Result<(), SimError> {
        let mut s = self.state();
        let door = s.doors.get_mut(&n).ok_or(SimError::NoSuchDoor)?;
        door.open = false;
        door.latched = true;
        let _ = self.sensors.send((n, DoorReading::Closed));
        Ok(())
    }

    /// Whether the latch of `n` is released.
    pub fn is_unlatched(&self, n: u16) -> bool {
        self.state().doors.get(&n).is_some_and(|d| !d.latched)
    }

    /// Whether the door of `n` is open.
    pub fn is_open(&self, n: u16) -> bool {
        self.state().doors.get(&n).is_some_and(|d| d.open)
    }

    /// How many unlocks `n` has received.
    pub fn unlocks(&self, n: u16) -> u32 {
        self.state().doors.get(&n).map_or(0, |d| d.unlocks)
    }

    /// Makes the next unlock fail as a jammed board would.
    pub fn fail_next_unlock(&self) {
        self.state().fail_next_unlock = true;
    }

    /// The hardware itself releases the latch of `compartment` (what a board does when told).
    pub fn release(&self, compartment: CompartmentNumber) -> Result<(), HardwareError> {
        let mut s = self.state();
        if std::mem::take(&mut s.fail_next_unlock) {
            return Err(HardwareError::NoAnswer);
        }
        let door = s.doors.get_mut(&compartment.get()).ok_or(HardwareError::NoSuchCompartment)?;
        door.latched = false;
        door.unlocks += 1;
        Ok(())
    }
}

impl LockBoard for SimulatedBank {
    fn unlock(
        &self,
        compartment: CompartmentNumber,
        interlock: Interlock,
    ) -> BoxFuture<'_, Result<(), HardwareError>> {
        let result = if interlock.is_engaged() {
            Err(HardwareError::Interlocked)
        } else {
            self.release(compartment)
        };
        Box::pin(async move { result })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn doors_open_only_after_an_unlock_and_relatch_on_close() {
        let (bank, mut sensors) = SimulatedBank::new([1, 2]);
        assert_eq!(bank.open_door(1), Err(SimError::Locked));
        bank.unlock(CompartmentNumber::new(1).unwrap(), Interlock::default()).await.unwrap();
        bank.open_door(1).unwrap();
        bank.close_door(1).unwrap();
        assert_eq!(bank.open_door(1), Err(SimError::Locked), "latched again");
        assert_eq!(sensors.recv().await, Some((1, DoorReading::Open)));
        assert_eq!(sensors.recv().await, Some((1, DoorReading::Closed)));
        assert_eq!(
            bank.unlock(CompartmentNumber::new(9).unwrap(), Interlock::default()).await,
            Err(HardwareError::NoSuchCompartment)
        );
        bank.fail_next_unlock();
        assert_eq!(
            bank.unlock(CompartmentNumber::new(2).unwrap(), Interlock::default()).await,
            Err(HardwareError::NoAnswer)
        );
        assert!(!bank.is_unlatched(2));
        let interlock = Interlock::default();
        interlock.set(true);
        assert_eq!(
            bank.unlock(CompartmentNumber::new(2).unwrap(), interlock).await,
            Err(HardwareError::Interlocked)
        );
        assert!(!bank.is_unlatched(2));
    }
}
