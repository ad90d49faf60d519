//! `custody agent run` as the process a bank's controller runs: started without a terminal,
//! driving an emulated RS-485 lock board over a `socat` pseudo-terminal pair, and killed
//! (SIGKILL, as a power cut would stop it) in the middle of an unlock.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first unexpected value"
)]

use std::path::Path;
use std::process::Stdio;

use custody_agent::hardware::emulator::{PtyPair, Rs485Emulator};
use custody_agent::hardware::{Layout, SimulatedBank};
use custody_app::AppConfig;
use custody_core::audit::AuditAction;
use custody_core::{DeviceId, ManualClock};
use custody_crypto::SystemClock;
use custody_proto::device::ServerMessage;
use custody_testkit::{Env, TestServer, eventually};
use tokio::process::{Child, Command};

/// The agent of the test server's bank, as its own process on the lock board's line.
fn agent_process(server: &TestServer, dir: &Path, line: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_custody"))
        .args(["agent", "run", "--agent-dir"])
        .arg(dir)
        .args(["--gateway", &format!("localhost:{}", server.gateway().port())])
        .args(["--lock-board", "rs485", "--boards", "1:6", "--board-port"])
        .arg(line)
        .env("CUSTODY_LOG", "warn")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start custody agent run")
}

/// Waits until the agent is connected and welcomed: it reports its health after the welcome,
/// so a command sent from then on comes after the welcome.
async fn welcomed(server: &TestServer, device: &DeviceId) {
    let hub = &server.running.state.hub;
    eventually("the agent connects", || async { hub.health(&server.env.bank, device).is_some() })
        .await;
}

#[tokio::test]
async fn a_command_begun_before_the_process_was_killed_is_never_executed_again() {
    // The agent process reads the system clock, so the server's clock starts at its time.
    let clock = ManualClock::new(custody_core::Clock::now(&SystemClock));
    let store = custody_testkit::sqlite_store().await;
    let server = TestServer::on(Env::with_clock(store, AppConfig::default(), clock).await).await;
    let dir = tempfile::tempdir().unwrap();
    let device = DeviceId::parse(&server.enrol_agent(dir.path()).await.device).unwrap();
    let Ok(pair) = PtyPair::spawn(dir.path()).await else {
        panic!("this test needs socat (apt-get install socat)")
    };
    let (doors, _) = SimulatedBank::new(1..=6);
    let boards = Rs485Emulator::open(&pair.board, doors, Layout::parse("1:6").unwrap()).unwrap();

    let mut agent = agent_process(&server, dir.path(), &pair.agent);
    welcomed(&server, &device).await;
    // The board holds its reply back: the process is in the middle of the unlock when the
    // power goes.
    boards.delay_next();
    let admin = server.env.stepped_up(&server.env.admin);
    let slot = server.env.compartments[2].clone();
    let opening = server
        .env
        .app
        .remote_open(&admin, &slot.id, "check the hinge")
        .await
        .unwrap()
        .opened()
        .unwrap();
    let hub = &server.running.state.hub;
    assert!(hub.send(&server.env.bank, ServerMessage::Open(opening.command.clone())));
    eventually("the unlock frame reaches the board", || async { boards.unlock_frames() == 1 })
        .await;
    agent.kill().await.unwrap();
    eventually("the server sees the link go", || async { !hub.is_online(&server.env.bank) }).await;

    // Power back: the same process starts again on its directory, and the same command
    // arrives again (resent by someone on the network, say).
    let mut agent = agent_process(&server, dir.path(), &pair.agent);
    welcomed(&server, &device).await;
    assert!(hub.send(&server.env.bank, ServerMessage::Open(opening.command.clone())));
    eventually("the agent's refusal reaches the audit log", || async {
        server.env.site_log(50).await.iter().any(|r| {
            r.event.action == AuditAction::OpenCommand
                && r.event.reason.as_deref().is_some_and(|r| r.starts_with("agent_refused:replay"))
        })
    })
    .await;
    assert_eq!(boards.unlock_frames(), 1, "the unlock was not sent again");
    agent.kill().await.unwrap();
}
