#!/usr/bin/env bash
# MySQL / MariaDB end to end: `goflow bench` (NetFlow v9) -> `goflow run` (release build, mysql
# backend, LOAD DATA LOCAL INFILE streamed from memory, default 2 connections) -> MariaDB, at
# rising rates, FLOWS flows per step. For every step: flows sent, rows stored,
# SUM(in_bytes)/SUM(in_pkts) against the generator's sums, kernel and backend drops, the lag from
# the last datagram to the last commit, and goflow's CPU time per flow (utime+stime from /proc).
# A step is lossless when rows == sent, both sums are equal, nothing was dropped and the lag
# stays under LAG_MAX_S (goflow not falling behind).
#
# In the same run:
# - the ceiling: the same flows (same generator seed) dumped once as LOAD DATA text with
#   goflow's own encoder (perf/mysql_load_dump.rs) and loaded by the mariadb client with
#   goflow's LOAD DATA LOCAL INFILE statement into an identical table (best of two) -> rows/s;
#   and the same file loaded by two clients at once (the server's two-stream rate, which
#   goflow's default two connections can reach);
# - the peer: nfacctd (pmacct) with its mysql plugin (perf/nfacctd-mysql.conf, table
#   perf/my_nfacctd.sql: multi-row INSERTs, its fastest MySQL path) on the same generator,
#   PEER_FLOWS per step at PEER_RATES; lossless as for goflow but with PEER_SUM_PPM tolerance
#   on the counts and sums (as in perf/postgres.sh). goflow gets no tolerance.
# Server settings are the defaults (innodb_flush_log_at_trx_commit, buffer pool: see the README
# for tuning). Each ramp stops after two lossy steps in a row.
#
#   perf/mysql.sh
#   FLOWS=1000000 RATES="100000 150000" NFACCTD=0 perf/mysql.sh   # a quicker look
#
# Server from MYSQL_HOST/MYSQL_PORT/MYSQL_USER/MYSQL_PASSWORD/MYSQL_DATABASE (default 127.0.0.1
# 3306 root, no password, test). Results go to perf/out/mysql-<time>/. Needs cargo, jq, curl,
# mariadb, nfacctd. Only 127.0.0.1 is used; every process started here is stopped by its own
# PID; the tables it creates are dropped at the end. Run it under `flock /tmp/goflow-perf.lock`.
set -euo pipefail
cd "$(dirname "$0")/.."

FLOWS=${FLOWS:-3000000}
RATES=${RATES:-"100000 150000 200000 250000 300000"}
PEER_FLOWS=${PEER_FLOWS:-1000000}
PEER_RATES=${PEER_RATES:-"20000 40000 60000 80000 100000"}
PEER_SUM_PPM=${PEER_SUM_PPM:-100}
EXPORTERS=${EXPORTERS:-4}
WORKERS=${WORKERS:-1}
LAG_MAX_S=${LAG_MAX_S:-3}
NFACCTD=${NFACCTD:-1}
MYSQL_HOST=${MYSQL_HOST:-127.0.0.1} MYSQL_PORT=${MYSQL_PORT:-3306} MYSQL_USER=${MYSQL_USER:-root}
MYSQL_DATABASE=${MYSQL_DATABASE:-test} MYSQL_PASSWORD=${MYSQL_PASSWORD:-}

for tool in jq curl mariadb; do command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 1; }; done
echo "--- building (release)" >&2
cargo build --release -q --bin goflow --example mysql_load_dump
GOFLOW=$PWD/target/release/goflow
DUMP=$PWD/target/release/examples/mysql_load_dump
OUT=$PWD/perf/out/mysql-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT"
TICK=$(getconf CLK_TCK)
RESULTS=$OUT/results.tsv
TABLE=goflow_perf_$$
CEIL=goflow_perf_ceiling_$$
NFT=nfacctd_perf_$$
printf 'collector\trate_asked\trate_sent\tsent\trows\tbytes_ppm\tpkts_ppm\tkernel_drops\tdropped\tlag_s\tstored_per_s\tcpu_s\tcpu_us_per_flow\tlossless\n' >"$RESULTS"

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
MY=(mariadb -h "$MYSQL_HOST" -P "$MYSQL_PORT" -u "$MYSQL_USER" -N -B "$MYSQL_DATABASE")
export MYSQL_PWD=$MYSQL_PASSWORD
sql() { "${MY[@]}" -e "$1"; }
PIDS=()
# Stops a process we started (and its children) by PID: TERM, then KILL after 3 s (nfacctd's
# core process does not always exit on TERM once its plugin is gone).
stop_pid() {
  local p=$1 c i
  for c in $(pgrep -P "$p" 2>/dev/null || true); do kill -TERM "$c" 2>/dev/null || true; done
  kill -TERM "$p" 2>/dev/null || true
  for i in $(seq 1 30); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$p" 2>/dev/null; then
    for c in $(pgrep -P "$p" 2>/dev/null || true); do kill -KILL "$c" 2>/dev/null || true; done
    kill -KILL "$p" 2>/dev/null || true
  fi
  wait "$p" 2>/dev/null || true
}
cleanup() {
  for p in "${PIDS[@]:-}"; do
    [ -n "$p" ] && stop_pid "$p"
  done
  sql "DROP TABLE IF EXISTS $TABLE, ${TABLE}_positions, $CEIL, $NFT" 2>/dev/null || true
}
trap cleanup EXIT

free_udp() { python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
free_tcp() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }
# CPU ticks of a process and its (reaped) children: utime+stime+cutime+cstime.
ticks() { awk '{print $14 + $15 + $16 + $17}' "/proc/$1/stat" 2>/dev/null || echo 0; }
# The same for a process and its live children (nfacctd: core + plugin).
tree_ticks() {
  local t c
  t=$(ticks "$1")
  for c in $(pgrep -P "$1" 2>/dev/null || true); do t=$((t + $(ticks "$c"))); done
  echo "$t"
}
fdiv() { awk -v a="$1" -v b="$2" -v f="${3:-%.3f}" 'BEGIN {if (b > 0) printf f, a / b; else print "nan"}'; }
# Kernel drops of the UDP socket(s) on a port (sum over SO_REUSEPORT members).
udp_drops() {
  local hex
  hex=$(printf '%04X' "$1")
  awk -v p=":$hex" 'NR > 1 && $2 ~ p"$" {d += $NF} END {print d + 0}' /proc/net/udp
}
bench() { # rate flows port -> the bench's JSON summary
  "$GOFLOW" bench --proto v9 --rate "$1" --flows "$2" --exporters "$EXPORTERS" --target "127.0.0.1:$3" 2>/dev/null
}

# (stored - sent) / sent in parts per million.
ppm() { awk -v got="$1" -v want="$2" 'BEGIN {if (want > 0) printf "%.1f", (got - want) / want * 1e6; else print "nan"}'; }
within() { awk -v v="$1" -v m="$2" 'BEGIN {exit !(v != "nan" && v <= m && -v <= m)}'; }

record() { # collector asked sent_rate sent rows bytes_ppm pkts_ppm kdrops dropped lag cpu_ticks sum_ppm_max
  local cpu_s us ok=no stored
  cpu_s=$(fdiv "${11}" "$TICK" %.2f)
  # Rows stored per second from the first datagram to the last commit.
  stored=$(awk -v n="$4" -v r="$3" -v l="${10}" 'BEGIN {if (r > 0) printf "%.0f", n / (n / r + l); else print "nan"}')
  us=$(awk -v t="${11}" -v k="$TICK" -v n="$4" 'BEGIN {if (n > 0) printf "%.3f", t / k * 1e6 / n; else print "nan"}')
  if within "$(ppm "$5" "$4")" "${12}" && within "$6" "${12}" && within "$7" "${12}" && [ "$8" = 0 ] && [ "$9" = 0 ] \
    && awk -v l="${10}" -v m="$LAG_MAX_S" 'BEGIN {exit !(l <= m)}'; then
    ok=yes
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "$6" "$7" "$8" "$9" "${10}" "$stored" "$cpu_s" "$us" "$ok" | tee -a "$RESULTS" >&2
}

# ------------------------------------------------------------------------------------------
# goflow
# ------------------------------------------------------------------------------------------
PORT=$(free_udp)
API=$(free_tcp)
cat >"$OUT/goflow.yml" <<EOF
backends:
  my:
    type: mysql
    config:
      SQL_SERVER: $MYSQL_HOST
      SQL_PORT: $MYSQL_PORT
      SQL_USERNAME: $MYSQL_USER
      SQL_DB: $MYSQL_DATABASE
      SQL_TABLE: $TABLE
frontends:
  netflow:
    config: {bindaddr: 127.0.0.1, bindport: $PORT, workers: $WORKERS, rcvbuf: 268435456}
    backend: my
api: 127.0.0.1:$API
EOF
echo "--- goflow: $FLOWS flows per step at $RATES flows/s (v9, $EXPORTERS exporters, $WORKERS worker(s), 2 LOAD DATA connections)" >&2
SQL_PASSWORD=$MYSQL_PASSWORD "$GOFLOW" --config "$OUT/goflow.yml" run 2>"$OUT/goflow.log" &
GPID=$!
PIDS+=("$GPID")
status() { curl -s --max-time 2 "http://127.0.0.1:$API/status"; }
for _ in $(seq 1 100); do status >/dev/null 2>&1 && break; sleep 0.1; done
# The table exists once the sink has connected: one tiny warm-up run.
bench 1000 1000 "$PORT" >/dev/null
for _ in $(seq 1 100); do
  [ "$(status | jq '.backends[0].rows_written')" -ge 1000 ] 2>/dev/null && break
  sleep 0.1
done

GOFLOW_BEST=0
GOFLOW_BEST_US=nan
GOFLOW_BEST_STORED=0
lossy=0
for rate in $RATES; do
  sql "TRUNCATE TABLE $TABLE"
  s0=$(status)
  w0=$(jq '.backends[0].rows_written' <<<"$s0")
  d0=$(jq '.backends[0].rows_dropped' <<<"$s0")
  k0=$(udp_drops "$PORT")
  c0=$(ticks "$GPID")
  summary=$(bench "$rate" "$FLOWS" "$PORT")
  t_end=$(now)
  sent=$(jq '.flows' <<<"$summary")
  sent_rate=$(jq '.flows_per_sec' <<<"$summary")
  want_bytes=$(jq '.sum_bytes' <<<"$summary")
  want_pkts=$(jq '.sum_packets' <<<"$summary")
  # Wait for the last commit (or for the count to stop moving).
  prev=-1 same=0 t_done=$t_end
  for _ in $(seq 1 600); do
    w=$(($(status | jq '.backends[0].rows_written') - w0))
    if [ "$w" -ge "$sent" ]; then t_done=$(now); break; fi
    if [ "$w" = "$prev" ]; then same=$((same + 1)); else same=0; t_done=$(now); fi
    [ "$same" -ge 30 ] && break
    prev=$w
    sleep 0.1
  done
  c1=$(ticks "$GPID")
  lag=$(awk -v a="$t_done" -v b="$t_end" 'BEGIN {printf "%.2f", a - b}')
  read -r rows bytes pkts <<<"$(sql "SELECT count(*), coalesce(sum(in_bytes), 0), coalesce(sum(in_pkts), 0) FROM $TABLE")"
  s1=$(status)
  dropped=$(($(jq '.backends[0].rows_dropped' <<<"$s1") - d0))
  kdrops=$(($(udp_drops "$PORT") - k0))
  record goflow "$rate" "$sent_rate" "$sent" "$rows" "$(ppm "$bytes" "$want_bytes")" "$(ppm "$pkts" "$want_pkts")" \
    "$kdrops" "$dropped" "$lag" $((c1 - c0)) 0
  if tail -n1 "$RESULTS" | grep -q 'yes$'; then
    GOFLOW_BEST=$sent_rate
    GOFLOW_BEST_US=$(tail -n1 "$RESULTS" | cut -f13)
    GOFLOW_BEST_STORED=$(tail -n1 "$RESULTS" | cut -f11)
    lossy=0
  else
    lossy=$((lossy + 1))
    [ "$lossy" -ge 2 ] && break
  fi
done
GOFLOW_HWM_KIB=$(awk '/VmHWM/ {print $2}' "/proc/$GPID/status")
status | jq '.backends[0].sink' >"$OUT/goflow-sink-status.json" || true

# ------------------------------------------------------------------------------------------
# The ceiling: the mariadb client's LOAD DATA LOCAL INFILE of the same rows, goflow's encoder.
# ------------------------------------------------------------------------------------------
echo "--- ceiling: the same $FLOWS flows through mariadb LOAD DATA LOCAL INFILE" >&2
"$GOFLOW" bench --proto v9 --rate 0 --flows "$FLOWS" --exporters "$EXPORTERS" \
  --target "127.0.0.1:$PORT" --write-pcap "$OUT/flows.pcap" >/dev/null 2>&1
read -r load_rows load_bytes <<<"$("$DUMP" "$OUT/flows.pcap" "$OUT/flows.tsv" "$CEIL")"
rm -f "$OUT/flows.pcap"
sql "CREATE TABLE $CEIL LIKE $TABLE"
load() { "${MY[@]}" --local-infile=1 <"$OUT/flows.tsv.sql"; }
CEIL_BEST=0
for attempt in 1 2; do
  sql "TRUNCATE TABLE $CEIL"
  t0=$(now)
  load
  t1=$(now)
  n=$(sql "SELECT count(*) FROM $CEIL")
  r=$(awk -v n="$n" -v a="$t0" -v b="$t1" 'BEGIN {printf "%.0f", n / (b - a)}')
  echo "ceiling attempt $attempt: $n rows ($load_bytes bytes) in $(fdiv "$n" "$r" %.2f) s = $r rows/s" >&2
  [ "$n" = "$load_rows" ] || echo "WARNING: LOAD DATA stored $n rows of $load_rows" >&2
  [ "$r" -gt "$CEIL_BEST" ] && CEIL_BEST=$r
done
CEIL2_BEST=0
for attempt in 1 2; do
  sql "TRUNCATE TABLE $CEIL"
  t0=$(now)
  load &
  p1=$!
  load
  wait "$p1"
  t1=$(now)
  n=$(sql "SELECT count(*) FROM $CEIL")
  r=$(awk -v n="$n" -v a="$t0" -v b="$t1" 'BEGIN {printf "%.0f", n / (b - a)}')
  echo "two-stream ceiling attempt $attempt: $n rows in $(fdiv "$n" "$r" %.2f) s = $r rows/s" >&2
  [ "$r" -gt "$CEIL2_BEST" ] && CEIL2_BEST=$r
done
rm -f "$OUT/flows.tsv" "$OUT/flows.tsv.sql"
sql "DROP TABLE $CEIL"

# ------------------------------------------------------------------------------------------
# The peer: nfacctd with its mysql plugin.
# ------------------------------------------------------------------------------------------
NF_BEST=0
NF_BEST_US=nan
if [ "$NFACCTD" = 1 ] && command -v nfacctd >/dev/null; then
  stop_pid "$GPID"
  echo "--- nfacctd: $PEER_FLOWS flows per step at $PEER_RATES flows/s" >&2
  NPORT=$(free_udp)
  sed -e "s/@TABLE@/$NFT/" perf/my_nfacctd.sql | "${MY[@]}"
  sed -e "s/@PORT@/$NPORT/; s/@HOST@/$MYSQL_HOST/; s/@PORT_DB@/$MYSQL_PORT/; s/@USER@/$MYSQL_USER/" \
    -e "s/@PASSWORD@/$MYSQL_PASSWORD/; s/@DB@/$MYSQL_DATABASE/; s/@TABLE@/$NFT/" \
    perf/nfacctd-mysql.conf >"$OUT/nfacctd.conf"
  nfacctd -f "$OUT/nfacctd.conf" >"$OUT/nfacctd.log" 2>&1 &
  NPID=$!
  PIDS+=("$NPID")
  for _ in $(seq 1 100); do grep -qs 'waiting for NetFlow' "$OUT/nfacctd.log" && break; sleep 0.1; done
  sleep 1 # the plugin process starts after the core logs
  bench 1000 1000 "$NPORT" >/dev/null # templates
  sleep 3
  lossy=0
  for rate in $PEER_RATES; do
    sql "TRUNCATE TABLE $NFT"
    k0=$(udp_drops "$NPORT")
    c0=$(tree_ticks "$NPID")
    summary=$(bench "$rate" "$PEER_FLOWS" "$NPORT")
    t_end=$(now)
    sent=$(jq '.flows' <<<"$summary")
    sent_rate=$(jq '.flows_per_sec' <<<"$summary")
    want_bytes=$(jq '.sum_bytes' <<<"$summary")
    want_pkts=$(jq '.sum_packets' <<<"$summary")
    prev=-1 same=0 t_done=$t_end
    for _ in $(seq 1 120); do
      p=$(sql "SELECT count(*) FROM $NFT")
      if [ "$p" -ge "$sent" ]; then t_done=$(now); break; fi
      if [ "$p" = "$prev" ]; then same=$((same + 1)); else same=0; t_done=$(now); fi
      [ "$same" -ge 6 ] && break
      prev=$p
      sleep 0.5
    done
    c1=$(tree_ticks "$NPID")
    lag=$(awk -v a="$t_done" -v b="$t_end" 'BEGIN {printf "%.2f", a - b}')
    read -r rows bytes pkts <<<"$(sql "SELECT count(*), coalesce(sum(bytes), 0), coalesce(sum(packets), 0) FROM $NFT")"
    kdrops=$(($(udp_drops "$NPORT") - k0))
    # nfacctd's lag includes its 1 s purge interval.
    LAG_MAX_S=$((LAG_MAX_S + 1)) record nfacctd "$rate" "$sent_rate" "$sent" "$rows" "$(ppm "$bytes" "$want_bytes")" \
      "$(ppm "$pkts" "$want_pkts")" "$kdrops" 0 "$lag" $((c1 - c0)) "$PEER_SUM_PPM"
    if tail -n1 "$RESULTS" | grep -q 'yes$'; then
      NF_BEST=$sent_rate
      NF_BEST_US=$(tail -n1 "$RESULTS" | cut -f13)
      lossy=0
    else
      lossy=$((lossy + 1))
      [ "$lossy" -ge 2 ] && break
    fi
  done
fi

# ------------------------------------------------------------------------------------------
echo
echo "== results ($RESULTS); load average at start $LOAD_START, at end $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) CPUs)"
column -t -s $'\t' "$RESULTS"
echo
echo "goflow  highest lossless rate: $GOFLOW_BEST flows/s at $GOFLOW_BEST_US CPU-us/flow (peak RSS ${GOFLOW_HWM_KIB:-?} KiB; queue_bytes 256 MiB)"
echo "ceiling mariadb LOAD DATA:    $CEIL_BEST rows/s (one stream), $CEIL2_BEST rows/s (two streams at once)"
echo "nfacctd highest lossless rate: $NF_BEST flows/s at $NF_BEST_US CPU-us/flow"
echo "goflow / ceiling: $(fdiv "$GOFLOW_BEST" "$CEIL_BEST" %.2f) by rate sent, $(fdiv "$GOFLOW_BEST_STORED" "$CEIL_BEST" %.2f) by rows stored per second (first datagram to last commit)   (target >= 0.85)"
echo "goflow / two-stream ceiling: $(fdiv "$GOFLOW_BEST" "$CEIL2_BEST" %.2f) by rate sent, $(fdiv "$GOFLOW_BEST_STORED" "$CEIL2_BEST" %.2f) by rows stored per second"
echo "goflow / nfacctd: $(fdiv "$GOFLOW_BEST" "$NF_BEST" %.2f)   (target >= 3)"
echo "CPU per flow, nfacctd / goflow: $(fdiv "$NF_BEST_US" "$GOFLOW_BEST_US" %.1f)"
