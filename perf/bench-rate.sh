#!/usr/bin/env bash
# Rate accuracy and top speed of `goflow bench`, measured by an independent receiver.
#
# A small Python receiver on 127.0.0.1 counts the datagrams and flow records that arrive and
# computes the rate between the first and the last datagram (records of the last datagram
# excluded, so the figure is records per second of the sending interval). Runs:
#   1. v5 at 2,000 flows/s for 10 s      (target: within 1 %)
#   2. v5 at 1,000,000 flows/s for 10 s  (target: within 5 %)
#   3. v9 at --rate 0 for 10 s           (target: >= 5 M flows/s from one core)
# Every run is bounded: the bench by --duration, the receiver by a hard timeout.
#
# Usage: perf/bench-rate.sh            (builds target/release/goflow if missing)
#        GOFLOW=/path/to/goflow PORT=20555 SECS=10 perf/bench-rate.sh
set -euo pipefail
cd "$(dirname "$0")/.."
GOFLOW=${GOFLOW:-target/release/goflow}
PORT=${PORT:-20555}
SECS=${SECS:-10}
if [[ ! -x $GOFLOW ]]; then cargo build --release --bin goflow; fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Receiver: counts datagrams and records (v5/v9 header count; v9 template records excluded by
# walking the flowsets; IPFIX by set lengths and the bench's fixed record sizes is not needed
# here). Prints one JSON line. Exits when idle for 1.5 s after traffic, or after $3 seconds.
cat >"$tmp/recv.py" <<'PY'
import json, socket, struct, sys, time
port, mode, limit = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
try:
    s.setsockopt(socket.SOL_SOCKET, 33, 64 << 20)  # SO_RCVBUFFORCE (root)
except OSError:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 20)
s.bind(("127.0.0.1", port))
print("ready", flush=True, file=sys.stderr)
deadline = time.monotonic() + limit
s.settimeout(0.1)
n = recs = last_recs = 0
first = last = None
buf = bytearray(65536)
while time.monotonic() < deadline:
    if mode == "drain":          # do not read: measure the sender alone
        time.sleep(0.1)
        continue
    try:
        k = s.recv_into(buf)
    except socket.timeout:
        if last is not None and time.monotonic() - last > 1.5:
            break
        continue
    t = time.monotonic()
    if first is None:
        first = t
    last = t
    n += 1
    ver, cnt = struct.unpack_from("!HH", buf, 0)
    if ver == 9:
        # count = template + data records; subtract templates (flowset id 0).
        off, tmpl = 20, 0
        while off + 4 <= k:
            sid, slen = struct.unpack_from("!HH", buf, off)
            if slen < 4:
                break
            if sid == 0:
                p = off + 4
                while p + 4 <= off + slen:
                    _, fc = struct.unpack_from("!HH", buf, p)
                    p += 4 + 4 * fc
                    tmpl += 1
            off += slen
        cnt -= tmpl
    recs += cnt
    last_recs = cnt
span = (last - first) if first is not None and last is not None else 0.0
rate = (recs - last_recs) / span if span > 0 else 0.0
print(json.dumps({"datagrams": n, "records": recs, "seconds": round(span, 6),
                  "records_per_sec": round(rate), "datagrams_per_sec": round((n - 1) / span) if span > 0 else 0}))
PY

run() { # name mode rate proto
    local name=$1 mode=$2 rate=$3 proto=$4
    python3 "$tmp/recv.py" "$PORT" "$mode" $((SECS + 8)) >"$tmp/$name.recv" 2>"$tmp/$name.ready" &
    local rpid=$!
    for _ in $(seq 50); do grep -q ready "$tmp/$name.ready" 2>/dev/null && break; sleep 0.1; done
    # The bench runs under a launcher that records its CPU time (user + system).
    python3 -c 'import resource, subprocess, sys
out = open(sys.argv[1], "w")
subprocess.run(sys.argv[3:], stdout=out, stderr=subprocess.DEVNULL, check=True)
r = resource.getrusage(resource.RUSAGE_CHILDREN)
open(sys.argv[2], "w").write(f"{r.ru_utime} {r.ru_stime}")' "$tmp/$name.sent" "$tmp/$name.cpu" \
        "$GOFLOW" bench --proto "$proto" --rate "$rate" --duration "$SECS" --target "127.0.0.1:$PORT"
    if [[ $mode == drain ]]; then kill "$rpid" 2>/dev/null || true; fi
    wait "$rpid" 2>/dev/null || true
    python3 - "$name" "$rate" "$tmp/$name.sent" "$tmp/$name.recv" "$tmp/$name.cpu" <<'PY'
import json, sys
name, rate = sys.argv[1], float(sys.argv[2])
sent = json.load(open(sys.argv[3]))
user, system = (float(x) for x in open(sys.argv[5]).read().split())
try:
    recv = json.load(open(sys.argv[4]))
except Exception:
    recv = None
line = f"{name:28s} sent {sent['flows']:>11,} flows {sent['datagrams']:>9,} datagrams in {sent['seconds']:.3f} s: " \
       f"{sent['flows_per_sec']:>12,.0f} flows/s {sent['datagrams']/sent['seconds']:>10,.0f} datagrams/s"
if rate > 0:
    line += f" (asked {rate:,.0f}: {100*(sent['flows_per_sec']/rate-1):+.2f} %)"
print(line)
cpu = user + system
print(f"{'':28s} CPU {user:.2f} s user + {system:.2f} s system = {cpu / sent['seconds']:.2f} cores: "
      f"{sent['flows'] / cpu:>12,.0f} flows per CPU-second {sent['datagrams'] / cpu:>10,.0f} datagrams per CPU-second")
if recv:
    r = f"{'':28s} received {recv['records']:>7,} records {recv['datagrams']:>9,} datagrams; " \
        f"rate between first and last: {recv['records_per_sec']:>12,.0f} records/s {recv['datagrams_per_sec']:>9,} datagrams/s"
    if rate > 0:
        r += f" ({100*(recv['records_per_sec']/rate-1):+.2f} % of asked)"
    print(r)
PY
}

echo "goflow bench rate accuracy, ${SECS} s per run, receiver on 127.0.0.1:$PORT ($(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg))"
run v5-2k count 2000 v5
run v5-1M count 1000000 v5
run v9-max drain 0 v9

# Independent sender (optional): nfdump's nfcapd records 300,000 bench flows (its own totals
# are printed for comparison with the bench summary), then nfreplay sends them back as fast as
# it can (-d 0) to the same receiver.
if command -v nfcapd >/dev/null && command -v nfreplay >/dev/null; then
    mkdir -p "$tmp/nfc"
    timeout 60 nfcapd -w "$tmp/nfc" -p $((PORT + 1)) -b 127.0.0.1 -B 33554432 >"$tmp/nfcapd.log" 2>&1 &
    npid=$!
    sleep 1
    "$GOFLOW" bench --proto v9 --flows 300000 --rate 100000 --target "127.0.0.1:$((PORT + 1))" \
        >"$tmp/nfc.sent" 2>/dev/null
    sleep 1
    kill "$npid" 2>/dev/null || true
    wait "$npid" 2>/dev/null || true
    echo "nfcapd (independent collector) of 300,000 bench v9 flows: $(grep -o 'Flows: .*' "$tmp/nfcapd.log" | head -1)"
    echo "bench summary:                                           $(python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print("Flows: %d, Packets: %d, Bytes: %d" % (s["flows"], s["sum_packets"], s["sum_bytes"]))' "$tmp/nfc.sent")"
    file=$(ls "$tmp"/nfc/nfcapd.* 2>/dev/null | head -1)
    if [[ -n $file ]]; then
        python3 "$tmp/recv.py" "$PORT" count 30 >"$tmp/nfreplay.recv" 2>"$tmp/nfreplay.ready" &
        rpid=$!
        for _ in $(seq 50); do grep -q ready "$tmp/nfreplay.ready" 2>/dev/null && break; sleep 0.1; done
        start=$(date +%s.%N)
        timeout 60 nfreplay -r "$file" -v 9 -d 0 -H 127.0.0.1 -p "$PORT" >/dev/null 2>&1 || true
        end=$(date +%s.%N)
        wait "$rpid" 2>/dev/null || true
        python3 - "$start" "$end" "$tmp/nfreplay.recv" <<'PY'
import json, sys
secs = float(sys.argv[2]) - float(sys.argv[1])
r = json.load(open(sys.argv[3]))
print(f"nfreplay -d 0 (v9): 300,000 flows in {secs:.3f} s wall = {300000 / secs:,.0f} flows/s; "
      f"receiver saw {r['records']:,} records in {r['datagrams']:,} datagrams "
      f"({r['datagrams'] / secs:,.0f} datagrams/s)")
PY
    fi
fi
