"""The container image itself: built from the Dockerfile with podman and run as a user runs it.

No Docker engine and no registry here, so, as README.md describes for such a machine:
scripts/image-base.sh makes debian:12-slim from Debian's repositories (mmdebstrap, cached under
the build directory), `podman build --format docker` builds the Dockerfile (the docker format
keeps HEALTHCHECK), and containers run with `--network host`, runc, cgroupfs and ulimits the
calling process can grant. podman's storage (images, containers, volumes) lives in a temporary
directory under the build directory and is deleted at the end, whatever happened.

Checked as a user would: the image's size (printed), its user (uid 999) and Fluentd layout,
no apt caches in it; with the default configuration, events over forward and HTTP reach the
container log, the health check passes, `podman stop` ends it with status 0 after every
accepted event was written; the time from `podman run` to the first acknowledged event
(printed). Then examples/teleport through the image as its README and docker-compose.yml say:
certificates from make-certs.sh (run under umask 077), the compose file's environment, mounts
and named buffer volume, the README's curl command and a teleport-event-handler stand-in, the
objects in the local S3 store (s3rver behind the SigV4 proxy of test_s3_output.py, in place of
MinIO, whose image cannot be pulled here; reached on 127.0.0.1 instead of http://s3:9000).

Needs root, podman, runc and mmdebstrap (sh scripts/deps.sh test), and the network to Debian's
mirror. In CI (CI=true) anything missing is a failure; elsewhere the test says loudly that it
was skipped and exits 77 (CTest: "Skipped")."""

import json
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import msgpack
import yaml

from test_docker_entrypoint import (FORWARD_PORT, HTTP_PORT, forward_send, ports_free, proc_uid,
                                    udp_heartbeat)
from test_s3_output import S3
from test_teleport_example import (AUDIT, BUCKET, FORGED, KEY_RE, SESSION, SID, build_teleportsim,
                                   canon, count_lines, expected, jq_lines, make_certs, run_sim)
from test_teleport_example import forward_send as forward_forged
from weirtest import SOURCE_DIR, STDOUT_LINE, run_tests, wait_port

SKIP = 77  # CTest's SKIP_RETURN_CODE for this test (test/CMakeLists.txt)
BUILD_DIR = os.environ.get("WEIR_BUILD_DIR", os.path.join(SOURCE_DIR, "build"))
TAG = "localhost/weir:test"
EXAMPLE = os.path.join(SOURCE_DIR, "examples", "teleport")
TIMES = {}  # what is measured, printed at the end


def missing_prerequisites():
    why = []
    if os.geteuid() != 0:
        why.append("not root (podman runs here with runc and cgroupfs as root)")
    for tool in ("podman", "runc", "mmdebstrap"):
        if not shutil.which(tool):
            why.append("%s is not installed (sh scripts/deps.sh test)" % tool)
    return why


def ulimits():
    """--ulimit options the caller can grant: podman's defaults for root (nofile and nproc of
    1048576) are above what a process here may set, and runc then fails with `error setting
    rlimits ... operation not permitted`."""
    nofile = min(resource.getrlimit(resource.RLIMIT_NOFILE)[1], 65536)
    return ["--ulimit", "nofile=%d:%d" % (nofile, nofile), "--ulimit", "nproc=4096:4096"]


class Podman:
    """podman with storage of its own under `root`."""

    def __init__(self):
        os.makedirs(BUILD_DIR, exist_ok=True)
        self.root = tempfile.mkdtemp(prefix="weir-podman-", dir=BUILD_DIR)
        self.cmd = ["podman", "--root", os.path.join(self.root, "storage"),
                    "--runroot", os.path.join(self.root, "run"),
                    "--tmpdir", os.path.join(self.root, "tmp"),
                    "--storage-driver", "overlay", "--runtime", "runc",
                    "--cgroup-manager", "cgroupfs", "--events-backend", "file"]

    def __call__(self, *args, check=True, timeout=120, **kw):
        p = subprocess.run(self.cmd + list(args), capture_output=True, timeout=timeout, **kw)
        if check and p.returncode != 0:
            raise AssertionError("podman %s: exit %d\n%s\n%s" % (
                " ".join(args), p.returncode, p.stdout.decode("utf-8", "replace")[-4000:],
                p.stderr.decode("utf-8", "replace")))
        return p

    def out(self, *args, **kw):
        return self(*args, **kw).stdout.decode("utf-8", "replace").strip()

    def inspect(self, name, fmt):
        return self.out("inspect", "--format", fmt, name)

    def run(self, name, args, image=TAG):
        """`podman run -d` as this machine needs it; returns the container's name."""
        self("run", "-d", "--name", name, "--network", "host", "--log-driver", "k8s-file",
             *ulimits(), *args, image)
        return name

    def logs(self, name):
        p = self("logs", name)
        return p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")

    def running(self, name):
        return self.inspect(name, "{{.State.Running}}") == "true"

    def wait_listening(self, name, ports, timeout=60):
        deadline = time.time() + timeout
        for port in ports:
            while True:
                try:
                    wait_port(port, timeout=1)
                    break
                except RuntimeError:
                    if not self.running(name) or time.time() > deadline:
                        raise AssertionError("the container does not listen on %d:\n%s"
                                             % (port, "\n".join(self.logs(name))))

    def cleanup(self):
        self("rm", "--all", "--force", "--time", "0", check=False)
        self("volume", "rm", "--all", "--force", check=False)
        self("rmi", "--all", "--force", check=False)
        with open("/proc/self/mounts") as f:
            mounts = [l.split()[1] for l in f if l.split()[1].startswith(self.root + "/")]
        for m in sorted(mounts, reverse=True):
            subprocess.run(["umount", "-l", m], capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)


PODMAN = None
BUILD_FAILED = False


def podman():
    """The podman of this run, with the image built (once)."""
    global PODMAN, BUILD_FAILED
    assert not BUILD_FAILED, "the image was not built (the first test's failure says why)"
    if PODMAN is not None:
        return PODMAN
    BUILD_FAILED = True
    pm = Podman()
    PODMAN = pm
    t0 = time.monotonic()
    env = dict(os.environ, PODMAN=" ".join(pm.cmd),
               WEIR_IMAGE_CACHE=os.path.join(BUILD_DIR, "image-base"))
    p = subprocess.run(["sh", os.path.join(SOURCE_DIR, "scripts", "image-base.sh")], env=env,
                       capture_output=True, timeout=900)
    assert p.returncode == 0, "image-base.sh failed:\n" + p.stderr.decode("utf-8", "replace")
    TIMES["base image (mmdebstrap or cache, import)"] = "%.1f s" % (time.monotonic() - t0)
    t1 = time.monotonic()
    p = pm("build", "--format", "docker", "--network", "host", "--pull=never", *ulimits(),
           "-t", TAG, "-f", os.path.join(SOURCE_DIR, "Dockerfile"), SOURCE_DIR, timeout=1800)
    TIMES["podman build"] = "%.1f s" % (time.monotonic() - t1)
    BUILD_FAILED = False
    return pm


def image_config(pm):
    return json.loads(pm.out("image", "inspect", TAG))[0]


# ---- the image -------------------------------------------------------------------------------

def test_image_layout_user_and_size():
    """What `docker inspect` and a shell in the image show: uid 999, the Fluentd layout, the
    entry point, the health check, no apt caches."""
    pm = podman()
    img = image_config(pm)
    size = img["Size"]
    base = json.loads(pm.out("image", "inspect", "docker.io/library/debian:12-slim"))[0]["Size"]
    TIMES["image size"] = "%.1f MB (%d bytes; the base, debian:12-slim: %.1f MB)" % (
        size / 1e6, size, base / 1e6)
    c = img["Config"]
    assert c["User"] == "999:999", c["User"]
    assert c["Entrypoint"] == ["/bin/entrypoint.sh"] and c["Cmd"] == ["weir"], c
    assert "FLUENTD_CONF=fluent.conf" in c["Env"], c["Env"]
    assert c["WorkingDir"] == "/home/fluent", c
    assert set(c["ExposedPorts"]) == {"24224/tcp", "24224/udp", "8888/tcp"}, c["ExposedPorts"]
    # kept by --format docker (the OCI format has no HEALTHCHECK)
    assert img["ManifestType"] == "application/vnd.docker.distribution.manifest.v2+json", img
    assert img.get("Healthcheck") == {"Test": ["CMD", "/bin/entrypoint.sh", "healthcheck"],
                                      "Interval": 30 * 10**9, "Timeout": 10 * 10**9,
                                      "StartPeriod": 30 * 10**9, "Retries": 3}, img

    script = ("id -u; id -g; id -un; "
              "stat -c '%u:%g %a %n' /fluentd /fluentd/etc /fluentd/buffer /fluentd/log "
              "/home/fluent /fluentd/etc/fluent.conf /bin/entrypoint.sh /usr/local/bin/weir; "
              "touch /fluentd/buffer/w /fluentd/log/w /home/fluent/w && echo writable")
    out = pm.out("run", "--rm", "--network", "host", *ulimits(), "--entrypoint", "sh", TAG,
                 "-c", script).splitlines()
    assert out[:3] == ["999", "999", "fluent"], out
    modes = dict(reversed(l.rsplit(" ", 1)) for l in out[3:-1])
    for d in ("/fluentd", "/fluentd/etc", "/fluentd/buffer", "/fluentd/log", "/home/fluent"):
        assert modes[d].startswith("999:999 "), (d, modes[d])
    assert modes["/fluentd/etc/fluent.conf"].split()[1] in ("644", "444"), modes
    assert modes["/bin/entrypoint.sh"].split()[1] == "755", modes
    assert modes["/usr/local/bin/weir"].split()[1] == "755", modes
    assert out[-1] == "writable", out

    # the runtime layer carries no apt caches, whatever the base's apt settings (the base made
    # by image-base.sh has no docker-clean hook: the Dockerfile must clean up itself)
    left = pm.out("run", "--rm", "--network", "host", *ulimits(), "--user", "0",
                  "--entrypoint", "sh", TAG, "-c",
                  "find /var/cache/apt /var/lib/apt/lists -type f ! -name lock")
    assert left == "", "apt's caches are in the image:\n" + left


def forward_until_acked(pm, name, t0, timeout=120):
    """Sends one acked forward event until weir acknowledges it; seconds since t0."""
    deadline = time.monotonic() + timeout
    last_check = 0
    while True:
        try:
            if forward_send(FORWARD_PORT, "image.first", {"message": "first"}):
                return time.monotonic() - t0
        except OSError:
            pass
        now = time.monotonic()
        if now > deadline:
            raise AssertionError("no ack within %d s:\n%s" % (timeout, "\n".join(pm.logs(name))))
        if now - last_check > 1:
            last_check = now
            assert pm.running(name), "the container exited:\n" + "\n".join(pm.logs(name))
        time.sleep(0.02)


def forward_burst(n, tag):
    """n events on one connection, only the last one asking for an ack: once it is
    acknowledged weir has accepted all of them."""
    data = b"".join(msgpack.packb([tag, int(time.time()), {"seq": i}], use_bin_type=True)
                    for i in range(n - 1))
    data += msgpack.packb([tag, int(time.time()), {"seq": n - 1}, {"chunk": "burst"}],
                          use_bin_type=True)
    with socket.create_connection(("127.0.0.1", FORWARD_PORT), timeout=30) as s:
        s.sendall(data)
        u = msgpack.Unpacker(raw=False)
        while True:
            b = s.recv(4096)
            assert b, "weir closed the connection without an ack"
            u.feed(b)
            for msg in u:
                assert msg == {"ack": "burst"}, msg
                return


def stdout_events(text):
    return [(m.group(3), json.loads(m.group(4)))
            for m in map(STDOUT_LINE.match, text.splitlines()) if m]


def test_default_configuration():
    """`docker run IMAGE`: the image's own fluent.conf, forward and HTTP into the container
    log, the health check, `docker stop`."""
    pm = podman()
    ports_free(FORWARD_PORT, HTTP_PORT)
    name = "weir-default-%d" % os.getpid()
    t0 = time.monotonic()
    pm.run(name, [])
    TIMES["podman run -d returned"] = "%.2f s" % (time.monotonic() - t0)
    first = forward_until_acked(pm, name, t0)
    TIMES["start-up: podman run to the first acknowledged forward event"] = "%.2f s" % first

    # weir itself, as PID 1 of the container, runs as uid 999 (no user namespace here: the
    # host's view of its uid is the container's)
    pid = int(pm.inspect(name, "{{.State.Pid}}"))
    assert proc_uid(pid) == [999] * 4, proc_uid(pid)
    with open("/proc/%d/comm" % pid) as f:
        assert f.read().strip() == "weir"

    req = urllib.request.Request("http://127.0.0.1:%d/image.http" % HTTP_PORT,
                                 data=b'{"message":"via http"}',
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200
    assert udp_heartbeat(FORWARD_PORT) == b"\0"

    p = pm("healthcheck", "run", name, check=False)
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert pm.inspect(name, "{{.State.Health.Status}}") == "healthy"

    # 2000 events accepted just before the stop: all of them in the log after it
    n = 2000
    forward_burst(n, "image.burst")
    p = pm("stop", "--time", "30", name)
    assert pm.inspect(name, "{{.State.ExitCode}}") == "0", "\n".join(pm.logs(name))
    out, err = pm.logs(name)
    assert "received SIGTERM" in err and "shutdown complete" in err, err
    ev = stdout_events(out)
    assert ("image.first", {"message": "first"}) in ev, out[-2000:]
    assert ("image.http", {"message": "via http"}) in ev, out[-2000:]
    burst = [r["seq"] for t, r in ev if t == "image.burst"]
    assert burst == list(range(n)), (len(burst), burst[:5], burst[-5:])
    pm("rm", name)


def test_start_up_time():
    """`podman run` to the first acknowledged forward event, five times over (the figure in
    bench/RESULTS.md); each run ends with an orderly stop."""
    pm = podman()
    ports_free(FORWARD_PORT, HTTP_PORT)
    took = []
    for i in range(5):
        name = "weir-start-%d-%d" % (os.getpid(), i)
        t0 = time.monotonic()
        pm.run(name, [])
        took.append(forward_until_acked(pm, name, t0))
        pm("stop", "--time", "30", name)
        assert pm.inspect(name, "{{.State.ExitCode}}") == "0", "\n".join(pm.logs(name))
        pm("rm", name)
    took.sort()
    TIMES["start-up, 5 runs: min / median / max"] = "%.2f / %.2f / %.2f s" % (
        took[0], took[2], took[4])


# ---- examples/teleport through the image -------------------------------------------------------

def readme_curl():
    """The README's "Try it by hand" command, as written."""
    with open(os.path.join(EXAMPLE, "README.md")) as f:
        text = f.read()
    m = re.search(r"```sh\n(curl --cacert keys/ca\.crt .*?)\n```", text, re.S)
    assert m, "examples/teleport/README.md no longer has the curl command this test runs"
    return m.group(1)


def compose_weir(ex, dotenv, s3_endpoint, volume_prefix):
    """`podman run` options for docker-compose.yml's weir service: its environment (with
    ${VAR} from .env, as compose substitutes), its bind mounts and named volumes, and its stop
    grace period. Only S3_ENDPOINT changes: the local store is on 127.0.0.1, not `s3`."""
    with open(os.path.join(ex, "docker-compose.yml")) as f:
        compose = yaml.safe_load(f)
    svc = compose["services"]["weir"]
    assert svc["build"] == {"context": "../..", "dockerfile": "Dockerfile"}, svc["build"]

    def subst(v):
        return re.sub(r"\$\{(\w+)(?::?[?-][^}]*)?\}", lambda m: dotenv[m.group(1)], str(v))

    env = {k: subst(v) for k, v in svc["environment"].items()}
    assert env.get("S3_ENDPOINT") == "http://s3:9000", env
    env["S3_ENDPOINT"] = s3_endpoint
    args, volumes = [], []
    for v in svc["volumes"]:
        src, dst, *mode = v.split(":")
        if src.startswith("./"):
            src = os.path.join(ex, src[2:])
            assert os.path.exists(src), v
        else:
            assert src in compose["volumes"], v
            volumes.append(volume_prefix + src)
            src = volume_prefix + src
        args += ["-v", ":".join([src, dst] + mode)]
    grace = svc.get("stop_grace_period", "10s")
    assert re.fullmatch(r"\d+s", grace), grace
    ports = sorted({int(re.search(r"(\d+):\d+(/\w+)?$", p).group(1)) for p in svc["ports"]})
    return env, args, volumes, int(grace[:-1]), ports


def buffer_files(d):
    return [os.path.join(r, f) for r, _, fs in os.walk(d) for f in fs]


def test_teleport_example_through_the_image():
    pm = podman()
    d = tempfile.mkdtemp(prefix="weir-image-teleport-")
    os.chmod(d, 0o755)
    ex = os.path.join(d, "teleport")  # the user's copy of examples/teleport
    shutil.copytree(EXAMPLE, ex)
    name = "weir-teleport-%d" % os.getpid()
    s3 = S3()
    try:
        # ./make-certs.sh > .env, by a user whose umask is 077
        passphrase = make_certs(os.path.join(ex, "keys"), umask=0o077)
        with open(os.path.join(ex, ".env"), "w") as f:
            f.write("FLUENTD_KEY_PASSPHRASE=%s\n" % passphrase)
        dotenv = dict(l.split("=", 1) for l in open(os.path.join(ex, ".env")).read().split())

        env, mounts, volumes, grace, ports = compose_weir(
            ex, dotenv, "http://127.0.0.1:%d" % s3.port, "weir-teleport-%d-" % os.getpid())
        assert ports == sorted([HTTP_PORT, FORWARD_PORT]), ports
        ports_free(*ports)
        s3.state.add_key(env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"])
        envfile = os.path.join(d, "weir.env")  # not on podman's command line: a secret
        with open(envfile, "w") as f:
            f.write("".join("%s=%s\n" % kv for kv in env.items()))
        sim = build_teleportsim(d)

        pm.run(name, ["--env-file", envfile] + mounts)
        pm.wait_listening(name, ports)
        p = pm("healthcheck", "run", name, check=False)
        assert p.returncode == 0, (p.stdout, p.stderr)

        # the README's curl, run in the example's folder: an empty 200
        p = subprocess.run(readme_curl() + " -sS -w '%{http_code}'", shell=True, cwd=ex,
                           capture_output=True, timeout=60)
        assert p.returncode == 0 and p.stdout == b"200", (p.stdout, p.stderr)
        # ...and without the client certificate no HTTP answer at all
        p = subprocess.run("curl -sS --cacert keys/ca.crt -o /dev/null -w '%{http_code}' "
                           "-d '{}' https://localhost:8888/test.log", shell=True, cwd=ex,
                           capture_output=True, timeout=60)
        assert p.returncode != 0 and p.stdout == b"000", (p.returncode, p.stdout, p.stderr)

        # the event handler's traffic: audit and session events (from 2024, closed minutes)
        rep = run_sim(sim, d, os.path.join(ex, "keys"), HTTP_PORT, "test.log", AUDIT, SESSION)
        assert rep["successes"] == len(AUDIT) + len(SESSION) and rep["failures"] == 0, rep
        # an event of 30 minutes from now: its minute is open until long after the stop, so
        # only the stop's flush (flush_at_shutdown) can upload it
        t = time.gmtime(time.time() + 1800)
        future = '{"event":"user.login","success":true,"user":"future","time":"%s.000Z"}' % \
            time.strftime("%Y-%m-%dT%H:%M:%S", t)
        p = subprocess.run(["curl", "-sS", "--cacert", "keys/ca.crt", "--cert", "keys/client.crt",
                            "--key", "keys/client.key", "-H", "Content-Type: application/json",
                            "-d", future, "-w", "%{http_code}",
                            "https://localhost:%d/test.log" % HTTP_PORT],
                           cwd=ex, capture_output=True, timeout=60)
        assert p.returncode == 0 and p.stdout == b"200", (p.stdout, p.stderr)
        # the unauthenticated forward port: acknowledged, never uploaded
        forged_tags = ["test.log", "session.%s.log" % SID]
        for tag in forged_tags:
            forward_forged(FORWARD_PORT, tag, FORGED)

        readme_event = json.loads(re.search(r"-d '(\{.*?\})'", readme_curl()).group(1))
        closed = len(AUDIT) + len(SESSION) + 1
        objs = s3.wait_objects(BUCKET, lambda o: count_lines(o) >= closed, timeout=90)
        assert count_lines(objs) == closed, (count_lines(objs), "\n".join(pm.logs(name)))
        assert '"future"' not in json.dumps([jq_lines(v[0]) for v in objs.values()])

        # the future event waits in the buffer volume, in a chunk file under its path
        mp = pm.out("volume", "inspect", "--format", "{{.Mountpoint}}", volumes[0])
        files = [f for f in buffer_files(mp) if not f.endswith(".lock")]
        held = [f for f in files if not f.startswith(os.path.join(mp, "dedupe"))]
        assert held and all(f.startswith(os.path.join(mp, "s3") + "/") for f in held), held
        # and the dedupe filters' keys live on the same volume, to outlive the container
        for index in ("dedupe", "dedupe-sessions"):
            assert os.path.join(mp, index, "hash.key") in files, files

        # docker compose stop: SIGTERM, the compose file's grace period
        pm("stop", "--time", str(grace), name, timeout=grace + 60)
        out, err = pm.logs(name)
        assert pm.inspect(name, "{{.State.ExitCode}}") == "0", err
        for secret in (env["AWS_SECRET_ACCESS_KEY"], passphrase):
            assert secret not in out + err, "a secret reached the container log"

        # the example signs digests (weir-digests/, one an hour): one may land if the hour
        # turns during the test; the data objects are the rest
        objs = {k: v for k, v in s3.objects(BUCKET).items() if not k.startswith("weir-digests/")}
        got, tags = [], set()
        for key, (data, _) in sorted(objs.items()):
            m = KEY_RE.match(key)
            assert m, "object key %r does not follow the example's layout" % key
            tags.add(m.group(5))
            lines = jq_lines(data)
            for r in lines:
                assert r["tag"] == m.group(5), (key, r)
            got += lines
        stag = "session.%s.log" % SID
        want = [expected("test.log", b) for b in AUDIT] + [expected(stag, b) for b in SESSION]
        want += [dict(readme_event, tag="test.log"), expected("test.log", future)]
        assert canon(got) == canon(want), (canon(got), canon(want))
        assert tags == {"test.log", stag}, tags
        # the forged events went to the container log (<label @FORWARD>), not to S3
        assert [(t, r["user"]) for t, r in stdout_events(out)] == \
            [(t, "forged") for t in forged_tags], out[-3000:]

        # the buffer volume holds nothing more than the digest chain's state and the dedupe
        # filters' keys: everything accepted was uploaded, and each object is in the open
        # hour's list (or, should the hour have turned, in a digest already stored: nothing
        # waits in pending/)
        left = [f for f in buffer_files(mp) if not f.endswith(".lock")
                and not f.startswith(os.path.join(mp, "dedupe"))]
        digest_dir = os.path.join(mp, "s3", "digest") + "/"
        state = sorted(f[len(digest_dir):] for f in left if f.startswith(digest_dir))
        assert [f for f in left if not f.startswith(digest_dir)] == [], left
        assert state == ["open.jsonl", "state.json"], state
        with open(digest_dir + "open.jsonl") as fh:
            open_keys = [json.loads(line)["key"] for line in fh if line.strip()]
        assert len(open_keys) == len(set(open_keys)) and set(open_keys) <= set(objs), \
            (open_keys, sorted(objs))
    finally:
        pm("rm", "--force", "--time", "0", name, check=False)
        s3.stop()
        shutil.rmtree(s3.dir, ignore_errors=True)
        shutil.rmtree(d, ignore_errors=True)


def main():
    t0 = time.monotonic()
    why = missing_prerequisites()
    if why:
        if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
            print("FAIL: the image test cannot run in CI: %s" % "; ".join(why), flush=True)
            sys.exit(1)
        print("*" * 78 + "\nSKIPPED: the container image was NOT built or tested: %s\n"
              % "; ".join(why) + "*" * 78, flush=True)
        sys.exit(SKIP)
    try:
        run_tests([
            test_image_layout_user_and_size,
            test_default_configuration,
            test_start_up_time,
            test_teleport_example_through_the_image,
        ])
    finally:
        if PODMAN is not None:
            PODMAN.cleanup()
        TIMES["the whole image test"] = "%.1f s" % (time.monotonic() - t0)
        for k, v in TIMES.items():
            print("  %s: %s" % (k, v), flush=True)


if __name__ == "__main__":
    main()
