//! Outage: a TCP proxy the test controls sits between PgSink and PostgreSQL. It is cut in the
//! middle of a COPY (every connection closed, new ones refused for a while), then restored. The
//! sink is driven the way the backend thread drives it (write the flush's chunks, flush; on a
//! retriable error abort, back off, retry the same chunks): afterwards every row is stored
//! exactly once and the reconnect is counted. The same cut through the backend thread, with one
//! connection and with two (lanes).

mod pg_common;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use goflow_writers::backend::{Backend, BackendOptions};
use goflow_writers::pg::PgSink;
use goflow_writers::sink::{Chunk, Sink, SinkError};
use pg_common::proxy::Proxy;
use pg_common::*;

/// Writes `chunks` as one flush; on a retriable error aborts and returns it.
fn try_flush(sink: &mut PgSink, chunks: &[Chunk]) -> Result<(), SinkError> {
    let result = chunks
        .iter()
        .try_for_each(|c| sink.write(c))
        .and_then(|()| sink.flush());
    if result.is_err() {
        sink.abort();
    }
    result
}

#[test]
fn rows_survive_a_cut_mid_copy() {
    let table = random_table("outage");
    let db = Db::connect(&table);
    let proxy = Proxy::start((pg_host(), pg_port()));
    let mut sink = PgSink::new(pg_config(&table, Some(proxy.port)));

    // 1200 datagrams x 30 = 36,000 rows, chunks of 750 rows, flushes of 8 chunks.
    let (chunks, (rows, bytes, pkts)) = v5_chunks(1200, 25, IpAddr::V4(Ipv4Addr::LOCALHOST));
    let flushes: Vec<&[Chunk]> = chunks.chunks(8).collect();
    assert!(flushes.len() >= 4);

    // The first flush goes through.
    try_flush(&mut sink, flushes[0]).expect("first flush");

    // The second: half its chunks are written (COPY open, rows on the wire), then the cut.
    for c in &flushes[1][..4] {
        sink.write(c).expect("write before the cut");
    }
    proxy.cut();
    let err = flushes[1][4..]
        .iter()
        .try_for_each(|c| sink.write(c))
        .and_then(|()| sink.flush())
        .expect_err("the cut must surface");
    assert!(err.is_retriable(), "{err}");
    sink.abort();

    // Retry like the backend: the same flush, with backoff, until it lands. The proxy comes
    // back after three refused attempts (about 1.5 s of outage).
    let mut failed_attempts = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut pending = 1;
    while pending < flushes.len() {
        assert!(
            Instant::now() < deadline,
            "no recovery: {failed_attempts} failures"
        );
        match try_flush(&mut sink, flushes[pending]) {
            Ok(()) => pending += 1,
            Err(e) => {
                assert!(e.is_retriable(), "outage errors are retriable: {e}");
                failed_attempts += 1;
                if failed_attempts == 3 {
                    proxy.restore();
                }
                thread::sleep(Duration::from_millis(500)); // the backend's backoff
            }
        }
    }
    assert!(failed_attempts >= 3, "{failed_attempts}");
    assert!(proxy.refused.load(Ordering::SeqCst) >= 1);
    assert_eq!(sink.reconnects(), 1, "one reconnect after the outage");
    assert_eq!(sink.rows_written(), rows);
    db.assert_totals(rows, bytes, pkts);
    let status = sink.status();
    let get = |k: &str| status.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
    assert_eq!(get("reconnects").as_deref(), Some("1"));
    assert!(get("connect_failures").and_then(|v| v.parse::<u64>().ok()) >= Some(2));
    assert!(get("last_error").is_some_and(|e| e != "null"));
    drop(sink);
    drop(proxy);
}

/// The same outage through the real backend thread (queue, flush policy, retry with backoff).
#[test]
fn backend_thread_rides_out_a_cut() {
    ride_out_a_cut(1);
}

/// The same with two connections: both lanes lose their session, each retries its own rows.
#[test]
fn two_lanes_ride_out_a_cut() {
    ride_out_a_cut(2);
}

fn ride_out_a_cut(lanes: usize) {
    let table = random_table("outage_be");
    let db = Db::connect(&table);
    let proxy = Proxy::start((pg_host(), pg_port()));
    let sinks: Vec<Box<dyn Sink>> = PgSink::lanes(pg_config(&table, Some(proxy.port)), lanes)
        .into_iter()
        .map(|s| Box::new(s) as Box<dyn Sink>)
        .collect();
    let mut opts = BackendOptions::new("pg", "postgres");
    opts.flush_rows = 6_000;
    opts.flush_interval = Duration::from_millis(200);
    let backend = Backend::spawn_lanes(sinks, opts).expect("spawn");
    let tx = backend.sender();
    let stats = std::sync::Arc::clone(backend.stats());

    let (chunks, (rows, bytes, pkts)) = v5_chunks(1200, 25, IpAddr::V4(Ipv4Addr::LOCALHOST));
    // The first 8 chunks (6,000 rows: one flush, or one per lane by age) land before the cut,
    // so the cut never falls between the server's commit and its reply (that would store rows
    // twice: delivery is at-least-once; the mid-COPY cut is the test above).
    let half = 8;
    for c in &chunks[..half] {
        assert!(tx.try_send(c.clone()), "queue has room");
    }
    wait_for("first flush", 30, || {
        stats.rows_written.load(Ordering::Relaxed) == 6_000
    });
    proxy.cut();
    for c in &chunks[half..] {
        assert!(tx.try_send(c.clone()), "queue has room");
    }
    wait_for("errors during the outage", 30, || {
        stats.errors.load(Ordering::Relaxed) >= 3
    });
    assert!(!stats.healthy.load(Ordering::Relaxed));
    proxy.restore();
    wait_for("every row", 60, || {
        stats.rows_written.load(Ordering::Relaxed) == rows
    });
    backend.shutdown();

    assert_eq!(stats.rows_dropped(), 0);
    db.assert_totals(rows, bytes, pkts);
    let status = stats.detail().status;
    let get = |key: &str| {
        status
            .iter()
            .find(|(k, _)| *k == key)
            .and_then(|(_, v)| v.parse::<u64>().ok())
    };
    // Each lane that had a session before the cut reconnects once (a lane's first connect is
    // not a reconnect).
    let reconnects = get("reconnects").unwrap_or(0);
    assert!(
        (1..=lanes as u64).contains(&reconnects),
        "{reconnects} reconnects with {lanes} lanes: {status:?}"
    );
    if lanes == 1 {
        assert_eq!(reconnects, 1);
    }
    assert_eq!(get("connections"), Some(lanes as u64));
    assert_eq!(get("rows_written"), Some(rows));
    drop(proxy);
}
