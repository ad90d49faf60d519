//! The agent's command line: `enrol` and `run`, as the lean `custody-agent` binary a bank's
//! controller runs, and as `custody agent` beside the server's commands. The kiosk runs on the
//! terminal when no touch screen is configured.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line tool talks on stdout and stderr"
)]
#![allow(
    clippy::doc_markdown,
    reason = "doc comments here are the --help text people read, not rustdoc"
)]

use std::io::BufRead as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use crate::core::Screen;
use crate::daemon::AgentHandle;
use crate::enrol::{EnrolTarget, enrol, load};
use crate::hardware::{LockBoard, SensorEvent, SimulatedBank, modbus, rs485};
use anyhow::Context as _;

use crate::osdp::{OsdpConfig, OsdpReader, SerialChannel, read_key_file};
use custody_core::badge::ReaderKind;
use custody_core::token::QR_TOKEN_PREFIX;
use custody_crypto::SystemClock;
use custody_proto::device::CourierAction;

mod config;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Enrol this device with a single-use token from `custody admin enrolment-token`.
    Enrol(EnrolArgs),
    /// Run the agent: drive the bank's lock boards (or simulated doors), keep the device link
    /// to the server, and use the terminal as the kiosk.
    Run(RunArgs),
}

#[derive(Debug, clap::Args)]
pub struct EnrolArgs {
    /// Where the agent keeps its key, certificate and pins.
    #[arg(long, env = "CUSTODY_AGENT_DIR", default_value = "custody-agent")]
    agent_dir: PathBuf,
    /// The server's public URL, such as <https://lockers.example.org:8443>.
    #[arg(long)]
    server: String,
    /// The CA that issued the server's certificate (`tls/server-ca.pem` of the server).
    #[arg(long)]
    server_ca: PathBuf,
    /// SHA-256 of the server's public key, hex, as printed by `custody init`.
    #[arg(long)]
    pin: String,
    /// The enrolment token; read from standard input when not set (never pass it as an argument).
    #[arg(long = "token-env", env = "CUSTODY_ENROLMENT_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// A TOML file with the settings below (keys in the README's "Run a site"); a flag given
    /// here wins over the file.
    #[arg(long, env = "CUSTODY_AGENT_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// The enrolled agent's directory [default: custody-agent].
    #[arg(long, env = "CUSTODY_AGENT_DIR")]
    pub(crate) agent_dir: Option<PathBuf>,
    /// Connect here instead of the gateway address received at enrolment (`host:port`).
    #[arg(long)]
    pub(crate) gateway: Option<String>,
    /// What drives the latches: simulated doors (moved with `open N` / `close N` on the
    /// terminal), RS-485 lock-control boards, or Modbus RTU relay boards [default: simulated].
    #[arg(long, value_enum)]
    pub(crate) lock_board: Option<BoardKind>,
    /// The lock boards' serial line (RS-485 adapter), such as `/dev/ttyUSB0`.
    #[arg(long)]
    pub(crate) board_port: Option<PathBuf>,
    /// The boards on that line in order, as ADDRESS:CHANNELS, such as `1:24,2:24`: compartment 1
    /// is the first board's channel 1, and the numbers count on through each board
    /// [default: 1:12].
    #[arg(long)]
    pub(crate) boards: Option<String>,
    /// The line speed of Modbus relay boards (RS-485 lock boards always use 9600)
    /// [default: 9600].
    #[arg(long)]
    pub(crate) baud: Option<u32>,
    /// Compartment numbers of simulated doors, such as `1-12` [default: 1-12].
    #[arg(long)]
    pub(crate) compartments: Option<String>,
    /// The serial line (RS-485 adapter) of the kiosk's OSDP badge reader, such as
    /// `/dev/ttyUSB0`, set to the reader's speed beforehand (`stty -F PORT 9600 raw -echo`).
    #[arg(long)]
    pub(crate) osdp_port: Option<PathBuf>,
    /// The reader's OSDP address [default: 0].
    #[arg(long, value_parser = clap::value_parser!(i32).range(0..=126))]
    pub(crate) osdp_address: Option<i32>,
    /// A file (mode 0600) holding the reader's Secure Channel key as 32 hex digits.
    #[arg(long)]
    pub(crate) osdp_key_file: Option<PathBuf>,
    /// Until when (RFC 3339) the reader may be talked to without Secure Channel while it is
    /// installed, and given its key if it is factory-fresh. Never, unless set.
    #[arg(long)]
    pub(crate) commissioning_until: Option<String>,
    /// Serve the touch screen's kiosk page here, a loopback address such as `127.0.0.1:8080`
    /// (the screen's browser runs on the controller). Not served unless set.
    #[arg(long)]
    pub(crate) kiosk_listen: Option<std::net::SocketAddr>,
}

/// What drives the latches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum BoardKind {
    /// Simulated doors.
    Simulated,
    /// RS-485 lock-control boards (`8A board channel 11 xor`).
    Rs485,
    /// Modbus RTU relay boards.
    Modbus,
}

/// Parses `1-12` or `1,2,5-8`.
pub fn parse_numbers(s: &str) -> anyhow::Result<Vec<u16>> {
    let mut out = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        if let Some((a, b)) = part.split_once('-') {
            let (a, b): (u16, u16) = (a.trim().parse()?, b.trim().parse()?);
            anyhow::ensure!(a <= b && a >= 1 && b <= 999, "range {part} must lie within 1-999");
            out.extend(a..=b);
        } else {
            out.push(
                part.parse().with_context(|| format!("{part:?} is not a compartment number"))?,
            );
        }
    }
    Ok(out)
}

pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Enrol(args) => {
            let token = if let Some(t) = args.token {
                t
            } else {
                eprintln!("Enrolment token:");
                let mut line = String::new();
                std::io::stdin().lock().read_line(&mut line)?;
                line
            };
            let target = EnrolTarget {
                server_url: args.server,
                server_ca_pem: std::fs::read_to_string(&args.server_ca)
                    .with_context(|| format!("reading {}", args.server_ca.display()))?,
                server_pin: args.pin,
            };
            let file = enrol(&args.agent_dir, &target, token.trim(), Arc::new(SystemClock)).await?;
            println!(
                "Enrolled device {} for bank {} in {}",
                file.device,
                file.bank,
                args.agent_dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(args) => run_agent(args).await,
    }
}

type Doors =
    (Option<SimulatedBank>, Arc<dyn LockBoard>, tokio::sync::mpsc::UnboundedReceiver<SensorEvent>);

/// Starts what drives the latches.
fn lock_boards(doors: &config::Doors) -> anyhow::Result<Doors> {
    let (driver, sensors) = match doors {
        config::Doors::Simulated(numbers) => {
            let (bank, sensors) = SimulatedBank::new(numbers.iter().copied());
            return Ok((Some(bank.clone()), Arc::new(bank), sensors));
        }
        config::Doors::Boards { kind: BoardKind::Rs485, port, layout, timing, .. } => {
            rs485::open(port, layout.clone(), *timing)?
        }
        config::Doors::Boards { port, baud, layout, timing, .. } => {
            modbus::open(port, *baud, layout.clone(), *timing)?
        }
    };
    Ok((None, Arc::new(driver), sensors))
}

/// `custody agent run`: the terminal is the kiosk.
async fn run_agent(args: RunArgs) -> anyhow::Result<ExitCode> {
    let file = match &args.config {
        Some(path) => config::read(path)?,
        None => config::File::default(),
    };
    let settings = config::settings(&args, file)?;
    let mut setup = load(&settings.agent_dir, settings.gateway.as_deref(), Arc::new(SystemClock))?;
    setup.commissioning_until = settings.commissioning_until;
    let (simulated, board, sensors) = lock_boards(&settings.doors)?;
    tracing::info!(doors = ?settings.doors, "lock boards opened");
    let handle =
        Arc::new(crate::daemon::spawn(setup, board, sensors, Arc::new(SystemClock)).await?);
    let _kiosk = match settings.kiosk {
        Some(address) => {
            let page = crate::kiosk::serve(handle.clone(), address).await?;
            println!("Kiosk page: http://{}/", page.address);
            Some(page)
        }
        None => None,
    };
    let _reader = match &settings.reader {
        Some(reader) => {
            Some(osdp_reader(reader, settings.commissioning_until, handle.badge_reader())?)
        }
        None => None,
    };
    println!(
        "Agent running. Type a pickup code, or paste a QR token (`CQ1:…`, as a \
         scanner types it); `badge HEX` is a badge from a keyboard-wedge reader; \
         `presence` shows the code a resident types into the app to open from the \
         phone; a courier types `courier CODE` and then `courier CODE deposit PARCEL \
         [SIZE]`, `courier CODE confirm|return PARCEL`; `open N` / `close N` move a \
         simulated door."
    );
    let (lines_tx, mut lines) = tokio::sync::mpsc::channel::<String>(8);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if lines_tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    // Under systemd there is no terminal: once standard input closes, the agent runs on until
    // it is stopped.
    let mut terminal = true;
    let stop = stopped();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            line = lines.recv(), if terminal => {
                if let Some(line) = line {
                    kiosk_line(line.trim(), &handle, simulated.as_ref()).await;
                } else {
                    terminal = false;
                    tracing::info!("no terminal: the agent runs until it is stopped");
                }
            }
            () = &mut stop => break,
        }
    }
    tracing::info!("agent stopped");
    Ok(ExitCode::SUCCESS)
}

/// Waits for Ctrl-C or SIGTERM.
async fn stopped() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// One line typed (or scanned) at the terminal that stands in for the kiosk.
async fn kiosk_line(line: &str, handle: &AgentHandle, simulated: Option<&SimulatedBank>) {
    let door = |verb: &str| line.strip_prefix(verb).and_then(|n| n.trim().parse::<u16>().ok());
    if let Some(n) = door("open ") {
        println!(
            "{}",
            match simulated {
                Some(bank) => bank
                    .open_door(n)
                    .map_or_else(|e| format!("door {n}: {e}"), |()| format!("door {n} open")),
                None => "The doors are real: open them by hand.".into(),
            }
        );
    } else if let Some(n) = door("close ") {
        println!(
            "{}",
            match simulated {
                Some(bank) => bank
                    .close_door(n)
                    .map_or_else(|e| format!("door {n}: {e}"), |()| format!("door {n} closed")),
                None => "The doors are real: close them by hand.".into(),
            }
        );
    } else if let Some(rest) = line.strip_prefix("courier ") {
        match courier_command(rest) {
            Some((code, action)) => {
                let shown = handle.courier(&code, action).await;
                println!("{}", describe(shown.as_ref()));
            }
            None => println!(
                "Usage: courier CODE [deposit PARCEL [SIZE] | confirm PARCEL | return PARCEL]"
            ),
        }
    } else if let Some(number) = line.strip_prefix("badge ") {
        // A keyboard-wedge reader types the number after a prefix it is set up
        // with; anything that types can pose as one, so it is the lowest trust.
        let shown = handle.badge(number.trim(), ReaderKind::Keyboard).await;
        println!("{}", describe(shown.as_ref()));
    } else if line == "presence" {
        match handle.presence_code() {
            Some(code) => println!("On the screen: {}", code.as_str()),
            None => println!("No presence code: the agent is not connected"),
        }
    } else if line.starts_with(QR_TOKEN_PREFIX) {
        // A QR scanner on the kiosk types what it reads, like a keyboard.
        let shown = handle.scan(line).await;
        println!("{}", describe(shown.as_ref()));
    } else if !line.is_empty() {
        let shown = handle.try_code(line).await;
        println!("{}", describe(shown.as_ref()));
    }
}

/// Starts the OSDP reader driver on `port` with the key from `--osdp-key-file`.
fn osdp_reader(
    reader: &config::Reader,
    commissioning_until: Option<custody_core::Timestamp>,
    sink: crate::daemon::BadgeReader,
) -> anyhow::Result<OsdpReader> {
    let config = OsdpConfig {
        address: reader.address,
        baud_rate: 9600,
        scbk: read_key_file(&reader.key_file)?,
        commissioning_until,
    };
    let port = &reader.port;
    let channel = SerialChannel::open(port)
        .with_context(|| format!("opening the OSDP reader's serial line {}", port.display()))?;
    Ok(OsdpReader::start(Box::new(channel), &config, Arc::new(SystemClock), sink)?)
}

/// `CODE [deposit PARCEL [SIZE]|confirm PARCEL|return PARCEL]`: the code may be typed in
/// groups; a size after a deposit asks for a larger compartment.
fn courier_command(text: &str) -> Option<(String, CourierAction)> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let split = words.iter().position(|w| !w.bytes().all(|b| b.is_ascii_digit()));
    let (code, rest) = words.split_at(split.unwrap_or(words.len()));
    let action = match rest {
        [] => CourierAction::Visit,
        ["deposit", parcel] => CourierAction::Deposit { parcel: (*parcel).to_owned(), size: None },
        ["deposit", parcel, size] => {
            CourierAction::Deposit { parcel: (*parcel).to_owned(), size: Some((*size).to_owned()) }
        }
        ["confirm", parcel] => CourierAction::Confirm { parcel: (*parcel).to_owned() },
        ["return", parcel] => CourierAction::Return { parcel: (*parcel).to_owned() },
        _ => return None,
    };
    (!code.is_empty()).then(|| (code.join(" "), action))
}

/// What the kiosk screen says.
pub(crate) fn describe(screen: Option<&Screen>) -> String {
    match screen {
        Some(Screen::CourierWork { deposits, returns, free }) => {
            let list = |title: &str, parcels: &[custody_proto::device::KioskParcel]| {
                let lines =
                    parcels.iter().map(|p| format!("\n  {} {} ({})", p.id, p.tracking_ref, p.size));
                format!("{title}: {}{}", parcels.len(), lines.collect::<String>())
            };
            let sizes: Vec<String> =
                free.iter().map(|f| format!("{} {}", f.count, f.size)).collect();
            let free = if sizes.is_empty() { "none".to_owned() } else { sizes.join(", ") };
            format!(
                "{}\n{}\nFree compartments: {free}",
                list("To deposit", deposits),
                list("To take back", returns)
            )
        }
        Some(screen) => screen.message(),
        None => "…".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn courier_lines_name_the_code_and_what_to_do() {
        assert_eq!(
            courier_command("1234 5678 9012"),
            Some(("1234 5678 9012".into(), CourierAction::Visit))
        );
        assert_eq!(
            courier_command("123456789012 deposit prc_a"),
            Some((
                "123456789012".into(),
                CourierAction::Deposit { parcel: "prc_a".into(), size: None }
            ))
        );
        assert_eq!(
            courier_command("1234 deposit prc_a large"),
            Some((
                "1234".into(),
                CourierAction::Deposit { parcel: "prc_a".into(), size: Some("large".into()) }
            ))
        );
        assert_eq!(courier_command("1234 open prc_a"), None);
        assert_eq!(courier_command("deposit prc_a"), None);
        assert_eq!(courier_command("1234 return"), None);
    }
}
