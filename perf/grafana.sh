#!/usr/bin/env bash
# Grafana panel query times on a large flow table, plain PostgreSQL and TimescaleDB.
#
# For each server: `goflow run` creates the table and its rollup (`<table>_1m`) as it does for
# a user; ROWS flows with realistic distributions (4 exporters, two of them sampled, skewed
# address/port/AS/interface popularity, 20% IPv6, log-uniform flow sizes) spread evenly over
# the last DAYS days are generated with generate_series in batches; the rollup is materialized
# (plain PostgreSQL: goflow's own rollup thread, started again, backfills the closed minutes;
# TimescaleDB: refresh_continuous_aggregate of the history, as after a bulk load), and so is
# the hourly top-K rollup `<table>_1h_top` (goflow's rollup thread on both servers); then every
# SQL panel of grafana_db/ (expanded as Grafana expands it, by tests/grafana_panels.rs's
# dump_panel_queries) runs for the last 1 h, 24 h and 7 days, REPEATS times each, and the
# median wall time (psql \timing) is kept. On TimescaleDB the chunks older than a day are then
# compressed (goflow's compress_after_days settings: segment by exporter, order by time) and the
# compression ratio is printed. The tables are dropped at the end (10 M rows take ~3 GB per
# server). A query is stopped after TIMEOUT_MS (30 s) and counts as that long;
# COMPRESSED_TIMING=1 times the panels again on the compressed chunks.
#
#   perf/grafana.sh
#   ROWS=1000000 perf/grafana.sh           # a quicker look
#   SERVERS="pg" perf/grafana.sh           # plain PostgreSQL only
#
# Servers: PGHOST/PGPORT (default 127.0.0.1:5432) and TimescaleDB at GOFLOW_TEST_TIMESCALE
# (default 127.0.0.1:5433), user postgres, database test. Results: perf/out/grafana-<time>/
# (times.tsv, summary.txt). Needs cargo, psql, curl, jq. Only 127.0.0.1 is used; the goflow
# processes started here are stopped by their PID.
set -euo pipefail
cd "$(dirname "$0")/.."

ROWS=${ROWS:-10000000}
DAYS=${DAYS:-7.5}
BATCH=${BATCH:-1000000}
REPEATS=${REPEATS:-3}
SERVERS=${SERVERS:-"pg ts"}
TIMEOUT_MS=${TIMEOUT_MS:-30000}
COMPRESSED_TIMING=${COMPRESSED_TIMING:-0}
# Extra session settings for the timed queries, e.g. SESSION_OPTIONS="-c jit=off" (as
# `ALTER ROLE grafana SET jit = off` would give Grafana's sessions).
SESSION_OPTIONS=${SESSION_OPTIONS:-}
PG_ADDR=${PGHOST:-127.0.0.1}:${PGPORT:-5432}
TS_ADDR=${GOFLOW_TEST_TIMESCALE:-127.0.0.1:5433}
PGUSER=${PGUSER:-postgres}
DB=${PGDATABASE:-test}

for tool in psql curl jq; do command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 1; }; done
echo "--- building" >&2
cargo build -q --bin goflow
cargo test -q -p goflow --test grafana_panels --no-run 2>/dev/null
GOFLOW=$PWD/target/debug/goflow
OUT=$PWD/perf/out/grafana-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT"
TABLE=goflow_perf_grafana_$$
TIMES=$OUT/times.tsv
printf 'server\tpanel\trange\tmedian_ms\truns_ms\trows\n' >"$TIMES"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for s in $SERVERS; do drop_table "$s" || true; done
}
trap cleanup EXIT

addr() { case $1 in pg) echo "$PG_ADDR" ;; ts) echo "$TS_ADDR" ;; esac; }
sql() { # server, sql...
    local a; a=$(addr "$1"); shift
    psql -X -q -A -t -v ON_ERROR_STOP=1 -h "${a%:*}" -p "${a##*:}" -U "$PGUSER" -d "$DB" "$@"
}
drop_table() {
    sql "$1" -c "DROP TABLE IF EXISTS $TABLE CASCADE; DROP TABLE IF EXISTS ${TABLE}_positions; \
        DROP VIEW IF EXISTS ${TABLE}_1m CASCADE; DROP FUNCTION IF EXISTS ${TABLE}_1m_live(); \
        DROP TABLE IF EXISTS ${TABLE}_1m_data; DROP TABLE IF EXISTS ${TABLE}_1h_top" 2>/dev/null
}
free_tcp() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
free_udp() { python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# goflow run against server $1 until `$2` (a jq test on the backend's /status) holds.
goflow_until() {
    local s=$1 test=$2 a api cfg log pid deadline
    a=$(addr "$s")
    api=127.0.0.1:$(free_tcp)
    cfg=$OUT/$s.yml
    log=$OUT/$s-goflow.log
    cat >"$cfg" <<EOF
backends:
  db:
    type: $([[ $s == ts ]] && echo timescale || echo postgres)
    config: {SQL_SERVER: ${a%:*}, SQL_PORT: "${a##*:}", SQL_USERNAME: $PGUSER, SQL_DB: $DB, SQL_TABLE: $TABLE, SQL_SSLMODE: disable}
frontends:
  netflow:
    config: {bindaddr: 127.0.0.1, bindport: $(free_udp), workers: 1}
    backend: db
api: $api
state_dir: $OUT/state-$s
EOF
    SQL_PASSWORD= "$GOFLOW" --config "$cfg" >>"$log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    deadline=$((SECONDS + 3600))
    until curl -sf "http://$api/status" 2>/dev/null | jq -e ".backends[0] | $test" >/dev/null 2>&1; do
        if ((SECONDS > deadline)) || ! kill -0 "$pid" 2>/dev/null; then
            echo "goflow on $s: timed out ($log)" >&2
            exit 1
        fi
        sleep 1
    done
    kill -TERM "$pid"
    wait "$pid" 2>/dev/null || true
}

generate() { # server
    local s=$1 lo=1 hi
    while ((lo <= ROWS)); do
        hi=$((lo + BATCH - 1))
        ((hi > ROWS)) && hi=$ROWS
        sql "$s" -c "
INSERT INTO $TABLE (time_received, first_switched, last_switched, exporter, observation_domain,
  sampling_rate, src_ip, dst_ip, next_hop, src_port, dst_port, protocol, in_bytes, in_pkts,
  tcp_flags, tos, input_if, output_if, src_as, dst_as, src_mask, dst_mask, direction,
  ip_version, sampling_source)
SELECT ls + interval '1 second', ls - floor(x9 * 120) * interval '1 second', ls,
  ('192.0.2.' || (e + 1))::inet, e, (ARRAY[1000, 100, 1, 1])[e + 1],
  CASE WHEN v6 THEN ('2001:db8:1::' || to_hex(sh / 65536) || ':' || to_hex(sh % 65536))::inet
       ELSE ('10.' || (sh / 65536) % 256 || '.' || (sh / 256) % 256 || '.' || sh % 256)::inet END,
  CASE WHEN v6 THEN ('2001:db8:ff::' || to_hex(dh / 65536) || ':' || to_hex(dh % 65536))::inet
       ELSE ('198.' || 18 + (dh / 65536) % 2 || '.' || (dh / 256) % 256 || '.' || dh % 256)::inet END,
  ('192.0.2.' || (e + 1))::inet,
  CASE WHEN proto = 1 THEN 0 ELSE sport END, dport, proto,
  bytes, greatest(1, bytes / 700), CASE WHEN proto = 6 THEN 27 ELSE 0 END, 0,
  e * 16 + inif, e * 16 + (inif + 1 + floor(x8 * 3)::int) % 8,
  64512 + floor(power(x6, 3) * 500)::int, 13335 + floor(power(x7, 2) * 800)::int,
  CASE WHEN v6 THEN 64 ELSE 24 END, CASE WHEN v6 THEN 48 ELSE 16 END,
  (x8 < 0.1)::int, CASE WHEN v6 THEN 6 ELSE 4 END, 'config'
FROM (
  SELECT now() - ($DAYS * 86400 * (g::float8 / $ROWS) + x9) * interval '1 second' AS ls,
    CASE WHEN x1 < 0.5 THEN 0 WHEN x1 < 0.75 THEN 1 WHEN x1 < 0.9 THEN 2 ELSE 3 END AS e,
    x2 < 0.2 AS v6,
    1 + floor(power(x3, 4) * 20000)::int AS sh,
    1 + floor(power(x4, 3) * 200000)::int AS dh,
    32768 + floor(x5 * 28000)::int AS sport,
    CASE WHEN x5 < 0.02 THEN 771 WHEN x6 < 0.45 THEN 443 WHEN x6 < 0.6 THEN 80
         WHEN x6 < 0.7 THEN 53 WHEN x6 < 0.74 THEN 22 WHEN x6 < 0.78 THEN 123
         ELSE 1024 + floor(power(x7, 2) * 64000)::int END AS dport,
    CASE WHEN x5 < 0.02 THEN 1 WHEN x6 >= 0.6 AND x6 < 0.7 OR x6 >= 0.74 AND x6 < 0.78
         OR x7 < 0.05 THEN 17 ELSE 6 END AS proto,
    floor(40 * exp(x8 * 11))::bigint AS bytes,
    floor(power(x9, 2) * 8)::int AS inif,
    x6, x7, x8, x9
  FROM (SELECT g, random() x1, random() x2, random() x3, random() x4, random() x5, random() x6,
          random() x7, random() x8, random() x9 FROM generate_series($lo, $hi) g) r
) s"
        lo=$((hi + 1))
    done
    # As autovacuum would by now: summarizes the BRIN ranges (rows inserted after the index was
    # made are in no summary until a VACUUM, and an unsummarized range is always read).
    sql "$s" -c "VACUUM ANALYZE $TABLE"
}

time_panels() { # server, label
    local s=$1 label=$2 dir=$OUT/sql-$s f name range ms runs rows t a
    a=$(addr "$s")
    rm -rf "$dir"
    GOFLOW_PANEL_DUMP=$dir GOFLOW_PANEL_TABLE=$TABLE GOFLOW_PANEL_TIMESCALE=$([[ $s == ts ]] && echo 1 || echo 0) \
        GOFLOW_PANEL_PG=$a PGUSER=$PGUSER PGDATABASE=$DB \
        cargo test -q -p goflow --test grafana_panels -- --ignored --exact dump_panel_queries \
        >"$OUT/dump-$s.log" 2>&1 || { cat "$OUT/dump-$s.log" >&2; exit 1; }
    for f in "$dir"/*.sql; do
        name=$(head -1 "$f" | sed 's/^-- //')
        range=$(basename "$f" .sql); range=${range##*.}
        runs=()
        for _ in $(seq "$REPEATS"); do
            # A query over TIMEOUT_MS counts as TIMEOUT_MS.
            t=$(PGOPTIONS="-c statement_timeout=$TIMEOUT_MS $SESSION_OPTIONS" psql -X -q -A -t -h "${a%:*}" -p "${a##*:}" \
                -U "$PGUSER" -d "$DB" -o "$OUT/rows.txt" -c '\timing on' -f "$f" 2>/dev/null \
                | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | tail -1)
            runs+=("${t:-$TIMEOUT_MS}")
        done
        ms=$(printf '%s\n' "${runs[@]}" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
        rows=$(wc -l <"$OUT/rows.txt")
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$(basename "$f" | cut -d. -f1-2) $name" "$range" "$ms" \
            "$(IFS=,; echo "${runs[*]}")" "$rows" >>"$TIMES"
    done
    echo "$label timed; $(uptime)" | tee -a "$OUT/load.txt" >&2
    # The plans of the rollup panels at 24 h and 7 d (and their 1 h raw-table runs): which
    # UNION ALL branch ran (the others show "never executed" or a One-Time Filter: false), and
    # the JIT summary (shown only with costs): JIT compilation is outside every plan node.
    mkdir -p "$OUT/explain-$label"
    for f in $(grep -l '_1h_top\|_1m' "$dir"/*.sql); do
        { head -1 "$f"; PGOPTIONS="-c statement_timeout=$TIMEOUT_MS $SESSION_OPTIONS" psql -X -q -A -t -h "${a%:*}" -p "${a##*:}" \
            -U "$PGUSER" -d "$DB" -c "EXPLAIN (ANALYZE) $(sed 1d "$f" | sed 's/;$//')" 2>&1; } \
            >"$OUT/explain-$label/$(basename "$f" .sql).txt"
    done
}

for s in $SERVERS; do
    if ! sql "$s" -c "SELECT 1" >/dev/null 2>&1; then
        echo "--- $s ($(addr "$s")): no server, skipped" >&2
        continue
    fi
    drop_table "$s" || true
    echo "--- $s: table and rollup by goflow ($(uptime))" >&2
    goflow_until "$s" '(.sink.connected | tostring) == "true" and .sink.rollup != null'
    echo "--- $s: generating $ROWS rows over $DAYS days" >&2
    t0=$SECONDS
    generate "$s"
    echo "$s: generated $ROWS rows in $((SECONDS - t0)) s; table $(sql "$s" -c "SELECT pg_size_pretty(pg_total_relation_size('$TABLE'))") \
        ($([[ $s == ts ]] && sql "$s" -c "SELECT pg_size_pretty(hypertable_size('$TABLE'))") ); $(uptime)" | tee -a "$OUT/load.txt" >&2
    t0=$SECONDS
    if [[ $s == ts ]]; then
        sql "$s" -c "CALL refresh_continuous_aggregate('${TABLE}_1m', NULL, date_trunc('minute', now()) - interval '1 minute')"
    else
        goflow_until "$s" '(.sink.rollup_materialized_to | tostring) != "null"'
    fi
    echo "$s: rollup materialized in $((SECONDS - t0)) s: $(sql "$s" -c "SELECT count(*) FROM ${TABLE}_1m") rows; $(uptime)" | tee -a "$OUT/load.txt" >&2
    # The hourly top-K rollup: goflow's rollup thread (both servers) materializes the closed hours.
    t0=$SECONDS
    goflow_until "$s" '(.sink.top_materialized_to | tostring) != "null"'
    sql "$s" -c "VACUUM ANALYZE ${TABLE}_1h_top"
    echo "$s: top-K rollup materialized in $((SECONDS - t0)) s: $(sql "$s" -c "SELECT count(*) || ' rows, ' || count(DISTINCT bucket) || ' hours, ' || pg_size_pretty(pg_total_relation_size('${TABLE}_1h_top')) FROM ${TABLE}_1h_top"); $(uptime)" | tee -a "$OUT/load.txt" >&2
    time_panels "$s" "$s"
    if [[ $s == ts ]]; then
        sql "$s" -c "ALTER TABLE $TABLE SET (timescaledb.compress, timescaledb.compress_segmentby = 'exporter', timescaledb.compress_orderby = 'last_switched DESC')"
        t0=$SECONDS
        sql "$s" -c "SELECT count(compress_chunk(c)) FROM show_chunks('$TABLE', older_than => interval '1 day') c" >/dev/null
        sql "$s" -c "VACUUM ANALYZE $TABLE"
        sql "$s" -F ' ' -c "SELECT 'compressed ' || count(*) || ' chunks in $((SECONDS - t0)) s: ' ||
            pg_size_pretty(sum(before_compression_total_bytes)) || ' -> ' || pg_size_pretty(sum(after_compression_total_bytes)) ||
            ' (ratio ' || round(sum(before_compression_total_bytes)::numeric / nullif(sum(after_compression_total_bytes), 0), 1) || 'x)'
            FROM chunk_compression_stats('$TABLE') WHERE compression_status = 'Compressed'" | tee -a "$OUT/load.txt" >&2
        if [[ $COMPRESSED_TIMING == 1 ]]; then time_panels "$s" "ts-compressed"; fi
    fi
    drop_table "$s"
done

# One line per panel and range: the medians side by side.
{
    echo "load: $(cat "$OUT/load.txt" | tr '\n' ' ')"
    printf '%-62s %6s' panel range
    for l in $(cut -f1 "$TIMES" | tail -n +2 | awk '!seen[$0]++'); do printf ' %14s' "$l"; done
    echo
    tail -n +2 "$TIMES" | awk -F'\t' '
        { key = $2 "\t" $3; if (!(key in seen)) { order[++n] = key; seen[key] = 1 }
          v[key, $1] = $4; if (!($1 in lab)) { labs[++m] = $1; lab[$1] = 1 } }
        END { for (i = 1; i <= n; i++) { split(order[i], k, "\t"); printf "%-62s %6s", substr(k[1], 1, 62), k[2];
              for (j = 1; j <= m; j++) printf " %11.1f ms", v[order[i], labs[j]]; print "" } }'
} | tee "$OUT/summary.txt"
echo "results in $OUT" >&2
