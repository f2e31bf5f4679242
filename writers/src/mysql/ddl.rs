//! Schema management and retention SQL for MySQL / MariaDB, all derived from
//! [`schema::COLUMNS`] via [`ColumnType::mysql_type`]: CREATE TABLE IF NOT EXISTS (InnoDB, an
//! index on `last_switched`), one ALTER TABLE that adds the columns an older table lacks and
//! widens the ones it has too narrow (never a DROP), the LOAD DATA statement for the table as it
//! is, and retention.
//!
//! Existing columns are judged by what the encoder writes into them (see [`plan_columns`]):
//! - integers that hold the schema type's range are kept; narrower (or NOT NULL where goflow
//!   writes NULL) are widened in place with MODIFY COLUMN, which loses nothing;
//! - times: DATETIME/TIMESTAMP, widened to 6 fractional digits when they have fewer;
//! - addresses: VARBINARY/BLOB hold them as they are (VARBINARY shorter than 16 is widened;
//!   BINARY, which pads IPv4 with zero bytes, becomes VARBINARY(16)). The old Go collector's
//!   table stores `src_ip`/`dst_ip` as `INT UNSIGNED` (IPv4 only) with IPv6 in `src_ipv6`/
//!   `dst_ipv6`: such a column is kept and loaded through a user variable, IPv4 as the integer
//!   and IPv6 into the `<name>v6` column when the table has one;
//! - anything else (text, decimal, ...) is a fatal error naming the column and the fix.
//!
//! Retention (`utilities.max_age`): a table goflow creates while max_age is set is partitioned
//! by day, `PARTITION BY RANGE (TO_DAYS(last_switched))`, one partition per UTC day plus a
//! `pfuture` catch-all; the daily run adds the partitions for the next days ahead of time
//! (REORGANIZE of the empty `pfuture`) and drops whole days older than max_age (DROP PARTITION
//! is a metadata change: no row-by-row delete, no long lock). Any other table (an existing one,
//! the old collector's) is pruned with `DELETE ... ORDER BY last_switched LIMIT n` batches, each
//! its own short transaction, so no statement holds locks for long.
//!
//! Setup runs under `GET_LOCK` on a name derived from the database and table, so several
//! lanes or goflow instances starting at once never race on CREATE/ALTER.

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, params};

use crate::schema::{COLUMNS, Column, ColumnSet, ColumnType};

/// The column retention, the index and the partitions are on.
pub const TIME_COLUMN: &str = "last_switched";
/// The index goflow creates on it (the old collector's name).
pub const TIME_INDEX: &str = "last_switched_idx";
/// Rows one retention DELETE removes; each batch commits on its own.
pub const RETENTION_DELETE_BATCH_ROWS: u64 = 10_000;
/// Daily partitions kept ready beyond today.
pub const PARTITION_DAYS_AHEAD: i64 = 2;
/// The partition that takes rows past the last day partition.
pub const FUTURE_PARTITION: &str = "pfuture";
/// MySQL's TO_DAYS('1970-01-01').
pub const TO_DAYS_UNIX_EPOCH: i64 = 719_528;
/// Longest wait for the schema lock, seconds.
pub const SCHEMA_LOCK_WAIT_SECS: u32 = 300;
/// MySQL identifiers are at most 64 characters.
const IDENT_MAX: usize = 64;

/// `` `name` `` with embedded backticks doubled.
pub fn quote_ident(name: &str) -> String {
    let mut q = String::with_capacity(name.len() + 2);
    q.push('`');
    for ch in name.chars() {
        if ch == '`' {
            q.push('`');
        }
        q.push(ch);
    }
    q.push('`');
    q
}

/// A string literal (quotes and backslashes escaped; the session never runs with
/// NO_BACKSLASH_ESCAPES, see the sink's session setup).
pub fn quote_str(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('\'');
    for ch in s.chars() {
        match ch {
            '\'' => q.push_str("''"),
            '\\' => q.push_str("\\\\"),
            _ => q.push(ch),
        }
    }
    q.push('\'');
    q
}

/// How one column of the table is loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Load {
    /// Straight into the column.
    Direct,
    /// An address into an integer column (the old collector's IPv4 `INT UNSIGNED`), IPv6 into
    /// the named companion column if there is one.
    IntAddress { v6: Option<String> },
}

/// How each schema column is loaded into the table as it is (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    loads: Vec<Load>,
}

impl Default for Layout {
    /// A table of goflow's own: every column direct.
    fn default() -> Self {
        Layout {
            loads: vec![Load::Direct; COLUMNS.len()],
        }
    }
}

impl Layout {
    /// Whether some address goes into an integer column (the old collector's layout).
    pub fn has_int_addresses(&self) -> bool {
        self.loads
            .iter()
            .any(|l| matches!(l, Load::IntAddress { .. }))
    }
}

/// `LOAD DATA LOCAL INFILE` for the encoder's lines (see `encode.rs`) into `table` laid out as
/// `layout`: explicit column list in schema order, `CHARACTER SET binary`, TAB / LF / backslash.
pub fn load_statement(table: &str, layout: &Layout) -> String {
    load_statement_for(table, layout, ColumnSet::ALL)
}

/// [`load_statement`] for the columns of `set` (what an encoder of that set writes).
pub fn load_statement_for(table: &str, layout: &Layout, set: ColumnSet) -> String {
    let mut targets = Vec::with_capacity(COLUMNS.len());
    let mut sets = Vec::new();
    for (col, load) in COLUMNS.iter().zip(&layout.loads) {
        if !set.contains(col.name) {
            continue;
        }
        match load {
            Load::Direct => targets.push(quote_ident(col.name)),
            Load::IntAddress { v6 } => {
                let var = format!("@{}", quote_ident(col.name));
                targets.push(var.clone());
                sets.push(format!(
                    "{} = IF(LENGTH({var}) = 4, CONV(HEX({var}), 16, 10), NULL)",
                    quote_ident(col.name)
                ));
                if let Some(v6) = v6 {
                    sets.push(format!(
                        "{} = IF(LENGTH({var}) = 16, {var}, NULL)",
                        quote_ident(v6)
                    ));
                }
            }
        }
    }
    let mut sql = format!(
        "LOAD DATA LOCAL INFILE 'goflow' INTO TABLE {} CHARACTER SET binary \
         FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n' ({})",
        quote_ident(table),
        targets.join(",")
    );
    if !sets.is_empty() {
        sql.push_str(" SET ");
        sql.push_str(&sets.join(", "));
    }
    sql
}

fn column_def(col: &Column, with_not_null: bool) -> String {
    let null = if with_not_null && !col.nullable {
        " NOT NULL"
    } else {
        " NULL"
    };
    format!("{} {}{null}", quote_ident(col.name), col.ty.mysql_type())
}

/// `p20261203`: the partition of one UTC day (days since 1970-01-01).
pub fn partition_name(day: i64) -> String {
    let (y, m, d) = crate::json::civil_from_days(day);
    format!("p{y:04}{m:02}{d:02}")
}

/// `PARTITION pYYYYMMDD VALUES LESS THAN (TO_DAYS of the next day)` for each day.
fn day_partitions(days: impl Iterator<Item = i64>) -> Vec<String> {
    days.map(|d| {
        format!(
            "PARTITION {} VALUES LESS THAN ({})",
            partition_name(d),
            d + 1 + TO_DAYS_UNIX_EPOCH
        )
    })
    .collect()
}

/// CREATE TABLE IF NOT EXISTS with every schema column, InnoDB, the time index; partitioned by
/// day from `partitioned_from` (a day since 1970-01-01: today) when given.
pub fn create_table(table: &str, partitioned_from: Option<i64>) -> String {
    create_table_for(table, partitioned_from, ColumnSet::ALL)
}

/// [`create_table`] with the columns of `set` only.
pub fn create_table_for(table: &str, partitioned_from: Option<i64>, set: ColumnSet) -> String {
    let mut defs: Vec<String> = set.columns().map(|c| column_def(c, true)).collect();
    defs.push(format!(
        "KEY {} ({})",
        quote_ident(TIME_INDEX),
        quote_ident(TIME_COLUMN)
    ));
    let mut sql = format!(
        "CREATE TABLE IF NOT EXISTS {} ({}) ENGINE=InnoDB",
        quote_ident(table),
        defs.join(", ")
    );
    if let Some(today) = partitioned_from {
        let mut parts = day_partitions(today..=today + PARTITION_DAYS_AHEAD);
        parts.push(format!(
            "PARTITION {FUTURE_PARTITION} VALUES LESS THAN MAXVALUE"
        ));
        sql.push_str(&format!(
            " PARTITION BY RANGE (TO_DAYS({})) ({})",
            quote_ident(TIME_COLUMN),
            parts.join(", ")
        ));
    }
    sql
}

/// A column of the existing table, from information_schema.COLUMNS (types in lower case).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExistingColumn {
    pub name: String,
    /// `DATA_TYPE`: `int`, `varbinary`, `datetime`, ...
    pub data_type: String,
    /// `COLUMN_TYPE`: `int(10) unsigned`, ...
    pub column_type: String,
    pub nullable: bool,
    /// It has a default, is generated or auto-increments: a load may leave it out.
    pub fillable: bool,
    /// `DATETIME_PRECISION`.
    pub precision: Option<u64>,
    /// `CHARACTER_MAXIMUM_LENGTH` (bytes for binary types).
    pub max_len: Option<u64>,
}

impl ExistingColumn {
    fn unsigned(&self) -> bool {
        self.column_type.contains("unsigned")
    }

    /// Bytes of an integer column.
    fn int_width(&self) -> Option<u32> {
        Some(match self.data_type.as_str() {
            "tinyint" => 1,
            "smallint" => 2,
            "mediumint" => 3,
            "int" | "integer" => 4,
            "bigint" => 8,
            _ => return None,
        })
    }
}

/// What [`plan_columns`] decided for an existing table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ColumnPlan {
    /// Clauses of the one ALTER TABLE (empty: nothing to change).
    pub clauses: Vec<String>,
    pub added: Vec<&'static str>,
    pub widened: Vec<&'static str>,
    pub layout: Layout,
}

fn width_of(ty: ColumnType) -> u32 {
    match ty {
        ColumnType::U8 => 1,
        ColumnType::U16 => 2,
        ColumnType::U32 => 4,
        ColumnType::U64
        | ColumnType::Time
        | ColumnType::Ip
        | ColumnType::Mac
        | ColumnType::Text => 8,
    }
}

/// Decides, for a table with `existing` columns, what to add and widen and how to load each
/// schema column; `Err` names an incompatible column and what to do about it.
pub fn plan_columns(
    table: &str,
    existing: &[ExistingColumn],
    has_time_index: bool,
) -> Result<ColumnPlan, String> {
    plan_columns_for(table, existing, has_time_index, ColumnSet::ALL)
}

/// [`plan_columns`] for a backend that writes only the columns of `set`: others are neither
/// added nor checked, and one of them that is NOT NULL without a default is an error.
pub fn plan_columns_for(
    table: &str,
    existing: &[ExistingColumn],
    has_time_index: bool,
    set: ColumnSet,
) -> Result<ColumnPlan, String> {
    let mut plan = ColumnPlan::default();
    let incompatible = |e: &ExistingColumn, want: &str| {
        format!(
            "column {} of table {} is {}, but goflow writes {want} there; alter or drop the \
             column (or choose another SQL_TABLE)",
            quote_ident(&e.name),
            quote_ident(table),
            e.column_type
        )
    };
    for (i, col) in COLUMNS.iter().enumerate() {
        if !set.contains(col.name) {
            continue;
        }
        let Some(e) = existing
            .iter()
            .find(|e| e.name.eq_ignore_ascii_case(col.name))
        else {
            plan.clauses
                .push(format!("ADD COLUMN {}", column_def(col, false)));
            plan.added.push(col.name);
            continue;
        };
        let null_ok = e.nullable || !col.nullable;
        let null = if e.nullable || col.nullable {
            " NULL"
        } else {
            " NOT NULL"
        };
        let modify = |ty: &str| format!("MODIFY COLUMN {} {ty}{null}", quote_ident(&e.name));
        let widen: Option<String> = match col.ty {
            ColumnType::Time => match e.data_type.as_str() {
                "datetime" | "timestamp" => {
                    if e.precision.unwrap_or(0) < 6 || !null_ok {
                        Some(modify(&format!("{}(6)", e.data_type.to_ascii_uppercase())))
                    } else {
                        None
                    }
                }
                _ => return Err(incompatible(e, col.ty.mysql_type())),
            },
            ColumnType::Ip => match e.data_type.as_str() {
                "varbinary" if e.max_len.unwrap_or(0) >= 16 && null_ok => None,
                "varbinary" | "binary" => Some(modify(col.ty.mysql_type())),
                "tinyblob" | "blob" | "mediumblob" | "longblob" => {
                    (!null_ok).then(|| modify(&e.data_type.to_ascii_uppercase()))
                }
                "int" | "integer" | "bigint" if e.unsigned() => {
                    let v6 = format!("{}v6", e.name);
                    let v6 = existing
                        .iter()
                        .find(|c| {
                            c.name.eq_ignore_ascii_case(&v6)
                                && matches!(c.data_type.as_str(), "varbinary" | "blob")
                        })
                        .map(|c| c.name.clone());
                    if let Some(slot) = plan.layout.loads.get_mut(i) {
                        *slot = Load::IntAddress { v6 };
                    }
                    (!null_ok).then(|| modify(&e.column_type.to_ascii_uppercase()))
                }
                _ => return Err(incompatible(e, col.ty.mysql_type())),
            },
            // Text columns (`aa:bb:cc:dd:ee:ff`, short labels): any text type wide enough.
            ColumnType::Mac | ColumnType::Text => {
                let need = if col.ty == ColumnType::Mac { 17 } else { 16 };
                match e.data_type.as_str() {
                    "char" | "varchar" if e.max_len.unwrap_or(0) >= need && null_ok => None,
                    "char" | "varchar" => Some(modify(col.ty.mysql_type())),
                    "tinytext" | "text" | "mediumtext" | "longtext" => {
                        (!null_ok).then(|| modify(&e.data_type.to_ascii_uppercase()))
                    }
                    _ => return Err(incompatible(e, col.ty.mysql_type())),
                }
            }
            ColumnType::U8 | ColumnType::U16 | ColumnType::U32 | ColumnType::U64 => {
                let Some(w) = e.int_width() else {
                    return Err(incompatible(e, col.ty.mysql_type()));
                };
                let need = width_of(col.ty);
                let holds = if e.unsigned() { w >= need } else { w > need };
                if holds && null_ok {
                    None
                } else if holds {
                    Some(modify(&e.column_type.to_ascii_uppercase()))
                } else {
                    Some(modify(col.ty.mysql_type()))
                }
            }
        };
        if let Some(clause) = widen {
            plan.clauses.push(clause);
            plan.widened.push(col.name);
        }
    }
    for e in existing {
        let ours = set.columns().any(|c| c.name.eq_ignore_ascii_case(&e.name));
        let filled_by_set = plan.layout.loads.iter().any(
            |l| matches!(l, Load::IntAddress { v6: Some(v6) } if v6.eq_ignore_ascii_case(&e.name)),
        );
        if !ours && !filled_by_set && !e.nullable && !e.fillable {
            return Err(format!(
                "column {} of table {} is NOT NULL without a default and goflow does not write \
                 it; give it a default or make it NULL (or choose another SQL_TABLE)",
                quote_ident(&e.name),
                quote_ident(table)
            ));
        }
    }
    if !has_time_index {
        plan.clauses.push(format!(
            "ADD INDEX {} ({})",
            quote_ident(TIME_INDEX),
            quote_ident(TIME_COLUMN)
        ));
    }
    Ok(plan)
}

/// The positions table of `table`: `<table>_positions` (cut to MySQL's 64 characters). One row
/// per stream (a spool, a Kafka partition: see `sink::Position`), updated in the transaction
/// of every flush that carries that stream's chunks.
pub fn positions_table(table: &str) -> String {
    let suffix = "_positions";
    let mut cut = table.len().min(IDENT_MAX - suffix.len());
    while !table.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{suffix}", &table[..cut])
}

/// CREATE TABLE IF NOT EXISTS for the positions table.
pub fn create_positions_table(table: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {} (stream VARCHAR(255) NOT NULL PRIMARY KEY, \
         position BIGINT UNSIGNED NOT NULL, updated_at DATETIME(6) NOT NULL) ENGINE=InnoDB",
        quote_ident(&positions_table(table))
    )
}

/// Stores `n` positions (`(?, ?)` pairs of stream name and position) in one statement.
pub fn upsert_positions(table: &str, n: usize) -> String {
    let values = vec!["(?, ?, UTC_TIMESTAMP(6))"; n.max(1)].join(", ");
    format!(
        "INSERT INTO {} (stream, position, updated_at) VALUES {values} \
         ON DUPLICATE KEY UPDATE position = VALUES(position), updated_at = VALUES(updated_at)",
        quote_ident(&positions_table(table))
    )
}

/// Reads the positions of the streams whose names start with `?`.
pub fn select_positions(table: &str) -> String {
    format!(
        "SELECT stream, position FROM {} WHERE LEFT(stream, CHAR_LENGTH(?)) = ? ORDER BY stream",
        quote_ident(&positions_table(table))
    )
}

/// The GET_LOCK name for setting up `table` in `db` (at most 64 characters).
pub fn schema_lock_name(db: &str, table: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in db.bytes().chain([b'.']).chain(table.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("goflow-schema-{h:016x}")
}

/// What [`ensure_schema`] found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SchemaReport {
    pub created: bool,
    pub added: Vec<&'static str>,
    pub widened: Vec<&'static str>,
    /// The table is partitioned by day on `last_switched` (retention drops partitions).
    pub partitioned: bool,
    pub layout: Layout,
}

/// Why the schema could not be made right.
#[derive(Debug)]
pub enum SchemaError {
    /// The server failed a statement (classify the inner error).
    Db(mysql_async::Error),
    /// The table has a column goflow cannot write; retrying will not help.
    Incompatible(String),
}

impl From<mysql_async::Error> for SchemaError {
    fn from(e: mysql_async::Error) -> Self {
        SchemaError::Db(e)
    }
}

/// Creates the table (partitioned by day from `partition_today` when given) or brings an
/// existing one up to the schema, and creates the positions table; all under GET_LOCK. If this
/// future is dropped midway the caller must drop the connection, which releases the lock.
pub async fn ensure_schema(
    conn: &mut Conn,
    db: &str,
    table: &str,
    partition_today: Option<i64>,
    set: ColumnSet,
) -> Result<SchemaReport, SchemaError> {
    let lock = schema_lock_name(db, table);
    let got: Option<Option<i64>> = conn
        .exec_first(
            "SELECT GET_LOCK(?, ?)",
            (lock.as_str(), SCHEMA_LOCK_WAIT_SECS),
        )
        .await?;
    if got.flatten() != Some(1) {
        return Err(SchemaError::Db(mysql_async::Error::Other(
            format!(
                "schema lock {lock} not granted within {SCHEMA_LOCK_WAIT_SECS} s (another goflow \
                 is setting up table {table})"
            )
            .into(),
        )));
    }
    let result = ensure_schema_locked(conn, table, partition_today, set).await;
    let released = conn
        .exec_drop("SELECT RELEASE_LOCK(?)", (lock.as_str(),))
        .await;
    let report = result?;
    released?;
    Ok(report)
}

async fn existing_columns(
    conn: &mut Conn,
    table: &str,
) -> Result<Vec<ExistingColumn>, mysql_async::Error> {
    type Row = (
        String,
        String,
        String,
        String,
        i64,
        String,
        Option<u64>,
        Option<u64>,
    );
    let rows: Vec<Row> = conn
        .exec(
            "SELECT COLUMN_NAME, LOWER(DATA_TYPE), LOWER(COLUMN_TYPE), IS_NULLABLE, \
             COLUMN_DEFAULT IS NOT NULL, LOWER(EXTRA), DATETIME_PRECISION, \
             CHARACTER_MAXIMUM_LENGTH FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = :t ORDER BY ORDINAL_POSITION",
            params! { "t" => table },
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(
            |(name, data_type, column_type, nullable, has_default, extra, precision, max_len)| {
                ExistingColumn {
                    name,
                    data_type,
                    column_type,
                    nullable: nullable == "YES",
                    fillable: has_default != 0
                        || extra.contains("auto_increment")
                        || extra.contains("generated")
                        || extra.contains("virtual")
                        || extra.contains("stored"),
                    precision,
                    max_len,
                }
            },
        )
        .collect())
}

/// Whether `table` is range-partitioned on TO_DAYS(last_switched).
async fn is_partitioned(conn: &mut Conn, table: &str) -> Result<bool, mysql_async::Error> {
    let n: Option<i64> = conn
        .exec_first(
            "SELECT COUNT(*) FROM information_schema.PARTITIONS WHERE TABLE_SCHEMA = DATABASE() \
             AND TABLE_NAME = ? AND PARTITION_METHOD = 'RANGE' \
             AND LOWER(PARTITION_EXPRESSION) LIKE '%to_days%last_switched%'",
            (table,),
        )
        .await?;
    Ok(n.unwrap_or(0) > 0)
}

async fn ensure_schema_locked(
    conn: &mut Conn,
    table: &str,
    partition_today: Option<i64>,
    set: ColumnSet,
) -> Result<SchemaReport, SchemaError> {
    let mut report = SchemaReport::default();
    let existing = existing_columns(conn, table).await?;
    if existing.is_empty() {
        conn.query_drop(create_table_for(table, partition_today, set))
            .await?;
        report.created = true;
    } else {
        let indexed: Option<i64> = conn
            .exec_first(
                "SELECT COUNT(*) FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = \
                 DATABASE() AND TABLE_NAME = ? AND COLUMN_NAME = ? AND SEQ_IN_INDEX = 1",
                (table, TIME_COLUMN),
            )
            .await?;
        let plan = plan_columns_for(table, &existing, indexed.unwrap_or(0) > 0, set)
            .map_err(SchemaError::Incompatible)?;
        if !plan.clauses.is_empty() {
            conn.query_drop(format!(
                "ALTER TABLE {} {}",
                quote_ident(table),
                plan.clauses.join(", ")
            ))
            .await?;
        }
        report.added = plan.added;
        report.widened = plan.widened;
        report.layout = plan.layout;
    }
    conn.query_drop(create_positions_table(table)).await?;
    report.partitioned = is_partitioned(conn, table).await?;
    Ok(report)
}

/// The day partitions of a partitioned table: (name, TO_DAYS bound) of each, `None` for
/// MAXVALUE.
pub async fn partitions(
    conn: &mut Conn,
    table: &str,
) -> Result<Vec<(String, Option<i64>)>, mysql_async::Error> {
    let rows: Vec<(String, String)> = conn
        .exec(
            "SELECT PARTITION_NAME, PARTITION_DESCRIPTION FROM information_schema.PARTITIONS \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND PARTITION_NAME IS NOT NULL \
             ORDER BY PARTITION_ORDINAL_POSITION",
            (table,),
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|(name, bound)| {
            let bound = bound.trim().parse::<i64>().ok();
            (name, bound)
        })
        .collect())
}

/// What a retention run on a partitioned table does: the partitions to drop (every row older
/// than `max_age_days` before `today`) and the days to add ahead (today up to
/// [`PARTITION_DAYS_AHEAD`] days on, past the last day bound).
pub fn partition_plan(
    parts: &[(String, Option<i64>)],
    today: i64,
    max_age_days: u32,
) -> (Vec<String>, Vec<i64>) {
    let cutoff = today - i64::from(max_age_days) + TO_DAYS_UNIX_EPOCH;
    let drop: Vec<String> = parts
        .iter()
        .filter(|(_, bound)| bound.is_some_and(|b| b <= cutoff))
        .map(|(name, _)| name.clone())
        .collect();
    let last = parts
        .iter()
        .filter_map(|(_, b)| *b)
        .max()
        .map_or(i64::MIN, |b| b - TO_DAYS_UNIX_EPOCH);
    // A day d's partition has the bound d + 1: the days after `last - 1` are missing.
    let add = (today.max(last)..=today + PARTITION_DAYS_AHEAD).collect();
    (drop, add)
}

/// The ALTER that splits the future partition into `days` (ascending) plus a new future one.
pub fn add_partitions(table: &str, days: &[i64]) -> String {
    let mut parts = day_partitions(days.iter().copied());
    parts.push(format!(
        "PARTITION {FUTURE_PARTITION} VALUES LESS THAN MAXVALUE"
    ));
    format!(
        "ALTER TABLE {} REORGANIZE PARTITION {FUTURE_PARTITION} INTO ({})",
        quote_ident(table),
        parts.join(", ")
    )
}

/// One retention run: drops or deletes what is older than `days` days; returns
/// (partitions dropped, rows deleted). `now_us` is the current time (Unix microseconds).
pub async fn prune(
    conn: &mut Conn,
    table: &str,
    days: u32,
    now_us: i64,
) -> Result<(u64, u64), mysql_async::Error> {
    let today = now_us.div_euclid(86_400_000_000);
    if is_partitioned(conn, table).await? {
        let parts = partitions(conn, table).await?;
        let (drop, add) = partition_plan(&parts, today, days);
        if !add.is_empty()
            && parts
                .iter()
                .any(|(n, b)| n == FUTURE_PARTITION && b.is_none())
        {
            conn.query_drop(add_partitions(table, &add)).await?;
        }
        if !drop.is_empty() {
            let names: Vec<String> = drop.iter().map(|n| quote_ident(n)).collect();
            conn.query_drop(format!(
                "ALTER TABLE {} DROP PARTITION {}",
                quote_ident(table),
                names.join(", ")
            ))
            .await?;
        }
        return Ok((drop.len() as u64, 0));
    }
    let cutoff_us = now_us.saturating_sub(i64::from(days) * 86_400_000_000);
    let mut cutoff = bytes::BytesMut::new();
    super::encode::encoder().encode_time(cutoff_us, &mut cutoff);
    let cutoff = String::from_utf8_lossy(&cutoff).into_owned();
    let sql = format!(
        "DELETE FROM {t} WHERE {c} < ? ORDER BY {c} LIMIT {RETENTION_DELETE_BATCH_ROWS}",
        t = quote_ident(table),
        c = quote_ident(TIME_COLUMN)
    );
    let mut total = 0;
    loop {
        conn.exec_drop(&sql, (cutoff.as_str(),)).await?;
        let n = conn.affected_rows();
        total += n;
        if n < RETENTION_DELETE_BATCH_ROWS {
            return Ok((0, total));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, data_type: &str, column_type: &str, nullable: bool) -> ExistingColumn {
        ExistingColumn {
            name: name.into(),
            data_type: data_type.into(),
            column_type: column_type.into(),
            nullable,
            fillable: nullable,
            precision: (data_type == "datetime").then_some(0),
            max_len: (data_type == "varbinary").then_some(16),
        }
    }

    /// The old Go collector's table (backends/mysql/mysql.go): IPv4 as INT UNSIGNED, IPv6 in
    /// src_ipv6/dst_ipv6, 32-bit counters, NOT NULL ports, second-precision times.
    fn old_collector() -> Vec<ExistingColumn> {
        vec![
            col("last_switched", "datetime", "datetime", false),
            col("src_ip", "int", "int(4) unsigned", true),
            col("src_port", "int", "int(2) unsigned", false),
            col("dst_ip", "int", "int(4) unsigned", true),
            col("dst_port", "int", "int(2) unsigned", false),
            col("in_bytes", "int", "int(8) unsigned", false),
            col("in_pkts", "int", "int(8) unsigned", false),
            col("protocol", "int", "int(1) unsigned", false),
            col("src_ipv6", "varbinary", "varbinary(16)", true),
            col("dst_ipv6", "varbinary", "varbinary(16)", true),
        ]
    }

    #[test]
    fn identifiers_and_strings_are_quoted() {
        assert_eq!(quote_ident("flows"), "`flows`");
        assert_eq!(quote_ident("a`b"), "`a``b`");
        assert_eq!(quote_str("it's \\"), "'it''s \\\\'");
    }

    #[test]
    fn create_table_lists_every_column_once_with_mysql_types() {
        let sql = create_table("t", None);
        for c in COLUMNS {
            assert_eq!(
                sql.matches(&format!("`{}` ", c.name)).count(),
                1,
                "{}",
                c.name
            );
            assert!(sql.contains(&format!("`{}` {}", c.name, c.ty.mysql_type())));
        }
        assert!(
            sql.starts_with(
                "CREATE TABLE IF NOT EXISTS `t` (`time_received` DATETIME(6) NOT NULL, "
            )
        );
        assert!(sql.contains("`src_ip` VARBINARY(16) NULL, "));
        assert!(sql.contains("`in_bytes` BIGINT UNSIGNED NULL, "));
        assert!(sql.ends_with("KEY `last_switched_idx` (`last_switched`)) ENGINE=InnoDB"));
    }

    #[test]
    fn partitioned_table_has_today_days_ahead_and_future() {
        // 2026-12-03 is day 20_790 since 1970-01-01; TO_DAYS('2026-12-04') = 740_319.
        let today = 20_790;
        assert_eq!(partition_name(today), "p20261203");
        let sql = create_table("t", Some(today));
        assert!(
            sql.ends_with(
                "ENGINE=InnoDB PARTITION BY RANGE (TO_DAYS(`last_switched`)) (\
             PARTITION p20261203 VALUES LESS THAN (740319), \
             PARTITION p20261204 VALUES LESS THAN (740320), \
             PARTITION p20261205 VALUES LESS THAN (740321), \
             PARTITION pfuture VALUES LESS THAN MAXVALUE)"
            ),
            "{sql}"
        );
    }

    #[test]
    fn partition_plan_drops_whole_old_days_and_adds_ahead() {
        let today = 20_790;
        let b = |d: i64| Some(d + 1 + TO_DAYS_UNIX_EPOCH);
        let parts = vec![
            ("p20261125".to_string(), b(today - 8)),
            ("p20261126".to_string(), b(today - 7)),
            ("p20261127".to_string(), b(today - 6)),
            ("p20261203".to_string(), b(today)),
            ("pfuture".to_string(), None),
        ];
        let (drop, add) = partition_plan(&parts, today, 7);
        // Day today-7 ends at today-6 00:00 > now-7d: kept; today-8 ends at today-7 00:00.
        assert_eq!(drop, vec!["p20261125".to_string()]);
        assert_eq!(add, vec![today + 1, today + 2]);
        let (_, add) = partition_plan(&parts[..3], today, 7);
        assert_eq!(add, vec![today, today + 1, today + 2], "after a long stop");
        let sql = add_partitions("t", &[today + 1]);
        assert_eq!(
            sql,
            "ALTER TABLE `t` REORGANIZE PARTITION pfuture INTO (PARTITION p20261204 VALUES \
             LESS THAN (740320), PARTITION pfuture VALUES LESS THAN MAXVALUE)"
        );
    }

    #[test]
    fn load_statement_for_goflows_table() {
        let sql = load_statement("t", &Layout::default());
        assert!(
            sql.starts_with(
                "LOAD DATA LOCAL INFILE 'goflow' INTO TABLE `t` CHARACTER SET binary FIELDS \
             TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n' \
             (`time_received`,`first_switched`,`last_switched`,"
            ),
            "{sql}"
        );
        assert!(sql.ends_with("`etype`)"));
        assert!(!sql.contains(") SET "));
    }

    #[test]
    fn old_collectors_table_is_extended_and_loaded_in_its_layout() {
        let plan = plan_columns("goflow_records", &old_collector(), true).expect("compatible");
        // Every schema column it lacks is added, nullable.
        let added: Vec<&str> = COLUMNS
            .iter()
            .map(|c| c.name)
            .filter(|n| !old_collector().iter().any(|e| e.name == *n))
            .collect();
        assert_eq!(plan.added, added);
        assert!(
            plan.clauses
                .contains(&"ADD COLUMN `exporter` VARBINARY(16) NULL".to_string())
        );
        // 32-bit counters become 64-bit; NOT NULL ports become NULL; times get microseconds.
        assert!(
            plan.clauses
                .contains(&"MODIFY COLUMN `in_bytes` BIGINT UNSIGNED NULL".to_string())
        );
        assert!(
            plan.clauses
                .contains(&"MODIFY COLUMN `src_port` INT(2) UNSIGNED NULL".to_string())
        );
        assert!(
            plan.clauses
                .contains(&"MODIFY COLUMN `protocol` INT(1) UNSIGNED NULL".to_string())
        );
        assert!(
            plan.clauses
                .contains(&"MODIFY COLUMN `last_switched` DATETIME(6) NOT NULL".to_string())
        );
        assert!(!plan.widened.contains(&"src_ip"));
        assert!(plan.layout.has_int_addresses());
        let sql = load_statement("goflow_records", &plan.layout);
        assert!(sql.contains(",@`src_ip`,@`dst_ip`,`next_hop`,"), "{sql}");
        assert!(
            sql.ends_with(
                " SET `src_ip` = IF(LENGTH(@`src_ip`) = 4, CONV(HEX(@`src_ip`), 16, 10), NULL), \
             `src_ipv6` = IF(LENGTH(@`src_ip`) = 16, @`src_ip`, NULL), \
             `dst_ip` = IF(LENGTH(@`dst_ip`) = 4, CONV(HEX(@`dst_ip`), 16, 10), NULL), \
             `dst_ipv6` = IF(LENGTH(@`dst_ip`) = 16, @`dst_ip`, NULL)"
            ),
            "{sql}"
        );
    }

    #[test]
    fn goflows_own_table_needs_nothing() {
        let existing: Vec<ExistingColumn> = COLUMNS
            .iter()
            .map(|c| {
                let (dt, ct) = match c.ty {
                    ColumnType::Time => ("datetime", "datetime(6)"),
                    ColumnType::Ip => ("varbinary", "varbinary(16)"),
                    ColumnType::U8 => ("tinyint", "tinyint(3) unsigned"),
                    ColumnType::U16 => ("smallint", "smallint(5) unsigned"),
                    ColumnType::U32 => ("int", "int(10) unsigned"),
                    ColumnType::U64 => ("bigint", "bigint(20) unsigned"),
                    ColumnType::Mac => ("char", "char(17)"),
                    ColumnType::Text => ("varchar", "varchar(16)"),
                };
                let max_len = match c.ty {
                    ColumnType::Mac => Some(17),
                    ColumnType::Text => Some(16),
                    _ => (dt == "varbinary").then_some(16),
                };
                ExistingColumn {
                    precision: Some(6),
                    max_len,
                    ..col(c.name, dt, ct, c.nullable)
                }
            })
            .collect();
        let plan = plan_columns("t", &existing, true).expect("compatible");
        assert_eq!(plan, ColumnPlan::default());
        let plan = plan_columns("t", &existing, false).expect("compatible");
        assert_eq!(
            plan.clauses,
            vec!["ADD INDEX `last_switched_idx` (`last_switched`)"]
        );
    }

    #[test]
    fn incompatible_columns_are_named() {
        let mut existing = old_collector();
        existing[1] = col("src_ip", "varchar", "varchar(45)", true);
        let err = plan_columns("t", &existing, true).expect_err("text address");
        assert!(
            err.contains("column `src_ip` of table `t` is varchar(45)"),
            "{err}"
        );
        assert!(err.contains("SQL_TABLE"));
        let mut existing = old_collector();
        existing.push(col("note", "varchar", "varchar(10)", false));
        let err = plan_columns("t", &existing, true).expect_err("not null extra");
        assert!(
            err.contains("`note`") && err.contains("NOT NULL without a default"),
            "{err}"
        );
        let mut existing = old_collector();
        existing[5] = col("in_bytes", "decimal", "decimal(20,0)", true);
        assert!(plan_columns("t", &existing, true).is_err());
    }

    #[test]
    fn positions_and_lock_names_fit_64() {
        assert_eq!(
            positions_table("goflow_records"),
            "goflow_records_positions"
        );
        assert_eq!(positions_table(&"x".repeat(64)).len(), 64);
        assert!(schema_lock_name("test", &"x".repeat(64)).len() <= 64);
        assert_ne!(schema_lock_name("a", "b"), schema_lock_name("a", "c"));
        assert!(upsert_positions("t", 2).contains("VALUES (?, ?, UTC_TIMESTAMP(6)), (?, ?, "));
    }
}
