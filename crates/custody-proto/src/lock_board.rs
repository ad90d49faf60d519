//! The common RS-485 lock-control board's frames: 9600 baud, 8N1, frames closed by an XOR of
//! the bytes before it. Several boards share one line, each at its own address.
//!
//! | frame | bytes |
//! |---|---|
//! | unlock a channel | `8A board channel 11 xor` |
//! | its reply | `8A board channel status xor`: status `11` the latch released, `00` it did not |
//! | query all doors | `80 board 00 33 xor` |
//! | its reply | `80 board s₁…sₙ 33 xor`: n = ⌈channels / 8⌉ status bytes, highest channels first; bit k of the last byte is channel k + 1; a set bit is an open door |
//!
//! Channel 0 in an unlock frame opens every lock on most of these boards; the frame is built
//! only from a [`Channel`], which cannot be 0. Every reply is validated (header, board, channel,
//! status, trailer, checksum, length) and bytes that do not make one are skipped, so noise or a
//! late reply to an earlier question is never taken for an answer.
//!
//! Only the codec lives here, without I/O, so it can be fuzzed and reused: the agent's driver
//! (`custody_agent::hardware::rs485`) puts it on a serial line, and its board emulator reads
//! requests and writes replies with the same functions.

use std::num::NonZeroU8;

/// The most channels one board may have (six status bytes on an RS-485 lock board).
pub const MAX_CHANNELS: u8 = 48;

/// An output of a board, counted from 1. Channel 0, which some lock boards read as "open all",
/// cannot be constructed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Channel(NonZeroU8);

impl Channel {
    /// Channel `n`, if it is 1 to [`MAX_CHANNELS`].
    pub fn new(n: u8) -> Option<Self> {
        NonZeroU8::new(n).filter(|n| n.get() <= MAX_CHANNELS).map(Self)
    }

    /// The channel's number.
    pub const fn get(self) -> u8 {
        self.0.get()
    }
}

/// One board on a serial line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoardSpec {
    /// Its bus address (DIP switches or configuration), 1 to 247.
    pub address: u8,
    /// How many channels it has, 1 to [`MAX_CHANNELS`].
    pub channels: u8,
}

/// Doors as a bit set: bit `k` is channel `k + 1`, set when the door is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DoorBits(pub u64);

impl DoorBits {
    /// Whether the door on `channel` is open.
    pub fn is_open(self, channel: Channel) -> bool {
        self.0 >> (channel.get() - 1) & 1 == 1
    }
}

/// The line speed.
pub const BAUD: u32 = 9600;
const UNLOCK: u8 = 0x8A;
const QUERY: u8 = 0x80;
const UNLOCK_FUNCTION: u8 = 0x11;
const QUERY_FUNCTION: u8 = 0x33;
const RELEASED: u8 = 0x11;
const HELD: u8 = 0x00;

fn xor(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0, |a, b| a ^ b)
}

/// The frame that releases `channel` of the board at `board`.
pub fn unlock_frame(board: u8, channel: Channel) -> [u8; 5] {
    let body = [UNLOCK, board, channel.get(), UNLOCK_FUNCTION];
    let [a, b, c, d] = body;
    [a, b, c, d, xor(&body)]
}

/// The frame that asks the board at `board` for every door.
pub fn query_frame(board: u8) -> [u8; 5] {
    let body = [QUERY, board, 0, QUERY_FUNCTION];
    let [a, b, c, d] = body;
    [a, b, c, d, xor(&body)]
}

/// How many status bytes a board with `channels` channels sends.
pub fn status_bytes(channels: u8) -> usize {
    usize::from(channels.div_ceil(8))
}

/// The reply the agent waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// To an unlock of this channel.
    Unlock {
        /// The board.
        board: u8,
        /// The channel.
        channel: Channel,
    },
    /// To a query of every door.
    Doors {
        /// The board.
        board: BoardSpec,
    },
}

/// A valid reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// Whether the latch released.
    Unlock {
        /// `true` when it did.
        released: bool,
    },
    /// The doors of the board.
    Doors(DoorBits),
}

impl Expect {
    const fn header(self) -> u8 {
        match self {
            Self::Unlock { .. } => UNLOCK,
            Self::Doors { .. } => QUERY,
        }
    }

    fn len(self) -> usize {
        match self {
            Self::Unlock { .. } => 5,
            Self::Doors { board } => 4 + status_bytes(board.channels),
        }
    }

    /// The reply in `frame` (exactly [`Self::len`] bytes), if it is a valid one.
    fn parse(self, frame: &[u8]) -> Option<Reply> {
        let (&check, body) = frame.split_last()?;
        if xor(body) != check {
            return None;
        }
        match (self, body) {
            (Self::Unlock { board, channel }, &[UNLOCK, b, c, status])
                if b == board && c == channel.get() =>
            {
                match status {
                    RELEASED => Some(Reply::Unlock { released: true }),
                    HELD => Some(Reply::Unlock { released: false }),
                    _ => None,
                }
            }
            (Self::Doors { board }, [QUERY, b, status @ .., QUERY_FUNCTION])
                if *b == board.address && status.len() == status_bytes(board.channels) =>
            {
                let bits = status.iter().fold(0_u64, |acc, s| acc << 8 | u64::from(*s));
                let mask = (1_u64 << board.channels) - 1;
                Some(Reply::Doors(DoorBits(bits & mask)))
            }
            _ => None,
        }
    }
}

/// Takes the first valid reply to `expect` out of `buf`, dropping every byte before it that
/// cannot begin one. `None` while more bytes are needed.
pub fn take_reply(buf: &mut Vec<u8>, expect: Expect) -> Option<Reply> {
    loop {
        let Some(start) = buf.iter().position(|b| *b == expect.header()) else {
            buf.clear();
            return None;
        };
        buf.drain(..start);
        let frame = buf.get(..expect.len())?;
        if let Some(reply) = expect.parse(frame) {
            buf.drain(..expect.len());
            return Some(reply);
        }
        buf.drain(..1);
    }
}

/// A request as a board reads it (the board emulator's side of the protocol).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Release a channel; `0` is "every channel" on a real board.
    Unlock {
        /// The board addressed.
        board: u8,
        /// The channel, as sent.
        channel: u8,
    },
    /// Report every door.
    Query {
        /// The board addressed.
        board: u8,
    },
}

/// Takes the first valid request out of `buf`, dropping bytes that cannot begin one.
pub fn take_request(buf: &mut Vec<u8>) -> Option<Request> {
    loop {
        let Some(start) = buf.iter().position(|b| *b == UNLOCK || *b == QUERY) else {
            buf.clear();
            return None;
        };
        buf.drain(..start);
        let request = match *buf.get(..5)? {
            [UNLOCK, board, channel, UNLOCK_FUNCTION, x] if xor(buf.get(..4)?) == x => {
                Some(Request::Unlock { board, channel })
            }
            [QUERY, board, 0, QUERY_FUNCTION, x] if xor(buf.get(..4)?) == x => {
                Some(Request::Query { board })
            }
            _ => None,
        };
        match request {
            Some(r) => {
                buf.drain(..5);
                return Some(r);
            }
            None => {
                buf.drain(..1);
            }
        }
    }
}

/// A board's reply to an unlock of `channel` (as sent, 0 included).
pub fn unlock_reply(board: u8, channel: u8, released: bool) -> [u8; 5] {
    let body = [UNLOCK, board, channel, if released { RELEASED } else { HELD }];
    let [a, b, c, d] = body;
    [a, b, c, d, xor(&body)]
}

/// A board's reply to a query: its doors.
pub fn doors_reply(board: BoardSpec, doors: DoorBits) -> Vec<u8> {
    let n = status_bytes(board.channels);
    let mut frame = vec![QUERY, board.address];
    frame.extend((0..n).rev().map(|i| (doors.0 >> (8 * i)) as u8));
    frame.push(QUERY_FUNCTION);
    frame.push(xor(&frame));
    frame
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn board(address: u8, channels: u8) -> BoardSpec {
        BoardSpec { address, channels }
    }

    fn ch(n: u8) -> Channel {
        Channel::new(n).unwrap()
    }

    #[test]
    fn frames_match_the_board_documentation() {
        assert_eq!(unlock_frame(1, ch(1)), [0x8A, 0x01, 0x01, 0x11, 0x9B]);
        assert_eq!(query_frame(1), [0x80, 0x01, 0x00, 0x33, 0xB2]);
        assert_eq!(doors_reply(board(1, 24), DoorBits(0)), [0x80, 0x01, 0, 0, 0, 0x33, 0xB2]);
        assert_eq!(
            doors_reply(board(1, 24), DoorBits(1 | 1 << 23)),
            [0x80, 0x01, 0x80, 0x00, 0x01, 0x33, 0x33]
        );
    }

    #[test]
    fn replies_are_validated() {
        let unlock = Expect::Unlock { board: 1, channel: ch(3) };
        let take = |bytes: &[u8], expect| take_reply(&mut bytes.to_vec(), expect);
        assert_eq!(take(&unlock_reply(1, 3, true), unlock), Some(Reply::Unlock { released: true }));
        assert_eq!(
            take(&unlock_reply(1, 3, false), unlock),
            Some(Reply::Unlock { released: false })
        );
        assert_eq!(take(&unlock_reply(1, 4, true), unlock), None, "another channel");
        assert_eq!(take(&unlock_reply(2, 3, true), unlock), None, "another board");
        let mut bad = unlock_reply(1, 3, true);
        bad[4] ^= 1;
        assert_eq!(take(&bad, unlock), None, "bad checksum");
        let odd = [0x8A, 1, 3, 0x22, 0x8A ^ 1 ^ 3 ^ 0x22];
        assert_eq!(take(&odd, unlock), None, "unknown status");
        let doors = Expect::Doors { board: board(1, 12) };
        assert_eq!(take(&doors_reply(board(1, 24), DoorBits(1)), doors), None, "wrong length");
        assert_eq!(
            take(&doors_reply(board(1, 12), DoorBits(0b1000_0000_0001)), doors),
            Some(Reply::Doors(DoorBits(0b1000_0000_0001)))
        );
    }

    #[test]
    fn noise_and_stale_replies_are_skipped() {
        let expect = Expect::Unlock { board: 1, channel: ch(2) };
        let mut buf = vec![0x00, 0x8A, 0xFF];
        buf.extend(unlock_reply(1, 1, true)); // a late reply to an earlier unlock
        buf.extend(doors_reply(board(1, 8), DoorBits(3)));
        buf.extend(unlock_reply(1, 2, true));
        buf.extend([0x8A, 0x01]);
        assert_eq!(take_reply(&mut buf, expect), Some(Reply::Unlock { released: true }));
        assert_eq!(buf, [0x8A, 0x01], "the start of the next frame is kept");
        assert_eq!(take_reply(&mut buf, expect), None);
    }

    #[test]
    fn requests_are_read_as_a_board_reads_them() {
        let mut buf = vec![0x55];
        buf.extend(unlock_frame(7, ch(12)));
        buf.extend(query_frame(7));
        buf.extend([0x8A, 7, 0, 0x11, 0x8A ^ 7 ^ 0x11]);
        assert_eq!(take_request(&mut buf), Some(Request::Unlock { board: 7, channel: 12 }));
        assert_eq!(take_request(&mut buf), Some(Request::Query { board: 7 }));
        assert_eq!(take_request(&mut buf), Some(Request::Unlock { board: 7, channel: 0 }));
        assert_eq!(take_request(&mut buf), None);
        assert!(buf.is_empty());
    }

    proptest! {
        #[test]
        fn any_bytes_are_read_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300), channels in 1_u8..=48, address in 1_u8..=247, c in 1_u8..=48) {
            let _ = take_reply(&mut bytes.clone(), Expect::Doors { board: board(address, channels) });
            let _ = take_reply(&mut bytes.clone(), Expect::Unlock { board: address, channel: ch(c) });
            let mut buf = bytes;
            while take_request(&mut buf).is_some() {}
        }

        #[test]
        fn a_reply_survives_noise_around_it(noise in proptest::collection::vec(any::<u8>(), 0..40), channels in 1_u8..=48, bits in any::<u64>()) {
            let b = board(9, channels);
            let doors = DoorBits(bits & ((1 << channels) - 1));
            // Noise without the header byte cannot hide a frame.
            let mut buf: Vec<u8> = noise.iter().copied().filter(|x| *x != QUERY).collect();
            buf.extend(doors_reply(b, doors));
            prop_assert_eq!(take_reply(&mut buf, Expect::Doors { board: b }), Some(Reply::Doors(doors)));
        }

        #[test]
        fn every_single_bit_flip_is_refused(channels in 1_u8..=48, bits in any::<u64>(), at in any::<prop::sample::Index>(), bit in 0_u32..8) {
            let b = board(9, channels);
            let mut frame = doors_reply(b, DoorBits(bits & ((1 << channels) - 1)));
            let i = at.index(frame.len());
            frame[i] ^= 1 << bit;
            prop_assert_eq!(Expect::Doors { board: b }.parse(&frame), None);
            let mut unlock = unlock_reply(9, 5, true);
            let i = at.index(5);
            unlock[i] ^= 1 << bit;
            prop_assert_eq!(Expect::Unlock { board: 9, channel: ch(5) }.parse(&unlock), None);
        }
    }
}
