//! Expiry of the adapter's bookkeeping: the records that make retries idempotent are needed
//! only while a retry can still come, so they are deleted once older than [`KEEP`]:
//!
//! - `a/sent/<event ID>`: what a send produced, for the core's retry of the same event (the
//!   event ID carries its time);
//! - `a/submitted/<digest>` (value: the acceptance time): submissions the hub accepted, for a
//!   follower resubmitting after a lost answer;
//! - `n/<digest>` (value: when recorded): notify bodies processed, for a hub retrying after a
//!   lost 201;
//! - `a/kpref/<reference>` (value: the owner's domain, a newline, when relayed): KeyPackages the
//!   hub relayed, for forwarding the Welcome of the commit that uses one (which follows the
//!   relay within seconds: the joiner's provider asks for key material to add someone now).
//!
//! Retries come within minutes (backoff capped well below an hour); a week is a wide margin.
//! Entries without a readable time are left alone. Hosted files go with their message, or
//! after `hosted_files_days` (`assets::expire_hosted`, run with this); the decryption details
//! of received ones are kept (messages refer to them).

use std::time::Duration;

use bridge_core::{AdapterStore, EventId, StoreError};

/// How long the records are kept.
pub(crate) const KEEP: Duration = Duration::from_secs(7 * 24 * 3600);
/// How often the adapter prunes.
pub(crate) const EVERY: Duration = Duration::from_secs(3600);
/// Entries read per page.
const PAGE: usize = 512;

/// Deletes the records older than `now_ms - KEEP`; returns how many.
pub(crate) fn prune(store: &AdapterStore, now_ms: u64) -> Result<usize, StoreError> {
    let cutoff = now_ms.saturating_sub(u64::try_from(KEEP.as_millis()).unwrap_or(u64::MAX));
    let by_event_id = |key: &[u8]| {
        std::str::from_utf8(key)
            .ok()
            .and_then(|k| k.rsplit('/').next())
            .and_then(|id| id.parse::<EventId>().ok())
            .map(EventId::timestamp_ms)
    };
    // A time in ms since the epoch (older records of the notify dedupe hold "1": left alone).
    let by_value = |value: &[u8]| {
        std::str::from_utf8(value)
            .ok()?
            .parse::<u64>()
            .ok()
            .filter(|&ms| ms > 1_000_000_000_000)
    };
    let mut deleted = 0;
    deleted += prune_prefix(store, b"a/sent/", cutoff, |k, _| by_event_id(k))?;
    deleted += prune_prefix(store, b"a/submitted/", cutoff, |_, v| by_value(v))?;
    deleted += prune_prefix(store, b"n/", cutoff, |_, v| by_value(v))?;
    deleted += prune_prefix(store, b"a/kpref/", cutoff, |_, v| {
        let (_, at) = v.split_at(v.iter().position(|&b| b == b'\n')? + 1);
        by_value(at)
    })?;
    Ok(deleted)
}

fn prune_prefix(
    store: &AdapterStore,
    prefix: &[u8],
    cutoff: u64,
    time_of: impl Fn(&[u8], &[u8]) -> Option<u64>,
) -> Result<usize, StoreError> {
    let mut deleted = 0;
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = store.scan_after(prefix, after.as_deref(), PAGE)?;
        let Some((last, _)) = page.last() else {
            return Ok(deleted);
        };
        let last = last.clone();
        for (key, value) in &page {
            if time_of(key, value).is_some_and(|t| t < cutoff) {
                store.delete(key)?;
                deleted += 1;
            }
        }
        if page.len() < PAGE {
            return Ok(deleted);
        }
        after = Some(last);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn old_records_go_recent_and_unreadable_ones_stay() {
        let (core, store) = crate::adapter::memory_store().await;
        let now = 1_800_000_000_000u64;
        let day = 24 * 3600 * 1000;
        let at = |ms: u64, n: u128| EventId::from_u128((u128::from(ms) << 80) | n);
        let old_event = at(now - 8 * day, 1);
        let new_event = at(now - day, 2);
        for (key, value) in [
            (format!("a/sent/{old_event}"), "x".to_owned()),
            (format!("a/sent/{new_event}"), "x".to_owned()),
            ("a/submitted/aa".to_owned(), (now - 9 * day).to_string()),
            ("a/submitted/bb".to_owned(), (now - 2 * day).to_string()),
            ("n/cc".to_owned(), (now - 30 * day).to_string()),
            ("n/dd".to_owned(), "1".to_owned()),
            ("a/asset/ee".to_owned(), "kept".to_owned()),
            (
                "a/kpref/ff".to_owned(),
                format!("follower.example\n{}", now - 8 * day),
            ),
            (
                "a/kpref/f0".to_owned(),
                format!("follower.example\n{}", now - day),
            ),
            // Written before records carried a time: left alone.
            ("a/kpref/f1".to_owned(), "follower.example".to_owned()),
        ] {
            store.put(key.as_bytes(), value.as_bytes()).expect("put");
        }
        assert_eq!(prune(&store, now).expect("prune"), 4);
        let left: Vec<String> = store
            .scan(b"", 100)
            .expect("scan")
            .into_iter()
            .map(|(k, _)| String::from_utf8_lossy(&k).into_owned())
            .collect();
        assert_eq!(
            left,
            vec![
                "a/asset/ee".to_owned(),
                "a/kpref/f0".to_owned(),
                "a/kpref/f1".to_owned(),
                format!("a/sent/{new_event}"),
                "a/submitted/bb".to_owned(),
                "n/dd".to_owned(),
            ]
        );
        core.shutdown().await;
    }
}
