#!/bin/sh
# End to end, sustained: fwd_loadgen (forward, acks, every frame stamped with the current
# time) -> weir (file buffer, timekey 1 s, <format> json, store_as gzip) -> s3rver, for SECS
# seconds. Every 5 s it prints what s3rver has stored, what waits in weir's buffer and weir's
# RSS; at the end, the time the buffer takes to empty once the load stops (the lag from an
# event's arrival to its object: one second of bucket, plus this).
#   bench/s3.sh [build dir] [seconds] [connections]      (needs npm ci for s3rver)
# With DIGEST=<period> in the environment (e.g. DIGEST=10s) the output also signs digests
# (<digest>, docs/integrity.md) with a key made here, one per period.
set -eu
cd "$(dirname "$0")/.."
B=${1:-build-rel}
SECS=${2:-60}
CONNS=${3:-4}
W=$(mktemp -d /tmp/weir-s3bench.XXXXXX)
cleanup() {
    [ -n "${WPID:-}" ] && kill "$WPID" 2>/dev/null || true
    [ -n "${SPID:-}" ] && kill "$SPID" 2>/dev/null || true
    rm -rf "$W"
}
trap cleanup EXIT INT TERM
S3PORT=24251
FWDPORT=24252
mkdir -p "$W/s3"
node node_modules/s3rver/bin/s3rver.js -d "$W/s3" -p $S3PORT --address 127.0.0.1 --silent &
SPID=$!
sleep 1.5
DIGEST_CONF=""
if [ -n "${DIGEST:-}" ]; then
    openssl genpkey -algorithm ed25519 -out "$W/digest.key"
    DIGEST_CONF="<digest>
    private_key_path $W/digest.key
    prefix weir-digests/
    period $DIGEST
  </digest>"
fi
cat > "$W/fluent.conf" <<CONF
<source>
  @type forward
  port $FWDPORT
  bind 127.0.0.1
</source>
<match **>
  @type s3
  s3_bucket bench
  s3_endpoint http://127.0.0.1:$S3PORT
  force_path_style true
  aws_key_id S3RVER
  aws_sec_key S3RVER
  path logs/
  s3_object_key_format %{path}%{time_slice}_\${chunk_id}.%{file_extension}
  check_object false
  store_as gzip
  <format>
    @type json
  </format>
  <buffer time>
    @type file
    path $W/buf
    timekey 1
    timekey_wait 0
    timekey_use_utc true
    flush_thread_count 4
  </buffer>
  $DIGEST_CONF
</match>
CONF
"$B/weir" -c "$W/fluent.conf" -q &
WPID=$!
sleep 1
stored() { find "$W/s3/bench/logs" -name '*._S3rver_object' 2>/dev/null | xargs -r cat | wc -c; }
"$B/bench/fwd_loadgen" -p $FWDPORT -c "$CONNS" -e 1000 -r 200 -s "$SECS" -a -T --pid $WPID &
LPID=$!
t=0
while kill -0 $LPID 2>/dev/null; do
    sleep 5
    t=$((t + 5))
    echo "t=${t}s s3 objects=$(find "$W/s3/bench/logs" -name '*._S3rver_object' | wc -l)" \
         "stored=$(stored) bytes (gzip) buffer=$(du -sk "$W/buf" | cut -f1) KiB" \
         "weir $(grep VmRSS /proc/$WPID/status | tr -s ' ')"
done
wait $LPID || true
start=$(date +%s.%N)
while [ "$(find "$W/buf" -name 'buffer.*.chunk' | wc -l)" -gt 0 ]; do sleep 0.1; done
end=$(date +%s.%N)
echo "after the load stopped the buffer emptied in $(awk "BEGIN { printf \"%.2f\", $end - $start }") s"
[ -n "${DIGEST:-}" ] && echo "digests=$(find "$W/s3/bench/weir-digests" -name '*.json._S3rver_object' 2>/dev/null | wc -l)" \
    "pending=$(ls "$W/buf/digest/pending" | wc -l)"
echo "objects=$(find "$W/s3/bench/logs" -name '*._S3rver_object' | wc -l) stored=$(stored) bytes" \
     "weir peak $(grep VmHWM /proc/$WPID/status | tr -s ' ')"
# Lag from a time bucket's end to its object in the bucket: s3rver writes each object when it
# is uploaded, so the file's mtime is the upload time; the key names the bucket's start.
/usr/bin/python3 - "$W/s3/bench" <<'PY'
import calendar, os, re, sys, time
lags = []
for root, _, files in os.walk(sys.argv[1]):
    for f in files:
        m = re.search(r"(\d{14})_[0-9a-f]{32}\.gz\._S3rver_object$", f)
        if m:
            start = calendar.timegm(time.strptime(m.group(1), "%Y%m%d%H%M%S"))
            lags.append(os.stat(os.path.join(root, f)).st_mtime - (start + 1))
lags.sort()
if lags:
    pick = lambda q: lags[min(len(lags) - 1, int(q * len(lags)))]
    print("bucket end -> object uploaded: p50=%.2f s p90=%.2f s max=%.2f s (%d objects);"
          " an event waits up to 1 s more for its bucket to end" % (pick(0.5), pick(0.9),
                                                                  lags[-1], len(lags)))
PY
