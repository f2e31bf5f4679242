//! The per-minute rollup `<table>_1m` and TimescaleDB compression against the real servers:
//! plain PostgreSQL (PGHOST/PGPORT, as the other pg tests) and TimescaleDB at
//! GOFLOW_TEST_TIMESCALE (skipped with a printed line when unset). The rollup must equal the raw
//! table aggregated the same way, whatever has been materialized; refreshing again changes
//! nothing; flows stored a little late are picked up.

mod pg_common;

use std::time::{Duration, Instant};

use goflow_writers::pg::{PgSink, ddl};
use goflow_writers::sink::Sink;
use pg_common::*;
use tokio::runtime::Runtime;
use tokio_postgres::{Client, NoTls};

fn client(port: u16) -> (Runtime, Client) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let cfg = pg_config("x", Some(port));
    let mut c = tokio_postgres::Config::new();
    c.host(&cfg.host)
        .port(cfg.port)
        .user(&cfg.user)
        .dbname(&cfg.dbname);
    if let Some(pw) = &cfg.password {
        c.password(pw.as_bytes());
    }
    let (client, conn) = rt
        .block_on(c.connect(NoTls))
        .unwrap_or_else(|e| panic!("PostgreSQL at {}:{port}: {e}", cfg.host));
    rt.spawn(conn);
    (rt, client)
}

fn exec(rt: &Runtime, c: &Client, sql: &str) {
    rt.block_on(c.batch_execute(sql))
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
}

/// `exec` for the cleanup's `DROP ... CASCADE`, again after a deadlock (40P01, at most 5
/// tries): a dropped sink's rollup thread stops at its next wait, so a refresh it had started
/// may still be reading the tables the DROP locks, and the server aborts one of the two.
fn exec_cleanup(rt: &Runtime, c: &Client, sql: &str) {
    const TRIES: usize = 5;
    for attempt in 1..=TRIES {
        match rt.block_on(c.batch_execute(sql)) {
            Err(e)
                if attempt < TRIES
                    && e.code()
                        == Some(&tokio_postgres::error::SqlState::T_R_DEADLOCK_DETECTED) => {}
            done => return done.unwrap_or_else(|e| panic!("{sql}: {e:?}")),
        }
    }
}

fn one(rt: &Runtime, c: &Client, sql: &str) -> i64 {
    rt.block_on(c.query_one(sql, &[]))
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .get::<_, Option<i64>>(0)
        .unwrap_or(-1)
}

/// Rows of several exporters, protocols, directions and interfaces, sampled and not (rate 0 is
/// unknown: counted once), over the minutes `from_min..=to_min` relative to the current minute
/// (negative: the past), a few per second of each minute.
fn insert_rows(rt: &Runtime, c: &Client, t: &str, from_min: i32, to_min: i32) {
    exec(
        rt,
        c,
        &format!(
            "INSERT INTO {t} (time_received, first_switched, last_switched, exporter, \
             observation_domain, sampling_rate, src_ip, dst_ip, protocol, direction, \
             input_if, output_if, in_bytes, in_pkts) \
             SELECT now(), ts, ts, ('10.0.0.' || (g % 3 + 1))::inet, 0, \
             (ARRAY[0, 1, 10, 100])[g % 4 + 1], ('192.0.2.' || g % 200)::inet, '198.51.100.7', \
             CASE WHEN g % 11 = 0 THEN NULL ELSE (ARRAY[6, 17, 1])[g % 3 + 1] END, \
             CASE WHEN g % 7 = 0 THEN NULL ELSE g % 2 END, g % 4, (g + 1) % 4, \
             1000 + g % 1500, 1 + g % 9 \
             FROM generate_series(0, ({to_min} - {from_min}) * 60 + 59, 7) AS g, \
             LATERAL (SELECT date_trunc('minute', now()) + ({from_min} * 60 + g) * INTERVAL '1 second' AS ts) AS x"
        ),
    );
}

/// Rows of the rollup that the raw table aggregated the same way does not have, and the other
/// way round (EXCEPT ALL both ways: 0 and 0 when they are equal as multisets).
fn differences(rt: &Runtime, c: &Client, t: &str, rollup: &str) -> (i64, i64) {
    let raw = format!(
        "SELECT date_trunc('minute', last_switched) AS bucket, exporter, protocol, direction, \
         sum(in_bytes::numeric * greatest(sampling_rate, 1)) AS bytes, \
         sum(in_pkts::numeric * greatest(sampling_rate, 1)) AS packets, count(*) AS flows \
         FROM {t} GROUP BY 1, 2, 3, 4"
    );
    let r = format!(
        "SELECT bucket, exporter, protocol, direction, bytes, packets, flows FROM {rollup}"
    );
    (
        one(
            rt,
            c,
            &format!("SELECT count(*) FROM (({r}) EXCEPT ALL ({raw})) AS d"),
        ),
        one(
            rt,
            c,
            &format!("SELECT count(*) FROM (({raw}) EXCEPT ALL ({r})) AS d"),
        ),
    )
}

#[test]
fn plain_postgres_rollup_equals_the_table_and_refreshes_idempotently() {
    let table = random_table("rollup");
    let db = Db::connect(&table);
    let (rt, mut c) = client(pg_port());
    let t = db.t();
    let data = ddl::quote_table(&ddl::rollup_data_table(&table));
    let view = ddl::quote_table(&ddl::rollup_name(&table));
    let cleanup = format!(
        "DROP VIEW IF EXISTS {view}; DROP FUNCTION IF EXISTS {}(); DROP TABLE IF EXISTS {data}",
        ddl::quote_table(&ddl::rollup_live_function(&table))
    );
    exec_cleanup(&rt, &c, &cleanup);

    // The sink makes the table, the data table, the function and the view; then it goes, so
    // only this test refreshes.
    let mut sink = PgSink::new(pg_config(&table, None));
    sink.connect().expect("connect");
    assert!(
        sink.status()
            .iter()
            .any(|(k, v)| *k == "rollup" && v.contains("_1m"))
    );
    drop(sink);

    // Nothing stored: the view is empty and a refresh has nothing to do.
    assert_eq!(one(&rt, &c, &format!("SELECT count(*) FROM {view}")), 0);
    let done = rt
        .block_on(ddl::refresh_rollup(&mut c, &table))
        .expect("refresh");
    assert_eq!(done, None);

    // 30 minutes of the past and the current minute. Before any refresh the view aggregates
    // everything at query time.
    insert_rows(&rt, &c, &t, -30, 0);
    assert_eq!(differences(&rt, &c, &t, &view), (0, 0), "live only");

    let done = rt
        .block_on(ddl::refresh_rollup(&mut c, &table))
        .expect("refresh");
    assert!(done.is_some());
    let materialized = one(&rt, &c, &format!("SELECT count(*) FROM {data}"));
    assert!(materialized > 0);
    // Only closed minutes (up to the one before the current) are materialized.
    assert_eq!(
        one(
            &rt,
            &c,
            &format!(
                "SELECT count(*) FROM {data} WHERE bucket >= date_trunc('minute', now()) - INTERVAL '1 minute'"
            )
        ),
        0
    );
    assert_eq!(
        differences(&rt, &c, &t, &view),
        (0, 0),
        "materialized + live"
    );
    // The sampling rate is applied: the view's bytes exceed the raw sum.
    let scaled = one(&rt, &c, &format!("SELECT sum(bytes)::bigint FROM {view}"));
    let raw = one(&rt, &c, &format!("SELECT sum(in_bytes)::bigint FROM {t}"));
    assert!(scaled > raw * 10, "{scaled} vs {raw}");

    // Again: the same rows, nothing doubled.
    let sums = format!("SELECT sum(bytes)::bigint FROM {data}");
    let before = (
        one(&rt, &c, &format!("SELECT count(*) FROM {data}")),
        one(&rt, &c, &sums),
    );
    rt.block_on(ddl::refresh_rollup(&mut c, &table))
        .expect("refresh");
    let after = (
        one(&rt, &c, &format!("SELECT count(*) FROM {data}")),
        one(&rt, &c, &sums),
    );
    assert_eq!(before, after, "a second refresh changes nothing");

    // Flows stored late, for minutes already materialized (within the redo window): picked up.
    insert_rows(&rt, &c, &t, -3, -2);
    rt.block_on(ddl::refresh_rollup(&mut c, &table))
        .expect("refresh");
    assert_eq!(differences(&rt, &c, &t, &view), (0, 0), "late rows");
    assert!(one(&rt, &c, &sums) > before.1);

    // The view does not pin the table: a plain DROP TABLE still works.
    drop(db);
    let left = one(
        &rt,
        &c,
        &format!("SELECT count(*) FROM pg_class WHERE relname = '{table}'"),
    );
    assert_eq!(left, 0, "DROP TABLE without CASCADE");
    exec_cleanup(&rt, &c, &cleanup);
}

/// A rollup made by another goflow version (its live function returns another row type) is
/// left as it is: setup does not try to replace the function, so the sink still starts.
#[test]
fn plain_postgres_rollup_of_another_shape_is_left_alone() {
    let table = random_table("rollup_other");
    let db = Db::connect(&table);
    let (rt, c) = client(pg_port());
    let view = ddl::quote_table(&ddl::rollup_name(&table));
    let live = ddl::quote_table(&ddl::rollup_live_function(&table));
    exec(&rt, &c, &drop_rollup(&table));
    exec(
        &rt,
        &c,
        &format!(
            "CREATE FUNCTION {live}() RETURNS TABLE (minute timestamptz, other_shape bigint) \
             LANGUAGE sql STABLE AS $$ SELECT now(), 7::bigint $$; \
             CREATE VIEW {view} AS SELECT minute, other_shape FROM {live}()"
        ),
    );

    let mut sink = PgSink::new(pg_config(&table, None));
    sink.connect()
        .expect("setup leaves another goflow's rollup alone");
    drop(sink);
    // Function and view are the other version's still.
    assert_eq!(
        one(
            &rt,
            &c,
            &format!("SELECT sum(other_shape)::bigint FROM {view}")
        ),
        7
    );
    drop(db);
    exec(&rt, &c, &drop_rollup(&table));
}

/// A live function left without its view (another row type) is replaced, and the view made on
/// the new one works.
#[test]
fn plain_postgres_stale_live_function_without_view_is_replaced() {
    let table = random_table("rollup_stale");
    let db = Db::connect(&table);
    let (rt, c) = client(pg_port());
    let view = ddl::quote_table(&ddl::rollup_name(&table));
    let live = ddl::quote_table(&ddl::rollup_live_function(&table));
    exec(&rt, &c, &drop_rollup(&table));
    exec(
        &rt,
        &c,
        &format!(
            "CREATE FUNCTION {live}() RETURNS TABLE (minute timestamptz, other_shape bigint) \
             LANGUAGE sql STABLE AS $$ SELECT now(), 7::bigint $$"
        ),
    );

    let mut sink = PgSink::new(pg_config(&table, None));
    sink.connect().expect("setup replaces the stale function");
    drop(sink);
    let t = db.t();
    insert_rows(&rt, &c, &t, -2, 0);
    assert_eq!(
        differences(&rt, &c, &t, &view),
        (0, 0),
        "view on the new function"
    );
    assert!(one(&rt, &c, &format!("SELECT count(*) FROM {view}")) > 0);
    drop(db);
    exec(&rt, &c, &drop_rollup(&table));
}

/// TimescaleDB: a table that already holds rows becomes a hypertable with one-day chunks, the
/// continuous aggregate is created with its refresh policy and its history is materialized;
/// `compress_after_days` enables compression (segment by exporter) with its policy, a changed
/// value replaces the policy, and compressed chunks still read back the same.
#[test]
fn timescaledb_continuous_aggregate_and_compression() {
    let Some(addr) = std::env::var("GOFLOW_TEST_TIMESCALE")
        .ok()
        .filter(|v| !v.is_empty())
    else {
        eprintln!(
            "skipping timescaledb_continuous_aggregate_and_compression: GOFLOW_TEST_TIMESCALE is not set"
        );
        return;
    };
    let port: u16 = addr
        .rsplit_once(':')
        .map_or("5433", |(_, p)| p)
        .parse()
        .expect("GOFLOW_TEST_TIMESCALE host:port");
    let table = random_table("cagg");
    let (rt, c) = client(port);
    let t = ddl::quote_table(&table);
    let cagg = ddl::quote_table(&ddl::rollup_name(&table));
    let cleanup = format!(
        "DROP TABLE IF EXISTS {t} CASCADE; DROP TABLE IF EXISTS {}",
        ddl::quote_table(&ddl::positions_table(&table))
    );
    exec_cleanup(&rt, &c, &cleanup);
    // An existing table with three days of rows (a table from before rollups).
    exec(&rt, &c, &ddl::create_table(&table));
    insert_rows(&rt, &c, &t, -3 * 1440, -3 * 1440 + 20);
    insert_rows(&rt, &c, &t, -200, -150);
    insert_rows(&rt, &c, &t, -10, 0);

    let mut cfg = pg_config(&table, Some(port));
    cfg.compress_after_days = Some(1);
    let mut sink = PgSink::new(cfg.clone());
    sink.connect().expect("connect");
    assert!(sink.timescaledb(), "TimescaleDB preloaded at {addr}");
    let deadline = Instant::now() + Duration::from_secs(120);
    while sink.rollup_runs() == 0 {
        assert!(
            Instant::now() < deadline,
            "the history was not materialized"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(sink);
    assert_eq!(
        differences(&rt, &c, &t, &cagg),
        (0, 0),
        "continuous aggregate"
    );
    let name = table.clone();
    let jobs = |proc_name: &str| {
        one(
            &rt,
            &c,
            &format!(
                "SELECT count(*) FROM timescaledb_information.jobs \
                 WHERE proc_name = '{proc_name}' \
                 AND hypertable_name IN ('{name}', '{name}_1m')"
            ),
        )
    };
    assert_eq!(jobs("policy_refresh_continuous_aggregate"), 1);
    assert_eq!(jobs("policy_compression"), 1);
    let compress_after = || {
        rt.block_on(c.query_one(
            &format!(
                "SELECT config->>'compress_after' FROM timescaledb_information.jobs \
                 WHERE proc_name = 'policy_compression' AND hypertable_name = '{name}'"
            ),
            &[],
        ))
        .expect("policy")
        .get::<_, String>(0)
    };
    assert_eq!(compress_after(), "1 day");
    assert_eq!(
        one(
            &rt,
            &c,
            &format!(
                "SELECT count(*) FROM timescaledb_information.compression_settings \
                 WHERE hypertable_name = '{name}' AND attname = 'exporter' AND segmentby_column_index = 1"
            )
        ),
        1,
        "segment by exporter"
    );
    // One-day chunks: the three-day-old rows are in a chunk of their own.
    let chunks = one(&rt, &c, &format!("SELECT count(*) FROM show_chunks('{t}')"));
    assert!(chunks >= 2, "{chunks} chunks");

    // Another age replaces the policy (and is not added twice).
    cfg.compress_after_days = Some(2);
    let mut sink = PgSink::new(cfg);
    sink.connect().expect("connect");
    drop(sink);
    assert_eq!(compress_after(), "2 days");
    assert_eq!(jobs("policy_compression"), 1);

    // The background policy jobs (refresh every minute, compression) would race what follows:
    // a refresh running beside compress_chunk, or beside the final DROP ... CASCADE
    // ("tuple concurrently deleted"). Their existence is checked above; remove them.
    let no_jobs = format!(
        "SELECT delete_job(job_id) FROM timescaledb_information.jobs \
         WHERE hypertable_name IN ('{name}', '{name}_1m')"
    );
    exec(&rt, &c, &no_jobs);
    // Compressed chunks read back the same figures.
    let sums = format!("SELECT sum(in_bytes)::bigint + count(*) FROM {t}");
    let before = one(&rt, &c, &sums);
    exec(
        &rt,
        &c,
        &format!(
            "SELECT compress_chunk(ch) FROM show_chunks('{t}', older_than => INTERVAL '2 days') AS ch"
        ),
    );
    assert_eq!(
        one(
            &rt,
            &c,
            &format!(
                "SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = '{name}' AND is_compressed"
            )
        ),
        1
    );
    assert_eq!(one(&rt, &c, &sums), before);
    assert_eq!(differences(&rt, &c, &t, &cagg), (0, 0), "after compression");
    exec_cleanup(&rt, &c, &cleanup);
}

/// Rows for the top-K rollup: several exporters, addresses, ports, AS numbers and interfaces
/// with skewed popularity, sampled and not, NULLs among them, over the minutes
/// `from_min..=to_min` relative to the current minute.
fn insert_top_rows(rt: &Runtime, c: &Client, t: &str, from_min: i32, to_min: i32) {
    exec(
        rt,
        c,
        &format!(
            "INSERT INTO {t} (time_received, first_switched, last_switched, exporter, \
             observation_domain, sampling_rate, src_ip, dst_ip, src_port, dst_port, protocol, \
             direction, input_if, output_if, src_as, dst_as, in_bytes, in_pkts) \
             SELECT now(), ts, ts, ('10.0.0.' || (g % 3 + 1))::inet, 0, \
             (ARRAY[0, 1, 10, 100])[g % 4 + 1], \
             CASE WHEN g % 13 = 0 THEN NULL ELSE ('192.0.2.' || (g * g) % 37)::inet END, \
             CASE WHEN g % 5 = 0 THEN '2001:db8::' || to_hex(g % 11) ELSE '198.51.100.' || g % 23 END::inet, \
             40000 + (g * 7) % 29, (ARRAY[443, 80, 53, 22, 8080])[(g * g) % 5 + 1], \
             CASE WHEN g % 11 = 0 THEN NULL ELSE (ARRAY[6, 17, 1])[g % 3 + 1] END, \
             g % 2, g % 6, (g + 1) % 5, 64500 + (g * g) % 17, 13335 + g % 9, \
             100 + (g * 31) % 1500, 1 + g % 9 \
             FROM generate_series(0, ({to_min} - {from_min}) * 60 + 59, 5) AS g, \
             LATERAL (SELECT date_trunc('minute', now()) + ({from_min} * 60 + g) * INTERVAL '1 second' AS ts) AS x"
        ),
    );
}

/// The raw table aggregated per hour, dimension and key, one plain GROUP BY per dimension
/// (not the rollup's grouping sets), in the top-K table's columns.
fn raw_top(t: &str) -> String {
    let h = "date_trunc('hour', last_switched)";
    let sums = "sum(in_bytes::numeric * greatest(sampling_rate, 1)) AS bytes, \
                sum(in_pkts::numeric * greatest(sampling_rate, 1)) AS packets, count(*) AS flows";
    let one = |dim: &str, ip: &str, num: &str, proto: &str, group: &str| {
        format!(
            "SELECT {h} AS bucket, '{dim}'::text AS dim, {ip}::inet AS ip, {num}::bigint AS num, \
             {proto}::smallint AS protocol, {sums} FROM {t} GROUP BY {h}, {group}"
        )
    };
    [
        one("src_ip", "src_ip", "NULL", "NULL", "src_ip"),
        one("dst_ip", "dst_ip", "NULL", "NULL", "dst_ip"),
        one(
            "src_port",
            "NULL",
            "src_port",
            "protocol",
            "protocol, src_port",
        ),
        one(
            "dst_port",
            "NULL",
            "dst_port",
            "protocol",
            "protocol, dst_port",
        ),
        one("src_as", "NULL", "src_as", "NULL", "src_as"),
        one("dst_as", "NULL", "dst_as", "NULL", "dst_as"),
        one(
            "input_if",
            "exporter",
            "input_if",
            "NULL",
            "exporter, input_if",
        ),
        one(
            "output_if",
            "exporter",
            "output_if",
            "NULL",
            "exporter, output_if",
        ),
    ]
    .join(" UNION ALL ")
}

/// Checks the top-K table of `table` against the raw rows of the hours it holds: every key
/// row is the raw aggregate of that key; per hour and dimension the rows (the `other` row
/// included) sum to the raw totals; at most `k` key rows, exactly `k` plus one `other` row where
/// the hour has more keys; no key left out outranks one kept. Returns (hours, other rows).
fn check_top(rt: &Runtime, c: &Client, table: &str, k: i64) -> (i64, i64) {
    let t = ddl::quote_table(table);
    let top = ddl::quote_table(&ddl::top_name(table));
    let raw = format!(
        "SELECT * FROM ({}) AS r WHERE bucket IN (SELECT bucket FROM {top})",
        raw_top(&t)
    );
    let keys = format!(
        "SELECT bucket, dim, ip, num, protocol, bytes, packets, flows FROM {top} WHERE NOT other"
    );
    assert_eq!(
        one(
            rt,
            c,
            &format!("SELECT count(*) FROM (({keys}) EXCEPT ALL ({raw})) AS d")
        ),
        0,
        "every key row is the raw aggregate of its key"
    );
    let totals = |from: &str| {
        format!(
            "SELECT bucket, dim, sum(bytes) AS b, sum(packets) AS p, sum(flows) AS f FROM ({from}) AS x GROUP BY 1, 2"
        )
    };
    let all = format!("SELECT * FROM {top}");
    for (a, b) in [(totals(&all), totals(&raw)), (totals(&raw), totals(&all))] {
        assert_eq!(
            one(
                rt,
                c,
                &format!("SELECT count(*) FROM (({a}) EXCEPT ALL ({b})) AS d")
            ),
            0,
            "per hour and dimension the rollup's totals (other included) are the raw totals"
        );
    }
    let shape = format!(
        "SELECT count(*) FROM (SELECT r.bucket, r.dim, count(*) AS raw_keys, \
         (SELECT count(*) FROM {top} t WHERE t.bucket = r.bucket AND t.dim = r.dim AND NOT other) AS kept, \
         (SELECT count(*) FROM {top} t WHERE t.bucket = r.bucket AND t.dim = r.dim AND other) AS others \
         FROM ({raw}) AS r GROUP BY 1, 2) AS s \
         WHERE kept <> least(raw_keys, {k}) OR others <> (raw_keys > {k})::int"
    );
    assert_eq!(
        one(rt, c, &shape),
        0,
        "K key rows and one other row where there are more"
    );
    let outranked = format!(
        "SELECT count(*) FROM ({raw}) AS r WHERE NOT EXISTS (SELECT 1 FROM {top} t \
         WHERE t.bucket = r.bucket AND t.dim = r.dim AND NOT t.other \
         AND t.ip IS NOT DISTINCT FROM r.ip AND t.num IS NOT DISTINCT FROM r.num \
         AND t.protocol IS NOT DISTINCT FROM r.protocol) \
         AND r.bytes > (SELECT min(bytes) FROM {top} t WHERE t.bucket = r.bucket AND t.dim = r.dim AND NOT t.other)"
    );
    assert_eq!(
        one(rt, c, &outranked),
        0,
        "no key left out outranks a kept one"
    );
    (
        one(rt, c, &format!("SELECT count(DISTINCT bucket) FROM {top}")),
        one(rt, c, &format!("SELECT count(*) FROM {top} WHERE other")),
    )
}

/// The top-K rollup on the server at `port`: the sink's thread materializes the closed hours of
/// a table that holds rows; the lists equal the raw table (totals exact with `other`); running
/// the refresh again, re-running an hour's step and refreshing after losing the newest hours
/// (a restart mid-way) change nothing; the open hour is not materialized.
fn top_rollup_on(port: u16, what: &str, timescaledb: bool) {
    let table = random_table(what);
    let (rt, mut c) = client(port);
    let t = ddl::quote_table(&table);
    let top = ddl::quote_table(&ddl::top_name(&table));
    let cleanup = format!(
        "DROP TABLE IF EXISTS {t} CASCADE; DROP TABLE IF EXISTS {}; {}",
        ddl::quote_table(&ddl::positions_table(&table)),
        drop_rollup(&table)
    );
    exec_cleanup(&rt, &c, &cleanup);
    // A table from before the top-K rollup, with five hours of rows and the current minutes.
    exec(&rt, &c, &ddl::create_table(&table));
    insert_top_rows(&rt, &c, &t, -300, 0);
    let k = 4;
    let mut cfg = pg_config(&table, Some(port));
    cfg.top_keys = k;
    let mut sink = PgSink::new(cfg);
    sink.connect().expect("connect");
    let materialized = |sink: &mut PgSink| {
        sink.status()
            .iter()
            .any(|(key, v)| *key == "top_materialized_to" && v != "null")
    };
    wait_for("the top-K rollup's first refresh", 120, || {
        materialized(&mut sink)
    });
    drop(sink);
    // No other refresh runs from here on.
    let (hours, others) = check_top(&rt, &c, &table, i64::from(k));
    assert!(hours >= 4, "{hours} closed hours");
    assert!(others > 0, "small K: keys beyond it went to other rows");
    assert_eq!(
        one(
            &rt,
            &c,
            &format!(
                "SELECT count(*) FROM {top} WHERE bucket + INTERVAL '1 hour' > now() - INTERVAL '{} minutes'",
                ddl::TOP_GRACE_MINUTES
            )
        ),
        0,
        "only hours closed for the grace time"
    );
    let sums = format!("SELECT (count(*) * 1000000 + sum(bytes) + sum(flows))::bigint FROM {top}");
    let before = one(&rt, &c, &sums);

    // Again: nothing to do, nothing doubled.
    rt.block_on(ddl::refresh_top(&mut c, &table, k))
        .expect("refresh");
    assert_eq!(one(&rt, &c, &sums), before, "a second refresh");
    // One step re-run by hand (delete, insert): the hour is replaced, not doubled.
    let hour = rt
        .block_on(c.query_one(
            &format!("SELECT min(bucket), min(bucket) + INTERVAL '1 hour' FROM {top}"),
            &[],
        ))
        .expect("hour");
    let (lo, hi): (std::time::SystemTime, std::time::SystemTime) = (hour.get(0), hour.get(1));
    let k64 = i64::from(k);
    for _ in 0..2 {
        let tx = rt.block_on(c.transaction()).expect("tx");
        rt.block_on(tx.execute(&ddl::top_refresh_delete(&table), &[&lo, &hi]))
            .expect("delete");
        rt.block_on(tx.execute(&ddl::top_refresh_insert(&table), &[&lo, &hi, &k64]))
            .expect("insert");
        rt.block_on(tx.commit()).expect("commit");
    }
    assert_eq!(one(&rt, &c, &sums), before, "an hour re-run twice");
    // A restart after the newest hours were lost (or never committed): made again, the same.
    exec(
        &rt,
        &c,
        &format!(
            "DELETE FROM {top} WHERE bucket >= (SELECT max(bucket) - INTERVAL '2 hours' FROM {top})"
        ),
    );
    assert!(one(&rt, &c, &sums) < before);
    rt.block_on(ddl::refresh_top(&mut c, &table, k))
        .expect("refresh");
    assert_eq!(one(&rt, &c, &sums), before, "resumed after a restart");
    check_top(&rt, &c, &table, i64::from(k));

    // Retention takes the rollup's old hours too.
    exec(
        &rt,
        &c,
        &format!(
            "UPDATE {top} SET bucket = bucket - INTERVAL '30 days' WHERE bucket = (SELECT min(bucket) FROM {top})"
        ),
    );
    rt.block_on(ddl::prune(&c, &table, 10, timescaledb))
        .expect("prune");
    assert_eq!(
        one(
            &rt,
            &c,
            &format!("SELECT count(*) FROM {top} WHERE bucket < now() - INTERVAL '10 days'")
        ),
        0,
        "retention"
    );
    if timescaledb {
        exec(
            &rt,
            &c,
            &format!(
                "SELECT delete_job(job_id) FROM timescaledb_information.jobs \
                 WHERE hypertable_name IN ('{table}', '{table}_1m')"
            ),
        );
    }
    exec_cleanup(&rt, &c, &cleanup);
}

#[test]
fn plain_postgres_top_rollup_equals_the_table_and_reruns_idempotently() {
    top_rollup_on(pg_port(), "top", false);
}

#[test]
fn timescaledb_top_rollup_equals_the_table_and_reruns_idempotently() {
    let Some(addr) = std::env::var("GOFLOW_TEST_TIMESCALE")
        .ok()
        .filter(|v| !v.is_empty())
    else {
        eprintln!(
            "skipping timescaledb_top_rollup_equals_the_table_and_reruns_idempotently: GOFLOW_TEST_TIMESCALE is not set"
        );
        return;
    };
    let port: u16 = addr
        .rsplit_once(':')
        .map_or("5433", |(_, p)| p)
        .parse()
        .expect("GOFLOW_TEST_TIMESCALE host:port");
    top_rollup_on(port, "top_ts", true);
}
