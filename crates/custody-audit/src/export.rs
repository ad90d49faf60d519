//! Export files: entries with inclusion proofs and the checkpoint they are proved against,
//! verifiable offline with the checkpoint key alone.
//!
//! JSON Lines: the first line is `{"type":"checkpoint","note":…}`; every other line is
//! `{"type":"entry","index":…,"entry":base64,"proof":[hex…],…readable fields}`. The readable
//! fields are for people and spreadsheets; the verifier checks that they say what the hashed
//! bytes say.
//!
//! An incident's bundle adds one `{"type":"incident",…}` line: the alert as the server holds it,
//! and its timeline, each event naming the index of the audit entry that records it. The
//! verifier checks that every event is backed by a proven entry in the file, at the same time,
//! naming the alert; that no entry backs two events; and that the first event's entry names the
//! alert's kind. The alert's row is the server's word; its timeline is the log's.

use data_encoding::{BASE64, HEXLOWER};
use serde::{Deserialize, Serialize};

use crate::checkpoint::{Checkpoint, NoteVerifier};
use crate::entry::Entry;
use crate::merkle::{Hash, leaf_hash, verify_inclusion};

/// One line of an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Line {
    /// The signed checkpoint every proof in the file leads to.
    Checkpoint {
        /// The signed note.
        note: String,
    },
    /// An entry and its inclusion proof.
    Entry(Box<ExportedEntry>),
    /// The incident a bundle is about.
    Incident(Box<Incident>),
}

/// An alert and its timeline, in an incident's bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Incident {
    /// The alert's id.
    pub id: String,
    /// What it is about (`pry`, `device_offline`, …).
    pub kind: String,
    /// How serious.
    pub severity: String,
    /// Where it stood when exported.
    pub state: String,
    /// Site id.
    pub site: String,
    /// Bank id, unless it concerns the site as a whole.
    pub bank: Option<String>,
    /// Compartment number, unless it concerns the bank as a whole.
    pub compartment: Option<u16>,
    /// Who acknowledged it.
    pub owner: Option<String>,
    /// Readings that raised or joined it.
    pub readings: u64,
    /// Raised, RFC 3339 UTC.
    pub raised_at: String,
    /// What happened to it, in order.
    pub timeline: Vec<IncidentEvent>,
}

/// One event of an incident's timeline. Its words (a note, a resolution's reason) stay on the
/// server: they may name people. The entry it names carries them sealed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncidentEvent {
    /// When, RFC 3339 UTC.
    pub at: String,
    /// Who (a person's or device's id, or `system`).
    pub who: String,
    /// What (`raised`, `reading`, `acknowledged`, `notified`, `locked_down`, `resolved`, …).
    pub what: String,
    /// The index of the audit entry that records it.
    pub entry: u64,
}

/// An entry as exported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportedEntry {
    /// Leaf index.
    pub index: u64,
    /// The canonical bytes, base64: what the leaf hash covers.
    pub entry: String,
    /// Inclusion proof against the checkpoint, hex hashes.
    pub proof: Vec<String>,
    /// Time, RFC 3339 UTC, for people.
    pub at: String,
    /// Actor kind.
    pub actor_kind: String,
    /// Actor id.
    pub actor_id: Option<String>,
    /// Action.
    pub action: String,
    /// Site id.
    pub site: Option<String>,
    /// Bank id.
    pub bank: Option<String>,
    /// Compartment id.
    pub compartment: Option<String>,
    /// Parcel id.
    pub parcel: Option<String>,
    /// Outcome.
    pub outcome: String,
    /// Reason.
    pub reason: Option<String>,
    /// Whose sealed personal data the entry carries, if any. The data itself stays sealed in
    /// the entry's bytes: an export never holds personal data in clear.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed_subject: Option<String>,
}

/// Milliseconds since the epoch as RFC 3339 UTC, as every time in an export is written.
pub fn rfc3339(at_ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(at_ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| at_ms.to_string())
}

impl ExportedEntry {
    /// The export form of `entry` with its proof; every readable field is derived from the
    /// entry, so a verifier can recompute and compare them all.
    pub fn new(entry: &Entry, proof: &[Hash]) -> Self {
        Self {
            index: entry.index,
            entry: BASE64.encode(&entry.encode()),
            proof: proof.iter().map(|h| HEXLOWER.encode(h)).collect(),
            at: rfc3339(entry.at_ms),
            actor_kind: entry.actor_kind.clone(),
            actor_id: entry.actor_id.clone(),
            action: entry.action.clone(),
            site: entry.site.clone(),
            bank: entry.bank.clone(),
            compartment: entry.compartment.clone(),
            parcel: entry.parcel.clone(),
            outcome: entry.outcome.clone(),
            reason: entry.reason.clone(),
            sealed_subject: entry.sealed.as_ref().map(|s| s.subject.clone()),
        }
    }

    /// Whether the entry names `id` (an alert's, say): it is one of the `:`-separated parts of
    /// its reason, as in `<alert>:pry:raised` or `alert:<alert>:pry`.
    pub fn names(&self, id: &str) -> bool {
        self.reason.as_deref().is_some_and(|r| r.split(':').any(|part| part == id))
    }
}

/// Why an export does not verify: the line (1-based) and the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {problem}")]
pub struct ExportError {
    /// Line number, from 1.
    pub line: usize,
    /// What is wrong.
    pub problem: String,
}

/// What a verified export holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedExport {
    /// The checkpoint the entries are proved against.
    pub checkpoint: Checkpoint,
    /// Number of entries verified.
    pub entries: usize,
    /// The incident, if the file is an incident's bundle: its timeline checked against the
    /// entries.
    pub incident: Option<Incident>,
}

/// Verifies an export: the checkpoint's signature by `verifier`, and for each entry that its
/// bytes decode, its readable fields match them, and its proof leads to the checkpoint's root.
pub fn verify_export(text: &str, verifier: &NoteVerifier) -> Result<VerifiedExport, ExportError> {
    let err = |line: usize, problem: String| ExportError { line, problem };
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    let (n, first) = lines.next().ok_or_else(|| err(1, "empty export".into()))?;
    let checkpoint = match serde_json::from_str::<Line>(first) {
        Ok(Line::Checkpoint { note }) => verifier
            .open_checkpoint(&note, verifier.name())
            .map_err(|e| err(n + 1, e.to_string()))?,
        Ok(Line::Entry(_) | Line::Incident(_)) => {
            return Err(err(n + 1, "the first line must be the checkpoint".into()));
        }
        Err(e) => return Err(err(n + 1, format!("not an export line: {e}"))),
    };
    let mut count = 0;
    let mut incident = None;
    let mut proven = std::collections::BTreeMap::new();
    for (n, line) in lines {
        let exported = match serde_json::from_str::<Line>(line) {
            Ok(Line::Entry(e)) => e,
            Ok(Line::Checkpoint { .. }) => return Err(err(n + 1, "a second checkpoint".into())),
            Ok(Line::Incident(i)) if incident.is_none() => {
                incident = Some((n + 1, i));
                continue;
            }
            Ok(Line::Incident(_)) => return Err(err(n + 1, "a second incident".into())),
            Err(e) => return Err(err(n + 1, format!("not an export line: {e}"))),
        };
        let bytes = BASE64
            .decode(exported.entry.as_bytes())
            .map_err(|_| err(n + 1, "entry is not base64".into()))?;
        let entry = Entry::decode(&bytes).map_err(|e| err(n + 1, e.to_string()))?;
        let readable = ExportedEntry::new(&entry, &[]);
        let same = ExportedEntry { proof: Vec::new(), ..(*exported).clone() } == readable;
        if !same || entry.index != exported.index {
            return Err(err(n + 1, "the readable fields differ from the signed entry".into()));
        }
        let proof = exported
            .proof
            .iter()
            .map(|h| HEXLOWER.decode(h.as_bytes()).ok().and_then(|b| Hash::try_from(b).ok()))
            .collect::<Option<Vec<Hash>>>()
            .ok_or_else(|| err(n + 1, "proof hashes are not 32-byte hex".into()))?;
        verify_inclusion(
            &leaf_hash(&bytes),
            entry.index,
            checkpoint.size,
            &proof,
            &checkpoint.root,
        )
        .map_err(|e| {
            err(n + 1, format!("entry {} is not in the checkpointed log: {e}", entry.index))
        })?;
        proven.insert(entry.index, readable);
        count += 1;
    }
    let incident = match incident {
        Some((line, i)) => {
            check_incident(&i, &proven).map_err(|problem| err(line, problem))?;
            Some(*i)
        }
        None => None,
    };
    Ok(VerifiedExport { checkpoint, entries: count, incident })
}

/// Checks an incident's timeline against the proven entries, by index.
fn check_incident(
    incident: &Incident,
    proven: &std::collections::BTreeMap<u64, ExportedEntry>,
) -> Result<(), String> {
    let mut used = std::collections::BTreeSet::new();
    for (n, event) in incident.timeline.iter().enumerate() {
        let what = &event.what;
        let entry = proven.get(&event.entry).ok_or_else(|| {
            format!(
                "timeline event {} ({what}) names entry {}, not in the file",
                n + 1,
                event.entry
            )
        })?;
        if entry.at != event.at || !entry.names(&incident.id) {
            return Err(format!(
                "timeline event {} ({what}) is not what entry {} records",
                n + 1,
                event.entry
            ));
        }
        if !used.insert(event.entry) {
            return Err(format!("entry {} backs two timeline events", event.entry));
        }
    }
    let first = incident
        .timeline
        .first()
        .and_then(|e| proven.get(&e.entry))
        .ok_or("the incident has no timeline")?;
    let raised = format!("{}:{}:", incident.id, incident.kind);
    if !first.reason.as_deref().is_some_and(|r| r.starts_with(&raised)) {
        return Err(format!("the log does not say the alert was a {}", incident.kind));
    }
    Ok(())
}

/// Escapes one CSV cell (RFC 4180 quoting) and defuses spreadsheet formulas: a cell starting
/// with `=`, `+`, `-`, `@`, tab or carriage return gets a leading apostrophe (ASVS 1.2.10).
pub fn csv_cell(value: &str) -> String {
    let defused = if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{value}")
    } else {
        value.to_owned()
    };
    if defused.contains([',', '"', '\n', '\r']) || defused != value {
        format!("\"{}\"", defused.replace('"', "\"\""))
    } else {
        defused
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::NoteSigner;
    use crate::merkle::{Frontier, inclusion_proof};
    use custody_crypto::sign::SigningKey;

    fn entry(index: u64, action: &str) -> Entry {
        Entry {
            index,
            at_ms: 1_893_456_000_000 + i64::try_from(index).unwrap(),
            actor_kind: "system".into(),
            actor_id: None,
            action: action.into(),
            site: None,
            bank: None,
            compartment: None,
            parcel: Some("prc_x".into()),
            outcome: "success".into(),
            reason: None,
            sealed: None,
            evidence: vec![],
        }
    }

    fn export(entries: &[Entry], pick: &[usize]) -> (String, NoteVerifier) {
        let leaves: Vec<Hash> = entries.iter().map(Entry::leaf_hash).collect();
        let mut f = Frontier::new();
        for l in &leaves {
            f.push(*l);
        }
        let (key, _) = SigningKey::generate(&custody_crypto::Rng::new()).unwrap();
        let signer = NoteSigner::new("test/custody-audit", key).unwrap();
        let c = Checkpoint {
            origin: "test/custody-audit".into(),
            size: f.size(),
            root: f.root(),
            extensions: vec![],
        };
        let mut out =
            serde_json::to_string(&Line::Checkpoint { note: signer.sign_checkpoint(&c).unwrap() })
                .unwrap();
        for &i in pick {
            let proof =
                inclusion_proof(&mut &leaves[..], u64::try_from(i).unwrap(), f.size()).unwrap();
            out.push('\n');
            out.push_str(
                &serde_json::to_string(&Line::Entry(Box::new(ExportedEntry::new(
                    &entries[i],
                    &proof,
                ))))
                .unwrap(),
            );
        }
        (out, NoteVerifier::parse(&signer.verifier_key()).unwrap())
    }

    #[test]
    fn exports_verify_and_edits_are_caught_by_line() {
        let entries: Vec<Entry> = (0..13).map(|i| entry(i, "parcel.deposit")).collect();
        let (text, verifier) = export(&entries, &[2, 7, 12]);
        assert_eq!(verify_export(&text, &verifier).unwrap().entries, 3);
        // A readable field edited (the outcome, the time): caught.
        let edited = text.replacen("\"outcome\":\"success\"", "\"outcome\":\"failure\"", 1);
        assert_eq!(verify_export(&edited, &verifier).unwrap_err().line, 2);
        let redated = text.replacen("2030-01-01T00:00:00.002Z", "2030-01-02T00:00:00.002Z", 1);
        assert_ne!(redated, text);
        assert_eq!(verify_export(&redated, &verifier).unwrap_err().line, 2);
        // An entry swapped for one that is not in the log: caught.
        let foreign = serde_json::to_string(&Line::Entry(Box::new(ExportedEntry::new(
            &entry(7, "parcel.pick_up"),
            &[],
        ))))
        .unwrap();
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        lines[2] = foreign;
        assert_eq!(verify_export(&lines.join("\n"), &verifier).unwrap_err().line, 3);
        // Another key's checkpoint: refused.
        let (other, _) = export(&entries, &[1]);
        assert_eq!(verify_export(&other, &verifier).unwrap_err().line, 1);
        assert!(verify_export("", &verifier).is_err());
    }

    #[test]
    fn sealed_data_is_named_by_subject_and_never_in_clear() {
        let mut entries: Vec<Entry> = (0..5).map(|i| entry(i, "parcel.retrieve")).collect();
        entries[3].sealed = Some(crate::entry::Sealed {
            subject: "per_ann".into(),
            ciphertext: b"opaque ciphertext".to_vec(),
        });
        let (text, verifier) = export(&entries, &[3]);
        assert_eq!(verify_export(&text, &verifier).unwrap().entries, 1);
        assert!(text.contains("\"sealed_subject\":\"per_ann\""));
        assert!(!text.contains("opaque ciphertext"), "the sealed bytes only travel inside entry");
        // Someone else's name put on the sealed data: caught.
        let moved = text.replacen("per_ann", "per_bob", 1);
        assert_eq!(verify_export(&moved, &verifier).unwrap_err().line, 2);
    }

    #[test]
    fn an_incidents_timeline_must_be_what_the_log_records() {
        let mut entries: Vec<Entry> = (0..9).map(|i| entry(i, "alert.raise")).collect();
        entries[2].reason = Some("alr_1:pry:raised".into());
        entries[4].reason = Some("alert:alr_1:pry".into());
        entries[6].reason = Some("alr_1:pry".into());
        entries[7].reason = Some("alr_2:drill:raised".into());
        let (text, verifier) = export(&entries, &[2, 4, 6, 7]);
        let event = |i: usize, what: &str| IncidentEvent {
            at: rfc3339(entries[i].at_ms),
            who: "system".into(),
            what: what.into(),
            entry: u64::try_from(i).unwrap(),
        };
        let incident = |kind: &str, timeline: Vec<IncidentEvent>| {
            let line = Line::Incident(Box::new(Incident {
                id: "alr_1".into(),
                kind: kind.into(),
                severity: "critical".into(),
                state: "resolved".into(),
                site: "sit_1".into(),
                bank: Some("bnk_1".into()),
                compartment: Some(3),
                owner: None,
                readings: 1,
                raised_at: rfc3339(entries[2].at_ms),
                timeline,
            }));
            let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
            lines.insert(1, serde_json::to_string(&line).unwrap());
            lines.join("\n")
        };
        let good = vec![event(2, "raised"), event(4, "locked_down"), event(6, "resolved")];
        let checked = verify_export(&incident("pry", good.clone()), &verifier).unwrap();
        assert_eq!(checked.entries, 4);
        assert_eq!(checked.incident.unwrap().timeline.len(), 3);

        let refused = |text: String| verify_export(&text, &verifier).unwrap_err();
        // Called something else than the log says it was.
        assert_eq!(refused(incident("impact", good.clone())).line, 2);
        // An event the file does not back, or another alert's entry, or a moved time.
        let mut missing = good.clone();
        missing[1].entry = 5;
        assert!(refused(incident("pry", missing)).problem.contains("not in the file"));
        let mut foreign = good.clone();
        foreign[2] = event(7, "resolved");
        assert!(refused(incident("pry", foreign)).problem.contains("not what entry 7 records"));
        let mut moved = good.clone();
        moved[2].at = rfc3339(entries[6].at_ms + 60_000);
        assert!(refused(incident("pry", moved)).problem.contains("not what entry 6"));
        // One entry backing two events; no timeline at all; two incidents in one file.
        let mut twice = good.clone();
        twice.push(event(6, "note"));
        assert!(refused(incident("pry", twice)).problem.contains("backs two"));
        assert!(refused(incident("pry", Vec::new())).problem.contains("no timeline"));
        let doubled = incident("pry", good);
        let second = doubled.lines().nth(1).unwrap().to_owned();
        assert!(refused(format!("{doubled}\n{second}")).problem.contains("a second incident"));
    }

    #[test]
    fn csv_cells_are_quoted_and_formulas_defused() {
        assert_eq!(csv_cell("plain"), "plain");
        assert_eq!(csv_cell("a,b"), "\"a,b\"");
        assert_eq!(csv_cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_cell("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        for risky in ["+1", "-1", "@SUM(A1)", "\tx", "\rx"] {
            assert!(csv_cell(risky).starts_with("\"'"), "{risky}");
        }
    }
}
