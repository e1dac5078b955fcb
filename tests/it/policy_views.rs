//! The operator's window on the policy service against a real `batond` and simulated bridges
//! running as their own processes, with the VCS emulator checking every CPL: an explanation
//! (API, `batonctl`, web form) creates nothing anywhere and its CPL is what the real call then
//! gets; the live conferences list who joined through calls the VCS placed.

use crate::cluster::{Peer, wait_until};
use crate::policy::{WebSession, configure, names_on, vcs_for};
use baton_tests::{SimBridge, TEST_PASSWORD, binary, free_port};
use bridges::BridgeKind::{Mcu, TelepresenceServer};
use serde_json::Value;

/// What an explanation must leave as it was: each simulated bridge's conferences (asked of
/// the bridge itself), the Configuration Log's and the event log's positions.
#[derive(Debug, PartialEq)]
struct Untouched {
    on_bridges: Vec<Vec<String>>,
    configuration_log_newest: Value,
    log_position: Value,
}

fn untouched(peer: &Peer, sims: &[(&SimBridge, bridges::BridgeKind)]) -> Untouched {
    let configuration = peer.get("/api/v1/logs/configuration?limit=1").unwrap();
    Untouched {
        on_bridges: sims.iter().map(|(sim, kind)| names_on(sim, *kind)).collect(),
        configuration_log_newest: configuration["entries"][0]["position"].clone(),
        log_position: peer.get("/api/v1/status").unwrap()["log_position"].clone(),
    }
}

/// Event Log entries after `id`, apart from the logins every administrator request makes.
fn events_after(peer: &Peer, id: u64) -> Vec<String> {
    let page: api::Page<api::EventLogEntry> = peer.get_as("/api/v1/logs/events?limit=200").unwrap();
    page.entries
        .into_iter()
        .filter(|entry| entry.id > id && !entry.kind.starts_with("login."))
        .map(|entry| format!("{} {}", entry.kind, entry.message))
        .collect()
}

fn newest_event_id(peer: &Peer) -> u64 {
    let page: api::Page<api::EventLogEntry> = peer.get_as("/api/v1/logs/events?limit=1").unwrap();
    page.entries.first().map_or(0, |entry| entry.id)
}

fn explain(peer: &Peer, query: &str) -> api::Explanation {
    peer.get_as(&format!("/api/v1/policy/explain?{query}")).unwrap()
}

fn batonctl(peer: &Peer, args: &[&str]) -> String {
    let output = std::process::Command::new(binary("batonctl").unwrap())
        .args(["--url", &peer.daemon.url, "--ca"])
        .arg(peer.daemon.data_dir.join("tls/ca.pem"))
        .args(args)
        .env("BATON_PASSWORD", TEST_PASSWORD)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "batonctl {args:?}: {stderr}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The bridge with the wrong password is found down first, so its Event Log entry is not
/// taken for one of the explanation's.
fn locked_bridge_found_down(peer: &Peer) {
    wait_until("the locked bridge is found down", || {
        let status = peer.get("/api/v1/policy/status").unwrap();
        let locked = status["bridges"].as_array().unwrap().iter().find(|b| b["name"] == "locked");
        match locked {
            Some(line) if line["up"] == false => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
}

/// `batonctl policy explain` and the web form explain as the API does.
fn explained_through_batonctl_and_the_web(peer: &Peer) {
    let text = batonctl(peer, &["policy", "explain", "lecture.maths.guest@example.com"]);
    assert!(
        text.contains("decision: create conference lecture-maths on the first of [ts]"),
        "{text}"
    );
    assert!(text.contains("lecture-maths.guest@127.0.0.1"), "{text}");
    let browser = WebSession::signed_in(peer);
    let (status, html) = browser.page("/status/explain?alias=meet.zoe%40example.com&source=");
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("Create conference <b>zoe</b>"), "{html}");
    assert!(html.contains("zoe@127.0.0.1") && html.contains("id=\"cpl\""), "{html}");
    let (status, html) = browser.page("/status/explain?alias=+");
    assert_eq!(status, 400, "an empty alias is refused: {html}");
    assert!(html.contains("an alias is required"), "{html}");
}

/// A refusal explained (no alias; the only bridge down) is the refusal the VCS gets.
fn refusals_are_explained_as_the_vcs_gets_them(peer: &Peer, vcs: &baton_tests::vcs::Vcs) {
    let refused = explain(peer, "alias=nobody%40elsewhere.org");
    assert_eq!(
        vcs.call("nobody@elsewhere.org").outcome,
        policy::cpl::interpret(&refused.cpl).unwrap()
    );
    assert!(matches!(refused.decision, api::ExplainedDecision::Reject { status: 404, .. }));
    // So is a refusal for the only bridge being down, as this peer's health polls found it.
    let down = explain(peer, "alias=locked.room%40example.com");
    let locked = &down.pools[0].bridges[0];
    assert_eq!((locked.up, locked.verdict), (Some(false), api::policy::BridgeVerdict::Down));
    assert_eq!(
        vcs.call("locked.room@example.com").outcome,
        policy::cpl::interpret(&down.cpl).unwrap()
    );
    assert!(matches!(down.decision, api::ExplainedDecision::Reject { status: 502, .. }));
}

#[test]
fn an_explanation_creates_nothing_and_its_cpl_is_what_the_call_then_gets() {
    let mcu_full = SimBridge::start("mcu", &["--max-conferences", "1"]).unwrap();
    let mcu_spare = SimBridge::start("mcu", &[]).unwrap();
    let ts = SimBridge::start("telepresence-server", &[]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let peer = Peer::start(dir.path(), "127.0.0.1", free_port().unwrap(), &[]).unwrap();
    configure(&peer, &mcu_full, &mcu_spare, &ts);
    let mut vcs = vcs_for(&[&peer]);
    assert_eq!(vcs.poll_status(), [true]);
    locked_bridge_found_down(&peer);
    let sims = [(&mcu_full, Mcu), (&mcu_spare, Mcu), (&ts, TelepresenceServer)];
    let before = untouched(&peer, &sims);
    let first_event = newest_event_id(&peer);

    // Through the API: a conference to create, the bridges weighed, and the CPL.
    let explained = explain(&peer, "alias=meet.alice%40example.com&source=sip%3Abob%40example.com");
    assert_eq!(
        explained.decision,
        api::ExplainedDecision::Create {
            conference: "alice".to_owned(),
            candidates: vec!["mcu-full".to_owned(), "mcu-spare".to_owned()],
            url: "alice@127.0.0.1".to_owned(),
        }
    );
    assert_eq!(explained.source_alias.as_deref(), Some("sip:bob@example.com"));
    assert_eq!(explained.aliases.last().map(|alias| alias.name.as_str()), Some("meet"));
    let weighed: Vec<(&str, &str, Option<u32>, Option<bool>)> = explained
        .pools
        .iter()
        .flat_map(|pool| {
            pool.bridges.iter().map(|b| (pool.name.as_str(), b.name.as_str(), b.free_ports, b.up))
        })
        .collect();
    assert_eq!(
        weighed,
        [
            ("primary", "mcu-full", Some(100), Some(true)),
            ("overflow", "mcu-spare", Some(100), Some(true))
        ]
    );
    explained_through_batonctl_and_the_web(&peer);

    // Nothing was created on any bridge, nor recorded; no Event Log entry but logins.
    assert_eq!(untouched(&peer, &sims), before);
    assert_eq!(events_after(&peer, first_event), Vec::<String>::new());

    // The real call gets exactly the CPL explained, and now the conference is followed.
    let answer = vcs.place_call("meet.alice@example.com", "sip:bob@example.com", &mcu_full);
    assert_eq!(answer.outcome, policy::cpl::interpret(&explained.cpl).unwrap());
    assert_eq!(names_on(&mcu_full, Mcu), ["alice"]);
    let again = explain(&peer, "alias=MEET.ALICE%40example.com");
    assert_eq!(
        again.existing.map(|existing| existing.verdict),
        Some(api::policy::ExistingVerdict::Followed)
    );
    let answer = vcs.place_call("meet.alice@example.com", "sip:carol@example.com", &mcu_full);
    assert_eq!(answer.outcome, policy::cpl::interpret(&again.cpl).unwrap());
    refusals_are_explained_as_the_vcs_gets_them(&peer, &vcs);
}

#[test]
fn live_conferences_list_who_joined_through_the_vcs_on_each_bridge() {
    let mcu_full = SimBridge::start("mcu", &[]).unwrap();
    let mcu_spare = SimBridge::start("mcu", &[]).unwrap();
    let ts = SimBridge::start("telepresence-server", &[]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let peer = Peer::start(dir.path(), "127.0.0.1", free_port().unwrap(), &[]).unwrap();
    configure(&peer, &mcu_full, &mcu_spare, &ts);
    let mut vcs = vcs_for(&[&peer]);
    assert_eq!(vcs.poll_status(), [true]);
    for caller in ["sip:ann@example.com", "sip:ben@example.com"] {
        vcs.place_call("meet.alice@example.com", caller, &mcu_full);
    }
    vcs.place_call("lecture.maths@example.com", "sip:prof@example.com", &ts);
    vcs.place_call("lecture.maths.guest@example.com", "sip:student@example.com", &ts);

    let live: api::LiveConferences = peer.get_as("/api/v1/policy/live-conferences").unwrap();
    let on = |name: &str| live.bridges.iter().find(|bridge| bridge.bridge == name).unwrap();
    let alice = &on("mcu-full").conferences[0];
    assert_eq!((alice.name.as_str(), alice.participant_count, alice.recorded), ("alice", 2, true));
    let addresses: Vec<Option<&str>> =
        alice.participants.iter().map(|p| p.address.as_deref()).collect();
    assert_eq!(addresses, [Some("sip:ann@example.com"), Some("sip:ben@example.com")]);
    let lecture = &on("ts").conferences[0];
    let roles: Vec<(Option<&str>, Option<&str>)> =
        lecture.participants.iter().map(|p| (p.address.as_deref(), p.role.as_deref())).collect();
    assert_eq!(
        roles,
        [
            (Some("sip:prof@example.com"), Some("chair")),
            (Some("sip:student@example.com"), Some("guest"))
        ]
    );
    assert!(on("mcu-spare").conferences.is_empty());
    // The bridge Baton cannot log in to says why instead of listing nothing silently.
    assert!(on("locked").problem.is_some(), "{live:?}");

    let text = batonctl(&peer, &["conferences"]);
    let alice_line = text.lines().find(|line| line.starts_with("alice")).unwrap_or_default();
    assert!(alice_line.contains("mcu-full") && alice_line.contains(" 2 "), "{text}");
    assert!(alice_line.contains("sip:ben@example.com"), "{text}");
    let (status, html) = WebSession::signed_in(&peer).page("/status/live-conferences");
    assert_eq!(status, 200);
    assert!(html.contains("sip:student@example.com") && html.contains("guest"), "{html}");
}
