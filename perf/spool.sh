#!/usr/bin/env bash
# The disk spool (issue 17), one run, release build, goflow bench (NetFlow v9) -> goflow run
# (postgres backend, one worker) on 127.0.0.1:
#   1. healthy path, spool off (spool_bytes: 0) and spool on (default): FLOWS flows at RATE into a
#      reachable PostgreSQL; goflow's CPU per flow (utime+stime from /proc) for both: the
#      before/after of the normal path, measured in the same run;
#   2. down: the backend points at a port where nothing listens; FLOWS flows at RATE_DOWN go to
#      the spool: flows/s spooled, CPU per flow, spool bytes;
#   3. replay: goflow restarted against the reachable server with the same state_dir and no
#      traffic: rows/s replayed (spool rows / time until the spool is empty), CPU per row, and
#      the stored count against the spooled one.
#
#   perf/spool.sh
#   FLOWS=2000000 RATE=300000 RATE_DOWN=300000 perf/spool.sh
#
# Takes /tmp/goflow-perf.lock while measuring. Server from PGHOST/PGPORT/PGUSER/PGDATABASE
# (default 127.0.0.1:5432 postgres test). Every process started here is stopped by its own PID;
# the table and the temporary state_dir are removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

FLOWS=${FLOWS:-2000000}
RATE=${RATE:-200000}
RATE_DOWN=${RATE_DOWN:-300000}
export PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-5432} PGUSER=${PGUSER:-postgres} PGDATABASE=${PGDATABASE:-test}
for tool in jq curl psql; do command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 1; }; done

if [ -z "${GOFLOW:-}" ]; then
    cargo build --release -q --bin goflow
    GOFLOW=$PWD/target/release/goflow
fi
TICK=$(getconf CLK_TCK)
WORK=$(mktemp -d /tmp/goflow-spool-perf.XXXXXX)
TABLE=goflow_spool_perf_$$
PID=
cleanup() {
    [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true
    psql -X -q -c "DROP TABLE IF EXISTS $TABLE; DROP TABLE IF EXISTS ${TABLE}_positions" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UDP=$(free_port); API=$(free_port); DEAD=$(free_port)

config() { # $1 = SQL port, $2 = spool_bytes
    cat >"$WORK/config.yml" <<EOF
backends:
  db:
    type: postgres
    config: {SQL_SERVER: 127.0.0.1, SQL_PORT: $1, SQL_USERNAME: $PGUSER, SQL_DB: $PGDATABASE, SQL_TABLE: $TABLE, spool_bytes: $2}
frontends:
  netflow:
    config: {bindaddr: 127.0.0.1, bindport: $UDP, workers: 1}
    backend: db
api: 127.0.0.1:$API
state_dir: $WORK/state
EOF
}
start() {
    "$GOFLOW" --config "$WORK/config.yml" run 2>>"$WORK/goflow.log" &
    PID=$!
    for _ in $(seq 200); do curl -sf "http://127.0.0.1:$API/status" >/dev/null && return; sleep 0.05; done
    echo "goflow did not start" >&2; cat "$WORK/goflow.log" >&2; exit 1
}
stop() { kill "$PID"; wait "$PID" 2>/dev/null || true; PID=; }
cpu() { awk -v t="$TICK" '{print ($14+$15)/t}' "/proc/$PID/stat"; }
st() { curl -sf "http://127.0.0.1:$API/status"; }
rows() { psql -X -q -A -t -c "SELECT count(*) FROM $TABLE" 2>/dev/null || echo 0; }
wait_for() { # $1 = jq condition on /status, $2 = seconds
    for _ in $(seq $(($2 * 20))); do
        [ "$(st | jq -r "$1")" = true ] && return 0; sleep 0.05
    done
    return 1
}
bench() { "$GOFLOW" bench --target "127.0.0.1:$UDP" --rate "$1" --flows "$FLOWS" >/dev/null 2>&1; }

exec 9>/tmp/goflow-perf.lock
flock 9
printf 'phase\tflows\tseconds\tflows_per_s\tcpu_s\tcpu_us_per_flow\tnote\n'

healthy() { # $1 = spool_bytes, $2 = label
    psql -X -q -c "DROP TABLE IF EXISTS $TABLE" >/dev/null 2>&1 || true
    rm -rf "$WORK/state"
    config "$PGPORT" "$1"; start
    local c0 t0 c1 t1
    c0=$(cpu); t0=$(date +%s.%N)
    bench "$RATE"
    wait_for ".backends[0].rows_written >= $FLOWS" 60 || true
    c1=$(cpu); t1=$(date +%s.%N)
    local written; written=$(st | jq '.backends[0].rows_written')
    stop
    awk -v f="$FLOWS" -v a="$t0" -v b="$t1" -v c="$c0" -v d="$c1" -v w="$written" -v l="$2" \
        'BEGIN{printf "%s\t%d\t%.2f\t%.0f\t%.2f\t%.3f\twritten %d\n", l, f, b-a, f/(b-a), d-c, (d-c)*1e6/f, w}'
}
healthy 0 "healthy spool off"
healthy 1073741824 "healthy spool on"

# Down: nothing listens on $DEAD.
psql -X -q -c "DROP TABLE IF EXISTS $TABLE; DROP TABLE IF EXISTS ${TABLE}_positions" >/dev/null 2>&1 || true
rm -rf "$WORK/state"
config "$DEAD" 1073741824; start
c0=$(cpu); t0=$(date +%s.%N)
bench "$RATE_DOWN"
wait_for "(.backends[0].spool.rows_spooled + .backends[0].rows_dropped) >= $FLOWS and .backends[0].spool.memory_bytes == 0" 60 || true
c1=$(cpu); t1=$(date +%s.%N)
S=$(st)
SPOOLED=$(jq '.backends[0].spool.rows_spooled' <<<"$S")
BYTES=$(jq '.backends[0].spool.bytes' <<<"$S")
KDROP=$(jq '.totals.drops.kernel' <<<"$S")
DROPPED=$(jq '.backends[0].rows_dropped' <<<"$S")
stop
awk -v f="$SPOOLED" -v a="$t0" -v b="$t1" -v c="$c0" -v d="$c1" -v by="$BYTES" -v k="$KDROP" -v s="$FLOWS" -v x="$DROPPED" \
    'BEGIN{printf "down->spool\t%d\t%.2f\t%.0f\t%.2f\t%.3f\tsent %d, spool %.1f MB, kernel drops %d, rows refused (spool memory/disk bound) %d\n", f, b-a, f/(b-a), d-c, (d-c)*1e6/f, s, by/1e6, k, x}'

# Replay into the reachable server.
config "$PGPORT" 1073741824; start
c0=$(cpu); t0=$(date +%s.%N)
wait_for ".backends[0].spool.rows_replayed >= $SPOOLED" 300 || true
c1=$(cpu); t1=$(date +%s.%N)
REPLAYED=$(st | jq '.backends[0].spool.rows_replayed')
stop
STORED=$(rows)
awk -v f="$REPLAYED" -v a="$t0" -v b="$t1" -v c="$c0" -v d="$c1" -v s="$STORED" -v sp="$SPOOLED" \
    'BEGIN{printf "replay\t%d\t%.2f\t%.0f\t%.2f\t%.3f\tstored %d of %d spooled\n", f, b-a, f/(b-a), d-c, (d-c)*1e6/f, s, sp}'
