#!/bin/sh
# out_forward throughput weir -> weir with acks: an edge weir's file buffer is filled while
# the aggregator is down (fwd_loadgen, acks on), then the aggregator (forward input -> @type
# null) starts and the time until it has counted every event is the drain: out_forward's
# rate, with nothing else competing for the two cores. Usage: bench/out_forward.sh [build dir]
# [scratch dir] [extra out_forward lines, e.g. "compress gzip"]
set -eu
B=${1:-build-rel}
D=${2:-bench-scratch}/out_forward
EXTRA=${3:-}
EDGE=24232
AGG=24233
MET=24234
rm -rf "$D"
mkdir -p "$D"
cat > "$D/edge.conf" <<CONF
<source>
  @type forward
  port $EDGE
  bind 127.0.0.1
</source>
<match **>
  @type forward
  require_ack_response true
  heartbeat_interval 0.2s
  $EXTRA
  <server>
    host 127.0.0.1
    port $AGG
  </server>
  <buffer tag>
    @type file
    path $D/edge-buf
    flush_mode interval
    flush_interval 1s
    chunk_limit_size 8m
    total_limit_size 8g
    retry_wait 0.2s
    retry_max_interval 0.2s
    retry_forever true
    flush_thread_count 2
  </buffer>
</match>
CONF
cat > "$D/agg.conf" <<CONF
<source>
  @type forward
  port $AGG
  bind 127.0.0.1
</source>
<source>
  @type prometheus
  port $MET
  bind 127.0.0.1
</source>
<match **>
  @type null
</match>
CONF
"$B/weir" -c "$D/edge.conf" -q &
EPID=$!
sleep 0.5
"$B/bench/fwd_loadgen" -p $EDGE -c 4 -e 1000 -r 200 -s 5 -a | tee "$D/load.txt"
N=$(sed -n 's/.*events=\([0-9]*\) .*/\1/p' "$D/load.txt")
BYTES=$(du -sb "$D/edge-buf" | cut -f1)
"$B/weir" -c "$D/agg.conf" -q &
APID=$!
T0=$(date +%s.%N)
while :; do
    got=$(curl -s http://127.0.0.1:$MET/metrics |
          awk '/^fluentd_input_status_num_records_total/ {s += $2} END {printf "%d", s}')
    [ "${got:-0}" -ge "$N" ] && break
    sleep 0.05
done
T1=$(date +%s.%N)
echo "$N $BYTES $T0 $T1" | awk '{t = $4 - $3; printf "drained %d events (%.0f MB of buffer) in %.2f s: %.0f events/s, %.1f MB/s\n", $1, $2 / 1e6, t, $1 / t, $2 / 1e6 / t}'
grep VmHWM /proc/$EPID/status | sed 's/^/edge peak RSS: /'
kill $EPID $APID
wait $EPID $APID 2>/dev/null || true
rm -rf "$D"
