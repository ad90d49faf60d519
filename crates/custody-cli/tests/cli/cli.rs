//! The `custody` binary as an operator uses it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first unexpected value"
)]

use std::path::Path;
use std::process::Output;

use tokio::process::Command;

async fn custody(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_custody"))
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env("CUSTODY_LOG", "warn")
        .env_remove("CUSTODY_DATABASE_URL")
        .output()
        .await
        .expect("run custody")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[tokio::test]
async fn help_reads_well() {
    let dir = tempfile::tempdir().unwrap();
    let out = custody(dir.path(), &["--help"]).await;
    assert!(out.status.success());
    let help = text(&out);
    for word in [
        "init",
        "serve",
        "agent",
        "admin",
        "demo",
        "audit",
        "bench",
        "--data-dir",
        "--database-url",
    ] {
        assert!(help.contains(word), "--help lacks {word}:\n{help}");
    }
}

/// `--version` names the cryptographic module: whether this is a FIPS build, and which.
#[tokio::test]
async fn the_version_says_whether_it_is_a_fips_build() {
    let dir = tempfile::tempdir().unwrap();
    let out = custody(dir.path(), &["--version"]).await;
    assert!(out.status.success());
    let said = text(&out);
    assert!(said.starts_with(&format!("custody {}", env!("CARGO_PKG_VERSION"))), "{said}");
    // This binary is built without the `fips` feature unless the test run asks for it.
    assert!(
        said.contains("(AWS-LC; not a FIPS build)")
            || said.contains("(FIPS build: AWS-LC FIPS module 4.x"),
        "{said}"
    );
}

#[tokio::test]
async fn an_osdp_reader_needs_its_key_file_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let out = custody(dir.path(), &["agent", "run", "--osdp-port", "/dev/null"]).await;
    assert!(!out.status.success());
    assert!(text(&out).contains("--osdp-key-file"), "{}", text(&out));
    let help = text(&custody(dir.path(), &["agent", "run", "--help"]).await);
    for flag in ["--osdp-port", "--osdp-key-file", "--osdp-address", "--commissioning-until"] {
        assert!(help.contains(flag), "agent run --help lacks {flag}:\n{help}");
    }
}

#[tokio::test]
async fn the_agent_refuses_a_configuration_it_cannot_use() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.toml");
    for (toml, says) in [
        ("[lock_board]\nbaords = \"1:8\"\n", "unknown field `baords`"),
        ("[lock_board]\nkind = \"rs485\"\n", "--board-port (lock_board.port)"),
        ("[osdp]\nport = \"/dev/ttyUSB1\"\n", "--osdp-key-file (osdp.key_file)"),
    ] {
        std::fs::write(&config, toml).unwrap();
        let args = ["agent", "run", "--agent-dir", ".", "--config", config.to_str().unwrap()];
        let out = custody(dir.path(), &args).await;
        assert!(!out.status.success(), "{toml}");
        assert!(text(&out).contains(says), "{toml}: {}", text(&out));
    }
}

#[tokio::test]
async fn init_then_administer_a_site() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = custody(&data, &["init"]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("server key pin"));
    // The next step it names is a command that exists (run below).
    assert!(text(&out).contains("admin create-org \"Your organisation\""), "{}", text(&out));
    #[cfg(unix)]
    for secret in [
        "keys/master.key",
        "keys/command.pk8",
        "keys/ca.key",
        "tls/server.key",
        "keys/metrics.token",
    ] {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(data.join(secret)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{secret}");
    }
    assert!(custody_crypto::private_files::check_tree(&data).unwrap() > 10, "all 0600/0700");
    let again = custody(&data, &["init"]).await;
    assert!(!again.status.success());
    assert!(text(&again).contains("refusing to overwrite"), "{}", text(&again));

    let org = custody(&data, &["admin", "create-org", "Acme Living"]).await;
    assert!(org.status.success(), "{}", text(&org));
    let org = String::from_utf8(org.stdout).unwrap().trim().to_owned();
    let site = custody(
        &data,
        &["admin", "create-site", "--org", &org, "--time-zone", "Europe/Berlin", "Harbour House"],
    )
    .await;
    let site = String::from_utf8(site.stdout).unwrap().trim().to_owned();
    assert!(site.starts_with("sit_"), "{site}");
    let bank = custody(&data, &["admin", "create-bank", "--site", &site, "Lobby"]).await;
    let bank = String::from_utf8(bank.stdout).unwrap().trim().to_owned();
    let added = custody(
        &data,
        &["admin", "add-compartments", "--bank", &bank, "--numbers", "1-6", "--size", "small"],
    )
    .await;
    assert!(text(&added).contains("added 6 compartments"), "{}", text(&added));
    let list = custody(&data, &["admin", "list"]).await;
    assert!(text(&list).contains("Lobby (6 compartments)"), "{}", text(&list));

    let ann = custody(
        &data,
        &[
            "admin",
            "add-person",
            "--org",
            &org,
            "--email",
            "ann@harbour.example",
            "--name",
            "Ann",
            "--role",
            "resident",
            "--site",
            &site,
        ],
    )
    .await;
    assert!(ann.status.success(), "{}", text(&ann));
    let ann = String::from_utf8(ann.stdout).unwrap().trim().to_owned();
    let erase = custody(&data, &["admin", "erase-personal-data", &ann]).await;
    assert!(text(&erase).contains("can be read any more"), "{}", text(&erase));
    let again = custody(&data, &["admin", "erase-personal-data", &ann]).await;
    assert!(text(&again).contains("erased already"), "{}", text(&again));

    let bad = custody(&data, &["admin", "create-bank", "--site", "sit_nope", "Garage"]).await;
    assert!(!bad.status.success());
    assert!(text(&bad).contains("--site"), "{}", text(&bad));
    let zero =
        custody(&data, &["admin", "add-compartments", "--bank", &bank, "--numbers", "0"]).await;
    assert!(!zero.status.success(), "compartment 0 is refused");

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
        let open = custody(&data, &["admin", "list"]).await;
        assert!(!open.status.success(), "a data directory others can read is refused");
        assert!(text(&open).contains("chmod -R go-rwx"), "{}", text(&open));
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    std::fs::write(data.join("custody.toml"), "[server]\ntls = false\n").unwrap();
    let serve = custody(&data, &["serve"]).await;
    assert!(!serve.status.success());
    assert!(text(&serve).contains("unknown field"), "{}", text(&serve));
}

/// Rotating the key-encryption key makes a new one, names it current, and re-wraps every key
/// under it; a resumed run makes none.
#[tokio::test]
async fn rotate_keys_makes_and_names_a_new_kek() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    assert!(custody(&data, &["init"]).await.status.success());
    let current = || std::fs::read_to_string(data.join("keys/kek.current")).unwrap();
    let keks = || {
        std::fs::read_dir(data.join("keys"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("kek-"))
            .count()
    };
    let (first, files) = (current(), keks());
    let rotated = custody(&data, &["admin", "rotate-keys"]).await;
    assert!(rotated.status.success(), "{}", text(&rotated));
    let second = current();
    assert_ne!(second, first);
    assert!(text(&rotated).contains(&format!("under {}", second.trim())), "{}", text(&rotated));
    assert_eq!(keks(), files + 1);
    let resumed = custody(&data, &["admin", "rotate-keys", "--resume"]).await;
    assert!(text(&resumed).contains("re-wrapped 0 keys"), "{}", text(&resumed));
    assert_eq!((current(), keks()), (second.clone(), files + 1));
    // Nothing names the first KEK any more: it is retired, its file gone; the current stays.
    let retired = custody(&data, &["admin", "retire-keks"]).await;
    assert!(retired.status.success(), "{}", text(&retired));
    assert!(text(&retired).contains(&format!("retired {}", first.trim())), "{}", text(&retired));
    assert_eq!((current(), keks()), (second, files));
    let again = custody(&data, &["admin", "retire-keks"]).await;
    assert!(text(&again).contains("no key-encryption key to retire"), "{}", text(&again));
}

#[tokio::test]
async fn commands_need_an_initialised_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let out = custody(&dir.path().join("nothing"), &["admin", "list"]).await;
    assert!(!out.status.success());
    assert!(text(&out).contains("custody --data-dir"), "{}", text(&out));
}

/// Runs the tour; then a dump of its database (`sqlite3 .dump`, `pg_dump`) names nobody the
/// tour named and holds none of its tracking numbers.
async fn tour(database_url: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_custody"));
    command
        .arg("--data-dir")
        .arg(dir.path())
        .args(["demo", "--scenario", "tour", "--keep"])
        .env("CUSTODY_LOG", "warn");
    if let Some(url) = database_url {
        command.args(["--database-url", url]);
    }
    let out = command.output().await.unwrap();
    let shown = text(&out);
    assert!(out.status.success(), "tour failed:\n{shown}");
    assert!(shown.contains("Tour complete"), "{shown}");
    assert!(!shown.contains('✘'), "{shown}");

    // The demo made its data directory inside ours, and kept it.
    let kept = std::fs::read_dir(dir.path()).unwrap().next().unwrap().unwrap().path();
    let url = database_url.map_or_else(|| custody_store::sqlite_url_in(&kept), str::to_owned);
    let Some(dump) = custody_testkit::dump::dump("cli::tour", &url).await else { return };
    let mut personal: Vec<String> = [
        "root@harbour.example",
        "Sam Super",
        "admin@harbour.example",
        "Ada Admin",
        "ops@harbour.example",
        "Olly Ops",
        "audit@harbour.example",
        "Abe Auditor",
        "carl@parcelco.example",
        "Carl Courier",
        "ann@harbour.example",
        "Ann Resident",
        "bob@harbour.example",
        "Bob Resident",
        "PC-GARAGE-1",
        "PC-KIOSK-1",
    ]
    .map(str::to_owned)
    .into();
    personal.extend((1000..1100).map(|n| format!("'PC{n}'")));
    personal.extend((1000..1100).map(|n| format!("\tPC{n}\t")));
    for datum in &personal {
        assert!(!dump.contains(datum.as_str()), "{datum} in a dump of the tour's database");
    }
}

#[tokio::test]
async fn the_tour_passes_on_sqlite() {
    tour(None).await;
}

#[tokio::test]
async fn the_tour_passes_on_postgres() {
    let Some(db) = custody_testkit::postgres_store("cli::the_tour_passes_on_postgres").await else {
        return;
    };
    tour(Some(&db.url)).await;
}

#[tokio::test]
async fn serve_answers_over_tls_until_stopped() {
    use tokio::io::AsyncBufReadExt as _;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    assert!(custody(&data, &["init"]).await.status.success());
    let mut child = Command::new(env!("CARGO_BIN_EXE_custody"))
        .arg("--data-dir")
        .arg(&data)
        .arg("serve")
        .env("CUSTODY_LOG", "warn")
        .env("CUSTODY_LISTEN", "127.0.0.1:0")
        .env("CUSTODY_GATEWAY_LISTEN", "127.0.0.1:0")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let line = lines.next_line().await.unwrap().expect("a line saying where it serves");
    let addr: std::net::SocketAddr = line
        .split("https://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    let ca = std::fs::read_to_string(data.join("tls/server-ca.pem")).unwrap();
    let trust = custody_crypto::tls::ServerTrust { ca_pem: ca, pins: vec![] };
    let clock: std::sync::Arc<dyn custody_core::Clock> =
        std::sync::Arc::new(custody_crypto::SystemClock);
    let tls = custody_crypto::tls::client_config(&trust, None, &[b"http/1.1"], clock).unwrap();
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .resolve("localhost", addr)
        .build()
        .unwrap();
    let health =
        client.get(format!("https://localhost:{}/healthz", addr.port())).send().await.unwrap();
    assert_eq!(health.text().await.unwrap(), "ok\n");
    let ready =
        client.get(format!("https://localhost:{}/readyz", addr.port())).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    // The database the server made, with its -wal and -shm files, is the owner's alone, like
    // everything else in the data directory.
    #[cfg(unix)]
    for file in ["custody.db", "custody.db-wal", "custody.db-shm"] {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(data.join(file)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{file}");
    }
    assert!(custody_crypto::private_files::check_tree(&data).unwrap() > 10);
    child.start_kill().unwrap();
}

#[tokio::test]
async fn audit_verify_reads_a_copy_without_changing_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    assert!(custody(&data, &["init"]).await.status.success());
    assert!(custody(&data, &["admin", "create-org", "Acme Living"]).await.status.success());
    let copy = dir.path().join("copy");
    std::fs::create_dir_all(&copy).unwrap();
    // A consistent copy of a WAL database is the database file with its WAL and index.
    for name in ["custody.db", "custody.db-wal", "custody.db-shm"] {
        if data.join(name).exists() {
            std::fs::copy(data.join(name), copy.join(name)).unwrap();
        }
    }
    let before = std::fs::read(copy.join("custody.db")).unwrap();
    let out = custody(&copy, &["audit", "verify", "--quiet"]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("intact: 1 entries"), "{}", text(&out));
    assert_eq!(
        std::fs::read(copy.join("custody.db")).unwrap(),
        before,
        "verification changed nothing"
    );
    let none = custody(&dir.path().join("nothing"), &["audit", "verify"]).await;
    assert!(!none.status.success());
    assert!(text(&none).contains("no database"), "{}", text(&none));
}

#[tokio::test]
async fn audit_export_verifies_offline_and_tampering_fails() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    assert!(custody(&data, &["init"]).await.status.success());
    assert!(custody(&data, &["admin", "create-org", "Harbour Living"]).await.status.success());
    assert!(custody(&data, &["admin", "create-org", "Acme Living"]).await.status.success());
    let file = dir.path().join("audit.jsonl");
    let out = custody(&data, &["audit", "export", "--out", file.to_str().unwrap()]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("exported 2 entries"), "{}", text(&out));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "exports hold personal data: owner only");
    }
    let key = data.join("keys/checkpoint.vkey");
    let ok = custody(
        &data,
        &["audit", "verify", file.to_str().unwrap(), "--key", key.to_str().unwrap()],
    )
    .await;
    assert!(ok.status.success(), "{}", text(&ok));
    assert!(text(&ok).contains("intact: 2 entries"), "{}", text(&ok));
    let forged = std::fs::read_to_string(&file).unwrap().replacen(
        "\"outcome\":\"success\"",
        "\"outcome\":\"failure\"",
        1,
    );
    std::fs::write(&file, forged).unwrap();
    let bad = custody(
        &data,
        &["audit", "verify", file.to_str().unwrap(), "--key", key.to_str().unwrap()],
    )
    .await;
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad));
    assert!(text(&bad).contains("line 2"), "{}", text(&bad));
    let csv = dir.path().join("audit.csv");
    assert!(
        custody(&data, &["audit", "export", "--out", csv.to_str().unwrap(), "--format", "csv"])
            .await
            .status
            .success()
    );
    let sheet = std::fs::read_to_string(&csv).unwrap();
    assert!(sheet.starts_with("index,at,actor_kind"), "{sheet}");
    assert_eq!(
        sheet.matches("\r\n").count(),
        3,
        "a header and two records, each ending in CRLF:\n{sheet}"
    );
}

/// The benchmark is a command, not a timed test: this only checks that it runs end to end on
/// a small log and reports every figure (its own log must verify, or it fails).
#[tokio::test]
async fn bench_audit_reports_every_figure() {
    let dir = tempfile::tempdir().unwrap();
    let out = custody(
        dir.path(),
        &[
            "bench",
            "audit",
            "--json",
            "--appends",
            "64",
            "--writers",
            "8",
            "--verify-entries",
            "300",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let figures: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert_eq!(figures["appends"], 64);
    assert_eq!(figures["verify_entries"], 300);
    for key in [
        "append_entries_per_s",
        "raw_log_inserts_per_s",
        "append_to_raw_ratio",
        "bare_table_inserts_per_s",
        "append_to_bare_table_ratio",
        "verify_s",
        "offline_verify_one_entry_us",
    ] {
        assert!(figures[key].as_f64().is_some_and(|v| v > 0.0), "{key}: {figures}");
    }
    assert!(figures["ack_latency_ms"]["p99"].as_f64().is_some());
    // 300 entries: the middle one's proof climbs a tree of depth 9.
    assert!(figures["proof_hashes"].as_u64().is_some_and(|n| (8..=9).contains(&n)), "{figures}");
}

/// The kiosk benchmark runs every kind of failed entry through the real use case and checks,
/// on its first round, that each is audited as the kind it stands for; this checks that it
/// reports every figure. Its timings are for `docs/BENCHMARKS.md`, never asserted here.
#[tokio::test]
async fn bench_alerts_times_each_reading_to_both_receivers() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["bench", "alerts", "--json", "--burst", "5", "--bursts", "2", "--raw", "3"];
    let out = custody(dir.path(), &args).await;
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let figures: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert_eq!(figures["bursts"], serde_json::json!(["pry", "drill"]));
    assert_eq!(figures["readings_per_burst"], 5);
    for key in [
        "reading_to_webhook",
        "reading_to_syslog",
        "raw_webhook_post",
        "raw_syslog_message",
        "raw_durable_commit",
    ] {
        let (p50, p99) = (&figures[key]["p50_ms"], &figures[key]["p99_ms"]);
        assert!(p50.as_f64().is_some_and(|v| v > 0.0), "{key}: {figures}");
        assert!(p99.as_f64() >= p50.as_f64(), "{key}: {figures}");
    }
    let refused = custody(dir.path(), &["bench", "alerts", "--bursts", "7"]).await;
    assert!(!refused.status.success());
    assert!(text(&refused).contains("--bursts must be 1 to 6"), "{}", text(&refused));
}

#[tokio::test]
async fn bench_kiosk_times_every_kind_of_failure() {
    let dir = tempfile::tempdir().unwrap();
    let out = custody(dir.path(), &["bench", "kiosk", "--json", "--attempts", "12"]).await;
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let figures: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert_eq!(figures["attempts_per_kind"], 12);
    for kind in ["malformed", "unknown", "used", "revoked", "expired"] {
        assert!(figures["kinds"][kind]["p50_ms"].as_f64().is_some_and(|v| v > 0.0), "{figures}");
    }
    for key in ["ks_worst_pair", "ks_critical_1pct", "raw_durable_commit_p50_ms", "answer_floor_ms"]
    {
        assert!(figures[key].as_f64().is_some(), "{key}: {figures}");
    }
    assert!(figures["attempts_over_floor"].as_u64().is_some());
}

// An incident exported over the API (a pry that locked its bank down, taken and resolved) is
// one file that `custody audit verify` checks offline with the checkpoint key alone; a forged
// timeline or a missing entry fails it.
#[tokio::test]
async fn an_incidents_bundle_verifies_offline_and_a_forged_one_fails() {
    use serde_json::{Value, json};
    let server = custody_testkit::TestServer::start(custody_testkit::sqlite_store().await).await;
    let env = &server.env;
    let agent = server.agent().await;
    let admin = server.sign_in(&env.admin).await;
    let post = |path: String, body: Value| {
        admin.client.post(server.url(&path)).header("x-csrf-token", &admin.csrf).json(&body).send()
    };
    let rule = json!({"kind": "pry", "min_severity": "high", "scope": "bank"});
    let set = post(format!("/api/v1/sites/{}/lockdown-rules", env.site), rule).await.unwrap();
    assert_eq!(set.status(), 200);
    agent.handle.sensor(custody_core::alert::AlertKind::Pry, Some(2)).await;
    let live = format!("/api/v1/sites/{}/alerts?live=true", env.site);
    let listed = || async {
        let answer = admin.client.get(server.url(&live)).send().await.unwrap();
        answer.json::<Value>().await.unwrap()
    };
    custody_testkit::eventually("the pry is an alert", || async {
        listed().await.as_array().is_some_and(|a| a.len() == 1)
    })
    .await;
    let id = listed().await[0]["id"].as_str().unwrap().to_owned();
    let acknowledged = post(format!("/api/v1/alerts/{id}/acknowledge"), json!({})).await.unwrap();
    assert_eq!(acknowledged.status(), 200);
    let reason = json!({"reason": "a courier's trolley against the door"});
    let resolved = post(format!("/api/v1/alerts/{id}/resolve"), reason).await.unwrap();
    assert_eq!(resolved.status(), 200);

    let export = format!("/api/v1/alerts/{id}/export");
    let bare = post(export.clone(), json!({"reason": ""})).await.unwrap();
    assert_eq!(bare.status(), 422, "an export needs a reason");
    let ann = server.sign_in(&env.ann).await;
    let theirs = ann.client.post(server.url(&export)).header("x-csrf-token", &ann.csrf);
    let theirs = theirs.json(&json!({"reason": "curious"})).send().await.unwrap();
    assert_eq!(theirs.status(), 403, "a resident exports nothing");
    let bundle = post(export, json!({"reason": "for the insurer"})).await.unwrap();
    assert_eq!(bundle.status(), 200);
    assert_eq!(
        bundle.headers()["content-disposition"],
        format!("attachment; filename=\"incident-{id}.jsonl\"")
    );
    let bundle = bundle.text().await.unwrap();
    let lines: Vec<Value> = bundle.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let incident = &lines[1];
    assert_eq!(incident["type"], "incident");
    let steps: Vec<&str> = incident["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["what"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["raised", "locked_down", "acknowledged", "resolved"]);
    let actions: Vec<&str> = lines[2..].iter().map(|l| l["action"].as_str().unwrap()).collect();
    for action in
        ["alert.raise", "lockdown.engage", "alert.acknowledge", "alert.resolve", "audit.export"]
    {
        assert!(actions.contains(&action), "the bundle lacks {action}: {actions:?}");
    }
    assert!(!bundle.contains("trolley"), "the resolution's words travel sealed only");

    let dir = tempfile::tempdir().unwrap();
    let (file, key) = (dir.path().join("incident.jsonl"), dir.path().join("checkpoint.vkey"));
    std::fs::write(&key, env.app.checkpoint_verifier_key()).unwrap();
    let args = ["audit", "verify", file.to_str().unwrap(), "--key", key.to_str().unwrap()];
    let verify = |contents: String| {
        std::fs::write(&file, contents).unwrap();
        custody(dir.path(), &args)
    };
    let ok = verify(bundle.clone()).await;
    assert!(ok.status.success(), "{}", text(&ok));
    assert!(
        text(&ok).contains(&format!(
            "incident {id}: critical pry alert, resolved; its timeline of 4 events"
        )),
        "{}",
        text(&ok)
    );

    // Said to be something else, or missing the entry of its lockdown: refused, with the line.
    let relabelled = bundle.replacen("\"kind\":\"pry\"", "\"kind\":\"impact\"", 1);
    let bad = verify(relabelled).await;
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad));
    assert!(text(&bad).contains("line 2") && text(&bad).contains("impact"), "{}", text(&bad));
    let without: Vec<&str> =
        bundle.lines().filter(|l| !l.contains("\"action\":\"lockdown.engage\"")).collect();
    let bad = verify(without.join("\n")).await;
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad));
    assert!(text(&bad).contains("not in the file"), "{}", text(&bad));
}

#[tokio::test]
async fn bench_keys_times_requests_and_a_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["bench", "keys", "--json", "--people", "2", "--requests", "3", "--subjects", "600"];
    let out = custody(dir.path(), &args).await;
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let figures: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert_eq!(figures["subjects"], 600);
    for key in [
        "request_p50_us",
        "opening_p50_us",
        "bare_seal_same_bytes_p50_us",
        "rotation_keys_per_s",
        "bare_rewrap_keys_per_s",
    ] {
        assert!(figures[key].as_f64().is_some_and(|v| v > 0.0), "{key}: {figures}");
    }
}
