#!/bin/sh
# Installs the build dependencies, builds weir and runs its main job: the embedded default
# configuration (forward on 24224, HTTP on 8888, events into ./weir-out), or the
# configuration given with -c.
set -eu
cd "$(dirname "$0")/.."
sh scripts/deps.sh
. scripts/steps.sh
weir_configure_run build
cmake --build build -j"$(nproc)" --target weir
cat <<MSG

weir is starting. Send it a test event from another terminal:
  curl -X POST -H 'Content-Type: application/json' -d '{"message":"hello"}' http://localhost:8888/test.log
  echo '{"message":"hello"}' | fluent-cat test.log      # if you have Fluentd's fluent-cat
Events land in ./weir-out/<tag>/ once their minute closes (or at once on Ctrl-C / kill -USR1).

MSG
exec ./build/weir "$@"
