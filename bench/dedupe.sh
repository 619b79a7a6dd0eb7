#!/bin/sh
# The dedupe filter's cost (docs/exactly-once.md): forward (4 connections, 1000-event frames,
# acks after fsync, every event a seq of its own: fwd_loadgen -U) into a file buffer, and HTTP
# as teleport-event-handler sends it (bench/http.sh, every request a uid of its own), each
# without and with `<filter> @type dedupe`; the memory per remembered key from the forward
# runs' peak RSS difference over weir_dedupe_keys.
# Usage: bench/dedupe.sh [build dir] [scratch dir] [http rate]
set -eu
B=${1:-build-rel}
D=${2:-bench-scratch}/dedupe
RATE=${3:-10000}
cd "$(dirname "$0")/.."
mkdir -p "$D"
for mode in on; do
    PORT=24233
    PROM=24234
    filter=""
    [ $mode = on ] && filter="<filter **>
  @type dedupe
  key seq
  path $D/dd
  memory_limit 1g
</filter>"
    cat > "$D/$mode.conf" <<CONF
<source>
  @type forward
  port $PORT
  bind 127.0.0.1
</source>
<source>
  @type prometheus
  port $PROM
  bind 127.0.0.1
</source>
$filter
<match **>
  @type file
  path $D/out/events
  <buffer tag>
    @type file
    path $D/buf
    flush_mode interval
    flush_interval 3600
    chunk_limit_size 4g
  </buffer>
</match>
CONF
    "$B/weir" -c "$D/$mode.conf" -q &
    PID=$!
    sleep 0.5
    echo "forward, dedupe $mode:"
    "$B/bench/fwd_loadgen" -p $PORT -c 4 -e 1000 -r 200 -s 10 -a -U --pid $PID
    curl -s http://127.0.0.1:$PROM/metrics | grep -E '^weir_dedupe_(keys|duplicates_total)' || true
    kill -9 $PID
    wait $PID 2>/dev/null || true
    rm -rf "$D/buf" "$D/out" "$D/dd" "$D/$mode.conf"
done
for mode in on; do
    echo "http, dedupe $mode:"
    f=""
    [ $mode = on ] && f="<filter **>
  @type dedupe
  key uid
  path @DIR@/dd
</filter>"
    WEIR_BENCH_FILTER="$f" sh bench/http.sh "$B" "$RATE" 15 | grep -A3 "into file" || true
done
