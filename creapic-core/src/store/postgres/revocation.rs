//! Key revocation across replicas: deletions are announced with PostgreSQL's `NOTIFY` in the
//! deleting transaction, and every replica's [`RevocationListener`] (`LISTEN`) drops the key from
//! its verification cache as soon as the delete commits.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnection, PgListener, PgPoolOptions};

use crate::error::Result;
use crate::id::KeyId;
use crate::key::ApiKey;
use crate::service::Creapic;
use crate::store::Store;
use crate::store::postgres::{PgStore, map_error};

/// The channel key deletions are announced on; the payload is the key id.
pub const REVOCATION_CHANNEL: &str = "creapic_key_revoked";
/// How long the revocation listener waits before reconnecting after an error.
const LISTENER_RETRY_DELAY: Duration = Duration::from_secs(1);

/// Announces `key`'s deletion, delivered to every listener when (and only if) the deleting
/// transaction commits.
pub(crate) async fn announce(conn: &mut PgConnection, key: &ApiKey) -> Result<()> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(REVOCATION_CHANNEL)
        .bind(key.id.to_string())
        .execute(conn)
        .await
        .map_err(map_error)?;
    Ok(())
}

impl PgStore {
    /// Starts listening for key deletions made by any process on this database and calls
    /// `on_revoke` for each: [`Revocation::Key`] for a deleted key, [`Revocation::All`] when the
    /// listening connection was lost and notifications may have been missed. Returns once the
    /// listener is subscribed; it runs until the returned guard is shut down or dropped.
    pub async fn spawn_revocation_listener<F>(&self, on_revoke: F) -> Result<RevocationListener>
    where
        F: Fn(Revocation) + Send + Sync + 'static,
    {
        // A pool of one, used by the listener only to reconnect: it never takes a connection
        // from the store's pool.
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(self.acquire_timeout)
            .connect_lazy_with(self.connect_options.clone());
        let mut listener = PgListener::connect_with(&pool).await.map_err(map_error)?;
        listener.ignore_pool_close_event(true);
        listener
            .listen(REVOCATION_CHANNEL)
            .await
            .map_err(map_error)?;
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    next = listener.try_recv() => match next {
                        Ok(Some(n)) => match KeyId::parse(n.payload()) {
                            Ok(key) => on_revoke(Revocation::Key(key)),
                            Err(_) => on_revoke(Revocation::All),
                        },
                        // The connection dropped; the next call reconnects and listens again.
                        // Whatever was announced meanwhile is lost: forget everything.
                        Ok(None) => on_revoke(Revocation::All),
                        Err(_) => {
                            on_revoke(Revocation::All);
                            tokio::time::sleep(LISTENER_RETRY_DELAY).await;
                        }
                    },
                }
            }
        });
        Ok(RevocationListener {
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// [`PgStore::spawn_revocation_listener`] wired to a service's verification cache:
    /// deletions anywhere call `forget_key`, a lost connection calls `forget_all`.
    pub async fn spawn_revocation_listener_for<S: Store + ?Sized>(
        &self,
        core: Arc<Creapic<S>>,
    ) -> Result<RevocationListener> {
        self.spawn_revocation_listener(move |r| match r {
            Revocation::Key(key) => core.authenticator().forget_key(key),
            Revocation::All => core.authenticator().forget_all(),
        })
        .await
    }
}

/// What a revocation listener reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revocation {
    /// This key was deleted: refuse it from now on.
    Key(KeyId),
    /// Deletions may have been missed: drop every cached verification.
    All,
}

/// The running revocation listener. Dropping it (or calling [`RevocationListener::shutdown`])
/// stops the background task and closes its connection.
#[derive(Debug)]
pub struct RevocationListener {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl RevocationListener {
    /// Stops the listener and waits for its task to end.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for RevocationListener {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
