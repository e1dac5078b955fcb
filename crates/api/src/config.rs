//! The configuration and its history: the record collections (`/api/v1/<collection>[/<name>]`:
//! a list is `[Record]`, one record, a create (201) and an update answer `Record`, a delete is
//! 204), `GET /api/v1/config[?at=…]`, `GET /api/v1/config/diff?from=…[&to=…]`,
//! `GET /api/v1/history/<collection>/<name>`, `GET /api/v1/logs/configuration` and
//! `GET /api/v1/logs/events` ([`LogQuery`], answered by a [`Page`]).
//!
//! Records are [`model::Record`]: `{"kind": …, fields…}` with secrets redacted.

use crate::required;
use model::{Record, RecordKind};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The query of `GET /api/v1/config`.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AtQuery {
    /// RFC 3339 or epoch milliseconds; now when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
}

/// Every record, now or at `at`.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct ConfigAnswer {
    pub at: String,
    pub records: Vec<Record>,
}

/// The query of `GET /api/v1/config/diff`.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiffQuery {
    pub from: String,
    /// Now when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

/// What changed between two moments.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct ConfigDiff {
    pub from: String,
    pub to: String,
    pub changes: Vec<RecordChange>,
}

/// One record that differs: `before` is `null` for a record added, `after` for one removed.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct RecordChange {
    pub kind: RecordKind,
    pub name: String,
    #[serde(deserialize_with = "required")]
    pub before: Option<Record>,
    #[serde(deserialize_with = "required")]
    pub after: Option<Record>,
}

/// Filters of both logs, as query parameters (the web pages take the same ones). The
/// Configuration Log takes actor, kind, name, since, until and origin (this peer's changes
/// unless `all_peers`); the Event Log level, kind (a prefix) and text; both page with before
/// and limit; a record's history only pages (and holds every peer's changes).
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<LogOrigin>,
}

/// Whose changes the Configuration Log shows. The seed's log reports only this peer's
/// activity; the replicated history also holds what arrived from the other peers.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogOrigin {
    /// Changes made on this peer (the default).
    #[default]
    ThisPeer,
    /// Also the changes that arrived from the other peers.
    AllPeers,
}

impl LogOrigin {
    pub fn as_str(self) -> &'static str {
        match self {
            LogOrigin::ThisPeer => "this_peer",
            LogOrigin::AllPeers => "all_peers",
        }
    }
}

/// One page of a log, newest first. `next_before` is set only when the page is full: older
/// rows may exist, read them with `before=<next_before>`.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct Page<T> {
    pub entries: Vec<T>,
    #[serde(deserialize_with = "required")]
    pub next_before: Option<u64>,
}

/// One row of the Configuration Log (or of a record's history).
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct ConfigLogEntry {
    pub position: u64,
    pub at: String,
    /// The peer (id in hex) where the change was made.
    pub origin: String,
    /// That peer as this one names it: `this peer`, or the host name of a linked peer;
    /// absent for a peer not linked now (show `origin`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin_name: Option<String>,
    pub actor: String,
    /// `saved` or `removed`.
    pub action: String,
    /// The record kind's name (as [`RecordKind::as_str`]).
    pub kind: String,
    pub name: String,
    /// The record's fields before and after, without the `kind` tag. JSON, not [`Record`]:
    /// a version logged long ago may not read as today's record types.
    #[serde(deserialize_with = "required")]
    pub before: Option<Value>,
    #[serde(deserialize_with = "required")]
    pub after: Option<Value>,
}

/// One row of the Event Log.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct EventLogEntry {
    pub id: u64,
    pub at: String,
    pub level: LogLevel,
    /// Dotted, e.g. `login.failed`.
    pub kind: String,
    #[serde(deserialize_with = "required")]
    pub actor: Option<String>,
    pub message: String,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    Info,
    Warning,
    Error,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Info => "info",
            LogLevel::Warning => "warning",
            LogLevel::Error => "error",
        }
    }
}
