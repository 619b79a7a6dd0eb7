#!/bin/sh
# What a <filter> costs per event: forward input → @type file (file buffer, ack after write,
# nothing flushed during the run: the ingest path, where filters run on the loop thread), with
# no filter, with a grep of no conditions (the floor: the filter stage walking each batch), with
# grep, with record_transformer, with both. Prints the load generator's line and
# weir's CPU time per acknowledged event; the difference to the no-filter run is the filter's.
# Usage: bench/filters.sh [build dir] [scratch dir] [seconds]
set -eu
B=${1:-build-rel}
D=${2:-bench-scratch}
S=${3:-10}
# a free port now (other benchmarks may hold the fixed ones)
PORT=$(python3 -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
mkdir -p "$D"
GREP='<filter **>
  @type grep
  <regexp>
    key host
    pattern /^bench$/
  </regexp>
  <exclude>
    key message
    pattern /zzzz/
  </exclude>
</filter>'
RT='<filter **>
  @type record_transformer
  <record>
    hostname ${hostname}
    service ${tag_parts[0]}
    tag ${tag}
    seq_copy ${record["seq"]}
  </record>
</filter>'
run() { # name, filters
    conf="$D/filters.conf"
    cat > "$conf" <<CONF
<source>
  @type forward
  port $PORT
  bind 127.0.0.1
</source>
$2
<match **>
  @type file
  path $D/out/events
  <buffer tag>
    @type file
    path $D/buf
    flush_mode interval
    flush_interval 3600
    chunk_limit_size 4g
    ack_after write
  </buffer>
</match>
CONF
    "$B/weir" -c "$conf" -q &
    PID=$!
    sleep 0.5
    out=$("$B/bench/fwd_loadgen" -p $PORT -c 4 -e 1000 -r 200 -s "$S" -a --pid $PID)
    # utime + stime in clock ticks: fields 14 and 15 of /proc/PID/stat (the name has no space)
    ticks=$(awk '{print $14 + $15}' /proc/$PID/stat)
    kill -9 $PID
    wait $PID 2>/dev/null || true
    echo "$out"
    echo "$out" | awk -v n="$1" -v t="$ticks" -v hz="$(getconf CLK_TCK)" '/^events=/ {
        split($1, e, "="); printf "%s: weir CPU %.2f s for %d events: %.0f ns/event\n", n,
        t / hz, e[2], t / hz * 1e9 / e[2] }'
    rm -rf "$D/buf" "$D/out" "$conf"
}
run none ""
run floor '<filter **>
  @type grep
</filter>'
run grep "$GREP"
run record_transformer "$RT"
run both "$GREP
$RT"
