#!/usr/bin/env bash
# System calls per exec of the sensor while a real Docker container runs N execs of an image
# binary (busybox `/bin/true` in a FROM scratch image, kubelet-shaped cgroup parent), counted
# by `strace -c` attached to every thread of the sensor after its start-up scan. Run it for two
# builds to see what a change costs per exec (docs/BENCHMARKS.md, "Origin classification").
# Needs root, Docker, strace and busybox-static.
#
#   cargo build --release -p procguard-sensor
#   sudo bench/origin_syscalls.sh [SENSOR=target/release/procguard-sensor] [N=3000] [OUT=dir]
#
# Prints the events the sensor wrote while traced, the origins of the container's events, and
# the per-call counts (the strace table is kept in $OUT/strace.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
SENSOR=${SENSOR:-target/release/procguard-sensor}
N=${N:-3000}
OUT=${OUT:-$(mktemp -d)}
IMAGE=procguard-bench-busybox:1
BUSYBOX=$(command -v busybox || true)
[ -n "$BUSYBOX" ] || { echo "busybox-static is needed (apt-get install busybox-static)" >&2; exit 1; }
if ! docker image inspect "$IMAGE" > /dev/null 2>&1; then
    ctx=$(mktemp -d)
    mkdir -p "$ctx/rootfs/bin"
    for a in sh true; do cp "$BUSYBOX" "$ctx/rootfs/bin/$a"; done
    printf 'FROM scratch\nCOPY rootfs/ /\n' > "$ctx/Dockerfile"
    DOCKER_BUILDKIT=0 docker build -q -t "$IMAGE" "$ctx" > /dev/null
    rm -rf "$ctx"
fi
mkdir -p "$OUT"
"$SENSOR" --node-name bench --jsonl "$OUT/events.jsonl" --admin-addr 127.0.0.1:0 \
    --spool-dir "$OUT/spool" > "$OUT/sensor.log" 2>&1 &
sensor=$!
for _ in $(seq 1 100); do grep -q "Initial /proc scan done" "$OUT/sensor.log" && break; sleep 0.2; done
sleep 1
before=$(wc -l < "$OUT/events.jsonl")
# shellcheck disable=SC2046
strace -c -f -o "$OUT/strace.txt" $(ls "/proc/$sensor/task" | sed 's/^/-p /') 2> /dev/null &
tracer=$!
sleep 1
pod=$(cat /proc/sys/kernel/random/uuid)
c=$(docker run -d --network none --cgroup-parent "/kubepods/besteffort/pod$pod" "$IMAGE" \
    sh -c "i=0; while [ \$i -lt $N ]; do /bin/true; i=\$((i+1)); done")
docker wait "$c" > /dev/null
sleep 2
kill -INT "$tracer"; wait "$tracer" 2> /dev/null || true
after=$(wc -l < "$OUT/events.jsonl")
kill -INT "$sensor"; wait "$sensor" || true
docker rm "$c" > /dev/null
python3 - "$OUT" "$c" "$((after - before))" <<'PY'
import collections, json, sys
out, container, events = sys.argv[1], sys.argv[2], int(sys.argv[3])
origins = collections.Counter()
for line in open(out + "/events.jsonl"):
    e = json.loads(line)
    if (e.get("container") or {}).get("container_id") == container:
        origins[e.get("origin")] += 1
calls = {}
for line in open(out + "/strace.txt"):
    f = line.split()
    if len(f) >= 5 and f[0][0].isdigit():
        calls[f[-1]] = int(f[3])
print(json.dumps({
    "events_traced": events,
    "container_origins": dict(origins),
    "syscalls_per_exec": round(calls.get("total", 0) / max(events, 1), 2),
    "per_exec": {k: round(v / max(events, 1), 2) for k, v in sorted(calls.items()) if k != "total"},
}))
PY
