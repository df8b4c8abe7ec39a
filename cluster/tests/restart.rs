//! A publisher and a reader across a nats-server crash and restart (same port, same store).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use bytes::Bytes;
use cluster::{
    HeaderMap, PublisherConfig, ReadError, ReaderConfig, StreamSpec, connect, ensure_event_stream, open_event_stream,
};
use common::{Server, bounded};

const BATCHES: u32 = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_and_reader_survive_a_server_restart() {
    let Some(mut server) = Server::start() else { return };
    let url = server.url();
    let outcome = bounded(Duration::from_secs(150), async {
        let collector = connect(&url, "collector").await.expect("connect collector");
        let stream = ensure_event_stream(&collector, &StreamSpec::new(2)).await.expect("stream");
        let publisher = stream.publisher(PublisherConfig {
            max_in_flight: 8,
            ack_timeout: Duration::from_millis(500),
            retry_for: Duration::from_secs(60),
            ..Default::default()
        });

        let worker = connect(&url, "worker").await.expect("connect worker");
        let events = open_event_stream(&worker).await.expect("open stream");
        let config = ReaderConfig { max_messages: 16, max_wait: Duration::from_millis(500), ..Default::default() };
        let mut reader = events.reader(0, 1, config).expect("reader");

        // Publishes BATCHES batches to partition 0, paced so the crash falls in the middle;
        // every handle is awaited in a second task.
        let (handles_tx, mut handles_rx) = tokio::sync::mpsc::unbounded_channel();
        let publishing = tokio::spawn({
            let publisher = publisher.clone();
            async move {
                for i in 0..BATCHES {
                    let payload = Bytes::from(format!("batch {i}"));
                    let handle =
                        publisher.publish(0, 1, "n", &format!("collector-1/{i}"), HeaderMap::new(), payload).await;
                    handles_tx.send((i, handle)).expect("collector of acks alive");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        });
        let acks = tokio::spawn(async move {
            let mut acked = BTreeMap::new();
            while let Some((i, handle)) = handles_rx.recv().await {
                let ack = handle.expect("publish accepted").await;
                acked.insert(i, ack.map(|ack| (ack.sequence, ack.duplicate)).map_err(|err| err.to_string()));
            }
            acked
        });
        let reading = tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut ids = HashSet::new();
            while ids.len() < BATCHES as usize {
                let record = reader.next().await.expect("reader keeps going");
                let id = record.msg_id().expect("msg id").to_owned();
                ids.insert(id.clone());
                seen.push((record.sequence, id));
            }
            (seen, reader.consumers_made())
        });

        // Crash the server once a third is acknowledged, keep it down a moment, restart it.
        while publisher.stats().acked < u64::from(BATCHES / 3) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        server.kill();
        let at_crash = publisher.stats();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        server.start_again();

        publishing.await.expect("publishing task");
        let acked = acks.await.expect("acks task");
        let (seen, consumers) = reading.await.expect("reading task");
        let stored = events.state().await.expect("stream state").messages;
        assert_eq!(stored, u64::from(BATCHES), "the stream holds each batch once");
        (acked, seen, consumers, at_crash, publisher.stats())
    })
    .await;
    let (acked, seen, consumers, at_crash, stats) = outcome;
    let duplicates = acked.values().filter(|ack| matches!(ack, Ok((_, true)))).count();
    eprintln!(
        "at crash: {at_crash:?}; at end: {stats:?}; acks naming a duplicate: {duplicates}; \
         reader consumers made: {consumers}"
    );

    // Every batch was acknowledged, at one sequence each.
    let failed: Vec<_> = acked.iter().filter(|(_, ack)| ack.is_err()).collect();
    assert!(failed.is_empty(), "not acknowledged: {failed:?}");
    assert_eq!(acked.len(), BATCHES as usize);
    assert_eq!(stats.in_flight, 0);
    assert!(stats.retried > 0, "the crash should have made the publisher retry");

    // The reader handed out every acknowledged batch exactly once, in stream order, at the
    // sequence its ack named: nothing acknowledged was lost, nothing stored twice.
    let sequences: Vec<u64> = seen.iter().map(|(sequence, _)| *sequence).collect();
    assert!(sequences.windows(2).all(|pair| pair[0] < pair[1]), "out of order: {sequences:?}");
    assert_eq!(seen.len(), BATCHES as usize, "a batch was stored or handed out twice");
    for (i, ack) in &acked {
        let (sequence, _) = *ack.as_ref().expect("acked");
        let id = format!("collector-1/{i}");
        assert!(seen.contains(&(sequence, id.clone())), "{id} acked at {sequence} but not read there");
    }
    assert!(consumers >= 2, "the reader should have made a new consumer after the restart");
}

#[tokio::test]
async fn a_reader_reports_an_unreachable_server_and_then_resumes() {
    let Some(mut server) = Server::start() else { return };
    bounded(Duration::from_secs(60), async {
        let nats = connect(&server.url(), "worker").await.expect("connect");
        let stream = ensure_event_stream(&nats, &StreamSpec::new(1)).await.expect("stream");
        let publisher = stream.publisher(PublisherConfig::default());
        for i in 0..3 {
            let handle =
                publisher.publish(0, 1, "n", &format!("n/{i}"), HeaderMap::new(), Bytes::from_static(b"x")).await;
            handle.unwrap().await.unwrap();
        }
        let config = ReaderConfig {
            max_wait: Duration::from_millis(300),
            give_up_after: Duration::from_secs(1),
            ..Default::default()
        };
        let mut reader = stream.reader(0, 2, config).unwrap();
        assert_eq!(reader.next().await.unwrap().sequence, 2);
        assert_eq!(reader.next().await.unwrap().sequence, 3);

        server.kill();
        let err = reader.next().await.expect_err("server down");
        assert!(matches!(err, ReadError::Unavailable { partition: 0, .. }), "{err}");
        eprintln!("while down: {err}");

        server.start_again();
        let handle = publisher.publish(0, 1, "n", "n/3", HeaderMap::new(), Bytes::from_static(b"after")).await.unwrap();
        assert_eq!(handle.await.expect("acked after restart").sequence, 4);
        let record = reader.next().await.expect("resumed");
        assert_eq!((record.sequence, record.payload.as_ref()), (4, b"after".as_ref()));
        assert_eq!(reader.next_sequence(), 5);
    })
    .await;
}
