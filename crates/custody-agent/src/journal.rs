//! The agent's journal: every unlock it is about to perform, every result, every door reading
//! and every lockdown change, appended durably before anything acts on it, numbered by a
//! monotonic counter and hash-chained, so a gap or a rewrite shows.
//!
//! ```text
//! AGENT_DIR/journal.log   one JSON record a line:
//!   {"counter":7,"at_ms":…,"entry":{"kind":"unlock",…},"prev":"<hex>","hash":"<hex>"}
//!   hash = SHA-256("custody-agent-journal-v1\n" ‖ prev ‖ JSON of [counter, at_ms, entry])
//! ```
//!
//! What the agent must remember across a power cut is read back from it at start
//! ([`Restored`]): the nonces of commands it began to execute, so that no command is executed
//! twice whatever is sent again; whether the bank is locked down; the offline uses the server
//! has not acknowledged, the codes they spent and the refusals that spent the offline budget;
//! the sensor readings not yet acknowledged and the policy that judged them; and the counter. An unlock is
//! journaled (and synced to disk) before the board is told; if that fails, the board is not told.
//!
//! A last line cut short by a power cut was never synced, so nothing acted on it: it is dropped.
//! Any other damage stops the agent, with the line named, rather than guessing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use custody_core::Timestamp;
use custody_crypto::sha256;
use custody_proto::device::{AgentMessage, BankPolicy, DoorReading, OfflineUse, OfflineWhat};
use data_encoding::HEXLOWER;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt as _;

const DOMAIN: &[u8] = b"custody-agent-journal-v1\n";

/// What is journaled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Entry {
    /// An open command about to be executed: written before the board is told.
    Unlock {
        /// The command's nonce.
        nonce: String,
        /// The compartment.
        compartment: u16,
        /// The command's expiry; until then its nonce is refused.
        expires_at_ms: i64,
    },
    /// What the board answered.
    Unlocked {
        /// The command's nonce.
        nonce: String,
        /// `None` when the board confirmed, or why not.
        failure: Option<String>,
    },
    /// A door sensor reading.
    Door {
        /// The compartment.
        compartment: u16,
        /// The reading.
        reading: DoorReading,
    },
    /// The bank was locked down, or its lockdown lifted, as the server said.
    Lockdown {
        /// Whether it is locked down now.
        on: bool,
    },
    /// Something the kiosk did while the server was unreachable: written before the door is
    /// released, and reported after every welcome until the server acknowledges it.
    Offline {
        /// The use, as it is reported.
        used: OfflineUse,
    },
    /// The server recorded an offline use.
    Acknowledged {
        /// The use's id.
        id: String,
    },
    /// A tamper sensor's reading that counts: reported after every welcome until the server
    /// acknowledges it.
    Sensor {
        /// The kind of alert it raises.
        alert: String,
        /// The compartment, unless it concerns the bank as a whole.
        compartment: Option<u16>,
        /// Whether one of the site's lockdown rules matched it: the bank stays locked down at
        /// least until the server has it.
        #[serde(default)]
        locks: bool,
    },
    /// The server recorded the sensor reading journaled under `counter`.
    SensorAck {
        /// The reading's counter.
        counter: u64,
    },
    /// The bank's sensor settings and its site's lockdown rules, as the server sent them.
    Policy {
        /// What was sent.
        policy: BankPolicy,
    },
}

/// A numbered, timed entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// One more than the record before it.
    pub counter: u64,
    /// When, by the agent's clock.
    pub at_ms: i64,
    /// What.
    pub entry: Entry,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    counter: u64,
    at_ms: i64,
    entry: Entry,
    prev: String,
    hash: String,
}

/// What the journal says about the agent's state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Restored {
    /// The last counter used (0 for a new journal).
    pub counter: u64,
    /// Nonces of commands begun, with their expiry (ms); only those not yet expired matter.
    pub executed: BTreeMap<String, i64>,
    /// Whether the bank is locked down.
    pub locked_down: bool,
    /// Offline uses the server has not acknowledged yet, by id.
    pub pending: BTreeMap<String, OfflineUse>,
    /// Code records that opened offline: never again here, whatever a list says.
    pub spent: BTreeSet<String>,
    /// When offline refusals happened (ms): they spend the offline budget.
    pub refusals: Vec<i64>,
    /// Deposits couriers made offline, by parcel id.
    pub deposits: BTreeMap<String, OfflineDeposit>,
    /// The last reading of each door.
    pub doors: BTreeMap<u16, DoorReading>,
    /// When each compartment was last unlocked (ms), until its door opened: an unlock cut
    /// short by a power cut still allows its one opening.
    pub unlocked_at: BTreeMap<u16, i64>,
    /// Sensor readings the server has not acknowledged yet, by counter.
    pub readings: BTreeMap<u64, Reading>,
    /// The last policy the server sent.
    pub policy: Option<BankPolicy>,
    /// Doors read open: since when (ms), and whether `door_left_open` was raised for it.
    pub open_since: BTreeMap<u16, (i64, bool)>,
}

/// A sensor reading that counted, until the server acknowledges it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading {
    /// The kind of alert it raises.
    pub alert: String,
    /// The compartment, unless it concerns the bank as a whole.
    pub compartment: Option<u16>,
    /// When (ms, the agent's clock).
    pub at_ms: i64,
    /// Whether it locked the bank down by one of the site's rules.
    pub locks: bool,
}

impl Reading {
    /// The reading as reported, under its journal counter.
    pub fn message(&self, counter: u64) -> AgentMessage {
        AgentMessage::Sensor {
            kind: self.alert.clone(),
            compartment: self.compartment,
            at_ms: self.at_ms,
            counter,
        }
    }
}

/// The kind of alert a door left open raises (`custody_core::alert::AlertKind::DoorLeftOpen`).
const DOOR_LEFT_OPEN: &str = "door_left_open";

/// A deposit a courier made while the server was unreachable. Its compartment is not offered
/// again, nor its parcel, until the server has taken it in and sent a list since.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfflineDeposit {
    /// The courier's person id.
    pub courier: String,
    /// The compartment it went into.
    pub compartment: u16,
    /// When its compartment opened (ms).
    pub at_ms: i64,
    /// Whether the courier confirmed it (the door shut on the parcel).
    pub confirmed: bool,
    /// The ids of its offline uses: the deposit, and the confirmation once made.
    pub uses: Vec<String>,
}

impl Restored {
    /// Takes one record into account, as reading the journal does.
    pub fn apply(&mut self, record: &Record) {
        self.counter = record.counter;
        match &record.entry {
            Entry::Unlock { nonce, expires_at_ms, compartment } => {
                self.executed.insert(nonce.clone(), *expires_at_ms);
                self.unlocked_at.insert(*compartment, record.at_ms);
            }
            Entry::Lockdown { on } => self.locked_down = *on,
            Entry::Offline { used } => {
                match &used.what {
                    OfflineWhat::Opened { code, compartment, .. } => {
                        self.spent.insert(code.clone());
                        self.unlocked_at.insert(*compartment, used.at_ms);
                    }
                    OfflineWhat::Refused { .. } => self.refusals.push(used.at_ms),
                    OfflineWhat::Deposited { courier, parcel, compartment } => {
                        let deposit = OfflineDeposit {
                            courier: courier.clone(),
                            compartment: *compartment,
                            at_ms: used.at_ms,
                            confirmed: false,
                            uses: vec![used.id.clone()],
                        };
                        self.deposits.insert(parcel.clone(), deposit);
                        self.unlocked_at.insert(*compartment, used.at_ms);
                    }
                    OfflineWhat::Confirmed { parcel, .. } => {
                        if let Some(d) = self.deposits.get_mut(parcel) {
                            d.confirmed = true;
                            d.uses.push(used.id.clone());
                        }
                    }
                }
                self.pending.insert(used.id.clone(), used.clone());
            }
            Entry::Acknowledged { id } => {
                self.pending.remove(id);
            }
            Entry::Door { compartment, reading } => {
                let before = self.doors.insert(*compartment, *reading);
                match reading {
                    DoorReading::Open => {
                        self.unlocked_at.remove(compartment);
                        if before != Some(DoorReading::Open) {
                            self.open_since.insert(*compartment, (record.at_ms, false));
                        }
                    }
                    DoorReading::Closed => {
                        self.open_since.remove(compartment);
                    }
                    DoorReading::Unknown => {}
                }
            }
            Entry::Sensor { alert, compartment, locks } => {
                if alert == DOOR_LEFT_OPEN
                    && let Some(open) = compartment.and_then(|c| self.open_since.get_mut(&c))
                {
                    open.1 = true;
                }
                let reading = Reading {
                    alert: alert.clone(),
                    compartment: *compartment,
                    at_ms: record.at_ms,
                    locks: *locks,
                };
                self.readings.insert(record.counter, reading);
            }
            Entry::SensorAck { counter } => {
                self.readings.remove(counter);
            }
            Entry::Policy { policy } => self.policy = Some(policy.clone()),
            Entry::Unlocked { .. } => {}
        }
    }

    /// Forgets nonces whose commands expired before `now`.
    pub fn forget_expired(&mut self, now: Timestamp) {
        self.executed.retain(|_, expires| *expires > now.as_millis());
    }
}

/// Why the journal cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// Reading, writing or syncing failed (a full disk among others).
    #[error("journal {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A line is not what was written there: the journal was damaged or altered.
    #[error(
        "journal {path} is damaged at line {line} ({why}); the agent will not run on it. Keep \
         the file for investigation and move it aside to start a new journal (the server will \
         see the counter start again)"
    )]
    Damaged {
        /// The file.
        path: PathBuf,
        /// The first bad line, from 1.
        line: usize,
        /// What is wrong.
        why: &'static str,
    },
    /// A record out of order (a bug, never data).
    #[error("journal record {got} does not follow {last}")]
    OutOfOrder {
        /// The last counter.
        last: u64,
        /// The one offered.
        got: u64,
    },
}

fn chain(prev: &[u8; 32], record: &Record) -> [u8; 32] {
    let body =
        serde_json::to_vec(&(record.counter, record.at_ms, &record.entry)).unwrap_or_default();
    let mut data = Vec::with_capacity(DOMAIN.len() + 32 + body.len());
    data.extend_from_slice(DOMAIN);
    data.extend_from_slice(prev);
    data.extend_from_slice(&body);
    sha256(&data)
}

/// Checks a journal's text and restores the state it records. Returns the state, the last
/// hash, and how many bytes are sound (a torn last line is left out).
pub fn verify(text: &[u8], path: &Path) -> Result<(Restored, [u8; 32], usize), JournalError> {
    let mut restored = Restored::default();
    let mut prev = [0_u8; 32];
    let mut sound = 0;
    for (i, line) in text.split_inclusive(|b| *b == b'\n').enumerate() {
        let damaged = |why| JournalError::Damaged { path: path.to_owned(), line: i + 1, why };
        if !line.ends_with(b"\n") {
            // Cut short by a power cut before it was synced: nothing acted on it.
            break;
        }
        let parsed: Line = serde_json::from_slice(line).map_err(|_| damaged("not a record"))?;
        if parsed.counter != restored.counter + 1 {
            return Err(damaged("counter out of sequence"));
        }
        if HEXLOWER.decode(parsed.prev.as_bytes()).ok().as_deref() != Some(&prev[..]) {
            return Err(damaged("does not follow the line before"));
        }
        let record = Record { counter: parsed.counter, at_ms: parsed.at_ms, entry: parsed.entry };
        let hash = chain(&prev, &record);
        if HEXLOWER.decode(parsed.hash.as_bytes()).ok().as_deref() != Some(&hash[..]) {
            return Err(damaged("hash does not match"));
        }
        restored.apply(&record);
        prev = hash;
        sound += line.len();
    }
    Ok((restored, prev, sound))
}

/// The journal file, open for appending.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: tokio::fs::File,
    counter: u64,
    prev: [u8; 32],
}

impl Journal {
    /// Opens (or starts) the journal at `path`, checks it, and restores the state it records.
    pub async fn open(path: &Path) -> Result<(Self, Restored), JournalError> {
        let io = |source| JournalError::Io { path: path.to_owned(), source };
        let text = match tokio::fs::read(path).await {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io(e)),
        };
        let (restored, prev, sound) = verify(&text, path)?;
        let mut options = tokio::fs::OpenOptions::new();
        options.create(true).append(true);
        #[cfg(unix)]
        options.mode(0o600);
        let file = options.open(path).await.map_err(io)?;
        if sound < text.len() {
            tracing::warn!(path = %path.display(), "the journal's last line was cut short; dropped");
            file.set_len(sound as u64).await.map_err(io)?;
        }
        let journal = Self { path: path.to_owned(), file, counter: restored.counter, prev };
        Ok((journal, restored))
    }

    /// A journal with no history on a file already open: what a test uses to put the journal
    /// on a device that refuses every write (`/dev/full`).
    pub fn on_file(path: &Path, file: tokio::fs::File) -> Self {
        Self { path: path.to_owned(), file, counter: 0, prev: [0; 32] }
    }

    /// Appends `record` and syncs it to disk; only then may anything act on it.
    pub async fn append(&mut self, record: &Record) -> Result<(), JournalError> {
        if record.counter != self.counter + 1 {
            return Err(JournalError::OutOfOrder { last: self.counter, got: record.counter });
        }
        let hash = chain(&self.prev, record);
        let line = Line {
            counter: record.counter,
            at_ms: record.at_ms,
            entry: record.entry.clone(),
            prev: HEXLOWER.encode(&self.prev),
            hash: HEXLOWER.encode(&hash),
        };
        let mut text = serde_json::to_vec(&line).unwrap_or_default();
        text.push(b'\n');
        let io = |source| JournalError::Io { path: self.path.clone(), source };
        self.file.write_all(&text).await.map_err(io)?;
        // The write's own error (a full disk) surfaces here, before the sync.
        self.file.flush().await.map_err(io)?;
        self.file.sync_data().await.map_err(io)?;
        self.counter = record.counter;
        self.prev = hash;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn door(counter: u64) -> Record {
        Record {
            counter,
            at_ms: 1_000 * i64::try_from(counter).unwrap(),
            entry: Entry::Door { compartment: 2, reading: DoorReading::Open },
        }
    }

    async fn written(records: &[Record]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.log");
        let (mut journal, restored) = Journal::open(&path).await.unwrap();
        assert_eq!(restored, Restored::default());
        for r in records {
            journal.append(r).await.unwrap();
        }
        (dir, path)
    }

    #[tokio::test]
    async fn the_journal_restores_nonces_lockdown_and_the_counter() {
        let records = [
            Record {
                counter: 1,
                at_ms: 10,
                entry: Entry::Unlock { nonce: "n1".into(), compartment: 3, expires_at_ms: 500 },
            },
            Record { counter: 2, at_ms: 11, entry: Entry::Lockdown { on: true } },
            Record {
                counter: 3,
                at_ms: 12,
                entry: Entry::Unlocked { nonce: "n1".into(), failure: None },
            },
            door(4),
        ];
        let (_dir, path) = written(&records).await;
        let (mut journal, restored) = Journal::open(&path).await.unwrap();
        assert_eq!(restored.counter, 4);
        assert!(restored.locked_down);
        assert_eq!(restored.executed.get("n1"), Some(&500));
        assert!(matches!(journal.append(&door(4)).await, Err(JournalError::OutOfOrder { .. })));
        journal
            .append(&Record { counter: 5, at_ms: 13, entry: Entry::Lockdown { on: false } })
            .await
            .unwrap();
        let (_, restored) = Journal::open(&path).await.unwrap();
        assert!(!restored.locked_down);
        let mut r = restored;
        r.forget_expired(Timestamp::from_millis(500));
        assert!(r.executed.is_empty());
    }

    #[tokio::test]
    async fn the_journal_restores_readings_until_acknowledged_and_the_last_policy() {
        let sensor = |counter, alert: &str, locks| Record {
            counter,
            at_ms: 20,
            entry: Entry::Sensor { alert: alert.into(), compartment: Some(1), locks },
        };
        let policy = BankPolicy { sensors: settings(), lockdown: Vec::new() };
        let records = [
            Record { counter: 1, at_ms: 10, entry: Entry::Policy { policy: policy.clone() } },
            sensor(2, "pry", true),
            sensor(3, "drill", false),
            Record { counter: 4, at_ms: 21, entry: Entry::SensorAck { counter: 2 } },
        ];
        let (_dir, path) = written(&records).await;
        let (_, restored) = Journal::open(&path).await.unwrap();
        assert_eq!(restored.policy, Some(policy));
        let left: Vec<(u64, &str, bool)> =
            restored.readings.iter().map(|(c, r)| (*c, r.alert.as_str(), r.locks)).collect();
        assert_eq!(left, [(3, "drill", false)]);
        // A reading journaled before readings could lock anything reads as one that did not.
        let old = r#"{"kind":"sensor","alert":"pry","compartment":null}"#;
        let entry: Entry = serde_json::from_str(old).unwrap();
        assert_eq!(entry, Entry::Sensor { alert: "pry".into(), compartment: None, locks: false });
    }

    fn settings() -> custody_proto::api::SensorSettingsView {
        custody_proto::api::SensorSettingsView { rules: Vec::new(), door_left_open_after_secs: 60 }
    }

    #[tokio::test]
    async fn a_torn_last_line_is_dropped_and_the_journal_goes_on() {
        let (_dir, path) = written(&[door(1), door(2)]).await;
        let mut text = std::fs::read(&path).unwrap();
        let full = text.len();
        text.truncate(full - 7);
        std::fs::write(&path, &text).unwrap();
        let (mut journal, restored) = Journal::open(&path).await.unwrap();
        assert_eq!(restored.counter, 1, "record 2 was never synced whole");
        journal.append(&door(2)).await.unwrap();
        assert_eq!(Journal::open(&path).await.unwrap().1.counter, 2);
    }

    /// Every way the file can be altered is found, with its line.
    #[tokio::test]
    async fn alterations_are_found_at_their_line() {
        let (_dir, path) = written(&[door(1), door(2), door(3)]).await;
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let join = |ls: &[&str]| ls.iter().flat_map(|l| [*l, "\n"]).collect::<String>();
        let cases: Vec<(String, usize)> = vec![
            (join(&[lines[0], lines[2]]), 2),           // a line removed
            (join(&[lines[0], lines[2], lines[1]]), 2), // reordered
            (join(&[&lines[0].replace("\"open\"", "\"closed\""), lines[1], lines[2]]), 1), // rewritten
            (join(&[lines[0], lines[1], "{}"]), 3), // garbage
            (join(&[lines[1], lines[2]]), 1),       // truncated at the front
        ];
        for (altered, line) in cases {
            match verify(altered.as_bytes(), &path) {
                Err(JournalError::Damaged { line: found, .. }) => {
                    assert_eq!(found, line, "{altered}");
                }
                other => panic!("{altered}: {other:?}"),
            }
        }
    }

    /// A full disk: the record is refused, never half-kept.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_full_disk_refuses_the_record() {
        let file = tokio::fs::OpenOptions::new().write(true).open("/dev/full").await.unwrap();
        let mut journal = Journal::on_file(Path::new("/dev/full"), file);
        let err = journal.append(&door(1)).await.unwrap_err();
        assert!(err.to_string().contains("No space left on device"), "{err}");
        assert_eq!(journal.counter, 0);
    }
}
