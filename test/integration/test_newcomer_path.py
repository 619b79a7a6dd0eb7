"""The README's two commands, as a newcomer runs them, without their traps: the test command
builds and runs the tests even in a build/ that scripts/run.sh configured without them (and a
build with no tests fails instead of passing), and the first build command people type,
`cmake -S . -B build -DCMAKE_BUILD_TYPE=Release && cmake --build build`, does not turn a
compiler's warnings into errors, even in a build/ the test command configured. (That a Release build has no warnings is scripts/test.sh's
Release stage, which builds with -Werror.)"""

import json
import os
import re
import shutil
import subprocess
import tempfile

from weirtest import SOURCE_DIR, run_tests


def steps(script, build_dir):
    """Runs `script` in sh with scripts/steps.sh sourced, in the source tree."""
    return subprocess.run(["sh", "-c", ". scripts/steps.sh\n" + script, "steps", build_dir],
                          cwd=SOURCE_DIR, capture_output=True, text=True, timeout=300)


def scratch():
    return tempfile.mkdtemp(prefix="weir-newcomer-")


def test_test_script_uses_the_shared_steps():
    # Every configure and ctest of the test command goes through scripts/steps.sh, which the
    # next test checks: a bare one would bring the trap back unseen.
    with open(os.path.join(SOURCE_DIR, "scripts/test.sh")) as f:
        text = f.read()
    code = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    bare = [line for line in code if re.search(r"(^|\s)(ctest|cmake -S)\s", line)]
    assert not bare, "scripts/test.sh configures or runs ctest outside scripts/steps.sh: %s" % bare
    body = "\n".join(code)
    assert re.search(r"^weir_configure_tests build ", body, re.M), body
    assert re.search(r"^weir_ctest build ", body, re.M), body


def test_tests_exist_after_run_sh_configured_the_build():
    d = scratch()
    try:
        p = steps('weir_configure_run "$1"', d)
        assert p.returncode == 0, p.stderr
        # run.sh's build holds no tests: running them must fail, not pass with none
        p = steps('weir_ctest "$1"', d)
        assert p.returncode != 0, "ctest passed on a build without tests:\n" + p.stdout
        assert "No tests were found" in p.stdout + p.stderr, p.stdout + p.stderr
        # the test command's configure step on the same directory brings every test back
        p = steps('weir_configure_tests "$1" -DCMAKE_BUILD_TYPE=RelWithDebInfo', d)
        assert p.returncode == 0, p.stderr
        listed = subprocess.run(["ctest", "--test-dir", d, "-N"], capture_output=True,
                                text=True, timeout=60).stdout
        names = re.findall(r"Test\s+#\d+: (\S+)", listed)
        units = sorted(os.path.splitext(f)[0] for f in os.listdir(
            os.path.join(SOURCE_DIR, "test/unit")) if f.startswith("test_") and f.endswith(".c"))
        assert units, "no unit tests in the source tree"
        for u in units:
            assert "unit." + u in names, "unit.%s missing from %s" % (u, names)
        assert "integration.test_newcomer_path" in names, names
    finally:
        shutil.rmtree(d)


def test_default_build_does_not_make_warnings_errors():
    """Also when the test command configured the directory first (-DWEIR_WERROR=ON): CMake
    would keep a cached option for the next plain configure."""
    d = scratch()
    try:
        p = steps('weir_configure_tests "$1"', d)
        assert p.returncode == 0, p.stderr
        p = subprocess.run(["cmake", "-S", ".", "-B", d, "-DCMAKE_BUILD_TYPE=Release"],
                           cwd=SOURCE_DIR, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr
        with open(os.path.join(d, "compile_commands.json")) as f:
            commands = [c["command"] for c in json.load(f)]
        weir_main = [c for c in commands if c.rstrip().endswith("src/main.c")]
        assert weir_main and all("-O3" in c for c in weir_main), weir_main
        werror = [c for c in commands if re.search(r"\s-Werror(\s|$)", c)]
        assert not werror, "a default build compiles with -Werror: %s" % werror[0]
    finally:
        shutil.rmtree(d)


if __name__ == "__main__":
    run_tests([
        test_test_script_uses_the_shared_steps,
        test_tests_exist_after_run_sh_configured_the_build,
        test_default_build_does_not_make_warnings_errors,
    ])
