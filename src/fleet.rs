//! Following the change feed of a shared PostgreSQL store, so that a move made through
//! any node reaches this one within milliseconds.
//!
//! The follower keeps its own cursor (the last revision of the feed it applied), starts
//! from the snapshot the node loaded, and catches up from the cursor after every
//! notification, every reconnect, and every few seconds regardless — so a missed
//! notification, a dropped connection or a database restart only delays a change.
//! Applying is idempotent: each change carries the current state of its key.
//! The data plane never waits for any of this: it keeps serving the last known state.

use crate::routing::RoutingTable;
use crate::store::{postgres, Store};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// How often the follower catches up even without a notification.
pub const SAFETY_NET: Duration = Duration::from_secs(2);

/// Applies every change after the follower's cursor. Returns false when the store
/// could not be read.
pub async fn catch_up(store: &Store, table: &RoutingTable) -> bool {
    loop {
        let from = table.feed_revision();
        match store.changes_since(from).await {
            Ok((changes, last)) => {
                for c in &changes {
                    table.apply(c);
                }
                table.set_feed_revision(last);
                if last == from {
                    return true;
                }
            }
            Err(e) => {
                tracing::warn!(error.detail = %e, "catching up with the change feed failed");
                return false;
            }
        }
    }
}

/// Follows the feed until the task is dropped.
pub async fn follow(store: Store, table: Arc<RoutingTable>, url: String) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let (tx, mut rx) = mpsc::channel::<u64>(1024);
        match postgres::subscribe(&url, tx).await {
            Ok(connection) => {
                tokio::pin!(connection);
                backoff = Duration::from_millis(50);
                tracing::info!(
                    revision = table.feed_revision(),
                    "following the change feed"
                );
                catch_up(&store, &table).await;
                let mut tick = tokio::time::interval(SAFETY_NET);
                loop {
                    tokio::select! {
                        n = rx.recv() => {
                            let Some(rev) = n else { break };
                            // skip notifications already covered by an earlier catch-up
                            if rev > table.feed_revision() || rev == 0 {
                                while rx.try_recv().is_ok() {}
                                catch_up(&store, &table).await;
                            }
                        }
                        _ = tick.tick() => { catch_up(&store, &table).await; }
                        _ = &mut connection => break,
                    }
                }
                tracing::warn!("change feed connection lost; reconnecting");
            }
            Err(e) => {
                tracing::warn!(error.detail = %e, "cannot subscribe to the change feed");
                // keeps the store's health flag current while the database is away
                catch_up(&store, &table).await;
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}
