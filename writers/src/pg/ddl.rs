//! Schema management and retention SQL, all derived from [`schema::COLUMNS`]: CREATE TABLE IF
//! NOT EXISTS, ADD COLUMN IF NOT EXISTS for columns an older table lacks (never a DROP), a type
//! check of the columns that exist, the TimescaleDB hypertable (when the extension is available)
//! or a BRIN index on `last_switched`, and max-age pruning (drop_chunks, or DELETE in bounded
//! batches so no long lock is held).
//!
//! Schema setup holds a session-level advisory lock keyed by the table name, so the lanes of one
//! backend (and other goflow instances writing the same table) never run it at once: concurrent
//! `CREATE TABLE IF NOT EXISTS` or `ADD COLUMN IF NOT EXISTS` on the same table can fail in
//! PostgreSQL (a unique violation on pg_type or pg_attribute), since IF NOT EXISTS is checked
//! before the catalog row is inserted.
//!
//! The SQL builders are pure (unit-tested here); the async functions run them on a client.
//! TimescaleDB cannot be installed on the development machines, so that path follows its
//! documentation (create_hypertable with if_not_exists/migrate_data; drop_chunks older_than)
//! and is kept to two statements.

use tokio_postgres::Client;
use tokio_postgres::types::Type;

use crate::schema::{COLUMNS, Column, ColumnSet, ColumnType};

/// The column retention and the hypertable partition on.
pub const TIME_COLUMN: &str = "last_switched";

/// Rows one retention DELETE removes; each batch is its own short transaction.
pub const RETENTION_DELETE_BATCH_ROWS: u32 = 10_000;

/// First key of the schema-setup advisory lock (`pg_advisory_lock(int4, int4)`): ASCII "gflw".
/// The second is [`schema_lock_key`] of the table, so the pair only meets another
/// application's advisory lock if it picked the same class.
pub const SCHEMA_LOCK_CLASS: i32 = 0x6766_6c77;

/// Second key of the schema-setup advisory lock: FNV-1a (32 bits) of the table name as
/// configured. Stable across versions and machines, so every goflow instance derives the same
/// key for the same table (advisory locks are per database already).
pub fn schema_lock_key(table: &str) -> i32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in table.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    i32::from_be_bytes(h.to_be_bytes())
}

/// `"name"` with embedded quotes doubled.
pub fn quote_ident(name: &str) -> String {
    let mut q = String::with_capacity(name.len() + 2);
    q.push('"');
    for ch in name.chars() {
        if ch == '"' {
            q.push('"');
        }
        q.push(ch);
    }
    q.push('"');
    q
}

/// A table name as SQL: `schema.table` quotes each part, anything else is one identifier.
pub fn quote_table(table: &str) -> String {
    match table.split_once('.') {
        Some((schema, name)) if !schema.is_empty() && !name.is_empty() => {
            format!("{}.{}", quote_ident(schema), quote_ident(name))
        }
        _ => quote_ident(table),
    }
}

/// `"col1","col2",...` in schema order: the COPY column list.
pub fn column_list() -> String {
    column_list_for(ColumnSet::ALL)
}

/// The COPY column list of `set` (schema order, what its encoder writes).
pub fn column_list_for(set: ColumnSet) -> String {
    let names: Vec<String> = set.columns().map(|c| quote_ident(c.name)).collect();
    names.join(",")
}

/// `COPY <table> (<columns>) FROM STDIN (FORMAT binary)`.
pub fn copy_statement(table: &str) -> String {
    copy_statement_for(table, ColumnSet::ALL)
}

/// [`copy_statement`] for the columns of `set`.
pub fn copy_statement_for(table: &str, set: ColumnSet) -> String {
    format!(
        "COPY {} ({}) FROM STDIN (FORMAT binary)",
        quote_table(table),
        column_list_for(set)
    )
}

/// The columns the rollup `<table>_1m` reads; a column set without one of them gets no rollup.
pub const ROLLUP_COLUMNS: [&str; 9] = [
    "last_switched",
    "exporter",
    "protocol",
    "direction",
    "input_if",
    "output_if",
    "in_bytes",
    "in_pkts",
    "sampling_rate",
];

/// Whether a table of `set` can have the rollup.
pub fn rollup_possible(set: ColumnSet) -> bool {
    ROLLUP_COLUMNS.iter().all(|c| set.contains(c))
}

fn column_def(col: &Column, with_not_null: bool) -> String {
    let not_null = if with_not_null && !col.nullable {
        " NOT NULL"
    } else {
        ""
    };
    format!("{} {}{not_null}", quote_ident(col.name), col.ty.pg_type())
}

/// CREATE TABLE IF NOT EXISTS with every schema column.
pub fn create_table(table: &str) -> String {
    create_table_for(table, ColumnSet::ALL)
}

/// [`create_table`] with the columns of `set` only.
pub fn create_table_for(table: &str, set: ColumnSet) -> String {
    let defs: Vec<String> = set.columns().map(|c| column_def(c, true)).collect();
    format!(
        "CREATE TABLE IF NOT EXISTS {} ({})",
        quote_table(table),
        defs.join(", ")
    )
}

/// ALTER TABLE ADD COLUMN IF NOT EXISTS for one column. Nullable even where the schema says
/// NOT NULL: the table already holds rows that have no value for it.
pub fn add_column(table: &str, col: &Column) -> String {
    format!(
        "ALTER TABLE {} ADD COLUMN IF NOT EXISTS {}",
        quote_table(table),
        column_def(col, false)
    )
}

/// `hypertable:`: whether the table becomes a TimescaleDB hypertable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Hypertable {
    /// When TimescaleDB is available and preloaded (said once at start); else a plain table.
    #[default]
    Auto,
    /// Required: schema setup fails, saying why, when TimescaleDB cannot be used.
    On,
    /// Never: a plain table with a BRIN index, TimescaleDB or not.
    Off,
}

/// The (exporter, time) btree index for per-router queries ("this router's flows of the last
/// hour"): the BRIN index alone makes them read every block of the time range.
pub fn create_exporter_index(table: &str) -> String {
    let bare = table.rsplit('.').next().unwrap_or(table);
    let suffix = "_exporter_time";
    let mut cut = bare.len().min(63 - suffix.len());
    while !bare.is_char_boundary(cut) {
        cut -= 1;
    }
    let index = format!("{}{suffix}", &bare[..cut]);
    format!(
        "CREATE INDEX IF NOT EXISTS {} ON {} ({}, {} DESC)",
        quote_ident(&index),
        quote_table(table),
        quote_ident("exporter"),
        quote_ident(TIME_COLUMN)
    )
}

/// The BRIN index on the time column (cheap to keep on an append-mostly, time-ordered table).
pub fn create_brin_index(table: &str) -> String {
    let bare = table.rsplit('.').next().unwrap_or(table);
    // Identifiers are at most 63 bytes; keep the suffix, cut the table part on a char boundary.
    let suffix = "_last_switched_brin";
    let mut cut = bare.len().min(63 - suffix.len());
    while !bare.is_char_boundary(cut) {
        cut -= 1;
    }
    let index = format!("{}{suffix}", &bare[..cut]);
    // autosummarize: each page range is summarized (by autovacuum) once it fills. Without it a
    // range stays unsummarized until the next VACUUM, and BRIN reads every unsummarized range:
    // on a big insert-only table (vacuumed after 20% more rows) a "last hour" query would read
    // a fifth of the table. Set on indexes of older goflow versions too.
    let schema = match table.rsplit_once('.') {
        Some((s, _)) if !s.is_empty() => format!("{}.", quote_ident(s)),
        _ => String::new(),
    };
    format!(
        "CREATE INDEX IF NOT EXISTS {i} ON {} USING brin ({}) WITH (autosummarize = on); \
         ALTER INDEX {schema}{i} SET (autosummarize = on)",
        quote_table(table),
        quote_ident(TIME_COLUMN),
        i = quote_ident(&index),
    )
}

/// One retention batch on a plain table: `$1` is the age in days.
pub fn delete_batch(table: &str) -> String {
    let t = quote_table(table);
    let c = quote_ident(TIME_COLUMN);
    format!(
        "DELETE FROM {t} WHERE ctid IN (SELECT ctid FROM {t} WHERE {c} < now() - make_interval(days => $1::int) LIMIT {RETENTION_DELETE_BATCH_ROWS})"
    )
}

/// Whether a column of type `oid` accepts what the binary COPY encoder writes for `ty`: the same
/// binary `recv` format (timestamp/timestamptz and inet/cidr share theirs).
fn type_accepts(ty: ColumnType, oid: u32) -> bool {
    let ok: &[Type] = match ty {
        ColumnType::Time => &[Type::TIMESTAMPTZ, Type::TIMESTAMP],
        ColumnType::Ip => &[Type::INET, Type::CIDR],
        ColumnType::U8 => &[Type::INT2],
        ColumnType::U16 => &[Type::INT4],
        ColumnType::U32 | ColumnType::U64 => &[Type::INT8],
        ColumnType::Mac => &[Type::MACADDR],
        ColumnType::Text => &[Type::TEXT, Type::VARCHAR],
    };
    ok.iter().any(|t| t.oid() == oid)
}

/// What [`ensure_schema`] found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SchemaReport {
    /// The table did not exist and was created.
    pub created: bool,
    /// Columns added to an existing table.
    pub added: Vec<&'static str>,
    /// The table is a TimescaleDB hypertable (else a plain table with a BRIN index).
    pub timescaledb: bool,
    /// The rollup `<table>_1m` did not exist and was created (its history is still to be
    /// materialized: see [`refresh_rollup`] and [`backfill_continuous_aggregate`]).
    pub rollup_created: bool,
    /// What `compress_after_days` led to (None when it is not set).
    pub compression: Option<String>,
}

/// Why the schema could not be made right.
#[derive(Debug)]
pub enum SchemaError {
    /// The server failed a statement (may be transient: classify the inner error).
    Db(tokio_postgres::Error),
    /// The table exists with a column goflow cannot write; retrying will not help.
    Incompatible(String),
}

impl From<tokio_postgres::Error> for SchemaError {
    fn from(e: tokio_postgres::Error) -> Self {
        SchemaError::Db(e)
    }
}

/// Creates the table or adds the columns it lacks, checks the types of the ones it has, then
/// makes it a hypertable (TimescaleDB available) or gives it a BRIN index; all under the
/// table's advisory lock (waiting for whoever holds it).
///
/// The lock is session-level rather than transaction-scoped so every statement runs as it
/// would alone (a failed `CREATE EXTENSION` is tolerated, which would abort a transaction, and
/// `create_hypertable` keeps its usual autocommit behaviour). It is released on every return;
/// if this future is dropped midway (the caller's timeout), the caller must drop the session,
/// which releases it on the server.
pub async fn ensure_schema(
    client: &Client,
    table: &str,
    compress_after_days: Option<u32>,
    set: ColumnSet,
    mode: (Hypertable, bool),
) -> Result<SchemaReport, SchemaError> {
    let key = schema_lock_key(table);
    client
        .execute(
            "SELECT pg_advisory_lock($1::int4, $2::int4)",
            &[&SCHEMA_LOCK_CLASS, &key],
        )
        .await?;
    let result = ensure_schema_locked(client, table, compress_after_days, set, mode).await;
    let unlocked = client
        .execute(
            "SELECT pg_advisory_unlock($1::int4, $2::int4)",
            &[&SCHEMA_LOCK_CLASS, &key],
        )
        .await;
    let report = result?;
    unlocked?;
    Ok(report)
}

async fn ensure_schema_locked(
    client: &Client,
    table: &str,
    compress_after_days: Option<u32>,
    set: ColumnSet,
    (hypertable, exporter_index): (Hypertable, bool),
) -> Result<SchemaReport, SchemaError> {
    let mut report = SchemaReport::default();
    let qualified = quote_table(table);
    let exists = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&qualified])
        .await?
        .try_get::<_, bool>(0)?;
    if !exists {
        client.batch_execute(&create_table_for(table, set)).await?;
        report.created = true;
    }

    let rows = client
        .query(
            "SELECT attname::text, atttypid::oid, format_type(atttypid, atttypmod), \
             attnotnull AND NOT atthasdef \
             FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped",
            &[&qualified],
        )
        .await?;
    let mut present: Vec<(String, u32, String)> = Vec::with_capacity(rows.len());
    for row in rows {
        let name: String = row.try_get(0)?;
        // A NOT NULL column without a default that this backend's columns leave out would
        // refuse every COPY: say so now.
        let required: bool = row.try_get(3)?;
        if required && !set.contains(&name) && COLUMNS.iter().any(|c| c.name == name) {
            return Err(SchemaError::Incompatible(format!(
                "column {} of table {qualified} is NOT NULL without a default, and this \
                 backend's `columns:` leaves it out; add it to `columns:`, drop NOT NULL, or \
                 choose another SQL_TABLE",
                quote_ident(&name)
            )));
        }
        present.push((name, row.try_get(1)?, row.try_get(2)?));
    }
    for col in set.columns() {
        match present.iter().find(|(name, _, _)| name == col.name) {
            Some((_, oid, shown)) if !type_accepts(col.ty, *oid) => {
                return Err(SchemaError::Incompatible(format!(
                    "column {} of table {} has type {shown}, but goflow writes {} there; \
                     alter or drop the column (or choose another SQL_TABLE)",
                    quote_ident(col.name),
                    qualified,
                    col.ty.pg_type()
                )));
            }
            Some(_) => {}
            None => {
                client.batch_execute(&add_column(table, col)).await?;
                report.added.push(col.name);
            }
        }
    }

    report.timescaledb = match hypertable {
        Hypertable::Off => false,
        Hypertable::Auto => make_hypertable(client, table).await?,
        Hypertable::On => {
            if !make_hypertable(client, table).await? {
                return Err(SchemaError::Incompatible(format!(
                    "hypertable: on, but TimescaleDB cannot be used for {qualified} (see the \
                     line above: install it, add it to shared_preload_libraries, or allow \
                     CREATE EXTENSION); hypertable: auto uses a plain table instead"
                )));
            }
            true
        }
    };
    if hypertable == Hypertable::Auto
        && report.timescaledb
        && first_warning(&format!("hypertable {table}"))
    {
        log::info!(
            "{qualified} is a TimescaleDB hypertable on {TIME_COLUMN} (TimescaleDB is available; \
             hypertable: off keeps a plain table)"
        );
    }
    if !report.timescaledb {
        client.batch_execute(&create_brin_index(table)).await?;
    }
    if exporter_index && set.contains("exporter") && set.contains(TIME_COLUMN) {
        client.batch_execute(&create_exporter_index(table)).await?;
    }
    client.batch_execute(&create_positions_table(table)).await?;
    if rollup_possible(set) {
        report.rollup_created = ensure_rollup(client, table, report.timescaledb).await?;
    }
    if top_possible(set) {
        client.batch_execute(&create_top_table(table)).await?;
    }
    if let Some(days) = compress_after_days.filter(|d| *d > 0) {
        report.compression = Some(if report.timescaledb {
            ensure_compression(client, table, days).await?
        } else {
            format!(
                "compress_after_days: {days} is ignored: the table is not a TimescaleDB hypertable"
            )
        });
    }
    Ok(report)
}

/// Whether the timescaledb extension is available and enabled (creating it if needed).
///
/// `CREATE EXTENSION timescaledb` on a server whose `shared_preload_libraries` lacks it does
/// not fail politely: the server ends the session (FATAL). That is the usual state right after
/// the Debian package is installed, so the preload is checked first and the extension is only
/// created where it can load; otherwise one line says what to change and the table stays plain.
async fn timescaledb_enabled(client: &Client, table: &str) -> Result<bool, tokio_postgres::Error> {
    let Some(row) = client
        .query_opt(
            "SELECT installed_version IS NOT NULL, \
             coalesce(current_setting('shared_preload_libraries', true), '') \
             FROM pg_available_extensions WHERE name = 'timescaledb'",
            &[],
        )
        .await?
    else {
        return Ok(false);
    };
    let installed: bool = row.try_get(0)?;
    let preload: String = row.try_get(1)?;
    if !preloads_timescaledb(&preload) {
        // Every connection sets up the table: say it once per table, not once per connection.
        if first_warning(&format!("not-preloaded {table}")) {
            log::warn!(
                "timescaledb is installed on the server but not preloaded, using a plain table \
                 for {table}: add timescaledb to shared_preload_libraries in postgresql.conf and \
                 restart PostgreSQL to get a hypertable"
            );
        }
        return Ok(false);
    }
    if installed {
        return Ok(true);
    }
    // Fails without the rights to create extensions: then a plain table.
    if let Err(e) = client
        .batch_execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        .await
    {
        if client.is_closed() {
            return Err(e);
        }
        log::warn!(
            "timescaledb is available but CREATE EXTENSION failed, using a plain table: {e}"
        );
        return Ok(false);
    }
    Ok(true)
}

/// True the first time this process asks about `key`: warnings every connection would repeat.
fn first_warning(key: &str) -> bool {
    static SEEN: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut seen = SEEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if seen.iter().any(|k| k == key) {
        return false;
    }
    seen.push(key.to_owned());
    true
}

/// Whether a `shared_preload_libraries` value (comma-separated, optionally quoted, possibly a
/// path or with a version suffix such as `timescaledb-2.28.3`) loads TimescaleDB.
fn preloads_timescaledb(setting: &str) -> bool {
    setting.split(',').any(|lib| {
        let lib = lib.trim().trim_matches('"').trim();
        let base = lib.rsplit('/').next().unwrap_or(lib);
        base == "timescaledb" || base.starts_with("timescaledb-")
    })
}

/// Makes the table a hypertable on the time column; false when TimescaleDB is not there.
async fn make_hypertable(client: &Client, table: &str) -> Result<bool, tokio_postgres::Error> {
    if !timescaledb_enabled(client, table).await? {
        return Ok(false);
    }
    // The pre-2.13 signature, still accepted by 2.x; a no-op on an existing hypertable (whose
    // chunk interval is left as it is). One-day chunks: retention and compression work on
    // whole chunks, so a day is their granularity (TimescaleDB's default is 7 days).
    client
        .execute(
            "SELECT create_hypertable($1::text::regclass, $2::text::name, \
             chunk_time_interval => INTERVAL '1 day', if_not_exists => TRUE, migrate_data => TRUE)",
            &[&quote_table(table), &TIME_COLUMN],
        )
        .await?;
    Ok(true)
}

/// `<table>` with `suffix`, the table part cut so the name stays within 63 bytes, in the same
/// schema.
fn suffixed(table: &str, suffix: &str) -> String {
    let (schema, bare) = match table.rsplit_once('.') {
        Some((s, b)) if !s.is_empty() && !b.is_empty() => (Some(s), b),
        _ => (None, table),
    };
    let mut cut = bare.len().min(63 - suffix.len());
    while !bare.is_char_boundary(cut) {
        cut -= 1;
    }
    match schema {
        Some(s) => format!("{s}.{}{suffix}", &bare[..cut]),
        None => format!("{}{suffix}", &bare[..cut]),
    }
}

/// The per-minute rollup of `table`: `<table>_1m`, what the dashboards read for long ranges.
/// On TimescaleDB a continuous aggregate (real-time: the minutes not materialized yet are
/// aggregated from the raw rows at query time); on plain PostgreSQL a view over
/// [`rollup_data_table`] (minutes goflow materialized) and the raw rows after them, so both
/// kinds of server answer the same query with the same, complete, figures.
pub fn rollup_name(table: &str) -> String {
    suffixed(table, "_1m")
}

/// Plain PostgreSQL: the table of materialized minutes behind the [`rollup_name`] view.
pub fn rollup_data_table(table: &str) -> String {
    suffixed(table, "_1m_data")
}

/// The rollup's grouping columns after `bucket` (the dimensions the traffic panels split by).
/// Few values each, so a minute holds at most a few dozen rows whatever the flow rate.
/// Addresses, ports and interfaces are not among them: per minute they multiply into nearly as
/// many rows as there are flows, and the rollup would be as large as the table.
pub const ROLLUP_DIMENSIONS: &[&str] = &["exporter", "protocol", "direction"];

/// The rollup's aggregate: `bucket` (`bucket_expr` of `last_switched`), the dimensions, and
/// `bytes`/`packets` with the stored sampling rate applied (0, unknown, counts as 1; numeric,
/// so no product overflows) and `flows` (rows).
fn rollup_select(table: &str, bucket_expr: &str, filter: &str) -> String {
    let t = quote_table(table);
    // Cast to the rollup's types, whatever an older table declared.
    let dims = "exporter::inet AS exporter, protocol::smallint AS protocol, \
                direction::smallint AS direction";
    let groups: Vec<String> = (1..=ROLLUP_DIMENSIONS.len() + 1)
        .map(|i| i.to_string())
        .collect();
    format!(
        "SELECT {bucket_expr} AS bucket, {dims}, \
         sum(in_bytes::numeric * greatest(sampling_rate, 1)) AS bytes, \
         sum(in_pkts::numeric * greatest(sampling_rate, 1)) AS packets, \
         count(*) AS flows FROM {t}{filter} GROUP BY {}",
        groups.join(", ")
    )
}

/// TimescaleDB: the continuous aggregate (real-time, created empty; the policy and
/// [`backfill_continuous_aggregate`] fill it).
pub fn create_continuous_aggregate(table: &str) -> String {
    format!(
        "CREATE MATERIALIZED VIEW IF NOT EXISTS {} \
         WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS {} WITH NO DATA",
        quote_table(&rollup_name(table)),
        rollup_select(
            table,
            &format!(
                "time_bucket(INTERVAL '1 minute', {})",
                quote_ident(TIME_COLUMN)
            ),
            ""
        )
    )
}

/// TimescaleDB: the refresh policy: every minute, the minutes from an hour ago (late flows,
/// a spool's replay of a short outage) to a minute ago (newer ones are aggregated at query
/// time).
pub fn continuous_aggregate_policy(table: &str) -> String {
    format!(
        "SELECT add_continuous_aggregate_policy('{}', start_offset => INTERVAL '1 hour', \
         end_offset => INTERVAL '1 minute', schedule_interval => INTERVAL '1 minute', \
         if_not_exists => TRUE)",
        quote_table(&rollup_name(table)).replace('\'', "''")
    )
}

/// Plain PostgreSQL: the table of materialized minutes and its index.
pub fn create_rollup_data_table(table: &str) -> String {
    let data = rollup_data_table(table);
    let bare = data.rsplit('.').next().unwrap_or(&data);
    format!(
        "CREATE TABLE IF NOT EXISTS {d} (bucket timestamptz NOT NULL, exporter inet, \
         protocol smallint, direction smallint, bytes numeric, packets numeric, flows bigint); \
         CREATE INDEX IF NOT EXISTS {i} ON {d} (bucket)",
        d = quote_table(&data),
        i = quote_ident(&suffixed(bare, "_bucket")),
    )
}

/// Plain PostgreSQL: the function returning the raw rows from the first minute not
/// materialized, aggregated like the rollup. Dynamic SQL, so neither it nor the view depends
/// on the flow table in the catalog: `DROP TABLE <table>` works as it did before rollups.
pub fn rollup_live_function(table: &str) -> String {
    suffixed(table, "_1m_live")
}

/// Plain PostgreSQL: the function behind the view's not-yet-materialized minutes.
pub fn create_rollup_live_function(table: &str) -> String {
    let data = quote_table(&rollup_data_table(table));
    let c = quote_ident(TIME_COLUMN);
    let query = rollup_select(
        table,
        &format!("date_trunc('minute', {c})"),
        &format!(
            " WHERE {c} >= (SELECT coalesce(max(bucket) + INTERVAL '1 minute', '-infinity') FROM {data})"
        ),
    );
    format!(
        "CREATE OR REPLACE FUNCTION {}() RETURNS TABLE (bucket timestamptz, exporter inet, \
         protocol smallint, direction smallint, bytes numeric, packets numeric, flows bigint) \
         LANGUAGE plpgsql STABLE AS \
         $goflow$ BEGIN RETURN QUERY EXECUTE $q${query}$q$; END $goflow$",
        quote_table(&rollup_live_function(table)),
    )
}

/// Plain PostgreSQL: the view `<table>_1m`: the materialized minutes, then the raw rows from
/// the first minute not materialized, aggregated at query time (so the view is complete up to
/// the last stored flow, as TimescaleDB's real-time aggregate is).
pub fn create_rollup_view(table: &str) -> String {
    let data = quote_table(&rollup_data_table(table));
    let cols = format!(
        "bucket, {}, bytes, packets, flows",
        ROLLUP_DIMENSIONS.join(", ")
    );
    format!(
        "CREATE OR REPLACE VIEW {} AS SELECT {cols} FROM {data} UNION ALL SELECT {cols} FROM {}()",
        quote_table(&rollup_name(table)),
        quote_table(&rollup_live_function(table)),
    )
}

/// Plain PostgreSQL, one refresh step (inside a transaction, after
/// [`rollup_refresh_delete`]): the minutes `$1 <= bucket < $2` aggregated from the raw rows.
pub fn rollup_refresh_insert(table: &str) -> String {
    let c = quote_ident(TIME_COLUMN);
    format!(
        "INSERT INTO {} {}",
        quote_table(&rollup_data_table(table)),
        rollup_select(
            table,
            &format!("date_trunc('minute', {c})"),
            &format!(" WHERE {c} >= $1 AND {c} < $2"),
        )
    )
}

/// Plain PostgreSQL: removes the materialized minutes `$1 <= bucket < $2` before they are
/// aggregated again, so a refresh step can be repeated.
pub fn rollup_refresh_delete(table: &str) -> String {
    format!(
        "DELETE FROM {} WHERE bucket >= $1 AND bucket < $2",
        quote_table(&rollup_data_table(table))
    )
}

/// Makes the rollup (continuous aggregate and its policy, or the data table and the view);
/// true when it did not exist. A table whose rollup has another shape (a newer goflow's) is
/// left as it is: when the view exists, neither it nor its live function is replaced.
async fn ensure_rollup(
    client: &Client,
    table: &str,
    timescaledb: bool,
) -> Result<bool, tokio_postgres::Error> {
    let name = quote_table(&rollup_name(table));
    let existed = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&name])
        .await?
        .try_get::<_, bool>(0)?;
    if timescaledb {
        if !existed {
            client
                .batch_execute(&create_continuous_aggregate(table))
                .await?;
        }
        client
            .batch_execute(&continuous_aggregate_policy(table))
            .await?;
    } else {
        client
            .batch_execute(&create_rollup_data_table(table))
            .await?;
        if !existed {
            // The view is absent, so a function of that name is a leftover (perhaps of another
            // row type, which CREATE OR REPLACE refuses): nothing depends on it.
            client
                .batch_execute(&format!(
                    "DROP FUNCTION IF EXISTS {}() CASCADE",
                    quote_table(&rollup_live_function(table))
                ))
                .await?;
            client
                .batch_execute(&create_rollup_live_function(table))
                .await?;
            client.batch_execute(&create_rollup_view(table)).await?;
        }
    }
    Ok(!existed)
}

/// TimescaleDB: materializes the rollup's history (minutes older than the policy's hour) once,
/// after [`ensure_rollup`] created it on a table that already held rows. Runs for as long as
/// the table needs; not in a transaction (`refresh_continuous_aggregate` refuses one).
pub async fn backfill_continuous_aggregate(
    client: &Client,
    table: &str,
) -> Result<(), tokio_postgres::Error> {
    let sql = format!(
        "CALL refresh_continuous_aggregate('{}', NULL, date_trunc('minute', now()) - INTERVAL '1 hour')",
        quote_table(&rollup_name(table)).replace('\'', "''")
    );
    client.batch_execute(&sql).await
}

/// Minutes the plain-PostgreSQL refresh aggregates again behind the last materialized one, for
/// flows stored a little late (exporters send a flow some seconds after its last packet).
pub const ROLLUP_REDO_MINUTES: i32 = 2;

/// Plain PostgreSQL: materializes the closed minutes of `<table>_1m` (up to the minute before
/// the current one), from [`ROLLUP_REDO_MINUTES`] before the last materialized minute (the
/// table's first minute the first time), in steps of at most an hour, each its own transaction
/// under an advisory lock (several goflow instances writing one table take turns). Returns the
/// end of what is materialized (Unix seconds), if anything is.
pub async fn refresh_rollup(
    client: &mut Client,
    table: &str,
) -> Result<Option<i64>, tokio_postgres::Error> {
    let data = quote_table(&rollup_data_table(table));
    let raw = quote_table(table);
    let c = quote_ident(TIME_COLUMN);
    let bounds = client
        .query_one(
            &format!(
                "SELECT coalesce((SELECT max(bucket) - make_interval(mins => $1::int) FROM {data}), \
                 (SELECT date_trunc('minute', min({c})) FROM {raw})), \
                 date_trunc('minute', now()) - INTERVAL '1 minute'"
            ),
            &[&ROLLUP_REDO_MINUTES],
        )
        .await?;
    let lo: Option<std::time::SystemTime> = bounds.try_get(0)?;
    let hi: std::time::SystemTime = bounds.try_get(1)?;
    let Some(mut lo) = lo else {
        return Ok(None); // No rows yet.
    };
    let delete = rollup_refresh_delete(table);
    let insert = rollup_refresh_insert(table);
    let key = schema_lock_key(&rollup_name(table));
    while lo < hi {
        let to = (lo + std::time::Duration::from_secs(3600)).min(hi);
        let tx = client.transaction().await?;
        tx.execute(
            "SELECT pg_advisory_xact_lock($1::int4, $2::int4)",
            &[&SCHEMA_LOCK_CLASS, &key],
        )
        .await?;
        tx.execute(&delete, &[&lo, &to]).await?;
        tx.execute(&insert, &[&lo, &to]).await?;
        tx.commit().await?;
        lo = to;
    }
    Ok(hi
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_secs()).ok()))
}

/// TimescaleDB native compression (`compress_after_days`): chunks are compressed segmented by
/// exporter (each exporter's rows of a chunk together, the dashboards' usual filter) and
/// ordered by time, by a policy once a chunk is wholly older than `days`. Enabled once; a policy
/// with another age is replaced. Returns what was done, for the log.
pub async fn ensure_compression(
    client: &Client,
    table: &str,
    days: u32,
) -> Result<String, tokio_postgres::Error> {
    let t = quote_table(table);
    let lit = t.replace('\'', "''");
    let days = i32::try_from(days).unwrap_or(i32::MAX);
    let enabled: bool = client
        .query_one(
            "SELECT coalesce((SELECT compression_enabled FROM timescaledb_information.hypertables \
             WHERE format('%I.%I', hypertable_schema, hypertable_name)::regclass = $1::text::regclass), false)",
            &[&t],
        )
        .await?
        .try_get(0)?;
    if !enabled {
        client
            .batch_execute(&format!(
                "ALTER TABLE {t} SET (timescaledb.compress, timescaledb.compress_segmentby = 'exporter', \
                 timescaledb.compress_orderby = '{} DESC')",
                quote_ident(TIME_COLUMN)
            ))
            .await?;
    }
    let current: Option<String> = client
        .query_opt(
            "SELECT config->>'compress_after' FROM timescaledb_information.jobs \
             WHERE proc_name = 'policy_compression' \
             AND format('%I.%I', hypertable_schema, hypertable_name)::regclass = $1::text::regclass",
            &[&t],
        )
        .await?
        .map(|r| r.try_get(0))
        .transpose()?;
    let want: String = client
        .query_one("SELECT make_interval(days => $1::int)::text", &[&days])
        .await?
        .try_get(0)?;
    if current.as_deref() == Some(want.as_str()) {
        return Ok(format!("compression after {days} days (policy in place)"));
    }
    if current.is_some() {
        client
            .batch_execute(&format!("SELECT remove_compression_policy('{lit}')"))
            .await?;
    }
    client
        .execute(
            &format!(
                "SELECT add_compression_policy('{lit}', make_interval(days => $1::int), if_not_exists => TRUE)"
            ),
            &[&days],
        )
        .await?;
    Ok(format!(
        "compression after {days} days (segment by exporter, order by {TIME_COLUMN}): policy {}",
        if current.is_some() {
            "replaced"
        } else {
            "added"
        }
    ))
}

/// The hourly top-K rollup of `table`: `<table>_1h_top`, what the dashboards' address, port, AS
/// and interface panels read for long ranges. For each closed hour and each of
/// [`TOP_DIMENSIONS`], the K keys with the most bytes (sampling applied) and one `other` row
/// holding the rest of the hour, so every hour's totals per dimension are exact whatever K is.
/// A plain table on both kinds of server, kept by goflow's rollup thread ([`refresh_top`]).
pub fn top_name(table: &str) -> String {
    suffixed(table, "_1h_top")
}

/// The top-K rollup's dimensions (`dim`, named after the column that ranks) and the grouping
/// set of each. The key columns of a row: `ip` (the address; the exporter for interfaces),
/// `num` (port, AS number, interface index) and `protocol` (ports only: the panels name a port
/// with its protocol).
pub const TOP_DIMENSIONS: &[(&str, &str)] = &[
    ("src_ip", "src_ip"),
    ("dst_ip", "dst_ip"),
    ("src_port", "protocol, src_port"),
    ("dst_port", "protocol, dst_port"),
    ("src_as", "src_as"),
    ("dst_as", "dst_as"),
    ("input_if", "exporter, input_if"),
    ("output_if", "exporter, output_if"),
];

/// The columns the top-K rollup reads; a column set without one of them gets none.
pub const TOP_COLUMNS: [&str; 13] = [
    "last_switched",
    "exporter",
    "protocol",
    "src_ip",
    "dst_ip",
    "src_port",
    "dst_port",
    "src_as",
    "dst_as",
    "input_if",
    "output_if",
    "in_bytes",
    "in_pkts",
];

/// Default K of the top-K rollup (`top_keys`).
pub const TOP_KEYS_DEFAULT: u32 = 1000;

/// Minutes after an hour ends before it is materialized: flows reach the table some seconds
/// after their last packet (an exporter's export delay, goflow's flush); rows stored later
/// than that for a materialized hour are not in its top-K lists.
pub const TOP_GRACE_MINUTES: i32 = 5;

/// Whether a table of `set` can have the top-K rollup.
pub fn top_possible(set: ColumnSet) -> bool {
    TOP_COLUMNS.iter().all(|c| set.contains(c)) && set.contains("sampling_rate")
}

/// The top-K table and its one index: dimension, then hour (every panel reads one dimension
/// over a time range; an index on the hour alone would make the planner read every
/// dimension's rows of the range). The last materialized hour is `max(bucket)` of one
/// dimension, `src_ip` (every hour with rows has rows in every dimension).
pub fn create_top_table(table: &str) -> String {
    let top = top_name(table);
    let bare = top.rsplit('.').next().unwrap_or(&top);
    format!(
        "CREATE TABLE IF NOT EXISTS {t} (bucket timestamptz NOT NULL, dim text NOT NULL, \
         ip inet, num bigint, protocol smallint, other boolean NOT NULL, bytes numeric, \
         packets numeric, flows bigint); \
         CREATE INDEX IF NOT EXISTS {i} ON {t} (dim, bucket)",
        t = quote_table(&top),
        i = quote_ident(&suffixed(bare, "_dim_bucket")),
    )
}

/// One refresh step (inside a transaction, after [`top_refresh_delete`]): the hours
/// `$1 <= bucket < $2` from the raw rows, `$3` keys per hour and dimension. One scan of the
/// rows (grouping sets: one hash aggregate per dimension), then a rank per hour and dimension;
/// the keys ranked after K are summed into the `other` row. Stored in (dimension, hour) order,
/// so a panel's index range reads few pages.
pub fn top_refresh_insert(table: &str) -> String {
    let t = quote_table(table);
    let c = quote_ident(TIME_COLUMN);
    let sets: Vec<String> = TOP_DIMENSIONS
        .iter()
        .map(|(_, cols)| format!("({cols})"))
        .collect();
    // Each set groups by its dimension's column and no other dimension's (GROUPING() is 0 for
    // the columns of the current set); a column outside the current set reads as NULL, so the
    // coalesce picks the set's own key.
    let arms: Vec<String> = TOP_DIMENSIONS
        .iter()
        .map(|(name, _)| format!("WHEN GROUPING({name}) = 0 THEN '{name}'"))
        .collect();
    let dim_name = format!("CASE {} END", arms.join(" "));
    let ip = "coalesce(src_ip, dst_ip, exporter)::inet";
    let num = "coalesce(src_port::bigint, dst_port::bigint, src_as::bigint, dst_as::bigint, \
               input_if::bigint, output_if::bigint)";
    let proto = "protocol::smallint";
    format!(
        "INSERT INTO {top} (bucket, dim, ip, num, protocol, other, bytes, packets, flows) \
         SELECT bucket, dim, CASE WHEN rank <= $3 THEN ip END, CASE WHEN rank <= $3 THEN num END, \
         CASE WHEN rank <= $3 THEN protocol END, rank > $3, sum(bytes), sum(packets), \
         sum(flows)::bigint \
         FROM (SELECT *, row_number() OVER (PARTITION BY bucket, dim ORDER BY bytes DESC, \
         flows DESC, ip, num, protocol) AS rank \
         FROM (SELECT date_trunc('hour', {c}) AS bucket, {dim_name} AS dim, {ip} AS ip, \
         {num} AS num, {proto} AS protocol, \
         sum(in_bytes::numeric * greatest(sampling_rate, 1)) AS bytes, \
         sum(in_pkts::numeric * greatest(sampling_rate, 1)) AS packets, count(*) AS flows \
         FROM {t} WHERE {c} >= $1 AND {c} < $2 \
         GROUP BY date_trunc('hour', {c}), GROUPING SETS ({})) AS g) AS r \
         GROUP BY bucket, dim, 3, 4, 5, 6 ORDER BY dim, bucket",
        sets.join(", "),
        top = quote_table(&top_name(table)),
    )
}

/// Removes the hours `$1 <= bucket < $2` of the top-K rollup before they are made again, so a
/// refresh step can be repeated.
pub fn top_refresh_delete(table: &str) -> String {
    format!(
        "DELETE FROM {} WHERE bucket >= $1 AND bucket < $2",
        quote_table(&top_name(table))
    )
}

/// Hours one refresh step of the top-K rollup aggregates (one transaction).
pub const TOP_STEP_HOURS: u64 = 6;

/// Materializes the closed hours of `<table>_1h_top` (each hour once it ended
/// [`TOP_GRACE_MINUTES`] ago), from the hour after the last materialized one (the table's first
/// hour the first time), `k` keys per hour and dimension, in steps of up to
/// [`TOP_STEP_HOURS`], each its own transaction under an advisory lock (several goflow
/// instances writing one table take turns; a step replaces its hours, so repeating one doubles
/// nothing). A step that finds no rows jumps to the next stored row's hour. Returns the end of
/// what is materialized (Unix seconds), if anything is.
pub async fn refresh_top(
    client: &mut Client,
    table: &str,
    k: u32,
) -> Result<Option<i64>, tokio_postgres::Error> {
    let top = quote_table(&top_name(table));
    let raw = quote_table(table);
    let c = quote_ident(TIME_COLUMN);
    let k = i64::from(k);
    let bounds = client
        .query_one(
            &format!(
                "SELECT coalesce((SELECT max(bucket) + INTERVAL '1 hour' FROM {top} WHERE dim = 'src_ip'), \
                 (SELECT date_trunc('hour', min({c})) FROM {raw})), \
                 date_trunc('hour', now() - make_interval(mins => $1::int))"
            ),
            &[&TOP_GRACE_MINUTES],
        )
        .await?;
    let lo: Option<std::time::SystemTime> = bounds.try_get(0)?;
    let hi: std::time::SystemTime = bounds.try_get(1)?;
    let Some(mut lo) = lo else {
        return Ok(None); // No rows yet.
    };
    let delete = top_refresh_delete(table);
    let insert = top_refresh_insert(table);
    let next = format!("SELECT date_trunc('hour', min({c})) FROM {raw} WHERE {c} >= $1");
    let key = schema_lock_key(&top_name(table));
    while lo < hi {
        let to = (lo + std::time::Duration::from_secs(TOP_STEP_HOURS * 3600)).min(hi);
        let tx = client.transaction().await?;
        tx.execute(
            "SELECT pg_advisory_xact_lock($1::int4, $2::int4)",
            &[&SCHEMA_LOCK_CLASS, &key],
        )
        .await?;
        tx.execute(&delete, &[&lo, &to]).await?;
        let n = tx.execute(&insert, &[&lo, &to, &k]).await?;
        tx.commit().await?;
        lo = to;
        if n == 0 && lo < hi {
            // A gap (goflow was down, or old captures then live flows): skip to the next row.
            let row = client.query_one(&next, &[&lo]).await?;
            match row.try_get::<_, Option<std::time::SystemTime>>(0)? {
                Some(t) if t > lo => lo = t,
                Some(_) => {}
                None => break,
            }
        }
    }
    Ok(hi
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_secs()).ok()))
}

/// Removes rows whose `last_switched` is more than `days` old; returns the rows (plain table) or
/// chunks (hypertable) removed.
pub async fn prune(
    client: &Client,
    table: &str,
    days: u32,
    timescaledb: bool,
) -> Result<u64, tokio_postgres::Error> {
    let days = i32::try_from(days).unwrap_or(i32::MAX);
    if timescaledb {
        // Whole chunks only: a chunk is dropped once all of it is older than the cut-off.
        let rows = client
            .query(
                "SELECT drop_chunks($1::text::regclass, older_than => make_interval(days => $2::int))",
                &[&quote_table(table), &days],
            )
            .await?;
        // The continuous aggregate keeps the same days (it is a hypertable of its own).
        let rollup = quote_table(&rollup_name(table));
        let exists: bool = client
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&rollup])
            .await?
            .try_get(0)?;
        if exists {
            client
                .query(
                    "SELECT drop_chunks($1::text::regclass, older_than => make_interval(days => $2::int))",
                    &[&rollup, &days],
                )
                .await?;
        }
        prune_top(client, table, days).await?;
        return Ok(rows.len() as u64);
    }
    let stmt = client.prepare(&delete_batch(table)).await?;
    let mut total = 0;
    loop {
        let n = client.execute(&stmt, &[&days]).await?;
        total += n;
        if n < u64::from(RETENTION_DELETE_BATCH_ROWS) {
            break;
        }
    }
    // The rollup's minutes go with the rows (a small table: one statement).
    let data = quote_table(&rollup_data_table(table));
    let exists: bool = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&data])
        .await?
        .try_get(0)?;
    if exists {
        client
            .execute(
                &format!(
                    "DELETE FROM {data} WHERE bucket < now() - make_interval(days => $1::int)"
                ),
                &[&days],
            )
            .await?;
    }
    prune_top(client, table, days).await?;
    Ok(total)
}

/// The top-K rollup's hours older than `days` go with the rows (both kinds of server: a plain
/// table; K x 8 rows an hour, so one statement).
async fn prune_top(client: &Client, table: &str, days: i32) -> Result<(), tokio_postgres::Error> {
    let top = quote_table(&top_name(table));
    let exists: bool = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&top])
        .await?
        .try_get(0)?;
    if exists {
        client
            .execute(
                &format!("DELETE FROM {top} WHERE bucket < now() - make_interval(days => $1::int)"),
                &[&days],
            )
            .await?;
    }
    Ok(())
}

/// The positions table of `table`: `<table>_positions` (the table part cut so the name stays
/// within PostgreSQL's 63 bytes), in the same schema. One row per stream (a spool, a Kafka
/// partition: see `sink::Position`), updated in the transaction of every flush that carries
/// that stream's chunks.
pub fn positions_table(table: &str) -> String {
    suffixed(table, "_positions")
}

/// CREATE TABLE IF NOT EXISTS for the positions table.
pub fn create_positions_table(table: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {} (stream text PRIMARY KEY, position bigint NOT NULL, \
         updated_at timestamptz NOT NULL DEFAULT now())",
        quote_table(&positions_table(table))
    )
}

/// Stores the positions `$1` (stream names) / `$2` (positions): one statement for all streams
/// of a flush, run inside the flush's transaction.
pub fn upsert_positions(table: &str) -> String {
    format!(
        "INSERT INTO {} (stream, position, updated_at) \
         SELECT s, p, now() FROM unnest($1::text[], $2::bigint[]) AS u(s, p) \
         ON CONFLICT (stream) DO UPDATE SET position = EXCLUDED.position, updated_at = now()",
        quote_table(&positions_table(table))
    )
}

/// Reads the positions of the streams whose names start with `$1`.
pub fn select_positions(table: &str) -> String {
    format!(
        "SELECT stream, position FROM {} WHERE starts_with(stream, $1) ORDER BY stream",
        quote_table(&positions_table(table))
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn positions_table_names() {
        use super::positions_table as p;
        assert_eq!(p("goflow_records"), "goflow_records_positions");
        assert_eq!(p("s.flows"), "s.flows_positions");
        let long = "x".repeat(63);
        assert_eq!(p(&long).len(), 63);
        assert!(super::upsert_positions("s.flows").contains("\"s\".\"flows_positions\""));
    }

    #[test]
    fn rollup_names_and_sql() {
        use super::*;
        assert_eq!(rollup_name("goflow_records"), "goflow_records_1m");
        assert_eq!(rollup_data_table("s.flows"), "s.flows_1m_data");
        assert_eq!(rollup_name(&"x".repeat(70)).len(), 63);
        let cagg = create_continuous_aggregate("s.flows");
        assert!(cagg.starts_with("CREATE MATERIALIZED VIEW IF NOT EXISTS \"s\".\"flows_1m\""));
        assert!(cagg.contains("timescaledb.materialized_only = false"));
        assert!(cagg.contains("time_bucket(INTERVAL '1 minute', \"last_switched\") AS bucket"));
        assert!(cagg.contains("sum(in_bytes::numeric * greatest(sampling_rate, 1)) AS bytes"));
        assert!(cagg.ends_with("GROUP BY 1, 2, 3, 4 WITH NO DATA"));
        for dim in ROLLUP_DIMENSIONS {
            assert!(cagg.contains(&format!(" AS {dim}")), "{dim}");
        }
        assert!(continuous_aggregate_policy("o'k").contains("'\"o''k_1m\"'"));
        let view = create_rollup_view("flows");
        assert_eq!(
            view,
            "CREATE OR REPLACE VIEW \"flows_1m\" AS SELECT bucket, exporter, protocol, direction, \
             bytes, packets, flows FROM \"flows_1m_data\" UNION ALL SELECT \
             bucket, exporter, protocol, direction, bytes, packets, flows \
             FROM \"flows_1m_live\"()"
        );
        let live = create_rollup_live_function("flows");
        assert!(
            live.contains("FROM \"flows\" WHERE \"last_switched\" >= (SELECT coalesce(max(bucket)")
        );
        assert!(!live.contains("$q$;") || live.matches("$q$").count() == 2);
        assert!(rollup_refresh_insert("flows").starts_with(
            "INSERT INTO \"flows_1m_data\" SELECT date_trunc('minute', \"last_switched\") AS bucket"
        ));
        assert!(
            rollup_refresh_insert("flows")
                .contains("WHERE \"last_switched\" >= $1 AND \"last_switched\" < $2 GROUP BY")
        );
        assert_eq!(
            rollup_refresh_delete("flows"),
            "DELETE FROM \"flows_1m_data\" WHERE bucket >= $1 AND bucket < $2"
        );
    }

    #[test]
    fn top_names_and_sql() {
        use super::*;
        assert_eq!(top_name("goflow_records"), "goflow_records_1h_top");
        assert_eq!(top_name("s.flows"), "s.flows_1h_top");
        assert_eq!(top_name(&"x".repeat(70)).len(), 63);
        let ins = top_refresh_insert("flows");
        assert!(ins.starts_with("INSERT INTO \"flows_1h_top\" (bucket, dim, ip, num, protocol"));
        assert!(ins.contains(
            "GROUPING SETS ((src_ip), (dst_ip), (protocol, src_port), (protocol, dst_port), \
             (src_as), (dst_as), (exporter, input_if), (exporter, output_if))"
        ));
        assert!(ins.contains("WHERE \"last_switched\" >= $1 AND \"last_switched\" < $2"));
        for (dim, _) in TOP_DIMENSIONS {
            assert!(
                ins.contains(&format!("WHEN GROUPING({dim}) = 0 THEN '{dim}'")),
                "{dim}"
            );
        }
        assert_eq!(
            top_refresh_delete("flows"),
            "DELETE FROM \"flows_1h_top\" WHERE bucket >= $1 AND bucket < $2"
        );
        assert!(
            create_top_table("s.flows")
                .contains("\"flows_1h_top_dim_bucket\" ON \"s\".\"flows_1h_top\" (dim, bucket)")
        );
        assert!(top_possible(ColumnSet::ALL));
    }

    #[test]
    fn preload_setting_is_parsed() {
        use super::preloads_timescaledb as p;
        assert!(p("timescaledb"));
        assert!(p("pg_stat_statements, timescaledb"));
        assert!(p("\"timescaledb\""));
        assert!(p("$libdir/timescaledb-2.28.3"));
        assert!(!p(""));
        assert!(!p("pg_stat_statements"));
        assert!(!p("timescaledb_toolkit"));
    }

    use super::*;

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("flows"), "\"flows\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_table("netflow.flows"), "\"netflow\".\"flows\"");
        assert_eq!(quote_table("flows"), "\"flows\"");
    }

    #[test]
    fn create_table_lists_every_column_once() {
        let sql = create_table("t");
        for col in COLUMNS {
            assert_eq!(
                sql.matches(&format!("\"{}\" ", col.name)).count(),
                1,
                "{}",
                col.name
            );
        }
        assert!(sql.starts_with(
            "CREATE TABLE IF NOT EXISTS \"t\" (\"time_received\" timestamptz NOT NULL, "
        ));
        assert!(sql.contains("\"src_ip\" inet, "));
        assert!(sql.contains("\"in_bytes\" bigint, "));
        assert!(sql.contains("\"protocol\" smallint, "));
        assert!(sql.contains("\"last_switched\" timestamptz NOT NULL, "));
    }

    #[test]
    fn copy_statement_columns_in_schema_order() {
        let sql = copy_statement("t");
        assert!(
            sql.starts_with("COPY \"t\" (\"time_received\",\"first_switched\",\"last_switched\",")
        );
        assert!(sql.ends_with("\"etype\") FROM STDIN (FORMAT binary)"));
    }

    #[test]
    fn added_columns_are_nullable() {
        let col = crate::schema::column("last_switched").expect("column");
        assert_eq!(
            add_column("t", col),
            "ALTER TABLE \"t\" ADD COLUMN IF NOT EXISTS \"last_switched\" timestamptz"
        );
    }

    #[test]
    fn brin_index_name_fits_63_bytes() {
        let long = "x".repeat(80);
        let sql = create_brin_index(&long);
        let name = sql.split('"').nth(1).expect("index name");
        assert_eq!(name.len(), 63);
        assert!(name.ends_with("_last_switched_brin"));
        assert_eq!(
            create_brin_index("s.flows"),
            "CREATE INDEX IF NOT EXISTS \"flows_last_switched_brin\" ON \"s\".\"flows\" USING brin \
             (\"last_switched\") WITH (autosummarize = on); ALTER INDEX \"s\".\"flows_last_switched_brin\" \
             SET (autosummarize = on)"
        );
    }

    #[test]
    fn schema_lock_key_is_stable_fnv1a() {
        // FNV-1a 32 test vectors: "" -> 0x811c9dc5, "a" -> 0xe40c292c, "foobar" -> 0xbf9cf968.
        assert_eq!(schema_lock_key(""), 0x811c_9dc5_u32 as i32);
        assert_eq!(schema_lock_key("a"), 0xe40c_292c_u32 as i32);
        assert_eq!(schema_lock_key("foobar"), 0xbf9c_f968_u32 as i32);
        assert_ne!(
            schema_lock_key("goflow_records"),
            schema_lock_key("goflow_records2")
        );
    }

    #[test]
    fn type_compatibility() {
        assert!(type_accepts(ColumnType::U16, Type::INT4.oid()));
        assert!(!type_accepts(ColumnType::U16, Type::INET.oid()));
        assert!(!type_accepts(ColumnType::U64, Type::NUMERIC.oid()));
        assert!(type_accepts(ColumnType::Time, Type::TIMESTAMP.oid()));
    }
}
