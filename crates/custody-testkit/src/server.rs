//! A real server on loopback, port 0, with real TLS, over a seeded [`Env`].

use std::net::SocketAddr;
use std::sync::Arc;

use custody_app::people::Person;
use custody_server::workers::Workers;
use custody_server::{Listen, Running};
use reqwest::Client;

use crate::{Env, TestStore};

/// The bearer token the test server accepts at `/metrics`.
pub const METRICS_TOKEN: &str = "test-metrics-token-0123456789abcdef";

/// A server over a seeded site.
#[derive(Debug)]
pub struct TestServer {
    /// The seeded site and the app the server runs.
    pub env: Env,
    /// The running listeners.
    pub running: Running,
}

/// An agent enrolled through the real enrolment route and connected to the gateway, driving a
/// simulated bank.
#[derive(Debug)]
pub struct TestAgent {
    /// The running agent (kiosk input, screen, readiness), shared with a kiosk page if a test
    /// serves one.
    pub handle: Arc<custody_agent::daemon::AgentHandle>,
    /// The simulated doors.
    pub bank: custody_agent::hardware::SimulatedBank,
    /// Its enrolled identity.
    pub identity: custody_agent::enrol::AgentFile,
    /// Where it connects (the gateway, or a relay in front of it) and how long it bears the
    /// server's silence, kept across restarts.
    link: (String, std::time::Duration),
    dir: tempfile::TempDir,
}

impl TestAgent {
    /// The agent's directory (key, certificate, pins).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

/// A client signed in as a person, with the CSRF token of its session.
#[derive(Debug, Clone)]
pub struct SignedIn {
    /// The HTTP client (its cookie jar holds the session).
    pub client: Client,
    /// The session's CSRF token.
    pub csrf: String,
}

impl TestServer {
    /// Seeds a site on `store` and starts a server for it (no background workers; tests drive
    /// the outbox and the sweeper themselves).
    pub async fn start(store: TestStore) -> Self {
        Self::start_on(Env::new(store).await, 0).await
    }

    /// A server whose public URL is its own address, as a browser sees it: for what binds to
    /// the origin (passkeys). The port is picked free first, then bound again by the server.
    pub async fn start_at_own_origin(store: TestStore) -> Self {
        let port = std::net::TcpListener::bind(("127.0.0.1", 0))
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let env = Env::with_public_url(store, format!("https://localhost:{port}")).await;
        Self::start_on(env, port).await
    }

    /// Starts a server for a site seeded already.
    pub async fn on(env: Env) -> Self {
        Self::start_on(env, 0).await
    }

    async fn start_on(env: Env, public_port: u16) -> Self {
        let (cert_pem, key_pem) = env.data.server_tls().expect("server tls");
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let listen = Listen {
            public: SocketAddr::from(([127, 0, 0, 1], public_port)),
            gateway: loopback,
            cert_pem,
            key_pem,
            trusted_proxies: Vec::new(),
        };
        let running = custody_server::start(
            env.app.clone(),
            listen,
            Arc::from(METRICS_TOKEN),
            Workers::default(),
        )
        .await
        .expect("start server");
        Self { env, running }
    }

    /// `https://localhost:PORT` of the public listener.
    pub fn base(&self) -> String {
        format!("https://localhost:{}", self.running.public.port())
    }

    /// A URL on the public listener.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base())
    }

    /// A client that trusts the server's CA, keeps cookies and speaks TLS 1.3 only.
    pub fn client(&self) -> Client {
        let ca = self.env.data.server_ca_pem().expect("ca");
        let trust = custody_crypto::tls::ServerTrust { ca_pem: ca, pins: Vec::new() };
        let tls = custody_crypto::tls::client_config(
            &trust,
            None,
            &[b"h2", b"http/1.1"],
            self.env.app.clock(),
        )
        .expect("tls");
        Client::builder()
            .use_preconfigured_tls(tls)
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .resolve("localhost", self.running.public)
            .build()
            .expect("client")
    }

    /// Enrols an agent for the seeded bank over HTTPS (token, CA, pin) and starts it against the
    /// gateway, with simulated doors 1–6. Waits until the server has welcomed it.
    pub async fn agent(&self) -> TestAgent {
        self.agent_with(|_| {}).await
    }

    /// Enrols an agent for the seeded bank over HTTPS (token, CA, pin) into `dir`, as
    /// `custody agent enrol` does.
    pub async fn enrol_agent(&self, dir: &std::path::Path) -> custody_agent::enrol::AgentFile {
        let token = self
            .env
            .app
            .create_enrolment_token(&custody_app::Caller::Operator, &self.env.bank)
            .await
            .expect("token");
        let (cert, _) = self.env.data.server_tls().expect("server tls");
        let pin = custody_crypto::pki::spki_pin_of_pem(&cert).expect("pin");
        let target = custody_agent::enrol::EnrolTarget {
            server_url: self.base(),
            server_ca_pem: self.env.data.server_ca_pem().expect("ca"),
            server_pin: data_encoding::HEXLOWER.encode(&pin),
        };
        custody_agent::enrol::enrol(dir, &target, &token, self.env.app.clock())
            .await
            .expect("enrol")
    }

    /// The gateway's address, for a relay in front of it.
    pub fn gateway(&self) -> SocketAddr {
        self.running.gateway
    }

    /// As [`TestServer::agent`], with its setup changed by `configure` before it starts (to
    /// connect through a relay, say).
    pub async fn agent_with(
        &self,
        configure: impl FnOnce(&mut custody_agent::enrol::AgentSetup),
    ) -> TestAgent {
        let dir = tempfile::tempdir().expect("agent dir");
        let identity = self.enrol_agent(dir.path()).await;
        let gateway = format!("localhost:{}", self.running.gateway.port());
        let mut setup =
            custody_agent::enrol::load(dir.path(), Some(&gateway), self.env.app.clock())
                .expect("load agent");
        configure(&mut setup);
        let link = (setup.link.gateway.clone(), setup.link.silent_after);
        let numbers: Vec<u16> = self.env.compartments.iter().map(|c| c.number.get()).collect();
        let (bank, sensors) = custody_agent::hardware::SimulatedBank::new(numbers);
        let handle = custody_agent::daemon::spawn(
            setup,
            Arc::new(bank.clone()),
            sensors,
            self.env.app.clock(),
        )
        .await
        .expect("the agent's journal");
        tokio::time::timeout(std::time::Duration::from_secs(20), handle.wait_ready())
            .await
            .expect("agent connected");
        TestAgent { handle: Arc::new(handle), bank, identity, link, dir }
    }

    /// Stops `agent` as a power cut would and starts it again from its directory, on the same
    /// doors: on its own journal, or on `journal` when given (one that cannot be written, say).
    /// Does not wait for the link.
    pub async fn restart_agent(
        &self,
        agent: &mut TestAgent,
        journal: Option<custody_agent::journal::Journal>,
    ) {
        agent.handle.stop();
        let mut setup =
            custody_agent::enrol::load(agent.dir(), Some(&agent.link.0), self.env.app.clock())
                .expect("load agent");
        setup.link.silent_after = agent.link.1;
        // The doors stay as they were; their sensors are not watched after a restart.
        let (_, sensors) = tokio::sync::mpsc::unbounded_channel();
        let (board, clock) = (Arc::new(agent.bank.clone()), self.env.app.clock());
        agent.handle = Arc::new(match journal {
            Some(journal) => custody_agent::daemon::spawn_on(
                setup,
                journal,
                custody_agent::journal::Restored::default(),
                board,
                sensors,
                clock,
            ),
            None => custody_agent::daemon::spawn(setup, board, sensors, clock)
                .await
                .expect("the agent's journal"),
        });
    }

    /// Today's kiosk code of the seeded courier, as the app reads it after signing in.
    pub async fn courier_code(&self) -> String {
        let courier = self.sign_in(&self.env.courier).await;
        let answer: serde_json::Value = courier
            .client
            .get(self.url("/api/v1/me/courier-code"))
            .send()
            .await
            .expect("courier code")
            .json()
            .await
            .expect("courier code body");
        answer["code"].as_str().expect("a code").to_owned()
    }

    /// Signs `person` in through the API.
    pub async fn sign_in(&self, person: &Person) -> SignedIn {
        let signed_in = self.sign_in_with_password(person).await;
        if !signed_in.1 {
            return signed_in.0;
        }
        self.prove_factor(person, signed_in.0).await
    }

    /// Proves `person`'s second factor in their session (the second step of signing in, or a
    /// step-up): their passkey when they hold one, else their authenticator app's code.
    pub async fn prove_factor(&self, person: &Person, session: SignedIn) -> SignedIn {
        let SignedIn { client, csrf } = session;
        let post = |path: &str, body: serde_json::Value| {
            client.post(self.url(path)).header("x-csrf-token", &csrf).json(&body).send()
        };
        let response = if self.env.has_passkey(person) {
            let begun: serde_json::Value =
                post("/api/v1/sessions/current/passkey/begin", serde_json::json!({}))
                    .await
                    .expect("passkey ceremony")
                    .json()
                    .await
                    .expect("ceremony body");
            let origin = self.env.app.config().public_url.clone();
            let answer = self.env.passkey_answer(person, &begun["options"].to_string(), &origin);
            let credential: serde_json::Value = serde_json::from_str(&answer).expect("answer");
            post(
                "/api/v1/sessions/current/passkey/finish",
                serde_json::json!({"ceremony": begun["ceremony"], "credential": credential}),
            )
            .await
            .expect("passkey")
        } else {
            let code = self.env.totp_code(person);
            post("/api/v1/sessions/current/factor", serde_json::json!({"totp": code.as_str()}))
                .await
                .expect("second factor")
        };
        assert_eq!(response.status(), 200, "second factor of {}", person.email);
        let body: serde_json::Value = response.json().await.expect("session body");
        let csrf = body["csrf_token"].as_str().expect("csrf token").to_owned();
        SignedIn { client, csrf }
    }

    /// Signs `person` in with the password alone; also says whether the session still needs
    /// a second factor.
    pub async fn sign_in_with_password(&self, person: &Person) -> (SignedIn, bool) {
        let client = self.client();
        let response = client
            .post(self.url("/api/v1/sessions"))
            .json(&serde_json::json!({"email": person.email.as_str(), "password": crate::env::PASSWORD}))
            .send()
            .await
            .expect("sign in");
        assert_eq!(response.status(), 200, "sign-in of {}", person.email);
        let body: serde_json::Value = response.json().await.expect("session body");
        let csrf = body["csrf_token"].as_str().expect("csrf token").to_owned();
        let pending = body["second_factor_required"].as_bool().expect("second_factor_required");
        (SignedIn { client, csrf }, pending)
    }
}
