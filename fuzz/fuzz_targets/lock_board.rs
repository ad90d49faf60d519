//! The lock-board codec reads whatever arrives on the serial line: noise, late replies, bytes
//! from a board gone wrong. It must never panic, and a reply it accepts must be one the board
//! could have sent for the question asked, byte for byte among the input.
#![no_main]

use custody_proto::lock_board::{
    BoardSpec, Channel, DoorBits, Expect, Reply, doors_reply, take_reply, take_request,
    unlock_reply,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [address, channels, channel, line @ ..] = data else { return };
    let (Some(channel), Some(channels)) = (Channel::new(*channel), Channel::new(*channels)) else {
        return;
    };
    let board = BoardSpec { address: *address, channels: channels.get() };
    let contains = |frame: &[u8]| line.windows(frame.len()).any(|w| w == frame);

    let mut buf = line.to_vec();
    while let Some(reply) = take_reply(&mut buf, Expect::Unlock { board: *address, channel }) {
        let Reply::Unlock { released } = reply else { panic!("a door report for an unlock") };
        assert!(contains(&unlock_reply(*address, channel.get(), released)));
    }
    let mut buf = line.to_vec();
    while let Some(reply) = take_reply(&mut buf, Expect::Doors { board }) {
        let Reply::Doors(DoorBits(bits)) = reply else { panic!("an unlock for a door report") };
        assert!(bits < 1 << board.channels, "a door the board does not have");
        let _ = doors_reply(board, DoorBits(bits));
    }
    let mut buf = line.to_vec();
    while take_request(&mut buf).is_some() {}
    assert!(buf.len() <= line.len());
});
