#!/bin/bash
# Measures the CPU the journal costs: starts processors (25001/25002), two rinha (unix
# sockets, WORKERS=1, DATA_DIR per backend unless memory), rinha-lb (25000), runs the
# contest load, prints CPU-seconds of both backends. Release binaries must be built.
# Usage: scripts/journal-cpu.sh LABEL memory|journal|batch [SECONDS]   (kills what it starts)
# BIN=DIR takes the binaries from DIR instead of target/release (for before/after runs).
set -u
LABEL=$1; MODE=$2; DUR=${3:-60}
T=${BIN:-$(cd "$(dirname "$0")/.." && pwd)/target/release}
D=${TMPDIR:-/tmp}/journal-cpu/$LABEL; rm -rf $D; mkdir -p $D
pids=()
$T/rinha-bench processor --listen 127.0.0.1:25001 --fee 0.05 > $D/p1.log 2>&1 & pids+=($!)
$T/rinha-bench processor --listen 127.0.0.1:25002 --fee 0.15 > $D/p2.log 2>&1 & pids+=($!)
sleep 0.5
bpids=()
for i in 1 2; do
  j=$((3-i))
  env=(LISTEN=unix:$D/b$i.sock PEERS=unix:$D/b$j.peer.sock PEER_LISTEN=unix:$D/b$i.peer.sock PROCESSOR_DEFAULT_URL=http://127.0.0.1:25001 PROCESSOR_FALLBACK_URL=http://127.0.0.1:25002 WORKERS=1)
  case $MODE in
    journal) env+=(DATA_DIR=$D/data$i JOURNAL_SYNC=none);;
    batch) env+=(DATA_DIR=$D/data$i JOURNAL_SYNC=batch);;
  esac
  env "${env[@]}" $T/rinha > $D/b$i.log 2>&1 & bpids+=($!)
done
sleep 0.5
LISTEN=127.0.0.1:25000 BACKENDS=unix:$D/b1.sock,unix:$D/b2.sock $T/rinha-lb > $D/lb.log 2>&1 & pids+=($!)
sleep 0.5
timeout $((DUR+60)) $T/rinha-bench rinha --target http://127.0.0.1:25000 --default http://127.0.0.1:25001 --fallback http://127.0.0.1:25002 --duration $DUR --quiet --json $D/result.json > $D/bench.out 2>&1
hz=$(getconf CLK_TCK)
cpu=0
for p in "${bpids[@]}"; do
  read -r ut st < <(awk '{sub(/.*\) /,""); print $12, $13}' /proc/$p/stat)
  cpu=$(echo "$cpu + ($ut + $st)/$hz" | bc -l)
done
kill "${bpids[@]}" "${pids[@]}" 2>/dev/null; wait 2>/dev/null
printf "%s cpu_backends=%.2f\n" $LABEL $cpu
grep -iE "payments|p99|inconsist|total" $D/bench.out | head -12
du -sh $D/data* 2>/dev/null
