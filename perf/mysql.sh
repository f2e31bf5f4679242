#!/usr/bin/env bash
# MySQL / MariaDB: goflow's LOAD DATA sink against the server's own ceiling for the same rows and
# table, and against nfacctd's mysql plugin, side by side in one run.
#
# The rows: FLOWS NetFlow v9 flows from `goflow bench` (fixed seed, EXPORTERS exporters). The
# same flows are dumped once as LOAD DATA text with goflow's own encoder (perf/mysql_load_dump.rs)
# for the ceiling, into a table created LIKE goflow's (same definition, same index).
#
# REPEATS rounds, interleaved so the machine's load hits every measurement alike; each round,
# with `uptime` printed before it:
# - ceiling: the mariadb client's LOAD DATA LOCAL INFILE of the file (one stream), and of the
#   file by two clients at once (two streams, as goflow's default two connections);
# - goflow: the flows sent at BURST_RATE (above what the server takes, below what the receiver
#   takes), held in goflow's queue and stored through its connections; the rate is rows stored
#   per second from the first datagram to the last commit, every row checked (count, sums, no
#   drops). That is the sustained rate: what the sink drains from a full queue.
# Medians over the rounds, and the median of the per-round ratios goflow / ceiling.
# Then the lossless search, with one rule and one procedure for both collectors (see "The
# lossless search" below): goflow from TARGET_SHARE (0.85) of the median ceiling (its first step
# is the check of the 85% target), and nfacctd (pmacct) with its mysql plugin
# (perf/nfacctd-mysql.conf, table perf/my_nfacctd.sql: multi-row INSERTs, its fastest MySQL path)
# from PEER_START (default PEER_START_SHARE of the median ceiling). Each goes up until a step
# fails, then bisects: the result is each collector's lossless maximum to within
# SEARCH_PRECISION. CPU per flow (utime+stime from /proc) for both.
# Server settings are the defaults (innodb_flush_log_at_trx_commit, buffer pool: see the README
# for tuning). The defaults take about 10-15 minutes on a 2-core machine (the two searches are
# bounded by SEARCH_BUDGET_S each).
#
#   perf/mysql.sh
#   REPEATS=5 FLOWS=2000000 perf/mysql.sh
#   CONNECTIONS=1 NFACCTD=0 perf/mysql.sh        # goflow with one LOAD DATA connection
#   PEER_START=40000 STEP_S=20 perf/mysql.sh     # longer steps (a stricter rule), nfacctd from 40 k/s
#   COLUMNS=nfacctd perf/mysql.sh                # goflow (and the ceiling) storing nfacctd's fields
#
# COLUMNS is goflow's `columns:` for the run (comma-separated names; default all 45). `nfacctd`
# stands for the fields the peer's table stores per flow (perf/nfacctd-mysql.conf's aggregation
# and counters): exporter, addresses, ports, protocol, tos, TCP flags, interfaces, AS numbers,
# masks, first and last switched, packets and bytes. The ceiling's rows follow the same set.
#
# Server from MYSQL_HOST/MYSQL_PORT/MYSQL_USER/MYSQL_PASSWORD/MYSQL_DATABASE (default 127.0.0.1
# 3306 root, no password, test). Results go to perf/out/mysql-<time>/. Needs cargo, jq, curl,
# mariadb, nfacctd. Only 127.0.0.1 is used; every process started here is stopped by its own
# PID; the tables it creates are dropped at the end. Run it under `flock /tmp/goflow-perf.lock`.
set -euo pipefail
cd "$(dirname "$0")/.."

FLOWS=${FLOWS:-1000000}
REPEATS=${REPEATS:-3}
BURST_RATE=${BURST_RATE:-400000}
TARGET_SHARE=${TARGET_SHARE:-0.85}
CONNECTIONS=${CONNECTIONS:-2}
STEP_S=${STEP_S:-10}
RAMP=${RAMP:-1.25}
SEARCH_PRECISION=${SEARCH_PRECISION:-0.05}
SEARCH_STEPS=${SEARCH_STEPS:-12}
SEARCH_BUDGET_S=${SEARCH_BUDGET_S:-420}
POLL_S=${POLL_S:-0.1}
SUM_PPM=${SUM_PPM:-100}
PEER_START=${PEER_START:-}
PEER_START_SHARE=${PEER_START_SHARE:-0.3}
EXPORTERS=${EXPORTERS:-4}
WORKERS=${WORKERS:-1}
LAG_MAX_S=${LAG_MAX_S:-3}
STALL_S=${STALL_S:-15}
NFACCTD=${NFACCTD:-1}
COLUMNS=${COLUMNS:-all}
if [ "$COLUMNS" = nfacctd ]; then
  COLUMNS=exporter,src_ip,dst_ip,src_port,dst_port,protocol,tos,tcp_flags,input_if,output_if,src_as,dst_as,src_mask,dst_mask,first_switched,last_switched,in_pkts,in_bytes
fi
MYSQL_HOST=${MYSQL_HOST:-127.0.0.1} MYSQL_PORT=${MYSQL_PORT:-3306} MYSQL_USER=${MYSQL_USER:-root}
MYSQL_DATABASE=${MYSQL_DATABASE:-test} MYSQL_PASSWORD=${MYSQL_PASSWORD:-}

for tool in jq curl mariadb; do command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 1; }; done
if [ -z "${NO_BUILD:-}" ]; then # NO_BUILD=1: the release binaries as they are
  echo "--- building (release)" >&2
  cargo build --release -q --bin goflow --example mysql_load_dump
fi
GOFLOW=$PWD/target/release/goflow
DUMP=$PWD/target/release/examples/mysql_load_dump
OUT=$PWD/perf/out/mysql-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT"
TICK=$(getconf CLK_TCK)
RESULTS=$OUT/results.tsv
TABLE=goflow_perf_$$
CEIL=goflow_perf_ceiling_$$
NFT=nfacctd_perf_$$
printf 'collector\trate_asked\trate_sent\tsent\trows\tbytes_ppm\tpkts_ppm\tkernel_drops\tdropped\tlag_s\tstored_per_s\tcpu_s\tcpu_us_per_flow\tlossless\tserver_us_row\n' >"$RESULTS"

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
fdiv() { awk -v a="$1" -v b="$2" -v f="${3:-%.3f}" 'BEGIN {if (b + 0 > 0 && a != "nan") printf f, a / b; else print "nan"}'; }
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

record() { # collector asked sent_rate sent rows bytes_ppm pkts_ppm kdrops dropped lag cpu_ticks sum_ppm_max server_us_row
  local cpu_s us ok=no stored
  cpu_s=$(fdiv "${11}" "$TICK" %.2f)
  # Rows stored per second from the first datagram to the last commit.
  stored=$(awk -v n="$4" -v r="$3" -v l="${10}" 'BEGIN {if (r > 0) printf "%.0f", n / (n / r + l); else print "nan"}')
  us=$(awk -v t="${11}" -v k="$TICK" -v n="$4" 'BEGIN {if (n > 0) printf "%.3f", t / k * 1e6 / n; else print "nan"}')
  if [ "$5" = "$4" ] && within "$6" "${12}" && within "$7" "${12}" && [ "$8" = 0 ] && [ "$9" = 0 ] \
    && awk -v l="${10}" -v m="$LAG_MAX_S" 'BEGIN {exit !(l <= m)}'; then
    ok=yes
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "$6" "$7" "$8" "$9" "${10}" "$stored" "$cpu_s" "$us" "$ok" "${13}" | tee -a "$RESULTS" >&2
}

# ------------------------------------------------------------------------------------------
# goflow, its table, and the ceiling's file and table
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
      connections: $CONNECTIONS
      queue_bytes: 1073741824
      columns: [$COLUMNS]
frontends:
  netflow:
    config: {bindaddr: 127.0.0.1, bindport: $PORT, workers: $WORKERS, rcvbuf: 268435456}
    backend: my
api: 127.0.0.1:$API
state_dir: $OUT/state
EOF
SQL_PASSWORD=$MYSQL_PASSWORD "$GOFLOW" --config "$OUT/goflow.yml" run 2>"$OUT/goflow.log" &
GPID=$!
PIDS+=("$GPID")
status() { curl -s --max-time 2 "http://127.0.0.1:$API/status"; }
written() { status | jq '.backends[0].rows_written'; }
for _ in $(seq 1 100); do status >/dev/null 2>&1 && break; sleep 0.1; done
# The table exists once the sink has connected: one tiny warm-up run.
bench 1000 1000 "$PORT" >/dev/null
for _ in $(seq 1 100); do
  [ "$(written)" -ge 1000 ] 2>/dev/null && break
  sleep 0.1
done

echo "--- the ceiling's rows: the same $FLOWS flows as LOAD DATA text (goflow's encoder), columns: $COLUMNS" >&2
"$GOFLOW" bench --proto v9 --rate 0 --flows "$FLOWS" --exporters "$EXPORTERS" \
  --target "127.0.0.1:$(free_udp)" --write-pcap "$OUT/flows.pcap" >/dev/null 2>&1
read -r load_rows load_bytes <<<"$("$DUMP" "$OUT/flows.pcap" "$OUT/flows.tsv" "$CEIL" "$COLUMNS")"
rm -f "$OUT/flows.pcap"
sql "CREATE TABLE $CEIL LIKE $TABLE"
load() { "${MY[@]}" --local-infile=1 <"$OUT/flows.tsv.sql"; }

# One goflow run of FLOWS flows at $1 flows/s: prints "sent sent_rate rows bytes_ppm pkts_ppm
# kdrops dropped lag stored_per_s cpu_ticks" (stored_per_s: rows / (first datagram to last
# commit)).
goflow_step() {
  local rate=$1 s0 w0 d0 k0 c0 t0 summary t_end sent sent_rate want_bytes want_pkts prev same t_done w c1 rows bytes pkts s1
  sql "TRUNCATE TABLE $TABLE"
  s0=$(status)
  w0=$(jq '.backends[0].rows_written' <<<"$s0")
  d0=$(jq '.backends[0].rows_dropped' <<<"$s0")
  k0=$(udp_drops "$PORT")
  c0=$(ticks "$GPID")
  t0=$(now)
  summary=$(bench "$rate" "$FLOWS" "$PORT")
  t_end=$(now)
  sent=$(jq '.flows' <<<"$summary")
  sent_rate=$(jq '.flows_per_sec' <<<"$summary")
  want_bytes=$(jq '.sum_bytes' <<<"$summary")
  want_pkts=$(jq '.sum_packets' <<<"$summary")
  # Until every row is committed, or nothing moved for STALL_S (a LOAD of flush_rows rows on a
  # loaded server takes seconds, and rows_written moves only at commits), at most 20 minutes.
  prev=-1 t_done=$t_end t_moved=$SECONDS
  for _ in $(seq 1 24000); do
    w=$(($(written) - w0))
    if [ "$w" -ge "$sent" ]; then t_done=$(now); break; fi
    if [ "$w" != "$prev" ]; then t_moved=$SECONDS; t_done=$(now); fi
    ((SECONDS - t_moved >= STALL_S)) && break
    prev=$w
    sleep 0.05
  done
  c1=$(ticks "$GPID")
  read -r rows bytes pkts <<<"$(sql "SELECT count(*), coalesce(sum(in_bytes), 0), coalesce(sum(in_pkts), 0) FROM $TABLE")"
  s1=$(status)
  echo "$sent $sent_rate $rows $(ppm "$bytes" "$want_bytes") $(ppm "$pkts" "$want_pkts")" \
    "$(($(udp_drops "$PORT") - k0)) $(($(jq '.backends[0].rows_dropped' <<<"$s1") - d0))" \
    "$(awk -v a="$t_done" -v b="$t_end" 'BEGIN {printf "%.2f", a - b}')" \
    "$(awk -v n="$rows" -v a="$t0" -v b="$t_done" 'BEGIN {printf "%.0f", n / (b - a)}') $((c1 - c0))"
}

# The server's CPU (utime+stime of mariadbd/mysqld, when it runs on this machine; the TRUNCATE
# and count(*) around a measurement included) and its CPU-µs per row stored.
SERVER_PID=$(pgrep -xo mariadbd || pgrep -xo mysqld || true)
server_ticks() { if [ -n "$SERVER_PID" ]; then ticks "$SERVER_PID"; else echo 0; fi; }
server_us() { if [ -n "$SERVER_PID" ]; then fdiv "$((($2 - $1) * 1000000 / TICK))" "$3" %.2f; else echo nan; fi; }
mid() { sort -g | awk '{a[NR] = $1} END {if (NR == 0) print "nan"; else print a[int((NR + 1) / 2)]}'; }
ROUNDS=$OUT/rounds.tsv
printf 'round\tload1\tceiling_rows_s\tceiling2_rows_s\tgoflow_rows_s\tgoflow_ok\tgoflow_cpu_us_flow\tratio\tratio_2stream\tserver_us_row_1\tserver_us_row_2\tserver_us_row_goflow\n' >"$ROUNDS"
echo "--- $REPEATS rounds: ceiling (1 and 2 streams) and goflow ($CONNECTIONS connections, burst at $BURST_RATE flows/s), $FLOWS rows each" >&2
for round in $(seq 1 "$REPEATS"); do
  echo "round $round: $(uptime)" >&2
  sql "TRUNCATE TABLE $CEIL"
  s0=$(server_ticks); t0=$(now); load; t1=$(now); s1=$(server_ticks)
  n=$(sql "SELECT count(*) FROM $CEIL")
  su1=$(server_us "$s0" "$s1" "$n")
  [ "$n" = "$load_rows" ] || echo "WARNING: LOAD DATA stored $n rows of $load_rows" >&2
  c1=$(awk -v n="$n" -v a="$t0" -v b="$t1" 'BEGIN {printf "%.0f", n / (b - a)}')
  sql "TRUNCATE TABLE $CEIL"
  s0=$(server_ticks); t0=$(now); load & p1=$!; load; wait "$p1"; t1=$(now); s1=$(server_ticks)
  n2=$(sql "SELECT count(*) FROM $CEIL")
  su2=$(server_us "$s0" "$s1" "$n2")
  c2=$(awk -v n="$n2" -v a="$t0" -v b="$t1" 'BEGIN {printf "%.0f", n / (b - a)}')
  sql "TRUNCATE TABLE $CEIL"
  s0=$(server_ticks)
  read -r sent sent_rate rows bppm pppm kd dr lag stored cpu <<<"$(goflow_step "$BURST_RATE")"
  sug=$(server_us "$s0" "$(server_ticks)" "$rows")
  ok=no
  if [ "$rows" = "$sent" ] && [ "$bppm" = 0.0 ] && [ "$pppm" = 0.0 ] && [ "$kd" = 0 ] && [ "$dr" = 0 ]; then ok=yes; fi
  us=$(awk -v t="$cpu" -v k="$TICK" -v n="$sent" 'BEGIN {printf "%.3f", t / k * 1e6 / n}')
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$(cut -d' ' -f1 /proc/loadavg)" "$c1" "$c2" "$stored" "$ok" "$us" \
    "$(fdiv "$stored" "$c1" %.3f)" "$(fdiv "$stored" "$c2" %.3f)" "$su1" "$su2" "$sug" >>"$ROUNDS"
  echo "  ceiling $c1 rows/s (two streams $c2), goflow $stored rows/s stored ($rows of $sent rows, sums ppm $bppm/$pppm, drops $kd/$dr, sent at $sent_rate/s, CPU $us us/flow)" >&2
done
col() { tail -n +2 "$ROUNDS" | cut -f"$1" | mid; }
CEIL_MED=$(col 3)
CEIL2_MED=$(col 4)
GOFLOW_MED=$(col 5)
US_MED=$(col 7)
RATIO_MED=$(col 8)
RATIO2_MED=$(col 9)
ALL_OK=$(tail -n +2 "$ROUNDS" | cut -f6 | sort -u | tr '\n' ' ')
rm -f "$OUT/flows.tsv" "$OUT/flows.tsv.sql"
sql "DROP TABLE $CEIL"

# ------------------------------------------------------------------------------------------
# The lossless search, one rule for both collectors.
# ------------------------------------------------------------------------------------------
# A step at rate R sends R * STEP_S flows (so every step is STEP_S seconds of traffic, whatever
# the rate, for both collectors) and waits until every row is stored, or the count has not moved
# for STALL_S. It is lossless when rows == sent exactly, both sums are within SUM_PPM (100) of the
# generator's (nfacctd's sums drift by 0.1-20 ppm with every row present, at rates it keeps up
# with; goflow's are exact in every step, and the deviations are printed for both),
# no kernel or collector drops, and the last row was stored within LAG_MAX_S of the last datagram
# (the collector kept up: over a STEP_S step it stored at least STEP_S / (STEP_S + LAG_MAX_S) of
# the offered rate). The rows are counted the same way for both: count(*) of the table every
# POLL_S after the last datagram (the lag), count(*) and the sums over the table at the end.
#
# The search: the first step at the start rate, then up by RAMP after each lossless step until a
# step is lossy (down by RAMP while the first ones are lossy), then bisection between the highest
# lossless and the lowest lossy rate until they are within SEARCH_PRECISION of each other, at most
# SEARCH_STEPS steps or SEARCH_BUDGET_S seconds per collector. The result is the highest lossless
# step's sent rate: the lossless maximum to within SEARCH_PRECISION (or, when the budget ran out,
# a lower bound, said so).
step_flows() { awk -v r="$1" -v s="$STEP_S" 'BEGIN {printf "%.0f", r * s}'; }

# collector hooks: truncate, rows stored so far, the final count and sums, collector drops, CPU
# ticks, port.
c_truncate() { if [ "$1" = goflow ]; then sql "TRUNCATE TABLE $TABLE"; else sql "TRUNCATE TABLE $NFT"; fi; }
c_stored() { if [ "$1" = goflow ]; then sql "SELECT count(*) FROM $TABLE"; else sql "SELECT count(*) FROM $NFT"; fi; }
c_totals() {
  if [ "$1" = goflow ]; then sql "SELECT count(*), coalesce(sum(in_bytes), 0), coalesce(sum(in_pkts), 0) FROM $TABLE"
  else sql "SELECT count(*), coalesce(sum(bytes), 0), coalesce(sum(packets), 0) FROM $NFT"; fi
}
c_dropped() { if [ "$1" = goflow ]; then status | jq '.backends[0].rows_dropped'; else echo 0; fi; }
c_ticks() { if [ "$1" = goflow ]; then ticks "$GPID"; else tree_ticks "$NPID"; fi; }
c_port() { if [ "$1" = goflow ]; then echo "$PORT"; else echo "$NPORT"; fi; }

# One step of the search: collector rate; appends a line to RESULTS, returns 0 when lossless.
search_step() {
  local who=$1 rate=$2 flows port k0 d0 c0 sv0 sv1 summary t_end sent sent_rate want_bytes want_pkts prev t_done t_moved w c1 rows bytes pkts
  flows=$(step_flows "$rate")
  port=$(c_port "$who")
  c_truncate "$who"
  d0=$(c_dropped "$who")
  k0=$(udp_drops "$port")
  c0=$(c_ticks "$who")
  sv0=$(server_ticks)
  summary=$(bench "$rate" "$flows" "$port")
  t_end=$(now)
  sent=$(jq '.flows' <<<"$summary")
  sent_rate=$(jq '.flows_per_sec' <<<"$summary")
  want_bytes=$(jq '.sum_bytes' <<<"$summary")
  want_pkts=$(jq '.sum_packets' <<<"$summary")
  prev=-1 t_done=$t_end t_moved=$SECONDS
  for _ in $(seq 1 20000); do # at most 20000 polls
    w=$(c_stored "$who")
    if [ "$w" -ge "$sent" ]; then t_done=$(now); break; fi
    if [ "$w" != "$prev" ]; then t_moved=$SECONDS; t_done=$(now); fi
    ((SECONDS - t_moved >= STALL_S)) && break
    prev=$w
    sleep "$POLL_S"
  done
  c1=$(c_ticks "$who")
  sv1=$(server_ticks)
  read -r rows bytes pkts <<<"$(c_totals "$who")"
  record "$who" "$rate" "$sent_rate" "$sent" "$rows" "$(ppm "$bytes" "$want_bytes")" "$(ppm "$pkts" "$want_pkts")" \
    "$(($(udp_drops "$port") - k0))" "$(($(c_dropped "$who") - d0))" \
    "$(awk -v a="$t_done" -v b="$t_end" 'BEGIN {printf "%.2f", a - b}')" $((c1 - c0)) "$SUM_PPM" \
    "$(server_us "$sv0" "$sv1" "$rows")"
  [ "$(tail -n1 "$RESULTS" | cut -f14)" = yes ]
}

# search collector start_rate max_rate: sets BEST (sent rate of the highest lossless step, 0 if
# none), BEST_US, BEST_ASKED, FAIL (lowest lossy rate asked, 0 if none), SEARCH_NOTE.
search() {
  local who=$1 rate=$2 max=$3 lo=0 hi=0 n=0 t0=$SECONDS
  BEST=0 BEST_US=nan BEST_ASKED=0 FAIL=0 SEARCH_NOTE=
  echo "--- $who: lossless search from $rate flows/s, $STEP_S s per step ($(uptime))" >&2
  while :; do
    if ((n >= SEARCH_STEPS || SECONDS - t0 >= SEARCH_BUDGET_S)); then
      SEARCH_NOTE="budget ran out after $n steps: a lower bound"
      break
    fi
    n=$((n + 1))
    if search_step "$who" "$rate"; then
      lo=$rate
      BEST=$(tail -n1 "$RESULTS" | cut -f3)
      BEST_US=$(tail -n1 "$RESULTS" | cut -f13)
      BEST_ASKED=$rate
    else
      hi=$rate
    fi
    if [ "$hi" = 0 ]; then
      if [ "$rate" -ge "$max" ]; then SEARCH_NOTE="lossless at the generator's cap $max"; break; fi
      rate=$(awk -v r="$rate" -v f="$RAMP" -v m="$max" 'BEGIN {r = r * f; if (r > m) r = m; printf "%.0f", r}')
    elif [ "$lo" = 0 ]; then
      rate=$(awk -v r="$rate" -v f="$RAMP" 'BEGIN {printf "%.0f", r / f}')
    else
      if awk -v l="$lo" -v h="$hi" -v p="$SEARCH_PRECISION" 'BEGIN {exit !(h <= l * (1 + p))}'; then
        SEARCH_NOTE="within $SEARCH_PRECISION: lossless at $lo, lossy at $hi flows/s asked"
        break
      fi
      rate=$(awk -v l="$lo" -v h="$hi" 'BEGIN {printf "%.0f", (l + h) / 2}')
    fi
  done
  FAIL=$hi
  [ -n "$SEARCH_NOTE" ] || SEARCH_NOTE="$n steps"
  echo "  $who: highest lossless $BEST flows/s sent ($BEST_ASKED asked), lowest lossy $FAIL asked; $SEARCH_NOTE" >&2
}

# goflow paced at TARGET_SHARE of the median ceiling: the lossless check of the target, and the
# first step of goflow's search.
TARGET_RATE=$(awk -v c="$CEIL_MED" -v s="$TARGET_SHARE" 'BEGIN {printf "%.0f", c * s}')
search goflow "$TARGET_RATE" "$BURST_RATE"
GOFLOW_TARGET_OK=$(awk -F'\t' '$1 == "goflow" {print $14; exit}' "$RESULTS")
GOFLOW_TARGET_US=$(awk -F'\t' '$1 == "goflow" {print $13; exit}' "$RESULTS")
GF_BEST=$BEST GF_BEST_US=$BEST_US GF_NOTE=$SEARCH_NOTE
GOFLOW_HWM_KIB=$(awk '/VmHWM/ {print $2}' "/proc/$GPID/status")
status | jq '.backends[0].sink' >"$OUT/goflow-sink-status.json" || true

# ------------------------------------------------------------------------------------------
# The peer: nfacctd with its mysql plugin, the same search and rule.
# ------------------------------------------------------------------------------------------
NF_BEST=0
NF_BEST_US=nan
NF_NOTE="not run"
if [ "$NFACCTD" = 1 ] && command -v nfacctd >/dev/null; then
  stop_pid "$GPID"
  NPORT=$(free_udp)
  sed -e "s/@TABLE@/$NFT/" perf/my_nfacctd.sql | "${MY[@]}"
  sed -e "s/@PORT@/$NPORT/; s/@HOST@/$MYSQL_HOST/; s/@PORT_DB@/$MYSQL_PORT/; s/@USER@/$MYSQL_USER/" \
    -e "s/@PASSWORD@/$MYSQL_PASSWORD/; s/@DB@/$MYSQL_DATABASE/; s/@TABLE@/$NFT/" \
    perf/nfacctd-mysql.conf >"$OUT/nfacctd.conf"
  nfacctd -f "$OUT/nfacctd.conf" >"$OUT/nfacctd.log" 2>&1 &
  NPID=$!
  PIDS+=("$NPID")
  for _ in $(seq 1 100); do grep -qs 'waiting for NetFlow' "$OUT/nfacctd.log" && break; sleep 0.1; done
  # The templates and a warm-up batch; its rows must be stored before the first step's
  # TRUNCATE (else they land in the first step's count). The plugin process starts after the
  # core logs, so the batch is sent again until rows arrive (at most 10 tries).
  for _ in $(seq 1 10); do
    bench 1000 1000 "$NPORT" >/dev/null
    for _ in $(seq 1 30); do
      [ "$(sql "SELECT count(*) FROM $NFT")" -gt 0 ] && break 2
      sleep 0.1
    done
  done
  prev=-1
  for _ in $(seq 1 50); do # until the count is still for 1 s (nfacctd purges every second)
    p=$(sql "SELECT count(*) FROM $NFT")
    [ "$p" = "$prev" ] && break
    prev=$p
    sleep 1
  done
  NF_START=${PEER_START:-$(awk -v c="$CEIL_MED" -v f="$PEER_START_SHARE" 'BEGIN {printf "%.0f", c * f}')}
  search nfacctd "$NF_START" "$BURST_RATE"
  NF_BEST=$BEST NF_BEST_US=$BEST_US NF_NOTE=$SEARCH_NOTE
fi
# ------------------------------------------------------------------------------------------
echo
echo "== results ($OUT); load average at start $LOAD_START, at end $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) CPUs)"
column -t -s $'\t' "$ROUNDS"
echo
column -t -s $'\t' "$RESULTS"
echo
echo "ceiling, mariadb LOAD DATA (median of $REPEATS): $CEIL_MED rows/s one stream, $CEIL2_MED rows/s two streams at once"
echo "goflow, $CONNECTIONS connection(s) (median of $REPEATS): $GOFLOW_MED rows/s stored from a full queue (every row stored and checked: $ALL_OK), $US_MED CPU-us/flow"
echo "server CPU-us per row stored (median): $(col 10) one stream, $(col 11) two streams, $(col 12) from goflow"
echo "goflow / ceiling: median of the per-round ratios $RATIO_MED (one stream), $RATIO2_MED (two streams)   (target >= 0.85)"
echo "goflow paced at $TARGET_SHARE x ceiling ($TARGET_RATE flows/s, $STEP_S s): lossless $GOFLOW_TARGET_OK at $GOFLOW_TARGET_US CPU-us/flow (peak RSS ${GOFLOW_HWM_KIB:-?} KiB)"
echo "goflow  lossless maximum: $GF_BEST flows/s at $GF_BEST_US CPU-us/flow ($GF_NOTE)"
echo "nfacctd lossless maximum: $NF_BEST flows/s at $NF_BEST_US CPU-us/flow ($NF_NOTE)"
echo "goflow / nfacctd: $(fdiv "$GF_BEST" "$NF_BEST" %.2f) by lossless maximum (same rule), $(fdiv "$GOFLOW_MED" "$NF_BEST" %.2f) by goflow's drain rate   (target >= 3)"
echo "CPU per flow at the lossless maximum, nfacctd / goflow: $(fdiv "$NF_BEST_US" "$GF_BEST_US" %.1f)"
