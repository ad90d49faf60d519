//! Tidy checks: the Architecture Invariants of ARCHITECTURE.md, checked on every `cargo test`.
//!
//! Each check reads the repository as it is (manifests, sources, the lock file, the resolved
//! dependency graph), so an invariant cannot drift from the code without a failing test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test fails loudly at the first unexpected value"
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// Every workspace crate's name and its direct dependencies (normal, dev and build).
fn manifests() -> BTreeMap<String, (Vec<String>, Vec<String>)> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(root().join("crates")).unwrap() {
        let dir = entry.unwrap().path();
        let text = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        let doc: toml::Table = text.parse().unwrap();
        let name = doc["package"]["name"].as_str().unwrap().to_owned();
        let keys = |section: &str| -> Vec<String> {
            let mut names: Vec<String> = doc
                .get(section)
                .and_then(|t| t.as_table())
                .map(|t| t.keys().cloned().collect())
                .unwrap_or_default();
            if let Some(targets) = doc.get("target").and_then(|t| t.as_table()) {
                for target in targets.values() {
                    if let Some(t) = target.get(section).and_then(|t| t.as_table()) {
                        names.extend(t.keys().cloned());
                    }
                }
            }
            names
        };
        let mut normal = keys("dependencies");
        normal.extend(keys("build-dependencies"));
        out.insert(name, (normal, keys("dev-dependencies")));
    }
    out
}

/// Crates that implement cryptographic primitives.
const PRIMITIVES: &[&str] = &[
    "aws-lc-rs",
    "aws-lc-sys",
    "ring",
    "argon2",
    "rcgen",
    "x509-parser",
    "sha2",
    "sha1",
    "hmac",
    "hkdf",
    "aes-gcm",
    "chacha20poly1305",
    "ed25519-dalek",
    "p256",
    "rsa",
    "subtle",
    "openssl",
    "password-hash",
];

/// Crates that do I/O or bring a runtime, a database, the web or TLS.
const IO: &[&str] = &[
    "tokio",
    "sqlx",
    "axum",
    "hyper",
    "hyper-util",
    "tower",
    "tower-http",
    "reqwest",
    "rustls",
    "tokio-rustls",
    "lettre",
    "tokio-tungstenite",
    "tracing-subscriber",
    "metrics-exporter-prometheus",
];

/// **Architecture Invariant:** the core depends on no I/O, runtime, database, web or TLS crate
/// and on no other workspace crate.
#[test]
fn core_is_pure() {
    let m = manifests();
    let (deps, _) = &m["custody-core"];
    for d in deps {
        assert!(!IO.contains(&d.as_str()), "custody-core depends on I/O crate {d}");
        assert!(!PRIMITIVES.contains(&d.as_str()), "custody-core depends on primitive crate {d}");
        assert!(!d.starts_with("custody-"), "custody-core depends on {d}");
    }
}

/// Test-only exceptions, each an independent implementation to check custody-crypto against:
/// `ct-merkle`, custody-audit's RFC 6962 oracle, is generic over a `digest` hash and needs one
/// handed to it; custody-server's webhook test computes Standard Webhooks signatures with
/// the `hmac` crate rather than aws-lc.
const PRIMITIVE_DEV_EXCEPTIONS: &[(&str, &str)] =
    &[("custody-audit", "sha2"), ("custody-server", "hmac"), ("custody-server", "sha2")];

/// **Architecture Invariant:** only custody-crypto depends on primitive crates.
#[test]
fn only_the_crypto_crate_touches_primitives() {
    for (name, (normal, dev)) in manifests() {
        if name == "custody-crypto" {
            continue;
        }
        let dev =
            dev.iter().filter(|d| !PRIMITIVE_DEV_EXCEPTIONS.contains(&(name.as_str(), d.as_str())));
        for d in normal.iter().chain(dev) {
            assert!(
                !PRIMITIVES.contains(&d.as_str()),
                "{name} depends on primitive crate {d}; ask custody-crypto"
            );
        }
    }
}

/// **Architecture Invariant:** wire types depend on no workspace crate.
#[test]
fn proto_stands_alone() {
    let m = manifests();
    let (deps, _) = &m["custody-proto"];
    assert!(deps.iter().all(|d| !d.starts_with("custody-")), "custody-proto depends on {deps:?}");
}

/// **Architecture Invariant:** the use cases know nothing of HTTP, HTML or sockets; the store
/// knows nothing of HTTP either.
#[test]
fn layers_stay_in_their_lane() {
    let m = manifests();
    let web = [
        "axum",
        "hyper",
        "hyper-util",
        "tower",
        "tower-http",
        "askama",
        "http",
        "lettre",
        "reqwest",
        "tokio-tungstenite",
    ];
    for krate in ["custody-app", "custody-store"] {
        let (deps, _) = &m[krate];
        for d in deps {
            assert!(!web.contains(&d.as_str()), "{krate} depends on web crate {d}");
        }
    }
    let (store_deps, _) = &m["custody-store"];
    for d in store_deps {
        assert!(
            !["custody-app", "custody-server", "custody-crypto"].contains(&d.as_str()),
            "custody-store depends on {d}"
        );
    }
}

/// **Architecture Invariant:** the server speaks the app's types: it depends on no store, so a
/// change to the store's rows stops at the app.
#[test]
fn the_server_does_not_know_the_store() {
    let (normal, dev) = &manifests()["custody-server"];
    for deps in [normal, dev] {
        assert!(
            !deps.iter().any(|d| d == "custody-store"),
            "custody-server depends on custody-store"
        );
    }
}

/// **Architecture Invariant:** what custody-app hands out is its own: no public function,
/// field or variant of it names a store row or the store's transaction. (`App::new`, `store`
/// and `verify_store` take the store itself, for the `custody` command that opens it.)
#[test]
fn the_app_hands_out_views_not_rows() {
    let mut files = Vec::new();
    rust_files(&root().join("crates/custody-app/src"), &mut files);
    let leaks = |text: &str| {
        text.split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .any(|w| (w.ends_with("Row") && w.len() > 3) || w == "Tx")
    };
    let mut found = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let mut i = 0;
        while i < lines.len() {
            let line = lines[i].trim_start();
            // A public signature runs to its body's brace or its semicolon.
            let public_fn =
                ["pub fn ", "pub async fn ", "pub const fn "].iter().any(|p| line.starts_with(p));
            let public_item =
                line.starts_with("pub ") && !line.starts_with("pub(") && line.contains(':');
            // An enum's variant with a payload: `Pending(Box<Approval>),`.
            let variant = line.chars().next().is_some_and(char::is_uppercase)
                && line.split('(').next().is_some_and(|n| n.chars().all(char::is_alphanumeric))
                && line.ends_with("),");
            let mut end = i;
            if public_fn {
                while !lines[end].trim_end().ends_with('{') && !lines[end].trim_end().ends_with(';')
                {
                    end += 1;
                }
            }
            let text = lines[i..=end].join(" ");
            if (public_fn || public_item || variant) && leaks(&text) {
                found.push(format!("{}:{}: {}", file.display(), i + 1, line));
            }
            i = end + 1;
        }
    }
    assert!(found.is_empty(), "custody-app hands out store types: {found:#?}");
}

/// **Architecture Invariant:** the test harness is only ever a dev-dependency.
#[test]
fn testkit_is_for_tests_only() {
    for (name, (normal, _)) in manifests() {
        assert!(
            !normal.iter().any(|d| d == "custody-testkit"),
            "{name} has custody-testkit as a normal dependency"
        );
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// **Architecture Invariant:** SQL lives in custody-store. (The test harness sets up and tears
/// down databases, and tests break things on purpose; both are exempt.)
#[test]
fn sql_lives_in_the_store() {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(root().join("crates")).unwrap() {
        let dir = entry.unwrap().path();
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        if name == "custody-store" || name == "custody-testkit" {
            continue;
        }
        rust_files(&dir.join("src"), &mut files);
    }
    let needles =
        ["SELECT ", "INSERT INTO", "UPDATE ", "DELETE FROM", "CREATE TABLE", "ALTER TABLE"];
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for needle in needles {
            assert!(
                !text.contains(needle),
                "{} contains SQL ({needle:?}); put it in custody-store",
                file.display()
            );
        }
    }
}

/// An audit event is built through its constructors (`AuditEvent::success`, `failure`,
/// `denied`, with `because`), so every use case records one the same way. Only custody-core,
/// which defines it, and the store, which decodes stored entries, write it out field by field.
#[test]
fn audit_events_are_built_by_their_constructors() {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(root().join("crates")).unwrap() {
        let dir = entry.unwrap().path();
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        if name != "custody-core" {
            rust_files(&dir.join("src"), &mut files);
        }
    }
    let decoder = root().join("crates/custody-store/src/tx/audit.rs");
    for file in files.iter().filter(|f| **f != decoder) {
        let text = std::fs::read_to_string(file).unwrap();
        // `-> AuditEvent {` opens a function's body, not a literal.
        let literals =
            text.matches("AuditEvent {").count() - text.matches("-> AuditEvent {").count();
        assert!(
            literals == 0,
            "{} writes an AuditEvent field by field; use AuditEvent::success/failure/denied",
            file.display()
        );
    }
}

/// Tests tell the story (STYLE.md rule 12): none ignored, none that pass by panicking, none that
/// sleep.
#[test]
fn tests_neither_skip_nor_sleep() {
    let mut files = Vec::new();
    rust_files(&root().join("crates"), &mut files);
    let this = file!().rsplit('/').next().unwrap().to_owned();
    let forbidden = ["#[ignore", "#[should_panic", "thread::sleep", "time::sleep("];
    for file in files.iter().filter(|f| !f.ends_with(&this)) {
        let text = std::fs::read_to_string(file).unwrap();
        for needle in forbidden {
            assert!(!text.contains(needle), "{} contains {needle}", file.display());
        }
    }
}

/// **Architecture Invariant:** no `ring` and no OpenSSL in the build. Cargo.lock may name `ring`
/// through a weak optional feature (`ring?/alloc` in rustls-webpki), but nothing may resolve it.
#[test]
fn no_ring_no_openssl_in_the_build() {
    for krate in ["ring", "openssl-sys", "openssl", "native-tls"] {
        // The host's build graph: what `cargo test` has just fetched and built. (Other
        // platforms' dependencies are not downloaded on a fresh machine, so `--target all`
        // cannot run offline there.)
        let out = std::process::Command::new(env!("CARGO"))
            .args([
                "tree",
                "--workspace",
                "--locked",
                "--offline",
                "-e",
                "normal,build,dev",
                "-i",
                krate,
            ])
            .current_dir(root())
            .output()
            .expect("run cargo tree");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.trim().is_empty(), "{krate} is in the build:\n{stdout}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("nothing to print") || stderr.contains("did not match any packages"),
            "cargo tree -i {krate} did not run cleanly:\n{stderr}"
        );
    }
}

/// ARCHITECTURE.md's code map names every crate, so a new crate gets a room in the map.
#[test]
fn architecture_names_every_crate() {
    let arch = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    for name in manifests().keys() {
        assert!(arch.contains(&format!("`{name}`")), "ARCHITECTURE.md does not mention `{name}`");
    }
}

/// The crates in ARCHITECTURE.md's layer diagram, innermost first.
fn layers() -> Vec<String> {
    let arch = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let after = arch.split("The code is layered").nth(1).expect("the layer diagram");
    let block = after.split("```").nth(1).expect("the layer diagram's block");
    block.lines().filter_map(|l| l.split_whitespace().next()).map(str::to_owned).collect()
}

/// **Architecture Invariant:** every crate depends only on crates above it in ARCHITECTURE.md's
/// layer diagram (innermost first), so no arrow runs back up. The diagram names every crate.
#[test]
fn crates_depend_only_on_inner_layers() {
    let order = layers();
    let m = manifests();
    for name in m.keys() {
        assert!(order.contains(name), "the layer diagram does not place {name}");
    }
    for (i, name) in order.iter().enumerate() {
        let (normal, _) = &m[name];
        for d in normal.iter().filter(|d| d.starts_with("custody-")) {
            let at = order.iter().position(|o| o == d).unwrap();
            assert!(at < i, "{name} depends on {d}, which is not an inner layer");
        }
    }
}

/// Names that reach outside the process: files, sockets, processes, the environment, the
/// clock, a runtime.
const DOES_IO: &[&str] = &[
    "std::fs",
    "std::net",
    "std::process",
    "std::env",
    "std::io::stdin",
    "SystemTime",
    "Instant::now",
    "tokio",
    "reqwest",
];

/// **Architecture Invariant:** the agent's core decides with plain values and custody-audit
/// computes with them: neither does I/O, reads the clock or needs a runtime.
#[test]
fn the_agent_core_and_the_audit_log_do_no_io() {
    let mut files = Vec::new();
    rust_files(&root().join("crates/custody-agent/src/core"), &mut files);
    rust_files(&root().join("crates/custody-audit/src"), &mut files);
    for file in files.iter().filter(|f| !f.components().any(|c| c.as_os_str() == "tests")) {
        let text = std::fs::read_to_string(file).unwrap();
        for needle in DOES_IO {
            assert!(!text.contains(needle), "{} uses {needle}", file.display());
        }
    }
}

/// No source file grows past 1,000 lines: past that a concept has more than one room's worth
/// (tests aside).
#[test]
fn no_source_file_over_a_thousand_lines() {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(root().join("crates")).unwrap() {
        rust_files(&entry.unwrap().path().join("src"), &mut files);
    }
    for file in files.iter().filter(|f| !f.components().any(|c| c.as_os_str() == "tests")) {
        let lines = std::fs::read_to_string(file).unwrap().lines().count();
        assert!(lines <= 1000, "{} has {lines} lines; split it by concept", file.display());
    }
}

/// ARCHITECTURE.md's code map names every module of a crate in that crate's section (as
/// `module`, or by its path), so a newcomer can find any file from the map.
#[test]
fn the_code_map_names_every_module() {
    let arch = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let mut unnamed = Vec::new();
    for name in manifests().keys() {
        let heading = format!("### `{name}`");
        let section = arch.split(&heading).nth(1).unwrap_or_else(|| panic!("no {heading}"));
        let section = section.split("\n### ").next().unwrap();
        let src = root().join("crates").join(name).join("src");
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        for file in files {
            let rel = file.strip_prefix(&src).unwrap().to_string_lossy().into_owned();
            if rel.split('/').any(|p| p == "tests") || ["lib.rs", "main.rs"].contains(&&*rel) {
                continue;
            }
            let module = match rel.strip_suffix("/mod.rs") {
                Some(dir) => dir.rsplit('/').next().unwrap().to_owned(),
                None => rel.rsplit('/').next().unwrap().trim_end_matches(".rs").to_owned(),
            };
            // A nested module may be named by its path: `hardware::driver`, `parcels/deposit.rs`.
            let path = rel.trim_end_matches(".rs").trim_end_matches("/mod").replace('/', "::");
            let named = [
                format!("`{module}`"),
                format!("`{module}::"),
                format!("`{module}/"),
                format!("{rel}`"),
                format!("{path}`"),
                format!("{path}::"),
            ]
            .iter()
            .any(|n| section.contains(n.as_str()));
            if !named {
                unnamed.push(format!("{name}: {rel}"));
            }
        }
    }
    assert!(unnamed.is_empty(), "ARCHITECTURE.md's code map does not name: {unnamed:#?}");
}

/// The names a Rust source defines as functions, modules or `backends!` tests.
fn defined_names(src: &str, out: &mut std::collections::BTreeSet<String>) {
    for marker in ["fn ", "mod ", "backends!("] {
        for (at, _) in src.match_indices(marker) {
            let rest = src[at + marker.len()..].trim_start();
            let name: String =
                rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
}

/// Every test function defined anywhere in the workspace, by name.
fn defined_tests() -> std::collections::BTreeSet<String> {
    let mut files = Vec::new();
    rust_files(&root().join("crates"), &mut files);
    let mut defined = std::collections::BTreeSet::new();
    for file in files {
        defined_names(&std::fs::read_to_string(file).unwrap(), &mut defined);
    }
    defined
}

/// The backticked names in `text` shaped like a test's: lowercase, digits and underscores, at
/// least three words.
fn test_names(text: &str) -> impl Iterator<Item = &str> {
    text.split('`').skip(1).step_by(2).filter(|name| {
        name.starts_with(|c: char| c.is_ascii_lowercase())
            && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && name.matches('_').count() >= 2
    })
}

/// Every test docs/SECURITY.md's **Tests.** paragraphs name (a backticked name of three words
/// or more) exists: a renamed or deleted test cannot leave the document promising it.
#[test]
fn the_security_document_names_tests_that_exist() {
    let defined = defined_tests();
    let doc = std::fs::read_to_string(root().join("docs/SECURITY.md")).unwrap();
    let mut named = 0;
    let mut missing = Vec::new();
    for part in doc.split("**Tests.**").skip(1) {
        let section = part.split("\n## ").next().unwrap();
        for name in test_names(section) {
            named += 1;
            if !defined.contains(name) {
                missing.push(name.to_owned());
            }
        }
    }
    assert!(named > 100, "only {named} tests named: has the document's form changed?");
    assert!(missing.is_empty(), "docs/SECURITY.md names tests that do not exist: {missing:#?}");
}

/// Every test docs/COMPLIANCE.md's tables name in their last column exists: a control cannot
/// stay mapped to a test that was renamed or deleted.
#[test]
fn the_compliance_map_names_tests_that_exist() {
    let defined = defined_tests();
    let doc = std::fs::read_to_string(root().join("docs/COMPLIANCE.md")).unwrap();
    let mut named = 0;
    let mut missing = Vec::new();
    for row in doc.lines().filter(|l| l.starts_with('|')) {
        let last = row.trim_end_matches('|').rsplit('|').next().unwrap_or_default();
        for name in test_names(last) {
            named += 1;
            if !defined.contains(name) {
                missing.push(name.to_owned());
            }
        }
    }
    assert!(named > 40, "only {named} tests named: has the document's form changed?");
    assert!(missing.is_empty(), "docs/COMPLIANCE.md names tests that do not exist: {missing:#?}");
}

/// `docs/compliance/record-of-processing.md` is what the inventory renders, so the record an
/// auditor reads is the one the schema test holds to the database. `CUSTODY_BLESS=1` rewrites
/// it after a change to the inventory.
#[test]
fn the_record_of_processing_is_rendered_from_the_inventory() {
    let path = root().join("docs/compliance/record-of-processing.md");
    let rendered = custody_store::inventory::record_of_processing();
    if std::env::var("CUSTODY_BLESS").as_deref() == Ok("1") {
        std::fs::write(&path, &rendered).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == rendered,
        "{} is out of date: run `CUSTODY_BLESS=1 cargo test -p custody-cli the_record_of_processing` and commit it",
        path.display()
    );
}
