//! Positions (the Sink contract of `sink.rs`) against the real server: a flush stores the
//! positions of its positioned chunks in `<table>_positions` in the same transaction as its
//! rows; an aborted flush stores neither; chunks with a position and no rows still move their
//! stream on. Through the backend, a commit whose reply is lost (the proxy forwards `COMMIT`
//! and closes the connection before the answer) is found stored by the positions and not
//! written twice.

mod pg_common;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use goflow_writers::backend::{Backend, BackendOptions};
use goflow_writers::pg::PgSink;
use goflow_writers::sink::{Chunk, Position, Sink, Stream};
use pg_common::proxy::Proxy;
use pg_common::*;

#[derive(Debug, Default)]
struct Recorder {
    name: String,
    committed: Mutex<Vec<u64>>,
}

impl Stream for Recorder {
    fn name(&self) -> &str {
        &self.name
    }
    fn committed(&self, next: u64, _rows: u64) {
        self.committed.lock().expect("lock").push(next);
    }
}

fn stream(name: &str) -> Arc<Recorder> {
    Arc::new(Recorder {
        name: name.to_owned(),
        ..Recorder::default()
    })
}

fn at(c: &Chunk, s: &Arc<Recorder>, next: u64) -> Chunk {
    let stream: Arc<dyn Stream> = s.clone();
    Chunk {
        position: Some(Position { stream, next }),
        ..c.clone()
    }
}

fn stored(sink: &mut PgSink, prefix: &str) -> Vec<(String, u64)> {
    sink.committed_positions(prefix)
        .expect("positions")
        .expect("the PostgreSQL sink keeps positions")
}

#[test]
fn positions_commit_with_their_rows() {
    let table = random_table("positions");
    let db = Db::connect(&table);
    let mut sink = PgSink::new(pg_config(&table, None));
    let (chunks, _) = v5_chunks(40, 10, IpAddr::V4(Ipv4Addr::LOCALHOST));
    let (a, b) = (stream("spool/a"), stream("kafka/g/t/3"));

    assert_eq!(stored(&mut sink, ""), vec![], "a new table has none");
    // One flush: a live chunk, two of stream a, one of b.
    sink.write(&chunks[0]).expect("write");
    sink.write(&at(&chunks[1], &a, 5)).expect("write");
    sink.write(&at(&chunks[2], &b, 70)).expect("write");
    sink.write(&at(&chunks[3], &a, 6)).expect("write");
    sink.flush().expect("flush");
    assert_eq!(db.count(), 1200);
    assert_eq!(
        stored(&mut sink, ""),
        vec![("kafka/g/t/3".to_owned(), 70), ("spool/a".to_owned(), 6)]
    );
    assert_eq!(stored(&mut sink, "spool/"), vec![("spool/a".to_owned(), 6)]);

    // Aborted: neither the rows nor the position.
    sink.write(&at(&chunks[0], &a, 9)).expect("write");
    sink.abort();
    // A position without rows (messages that carried none) moves the stream on by itself.
    let empty = Chunk {
        count: 0,
        rows: bytes::Bytes::new(),
        ..chunks[0].clone()
    };
    sink.write(&at(&empty, &b, 75)).expect("write");
    sink.flush().expect("flush");
    assert_eq!(db.count(), 1200);
    assert_eq!(
        stored(&mut sink, ""),
        vec![("kafka/g/t/3".to_owned(), 75), ("spool/a".to_owned(), 6)]
    );
    let in_table = db.one_i64(&format!(
        "SELECT position FROM {} WHERE stream = 'spool/a'",
        db.positions_t()
    ));
    assert_eq!(in_table, 6);
}

#[test]
fn a_lost_commit_reply_is_not_written_twice() {
    let table = random_table("lost_commit");
    let db = Db::connect(&table);
    let proxy = Proxy::start((pg_host(), pg_port()));
    let sinks: Vec<Box<dyn Sink>> = PgSink::lanes(pg_config(&table, Some(proxy.port)), 2)
        .into_iter()
        .map(|s| Box::new(s) as Box<dyn Sink>)
        .collect();
    let mut opts = BackendOptions::new("pg", "postgres");
    opts.flush_rows = 3_000;
    opts.flush_interval = Duration::from_millis(200);
    let backend = Backend::spawn_lanes(sinks, opts).expect("spawn");
    let stats = Arc::clone(backend.stats());
    let ptx = backend.positioned_sender();
    let s = stream("spool/lost");

    let (chunks, (rows, bytes, pkts)) = v5_chunks(400, 10, IpAddr::V4(Ipv4Addr::LOCALHOST));
    let half = chunks.len() / 2;
    for (i, c) in chunks[..half].iter().enumerate() {
        assert!(ptx.send(at(c, &s, i as u64 + 1)).is_ok());
    }
    wait_for("the first half", 60, || {
        s.committed.lock().expect("lock").last() == Some(&(half as u64))
    });
    proxy.lose_next_commit();
    for (i, c) in chunks.iter().enumerate().skip(half) {
        assert!(ptx.send(at(c, &s, i as u64 + 1)).is_ok());
    }
    wait_for("every row", 60, || {
        stats.rows_written.load(Ordering::Relaxed) == rows
    });
    assert_eq!(
        proxy.lost_commits.load(Ordering::SeqCst),
        1,
        "the trap fired (connections accepted: {}, backend errors: {})",
        proxy.accepted.load(Ordering::SeqCst),
        stats.errors.load(Ordering::Relaxed)
    );
    assert!(stats.errors.load(Ordering::Relaxed) >= 1);
    backend.shutdown();
    db.assert_totals(rows, bytes, pkts);
    let last = db.one_i64(&format!(
        "SELECT position FROM {} WHERE stream = 'spool/lost'",
        db.positions_t()
    ));
    assert_eq!(last, chunks.len() as i64);
    let committed = s.committed.lock().expect("lock").clone();
    let want: Vec<u64> = (1..=chunks.len() as u64).collect();
    assert_eq!(committed, want, "each chunk reported once, in order");
    drop(proxy);
}
