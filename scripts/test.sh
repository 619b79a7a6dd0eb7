#!/bin/sh
# Installs what the tests need, then builds and runs the whole suite twice: a normal
# -Werror build, and an AddressSanitizer + UndefinedBehaviorSanitizer build. Also checks
# clang-format, runs the fuzz targets briefly, builds and runs the container image with podman
# once (test_image.py, CTest label `image`), and builds Release with -Werror (gcc -O3 warns
# about more than -O2). Exits non-zero on the first failure, and when a build holds no tests (a
# build/ that scripts/run.sh configured without them is reconfigured with them).
set -eu
cd "$(dirname "$0")/.."
. scripts/steps.sh
sh scripts/deps.sh test
jobs=$(nproc)

echo "== npm ci (s3rver, pinned in package-lock.json)"
npm ci --no-audit --no-fund --loglevel=error

echo "== clang-format"
if ! find src include test bench -name '*.[ch]' | xargs clang-format --dry-run -Werror; then
    echo "clang-format: the files above are not formatted (clang-format -i FILE)" >&2
    exit 1
fi

echo "== build (gcc, -Werror)"
weir_configure_tests build -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build build -j"$jobs"
weir_ctest build -j"$jobs" -LE image

echo "== container image (podman: build the Dockerfile, run it, examples/teleport through it)"
image_start=$(date +%s)
weir_ctest build -L image --verbose # prints the image size and start-up time
echo "container image: $(($(date +%s) - image_start)) s"

echo "== build (clang, ASan + UBSan)"
CC=clang weir_configure_tests build-asan -DCMAKE_BUILD_TYPE=Debug -DWEIR_SANITIZE=ON -DWEIR_FUZZ=ON
cmake --build build-asan -j"$jobs"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    weir_ctest build-asan -j"$jobs" -LE image

echo "== build (gcc, Release, -Werror; built, not run)"
weir_configure_tests build-release -DCMAKE_BUILD_TYPE=Release
cmake --build build-release -j"$jobs"
