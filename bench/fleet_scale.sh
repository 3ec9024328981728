#!/usr/bin/env bash
# Fleet scale (docs/BENCHMARKS.md, "Fleet scale: summaries"; issue 18): one release
# procguard-server with a fresh database, and the fleet simulator (tests/src/bin/fleet_sim.rs)
# opening NODES real mTLS sessions to it with one fleet certificate, on this machine. The
# server ends learning by itself (--auto-enforce, short learning flags), so the simulator's
# warm-up nodes get every workload enforced before the rest connect. Prints the simulator's
# JSON line (the measured phase: events, bytes, executions, deviation ack latency, the
# server's CPU and database growth).
#
#   cargo build --release -p procguard-server -p procguardctl -p procguard-tests --bin fleet_sim
#   bench/fleet_scale.sh [NODES=1000] [MODE=summaries|per-exec] [RATE=20] [DURATION=60] \
#     [INTERVAL=30] [SETTLE=35] [EXTRA="more fleet_sim flags"]
set -euo pipefail
cd "$(dirname "$0")/.."
NODES=${NODES:-1000}
MODE=${MODE:-summaries}
RATE=${RATE:-20}
DURATION=${DURATION:-60}
INTERVAL=${INTERVAL:-30}
SETTLE=${SETTLE:-35}
EXTRA=${EXTRA:-}
OUT=${OUT:-$(mktemp -d /tmp/pg-fleet.XXXXXX)}
GRPC=${GRPC:-19553}
ADMIN=${ADMIN:-19502}
BIN=${BIN:-target/release}
mkdir -p "$OUT"
# Each side holds one descriptor per session: raise the limit as far as allowed (10,000 nodes
# need a little over 10,000; this machine allows 20,000).
ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)"

"$BIN/procguardctl" pki init --dir "$OUT/pki" --server "https://127.0.0.1:$GRPC" --fleet fleet >/dev/null
"$BIN/procguard-server" --grpc-addr "127.0.0.1:$GRPC" --admin-addr "127.0.0.1:$ADMIN" \
  --data-dir "$OUT/data" --tls-cert "$OUT/pki/server.crt" --tls-key "$OUT/pki/server.key" \
  --tls-client-ca "$OUT/pki/ca.crt" --tokens-file "$OUT/pki/tokens.yaml" \
  --sensor-fleet-names fleet --max-sensor-streams 12000 \
  --auto-enforce --learning-min 15s --learning-quiet 10s --learning-max 1h \
  2>"$OUT/server.log" &
SRV=$!
trap 'kill $SRV 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$ADMIN") 2>/dev/null && break
  sleep 0.1
done
# shellcheck disable=SC2086
"$BIN/fleet_sim" --server "https://127.0.0.1:$GRPC" --ca "$OUT/pki/ca.crt" \
  --cert "$OUT/pki/sensor-fleet.crt" --key "$OUT/pki/sensor-fleet.key" \
  --nodes "$NODES" --mode "$MODE" --execs-per-node "$RATE" --summary-interval "$INTERVAL" \
  --seconds "$DURATION" --settle "$SETTLE" --server-pid "$SRV" --data-dir "$OUT/data" \
  $EXTRA 2>"$OUT/fleet.log" | tee "$OUT/result.json"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg); out: $OUT" >&2
kill "$SRV"
wait "$SRV" 2>/dev/null || true
rm -rf "$OUT/data"
