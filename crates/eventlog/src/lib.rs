//! Append-only, hash-chained event log in SQLite (WIP).
