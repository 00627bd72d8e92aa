#!/bin/bash
# Relay against hand-over (rinha-lb LB_MODE=relay|handoff) on a native stack, interleaved:
# per run, processors on 25001/25002, two rinha (WORKERS=1, unix sockets, each with a
# hand-over socket), rinha-lb on 25000, the contest's preview load through it (rinha-bench
# rinha --target), then one line: POST p50/p99/p99.9 (ms), and the CPU-seconds (user +
# system, /proc/PID/stat) of rinha-lb and of both backends, in all and per 1,000 requests.
# Release binaries must be built. Kills what it starts.
# Usage: scripts/handoff-compare.sh [ROUNDS] [SECONDS] [MODES]   (MODES default "relay handoff")
# BIN=DIR takes the binaries from DIR instead of target/release.
set -u
ROUNDS=${1:-3}; DUR=${2:-60}; MODES=${3:-relay handoff}
T=${BIN:-$(cd "$(dirname "$0")/.." && pwd)/target/release}
ROOT=${TMPDIR:-/tmp}/handoff-compare; rm -rf "$ROOT"; mkdir -p "$ROOT"
hz=$(getconf CLK_TCK)
cpu() { awk -v hz="$hz" '{sub(/.*\) /,""); printf "%.3f", ($12 + $13) / hz}' "/proc/$1/stat"; }

run() {
  local mode=$1 label=$2
  local D=$ROOT/$label; mkdir -p "$D"
  local pids=() bpids=()
  "$T/rinha-bench" processor --listen 127.0.0.1:25001 --fee 0.05 > "$D/p1.log" 2>&1 & pids+=($!)
  "$T/rinha-bench" processor --listen 127.0.0.1:25002 --fee 0.15 > "$D/p2.log" 2>&1 & pids+=($!)
  sleep 0.5
  for i in 1 2; do
    local j=$((3-i))
    env LISTEN="unix:$D/b$i.sock" PEERS="unix:$D/b$j.peer.sock" PEER_LISTEN="unix:$D/b$i.peer.sock" HANDOFF_LISTEN="unix:$D/b$i.handoff.sock" \
      PROCESSOR_DEFAULT_URL=http://127.0.0.1:25001 PROCESSOR_FALLBACK_URL=http://127.0.0.1:25002 \
      WORKERS=1 "$T/rinha" > "$D/b$i.log" 2>&1 & bpids+=($!)
  done
  sleep 0.5
  LISTEN=127.0.0.1:25000 BACKENDS="unix:$D/b1.sock,unix:$D/b2.sock" LB_MODE=$mode \
    "$T/rinha-lb" > "$D/lb.log" 2>&1 & local lb=$!
  sleep 0.5
  local lb0 b0
  lb0=$(cpu $lb); b0=$(echo "$(cpu ${bpids[0]}) + $(cpu ${bpids[1]})" | bc -l)
  timeout $((DUR + 60)) "$T/rinha-bench" rinha --target http://127.0.0.1:25000 \
    --default http://127.0.0.1:25001 --fallback http://127.0.0.1:25002 \
    --duration "$DUR" --quiet --json "$D/result.json" > "$D/bench.out" 2>&1
  local lb1 b1
  lb1=$(cpu $lb); b1=$(echo "$(cpu ${bpids[0]}) + $(cpu ${bpids[1]})" | bc -l)
  kill "${bpids[@]}" "${pids[@]}" $lb 2>/dev/null; wait 2>/dev/null
  local q
  q=$(jq -r '[.bench.post_latency_ms.p50, .bench.post_latency_ms.p99, .bench.post_latency_ms.p999, .bench.post_latency_ms.count, .multa.composicao.num_inconsistencias] | @tsv' "$D/result.json" 2>/dev/null)
  read -r p50 p99 p999 n inc <<< "$q"
  if [ -z "${n:-}" ] || [ "$n" = 0 ]; then echo "$label: no result (see $D/bench.out)"; return; fi
  printf "%-10s %-8s POST p50 %.3f p99 %.3f p99.9 %.3f ms  n=%s inconsistencies=%s  lb %.3f CPU-s (%.4f /1k)  backends %.3f CPU-s (%.4f /1k)\n" \
    "$label" "$mode" "$p50" "$p99" "$p999" "$n" "$inc" \
    "$(echo "$lb1 - $lb0" | bc -l)" "$(echo "($lb1 - $lb0) * 1000 / $n" | bc -l)" \
    "$(echo "$b1 - $b0" | bc -l)" "$(echo "($b1 - $b0) * 1000 / $n" | bc -l)"
}

for r in $(seq 1 "$ROUNDS"); do
  for mode in $MODES; do
    run "$mode" "$mode-$r"
  done
done
