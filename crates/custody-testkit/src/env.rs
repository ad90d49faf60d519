//! A seeded site on a fresh store, ready for a story: one organisation, one site, one bank with
//! six compartments and an enrolled device, a carrier with an API key, and one person of each
//! role.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use custody_app::compartments::Compartment;
use custody_app::compartments::CompartmentSpec;
use custody_app::factors::Proof;
use custody_app::parcels::ParcelSpec;
use custody_app::people::NewPerson;
use custody_app::people::Person;
use custody_app::people::principal_of;
use custody_app::sessions::Client;
use custody_app::setup::DataDir;
use custody_app::{App, AppConfig, Caller};
use custody_core::compartment::SizeClass;
use custody_core::person::Role;
use custody_core::{BankId, CarrierId, Clock as _, ManualClock, OrgId, ParcelId, PersonId, SiteId};
use custody_crypto::Rng;
use custody_crypto::password::PasswordCost;
use custody_crypto::pki::first_cert_der;
use custody_crypto::pki::{DeviceKey, certificate_info};
use custody_crypto::totp::{STEP_SECONDS, TotpSeed, step_at};
use custody_proto::device::DoorReading;
use futures_util::FutureExt as _;
use webauthn_authenticator_rs::WebauthnAuthenticator as _;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_rs::prelude::{CreationChallengeResponse, RequestChallengeResponse, Url};
use zeroize::Zeroizing;

use crate::TestStore;

/// The password every seeded person has.
pub const PASSWORD: &str = "correct horse battery staple";

/// A seeded site and the handles a test needs.
#[derive(Debug)]
pub struct Env {
    /// The application under test.
    pub app: App,
    /// Its clock.
    pub clock: ManualClock,
    /// The organisation.
    pub org: OrgId,
    /// The site.
    pub site: SiteId,
    /// The bank.
    pub bank: BankId,
    /// Its compartments 1–6: small, small (accessible), medium, medium, large, extra large
    /// (refrigerated).
    pub compartments: Vec<Compartment>,
    /// The carrier.
    pub carrier: CarrierId,
    /// The carrier's API key token.
    pub carrier_token: Zeroizing<String>,
    /// Super-admin of the organisation.
    pub super_admin: Person,
    /// Admin of the site.
    pub admin: Person,
    /// Auditor of the organisation.
    pub auditor: Person,
    /// A courier of the carrier.
    pub courier: Person,
    /// Two residents of the site.
    pub ann: Person,
    /// The other resident.
    pub bob: Person,
    /// The bank's enrolled device as a caller.
    pub device: Caller,
    /// The test store (kept alive with the app).
    pub store: TestStore,
    /// The data directory with keys and certificates.
    pub data: DataDir,
    /// Authenticator apps of the seeded staff whose role needs a second factor, with the last
    /// step each one's code was used for.
    totp: HashMap<PersonId, (TotpSeed, Mutex<u64>)>,
    /// Passkeys (software authenticators) of the seeded super-admin.
    passkeys: HashMap<PersonId, Authenticator>,
    _keys: tempfile::TempDir,
}

/// Where the seeding signs in from.
fn seeding_client() -> Client {
    Client::new("192.0.2.250", "custody-testkit")
}

impl Env {
    /// Seeds a site on `store`.
    pub async fn new(store: TestStore) -> Self {
        Self::with_public_url(store, AppConfig::default().public_url).await
    }

    /// Seeds a site on `store` for a server whose portal is at `public_url`.
    pub async fn with_public_url(store: TestStore, public_url: String) -> Self {
        Self::with_config(store, AppConfig { public_url, ..AppConfig::default() }).await
    }

    /// Seeds a site on `store` for an application configured as `config` (notifications go
    /// to files whatever it says).
    pub async fn with_config(store: TestStore, config: AppConfig) -> Self {
        Self::with_clock(store, config, crate::clock()).await
    }

    /// As [`Env::with_config`], on `clock`: one set to the wall clock's time, for a test that
    /// runs the `custody` binary, whose agent reads the system clock.
    pub async fn with_clock(store: TestStore, config: AppConfig, clock: ManualClock) -> Self {
        let keys_dir = tempfile::tempdir().expect("key directory");
        let data = DataDir::new(keys_dir.path());
        data.init(&["localhost".into()], None, &clock, &Rng::new()).expect("init keys");
        let keys = data.load_keys().expect("load keys");
        // Seeding hashes a password per person: tests hash at the least Argon2id allows, which
        // only a debug build offers (a release build of the harness hashes as production does).
        #[cfg(debug_assertions)]
        let config = AppConfig { password_cost: PasswordCost::Test, ..config };
        let config = AppConfig { notification_channel: "file".into(), ..config };
        let app =
            App::new(store.store.clone(), Arc::new(clock.clone()), keys, config).expect("app");
        let op = Caller::Operator;
        let org = app.create_org(&op, "Acme Living").await.expect("org").id;
        let site = app
            .create_site(&op, &org, "Harbour House", "Europe/Berlin", None)
            .await
            .expect("site")
            .id;
        let bank = app.create_bank(&op, &site, "Lobby").await.expect("bank").id;
        let spec = |number, size, accessible, refrigerated| CompartmentSpec {
            number,
            size,
            accessible,
            refrigerated,
        };
        let compartments = app
            .add_compartments(
                &op,
                &bank,
                &[
                    spec(1, SizeClass::Small, false, false),
                    spec(2, SizeClass::Small, true, false),
                    spec(3, SizeClass::Medium, false, false),
                    spec(4, SizeClass::Medium, false, false),
                    spec(5, SizeClass::Large, false, false),
                    spec(6, SizeClass::ExtraLarge, false, true),
                ],
            )
            .await
            .expect("compartments");
        let carrier = app.create_carrier(&op, &org, "Parcelco").await.expect("carrier").id;
        let carrier_token = app
            .issue_api_key(&op, &carrier, std::slice::from_ref(&site), "Parcelco depot", "seeding")
            .await
            .expect("key")
            .token;
        let add = |email: &'static str,
                   name: &'static str,
                   role,
                   site: Option<&SiteId>,
                   carrier: Option<&CarrierId>| {
            add_person(&app, &org, email, name, role, site.cloned(), carrier.cloned())
        };
        let super_admin = add("root@acme.example", "Sam Super", Role::SuperAdmin, None, None).await;
        let admin = add("admin@acme.example", "Ada Admin", Role::Admin, Some(&site), None).await;
        let auditor = add("audit@acme.example", "Abe Auditor", Role::Auditor, None, None).await;
        let courier =
            add("carl@parcelco.example", "Carl Courier", Role::Courier, None, Some(&carrier)).await;
        let ann =
            add("ann@harbour.example", "Ann Resident", Role::Resident, Some(&site), None).await;
        let bob =
            add("bob@harbour.example", "Bob Resident", Role::Resident, Some(&site), None).await;
        let device = enrol_device(&app, &bank).await;
        let (mut totp, mut passkeys) = (HashMap::new(), HashMap::new());
        for person in [&super_admin, &admin] {
            let (seed, step, token) = enrol_totp(&app, &clock, person).await;
            totp.insert(person.id.clone(), (seed, Mutex::new(step)));
            if person.role == Role::SuperAdmin {
                // A super-admin signs in with a passkey; their app proves it is them to add one.
                passkeys.insert(
                    person.id.clone(),
                    Authenticator(Mutex::new(enrol_passkey(&app, &token).await)),
                );
            } else {
                app.logout(&token).await.expect("sign out");
            }
        }
        Self {
            app,
            clock,
            org,
            site,
            bank,
            compartments,
            carrier,
            carrier_token,
            super_admin,
            admin,
            auditor,
            courier,
            ann,
            bob,
            device,
            store,
            data,
            totp,
            passkeys,
            _keys: keys_dir,
        }
    }

    /// A fresh code of `person`'s authenticator app, as they would read it off their phone.
    /// A code works once per 30-second step, so when this step's was used already the test
    /// clock moves on to the next step first.
    pub fn totp_code(&self, person: &Person) -> Zeroizing<String> {
        let (seed, last) = self.totp.get(&person.id).expect("a seeded person with an app");
        let mut last = last.lock().expect("lock");
        let mut step = step_at(self.clock.now().as_millis());
        if step <= *last {
            let wait = (*last + 1 - step) * STEP_SECONDS.unsigned_abs();
            self.clock.advance(std::time::Duration::from_secs(wait));
            step = step_at(self.clock.now().as_millis());
        }
        *last = step;
        seed.code_at(step)
    }

    /// Signs `person` in through the use cases, with their second factor where the role needs
    /// one; returns the session token.
    pub async fn sign_in(&self, person: &Person) -> Zeroizing<String> {
        let client = seeding_client();
        let session =
            self.app.login(person.email.as_str(), Zeroizing::new(PASSWORD.into()), &client).await;
        let session = session.expect("sign in");
        if !session.needs_second_factor {
            return session.token;
        }
        let info = self.app.session(&session.token).await.expect("session");
        if self.has_passkey(person) {
            let ceremony = self.app.begin_passkey_proof(&info).await.expect("passkey ceremony");
            let answer =
                self.passkey_answer(person, &ceremony.options, &self.app.config().public_url);
            let proven =
                self.app.prove_passkey(&session.token, &info, &ceremony.id, &answer, &client).await;
            return proven.expect("passkey").session.token;
        }
        let proof = Proof::Totp(self.totp_code(person));
        let proven = self.app.prove_second_factor(&session.token, &info, proof, &client).await;
        proven.expect("second factor").session.token
    }

    /// Whether the seeded `person` holds a (software) passkey: the super-admin does.
    pub fn has_passkey(&self, person: &Person) -> bool {
        self.passkeys.contains_key(&person.id)
    }

    /// `person`'s passkey answering a ceremony's request `options` (JSON) for the portal at
    /// `origin`: the answer as JSON.
    pub fn passkey_answer(&self, person: &Person, options: &str, origin: &str) -> String {
        let authenticator = self.passkeys.get(&person.id).expect("a seeded person with a passkey");
        let options: RequestChallengeResponse =
            serde_json::from_str(options).expect("request options");
        let origin = Url::parse(origin).expect("origin");
        let answer = authenticator
            .0
            .lock()
            .expect("lock")
            .do_authentication(origin, options)
            .expect("passkey answer");
        serde_json::to_string(&answer).expect("answer")
    }

    /// Delivers a small parcel for `email` (the carrier announces it, reserves, the door
    /// opens and closes, confirm, notify) and returns it with the code from the recipient's
    /// message.
    pub async fn delivered(&self, email: &str) -> (ParcelId, String) {
        let carrier = self.carrier().await;
        let parcel = self.announce(email, "1Z999AA10123456784", SizeClass::Small).await;
        let deposit =
            self.app.start_deposit(&carrier, &parcel.id, &self.bank).await.expect("reserved");
        let n = deposit.compartment.number.get();
        self.app.door_report(&self.device, n, DoorReading::Open).await.expect("door opened");
        self.app.door_report(&self.device, n, DoorReading::Closed).await.expect("door closed");
        self.app.confirm_deposit(&carrier, &parcel.id).await.expect("deposited");
        self.app.notify(&parcel.id).await.expect("notified");
        let code = self.code_sent_for(&parcel.id).await;
        (parcel.id, code)
    }

    /// Adds an organisation-wide person with the test password who sets up an authenticator
    /// app the way they would; returns them, the app's seed, and the session token in which
    /// they confirmed it (the clock's current step is used).
    pub async fn person_with_app(
        &self,
        email: &str,
        name: &str,
        role: Role,
    ) -> (Person, TotpSeed, Zeroizing<String>) {
        let person = add_person(&self.app, &self.org, email, name, role, None, None).await;
        let (seed, _, token) = enrol_totp(&self.app, &self.clock, &person).await;
        (person, seed, token)
    }

    /// The carrier announces a parcel of `size` for `email` at the site.
    pub async fn announce(
        &self,
        email: &str,
        tracking_ref: &str,
        size: SizeClass,
    ) -> custody_app::parcels::Parcel {
        let spec = ParcelSpec {
            site: self.site.clone(),
            carrier: self.carrier.clone(),
            recipient_email: email.into(),
            tracking_ref: tracking_ref.into(),
            size,
            accessible: false,
            refrigerated: false,
        };
        self.app.expect_parcel(&self.carrier().await, spec).await.expect("announced")
    }

    /// The pickup code in the last message queued for a parcel (as the recipient reads it).
    pub async fn code_sent_for(&self, parcel: &ParcelId) -> String {
        let message = self.last_message(parcel).await;
        let line =
            message.body.lines().find(|l| l.starts_with("Your pickup code: ")).expect("a code");
        line.trim_start_matches("Your pickup code: ").to_owned()
    }

    /// The QR pickup token in the last message queued for a parcel (the text its image
    /// carries).
    pub async fn qr_sent_for(&self, parcel: &ParcelId) -> String {
        self.last_message(parcel).await.qr.expect("a QR token")
    }

    async fn last_message(&self, parcel: &ParcelId) -> custody_app::outbox::Message {
        let id = parcel.clone();
        let rows = self
            .app
            .store()
            .read(move |tx| async move { tx.messages_for_parcel(&id).await }.boxed())
            .await
            .expect("messages");
        let last = rows.last().cloned().expect("a message");
        self.app.open_message(&last.into()).expect("readable")
    }

    /// The presence code `bank`'s kiosk shows now, as its agent computes it from the key in
    /// the welcome.
    pub fn presence_code(&self, bank: &BankId) -> String {
        let key = self.app.presence_key(bank).expect("presence key");
        let seed = data_encoding::BASE64.decode(key.0.as_bytes()).expect("base64");
        let seed = TotpSeed::from_bytes(&seed).expect("seed");
        seed.code_at(step_at(self.clock.now().as_millis())).to_string()
    }

    /// The whole audit log, oldest first: entries that belong to no site too (a device
    /// refused before it was known, say).
    pub async fn log(&self) -> Vec<custody_store::AuditRow> {
        self.app
            .store()
            .read(|tx| async move { tx.audit_from(0, 100_000).await }.boxed())
            .await
            .expect("the audit log")
    }

    /// The site's latest `limit` audit entries, newest first.
    pub async fn site_log(&self, limit: u32) -> Vec<custody_store::AuditRow> {
        let site = self.site.clone();
        self.app
            .store()
            .read(move |tx| async move { tx.audit_for_site(&site, limit).await }.boxed())
            .await
            .expect("the site's audit log")
    }

    /// Spends the bank's hourly budget for typed codes with wrong codes, waiting out the
    /// kiosk's five-minute windows as a patient attacker would.
    pub async fn spend_bank_hour(&self) {
        use custody_core::throttle::{BANK_PICKUP, KIOSK_PICKUP};
        for _ in 0..BANK_PICKUP.max_failures / KIOSK_PICKUP.max_failures {
            for _ in 0..KIOSK_PICKUP.max_failures {
                self.app.redeem_code(&self.device, "1 00000 00000").await.expect("an attempt");
            }
            self.clock.advance(KIOSK_PICKUP.window);
        }
    }

    /// The carrier, calling with its API key.
    pub async fn carrier(&self) -> Caller {
        self.app.authenticate_api_key(&self.carrier_token).await.expect("carrier key")
    }

    /// A seeded person as a caller, signed in with no second factor proven.
    pub fn as_person(person: &Person) -> Caller {
        Caller::Principal(principal_of(person, None))
    }

    /// A seeded person as a caller who proved a second factor just now (a step-up).
    pub fn stepped_up(&self, person: &Person) -> Caller {
        Caller::Principal(principal_of(person, Some(self.clock.now())))
    }
}

/// Adds a person with the seeded [`PASSWORD`].
async fn add_person(
    app: &App,
    org: &OrgId,
    email: &str,
    name: &str,
    role: Role,
    site: Option<SiteId>,
    carrier: Option<CarrierId>,
) -> Person {
    let new = NewPerson {
        org: org.clone(),
        email: email.into(),
        name: name.into(),
        role,
        site,
        carrier,
        password: Some(Zeroizing::new(PASSWORD.into())),
        reason: None,
    };
    app.create_person(&Caller::Operator, new).await.expect("seed person")
}

/// Sets up an authenticator app for `person` the way they would: sign in with the password,
/// begin, read the key off the page, confirm with the app's code. Returns the seed and the step
/// its code was used for.
async fn enrol_totp(
    app: &App,
    clock: &ManualClock,
    person: &Person,
) -> (TotpSeed, u64, Zeroizing<String>) {
    let client = seeding_client();
    let session = app
        .login(person.email.as_str(), Zeroizing::new(PASSWORD.into()), &client)
        .await
        .expect("staff sign in");
    let info = app.session(&session.token).await.expect("session");
    let enrolment = app.begin_totp(&info).await.expect("begin totp");
    let raw = data_encoding::BASE32_NOPAD.decode(enrolment.secret.as_bytes()).expect("base32");
    let seed = TotpSeed::from_bytes(&raw).expect("seed");
    let step = step_at(clock.now().as_millis());
    let proven = app
        .confirm_totp(&session.token, &info, &seed.code_at(step), &client)
        .await
        .expect("confirm");
    (seed, step, proven.session.token)
}

/// A software passkey authenticator, shared by a test's tasks.
struct Authenticator(Mutex<SoftPasskey>);

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Authenticator")
    }
}

/// Registers a software passkey for `person` in the session `token`, in which they just proved
/// a factor, the way they would at the portal.
async fn enrol_passkey(app: &App, token: &str) -> SoftPasskey {
    let mut authenticator = SoftPasskey::new(true);
    let info = app.session(token).await.expect("session");
    let ceremony = app.begin_passkey(&info).await.expect("begin passkey");
    let options: CreationChallengeResponse =
        serde_json::from_str(&ceremony.options).expect("creation options");
    let origin = Url::parse(&app.config().public_url).expect("public URL");
    let answer = authenticator.do_registration(origin, options).expect("registration");
    let answer = serde_json::to_string(&answer).expect("answer");
    let proven = app
        .finish_passkey(token, &info, &ceremony.id, &answer, &seeding_client())
        .await
        .expect("finish passkey");
    app.logout(&proven.session.token).await.expect("sign out");
    authenticator
}

/// Enrols a device for `bank` through the real enrolment path and returns it as a caller.
pub async fn enrol_device(app: &App, bank: &BankId) -> Caller {
    let token = app.create_enrolment_token(&Caller::Operator, bank).await.expect("enrolment token");
    let key = DeviceKey::generate().expect("device key");
    let enrolment = app.enrol(&token, &key.csr("agent").expect("csr")).await.expect("enrol");
    let info =
        certificate_info(&first_cert_der(&enrolment.certificate_pem).expect("pem")).expect("cert");
    app.authenticate_device(&info).await.expect("device caller")
}
