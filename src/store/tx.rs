//! A write transaction, and on SQLite the process's turn to write.
//!
//! SQLite has one writer at a time. When two connections of one process both
//! ask for the write lock (`BEGIN IMMEDIATE`), the loser does not queue: it
//! sleeps in SQLite's busy handler (1, 2, 5, 10 ms … up to `busy_timeout`) and
//! tries again. Under load that added ~10 ms to every claim and every result
//! batch of a daemon, for no work. So a SQLite write transaction first takes
//! its database file's turn, an async mutex shared by every pool of the
//! process that opens the same file: writers of one process wait on each
//! other in FIFO order and start the moment the previous one commits. Another
//! process (a CLI command beside the daemon) still meets the busy handler,
//! which is rare and correct. PostgreSQL writers run in parallel and take no
//! turn.

use std::ops::{Deref, DerefMut};
use tokio::sync::OwnedMutexGuard;

/// An open write transaction; dereferences to the connection it runs on.
/// Dropping it without [`commit`](Self::commit) rolls back, as sqlx does.
pub struct WriteTx<DB: sqlx::Database> {
    tx: sqlx::Transaction<'static, DB>,
    // Released after the transaction ends (fields drop in order).
    _turn: Option<OwnedMutexGuard<()>>,
}

impl<DB: sqlx::Database> WriteTx<DB> {
    /// Wrap a transaction, holding `turn` until it ends.
    pub(super) fn new(
        tx: sqlx::Transaction<'static, DB>,
        turn: Option<OwnedMutexGuard<()>>,
    ) -> Self {
        WriteTx { tx, _turn: turn }
    }

    /// Commit, then give the turn to the next writer.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }

    /// Roll back, then give the turn to the next writer.
    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        self.tx.rollback().await
    }
}

impl<DB: sqlx::Database> Deref for WriteTx<DB> {
    type Target = DB::Connection;
    fn deref(&self) -> &DB::Connection {
        &self.tx
    }
}

impl<DB: sqlx::Database> DerefMut for WriteTx<DB> {
    fn deref_mut(&mut self) -> &mut DB::Connection {
        &mut self.tx
    }
}

/// The write turn of a SQLite file, shared by every pool of this process that
/// opens it (keyed by the path as configured).
pub(super) fn sqlite_turn(file: &std::path::Path) -> std::sync::Arc<tokio::sync::Mutex<()>> {
    use std::collections::HashMap;
    use std::sync::{Arc, LazyLock, Mutex};
    static TURNS: LazyLock<Mutex<HashMap<std::path::PathBuf, Arc<tokio::sync::Mutex<()>>>>> =
        LazyLock::new(|| Mutex::new(HashMap::new()));
    let mut turns = TURNS.lock().unwrap_or_else(|p| p.into_inner());
    Arc::clone(turns.entry(file.to_path_buf()).or_default())
}
