//! Partition leases on a real nats-server: exclusivity, expiry, fencing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use cluster::{LeaseError, Leases, connect};
use common::{Server, bounded};

const LIMIT: Duration = Duration::from_secs(60);
const TTL: Duration = Duration::from_secs(2);
const RENEW_EVERY: Duration = Duration::from_millis(500);

async fn leases(server: &Server) -> (Leases, Leases) {
    let a = connect(&server.url(), "node-a").await.expect("connect a");
    let b = connect(&server.url(), "node-b").await.expect("connect b");
    (Leases::open(&a, TTL, 1).await.expect("open a"), Leases::open(&b, TTL, 1).await.expect("open b"))
}

#[tokio::test]
async fn only_one_of_two_contenders_wins() {
    let Some(server) = Server::start() else { return };
    bounded(LIMIT, async {
        let (a, b) = leases(&server).await;
        for partition in 0..8u16 {
            let (won_a, won_b) = tokio::join!(a.try_acquire(partition, "node-a"), b.try_acquire(partition, "node-b"));
            let (won_a, won_b) = (won_a.unwrap(), won_b.unwrap());
            assert!(won_a.is_some() != won_b.is_some(), "partition {partition}: exactly one must win");
            let winner = won_a.or(won_b).unwrap();
            let holder = a.holder(partition).await.unwrap().unwrap();
            assert_eq!((holder.owner.as_str(), holder.revision), (winner.owner(), winner.revision()));
            // The winner cannot take it twice either.
            assert!(b.try_acquire(partition, winner.owner()).await.unwrap().is_none());
        }
        assert!(matches!(a.try_acquire(9, "").await, Err(LeaseError::InvalidOwner(_))));
        assert!(matches!(a.try_acquire(9, "a\nb").await, Err(LeaseError::InvalidOwner(_))));
    })
    .await;
}

#[tokio::test]
async fn an_unrenewed_lease_expires_and_the_stale_holder_is_fenced_off() {
    let Some(server) = Server::start() else { return };
    bounded(LIMIT, async {
        let (a, b) = leases(&server).await;
        let mut lease_a = a.try_acquire(0, "node-a").await.unwrap().expect("a acquires");
        assert!(lease_a.is_valid());

        // While a renews, b never gets it, for longer than one TTL.
        let mut last_renewal = Instant::now();
        let renewing_until = Instant::now() + TTL * 2;
        while Instant::now() < renewing_until {
            tokio::time::sleep(RENEW_EVERY).await;
            a.renew(&mut lease_a).await.expect("renew");
            last_renewal = Instant::now();
            assert!(b.try_acquire(0, "node-b").await.unwrap().is_none(), "b took a renewed lease");
        }
        assert!(lease_a.revision() > lease_a.fence(), "renewals move the revision, not the fence");

        // a stops renewing (paused or dead); b polls once per renewal period.
        let lease_b = loop {
            if let Some(lease) = b.try_acquire(0, "node-b").await.unwrap() {
                break lease;
            }
            tokio::time::sleep(RENEW_EVERY).await;
        };
        let waited = last_renewal.elapsed();
        eprintln!("b acquired {waited:?} after a's last renewal (TTL {TTL:?}, renew every {RENEW_EVERY:?})");
        // Never before the TTL has passed (minus the renewal's round trip)...
        assert!(waited >= TTL - Duration::from_millis(250), "taken over early: {waited:?}");
        // ...and about TTL + one renewal period after (slack for the server's expiry timer
        // and a loaded machine).
        assert!(waited <= TTL + RENEW_EVERY + Duration::from_secs(3), "taken over late: {waited:?}");
        assert!(lease_b.fence() > lease_a.fence(), "a later owner has a larger fencing token");
        assert!(!lease_a.is_valid(), "a's own clock says its lease ran out too");

        // The stale holder's renew fails and names the new holder.
        match a.renew(&mut lease_a).await {
            Err(LeaseError::Lost { partition: 0, holder }) => assert_eq!(holder.as_deref(), Some("node-b")),
            other => panic!("stale renew: {other:?}"),
        }
        // Its release leaves b's lease alone.
        a.release(lease_a).await.unwrap();
        assert_eq!(b.holder(0).await.unwrap().unwrap().owner, "node-b");
    })
    .await;
}

#[tokio::test]
async fn a_released_lease_is_free_at_once_and_expired_holders_cannot_renew() {
    let Some(server) = Server::start() else { return };
    bounded(LIMIT, async {
        let (a, b) = leases(&server).await;
        let lease_a = a.try_acquire(3, "node-a").await.unwrap().expect("a acquires");
        a.release(lease_a.clone()).await.unwrap();
        assert!(a.holder(3).await.unwrap().is_none());
        let mut lease_b = b.try_acquire(3, "node-b").await.unwrap().expect("b acquires after release");
        assert!(lease_b.fence() > lease_a.fence());

        // b lets it expire; nobody takes it; b's late renew still fails (it lapsed).
        tokio::time::sleep(TTL + Duration::from_millis(1500)).await;
        assert!(b.holder(3).await.unwrap().is_none(), "the server removed the expired lease");
        assert!(matches!(b.renew(&mut lease_b).await, Err(LeaseError::Lost { holder: None, .. })));
        let again = b.try_acquire(3, "node-b").await.unwrap().expect("free again");
        assert!(again.fence() > lease_b.fence());

        // A bucket with another TTL is refused.
        let nats = connect(&server.url(), "node-c").await.unwrap();
        let err = Leases::open(&nats, Duration::from_secs(10), 1).await.expect_err("other TTL");
        assert!(matches!(err, LeaseError::TtlMismatch { .. }), "{err}");
    })
    .await;
}
