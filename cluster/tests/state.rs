//! Checkpoints and control values on a real nats-server.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use cluster::{CheckpointError, Checkpoints, ControlKv, connect};
use common::{Server, bounded};

const LIMIT: Duration = Duration::from_secs(60);

/// Deterministic, incompressible-looking bytes.
fn blob(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

#[tokio::test]
async fn checkpoints_round_trip_and_the_last_one_wins() {
    let Some(server) = Server::start() else { return };
    bounded(LIMIT, async {
        let nats = connect(&server.url(), "worker").await.unwrap();
        let checkpoints = Checkpoints::open(&nats, 1).await.unwrap();
        assert_eq!(checkpoints.load(2, 64 << 20).await.unwrap(), None);

        let first = blob(3 << 20, 1); // 3 MiB: several chunks, above the 1 MiB max payload
        checkpoints.save(2, 1234, 7, &first).await.unwrap();
        let loaded = checkpoints.load(2, 64 << 20).await.unwrap().expect("saved");
        assert_eq!((loaded.sequence, loaded.fence, loaded.data.len()), (1234, 7, first.len()));
        assert!(loaded.data == first);

        let second = blob((1 << 20) + 17, 2);
        checkpoints.save(2, 5000, 9, &second).await.unwrap();
        let reopened = Checkpoints::open(&connect(&server.url(), "other").await.unwrap(), 1).await.unwrap();
        let loaded = reopened.load(2, 64 << 20).await.unwrap().expect("saved");
        assert_eq!((loaded.sequence, loaded.fence), (5000, 9));
        assert!(loaded.data == second);
        assert_eq!(reopened.load(3, 64 << 20).await.unwrap(), None, "partitions are separate");

        let err = reopened.load(2, 1 << 20).await.expect_err("limit");
        assert!(matches!(err, CheckpointError::TooLarge { size, .. } if size == second.len()), "{err}");

        reopened.delete(2).await.unwrap();
        assert_eq!(reopened.load(2, 64 << 20).await.unwrap(), None);
        reopened.delete(2).await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn control_values_are_put_got_and_watched() {
    let Some(server) = Server::start() else { return };
    bounded(LIMIT, async {
        let supervisor =
            ControlKv::open(&connect(&server.url(), "supervisor").await.unwrap(), "vigil_control", 1).await.unwrap();
        let node = ControlKv::open(&connect(&server.url(), "node").await.unwrap(), "vigil_control", 1).await.unwrap();

        let revision = supervisor.put("orgs", Bytes::from_static(b"table v1")).await.unwrap();
        assert_eq!(node.get("orgs").await.unwrap(), Some((revision, Bytes::from_static(b"table v1"))));
        assert_eq!(node.get("missing").await.unwrap(), None);

        let mut watch = node.watch("budget.*").await.unwrap();
        supervisor.put("budget.node-1", Bytes::from_static(b"500")).await.unwrap();
        // The requirement: a watcher sees an update within 1 s.
        let update = tokio::time::timeout(Duration::from_secs(1), watch.next())
            .await
            .expect("update seen within 1 s")
            .unwrap()
            .unwrap();
        assert_eq!((update.key.as_str(), update.value), ("budget.node-1", Some(Bytes::from_static(b"500"))));

        supervisor.put("budget.node-1", Bytes::from_static(b"800")).await.unwrap();
        let update = tokio::time::timeout(Duration::from_secs(1), watch.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(update.value, Some(Bytes::from_static(b"800")));

        supervisor.delete("budget.node-1").await.unwrap();
        let update = tokio::time::timeout(Duration::from_secs(1), watch.next()).await.unwrap().unwrap().unwrap();
        assert_eq!((update.key.as_str(), update.value), ("budget.node-1", None));

        // A new watcher starts from the current value.
        supervisor.put("budget.node-2", Bytes::from_static(b"42")).await.unwrap();
        let mut late = node.watch("budget.node-2").await.unwrap();
        let current = tokio::time::timeout(Duration::from_secs(1), late.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(current.value, Some(Bytes::from_static(b"42")));
    })
    .await;
}
