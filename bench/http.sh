#!/bin/sh
# HTTP input over mTLS as teleport-event-handler drives it (bench/httpbench: Go net/http,
# ForceAttemptHTTP2, 10 keep-alive connections, one JSON event per POST), paced at RATE
# requests/s, into @type null and into a file buffer acknowledged after fsync.
# Usage: bench/http.sh [build dir] [rate] [seconds]
# WEIR_BENCH_FILTER: text put before the <match> (bench/dedupe.sh puts a dedupe filter there).
set -eu
B=${1:-build-rel}
RATE=${2:-2000}
SECS=${3:-30}
D=$(mktemp -d)
cd "$(dirname "$0")/.."
ROOT=$(pwd)
/usr/bin/python3 -c "import sys; sys.path.insert(0, 'test/integration'); import weirtest; print(weirtest.make_certs('$D/keys'))" > "$D/pass"
(cd bench/httpbench && GO111MODULE=off GOPATH=/usr/share/gocode GOCACHE=/tmp/weir-gocache go build -o "$D/httpbench" .)
for out in null file; do
    cat > "$D/$out.conf" <<CONF
<source>
  @type http
  port 8889
  bind 127.0.0.1
  <transport tls>
    client_cert_auth true
    ca_path $D/keys/ca.crt
    cert_path $D/keys/server.crt
    private_key_path $D/keys/server.key
    private_key_passphrase $(cat "$D/pass")
  </transport>
  <parse>
    @type json
    time_type string
    time_format %Y-%m-%dT%H:%M:%S
  </parse>
</source>
CONF
    printf '%s\n' "${WEIR_BENCH_FILTER:-}" | sed "s|@DIR@|$D|g" >> "$D/$out.conf"
    if [ $out = null ]; then
        printf '<match **>\n  @type null\n</match>\n' >> "$D/$out.conf"
    else
        printf '<match **>\n  @type file\n  path %s/out/events\n  <buffer tag>\n    @type file\n    path %s/buf\n    flush_mode interval\n    flush_interval 3600\n  </buffer>\n</match>\n' "$D" "$D" >> "$D/$out.conf"
    fi
    "$ROOT/$B/weir" -c "$D/$out.conf" -q &
    PID=$!
    sleep 0.5
    echo "into $out, $RATE req/s:"
    "$D/httpbench" -url https://localhost:8889/test.log -ca "$D/keys/ca.crt" \
        -cert "$D/keys/client.crt" -key "$D/keys/client.key" -rate "$RATE" -conns 10 -seconds "$SECS"
    grep VmHWM /proc/$PID/status
    kill $PID
    wait $PID || true
done
rm -rf "$D"
