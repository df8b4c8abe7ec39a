//! The event stream on a real nats-server: set-up, publish, read, dedupe, backpressure,
//! purge.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use cluster::{
    ConnectError, EventStream, HeaderMap, Nats, PublishError, PublisherConfig, QueueError, ReaderConfig, StreamError,
    StreamSpec, WorkQueue, connect, ensure_event_stream, open_event_stream,
};
use common::{Server, bounded};

const LIMIT: Duration = Duration::from_secs(60);

async fn setup(server: &Server, spec: &StreamSpec) -> (Nats, EventStream) {
    let nats = connect(&server.url(), "test").await.expect("connect");
    let stream = ensure_event_stream(&nats, spec).await.expect("ensure stream");
    (nats, stream)
}

fn headers(org: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("Vigil-Org", org);
    headers
}

#[tokio::test]
async fn connect_reports_version_and_refuses_a_server_without_jetstream() {
    let Some(server) = Server::start() else { return };
    bounded(LIMIT, async {
        let nats = connect(&server.url(), "test").await.expect("connect");
        assert!(nats.server_version().is_supported(), "{}", nats.server_version());

        let Some(plain) = Server::start_with(false) else { return };
        let err = connect(&plain.url(), "test").await.expect_err("no JetStream");
        assert!(matches!(err, ConnectError::NoJetStream { .. }), "{err}");
        assert!(err.to_string().contains("JetStream is not enabled"), "{err}");

        let err = connect("nats://127.0.0.1:1", "test").await.expect_err("nobody listens");
        assert!(matches!(err, ConnectError::Connect { .. }), "{err}");
    })
    .await;
}

#[tokio::test]
async fn a_server_short_of_storage_is_named_with_the_setting_to_change() {
    // 64 MiB of JetStream storage: the event stream's 1 GiB and the detection
    // queue's 256 MiB cannot be reserved; a smaller event stream can.
    let Some(server) = Server::start_with_store_limit("64M") else { return };
    bounded(LIMIT, async {
        let nats = connect(&server.url(), "test").await.expect("connect");
        let err = ensure_event_stream(&nats, &StreamSpec::new(4)).await.expect_err("1 GiB in 64 MiB");
        assert!(matches!(err, StreamError::NoStorage(ref short) if short.mib == 1024), "{err}");
        let text = err.to_string();
        for needed in ["VIGIL_EVENTS", "1024 MiB", "max_file_store", "cluster.stream_max_mb", "error code 10047"] {
            assert!(text.contains(needed), "{needed:?} missing from: {text}");
        }

        let err = WorkQueue::detections(&nats, 1).await.expect_err("256 MiB in 64 MiB");
        assert!(matches!(err, QueueError::NoStorage(ref short) if short.stream == "VIGIL_DETECTIONS"), "{err}");
        assert!(err.to_string().contains("256 MiB"), "{err}");

        let small = StreamSpec { max_bytes: 8 << 20, ..StreamSpec::new(4) };
        ensure_event_stream(&nats, &small).await.expect("8 MiB fits");
        // Raising the limit of an existing stream beyond what is left is refused alike.
        let err = ensure_event_stream(&nats, &StreamSpec::new(4)).await.expect_err("update to 1 GiB");
        assert!(matches!(err, StreamError::NoStorage(_)), "{err}");
    })
    .await;
}

#[tokio::test]
async fn ensure_is_idempotent_and_refuses_another_partition_count() {
    let Some(server) = Server::start() else { return };
    bounded(LIMIT, async {
        let nats = connect(&server.url(), "test").await.expect("connect");
        assert!(matches!(open_event_stream(&nats).await, Err(StreamError::Missing)));

        let spec = StreamSpec::new(8);
        let first = ensure_event_stream(&nats, &spec).await.expect("create");
        assert_eq!(first.partitions(), 8);
        let again = ensure_event_stream(&nats, &spec).await.expect("same spec again");
        assert_eq!(again.partitions(), 8);

        // Limits are updated in place.
        let bigger = StreamSpec { max_bytes: 2 << 30, duplicate_window: Duration::from_secs(60), ..spec.clone() };
        ensure_event_stream(&nats, &bigger).await.expect("raise limits");

        let err = ensure_event_stream(&nats, &StreamSpec::new(4)).await.expect_err("4 partitions");
        assert!(matches!(err, StreamError::Incompatible(_)), "{err}");
        assert!(err.to_string().contains("8 partitions, 4 were asked for"), "{err}");

        let opened = open_event_stream(&nats).await.expect("open");
        assert_eq!(opened.partitions(), 8);
        assert!(matches!(opened.reader(8, 1, ReaderConfig::default()), Err(StreamError::NoSuchPartition { .. })));
    })
    .await;
}

#[tokio::test]
async fn published_batches_are_read_in_order_with_their_sequences() {
    let Some(server) = Server::start() else { return };
    bounded(LIMIT, async {
        let (_nats, stream) = setup(&server, &StreamSpec::new(3)).await;
        let publisher = stream.publisher(PublisherConfig::default());
        let mut handles = Vec::new();
        for i in 0..30u32 {
            let partition = (i % 3) as u16;
            let payload = Bytes::from(format!("batch {i}"));
            let handle =
                publisher.publish(partition, 1, "n", &format!("node-a/{i}"), headers("acme"), payload).await.unwrap();
            handles.push((partition, i, handle));
        }
        let mut acked = Vec::new();
        for (partition, i, handle) in handles {
            let ack = handle.await.expect("acked");
            assert!(!ack.duplicate);
            acked.push((partition, i, ack.sequence));
        }
        // One connection, one stream: sequences follow the publish order.
        let sequences: Vec<u64> = acked.iter().map(|a| a.2).collect();
        assert_eq!(sequences, (1..=30).collect::<Vec<u64>>());

        let config = ReaderConfig { max_messages: 4, ..ReaderConfig::default() };
        let mut reader = stream.reader(1, 1, config).expect("reader");
        for (_, i, sequence) in acked.iter().filter(|a| a.0 == 1) {
            let record = reader.next().await.expect("record");
            assert_eq!(record.sequence, *sequence);
            assert_eq!(record.payload, Bytes::from(format!("batch {i}")));
            assert_eq!(record.msg_id(), Some(format!("node-a/{i}").as_str()));
            assert_eq!(record.headers.get("Vigil-Org").map(|v| v.as_str()), Some("acme"));
        }
        assert_eq!(reader.next_sequence(), 30);

        let stats = publisher.stats();
        assert_eq!((stats.published, stats.acked, stats.failed, stats.in_flight), (30, 30, 0, 0));
    })
    .await;
}

#[tokio::test]
async fn a_repeated_message_id_is_stored_once() {
    let Some(server) = Server::start() else { return };
    bounded(LIMIT, async {
        let (_nats, stream) = setup(&server, &StreamSpec::new(1)).await;
        let publisher = stream.publisher(PublisherConfig::default());
        let payload = Bytes::from_static(b"the batch");
        let first =
            publisher.publish(0, 1, "n", "node-a/7", HeaderMap::new(), payload.clone()).await.unwrap().await.unwrap();
        let second = publisher.publish(0, 1, "n", "node-a/7", HeaderMap::new(), payload).await.unwrap().await.unwrap();
        assert!(!first.duplicate);
        assert!(second.duplicate);
        assert_eq!(first.sequence, second.sequence);
        assert_eq!(stream.state().await.unwrap().messages, 1);
    })
    .await;
}

#[tokio::test]
async fn the_in_flight_window_is_bounded() {
    let Some(server) = Server::start() else { return };
    bounded(LIMIT, async {
        let (_nats, stream) = setup(&server, &StreamSpec::new(1)).await;
        let config = PublisherConfig { max_in_flight: 2, ack_timeout: Duration::from_secs(30), ..Default::default() };
        let publisher = stream.publisher(config);

        // A frozen server keeps the connection but acknowledges nothing.
        server.freeze();
        let first = publisher.publish(0, 1, "n", "n/1", HeaderMap::new(), Bytes::from_static(b"1")).await.unwrap();
        let second = publisher.publish(0, 1, "n", "n/2", HeaderMap::new(), Bytes::from_static(b"2")).await.unwrap();
        assert_eq!(publisher.stats().in_flight, 2);

        let third = tokio::spawn({
            let publisher = publisher.clone();
            async move { publisher.publish(0, 1, "n", "n/3", HeaderMap::new(), Bytes::from_static(b"3")).await }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!third.is_finished(), "a third publish must wait for room in the window");
        assert_eq!(publisher.stats().in_flight, 2);

        server.thaw();
        let third = third.await.unwrap().unwrap();
        let sequences = [first.await.unwrap().sequence, second.await.unwrap().sequence, third.await.unwrap().sequence];
        assert_eq!(sequences, [1, 2, 3]);
        let stats = publisher.stats();
        assert_eq!((stats.published, stats.acked, stats.in_flight), (3, 3, 0));
    })
    .await;
}

#[tokio::test]
async fn a_full_stream_refuses_new_batches_with_an_error() {
    let Some(server) = Server::start() else { return };
    bounded(LIMIT, async {
        let spec = StreamSpec { max_bytes: 16 * 1024, ..StreamSpec::new(2) };
        let (_nats, stream) = setup(&server, &spec).await;
        let publisher = stream.publisher(PublisherConfig::default());
        let payload = Bytes::from(vec![b'x'; 1024]);
        let mut stored = 0u64;
        let refusal = loop {
            let handle =
                publisher.publish(0, 1, "n", &format!("n/{stored}"), HeaderMap::new(), payload.clone()).await.unwrap();
            match handle.await {
                Ok(ack) => {
                    stored = ack.sequence;
                    assert!(stored < 100, "the stream never filled up");
                }
                Err(err) => break err,
            }
        };
        eprintln!("refused: {refusal}");
        assert!(matches!(refusal, PublishError::StreamFull(_)), "{refusal}");
        assert!(stored >= 10, "only {stored} batches stored before the stream was full");
        let stats = publisher.stats();
        assert_eq!((stats.failed, stats.retried), (1, 0), "a full stream is reported at once, not retried");

        // Old events were kept (discard new), and purging makes room again.
        let state = stream.state().await.unwrap();
        assert_eq!((state.first_sequence, state.messages), (1, stored));
        stream.purge_partition_below(0, stored / 2).await.unwrap();
        let handle = publisher.publish(0, 1, "n", "n/after-purge", HeaderMap::new(), payload).await.unwrap();
        assert!(handle.await.is_ok());
    })
    .await;
}

#[tokio::test]
async fn a_reader_starts_at_the_given_sequence() {
    let Some(server) = Server::start() else { return };
    bounded(LIMIT, async {
        let (_nats, stream) = setup(&server, &StreamSpec::new(2)).await;
        let publisher = stream.publisher(PublisherConfig::default());
        let mut sequences = Vec::new();
        for i in 0..20u32 {
            let handle = publisher
                .publish((i % 2) as u16, 1, "n", &format!("n/{i}"), HeaderMap::new(), Bytes::from(i.to_string()))
                .await;
            sequences.push(handle.unwrap().await.unwrap().sequence);
        }
        // Partition 0 holds the odd sequences 1, 3, .., 19; start in the middle, between two.
        let mut reader = stream.reader(0, 10, ReaderConfig::default()).unwrap();
        assert!(!reader.caught_up(), "nothing pulled yet: it cannot tell");
        let first = reader.next().await.unwrap();
        assert_eq!((first.sequence, first.payload.as_ref()), (11, b"10".as_ref()));
        assert_eq!(first.pending, 4, "four more of the partition after it");
        assert!(!reader.caught_up());
        let mut seen = vec![first.sequence];
        while seen.len() < 5 {
            seen.push(reader.next().await.unwrap().sequence);
        }
        assert_eq!(seen, [11, 13, 15, 17, 19]);
        assert!(reader.caught_up(), "the last one had nothing after it");

        // A reader past the end waits for new batches.
        let waiting = tokio::spawn(async move { reader.next().await.map(|r| (r.sequence, r.payload)) });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!waiting.is_finished());
        publisher
            .publish(0, 1, "n", "n/late", HeaderMap::new(), Bytes::from_static(b"late"))
            .await
            .unwrap()
            .await
            .unwrap();
        let (sequence, payload) = waiting.await.unwrap().unwrap();
        assert_eq!((sequence, payload.as_ref()), (21, b"late".as_ref()));
    })
    .await;
}

#[tokio::test]
async fn purge_removes_a_partition_below_a_sequence_only() {
    let Some(server) = Server::start() else { return };
    bounded(LIMIT, async {
        let (_nats, stream) = setup(&server, &StreamSpec::new(2)).await;
        let publisher = stream.publisher(PublisherConfig::default());
        for i in 0..10u32 {
            let handle = publisher
                .publish((i % 2) as u16, 1, "n", &format!("n/{i}"), HeaderMap::new(), Bytes::from(i.to_string()))
                .await;
            handle.unwrap().await.unwrap();
        }
        // Partition 0: 1 3 5 7 9; partition 1: 2 4 6 8 10.
        assert_eq!(stream.purge_partition_below(0, 7).await.unwrap(), 3);
        assert_eq!(stream.purge_partition_below(0, 7).await.unwrap(), 0);
        assert_eq!(stream.state().await.unwrap().messages, 7);

        let mut reader = stream.reader(0, 1, ReaderConfig::default()).unwrap();
        assert_eq!(reader.next().await.unwrap().sequence, 7);
        assert_eq!(reader.next().await.unwrap().sequence, 9);
        let mut other = stream.reader(1, 1, ReaderConfig::default()).unwrap();
        assert_eq!(other.next().await.unwrap().sequence, 2);
        assert!(matches!(stream.purge_partition_below(2, 5).await, Err(StreamError::NoSuchPartition { .. })));
    })
    .await;
}
