//! A VCS as the policy service sees it: polls each server's status path and marks it active
//! or failed, sends each call to Server 1, 2, 3 in order skipping failed ones (and trying the
//! next on no answer), and interprets the CPL it gets back; with no server left it applies its
//! Default CPL, as a search-rule policy service does.

use policy::cpl::Outcome;
use std::time::Duration;

/// What a VCS's search-rule policy service falls back to (its documented default).
pub const DEFAULT_CPL_STATUS: u16 = 504;
/// A real VCS waits 30 s per attempt; tests do not need to wait that long.
pub const ATTEMPT_TIMEOUT_MS: u64 = 5_000;

pub struct Vcs {
    /// Base URLs of Server 1, 2, 3 (`https://127.0.0.1:8443`).
    servers: Vec<String>,
    /// Why each server failed its last status poll (`None`: it passed, and it is active).
    failures: Vec<Option<String>>,
    user: String,
    password: String,
    /// One HTTP client per server (the same one, unless made by [`Vcs::through`]).
    http: Vec<reqwest::blocking::Client>,
}

/// One decision and which server gave it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub outcome: Outcome,
    /// Index of the server that answered; `None` when the Default CPL applied.
    pub server: Option<usize>,
}

impl Vcs {
    /// `ca_pem` must hold the CA of every server (concatenated PEM).
    pub fn new(
        servers: Vec<String>,
        user: &str,
        password: &str,
        ca_pem: &[u8],
    ) -> anyhow::Result<Vcs> {
        Vcs::with_attempt_timeout(servers, user, password, ca_pem, ATTEMPT_TIMEOUT_MS)
    }

    /// As [`Vcs::new`], waiting `attempt_timeout_ms` per attempt (a real VCS: 30 s).
    pub fn with_attempt_timeout(
        servers: Vec<String>,
        user: &str,
        password: &str,
        ca_pem: &[u8],
        attempt_timeout_ms: u64,
    ) -> anyhow::Result<Vcs> {
        let mut builder = reqwest::blocking::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .timeout(Duration::from_millis(attempt_timeout_ms));
        for certificate in reqwest::Certificate::from_pem_bundle(ca_pem)? {
            builder = builder.add_root_certificate(certificate);
        }
        let http = builder.build()?;
        Ok(Vcs::through(
            servers.into_iter().map(|server| (server, http.clone())).collect(),
            user,
            password,
        ))
    }

    /// Server 1, 2, 3 each reached through its own client (its own trusted CA, or its own
    /// name resolution: the appliances in VMs are all `localhost` to their certificates).
    pub fn through(
        servers: Vec<(String, reqwest::blocking::Client)>,
        user: &str,
        password: &str,
    ) -> Vcs {
        let failures = vec![None; servers.len()];
        let (servers, http) = servers.into_iter().unzip();
        let (user, password) = (user.to_owned(), password.to_owned());
        Vcs { servers, failures, user, password, http }
    }

    /// The 60-second status poll, done now: 2xx is active, anything else failed.
    pub fn poll_status(&mut self) -> Vec<bool> {
        for (index, server) in self.servers.iter().enumerate() {
            let answer = self.http[index]
                .get(format!("{server}/baton/policy/status"))
                .basic_auth(&self.user, Some(&self.password))
                .send();
            self.failures[index] = match answer {
                Ok(response) if response.status().is_success() => None,
                Ok(response) => {
                    let status = response.status();
                    Some(format!("{status}: {}", response.text().unwrap_or_default().trim()))
                }
                Err(error) => Some(format!("{error:#}")),
            };
        }
        self.failures.iter().map(Option::is_none).collect()
    }

    /// Why each server failed its last status poll (`None` for one that passed).
    pub fn poll_failures(&self) -> &[Option<String>] {
        &self.failures
    }

    /// A SIP INVITE to `alias`, as a search rule would ask about it.
    pub fn call(&self, alias: &str) -> Answer {
        self.call_from(alias, None)
    }

    /// A call from `caller` to `alias` that, once the policy service routed it, reaches the
    /// bridge it was routed to (`bridge`: the test knows which simulator that address is) and
    /// joins the conference there, as the VCS's proxying of the call would. Panics when the
    /// bridge has no such conference.
    pub fn place_call(&self, alias: &str, caller: &str, bridge: &crate::SimBridge) -> Answer {
        let answer = self.call_from(alias, Some(caller));
        let Outcome::Route { urls } = &answer.outcome else { return answer };
        let target = bridges::BridgeTarget {
            kind: bridges::BridgeKind::Mcu,
            base_url: format!("http://{}", bridge.address),
            username: crate::SIM_BRIDGE_USER.to_owned(),
            password: crate::SIM_BRIDGE_PASSWORD.to_owned(),
            pinned_sha256: None,
        };
        let params = bridges::xmlrpc::Struct::from([
            ("uri".to_owned(), bridges::xmlrpc::Value::from(urls[0].as_str())),
            ("caller".to_owned(), bridges::xmlrpc::Value::from(caller)),
        ]);
        let client = bridges::BridgeClient::new(ATTEMPT_TIMEOUT_MS, None).expect("bridge client");
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
        let joined = runtime.expect("runtime").block_on(client.call(&target, "sim.call", params));
        if let Err(error) = joined {
            panic!("the call routed to {urls:?} did not reach a conference there: {error}");
        }
        answer
    }

    fn call_from(&self, alias: &str, caller: Option<&str>) -> Answer {
        let encode = |text: &str| {
            text.replace('%', "%25").replace('@', "%40").replace('&', "%26").replace('+', "%2B")
        };
        let mut body = format!(
            "POLICY_TYPE=SEARCH&METHOD=INVITE&PROTOCOL=SIP&AUTHENTICATED=TRUE&DESTINATION_ALIAS={}\
             &GLOBAL_CALL-SERIAL_NUMBER=00000000-0000-0000-0000-000000000001&SOURCE_IP=127.0.0.9",
            encode(alias)
        );
        if let Some(caller) = caller {
            body.push_str(&format!("&SOURCE_ALIAS={}", encode(caller)));
        }
        for (index, server) in self.servers.iter().enumerate() {
            if self.failures[index].is_some() {
                continue;
            }
            let response = self.http[index]
                .post(format!("{server}/baton/policy"))
                .basic_auth(&self.user, Some(&self.password))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body.clone())
                .send();
            let Ok(response) = response else { continue };
            if response.status() != reqwest::StatusCode::OK {
                continue;
            }
            let Ok(text) = response.text() else { continue };
            let outcome = policy::cpl::interpret(&text).unwrap_or_else(|error| {
                panic!("server {index} answered CPL the VCS refuses: {error}\n{text}")
            });
            return Answer { outcome, server: Some(index) };
        }
        Answer {
            outcome: Outcome::Reject {
                status: DEFAULT_CPL_STATUS,
                reason: "Policy Service Unavailable".to_owned(),
            },
            server: None,
        }
    }
}
