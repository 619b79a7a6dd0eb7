#!/bin/sh
# Installs what weir needs from Debian 12's packages. `deps.sh` = to build and run;
# `deps.sh test` = also what the test suite uses (real clients, sanitizers, s3rver's Node.js,
# Chromium with chromedriver and Selenium: the status page is tested in a real browser; and for
# the container image: podman with runc, mmdebstrap for its debian:12-slim base).
# `deps.sh image` = only what building the image without Docker needs (scripts/image-base.sh).
# Skips apt-get entirely when everything is already there.
set -eu

# podman with runc (Debian's podman prefers crun, which fails on a mixed cgroup v1/v2
# hierarchy), and mmdebstrap to make the base image from Debian's repositories when no
# registry is reachable. --no-install-recommends keeps buildah, slirp4netns and
# fuse-overlayfs out: root podman with --network host and the kernel's overlay needs none.
IMAGE="podman runc mmdebstrap"
BUILD="build-essential cmake pkg-config libuv1-dev libmsgpack-dev libcurl4-openssl-dev libssl-dev
libjansson-dev zlib1g-dev libzstd-dev libhttp-parser-dev libpcre2-dev"
TEST="libcmocka-dev python3 python3-msgpack python3-fluent-logger golang-go
golang-github-fluent-fluent-logger-golang-dev openssl curl jq zstd clang libclang-rt-14-dev
clang-format procps util-linux strace chromium chromium-driver python3-selenium python3-yaml
python3-cryptography
time $IMAGE"
# s3rver (the S3 server of the tests) runs on Node.js; use the one on PATH if there is one
if [ "${1:-}" = "test" ] && ! command -v node >/dev/null 2>&1; then
    TEST="$TEST nodejs npm"
fi

want="$BUILD"
[ "${1:-}" = "test" ] && want="$BUILD $TEST"
[ "${1:-}" = "image" ] && want="$IMAGE"

missing=""
for p in $want; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo
echo "installing:$missing"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
