#!/bin/sh
# Forward input into @type null: the input's own cost. Usage: bench/forward.sh [build dir]
set -eu
B=${1:-build-rel}
PORT=24230
conf=$(mktemp)
cat > "$conf" <<CONF
<source>
  @type forward
  port $PORT
  bind 127.0.0.1
</source>
<match **>
  @type null
</match>
CONF
"$B/weir" -c "$conf" -q &
PID=$!
sleep 0.5
for args in "-a" "" "-a -z"; do
    "$B/bench/fwd_loadgen" -p $PORT -c 4 -e 1000 -r 200 -s 10 $args --pid $PID
done
kill $PID
wait $PID || true
rm -f "$conf"
