//! `custody agent run --config FILE`: the agent's settings in a TOML file, the same settings the
//! flags give (a flag on the command line wins over the file). Every key is optional. A key the
//! agent does not know is refused, since a misspelt one would otherwise be ignored in silence,
//! and so is every value that cannot work, with the key named and what to do.
//!
//! ```toml
//! agent_dir = "/var/lib/custody-agent"
//! gateway = "lockers.example.org:8444"     # instead of the address received at enrolment
//!
//! [lock_board]
//! kind = "rs485"                           # rs485, modbus or simulated
//! port = "/dev/serial/by-id/usb-FTDI_…"
//! boards = "1:24,2:24"                     # ADDRESS:CHANNELS, in order
//! baud = 9600                              # Modbus only
//! reply_timeout_ms = 500
//! poll_interval_ms = 250
//!
//! [kiosk]
//! listen = "127.0.0.1:8080"                # the touch screen's page
//!
//! [osdp]
//! port = "/dev/serial/by-id/usb-…"
//! address = 0
//! key_file = "/etc/custody/reader.key"
//! commissioning_until = "2026-12-01T18:00:00Z"
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::hardware::{Layout, Timing, modbus};
use anyhow::{Context as _, bail};
use custody_core::Timestamp;
use serde::Deserialize;

use super::{BoardKind, RunArgs, parse_numbers};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct File {
    agent_dir: Option<PathBuf>,
    gateway: Option<String>,
    #[serde(default)]
    lock_board: BoardSection,
    #[serde(default)]
    osdp: OsdpSection,
    #[serde(default)]
    kiosk: KioskSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct KioskSection {
    listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BoardSection {
    kind: Option<String>,
    port: Option<PathBuf>,
    boards: Option<String>,
    baud: Option<u32>,
    compartments: Option<String>,
    reply_timeout_ms: Option<u64>,
    poll_interval_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct OsdpSection {
    port: Option<PathBuf>,
    address: Option<i32>,
    key_file: Option<PathBuf>,
    commissioning_until: Option<String>,
}

/// Reads the configuration file at `path`.
pub(crate) fn read(path: &Path) -> anyhow::Result<File> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the agent's configuration {}", path.display()))?;
    toml::from_str(&text).map_err(|e| {
        anyhow::anyhow!("the agent's configuration {} is not valid: {e}", path.display())
    })
}

/// What drives the latches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Doors {
    /// Simulated doors with these numbers.
    Simulated(Vec<u16>),
    /// Lock boards of this protocol on a serial line.
    Boards {
        /// The protocol.
        kind: BoardKind,
        /// The line.
        port: PathBuf,
        /// Its speed.
        baud: u32,
        /// The boards on it.
        layout: Layout,
        /// Its waits.
        timing: Timing,
    },
}

/// The kiosk's OSDP badge reader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reader {
    pub(crate) port: PathBuf,
    pub(crate) address: i32,
    pub(crate) key_file: PathBuf,
}

/// The agent's settings: flags over the file over the defaults, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Settings {
    pub(crate) agent_dir: PathBuf,
    pub(crate) gateway: Option<String>,
    pub(crate) doors: Doors,
    pub(crate) reader: Option<Reader>,
    pub(crate) commissioning_until: Option<Timestamp>,
    /// Where the kiosk page is served, if it is.
    pub(crate) kiosk: Option<std::net::SocketAddr>,
}

/// The speeds serial adapters and boards agree on.
const BAUDS: [u32; 8] = [1200, 2400, 4800, 9600, 19_200, 38_400, 57_600, 115_200];

fn millis(
    value: Option<u64>,
    key: &str,
    range: std::ops::RangeInclusive<u64>,
) -> anyhow::Result<Option<Duration>> {
    match value {
        None => Ok(None),
        Some(ms) if range.contains(&ms) => Ok(Some(Duration::from_millis(ms))),
        Some(ms) => bail!(
            "lock_board.{key} = {ms} is out of range: use {} to {} milliseconds",
            range.start(),
            range.end()
        ),
    }
}

/// Resolves the settings from the flags in `args` and the configuration `file`.
pub(crate) fn settings(args: &RunArgs, file: File) -> anyhow::Result<Settings> {
    let board = file.lock_board;
    let kind = match (args.lock_board, board.kind.as_deref()) {
        (Some(kind), _) => kind,
        (None, Some(text)) => {
            <BoardKind as clap::ValueEnum>::from_str(text, true).map_err(|_| {
                anyhow::anyhow!(
                    "lock_board.kind = {text:?}: use \"rs485\", \"modbus\" or \"simulated\""
                )
            })?
        }
        (None, None) => BoardKind::Simulated,
    };
    let doors = if kind == BoardKind::Simulated {
        let numbers =
            args.compartments.clone().or(board.compartments).unwrap_or_else(|| "1-12".into());
        Doors::Simulated(
            parse_numbers(&numbers).context("--compartments (lock_board.compartments)")?,
        )
    } else {
        let port = args.board_port.clone().or(board.port).context(
            "real lock boards need their serial line: --board-port (lock_board.port), such as \
             /dev/ttyUSB0 or a name under /dev/serial/by-id/",
        )?;
        let boards = args.boards.clone().or(board.boards).unwrap_or_else(|| "1:12".into());
        let layout = Layout::parse(&boards).context("--boards (lock_board.boards)")?;
        let baud = args.baud.or(board.baud);
        let baud = match (kind, baud) {
            (BoardKind::Rs485, Some(b)) if b != 9600 => {
                bail!("RS-485 lock boards speak 9600 baud only; remove --baud (lock_board.baud)")
            }
            (_, Some(b)) if !BAUDS.contains(&b) => {
                bail!("--baud (lock_board.baud) {b} is not a serial speed: use one of {BAUDS:?}")
            }
            (_, b) => b.unwrap_or(modbus::BAUD),
        };
        let defaults = Timing::default();
        let timing = Timing {
            reply: millis(board.reply_timeout_ms, "reply_timeout_ms", 50..=5_000)?
                .unwrap_or(defaults.reply),
            poll: millis(board.poll_interval_ms, "poll_interval_ms", 50..=60_000)?
                .unwrap_or(defaults.poll),
            ..defaults
        };
        Doors::Boards { kind, port, baud, layout, timing }
    };
    let osdp = file.osdp;
    let reader = match args.osdp_port.clone().or(osdp.port) {
        None => None,
        Some(port) => {
            let key_file = args.osdp_key_file.clone().or(osdp.key_file).context(
                "an OSDP reader needs its Secure Channel key: --osdp-key-file (osdp.key_file), \
                 a 0600 file with 32 hex digits",
            )?;
            let address = args.osdp_address.or(osdp.address).unwrap_or(0);
            if !(0..=126).contains(&address) {
                bail!("osdp.address = {address}: an OSDP address is 0 to 126");
            }
            Some(Reader { port, address, key_file })
        }
    };
    let commissioning_until = args
        .commissioning_until
        .clone()
        .or(osdp.commissioning_until)
        .map(|t| rfc3339(&t, "commissioning-until (osdp.commissioning_until)"))
        .transpose()?;
    let kiosk = match (args.kiosk_listen, file.kiosk.listen) {
        (Some(address), _) => Some(address),
        (None, Some(text)) => Some(text.parse().map_err(|_| {
            anyhow::anyhow!(
                "kiosk.listen = {text:?} is not an address: use one such as 127.0.0.1:8080"
            )
        })?),
        (None, None) => None,
    };
    if let Some(address) = kiosk.filter(|a| !a.ip().is_loopback()) {
        bail!(
            "--kiosk-listen (kiosk.listen) {address}: the kiosk page is served on loopback only, \
             such as 127.0.0.1:8080"
        );
    }
    Ok(Settings {
        kiosk,
        agent_dir: args
            .agent_dir
            .clone()
            .or(file.agent_dir)
            .unwrap_or_else(|| PathBuf::from("custody-agent")),
        gateway: args.gateway.clone().or(file.gateway),
        doors,
        reader,
        commissioning_until,
    })
}

/// A time given as RFC 3339, such as `2026-11-21T08:00:00Z`, for the setting `what`.
fn rfc3339(s: &str, what: &str) -> anyhow::Result<Timestamp> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|_| {
            anyhow::anyhow!("--{what}: expected RFC 3339, such as 2026-11-21T08:00:00Z")
        })?;
    Ok(Timestamp::from_millis(i64::try_from(t.unix_timestamp_nanos() / 1_000_000)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    fn resolve(flags: &[&str], toml: &str) -> anyhow::Result<Settings> {
        let mut command_line = vec!["custody-agent-run"];
        command_line.extend(flags);
        let args = Cli::try_parse_from(command_line)?.run;
        settings(&args, toml::from_str(toml)?)
    }

    fn error(flags: &[&str], toml: &str) -> String {
        format!("{:#}", resolve(flags, toml).unwrap_err())
    }

    #[test]
    fn the_file_gives_what_the_flags_do_not() {
        let file = r#"
            agent_dir = "/var/lib/custody-agent"
            [lock_board]
            kind = "modbus"
            port = "/dev/ttyUSB0"
            boards = "2:8"
            baud = 19200
            poll_interval_ms = 1000
            [osdp]
            port = "/dev/ttyUSB1"
            key_file = "/etc/custody/reader.key"
        "#;
        let s = resolve(&[], file).unwrap();
        assert_eq!(s.agent_dir, PathBuf::from("/var/lib/custody-agent"));
        let Doors::Boards { kind, port, baud, layout, timing } = s.doors else { panic!() };
        assert_eq!((kind, port, baud), (BoardKind::Modbus, PathBuf::from("/dev/ttyUSB0"), 19_200));
        assert_eq!(layout.to_string(), "2:8");
        assert_eq!(timing.poll, Duration::from_secs(1));
        assert_eq!(s.reader.map(|r| r.address), Some(0));

        // A flag wins over the file.
        let s = resolve(&["--boards", "1:16", "--agent-dir", "here"], file).unwrap();
        assert_eq!(s.agent_dir, PathBuf::from("here"));
        let Doors::Boards { layout, .. } = s.doors else { panic!() };
        assert_eq!(layout.to_string(), "1:16");
        assert_eq!(resolve(&[], "").unwrap().doors, Doors::Simulated((1..=12).collect()));
    }

    /// The example shipped in `dist/` is a configuration the agent takes.
    #[test]
    fn the_shipped_example_is_valid() {
        let s = resolve(&[], include_str!("../../../../dist/agent.toml")).unwrap();
        let Doors::Boards { kind, layout, .. } = s.doors else { panic!("{:?}", s.doors) };
        assert_eq!((kind, layout.to_string()), (BoardKind::Rs485, "1:24,2:24".to_owned()));
    }

    /// Every way the settings can be wrong, and what the agent says.
    #[test]
    fn every_misconfiguration_is_refused_with_what_to_do() {
        for (toml, says) in [
            ("[lock_board]\nkind = \"rs484\"", "use \"rs485\", \"modbus\" or \"simulated\""),
            ("[lock_board]\nkind = \"rs485\"", "--board-port (lock_board.port)"),
            (
                "[lock_board]\nkind = \"rs485\"\nport = \"/dev/x\"\nboards = \"0:8\"",
                "0 reaches every board",
            ),
            ("[lock_board]\nkind = \"rs485\"\nport = \"/dev/x\"\nbaud = 19200", "9600 baud only"),
            (
                "[lock_board]\nkind = \"modbus\"\nport = \"/dev/x\"\nbaud = 9601",
                "not a serial speed",
            ),
            (
                "[lock_board]\nkind = \"modbus\"\nport = \"/dev/x\"\nreply_timeout_ms = 0",
                "out of range",
            ),
            ("[lock_board]\ncompartments = \"0-3\"", "within 1-999"),
            ("[osdp]\nport = \"/dev/x\"", "--osdp-key-file (osdp.key_file)"),
            ("[osdp]\nport = \"/dev/x\"\nkey_file = \"k\"\naddress = 127", "0 to 126"),
            ("[osdp]\ncommissioning_until = \"soon\"", "commissioning-until"),
            ("[kiosk]\nlisten = \"0.0.0.0:8080\"", "loopback only"),
            ("[kiosk]\nlisten = \"the screen\"", "not an address"),
        ] {
            let got = error(&[], toml);
            assert!(got.contains(says), "{toml:?}: {got}");
        }
        let typo = toml::from_str::<File>("[lock_board]\nbaords = \"1:8\"").unwrap_err();
        assert!(typo.to_string().contains("unknown field `baords`"), "{typo}");
    }
}
