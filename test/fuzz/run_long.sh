#!/bin/sh
# A long libFuzzer run by hand, as recorded in test/fuzz/README.md:
#   sh test/fuzz/run_long.sh BUILD_DIR TARGET SECONDS WORKDIR
# BUILD_DIR is a clang build with -DWEIR_SANITIZE=ON -DWEIR_FUZZ=ON. The corpus (seeded by
# make_corpus.py, kept between runs), the crash artifacts, libFuzzer's log and the CPU time
# (/usr/bin/time -v) go to WORKDIR/TARGET. The run is niced: the machine is shared.
set -eu
if [ $# -ne 4 ]; then
    sed -n '2,6p' "$0" >&2
    exit 2
fi
build=$(cd "$1" && pwd) target=$2 secs=$3 dir=$4/$2
src=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$dir/corpus" "$dir/artifacts"
/usr/bin/python3 "$src/make_corpus.py" "$target" "$dir/corpus" >/dev/null
cd "$dir"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
exec /usr/bin/time -v -o "$dir/time.txt" nice -n 19 "$build/test/fuzz/$target" \
    -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$dir/artifacts/" "$dir/corpus" >"$dir/log.txt" 2>&1
