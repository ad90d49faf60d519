//! A database as a copy of it shows it — `sqlite3 .dump` or `pg_dump`, the tools an operator
//! (or a thief) would use — for tests that look for what must never be stored in clear.
//!
//! Without the tool, [`dump`] prints a notice and returns `None`, so the test passes, unless
//! `CUSTODY_REQUIRE_DUMP_TOOLS=1` (as in CI), which makes its absence a failure.

use std::io::Write as _;

/// Every statement and row of the database at `url` (a Custody store URL), as text; binary
/// columns are left out (see [`without_binary`]).
pub async fn dump(test: &str, url: &str) -> Option<String> {
    let mut command = if let Some(rest) = url.strip_prefix("sqlite://") {
        let path = rest.split('?').next().unwrap_or(rest);
        let mut c = tokio::process::Command::new("sqlite3");
        c.args(["-readonly", path, ".dump"]);
        c
    } else {
        let mut c = tokio::process::Command::new("pg_dump");
        c.args(["--no-owner", "--no-privileges", url]);
        c
    };
    let out = match command.output().await {
        Ok(out) => out,
        Err(e) => {
            assert!(
                std::env::var("CUSTODY_REQUIRE_DUMP_TOOLS").as_deref() != Ok("1"),
                "CUSTODY_REQUIRE_DUMP_TOOLS=1 but the dump tool did not run: {e}"
            );
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED (dump): {test} — install Debian sqlite3 and postgresql-client ({e})"
            );
            return None;
        }
    };
    assert!(out.status.success(), "dump failed: {}", String::from_utf8_lossy(&out.stderr));
    Some(without_binary(&String::from_utf8_lossy(&out.stdout)))
}

/// `dump` with every binary literal (`X'…'` from SQLite, `\x…` from PostgreSQL) cut out: a
/// ciphertext or keyed hash written in hexadecimal holds every short run of hex digits and
/// digits by chance, so a search for a badge hint or a pickup code must not look inside them.
/// What is left is every text and number column, where nothing personal may appear.
pub fn without_binary(dump: &str) -> String {
    let mut out = String::with_capacity(dump.len());
    let mut rest = dump;
    loop {
        let start = [rest.find("X'"), rest.find("\\x")].into_iter().flatten().min();
        let Some(start) = start else {
            out.push_str(rest);
            return out;
        };
        out.push_str(&rest[..start]);
        out.push(' ');
        let after = &rest[start + 2..];
        let hex = after.find(|c: char| !c.is_ascii_hexdigit()).unwrap_or(after.len());
        // SQLite closes its literal with a quote.
        let quote = usize::from(rest[start..].starts_with("X'") && after[hex..].starts_with('\''));
        rest = &after[hex + quote..];
    }
}

#[cfg(test)]
mod tests {
    use super::without_binary;

    #[test]
    fn binary_literals_are_cut_and_text_is_kept() {
        let sqlite = "INSERT INTO t VALUES('ann@example.org',X'0123ABCDEF',42);";
        assert_eq!(without_binary(sqlite), "INSERT INTO t VALUES('ann@example.org', ,42);");
        let postgres = "a1\t\\x00e6f7\tAnn\n";
        assert_eq!(without_binary(postgres), "a1\t \tAnn\n");
        assert_eq!(without_binary("no binary here"), "no binary here");
    }
}
