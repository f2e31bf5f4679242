#!/usr/bin/env bash
# Hostile-exporter figures (issue 13): idle CPU after N distinct exporters, and the records/s of
# a real exporter (goflow bench, v5 from 127.0.0.1) with and without a flood of spoofed ones
# (v9 datagrams whose data set has no template, each from a new 127.x.y.z source: every one
# costs an exporter entry, a sequence stream and a no_template count, none carries a record, so
# the daemon's record count is the real exporter's alone).
#
#   perf/hostile.sh [BIN]          # BIN defaults to target/release/goflow
#   N=100000 FLOOD_SECS=10 RATE=50000 perf/hostile.sh /tmp/before/goflow
#
# Prints one line per figure. Takes /tmp/goflow-perf.lock itself. Kills only what it started.
set -euo pipefail
BIN=${1:-target/release/goflow}
N=${N:-100000}
ENGINES=${ENGINES:-1}
IDLE_SECS=${IDLE_SECS:-10}
FLOOD_SECS=${FLOOD_SECS:-10}
RATE=${RATE:-50000}
WORKERS=${WORKERS:-2}
HERE=$(cd "$(dirname "$0")" && pwd)
[ -n "${HOSTILE_LOCKED:-}" ] || HOSTILE_LOCKED=1 exec flock /tmp/goflow-perf.lock "$0" "$@"

DIR=$(mktemp -d /tmp/goflow-hostile.XXXXXX)
PORT=$(python3 -c 'import socket;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
API=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
cat > "$DIR/config.yml" <<YML
backends:
  out: {type: null}
frontends:
  netflow:
    config: {bindaddr: 127.0.0.1, bindport: $PORT, workers: $WORKERS}
    backend: out
api: 127.0.0.1:$API
state_dir: $DIR/state
YML
PID=
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$DIR"; }
trap cleanup EXIT

cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
records() { curl -s -m 20 "http://127.0.0.1:$API/metrics" | awk '$1=="goflow_decoder_records_total"{print $2}'; }
spray() { # $1 = mode (v5|v9nt), $2 = count or seconds, $3 = first source index
python3 - "$PORT" "$1" "$2" "$3" "$ENGINES" <<'PY'
import socket, struct, sys, time
port, mode, amount, first, engines = int(sys.argv[1]), sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
def v5(seq, engine):
    hdr = struct.pack(">HHIIIIBBH", 5, 1, 3600000, 1700000000, 0, seq, 0, engine, 0)
    rec = struct.pack(">IIIHHIIIIHHBBBBHHBBH", 0x0a000001, 0x0a000002, 0, 1, 2, 10, 1000, 1000, 2000, 1234, 80, 0, 0x10, 6, 0, 0, 0, 24, 24, 0)
    return hdr + rec
def v9nt(seq):
    hdr = struct.pack(">HHIIII", 9, 1, 3600000, 1700000000, seq, 0)
    return hdr + struct.pack(">HH", 300, 8) + b"\0\0\0\0"
def src(i):
    i %= 1 << 22
    return "127.%d.%d.%d" % (16 + (i >> 16), (i >> 8) & 255, i & 255)
sent = 0
if mode == "v5":
    for i in range(first, first + int(amount)):
        for e in range(engines):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((src(i), 0))
            s.sendto(v5(i, e), ("127.0.0.1", port)); s.close(); sent += 1
else:
    end = time.time() + amount; i = first
    while time.time() < end:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((src(i), 0))
        s.sendto(v9nt(i), ("127.0.0.1", port)); s.close(); sent += 1; i += 1
print(sent)
PY
}

"$BIN" --config "$DIR/config.yml" run 2>"$DIR/log" &
PID=$!
for _ in $(seq 100); do grep -q "listening on udp" "$DIR/log" 2>/dev/null && break; sleep 0.1; done
HZ=$(getconf CLK_TCK)

# 1. Baseline: the real exporter alone.
r0=$(records)
"$BIN" bench --proto v5 --rate "$RATE" --duration "$FLOOD_SECS" --target "127.0.0.1:$PORT" >"$DIR/bench0" 2>&1
sleep 1
r1=$(records)
echo "alone: real exporter $(( (r1 - r0) / FLOOD_SECS )) records/s stored of $RATE/s sent"

# 2. Idle CPU after N distinct exporters (x ENGINES engine ids).
t=$(date +%s.%N); sent=$(spray v5 "$N" 0); t=$(echo "$(date +%s.%N) - $t" | bc)
echo "sprayed $sent datagrams from $N sources in ${t}s"
sleep 5
c0=$(cpu_ticks "$PID"); sleep "$IDLE_SECS"; c1=$(cpu_ticks "$PID")
echo "idle CPU after $N exporters: $(echo "scale=1; 100 * ($c1 - $c0) / $HZ / $IDLE_SECS" | bc)%"

# 3. The real exporter during a flood of spoofed ones (two flood processes).
r0=$(records)
spray v9nt "$FLOOD_SECS" 200000 >"$DIR/flood1" &
F1=$!
spray v9nt "$FLOOD_SECS" 1200000 >"$DIR/flood2" &
F2=$!
"$BIN" bench --proto v5 --rate "$RATE" --duration "$FLOOD_SECS" --target "127.0.0.1:$PORT" >"$DIR/bench1" 2>&1
wait "$F1" "$F2"
sleep 1
r1=$(records)
echo "flood: $(( $(cat "$DIR/flood1") + $(cat "$DIR/flood2") )) spoofed datagrams in ${FLOOD_SECS}s; real exporter $(( (r1 - r0) / FLOOD_SECS )) records/s stored of $RATE/s sent"

# 4. SIGTERM under traffic.
spray v9nt 20 3000000 >/dev/null &
F3=$!
sleep 1
t=$(date +%s.%N); kill -TERM "$PID"
for _ in $(seq 600); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$PID" 2>/dev/null; then echo "SIGTERM: still running after 60 s"; kill -KILL "$PID"; else echo "SIGTERM under traffic: exited after $(echo "$(date +%s.%N) - $t" | bc | cut -c1-5)s"; fi
wait "$PID" 2>/dev/null || true
PID=
kill "$F3" 2>/dev/null || true
