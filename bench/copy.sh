#!/bin/sh
# @type copy's own cost: the forward load of bench/forward.sh (acks on) into one output, then
# into a copy of two of the same, for `null` (the fan-out alone) and for file buffers (acks
# after fsync, flushed never during the run: ingest alone).
# Usage: bench/copy.sh [build dir] [scratch dir on the disk to measure]
set -eu
B=${1:-build-rel}
D=${2:-bench-scratch}
mkdir -p "$D"
PORT=${PORT:-24232} # another free port: PORT=... sh bench/copy.sh
store() { # $1: kind (null|file), $2: name
    if [ "$1" = null ]; then
        printf '    @type null\n'
    else
        printf '    @type file\n    path %s/out-%s/events\n    <buffer tag>\n      @type file\n' "$D" "$2"
        printf '      path %s/buf-%s\n      flush_mode interval\n      flush_interval 3600\n' "$D" "$2"
        printf '      chunk_limit_size 4g\n    </buffer>\n'
    fi
}
for kind in null file; do
    for shape in single copy2; do
        conf="$D/copy-$kind-$shape.conf"
        {
            printf '<source>\n  @type forward\n  port %s\n  bind 127.0.0.1\n</source>\n' $PORT
            if [ $shape = single ]; then
                printf '<match **>\n'
                store $kind a | sed 's/^  //'
            else
                printf '<match **>\n  @type copy\n  <store>\n'
                store $kind a
                printf '  </store>\n  <store>\n'
                store $kind b
                printf '  </store>\n'
            fi
            printf '</match>\n'
        } > "$conf"
        "$B/weir" -c "$conf" -q &
        PID=$!
        sleep 0.5
        kill -0 $PID # weir is listening (a port in use stops it at once)
        echo "$kind, $shape:"
        "$B/bench/fwd_loadgen" -p $PORT -c 4 -e 1000 -r 200 -s 10 -a --pid $PID
        kill -9 $PID
        wait $PID 2>/dev/null || true
        rm -rf "$D"/buf-* "$D"/out-* "$conf"
    done
done
