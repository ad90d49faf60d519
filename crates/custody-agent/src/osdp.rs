//! Badge readers on OSDP (IEC 60839-11-5), through libosdp: the agent is the control panel
//! (CP), the reader a peripheral device (PD) on an RS-485 line.
//!
//! Secure Channel is required: the CP holds the reader's Secure Channel base key (SCBK) and
//! runs libosdp with `ENFORCE_SECURE`, so a reader that cannot prove the key is taken offline
//! and nothing it says is read. During the commissioning window an installer sets (the agent's
//! `commissioning_until`), the CP may also talk to a reader in the clear, and a factory-fresh
//! reader in install mode is given the key (libosdp's KEYSET with the default key, SCBK-D).
//! Reads in the clear are marked [`ReaderKind::OsdpClear`], which the agent core refuses outside
//! the window; when the window ends the CP enforces Secure Channel from then on.
//!
//! The driver decides nothing: it turns each card read into an [`Event::BadgeRead`] with the
//! kind of link it came over. [`SimulatedReader`] is a libosdp PD for tests and the demo, so
//! they exercise this same CP over a [`MemoryBus`] instead of a serial line.
//!
//! [`Event::BadgeRead`]: crate::core::Event::BadgeRead

use std::collections::VecDeque;
use std::io::{Read as _, Write as _};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use custody_core::badge::{BadgeNumber, ReaderKind};
use custody_core::{Clock, Timestamp};
use libosdp::{
    Channel, ChannelError, ControlPanelBuilder, OsdpCommand, OsdpEvent, OsdpEventCardRead,
    OsdpFlag, PdCapEntity, PdCapability, PdInfoBuilder, PeripheralDevice,
};
use zeroize::Zeroizing;

use crate::daemon::BadgeReader;

/// libosdp must be refreshed at least every 50 ms to keep OSDP's timing.
const REFRESH: Duration = Duration::from_millis(20);

/// How the reader is reached and trusted.
pub struct OsdpConfig {
    /// The reader's address on the line (0–126).
    pub address: i32,
    /// The line's speed (9600 unless the reader was set otherwise).
    pub baud_rate: i32,
    /// The Secure Channel base key shared with the reader. A secret: never logged.
    pub scbk: Zeroizing<[u8; 16]>,
    /// Until when the reader may be talked to in the clear (and given its key).
    pub commissioning_until: Option<Timestamp>,
}

impl std::fmt::Debug for OsdpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OsdpConfig")
            .field("address", &self.address)
            .field("baud_rate", &self.baud_rate)
            .field("commissioning_until", &self.commissioning_until)
            .finish_non_exhaustive()
    }
}

/// Why the reader could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum OsdpError {
    /// libosdp refused the configuration.
    #[error("OSDP reader setup failed: {0}")]
    Setup(String),
    /// The key file is not 32 hex digits.
    #[error("the OSDP key file must hold the reader's 16-byte key as 32 hex digits")]
    Key,
    /// The key file cannot be read, or others may read it.
    #[error("OSDP key file {path}: {message}")]
    KeyFile {
        /// The file.
        path: String,
        /// What is wrong, and what to do.
        message: String,
    },
}

/// What the driver knows of its reader now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReaderStatus {
    /// The reader answers.
    pub online: bool,
    /// And over Secure Channel.
    pub secure: bool,
}

/// A running reader driver: a thread of its own, stopped on drop.
#[derive(Debug)]
pub struct OsdpReader {
    /// Dropping it stops the thread, which waits on it between refreshes.
    stop: Option<std::sync::mpsc::Sender<()>>,
    status: Arc<Mutex<ReaderStatus>>,
    thread: Option<JoinHandle<()>>,
}

impl OsdpReader {
    /// Starts the CP for one reader on `channel`; reads go to `sink`.
    pub fn start(
        channel: Box<dyn Channel>,
        config: &OsdpConfig,
        clock: Arc<dyn Clock>,
        sink: BadgeReader,
    ) -> Result<Self, OsdpError> {
        let window_open = |now: Timestamp| config.commissioning_until.is_some_and(|u| now < u);
        let enforce = !window_open(clock.now());
        let pd = PdInfoBuilder::new()
            .name("kiosk-reader")
            .and_then(|b| b.address(config.address))
            .and_then(|b| b.baud_rate(config.baud_rate))
            .map_err(|e| OsdpError::Setup(e.to_string()))?
            .flag(if enforce { OsdpFlag::EnforceSecure } else { OsdpFlag::empty() })
            .secure_channel_key(*config.scbk);
        let mut cp = ControlPanelBuilder::new()
            .add_channel(channel, vec![pd])
            .build()
            .map_err(|e| OsdpError::Setup(e.to_string()))?;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let status = Arc::new(Mutex::new(ReaderStatus::default()));
        let (until, shared) = (config.commissioning_until, status.clone());
        let thread = std::thread::Builder::new()
            .name("osdp-reader".into())
            .spawn(move || {
                let (reads_tx, reads) = std::sync::mpsc::channel::<OsdpEventCardRead>();
                cp.set_event_callback(move |_pd, event| {
                    if let OsdpEvent::CardRead(read) = event {
                        let _ = reads_tx.send(read);
                    }
                    0
                });
                let mut enforcing = enforce;
                // Paced by the stop channel: a refresh every REFRESH until the driver is dropped.
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(REFRESH) {
                    cp.refresh();
                    if !enforcing && until.is_none_or(|u| clock.now() >= u) {
                        tracing::info!("OSDP commissioning window closed: Secure Channel required");
                        cp.set_flag(0, OsdpFlag::EnforceSecure, true);
                        enforcing = true;
                    }
                    let now = ReaderStatus { online: cp.is_online(0), secure: cp.is_sc_active(0) };
                    *shared.lock().unwrap_or_else(PoisonError::into_inner) = now;
                    while let Ok(read) = reads.try_recv() {
                        let kind =
                            if now.secure { ReaderKind::OsdpSecure } else { ReaderKind::OsdpClear };
                        if !sink.blocking_read(number_of(&read), kind) {
                            return;
                        }
                    }
                }
            })
            .map_err(|e| OsdpError::Setup(e.to_string()))?;
        Ok(Self { stop: Some(stop), status, thread: Some(thread) })
    }

    /// Whether the reader answers, and over Secure Channel.
    pub fn status(&self) -> ReaderStatus {
        *self.status.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for OsdpReader {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A card read as hexadecimal: its valid bits, raw or Wiegand-formatted alike. A read too
/// short to be a badge is passed on as it came, for the core to refuse and the server to audit.
pub fn number_of(read: &OsdpEventCardRead) -> String {
    BadgeNumber::from_bits(read.nr_bits, &read.data).map_or_else(
        |_| {
            use std::fmt::Write as _;
            read.data.iter().fold(String::new(), |mut s, b| {
                let _ = write!(s, "{b:02X}");
                s
            })
        },
        |n| n.to_hex(),
    )
}

/// Reads the reader's key from `path`, which only its owner may read (mode 0600).
pub fn read_key_file(path: &std::path::Path) -> Result<Zeroizing<[u8; 16]>, OsdpError> {
    use std::os::unix::fs::PermissionsExt as _;
    let failed = |message: String| OsdpError::KeyFile { path: path.display().to_string(), message };
    let mode = std::fs::metadata(path).map_err(|e| failed(e.to_string()))?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(failed(format!(
            "others may read it (mode {:o}); run `chmod 600` on it",
            mode & 0o777
        )));
    }
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| failed(e.to_string()))?);
    parse_key(&text)
}

/// Parses a key file: the reader's SCBK as 32 hex digits.
pub fn parse_key(text: &str) -> Result<Zeroizing<[u8; 16]>, OsdpError> {
    let text = Zeroizing::new(text.trim().to_owned());
    if text.len() != 32 {
        return Err(OsdpError::Key);
    }
    let mut key = Zeroizing::new([0u8; 16]);
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = text
            .get(i * 2..i * 2 + 2)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .ok_or(OsdpError::Key)?;
    }
    Ok(key)
}

/// A serial line to a reader (an RS-485 adapter's device node), set to the reader's speed
/// beforehand (`stty -F /dev/ttyUSB0 9600 raw -echo`, as `dist/` does).
#[derive(Debug)]
pub struct SerialChannel {
    file: std::fs::File,
}

impl SerialChannel {
    /// Opens the device node for reading and writing without blocking.
    pub fn open(path: &std::path::Path) -> std::io::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt as _;
        const O_NONBLOCK: i32 = 0o4000;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(O_NONBLOCK)
            .open(path)?;
        Ok(Self { file })
    }
}

impl Channel for SerialChannel {
    fn get_id(&self) -> i32 {
        0
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<usize, ChannelError> {
        Ok(self.file.read(buf)?)
    }

    fn write(&mut self, buf: &[u8]) -> Result<usize, ChannelError> {
        Ok(self.file.write(buf)?)
    }

    fn flush(&mut self) -> Result<(), ChannelError> {
        Ok(self.file.flush()?)
    }

    fn close(&mut self) -> Result<(), ChannelError> {
        Ok(())
    }
}

/// Both ends of an in-memory line between a CP and a PD.
#[derive(Debug, Clone, Default)]
pub struct MemoryBus {
    to_reader: Arc<Mutex<VecDeque<u8>>>,
    to_panel: Arc<Mutex<VecDeque<u8>>>,
}

/// One end of a [`MemoryBus`].
#[derive(Debug)]
pub struct MemoryEnd {
    id: i32,
    inbox: Arc<Mutex<VecDeque<u8>>>,
    outbox: Arc<Mutex<VecDeque<u8>>>,
}

impl MemoryBus {
    /// The panel's end (the agent).
    pub fn panel(&self) -> MemoryEnd {
        MemoryEnd { id: 0, inbox: self.to_panel.clone(), outbox: self.to_reader.clone() }
    }

    /// The reader's end.
    pub fn reader(&self) -> MemoryEnd {
        MemoryEnd { id: 1, inbox: self.to_reader.clone(), outbox: self.to_panel.clone() }
    }
}

impl Channel for MemoryEnd {
    fn get_id(&self) -> i32 {
        self.id
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<usize, ChannelError> {
        let mut inbox = self.inbox.lock().unwrap_or_else(PoisonError::into_inner);
        let n = buf.len().min(inbox.len());
        for (slot, byte) in buf.iter_mut().zip(inbox.drain(..n)) {
            *slot = byte;
        }
        Ok(n)
    }

    fn write(&mut self, buf: &[u8]) -> Result<usize, ChannelError> {
        self.outbox.lock().unwrap_or_else(PoisonError::into_inner).extend(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), ChannelError> {
        Ok(())
    }

    fn close(&mut self) -> Result<(), ChannelError> {
        Ok(())
    }
}

/// A badge reader for tests and the demo: a libosdp PD on its own thread, which presents the
/// cards it is given to the CP over OSDP, as a reader on the wall does.
#[derive(Debug)]
pub struct SimulatedReader {
    cards: std::sync::mpsc::Sender<Vec<u8>>,
    stop: Arc<AtomicBool>,
    secure: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SimulatedReader {
    /// A reader at `address` on `channel`, holding `scbk` (`None`: a factory-fresh reader in
    /// install mode, waiting to be given its key).
    pub fn start(
        channel: Box<dyn Channel>,
        address: i32,
        scbk: Option<[u8; 16]>,
    ) -> Result<Self, OsdpError> {
        let mut info = PdInfoBuilder::new()
            .name("simulated-reader")
            .and_then(|b| b.address(address))
            .and_then(|b| b.baud_rate(9600))
            .map_err(|e| OsdpError::Setup(e.to_string()))?
            .capability(PdCapability::CommunicationSecurity(PdCapEntity::new(1, 1)))
            .capability(PdCapability::CardDataFormat(PdCapEntity::new(1, 0)));
        info = match scbk {
            Some(key) => info.secure_channel_key(key),
            None => info.flag(OsdpFlag::InstallMode),
        };
        let mut pd =
            PeripheralDevice::new(info, channel).map_err(|e| OsdpError::Setup(e.to_string()))?;
        // A reader accepts the key it is given while commissioned (libosdp asks its
        // application), and nothing else: the simulated reader has no LEDs or buzzer.
        pd.set_command_callback(|command| i32::from(!matches!(command, OsdpCommand::KeySet(_))));
        let (cards, queue) = std::sync::mpsc::channel::<Vec<u8>>();
        let stop = Arc::new(AtomicBool::new(false));
        let secure = Arc::new(AtomicBool::new(false));
        let (running, sc) = (stop.clone(), secure.clone());
        let thread = std::thread::Builder::new()
            .name("osdp-simulated-reader".into())
            .spawn(move || {
                while !running.load(Ordering::Relaxed) {
                    pd.refresh();
                    sc.store(pd.is_sc_active(), Ordering::Relaxed);
                    // Paced by the card queue: a card, or a refresh every REFRESH / 2.
                    match queue.recv_timeout(REFRESH / 2) {
                        Ok(card) => {
                            let read = OsdpEventCardRead::new_raw(card);
                            let _ = pd.notify_event(OsdpEvent::CardRead(read));
                        }
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
            })
            .map_err(|e| OsdpError::Setup(e.to_string()))?;
        Ok(Self { cards, stop, secure, thread: Some(thread) })
    }

    /// Holds a card with this number to the reader.
    pub fn present(&self, number: &BadgeNumber) {
        let _ = self.cards.send(number.as_bytes().to_vec());
    }

    /// Whether the reader has a Secure Channel session with the panel.
    pub fn is_secure(&self) -> bool {
        self.secure.load(Ordering::Relaxed)
    }
}

impl Drop for SimulatedReader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_become_hex_numbers() {
        let raw = OsdpEventCardRead::new_raw(vec![0x04, 0xA2, 0xB3, 0xC4, 0xD5, 0xE6, 0xF7]);
        assert_eq!(number_of(&raw), "04A2B3C4D5E6F7");
        let wiegand = OsdpEventCardRead::new_wiegand(26, vec![0xFF, 0xFF, 0xFF, 0xC0]).unwrap();
        assert_eq!(number_of(&wiegand), "FFFFFFC0", "too short: passed on for refusal");
        let wide = OsdpEventCardRead::new_wiegand(50, vec![0xFF; 7]).unwrap();
        assert_eq!(number_of(&wide), "FFFFFFFFFFFFC0", "only the valid bits");
    }

    #[test]
    fn key_files_are_the_owners_alone() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reader.key");
        std::fs::write(&path, "00112233445566778899aabbccddeeff\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let refused = read_key_file(&path).unwrap_err().to_string();
        assert!(refused.contains("chmod 600"), "{refused}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_key_file(&path).unwrap()[0], 0x00);
        assert!(read_key_file(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn key_files_hold_32_hex_digits() {
        let key = parse_key(" 00112233445566778899aabbccddeeff\n").unwrap();
        assert_eq!(key[15], 0xFF);
        assert!(matches!(parse_key("0011"), Err(OsdpError::Key)));
        assert!(matches!(parse_key(&"zz".repeat(16)), Err(OsdpError::Key)));
    }
}
