//! Which client worker the current thread is.
//!
//! Each client worker is one thread with its own runtime. What a request counts —
//! open requests, route counters, latency histograms — goes to its worker's own shard
//! (a cache line no other worker writes), and the shards are summed when scraped: no
//! memory is written by every request of every worker. Threads that are not workers
//! (the admin listener, tests) share one extra shard.

use std::cell::Cell;

thread_local! {
    static WORKER: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// Declares which worker the current thread is (0-based).
pub fn set(index: usize) {
    WORKER.with(|w| w.set(index));
}

/// The current thread's worker index, if it is a worker.
pub fn index() -> Option<usize> {
    match WORKER.try_with(|w| w.get()) {
        Ok(usize::MAX) | Err(_) => None,
        Ok(i) => Some(i),
    }
}

/// The shard this thread writes among `shards` (at least 1): its worker's, or the
/// last one for every other thread (and for workers beyond the count).
pub fn shard(shards: usize) -> usize {
    let last = shards.saturating_sub(1);
    index().map_or(last, |i| i.min(last))
}

#[cfg(test)]
mod tests {
    #[test]
    fn workers_get_their_own_shard_and_others_share_the_last() {
        std::thread::spawn(|| {
            assert_eq!(super::index(), None);
            assert_eq!(super::shard(3), 2);
            super::set(1);
            assert_eq!(super::index(), Some(1));
            assert_eq!(super::shard(3), 1);
            super::set(7);
            assert_eq!(super::shard(3), 2);
            assert_eq!(super::shard(0), 0);
        })
        .join()
        .unwrap();
    }
}
