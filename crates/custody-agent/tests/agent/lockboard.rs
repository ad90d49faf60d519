//! The lock-board drivers (RS-485 lock boards, Modbus RTU relay boards) against the board
//! emulators, over a pseudo-terminal pair made by `socat`: the real framing at 9600 8N1, faults
//! injected at the board.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first unexpected value"
)]

use std::collections::BTreeMap;
use std::time::Duration;

use custody_agent::hardware::emulator::{ModbusEmulator, PtyPair, Rs485Emulator};
use custody_agent::hardware::{
    BoardDriver, HardwareError, Interlock, Layout, LockBoard as _, SensorEvent, SimulatedBank,
    Timing, open_serial,
};
use custody_agent::hardware::{modbus, rs485};
use custody_core::compartment::CompartmentNumber;
use custody_proto::device::DoorReading;
use custody_testkit::eventually;
use tokio::io::AsyncWriteExt as _;
use tokio::sync::mpsc;

struct Rig {
    pty: PtyPair,
    doors: SimulatedBank,
    emulator: Rs485Emulator,
    board: BoardDriver,
    sensors: Sensors,
    _dir: tempfile::TempDir,
}

const LAYOUT: &str = "1:8,2:8";

async fn rig() -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let pty = PtyPair::spawn(dir.path()).await.unwrap();
    let layout = Layout::parse(LAYOUT).unwrap();
    let (doors, _) = SimulatedBank::new(layout.compartments());
    let emulator = Rs485Emulator::open(&pty.board, doors.clone(), layout.clone()).unwrap();
    let (board, sensors) = rs485::open(&pty.agent, layout, timing()).unwrap();
    Rig {
        pty,
        doors,
        emulator,
        board,
        sensors: Sensors { events: sensors, last: BTreeMap::new() },
        _dir: dir,
    }
}

/// Short waits, so that tests of silent boards end soon.
fn timing() -> Timing {
    Timing {
        reply: Duration::from_millis(300),
        poll: Duration::from_millis(50),
        pulse: Duration::from_millis(50),
        ..Timing::default()
    }
}

fn n(number: u16) -> CompartmentNumber {
    CompartmentNumber::new(number).unwrap()
}

/// Waits until the driver's latest report for door `door` is `reading`.
async fn reported(sensors: &mut Sensors, door: u16, reading: DoorReading) {
    let wait = async {
        while sensors.last.get(&door) != Some(&reading) {
            let (n, seen) = sensors.events.recv().await.expect("the driver stopped");
            sensors.last.insert(n, seen);
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .unwrap_or_else(|_| panic!("door {door} was never reported {reading:?}"));
}

/// The driver's reports, and the latest for each door.
struct Sensors {
    events: mpsc::UnboundedReceiver<SensorEvent>,
    last: BTreeMap<u16, DoorReading>,
}

#[tokio::test]
async fn an_unlock_crosses_the_line_once_and_the_doors_are_polled() {
    let mut r = rig().await;
    // At boot every door is read from the boards, on both boards.
    reported(&mut r.sensors, 16, DoorReading::Closed).await;

    r.board.unlock(n(11), Interlock::default()).await.unwrap();
    assert!(r.doors.is_unlatched(11), "board 2, channel 3");
    assert_eq!(r.emulator.unlock_frames(), 1);
    r.doors.open_door(11).unwrap();
    reported(&mut r.sensors, 11, DoorReading::Open).await;
    r.doors.close_door(11).unwrap();
    reported(&mut r.sensors, 11, DoorReading::Closed).await;

    assert_eq!(
        r.board.unlock(n(17), Interlock::default()).await,
        Err(HardwareError::NoSuchCompartment)
    );
    assert_eq!(r.emulator.unlock_frames(), 1, "nothing sent for a compartment no board has");
    assert_eq!(r.emulator.open_all_frames(), 0);
}

#[tokio::test]
async fn nothing_is_sent_while_the_interlock_is_engaged() {
    let r = rig().await;
    let interlock = Interlock::default();
    interlock.set(true);
    assert_eq!(r.board.unlock(n(1), interlock.clone()).await, Err(HardwareError::Interlocked));
    assert_eq!(r.emulator.unlock_frames(), 0, "checked before the frame, in the driver");
    assert!(!r.doors.is_unlatched(1));
    interlock.set(false);
    r.board.unlock(n(1), interlock).await.unwrap();
    assert_eq!(r.emulator.unlock_frames(), 1);
}

#[tokio::test]
async fn the_driver_says_which_boards_answer() {
    let r = rig().await;
    let answering = |r: &Rig| r.board.boards().iter().filter(|b| b.answering).count();
    eventually("both boards answer", || async { answering(&r) == 2 }).await;
    r.emulator.unplug(true);
    eventually("neither answers", || async { answering(&r) == 0 }).await;
    let addresses: Vec<u8> = r.board.boards().iter().map(|b| b.address).collect();
    assert_eq!(addresses, [1, 2]);
}

#[tokio::test]
async fn a_silent_board_is_not_asked_again_and_the_next_unlock_works() {
    let r = rig().await;
    r.doors.fail_next_unlock();
    assert_eq!(r.board.unlock(n(2), Interlock::default()).await, Err(HardwareError::NoAnswer));
    assert_eq!(r.emulator.unlock_frames(), 1, "an unanswered unlock is never resent");
    assert!(!r.doors.is_unlatched(2));
    // Released but unconfirmed: still reported as unanswered, still not resent.
    r.emulator.silence_next();
    assert_eq!(r.board.unlock(n(1), Interlock::default()).await, Err(HardwareError::NoAnswer));
    assert!(r.doors.is_unlatched(1));
    r.board.unlock(n(2), Interlock::default()).await.unwrap();
    assert_eq!(r.emulator.unlock_frames(), 3, "the person's second try is a new unlock");
    assert!(r.doors.is_unlatched(2));
}

#[tokio::test]
async fn corrupt_noisy_and_late_replies_are_never_taken_for_an_answer() {
    let r = rig().await;
    // A corrupt reply: the latch did release, but the driver cannot know that, and says so.
    r.emulator.corrupt_next();
    assert_eq!(r.board.unlock(n(3), Interlock::default()).await, Err(HardwareError::NoAnswer));
    assert_eq!(r.emulator.unlock_frames(), 1, "not resent");

    // Noise before a good reply: read through.
    r.emulator.noise_next();
    r.board.unlock(n(4), Interlock::default()).await.unwrap();

    // A reply held back and sent before the next one (a board that answered too late): the
    // stale bytes are skipped and every later answer is the right one.
    r.emulator.delay_next();
    assert_eq!(r.board.unlock(n(5), Interlock::default()).await, Err(HardwareError::NoAnswer));
    r.board.unlock(n(6), Interlock::default()).await.unwrap();
    r.board.unlock(n(7), Interlock::default()).await.unwrap();
    assert!(r.doors.is_unlatched(6) && r.doors.is_unlatched(7));
    assert_eq!(r.emulator.open_all_frames(), 0);
}

#[tokio::test]
async fn doors_become_unknown_when_the_boards_stop_answering() {
    let mut r = rig().await;
    reported(&mut r.sensors, 1, DoorReading::Closed).await;
    r.emulator.unplug(true);
    reported(&mut r.sensors, 1, DoorReading::Unknown).await;
    reported(&mut r.sensors, 16, DoorReading::Unknown).await;
    assert_eq!(r.board.unlock(n(1), Interlock::default()).await, Err(HardwareError::NoAnswer));
    r.emulator.unplug(false);
    reported(&mut r.sensors, 16, DoorReading::Closed).await;

    // A pulled cable: the same.
    r.pty.cut().await;
    reported(&mut r.sensors, 9, DoorReading::Unknown).await;
    assert!(r.board.unlock(n(9), Interlock::default()).await.is_err());
    assert!(!r.doors.is_unlatched(9));
}

/// What the driver never sends, a board obeys: channel 0 releases every latch of the board.
/// This is why no unlock frame can be built for channel 0.
#[tokio::test]
async fn the_emulated_board_obeys_channel_zero_as_a_real_one_would() {
    let dir = tempfile::tempdir().unwrap();
    let pty = PtyPair::spawn(dir.path()).await.unwrap();
    let layout = Layout::parse(LAYOUT).unwrap();
    let (doors, _) = SimulatedBank::new(layout.compartments());
    let emulator = Rs485Emulator::open(&pty.board, doors.clone(), layout).unwrap();
    let mut raw = open_serial(&pty.agent, 9600).unwrap();
    raw.write_all(&[0x8A, 0x01, 0x00, 0x11, 0x9A]).await.unwrap();
    eventually("board 1 to open every lock", || async { (1..=8).all(|c| doors.is_unlatched(c)) })
        .await;
    assert_eq!(emulator.open_all_frames(), 1);
    assert!(!doors.is_unlatched(9), "board 2 was not addressed");
}

#[tokio::test]
async fn a_missing_serial_line_says_what_to_check() {
    let err = rs485::open(
        std::path::Path::new("/dev/ttyUSB-custody-none"),
        Layout::parse("1:8").unwrap(),
        Timing::default(),
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("is the RS-485 adapter plugged in"), "{err}");
}

struct RelayRig {
    doors: SimulatedBank,
    emulator: ModbusEmulator,
    board: BoardDriver,
    sensors: Sensors,
    _pty: PtyPair,
    _dir: tempfile::TempDir,
}

/// Relay boards that powered up with every relay on.
async fn relay_rig() -> RelayRig {
    let dir = tempfile::tempdir().unwrap();
    let pty = PtyPair::spawn(dir.path()).await.unwrap();
    let layout = Layout::parse("5:4,6:4").unwrap();
    let (doors, _) = SimulatedBank::new(layout.compartments());
    let emulator = ModbusEmulator::open(&pty.board, doors.clone(), layout.clone()).unwrap();
    emulator.relays_on_at_power_up(layout.compartments());
    let (board, sensors) = modbus::open(&pty.agent, modbus::BAUD, layout, timing()).unwrap();
    RelayRig {
        doors,
        emulator,
        board,
        sensors: Sensors { events: sensors, last: BTreeMap::new() },
        _pty: pty,
        _dir: dir,
    }
}

#[tokio::test]
async fn relays_are_switched_off_at_start_and_pulse_once_per_unlock() {
    let mut r = relay_rig().await;
    assert_eq!(r.emulator.relays_on(), 8);
    reported(&mut r.sensors, 8, DoorReading::Closed).await;
    assert_eq!(r.emulator.relays_on(), 0, "every relay off before the first poll");

    r.board.unlock(n(6), Interlock::default()).await.unwrap();
    assert!(r.doors.is_unlatched(6), "board 6, relay 1");
    assert_eq!(r.emulator.on_writes(), 1);
    assert_eq!(r.emulator.relays_on(), 0, "off again after the pulse");
    r.doors.open_door(6).unwrap();
    reported(&mut r.sensors, 6, DoorReading::Open).await;
    r.doors.close_door(6).unwrap();
    reported(&mut r.sensors, 6, DoorReading::Closed).await;
    assert_eq!(r.emulator.broadcasts(), 0, "address 0 is never used");
}

#[tokio::test]
async fn an_unanswered_relay_is_switched_off_and_never_switched_on_again() {
    let mut r = relay_rig().await;
    reported(&mut r.sensors, 1, DoorReading::Closed).await;
    r.emulator.silence_next_on();
    assert_eq!(r.board.unlock(n(2), Interlock::default()).await, Err(HardwareError::NoAnswer));
    assert_eq!(r.emulator.on_writes(), 1, "not resent");
    assert_eq!(r.emulator.relays_on(), 0, "switched off all the same");
    r.board.unlock(n(3), Interlock::default()).await.unwrap();
    assert_eq!(r.emulator.on_writes(), 2);

    r.emulator.unplug(true);
    reported(&mut r.sensors, 5, DoorReading::Unknown).await;
    assert_eq!(r.board.unlock(n(5), Interlock::default()).await, Err(HardwareError::NoAnswer));
    assert!(!r.doors.is_unlatched(5));
    r.emulator.unplug(false);
    reported(&mut r.sensors, 5, DoorReading::Closed).await;
}
