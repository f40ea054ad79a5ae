//! Following the change feed of a shared PostgreSQL store, so that a move made through
//! any node reaches this one within milliseconds.
//!
//! The follower keeps its own cursor (the last revision of the feed it applied), starts
//! from the snapshot the node loaded, and catches up from the cursor after every
//! notification, every reconnect, and every few seconds regardless — so a missed
//! notification, a dropped connection or a database restart only delays a change.
//! Applying is idempotent: each change carries the current state of its key.
//! The data plane never waits for any of this: it keeps serving the last known state.
//!
//! The feed is pruned to `[fleet] feed_retention_s`; a node whose cursor fell below
//! what is left (it was stopped or cut off for longer) reloads the whole state, which
//! is what it does at start anyway. `switchyard_store_apply_lag_seconds` observes,
//! for every change applied from the feed, the time since its commit on the node
//! that made it (node clocks: keep them synchronised).

use crate::routing::RoutingTable;
use crate::store::{postgres, FeedRead, Store};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// How often the follower catches up even without a notification.
pub const SAFETY_NET: Duration = Duration::from_secs(2);

/// Applies every change after the follower's cursor, observing each one's apply lag;
/// a cursor the feed no longer reaches (its events were pruned) reloads the whole
/// state instead. Returns false when the store could not be read.
pub async fn catch_up(store: &Store, table: &RoutingTable) -> bool {
    loop {
        let from = table.feed_revision();
        match store.changes_since(from).await {
            Ok(FeedRead::Changes {
                changes,
                last,
                committed_at,
            }) => {
                for c in &changes {
                    table.apply(c);
                }
                let now = crate::domain::now_ms();
                for at in committed_at {
                    let lag = u64::try_from(now.saturating_sub(at)).unwrap_or(0);
                    table.metrics().apply_lag.record(Duration::from_millis(lag));
                }
                table.set_feed_revision(last);
                if last == from {
                    return true;
                }
            }
            Ok(FeedRead::Pruned { floor }) => {
                tracing::warn!(
                    cursor = from,
                    feed.floor = floor,
                    "this node fell behind the change feed's retention; reloading the whole state"
                );
                match store.snapshot().await {
                    Ok(snap) => {
                        for c in &snap.changes {
                            table.apply(c);
                        }
                        table.set_feed_revision(snap.revision.max(floor));
                    }
                    Err(e) => {
                        tracing::warn!(error.detail = %e, "reloading the state failed");
                        return false;
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error.detail = %e, "catching up with the change feed failed");
                return false;
            }
        }
    }
}

/// Drops the feed's events older than `retention`, every `retention / 2` (between 1 s
/// and 60 s). Every node runs it; deleting what another node already deleted is a
/// no-op.
pub async fn prune(store: Store, retention: Duration) {
    let every = (retention / 2).clamp(Duration::from_secs(1), Duration::from_secs(60));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match store.prune_feed(retention).await {
            Ok(floor) => tracing::debug!(feed.floor = floor, "change feed pruned"),
            Err(e) => tracing::debug!(error.detail = %e, "pruning the change feed failed"),
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
