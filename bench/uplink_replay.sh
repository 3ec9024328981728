#!/usr/bin/env bash
# Sensor CPU in uplink mode (docs/BENCHMARKS.md, issue 17): one release procguard-sensor
# connected to a release procguard-server over mTLS gRPC on loopback (dev PKI), two phases:
#
#   live:   EVENTS execs of /bin/true with the server up: capture, spool and send, as in
#           production; measured from the first exec until the sensor has nothing pending.
#   replay: the server is down while EVENTS execs are spooled, then comes back: the spool ->
#           uplink path alone (read the spool, batch, send, take the acks); measured from the
#           server's start until the sensor has nothing pending.
#
# Prints one JSON object per phase: events acknowledged in the window, the sensor's CPU time
# in it (utime + stime from /proc/PID/stat) and that CPU per 1,000 acknowledged events. The
# sensor sees every process on the machine, so other work running meanwhile adds to both.
#
#   cargo build --release -p procguard-sensor -p procguard-server
#   sudo bench/uplink_replay.sh [SENSOR=target/release/procguard-sensor] [EVENTS=20000]
#
# SENSOR may be another build's binary (the previous commit's, say), run against the same
# server, so that two builds are compared in the same hour.
set -euo pipefail
cd "$(dirname "$0")/.."
SENSOR=${SENSOR:-target/release/procguard-sensor}
SERVER=${SERVER:-target/release/procguard-server}
EVENTS=${EVENTS:-20000}
OUT=${OUT:-$(mktemp -d /tmp/pg-uplink.XXXXXX)}
mkdir -p "$OUT"
GRPC=${GRPC:-19453}
SADMIN=${SADMIN:-19402}
PORT=${PORT:-19401}
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }

hz=$(getconf CLK_TCK)
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
get() { # port path: the response, or nothing while the port is closed
  bash -c "exec 3<>/dev/tcp/127.0.0.1/$1 && printf 'GET $2 HTTP/1.0\r\n\r\n' >&3 && cat <&3" 2>/dev/null || true
}
metric() { get "$1" /metrics | awk -v n="$2" '$1 == n {print $2}'; }
now() { date +%s.%N; }

start_server() {
  "$SERVER" --dev-pki "$OUT/pki" --dev-nodes bench --data-dir "$OUT/server" \
    --grpc-addr "127.0.0.1:$GRPC" --admin-addr "127.0.0.1:$SADMIN" 2>>"$OUT/server.log" &
  SRV=$!
  for _ in $(seq 200); do get "$SADMIN" /readyz | grep -q '^HTTP/1.. 200' && return; sleep 0.1; done
  echo "server did not start; see $OUT/server.log" >&2; exit 1
}
stop_server() { kill "$SRV"; wait "$SRV" 2>/dev/null || true; }
cleanup() { kill ${SPID:-} ${SRV:-} 2>/dev/null || true; }
trap cleanup EXIT

start_server
"$SENSOR" --node-name bench --admin-addr "127.0.0.1:$PORT" --spool-dir "$OUT/spool" \
  --server "https://127.0.0.1:$GRPC" --tls-server-name localhost --tls-ca "$OUT/pki/ca.crt" \
  --tls-cert "$OUT/pki/sensor-bench.crt" --tls-key "$OUT/pki/sensor-bench.key" \
  2>"$OUT/sensor.log" &
SPID=$!
for _ in $(seq 200); do [ "$(metric "$PORT" procguard_sensor_connected)" = 1 ] && break; sleep 0.1; done
sleep 3

pending() { metric "$PORT" procguard_sensor_pending_events; }
acked() { metric "$PORT" procguard_sensor_events_acked_total; }
drained() { for _ in $(seq 1200); do p=$(pending); [ -n "$p" ] && [ "${p%.*}" -lt 50 ] && return; sleep 0.1; done; }
storm() { i=0; while [ $i -lt "$EVENTS" ]; do /bin/true; i=$((i + 1)); done; }
report() { # phase ticks0 ticks1 acked0 acked1 t0 t1
  awk -v p="$1" -v c0="$2" -v c1="$3" -v a0="$4" -v a1="$5" -v t0="$6" -v t1="$7" -v hz="$hz" 'BEGIN {
    ms = (c1 - c0) * 1000 / hz; n = a1 - a0
    printf "{\"phase\":\"%s\",\"events_acked\":%d,\"seconds\":%.2f,\"sensor_cpu_ms\":%d,\"cpu_ms_per_1000_events\":%.1f}\n", p, n, t1 - t0, ms, (n > 0 ? ms * 1000 / n : 0)
  }'
}

# Live.
c0=$(ticks $SPID); a0=$(acked); t0=$(now)
storm
drained
report live "$c0" "$(ticks $SPID)" "$a0" "$(acked)" "$t0" "$(now)"

# Replay.
stop_server
storm
sleep 2
c0=$(ticks $SPID); a0=$(acked); t0=$(now)
start_server
drained
report replay "$c0" "$(ticks $SPID)" "$a0" "$(acked)" "$t0" "$(now)"
echo "output in $OUT" >&2
