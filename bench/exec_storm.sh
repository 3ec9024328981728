#!/usr/bin/env bash
# Capture benchmark: an exec storm across 10 container-like cgroups and a 20,000-exec burst,
# captured at the same time by procguard-sensor (release build, JSON lines, no server) and by
# forkstat. Prints one JSON object per phase. Needs root and forkstat (apt-get install forkstat).
#
#   cargo build --release -p procguard-sensor -p procguard-server && cargo build --release -p procguard-tests --bin exec_storm
#   sudo bench/exec_storm.sh [RATE=1000] [DURATION=20] [BURST=20000] [FANOTIFY=1] [UPLINK=1 [JSONL=0]]
#                            [SHAPE=exec|joined] [CGNS=1] [PEER=path/to/other/procguard-sensor]
#                            [CAPTURE=auto|ebpf|netlink]
#
# CAPTURE picks the sensor's capture backend (--capture; auto, the default, is eBPF where the
# kernel and privileges allow).
#
# SHAPE=joined: each storm worker starts on the host and then moves itself into its cgroup
# without exec-ing again (how `runc exec` and shells moved into a pod's cgroup start children).
# CGNS=1 runs a second sensor at the same time, the way a cgroup-v2 node runs it: in a cgroup
# of its own and a private cgroup namespace, entering this shell's namespace
# (--host-cgroupns); both are scored on the same storm ("private" in the output).
# PEER=BINARY instead runs a second sensor from another build (say the previous commit's) in
# this cgroup namespace, with fanotify as the first one, scored on the same storm ("peer").
#
# UPLINK=1 also runs a release procguard-server (dev PKI, sled under $OUT) and connects the
# sensor to it over mTLS gRPC, so the sensor's figures include encoding, spooling and sending
# every event, as in production (the JSON lines are still written, for scoring).
# JSONL=0 (with UPLINK=1) leaves the JSON lines out: the sensor as deployed, whose CPU is then
# its production cost. Nothing is scored per exec (the score fields are null); the sensor's
# events seen and the executions the server stored and the sensor still holds are printed.
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${RATE:-1000}
DURATION=${DURATION:-20}
BURST=${BURST:-20000}
IDLE=${IDLE:-20}
FANOTIFY=${FANOTIFY:-1}
SHAPE=${SHAPE:-exec}
CGNS=${CGNS:-0}
SENSOR=${SENSOR:-target/release/procguard-sensor}
DRIVER=${DRIVER:-target/release/exec_storm}
OUT=${OUT:-$(mktemp -d /tmp/pg-bench.XXXXXX)}
mkdir -p "$OUT"
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
command -v forkstat >/dev/null || { echo "forkstat is missing: apt-get install forkstat" >&2; exit 1; }

ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
rss_kb() { awk '/^VmRSS/{print $2}' "/proc/$1/status"; }
hwm_kb() { awk '/^VmHWM/{print $2}' "/proc/$1/status"; }
hz=$(getconf CLK_TCK)
cpu_pct() { # pid ticks_before seconds
  awk -v a="$(ticks "$1")" -v b="$2" -v hz="$hz" -v s="$3" 'BEGIN { printf "%.3f", (a - b) * 100 / hz / s }'
}

flags=()
# fanotify is on by default; FANOTIFY=0 turns it off explicitly for the comparison run.
if [ "$FANOTIFY" = 1 ]; then flags+=(--fanotify on); else flags+=(--fanotify off); fi
flags+=(--capture "${CAPTURE:-auto}")
UPLINK=${UPLINK:-0}
if [ "$UPLINK" = 1 ]; then
  SERVER=${SERVER:-target/release/procguard-server}
  "$SERVER" --dev-pki "$OUT/pki" --dev-nodes bench --data-dir "$OUT/server" \
    --grpc-addr 127.0.0.1:19443 --admin-addr 127.0.0.1:19392 2>"$OUT/server.log" &
  SRV=$!
  for _ in $(seq 100); do [ -f "$OUT/pki/sensor-bench.key" ] && grep -q "listening\|running" "$OUT/server.log" && break; sleep 0.1; done
  flags+=(--server https://127.0.0.1:19443 --tls-server-name localhost --tls-ca "$OUT/pki/ca.crt"
    --tls-cert "$OUT/pki/sensor-bench.crt" --tls-key "$OUT/pki/sensor-bench.key")
fi
JSONL=${JSONL:-1}
if [ "$JSONL" = 1 ]; then
  flags+=(--jsonl "$OUT/events.jsonl")
elif [ "$UPLINK" != 1 ]; then
  echo "JSONL=0 needs UPLINK=1 (the sensor needs an output)" >&2; exit 1
fi
# The per-exec score, from the JSON lines (null without them).
score() { if [ "$JSONL" = 1 ]; then "$DRIVER" score "$@"; else echo null; fi; }
PORT=${PORT:-19391}
"$SENSOR" --node-name bench --admin-addr "127.0.0.1:$PORT" \
  --spool-dir "$OUT/spool" "${flags[@]}" 2>"$OUT/sensor.log" &
SPID=$!
if [ "$CGNS" = 1 ]; then
  # The private-namespace sensor's own cgroup, in every hierarchy but memory and cpuset (as
  # the storm's cgroups), then a private cgroup namespace rooted there.
  cgself="procguard-bench-sensor-$$"
  join=""
  for h in /sys/fs/cgroup/*/ /sys/fs/cgroup/unified/; do
    case "$h" in */memory/|*/cpuset/) continue;; esac
    [ -f "$h/cgroup.procs" ] || continue
    mkdir -p "$h/$cgself"; join="$join echo \$\$ > $h/$cgself/cgroup.procs;"
  done
  sh -c "$join exec unshare --cgroup -- $SENSOR --node-name bench-private --jsonl $OUT/events-private.jsonl \
    --admin-addr 127.0.0.1:$((PORT + 10)) --spool-dir $OUT/spool-private --host-cgroupns /proc/$$/ns/cgroup \
    ${flags[*]}" 2>"$OUT/sensor-private.log" &
  PPID2=$!
  SECOND=private
elif [ -n "${PEER:-}" ]; then
  # Builds before `--fanotify auto|on|off` took a bare `--fanotify`.
  peer_flags=()
  [ "$FANOTIFY" = 1 ] && peer_flags+=(--fanotify)
  "$PEER" --node-name bench-peer --jsonl "$OUT/events-peer.jsonl" --admin-addr "127.0.0.1:$((PORT + 10))" \
    --spool-dir "$OUT/spool-peer" "${peer_flags[@]}" 2>"$OUT/sensor-peer.log" &
  PPID2=$!
  SECOND=peer
fi
if [ -n "${SECOND:-}" ]; then
  for _ in $(seq 100); do grep -q "Initial /proc scan done" "$OUT/sensor-$SECOND.log" && break; sleep 0.1; done
fi
forkstat -e exec -l >"$OUT/forkstat.txt" 2>/dev/null &
FPID=$!
cleanup() {
  kill $SPID $FPID ${SRV:-} ${PPID2:-} 2>/dev/null || true
  if [ -n "${cgself:-}" ]; then sleep 0.5; rmdir /sys/fs/cgroup/*/"$cgself" /sys/fs/cgroup/unified/"$cgself" 2>/dev/null || true; fi
}
trap cleanup EXIT
for _ in $(seq 100); do grep -q "Initial /proc scan done" "$OUT/sensor.log" && break; sleep 0.1; done
sleep 2

# Idle: no load of ours (other work on the machine still runs).
s0=$(ticks $SPID); f0=$(ticks $FPID); t0=$(date +%s.%N)
sleep "$IDLE"
t1=$(date +%s.%N); secs=$(echo "$t1 - $t0" | bc)
echo "{\"phase\":\"idle\",\"seconds\":$secs,\"sensor_cpu_pct\":$(cpu_pct $SPID $s0 $secs),\"forkstat_cpu_pct\":$(cpu_pct $FPID $f0 $secs),\"sensor_rss_kb\":$(rss_kb $SPID)}"

# Storm.
s0=$(ticks $SPID); f0=$(ticks $FPID); t0=$(date +%s.%N)
[ -n "${SECOND:-}" ] && p0=$(ticks $PPID2)
"$DRIVER" run --truth "$OUT/storm.truth" --rate "$RATE" --duration "$DURATION" --shape "$SHAPE" 2>"$OUT/storm.driver.json"
t1=$(date +%s.%N); secs=$(echo "$t1 - $t0" | bc)
scpu=$(cpu_pct $SPID $s0 $secs); fcpu=$(cpu_pct $FPID $f0 $secs)
[ -n "${SECOND:-}" ] && pcpu=$(cpu_pct $PPID2 $p0 $secs)
sleep 3
if [ -n "${SECOND:-}" ]; then
  echo "{\"phase\":\"storm-$SECOND\",\"shape\":\"$SHAPE\",\"sensor_cpu_pct\":$pcpu,\"first_sensor_cpu_pct\":$scpu,\"score\":$("$DRIVER" score --truth "$OUT/storm.truth" --events "$OUT/events-$SECOND.jsonl")}"
fi
echo "{\"phase\":\"storm\",\"shape\":\"$SHAPE\",\"driver\":$(cat "$OUT/storm.driver.json"),\"seconds\":$secs,\"sensor_cpu_pct\":$scpu,\"forkstat_cpu_pct\":$fcpu,\"sensor_rss_kb\":$(rss_kb $SPID),\"score\":$(score --truth "$OUT/storm.truth" --events "$OUT/events.jsonl" --forkstat "$OUT/forkstat.txt")}"

# Burst: as fast as the workers can spawn; RSS sampled throughout.
s0=$(ticks $SPID); f0=$(ticks $FPID); t0=$(date +%s.%N)
[ -n "${SECOND:-}" ] && p0=$(ticks $PPID2)
"$DRIVER" run --truth "$OUT/burst.truth" --burst "$BURST" --shape "$SHAPE" 2>"$OUT/burst.driver.json" &
DPID=$!
max=0
while kill -0 $DPID 2>/dev/null; do r=$(rss_kb $SPID); [ "$r" -gt "$max" ] && max=$r; sleep 0.2; done
wait $DPID
t1=$(date +%s.%N); secs=$(echo "$t1 - $t0" | bc)
scpu=$(cpu_pct $SPID $s0 $secs); fcpu=$(cpu_pct $FPID $f0 $secs)
[ -n "${SECOND:-}" ] && pcpu=$(cpu_pct $PPID2 $p0 $secs)
for _ in $(seq 20); do r=$(rss_kb $SPID); [ "$r" -gt "$max" ] && max=$r; sleep 0.25; done
if [ -n "${SECOND:-}" ]; then
  echo "{\"phase\":\"burst-$SECOND\",\"sensor_cpu_pct\":$pcpu,\"first_sensor_cpu_pct\":$scpu,\"score\":$("$DRIVER" score --truth "$OUT/burst.truth" --events "$OUT/events-$SECOND.jsonl")}"
fi
echo "{\"phase\":\"burst\",\"driver\":$(cat "$OUT/burst.driver.json"),\"seconds\":$secs,\"sensor_cpu_pct\":$scpu,\"forkstat_cpu_pct\":$fcpu,\"sensor_rss_max_kb\":$max,\"sensor_hwm_kb\":$(hwm_kb $SPID),\"score\":$(score --truth "$OUT/burst.truth" --events "$OUT/events.jsonl" --forkstat "$OUT/forkstat.txt")}"
scrape() { exec 3<>"/dev/tcp/127.0.0.1/$PORT"; printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3; cat <&3; exec 3<&-; }
echo "sensor metrics (losses): $(scrape | grep -E 'capture_backend|ebpf_ring_losses|queue_drops|kernel_losses|sequence_gaps|resyncs|fanotify|events_seen|events_partial|late_forks|exec_lost' | grep -v '^#' | tr '\n' ' ')"
if [ "$UPLINK" = 1 ]; then
  # What crossed to the server: events, and the executions they stand for (summaries: several
  # each; executions still held for the interval's summary are in summary_held_executions).
  echo "sensor uplink: $(scrape | grep -E 'spool_appended|summaries_sent|executions_summarised|summary_held' | grep -v '^#' | tr '\n' ' ')"
  PORT=19392
  echo "server: $(scrape | grep -E '^procguard_server_(events|executions)_ingested_total' | tr '\n' ' ')"
fi
echo "output in $OUT"
