#!/bin/sh
# Forward input into a file buffer, acks after fsync (the default) and after write, beside
# the disk's own sequential-write limit. Usage: bench/buffer.sh [build dir] [scratch dir]
# The scratch dir must be on the disk to measure (default: ./bench-scratch).
set -eu
B=${1:-build-rel}
D=${2:-bench-scratch}
mkdir -p "$D"
echo "disk limit (dd, 1 GiB, conv=fdatasync):"
dd if=/dev/zero of="$D/dd.bin" bs=1M count=1024 conv=fdatasync 2>&1 | tail -1
rm -f "$D/dd.bin"
for mode in fsync write; do
    PORT=24231
    conf="$D/$mode.conf"
    cat > "$conf" <<CONF
<source>
  @type forward
  port $PORT
  bind 127.0.0.1
</source>
<match **>
  @type file
  path $D/out/events
  <buffer tag>
    @type file
    path $D/buf-$mode
    flush_mode interval
    flush_interval 3600
    chunk_limit_size 4g
    ack_after $mode
  </buffer>
</match>
CONF
    "$B/weir" -c "$conf" -q &
    PID=$!
    sleep 0.5
    echo "ack_after $mode:"
    "$B/bench/fwd_loadgen" -p $PORT -c 4 -e 1000 -r 200 -s 10 -a --pid $PID
    du -sh "$D/buf-$mode"
    kill -9 $PID
    wait $PID 2>/dev/null || true
    rm -rf "$D/buf-$mode" "$D/out" "$conf"
done
