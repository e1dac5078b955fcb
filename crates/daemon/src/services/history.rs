//! The configuration's history: every record now or at an instant, the changes between two
//! instants, a record's history, and both logs (Configuration Log, Event Log), filtered and
//! paged.

use super::{App, Error, Input};
use crate::base::clock::{now_ms, parse_ms};
use eventlog::{JournalEntry, JournalQuery, Level};
use model::{PeerId, Record, RecordKind};
use projections::{ConfigLogEntry, ConfigLogQuery};
use std::collections::HashMap;

/// Rows per page when the client does not say.
pub const LOG_PAGE_DEFAULT: usize = 100;

/// Filters of both logs, as query parameters (the API and the web pages take the same ones).
pub use ::api::{LogOrigin, LogQuery};

/// What a Configuration Log row calls the peer where the change was made.
pub const THIS_PEER_NAME: &str = "this peer";

/// Names of the peers Configuration Log rows come from, by peer id in hex: this peer, and
/// each linked peer by its host name (a peer not linked now has only its id).
pub fn origin_names(app: &App) -> HashMap<String, String> {
    let mut names: HashMap<String, String> = app
        .cluster
        .status()
        .peers
        .into_iter()
        .filter_map(|line| match line.state {
            ::api::PeerState::Active { host_name, peer_id, .. } => Some((peer_id, host_name)),
            _ => None,
        })
        .collect();
    names.insert(app.writer.peer_id().to_hex(), THIS_PEER_NAME.to_owned());
    names
}

/// One page of a log: the rows and, when the page is full, the cursor for older rows.
pub struct Page<T> {
    pub entries: Vec<T>,
    pub next_before: Option<u64>,
}

impl<T> Page<T> {
    /// `next_before` is set only when the page is full, so a client knows whether older rows
    /// may exist.
    fn of(entries: Vec<T>, limit: usize, cursor: impl Fn(&T) -> u64) -> Page<T> {
        let next_before = if entries.len() == limit { entries.last().map(cursor) } else { None };
        Page { entries, next_before }
    }
}

/// An instant given as RFC 3339 or epoch milliseconds, in the query parameter `field`.
pub fn parse_time(field: &str, text: &str) -> Result<u64, Error> {
    parse_ms(text).ok_or_else(|| {
        Error::field(Input::Query, field, "must be RFC 3339 time or epoch milliseconds")
    })
}

/// A record kind by its name (`bridge_pool`) or its collection (`bridge-pools`).
pub fn parse_kind(text: &str) -> Result<RecordKind, Error> {
    RecordKind::from_name(text)
        .or_else(|| RecordKind::from_collection(text))
        .ok_or_else(|| Error::field(Input::Query, "kind", format!("{text:?} is not a record kind")))
}

/// Rows asked for, within bounds.
fn page_limit(limit: Option<usize>) -> usize {
    limit.unwrap_or(LOG_PAGE_DEFAULT).clamp(1, projections::LOG_PAGE_MAX)
}

/// Every record now, or as the log says it was at `at` (RFC 3339 or epoch milliseconds).
pub async fn config_records(app: &App, at: Option<&str>) -> Result<(u64, Vec<Record>), Error> {
    match at {
        None => {
            let records = app
                .readers
                .read(|conn| {
                    let mut records = Vec::new();
                    for &kind in RecordKind::ALL {
                        records.extend(projections::list(conn, kind)?);
                    }
                    Ok(records)
                })
                .await?;
            Ok((now_ms(), records))
        }
        Some(at) => {
            let at_ms = parse_time("at", at)?;
            let state = app.readers.read(move |conn| crate::store::state_at(conn, at_ms)).await?;
            Ok((at_ms, state.records().cloned().collect()))
        }
    }
}

/// What changed between `from` and `to` (default: now); the instants are in the answer.
pub async fn config_diff(
    app: &App,
    from: &str,
    to: Option<&str>,
) -> Result<(u64, u64, Vec<model::state::Change>), Error> {
    let from_ms = parse_time("from", from)?;
    let to_ms = match to {
        Some(to) => parse_time("to", to)?,
        None => now_ms(),
    };
    let changes = app
        .readers
        .read(move |conn| {
            let before = crate::store::state_at(conn, from_ms)?;
            let after = crate::store::state_at(conn, to_ms)?;
            Ok(before.diff(&after))
        })
        .await?;
    Ok((from_ms, to_ms, changes))
}

/// The Configuration Log's filter from query parameters: this peer's changes (`this_peer`)
/// unless the query asks for every peer's.
pub fn config_log_filter(query: LogQuery, this_peer: PeerId) -> Result<ConfigLogQuery, Error> {
    if query.level.is_some() || query.text.is_some() {
        return Err(Error::invalid(Input::Query, "level and text filter the Event Log only"));
    }
    let origin = match query.origin.unwrap_or_default() {
        LogOrigin::ThisPeer => Some(this_peer),
        LogOrigin::AllPeers => None,
    };
    Ok(ConfigLogQuery {
        origin,
        actor: query.actor,
        kind: query.kind.as_deref().map(parse_kind).transpose()?,
        name: query.name,
        since_ms: query.since.as_deref().map(|t| parse_time("since", t)).transpose()?,
        until_ms: query.until.as_deref().map(|t| parse_time("until", t)).transpose()?,
        before_position: query.before,
        limit: page_limit(query.limit),
    })
}

/// The history of one record (by collection or kind name), newest first.
pub fn record_history_filter(
    collection: &str,
    name: String,
    query: LogQuery,
) -> Result<ConfigLogQuery, Error> {
    Ok(ConfigLogQuery {
        kind: Some(parse_kind(collection)?),
        name: Some(name),
        before_position: query.before,
        limit: page_limit(query.limit),
        ..Default::default()
    })
}

/// One page of the Configuration Log.
pub async fn config_log(app: &App, filter: ConfigLogQuery) -> Result<Page<ConfigLogEntry>, Error> {
    let limit = filter.limit;
    let entries = app.readers.read(move |conn| Ok(projections::config_log(conn, &filter)?)).await?;
    Ok(Page::of(entries, limit, |entry| entry.position))
}

/// The Event Log's filter from query parameters.
pub fn journal_filter(query: LogQuery) -> Result<JournalQuery, Error> {
    if query.actor.is_some()
        || query.origin.is_some()
        || query.name.is_some()
        || query.since.is_some()
        || query.until.is_some()
    {
        return Err(Error::invalid(Input::Query, "the Event Log filters by level, kind and text"));
    }
    let level_min = match query.level.as_deref() {
        None => None,
        Some("info") => Some(Level::Info),
        Some("warning") => Some(Level::Warning),
        Some("error") => Some(Level::Error),
        Some(_) => {
            return Err(Error::field(Input::Query, "level", "must be info, warning or error"));
        }
    };
    Ok(JournalQuery {
        level_min,
        kind_prefix: query.kind,
        text: query.text,
        before_id: query.before,
        limit: page_limit(query.limit),
    })
}

/// One page of the Event Log.
pub async fn event_log(app: &App, filter: JournalQuery) -> Result<Page<JournalEntry>, Error> {
    let limit = filter.limit;
    let entries = app.readers.read(move |conn| Ok(eventlog::query_journal(conn, &filter)?)).await?;
    Ok(Page::of(entries, limit, |entry| entry.id))
}

/// Walks every hash chain of the event log on a reader (one consistent read); a broken chain is
/// reported in the answer, and only a failure to read is an error.
pub async fn verify_log(app: &App) -> Result<::api::LogVerification, Error> {
    let walked = app
        .readers
        .read(|conn| match eventlog::verify(conn) {
            Ok(report) => Ok(Ok(report)),
            Err(eventlog::Error::Corrupt { origin, stream, seq, reason }) => {
                Ok(Err(format!("{origin}/{stream:?}#{seq}: {reason}")))
            }
            Err(error) => Err(error.into()),
        })
        .await?;
    Ok(match walked {
        Ok(report) => ::api::LogVerification {
            intact: true,
            events: report.events,
            chains: report
                .heads
                .iter()
                .map(|((origin, stream), head)| ::api::ChainHead {
                    origin: origin.to_hex(),
                    stream: stream_name(*stream).to_owned(),
                    seq: head.seq,
                    hash: head.hash.to_hex(),
                })
                .collect(),
            problem: None,
        },
        Err(problem) => ::api::LogVerification {
            intact: false,
            events: 0,
            chains: Vec::new(),
            problem: Some(problem),
        },
    })
}

fn stream_name(stream: eventlog::Stream) -> &'static str {
    match stream {
        eventlog::Stream::Shared => "shared",
        eventlog::Stream::Local => "local",
    }
}
