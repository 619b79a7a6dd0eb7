#!/bin/sh
# End-to-end S3 output benchmark on one machine:
#   fwd_loadgen (forward, acks) -> weir (file buffer, <match> @type s3, gzip) -> s3rver
# Prints fwd_loadgen's events/s and weir's peak RSS, then the time the buffer took to drain
# into S3 after a SIGUSR1 flush, and the objects and bytes that landed. s3rver is slow and
# single-threaded, so the drain figure is a floor for weir's upload path, not S3's speed.
#
#   bench/bench_s3.sh [build-dir] [seconds] [connections] [events/frame] [record bytes]
#
# Needs `npm ci` (s3rver) and a build with bench/fwd_loadgen. Only 127.0.0.1 is used.
set -eu
cd "$(dirname "$0")/.."
build=${1:-build}
secs=${2:-10}
conns=${3:-4}
events=${4:-1000}
size=${5:-200}

[ -x "$build/weir" ] || { echo "no $build/weir: build first" >&2; exit 1; }
[ -x "$build/bench/fwd_loadgen" ] || { echo "no $build/bench/fwd_loadgen" >&2; exit 1; }
[ -f node_modules/s3rver/bin/s3rver.js ] || { echo "s3rver missing: run npm ci" >&2; exit 1; }

work=$(mktemp -d /tmp/weir-bench-s3.XXXXXX)
s3pid=
wpid=
cleanup() {
    [ -n "$wpid" ] && kill "$wpid" 2>/dev/null || true
    [ -n "$s3pid" ] && kill "$s3pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
    python3 -c 'import socket,sys,time
for _ in range(200):
    try: socket.create_connection(("127.0.0.1", int(sys.argv[1])), 0.2).close(); sys.exit(0)
    except OSError: time.sleep(0.05)
sys.exit(1)' "$1"
}

s3port=$(port)
fwdport=$(port)
mkdir -p "$work/s3"
node node_modules/s3rver/bin/s3rver.js -d "$work/s3" -p "$s3port" --address 127.0.0.1 --silent &
s3pid=$!
wait_port "$s3port"

cat >"$work/fluent.conf" <<EOF
<source>
  @type forward
  port $fwdport
  bind 127.0.0.1
</source>
<match **>
  @type s3
  s3_bucket bench
  s3_endpoint http://127.0.0.1:$s3port
  force_path_style true
  aws_key_id S3RVER
  aws_sec_key S3RVER
  path logs/
  s3_object_key_format %{path}%{time_slice}_\${chunk_id}.%{file_extension}
  check_object false
  <buffer time>
    @type file
    path $work/buf
    timekey 3600
    timekey_wait 0
    flush_mode interval
    flush_interval 1h
    flush_thread_count 4
    chunk_limit_size 64m
  </buffer>
</match>
EOF
"$build/weir" -c "$work/fluent.conf" 2>"$work/weir.log" &
wpid=$!
wait_port "$fwdport"

echo "== ingest: $conns connections, $events events/frame, $size-byte records, ${secs}s, acks"
"$build/bench/fwd_loadgen" -p "$fwdport" -c "$conns" -e "$events" -r "$size" -s "$secs" -a \
    --pid "$wpid"

echo "== drain to S3"
start=$(date +%s.%N)
kill -USR1 "$wpid"
while [ "$(find "$work/buf" -type f ! -name '.weir.lock' ! -path '*/backup/*' | wc -l)" -gt 0 ]; do
    sleep 0.1
done
end=$(date +%s.%N)
objects=$(find "$work/s3/bench" -name '*._S3rver_object' | wc -l)
bytes=$(find "$work/s3/bench" -name '*._S3rver_object' -exec cat {} + | wc -c)
echo "drained in $(awk "BEGIN { printf \"%.2f\", $end - $start }") s: $objects objects, $bytes bytes (gzip)"
grep -c "failed to flush" "$work/weir.log" | sed 's/^/flush failures: /'
