//! Transaction control through statements prepared once per connection. rusqlite's own
//! `savepoint()` and `execute_batch("BEGIN")` parse their SQL at every call, and a command's
//! group commit opens several (the group, each append, the projections' batch): parsing them
//! took about 5% of the writer's CPU under sustained writes.

use rusqlite::Connection;

/// Statements the writer's connection keeps prepared: the log's and the projections' (each a
/// handful) and the transaction control below, with room to spare, so none is evicted and
/// parsed again on the write path.
pub(crate) const PREPARED_STATEMENTS_CACHED: usize = 64;

/// Runs one cached statement that returns no rows.
pub(crate) fn run(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}

/// A savepoint, rolled back when dropped uncommitted (as rusqlite's); outside a transaction,
/// its commit is the transaction's.
pub struct Savepoint<'c> {
    conn: &'c Connection,
    released: bool,
}

impl<'c> Savepoint<'c> {
    pub fn begin(conn: &'c Connection) -> rusqlite::Result<Savepoint<'c>> {
        run(conn, "SAVEPOINT baton")?;
        Ok(Savepoint { conn, released: false })
    }

    /// Keeps what was written since [`Savepoint::begin`]; on error it is rolled back.
    pub fn commit(mut self) -> rusqlite::Result<()> {
        run(self.conn, "RELEASE baton")?;
        self.released = true;
        Ok(())
    }
}

impl Drop for Savepoint<'_> {
    fn drop(&mut self) {
        if !self.released {
            // An error means SQLite already rolled the transaction back (an I/O error).
            let _ = run(self.conn, "ROLLBACK TO baton");
            let _ = run(self.conn, "RELEASE baton");
        }
    }
}

impl std::ops::Deref for Savepoint<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.conn
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn rows(conn: &Connection) -> i64 {
        conn.query_row("SELECT count(*) FROM t", [], |row| row.get(0)).unwrap()
    }

    // Goal: a committed savepoint keeps its rows, a dropped one undoes only its own, nested
    // ones included, and outside a transaction a commit is durable on its own.
    #[test]
    fn a_savepoint_keeps_its_rows_only_when_committed() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (x INTEGER)").unwrap();
        let outer = Savepoint::begin(&conn).unwrap();
        outer.execute("INSERT INTO t VALUES (1)", []).unwrap();
        {
            let inner = Savepoint::begin(&conn).unwrap();
            inner.execute("INSERT INTO t VALUES (2)", []).unwrap();
        }
        assert_eq!(rows(&conn), 1, "the dropped inner savepoint undid only its row");
        let inner = Savepoint::begin(&conn).unwrap();
        inner.execute("INSERT INTO t VALUES (3)", []).unwrap();
        inner.commit().unwrap();
        outer.commit().unwrap();
        assert!(conn.is_autocommit(), "the outermost commit ended the transaction");
        assert_eq!(rows(&conn), 2);
        {
            let dropped = Savepoint::begin(&conn).unwrap();
            dropped.execute("INSERT INTO t VALUES (4)", []).unwrap();
        }
        assert!(conn.is_autocommit());
        assert_eq!(rows(&conn), 2);
    }
}
