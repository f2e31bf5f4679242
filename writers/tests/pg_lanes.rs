//! Several COPY connections ("lanes", `connections` in the config) into one table, against the
//! real PostgreSQL (address from PGHOST/PGPORT/PGUSER/PGDATABASE, default 127.0.0.1:5432 user
//! postgres db test), a fresh table per test: a two-lane backend stores every row exactly once
//! while both lanes' COPYs run at the same time (seen in pg_stat_activity), and lanes that set up
//! a fresh table at the same moment do not trip over each other's DDL (the advisory lock).

mod pg_common;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use goflow_writers::backend::{Backend, BackendOptions};
use goflow_writers::pg::{PgSink, ddl};
use goflow_writers::schema::COLUMNS;
use goflow_writers::sink::Sink;
use pg_common::*;

fn status_value(status: &[(&'static str, String)], key: &str) -> Option<String> {
    status
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.clone())
}

/// connections: 2 through the real backend thread: exact count and sums, both lanes took part
/// and their COPYs overlapped on the server.
#[test]
fn two_lanes_store_every_row_once_in_parallel() {
    let table = random_table("lanes");
    let db = Db::connect(&table);
    let sinks: Vec<Box<dyn Sink>> = PgSink::lanes(pg_config(&table, None), 2)
        .into_iter()
        .map(|s| Box::new(s) as Box<dyn Sink>)
        .collect();
    let mut opts = BackendOptions::new("pg", "postgres");
    opts.flush_rows = 6_000;
    opts.flush_interval = Duration::from_millis(200);
    let backend = Backend::spawn_lanes(sinks, opts).expect("spawn");
    assert_eq!(backend.lanes(), 2);
    let stats = Arc::clone(backend.stats());
    let tx = backend.sender();

    // 6000 datagrams x 30 = 180,000 rows in chunks of 750 rows.
    let (chunks, (rows, bytes, pkts)) = v5_chunks(6000, 25, IpAddr::V4(Ipv4Addr::LOCALHOST));
    let started = Instant::now();
    for c in &chunks {
        assert!(tx.try_send(c.clone()), "queue has room");
    }
    // Sessions of this test's COPYs in progress (the COPY statement names the table).
    let copying = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'goflow' \
         AND state = 'active' AND query LIKE 'COPY {}%'",
        db.t().replace('\'', "''")
    );
    let mut most_at_once = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while stats.rows_written.load(Ordering::Relaxed) < rows {
        assert!(
            Instant::now() < deadline,
            "{} of {rows} rows written",
            stats.rows_written.load(Ordering::Relaxed)
        );
        most_at_once = most_at_once.max(db.one_i64(&copying));
        thread::sleep(Duration::from_millis(5));
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "{rows} rows in {secs:.2} s over 2 connections: {:.0} rows/s; at most {most_at_once} COPYs at once",
        rows as f64 / secs
    );
    backend.shutdown();

    assert_eq!(most_at_once, 2, "both lanes' COPYs ran at the same time");
    assert_eq!(stats.rows_written.load(Ordering::Relaxed), rows);
    assert_eq!(stats.rows_dropped(), 0);
    assert_eq!(stats.errors.load(Ordering::Relaxed), 0);
    db.assert_totals(rows, bytes, pkts);
    // The sink status is the backend's: totals of both lanes, both sessions.
    let status = stats.detail().status;
    assert_eq!(status_value(&status, "connections").as_deref(), Some("2"));
    assert_eq!(
        status_value(&status, "sessions").as_deref(),
        Some("2"),
        "each lane connected (a lane connects on its first write): {status:?}"
    );
    assert_eq!(
        status_value(&status, "rows_written"),
        Some(rows.to_string())
    );
    let copies: u64 = status_value(&status, "copies")
        .and_then(|v| v.parse().ok())
        .expect("copies");
    assert_eq!(copies, stats.flushes.load(Ordering::Relaxed));
    assert!(copies >= 2, "{copies}");
    assert_eq!(status_value(&status, "reconnects").as_deref(), Some("0"));
}

/// Lanes that connect to a table that does not exist yet at the same moment each run the
/// schema setup; the advisory lock makes them take turns (without it, concurrent CREATE TABLE
/// IF NOT EXISTS fails with a duplicate key on pg_type). Repeated with fresh tables, since a
/// race does not show every time.
#[test]
fn lanes_set_up_a_fresh_table_at_once() {
    const LANES: usize = 4;
    const ROUNDS: usize = 8;
    for round in 0..ROUNDS {
        let table = random_table("ddl");
        let db = Db::connect(&table);
        let barrier = Arc::new(Barrier::new(LANES));
        let threads: Vec<_> = PgSink::lanes(pg_config(&table, None), LANES)
            .into_iter()
            .map(|mut sink| {
                let barrier = Arc::clone(&barrier);
                thread::spawn(move || {
                    barrier.wait();
                    let result = sink.connect();
                    (sink, result)
                })
            })
            .collect();
        let mut sinks = Vec::new();
        for t in threads {
            let (sink, result) = t.join().expect("thread");
            if let Err(e) = result {
                panic!("round {round}, lane {}: {e}", sink.lane_index());
            }
            sinks.push(sink);
        }
        let cols = db.columns();
        assert_eq!(cols.len(), COLUMNS.len(), "round {round}: {cols:?}");
        assert_eq!(
            db.one_i64(&format!(
                "SELECT count(*) FROM pg_indexes WHERE tablename = '{table}' \
                 AND indexdef ILIKE '%USING brin (last_switched)%'"
            )),
            1,
            "round {round}: one BRIN index"
        );
        // Every lane can write into it.
        let (chunks, (rows, _, _)) = v5_chunks(LANES, 1, IpAddr::V4(Ipv4Addr::LOCALHOST));
        for (sink, chunk) in sinks.iter_mut().zip(&chunks) {
            sink.write(chunk).expect("write");
            sink.flush().expect("flush");
        }
        assert_eq!(db.count(), rows as i64, "round {round}");
        assert_eq!(sinks[0].copies(), LANES as u64, "copies are shared totals");
        // The schema lock of this table was released by every lane (the class alone would
        // also count the rollup refresh's transaction lock, keyed by `<table>_1m`, which the
        // sinks' maintenance may hold at this moment, and other tests' tables).
        assert_eq!(
            db.one_i64(&format!(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' \
                 AND classid = x'6766'::int * 65536 + x'6c77'::int AND objid = {}",
                ddl::schema_lock_key(&table) as u32
            )),
            0,
            "round {round}: advisory lock left behind"
        );
    }
}
