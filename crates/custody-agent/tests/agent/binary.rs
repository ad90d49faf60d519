//! The lean `custody-agent` binary a bank's controller runs: its commands, the systemd unit
//! that starts it, and what it does not link.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly at the first unexpected value"
)]

use std::process::Command;

fn agent(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_custody-agent")).args(args).output().unwrap();
    assert!(out.status.success(), "custody-agent {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// It has the agent's two commands.
#[test]
fn the_agent_binary_enrols_and_runs() {
    let help = agent(&["--help"]);
    assert!(help.contains("enrol") && help.contains("run"), "{help}");
    // A log format it does not know is refused with the ones it does, not taken for text.
    let out = Command::new(env!("CARGO_BIN_EXE_custody-agent"))
        .args(["--log-format", "xml", "run"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && said.contains("json"), "{said}");
}

/// The systemd unit in `dist/` runs the lean binary, with flags it has.
#[test]
fn the_systemd_unit_runs_the_lean_binary_with_flags_it_has() {
    let unit = include_str!("../../../../dist/custody-agent.service");
    let exec = unit.lines().find_map(|l| l.strip_prefix("ExecStart=")).expect("ExecStart");
    let words: Vec<&str> = exec.split_whitespace().collect();
    assert_eq!(words.first(), Some(&"/usr/local/bin/custody-agent"), "{exec}");
    assert_eq!(words.get(1), Some(&"run"), "{exec}");
    let help = agent(&["run", "--help"]);
    for flag in words.iter().filter(|w| w.starts_with("--")) {
        assert!(help.contains(flag), "custody-agent run has no {flag}:\n{help}");
    }
    assert!(unit.contains("StandardInput=null"), "no terminal under systemd");
}

/// What a bank's controller runs carries none of the server: no database driver, no use cases,
/// no portal, no mailer.
#[test]
fn the_agent_links_nothing_of_the_server() {
    let out = Command::new(env!("CARGO"))
        .args(["tree", "-p", "custody-agent", "-e", "normal,build", "--locked", "--offline"])
        .args(["--prefix", "none", "--format", "{p}"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let tree = String::from_utf8(out.stdout).unwrap();
    let names: Vec<&str> = tree.lines().filter_map(|l| l.split_whitespace().next()).collect();
    assert!(names.contains(&"custody-agent"), "{tree}");
    for server in [
        "custody-server",
        "custody-app",
        "custody-store",
        "custody-audit",
        "sqlx",
        "sqlx-core",
        "askama",
        "lettre",
        "utoipa",
        "webauthn-rs",
    ] {
        assert!(!names.contains(&server), "the agent links {server}");
    }
}
