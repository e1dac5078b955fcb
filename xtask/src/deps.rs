//! Dependency-direction check, run as a test: our crates may depend on each other only along
//! the allowed layering, and the synchronous core (model, eventlog, projections) stays off tokio.

use crate::{cargo, workspace_root};
use serde_json::Value;
use std::collections::BTreeSet;

/// Each of our crates and the only crates of ours it may depend on (any kind: normal, dev, build).
const ALLOWED: &[(&str, &[&str])] = &[
    ("model", &[]),
    // The admin API's contract, shared by the daemon, batonctl and the tests.
    ("api", &["model"]),
    ("eventlog", &["model"]),
    ("projections", &["model", "eventlog"]),
    ("replication", &["model", "eventlog"]),
    ("peering", &["model"]),
    ("policy", &["model"]),
    ("backup", &["model", "eventlog"]),
    ("bridges", &["model"]),
    ("upgrade", &["model"]),
    ("platform", &["model"]),
    (
        "daemon",
        &[
            "api",
            "model",
            "eventlog",
            "projections",
            "replication",
            "peering",
            "policy",
            "bridges",
            "upgrade",
            "backup",
            "platform",
        ],
    ),
    ("ctl", &["api", "model", "eventlog", "backup", "upgrade"]),
];

/// Workspace members outside the layering (they may depend on any of our crates).
const UNCONSTRAINED: &[&str] = &["xtask", "baton-tests"];

/// Crates that must not depend on tokio directly.
const NO_TOKIO: &[&str] = &[
    "api",
    "model",
    "eventlog",
    "projections",
    "replication",
    "backup",
    "policy",
    "upgrade",
    "platform",
];

#[test]
fn dependencies_follow_the_layering() {
    let problems = violations(&cargo_metadata());
    assert!(
        problems.is_empty(),
        "dependency-direction violations ({}):\n  {}\n",
        problems.len(),
        problems.join("\n  ")
    );
}

/// Every breach of the layering in `cargo metadata --no-deps` output.
fn violations(metadata: &Value) -> Vec<String> {
    let packages = metadata["packages"].as_array().expect("cargo metadata: `packages` is an array");
    let ours: BTreeSet<&str> =
        packages.iter().filter_map(|package| package["name"].as_str()).collect();

    let mut problems = Vec::new();
    for name in &ours {
        if !UNCONSTRAINED.contains(name)
            && !ALLOWED.iter().any(|(crate_name, _)| crate_name == name)
        {
            problems.push(format!(
                "workspace crate `{name}` has no entry in the dependency table (ALLOWED in xtask/src/deps.rs); \
                 add one saying which of our crates it may depend on"
            ));
        }
    }
    for (name, _) in ALLOWED {
        if !ours.contains(name) {
            problems.push(format!(
                "`{name}` is in the dependency table (xtask/src/deps.rs) but not in the workspace; \
                 was it renamed?"
            ));
        }
    }

    for package in packages {
        let Some(name) = package["name"].as_str() else { continue };
        let dependencies =
            package["dependencies"].as_array().map(Vec::as_slice).unwrap_or_default();
        if let Some((_, allowed)) = ALLOWED.iter().find(|(crate_name, _)| *crate_name == name) {
            for dependency in dependencies {
                let Some(target) = dependency["name"].as_str() else { continue };
                if ours.contains(target) && !allowed.contains(&target) {
                    problems.push(format!(
                        "`{name}` depends on `{target}` ({}), but {name} may only depend on {}",
                        kind(dependency),
                        describe(allowed)
                    ));
                }
            }
        }
        if NO_TOKIO.contains(&name) {
            for dependency in dependencies.iter().filter(|dependency| dependency["name"] == "tokio")
            {
                problems.push(format!(
                    "`{name}` depends on `tokio` ({}); the synchronous crates (NO_TOKIO) must not use tokio \
                     (async belongs in the daemon)",
                    kind(dependency)
                ));
            }
        }
    }
    problems
}

#[test]
fn violations_are_reported() {
    let package = |name: &str, dependencies: &[(&str, Option<&str>)]| {
        let dependencies: Vec<Value> = dependencies
            .iter()
            .map(|(name, kind)| serde_json::json!({ "name": name, "kind": kind }))
            .collect();
        serde_json::json!({ "name": name, "dependencies": dependencies })
    };
    let metadata = serde_json::json!({ "packages": [
        package("model", &[("serde", None), ("tokio", Some("dev"))]),
        package("api", &[("model", None), ("serde", None), ("eventlog", None)]),
        package("eventlog", &[("model", None), ("projections", Some("dev"))]),
        package("projections", &[("model", None), ("eventlog", None)]),
        package("replication", &[("model", None), ("eventlog", None)]),
        package("peering", &[("model", None)]),
        package("policy", &[("model", None)]),
        package("backup", &[("model", None), ("eventlog", None), ("projections", None)]),
        package("bridges", &[("model", None), ("tokio", None), ("eventlog", Some("dev"))]),
        package("upgrade", &[("model", None), ("eventlog", None), ("tokio", Some("dev"))]),
        package("platform", &[("model", None), ("daemon", None)]),
        package("daemon", &[("model", None), ("eventlog", None), ("projections", None), ("tokio", None)]),
        package("ctl", &[("model", None), ("daemon", None), ("projections", None)]),
        package("baton-tests", &[("daemon", None), ("eventlog", None)]),
        package("xtask", &[]),
        package("extra", &[]),
    ]});
    let problems = violations(&metadata);
    let expected = [
        "workspace crate `extra` has no entry",
        "`model` depends on `tokio` (dev dependency)",
        "`eventlog` depends on `projections` (dev dependency), but eventlog may only depend on `model`",
        "`backup` depends on `projections` (normal dependency), but backup may only depend on `model`, `eventlog`",
        "`bridges` depends on `eventlog` (dev dependency), but bridges may only depend on `model`",
        "`upgrade` depends on `eventlog` (normal dependency), but upgrade may only depend on `model`",
        "`upgrade` depends on `tokio` (dev dependency)",
        "`platform` depends on `daemon` (normal dependency), but platform may only depend on `model`",
        "`api` depends on `eventlog` (normal dependency), but api may only depend on `model`",
        "`ctl` depends on `daemon` (normal dependency), but ctl may only depend on `api`, `model`",
        "`ctl` depends on `projections` (normal dependency), but ctl may only depend on `api`, `model`",
    ];
    for expected in expected {
        assert!(
            problems.iter().any(|problem| problem.starts_with(expected)),
            "missing {expected:?} in {problems:#?}"
        );
    }
    assert_eq!(problems.len(), expected.len(), "{problems:#?}");
}

fn cargo_metadata() -> Value {
    let output = cargo(&["metadata", "--format-version", "1", "--no-deps"])
        .output()
        .expect("could not run `cargo metadata`");
    assert!(
        output.status.success(),
        "`cargo metadata --format-version 1 --no-deps` in {} failed ({}):\n{}",
        workspace_root().display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("`cargo metadata` printed invalid JSON")
}

fn kind(dependency: &Value) -> String {
    let kind = dependency["kind"].as_str().unwrap_or("normal");
    format!("{kind} dependency")
}

fn describe(allowed: &[&str]) -> String {
    if allowed.is_empty() {
        "none of our crates".to_owned()
    } else {
        allowed.iter().map(|name| format!("`{name}`")).collect::<Vec<_>>().join(", ")
    }
}
