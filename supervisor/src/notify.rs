//! The dispatcher: sends what the outbox holds (issue #14).
//!
//! Deliveries are queued in the record store in the same transaction as
//! the incident change behind them (`store::connectors`). This task claims
//! the due ones with a lease, sends each through its connector, and records
//! every attempt with its outcome. Transient failures (5xx, 408, 429,
//! timeouts, refused connections, SMTP 4xx) are retried with exponential
//! backoff and jitter, or after the receiver's `Retry-After`; permanent
//! ones (other 4xx, bad configuration) fail at once; a delivery out of
//! attempts is dead-lettered.
//!
//! Delivery is at-least-once: an attempt whose outcome was not recorded
//! (the process died after sending, or the store was unreachable) is sent
//! again when its lease runs out. Receivers drop the duplicate by the
//! delivery id every attempt of one delivery carries.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use connectors::{Notification, Outcome};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::JoinSet;

use crate::store::connectors::{Claimed, ConnectorSettings, FinishedAttempt};
use crate::store::{DeliveryState, NameRef, Principal, Store, StoreError};

/// How long a claimed delivery is held before another attempt may take
/// it: longer than any attempt's timeout (at most two minutes).
const LEASE_MS: i64 = 5 * 60_000;

/// Longest wait between looks at the outbox when nothing wakes it: the
/// admin CLI and other processes queue without waking this one.
const IDLE: Duration = Duration::from_secs(1);

/// What the dispatcher has done, for metrics.
#[derive(Debug, Default)]
pub struct DispatchStats {
    /// Attempts made.
    pub attempts: AtomicU64,
    /// Deliveries delivered.
    pub delivered: AtomicU64,
    /// Attempts to be retried.
    pub retried: AtomicU64,
    /// Deliveries failed for good.
    pub failed: AtomicU64,
    /// Deliveries dead-lettered (out of attempts).
    pub dead: AtomicU64,
    /// Store errors (the loop goes on).
    pub errors: AtomicU64,
}

/// The retry delay after `attempts` attempts: `base · 2^(attempts-1)`,
/// capped, of which a random half is taken off (so receivers that came
/// back are not hit by every sender at once), or the receiver's
/// `Retry-After` when it gave one.
pub fn backoff(settings: &ConnectorSettings, attempts: i64, after: Option<Duration>, random: u64) -> i64 {
    if let Some(after) = after {
        return i64::try_from(after.as_millis()).unwrap_or(i64::MAX).min(3_600_000);
    }
    let exp = u32::try_from(attempts.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
    let full = settings.retry_base_ms.saturating_mul(1u64 << exp).min(settings.retry_max_ms.max(1));
    let half = full / 2;
    let jitter = if half == 0 { 0 } else { random % (half + 1) };
    i64::try_from(half + jitter).unwrap_or(i64::MAX)
}

fn random_u64() -> u64 {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 8];
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    u64::from_le_bytes(b)
}

/// One finished attempt on its way to the recorder, and where to say
/// what became of it.
type Recorded = (FinishedAttempt, oneshot::Sender<DeliveryState>);

/// Most attempts recorded in one transaction.
const RECORD_BATCH: usize = 256;

/// Runs until `stopped` turns true.
///
/// Claims run ahead of the sends (up to four times the concurrency, one
/// transaction for many), at most `concurrency` sends are under way, and a
/// send's slot is free as soon as its outcome is queued for the recorder:
/// the outcomes are written in batches while the next sends go out.
pub async fn run(store: Arc<Store>, stats: Arc<DispatchStats>, mut stopped: tokio::sync::watch::Receiver<bool>) {
    let settings = store.config().connectors.clone();
    let concurrency = settings.concurrency.max(1);
    let ahead = 4 * concurrency;
    let slots = Arc::new(Semaphore::new(concurrency));
    // Outcomes waiting to be written: bounded, so sends wait when the
    // store falls behind.
    let (to_recorder, from_attempts) = mpsc::channel::<Recorded>(ahead);
    let recorder = tokio::spawn(record(store.clone(), stats.clone(), from_attempts));
    let mut ready: VecDeque<Claimed> = VecDeque::with_capacity(ahead);
    let mut inflight: JoinSet<()> = JoinSet::new();
    // Whether the outbox may hold due deliveries not yet claimed.
    let mut look = true;
    loop {
        if *stopped.borrow() {
            break;
        }
        while inflight.try_join_next().is_some() {}
        if look && ready.len() < concurrency {
            let room = i64::try_from(ahead - ready.len()).unwrap_or(0);
            match store.claim_due(room, LEASE_MS).await {
                Ok(c) => {
                    // A full claim leaves more behind it.
                    look = i64::try_from(c.len()).unwrap_or(0) == room;
                    ready.extend(c);
                }
                Err(e) => {
                    look = false;
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    eprintln!("vigil: delivery dispatcher: {e}");
                }
            }
        }
        while !ready.is_empty() {
            let Ok(slot) = slots.clone().try_acquire_owned() else { break };
            let Some(c) = ready.pop_front() else { break };
            let (store, stats, settings, to_recorder) =
                (store.clone(), stats.clone(), settings.clone(), to_recorder.clone());
            inflight.spawn(async move { attempt(&store, &stats, &settings, c, slot, &to_recorder).await });
        }
        if !ready.is_empty() {
            // Every slot busy: go on when one is free.
            tokio::select! {
                _ = slots.acquire() => {}
                changed = stopped.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
            }
            continue;
        }
        if look {
            continue;
        }
        let wait = match store.next_due().await {
            Ok(Some(due)) => Duration::from_millis(u64::try_from(due - store.now_ms()).unwrap_or(0)).min(IDLE),
            _ => IDLE,
        };
        tokio::select! {
            _ = store.outbox().wake.notified() => look = true,
            Some(_) = inflight.join_next(), if !inflight.is_empty() => {}
            _ = tokio::time::sleep(wait.max(Duration::from_millis(5))) => look = true,
            changed = stopped.changed() => {
                // The supervisor is gone without saying stop: stop too.
                if changed.is_err() {
                    break;
                }
            }
        }
    }
    // Attempts under way finish and are recorded; claimed ones not yet
    // started are given back, due at once for the next start.
    let unsent: Vec<i64> = ready.iter().map(|c| c.id).collect();
    if let Err(e) = store.release_claims(&unsent).await {
        eprintln!("vigil: {} claimed deliveries wait for their lease to run out: {e}", unsent.len());
    }
    while inflight.join_next().await.is_some() {}
    drop(to_recorder);
    let _ = recorder.await;
}

async fn attempt(
    store: &Store,
    stats: &DispatchStats,
    settings: &ConnectorSettings,
    c: Claimed,
    slot: OwnedSemaphorePermit,
    to_recorder: &mpsc::Sender<Recorded>,
) {
    let started_ms = store.now_ms();
    let started = Instant::now();
    let outcome = match store.claimed_connector(&c) {
        Ok(connector) => {
            let p = &c.payload;
            let n = Notification {
                delivery_id: c.uid.clone(),
                event: p.event.clone(),
                title: p.title.clone(),
                body: p.body.clone(),
                org: p.org.clone(),
                severity: p.severity.clone(),
                rule: p.rule.clone(),
                incident: p.incident.clone(),
                at_ms: p.at_ms,
            };
            connector.send(&n).await
        }
        Err(error) => Outcome::Failed { status: None, error },
    };
    let duration_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
    stats.attempts.fetch_add(1, Ordering::Relaxed);
    let after = match &outcome {
        Outcome::Retry { after, .. } => *after,
        _ => None,
    };
    let retry_at = store.now_ms().saturating_add(backoff(settings, c.attempts + 1, after, random_u64()));
    let a =
        FinishedAttempt { delivery_id: c.id, attempts_before: c.attempts, started_ms, outcome, duration_ms, retry_at };
    let (done, state) = oneshot::channel();
    if to_recorder.send((a, done)).await.is_err() {
        return;
    }
    // The slot is free once the outcome is queued for the recorder (whose
    // queue is bounded): the next send goes out while it is written.
    drop(slot);
    // Not recorded (the store stayed unreachable): left to the lease, the
    // delivery is sent again later.
    let Ok(state) = state.await else { return };
    let counter = match state {
        DeliveryState::Delivered => &stats.delivered,
        DeliveryState::Pending => &stats.retried,
        DeliveryState::Failed => &stats.failed,
        DeliveryState::Dead => &stats.dead,
    };
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Writes finished attempts in batches: whatever finished while the last
/// batch was written goes in the next transaction. An outcome must be
/// kept, so a failed write is retried (the store, not the send), for up
/// to about two minutes; after that the batch is left to the lease.
async fn record(store: Arc<Store>, stats: Arc<DispatchStats>, mut from_attempts: mpsc::Receiver<Recorded>) {
    let mut batch: Vec<Recorded> = Vec::with_capacity(RECORD_BATCH);
    while from_attempts.recv_many(&mut batch, RECORD_BATCH).await > 0 {
        let (attempts, acks): (Vec<FinishedAttempt>, Vec<_>) = batch.drain(..).unzip();
        let mut wait = Duration::from_millis(50);
        loop {
            match store.record_attempts(&attempts).await {
                Ok(states) => {
                    for (ack, state) in acks.into_iter().zip(states) {
                        let _ = ack.send(state);
                    }
                    break;
                }
                Err(e) => {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    eprintln!("vigil: cannot record {} delivery attempts, retrying: {e}", attempts.len());
                    if wait > Duration::from_secs(60) {
                        break;
                    }
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
            }
        }
    }
}

/// Longest a health check may take, whatever the configuration's timeout.
pub const HEALTH_LIMIT: Duration = Duration::from_secs(15);

/// What a health check found.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TestResult {
    /// The configuration's id.
    pub connector_id: i64,
    /// delivered (reachable), retry (a transient problem) or failed.
    pub outcome: &'static str,
    /// Whether the target is usable.
    pub ok: bool,
    /// A status code, where the check got one.
    pub status: Option<u16>,
    /// What went wrong.
    pub error: Option<String>,
    /// How long the check took.
    pub duration_ms: u64,
}

/// Runs configuration `r`'s health check for `who` (execute permission;
/// audited): reachability, TLS and login, without notifying anyone.
pub async fn test_connector(store: &Store, who: &Principal, r: &NameRef) -> Result<TestResult, StoreError> {
    let runnable = store.connector_for_test(who, r).await?;
    let started = Instant::now();
    let outcome = match store.build_connector(&runnable) {
        // A person is waiting: however long the configuration's timeout.
        Ok(c) => match tokio::time::timeout(HEALTH_LIMIT, c.health()).await {
            Ok(outcome) => outcome,
            Err(_) => Outcome::Retry {
                status: None,
                error: format!("no answer within {} s", HEALTH_LIMIT.as_secs()),
                after: None,
            },
        },
        Err(e) => Outcome::Failed { status: None, error: e.to_string() },
    };
    Ok(TestResult {
        connector_id: runnable.id,
        outcome: outcome.as_str(),
        ok: matches!(outcome, Outcome::Delivered { .. }),
        status: outcome.status(),
        error: outcome.error().map(str::to_owned),
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_honours_retry_after() {
        let s = ConnectorSettings { retry_base_ms: 1_000, retry_max_ms: 60_000, ..ConnectorSettings::default() };
        for (attempts, full) in [(1, 1_000), (2, 2_000), (3, 4_000), (7, 60_000), (40, 60_000)] {
            for random in [0, 1, 499, 500, 12_345, u64::MAX] {
                let d = backoff(&s, attempts, None, random);
                assert!((full / 2..=full).contains(&d), "attempt {attempts}: {d} not in {}..={full}", full / 2);
            }
        }
        assert_eq!(backoff(&s, 1, Some(Duration::from_secs(7)), 0), 7_000);
        assert_eq!(backoff(&s, 1, Some(Duration::from_secs(86_400)), 0), 3_600_000);
    }
}
