# The build steps scripts/run.sh and scripts/test.sh share with the test that checks them
# (test/integration/test_newcomer_path.py): sourced, never run. Each takes the build
# directory first; a directory another step configured before is reconfigured to this
# step's options, since CMake keeps a cached option until it is given again.

# weir_configure_run DIR: the daemon alone, as scripts/run.sh builds it
weir_configure_run() {
    cmake -S . -B "$1" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DWEIR_TESTS=OFF >/dev/null
}

# weir_configure_tests DIR [cmake options]: the daemon and every test, warnings as errors
weir_configure_tests() {
    dir=$1
    shift
    cmake -S . -B "$dir" -DWEIR_TESTS=ON -DWEIR_WERROR=ON "$@" >/dev/null
}

# weir_ctest DIR [ctest options]: runs DIR's tests; finding none is a failure, not a pass
weir_ctest() {
    dir=$1
    shift
    ctest --test-dir "$dir" --no-tests=error --output-on-failure "$@"
}
