//! `custody admin`: the operator's commands, run with the data directory in hand. Every change
//! is audited with the actor `operator`.

use std::io::BufRead as _;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use custody_app::Caller;
use custody_app::compartments::CompartmentSpec;
use custody_app::people::NewPerson;
use custody_app::setup::KekHome;
use custody_core::compartment::SizeClass;
use custody_core::person::Role;
use custody_core::{BankId, CarrierId, OrgId, PersonId, SiteId};
use custody_crypto::SystemClock;
use futures_util::FutureExt as _;
use zeroize::Zeroizing;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Create an organisation (a tenant).
    CreateOrg {
        /// Its name.
        name: String,
    },
    /// Create a site of an organisation.
    CreateSite {
        /// The organisation's id.
        #[arg(long)]
        org: String,
        /// IANA time zone.
        #[arg(long, default_value = "UTC")]
        time_zone: String,
        /// Pickup window in hours (default 168, seven days).
        #[arg(long)]
        pickup_window_hours: Option<u64>,
        /// Its name.
        name: String,
    },
    /// Create a locker bank at a site.
    CreateBank {
        /// The site's id.
        #[arg(long)]
        site: String,
        /// Its name.
        name: String,
    },
    /// Add compartments to a bank.
    AddCompartments {
        /// The bank's id.
        #[arg(long)]
        bank: String,
        /// Numbers, such as `1-12` or `1,2,5-8`.
        #[arg(long)]
        numbers: String,
        /// small, medium, large or `extra_large`.
        #[arg(long, default_value = "medium")]
        size: String,
        /// At accessible height.
        #[arg(long)]
        accessible: bool,
        /// Refrigerated.
        #[arg(long)]
        refrigerated: bool,
    },
    /// Register a carrier with an organisation.
    CreateCarrier {
        /// The organisation's id.
        #[arg(long)]
        org: String,
        /// Its name.
        name: String,
    },
    /// Issue an API key for a carrier (shown once).
    IssueApiKey {
        /// The carrier's id.
        #[arg(long)]
        carrier: String,
        /// Sites it may deliver to (repeat the flag).
        #[arg(long = "site", required = true)]
        sites: Vec<String>,
        /// What to call it.
        #[arg(long, default_value = "API key")]
        label: String,
        /// Why (people must say; the operator may).
        #[arg(long, default_value = "issued by the operator")]
        reason: String,
    },
    /// Add a person. The password is read from standard input with --password-stdin.
    AddPerson {
        /// The organisation's id.
        #[arg(long)]
        org: String,
        /// E-mail address (their login).
        #[arg(long)]
        email: String,
        /// Display name.
        #[arg(long)]
        name: String,
        /// resident, courier, auditor, admin or `super_admin`.
        #[arg(long)]
        role: String,
        /// Limit the role to this site (required for residents).
        #[arg(long)]
        site: Option<String>,
        /// For couriers, their carrier.
        #[arg(long)]
        carrier: Option<String>,
        /// Read an initial password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Issue a single-use enrolment token for a bank's agent (shown once).
    EnrolmentToken {
        /// The bank's id.
        #[arg(long)]
        bank: String,
    },
    /// Erase everything personal held about a person (GDPR Art. 17): their own key is
    /// destroyed, so what was sealed under it can never be read again; their account row is
    /// cleared and disabled, their badges revoked. The log's bytes do not change and it still
    /// verifies.
    ErasePersonalData {
        /// The person's id.
        person: String,
    },
    /// Print everything held about a person (GDPR Art. 15 and 20) as the API's JSON document
    /// (`custody-personal-data/1`), to answer a request they made to the site. Audited.
    ExportPersonalData {
        /// The person's id.
        person: String,
    },
    /// Print the record of processing (GDPR Art. 30) as Markdown: every table and column,
    /// what it holds and how it is protected, and each site's retention.
    RecordOfProcessing,
    /// List organisations, their sites and banks.
    List,
    /// Rotate the key-encryption key: make a new one, name it current, and re-wrap every
    /// person's data key under it, with progress. Safe to stop at any point; `--resume`
    /// carries on under the key now current without making another. Audited. A server
    /// already running refuses to wrap new keys under the key it started with until it is
    /// restarted.
    RotateKeys {
        /// Carry on a rotation that stopped, under the current key.
        #[arg(long, conflicts_with = "to")]
        resume: bool,
        /// Where to make the new key: `pkcs11` (the token keys/pkcs11.toml names; the default
        /// when that file exists) or `file` (a kek-<id>.key in the key directory; the default
        /// otherwise).
        #[arg(long, value_enum)]
        to: Option<KekHomeArg>,
    },
    /// Retire the key-encryption keys nothing needs any more: delete each KEK (a file, or a
    /// key on the PKCS#11 token) that is not current and that no stored key names (after
    /// `rotate-keys` moved them all). Audited.
    RetireKeks,
}

/// Where `rotate-keys` makes the new key.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum KekHomeArg {
    /// A file in the key directory.
    File,
    /// The PKCS#11 token keys/pkcs11.toml names.
    Pkcs11,
}

fn id<T: std::str::FromStr>(s: &str, what: &str) -> anyhow::Result<T>
where
    T::Err: std::fmt::Display,
{
    s.parse::<T>().map_err(|e| anyhow::anyhow!("--{what}: {e}"))
}

pub(crate) async fn run(
    data: &Path,
    url: Option<&str>,
    command: Command,
) -> anyhow::Result<ExitCode> {
    if let Command::RotateKeys { resume: false, to } = command {
        new_kek(data, to)?;
    }
    let (app, _, _) = crate::serve::app_for(data, url, Arc::new(SystemClock)).await?;
    let op = Caller::Operator;
    match command {
        Command::CreateOrg { name } => println!("{}", app.create_org(&op, &name).await?.id),
        Command::CreateSite { org, time_zone, pickup_window_hours, name } => {
            let window =
                pickup_window_hours.map(|h| std::time::Duration::from_secs(h.saturating_mul(3600)));
            println!(
                "{}",
                app.create_site(&op, &id::<OrgId>(&org, "org")?, &name, &time_zone, window)
                    .await?
                    .id
            );
        }
        Command::CreateBank { site, name } => {
            println!("{}", app.create_bank(&op, &id::<SiteId>(&site, "site")?, &name).await?.id);
        }
        Command::AddCompartments { bank, numbers, size, accessible, refrigerated } => {
            let size = SizeClass::parse(&size)
                .context("--size must be small, medium, large or extra_large")?;
            let specs: Vec<_> = custody_agent::cli::parse_numbers(&numbers)?
                .into_iter()
                .map(|number| CompartmentSpec { number, size, accessible, refrigerated })
                .collect();
            let rows = app.add_compartments(&op, &id::<BankId>(&bank, "bank")?, &specs).await?;
            println!("added {} compartments", rows.len());
        }
        Command::CreateCarrier { org, name } => {
            println!("{}", app.create_carrier(&op, &id::<OrgId>(&org, "org")?, &name).await?.id);
        }
        Command::IssueApiKey { carrier, sites, label, reason } => {
            let sites = sites
                .iter()
                .map(|s| id::<SiteId>(s, "site"))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let issued = app
                .issue_api_key(&op, &id::<CarrierId>(&carrier, "carrier")?, &sites, &label, &reason)
                .await?;
            println!("{}", issued.token.as_str());
            eprintln!("Shown once: give it to the carrier; it is stored only as a keyed hash.");
        }
        Command::AddPerson { org, email, name, role, site, carrier, password_stdin } => {
            let role = Role::parse(&role)
                .context("--role must be resident, courier, auditor, admin or super_admin")?;
            let password = if password_stdin {
                let mut line = String::new();
                std::io::stdin().lock().read_line(&mut line)?;
                Some(Zeroizing::new(line.trim_end_matches(['\r', '\n']).to_owned()))
            } else {
                None
            };
            let new = NewPerson {
                org: id(&org, "org")?,
                email,
                name,
                role,
                site: site.as_deref().map(|s| id(s, "site")).transpose()?,
                carrier: carrier.as_deref().map(|c| id(c, "carrier")).transpose()?,
                password,
                reason: None,
            };
            println!("{}", app.create_person(&op, new).await?.id);
        }
        Command::EnrolmentToken { bank } => {
            let token = app.create_enrolment_token(&op, &id::<BankId>(&bank, "bank")?).await?;
            println!("{}", token.as_str());
            eprintln!(
                "Single use, valid for 24 hours. Pass it to `custody agent enrol` through CUSTODY_ENROLMENT_TOKEN or standard input."
            );
        }
        Command::ErasePersonalData { person } => {
            let person = id::<PersonId>(&person, "person")?;
            if app.erase_personal_data(&op, &person).await? {
                println!(
                    "erased: nothing personal about {person} can be read any more (their key is \
                     destroyed, their account row cleared and disabled); the audit log still \
                     verifies"
                );
            } else {
                println!("{person} had been erased already; nothing changed");
            }
        }
        Command::ExportPersonalData { person } => {
            let data = app.personal_data(&op, &id::<PersonId>(&person, "person")?).await?;
            let document =
                custody_server::api::people::personal_data_document(app.now(), &op, &data, None);
            println!("{}", serde_json::to_string_pretty(&document)?);
        }
        Command::RecordOfProcessing => record_of_processing(&app).await?,
        Command::List => list(&app).await?,
        Command::RotateKeys { .. } => rotate_keys(&app).await?,
        Command::RetireKeks => retire_keks(&app, data).await?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Makes a new key-encryption key where `to` says (by default on the token when one is
/// configured) and names it current, before the application loads its keys.
fn new_kek(data: &Path, to: Option<KekHomeArg>) -> anyhow::Result<()> {
    let dir = custody_app::setup::DataDir::new(data);
    let home = match to {
        None => dir.default_kek_home(),
        Some(KekHomeArg::File) => KekHome::File,
        Some(KekHomeArg::Pkcs11) => KekHome::Pkcs11,
    };
    let id = dir.rotate_kek(home, &custody_crypto::Rng::new())?;
    eprintln!("new key-encryption key {id}, now current");
    Ok(())
}

/// Re-wraps every person's data key under the current key-encryption key, with a progress bar,
/// and says what each KEK wraps afterwards.
async fn rotate_keys(app: &custody_app::App) -> anyhow::Result<()> {
    let bar = crate::progress::bar("re-wrapping {bar:40} {pos}/{len} keys ({eta} left)");
    let moved = app
        .rewrap_subject_keys(&Caller::Operator, 500, |moved, total| {
            bar.set_length(total);
            bar.set_position(moved);
        })
        .await?;
    bar.finish_and_clear();
    let current = app.current_kek();
    println!("re-wrapped {moved} keys under {current}");
    for (kek, n) in app.subject_keys_by_kek().await? {
        let note = if kek == current { " (current)" } else { "" };
        println!("  {kek}{note}: {n} keys");
    }
    Ok(())
}

/// Deletes the key-encryption keys nothing needs any more, and says what each KEK left wraps.
async fn retire_keks(app: &custody_app::App, data: &Path) -> anyhow::Result<()> {
    let dir = custody_app::setup::DataDir::new(data);
    let held = dir.held_keks()?;
    let retired = app
        .retire_keks(&Caller::Operator, held, move |id| {
            dir.remove_kek(id).map_err(|e| e.to_string())
        })
        .await?;
    if retired.is_empty() {
        println!("no key-encryption key to retire: each one is current or still in use");
    }
    for id in &retired {
        println!("retired {id}");
    }
    for (kek, n) in app.subject_keys_by_kek().await? {
        println!("  {kek}: {n} keys");
    }
    Ok(())
}

/// Prints the record of processing, then each site's retention as it stands.
async fn record_of_processing(app: &custody_app::App) -> anyhow::Result<()> {
    print!("{}", custody_store::inventory::record_of_processing());
    println!("\n## Each site's retention, in days\n");
    println!("| Site | Parcels | Sessions | Delivery records | Evidence |");
    println!("|---|---|---|---|---|");
    let orgs = app.store().read(|tx| async move { tx.orgs().await }.boxed()).await?;
    for org in orgs {
        let o = org.id.clone();
        let sites = app.store().read(move |tx| async move { tx.sites(&o).await }.boxed()).await?;
        for site in sites {
            let r = app.retention(&Caller::Operator, &site.id).await?;
            println!(
                "| {} ({}) | {} | {} | {} | {} |",
                site.name, site.id, r.parcel_days, r.session_days, r.delivery_days, r.evidence_days
            );
        }
    }
    Ok(())
}

/// Prints every organisation with its sites and banks.
async fn list(app: &custody_app::App) -> anyhow::Result<()> {
    let orgs = app.store().read(|tx| async move { tx.orgs().await }.boxed()).await?;
    for org in orgs {
        println!("{} {}", org.id, org.name);
        let o = org.id.clone();
        let sites = app.store().read(move |tx| async move { tx.sites(&o).await }.boxed()).await?;
        for site in sites {
            println!("  {} {}", site.id, site.name);
            let s = site.id.clone();
            let banks =
                app.store().read(move |tx| async move { tx.banks(&s).await }.boxed()).await?;
            for bank in banks {
                let n = app.bank_compartment_numbers(&bank.id).await?.len();
                println!("    {} {} ({n} compartments)", bank.id, bank.name);
            }
        }
    }
    Ok(())
}
