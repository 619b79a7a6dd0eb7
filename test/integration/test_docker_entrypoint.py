"""The Docker image's entry point, run the way the Dockerfile runs it, without Docker.

A temporary directory stands in for the image's root: ROOT/usr/local/bin/weir (this build's
binary), ROOT/bin/entrypoint.sh (docker/entrypoint.sh, mode 0755 as the Dockerfile sets it),
ROOT/fluentd/etc/fluent.conf (docker/fluent.conf), ROOT/fluentd/buffer and ROOT/home/fluent
(the working directory). The entry point finds `weir` on PATH and reads the configuration
directory from WEIR_ETC_DIR (default /fluentd/etc, the image's); one test uses the real
/fluentd/etc, creating it when missing and removing only what it created.

As in the image, weir runs as a non-root user: under root (CI) a system user is created if
missing and the entry point is started through setpriv with its uid, gid and groups; run by
a non-root user the test runs as that user.

What is checked is what `docker run` / `docker stop` / HEALTHCHECK would show: weir listens
on 24224 (tcp+udp) and 8888 as docker/fluent.conf says, events sent there reach the container
log, the health check tells a live weir from a stopped one, SIGTERM stops it with status 0, and
FLUENTD_CONF picks the file."""

import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request

import msgpack

from weirtest import SOURCE_DIR, STDOUT_LINE, WEIR_BIN, free_port, run_tests, wait_port

ENTRYPOINT = os.path.join(SOURCE_DIR, "docker", "entrypoint.sh")
DEFAULT_CONF = os.path.join(SOURCE_DIR, "docker", "fluent.conf")
TEST_USER = "weir-it"
FORWARD_PORT, HTTP_PORT = 24224, 8888  # docker/fluent.conf's


# ---- the fake image --------------------------------------------------------------------------

def run_as():
    """(uid, gid, command prefix) of the non-root user the entry point runs as."""
    if os.geteuid() != 0:
        return os.geteuid(), os.getegid(), []
    try:
        pw = pwd.getpwnam(TEST_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                        TEST_USER], capture_output=True)
        pw = pwd.getpwnam(TEST_USER)  # created here or, concurrently, by another test run
    assert pw.pw_uid != 0
    return pw.pw_uid, pw.pw_gid, ["setpriv", "--reuid=%d" % pw.pw_uid,
                                  "--regid=%d" % pw.pw_gid, "--init-groups", "--"]


class Image:
    """ROOT laid out as the Dockerfile lays out the image."""

    def __init__(self):
        self.uid, self.gid, self.prefix = run_as()
        self.root = tempfile.mkdtemp(prefix="weir-image-")
        os.chmod(self.root, 0o755)
        for d in ("usr/local/bin", "bin", "fluentd/etc", "fluentd/buffer", "fluentd/log",
                  "home/fluent"):
            os.makedirs(self.path(d), exist_ok=True)
        shutil.copy(WEIR_BIN, self.path("usr/local/bin/weir"))
        os.chmod(self.path("usr/local/bin/weir"), 0o755)
        shutil.copy(ENTRYPOINT, self.path("bin/entrypoint.sh"))
        os.chmod(self.path("bin/entrypoint.sh"), 0o755)  # RUN chmod 0755 /bin/entrypoint.sh
        shutil.copy(DEFAULT_CONF, self.path("fluentd/etc/fluent.conf"))
        for d in ("fluentd", "fluentd/etc", "fluentd/buffer", "fluentd/log", "home/fluent"):
            os.chown(self.path(d), self.uid, self.gid)  # chown -R fluent:fluent /fluentd
        self.env = {
            "PATH": "%s:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
                    % self.path("usr/local/bin"),
            "FLUENTD_CONF": "fluent.conf",  # ENV FLUENTD_CONF=fluent.conf
            "WEIR_ETC_DIR": self.path("fluentd/etc"),
            "HOME": self.path("home/fluent"),
            "TZ": "UTC",
        }
        # not the image's, but the test suite's: sanitizer settings of an ASan build
        for k in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"):
            if k in os.environ:
                self.env[k] = os.environ[k]

    def path(self, p):
        return os.path.join(self.root, p)

    def cmd(self, args):
        return self.prefix + [self.path("bin/entrypoint.sh")] + list(args)

    def run(self, args, env=None, timeout=60):
        e = dict(self.env)
        e.update(env or {})
        return subprocess.run(self.cmd(args), env=e, cwd=self.path("home/fluent"),
                              capture_output=True, timeout=timeout)

    def start(self, args=("weir",), env=None):
        """`docker run IMAGE [args]`: ENTRYPOINT ["/bin/entrypoint.sh"] with CMD ["weir"]."""
        return Container(self, args, env)

    def cleanup(self):
        shutil.rmtree(self.root, ignore_errors=True)


class Container:
    def __init__(self, image, args, env):
        self.image = image
        e = dict(image.env)
        e.update(env or {})
        d = tempfile.mkdtemp(prefix="weir-image-log-")
        self.out_path, self.err_path = os.path.join(d, "stdout"), os.path.join(d, "stderr")
        self.logdir = d
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            # own session: kill() reaches whatever the entry point left behind
            self.proc = subprocess.Popen(image.cmd(args), env=e, stdout=out, stderr=err,
                                         cwd=image.path("home/fluent"), start_new_session=True)

    def wait_listening(self, ports, timeout=20):
        deadline = time.time() + timeout
        for p in ports:
            while True:
                if self.proc.poll() is not None:
                    raise AssertionError("weir exited %d:\n%s" % (self.proc.returncode,
                                                                  self.log()))
                try:
                    wait_port(p, timeout=0.3)
                    break
                except RuntimeError:
                    if time.time() > deadline:
                        raise AssertionError("weir did not listen on %d:\n%s" % (p, self.log()))

    def log(self):
        with open(self.err_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def events(self):
        with open(self.out_path, "rb") as f:
            lines = f.read().decode("utf-8", "replace").splitlines()
        return [(m.group(3), json.loads(m.group(4))) for m in map(STDOUT_LINE.match, lines) if m]

    def wait_events(self, n, timeout=15):
        deadline = time.time() + timeout
        while time.time() < deadline and len(self.events()) < n:
            time.sleep(0.05)
        return self.events()

    def stop(self, timeout=30):
        """`docker stop`: SIGTERM, then the exit status."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        shutil.rmtree(self.logdir, ignore_errors=True)


def proc_uid(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("Uid:"):
                return [int(x) for x in line.split()[1:]]
    raise AssertionError("no Uid line")


def ports_free(*ports):
    for p in ports:
        s = socket.socket()
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("0.0.0.0", p))
        except OSError:
            raise AssertionError("port %d is in use on this machine; the image's default "
                                 "configuration needs it" % p)
        finally:
            s.close()


def forward_send(port, tag, record):
    """One forward message with an ack request; True once weir acknowledged it."""
    chunk = "ep-%d" % time.time_ns()
    data = msgpack.packb([tag, int(time.time()), record, {"chunk": chunk}], use_bin_type=True)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        u = msgpack.Unpacker(raw=False)
        while True:
            b = s.recv(4096)
            if not b:
                return False
            u.feed(b)
            for msg in u:
                return msg == {"ack": chunk}


def udp_heartbeat(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(3)
    try:
        s.sendto(b"\0", ("127.0.0.1", port))
        return s.recvfrom(16)[0]
    finally:
        s.close()


# ---- tests -----------------------------------------------------------------------------------

def test_default_image_run_as_non_root():
    """docker run IMAGE: weir as PID of the entry point, non-root, on 24224 and 8888; events
    reach the container log; SIGTERM stops it with status 0."""
    ports_free(FORWARD_PORT, HTTP_PORT)
    img = Image()
    c = img.start()
    try:
        c.wait_listening([FORWARD_PORT, HTTP_PORT])
        # the entry point exec'd weir: same process, now the weir binary, as the image's user
        assert os.readlink("/proc/%d/exe" % c.proc.pid) == img.path("usr/local/bin/weir")
        assert proc_uid(c.proc.pid) == [img.uid] * 4, proc_uid(c.proc.pid)
        assert img.uid != 0
        assert 'path="%s"' % img.path("fluentd/etc/fluent.conf") in c.log(), c.log()

        assert forward_send(FORWARD_PORT, "docker.forward", {"message": "via forward"})
        req = urllib.request.Request("http://127.0.0.1:%d/docker.http" % HTTP_PORT,
                                     data=b'{"message":"via http"}',
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 200
        assert udp_heartbeat(FORWARD_PORT) == b"\0"
        got = sorted(c.wait_events(2))
        assert got == [("docker.forward", {"message": "via forward"}),
                       ("docker.http", {"message": "via http"})], (got, c.log())

        assert c.stop() == 0, c.log()
        assert "shutdown complete" in c.log(), c.log()
    finally:
        c.kill()
        img.cleanup()


def test_healthcheck():
    """HEALTHCHECK CMD ["/bin/entrypoint.sh", "healthcheck"]: healthy while weir's loop runs,
    unhealthy when it is frozen or gone; the HTTP variant against in_http's port."""
    ports_free(FORWARD_PORT, HTTP_PORT)
    img = Image()
    c = img.start()
    try:
        c.wait_listening([FORWARD_PORT, HTTP_PORT])
        p = img.run(["healthcheck"])
        assert p.returncode == 0, p.stderr.decode()
        p = img.run(["healthcheck"], env={"WEIR_HEALTHCHECK": "http://127.0.0.1:%d/" % HTTP_PORT})
        assert p.returncode == 0, p.stderr.decode()
        p = img.run(["healthcheck"], env={"WEIR_HEALTHCHECK": "http://127.0.0.1:%d" % HTTP_PORT})
        assert p.returncode == 0, p.stderr.decode()
        p = img.run(["healthcheck"], env={"WEIR_HEALTHCHECK": "ftp://127.0.0.1:21"})
        assert p.returncode == 1 and b"WEIR_HEALTHCHECK must be" in p.stderr, p

        # a weir whose event loop does not run (here: stopped) is unhealthy, although the
        # kernel still holds its sockets open
        os.kill(c.proc.pid, signal.SIGSTOP)
        try:
            t0 = time.time()
            p = img.run(["healthcheck"])
            assert p.returncode == 1, p
            assert b"no answer to a UDP heartbeat" in p.stderr, p.stderr
            assert time.time() - t0 < 9  # inside the Dockerfile's --timeout=10s
        finally:
            os.kill(c.proc.pid, signal.SIGCONT)
        p = img.run(["healthcheck"])
        assert p.returncode == 0, p.stderr.decode()

        assert c.stop() == 0, c.log()
        p = img.run(["healthcheck"])
        assert p.returncode == 1, p
        p = img.run(["healthcheck"], env={"WEIR_HEALTHCHECK": "http://127.0.0.1:%d/" % HTTP_PORT})
        assert p.returncode == 1, p
        p = img.run(["healthcheck"], env={"WEIR_HEALTHCHECK": "none"})
        assert p.returncode == 0, p
    finally:
        c.kill()
        img.cleanup()


def other_conf(port):
    return ("<source>\n  @type forward\n  port %d\n  bind 127.0.0.1\n</source>\n"
            "<match **>\n  @type stdout\n</match>\n" % port)


def test_fluentd_conf_picks_a_file_in_fluentd_etc():
    """FLUENTD_CONF=other.conf runs /fluentd/etc/other.conf: the image's real directory (the
    entry point's default, without WEIR_ETC_DIR)."""
    made = []
    for d in ("/fluentd", "/fluentd/etc"):
        if not os.path.isdir(d):
            try:
                os.mkdir(d, 0o755)
            except PermissionError:
                raise AssertionError("this test needs to create %s: run it as root (as CI does)"
                                     % d)
            made.append(d)
    name = "weir-it-other-%d-%s.conf" % (os.getpid(), os.urandom(3).hex())
    conf = os.path.join("/fluentd/etc", name)
    img = Image()
    c = None
    try:
        port = free_port()
        with open(conf, "w") as f:
            f.write(other_conf(port))
        os.chmod(conf, 0o644)
        del img.env["WEIR_ETC_DIR"]  # the entry point's own default: /fluentd/etc
        c = img.start(env={"FLUENTD_CONF": name})
        c.wait_listening([port])
        assert 'path="%s"' % conf in c.log(), c.log()
        assert forward_send(port, "other.conf", {"picked": name})
        assert c.wait_events(1) == [("other.conf", {"picked": name})], c.log()
        assert c.stop() == 0, c.log()
    finally:
        if c:
            c.kill()
        img.cleanup()
        if os.path.exists(conf):
            os.unlink(conf)
        for d in reversed(made):
            try:
                os.rmdir(d)
            except OSError:
                pass  # something else was put there meanwhile: leave it


def test_fluentd_conf_relative_absolute_and_missing():
    img = Image()
    try:
        port = free_port()
        with open(img.path("fluentd/etc/other.conf"), "w") as f:
            f.write(other_conf(port))
        c = img.start(env={"FLUENTD_CONF": "other.conf"})
        try:
            c.wait_listening([port])
            assert 'path="%s"' % img.path("fluentd/etc/other.conf") in c.log(), c.log()
            assert c.stop() == 0, c.log()
        finally:
            c.kill()

        # an absolute FLUENTD_CONF is used as it is
        absconf = img.path("home/fluent/abs.conf")
        with open(absconf, "w") as f:
            f.write(other_conf(port))
        c = img.start(env={"FLUENTD_CONF": absconf})
        try:
            c.wait_listening([port])
            assert 'path="%s"' % absconf in c.log(), c.log()
            assert c.stop() == 0, c.log()
        finally:
            c.kill()

        # a file that is not there stops the container with the path in the message; weir
        # does not fall back to its embedded default
        p = img.run(["weir"], env={"FLUENTD_CONF": "missing.conf"})
        err = p.stderr.decode()
        assert p.returncode == 1, err
        assert img.path("fluentd/etc/missing.conf") in err, err
        assert "embedded default" not in err, err
    finally:
        img.cleanup()


def test_commands_and_options():
    """docker run IMAGE --dry-run / weir --show-config / weir -c X / sh -c ..."""
    img = Image()
    try:
        conf = img.path("fluentd/etc/fluent.conf")
        # options alone are weir's, with the image's configuration added
        p = img.run(["--dry-run"])
        assert p.returncode == 0, p.stderr.decode()
        assert "configuration is valid: %s" % conf in p.stderr.decode(), p.stderr.decode()
        # `weir` with options, no -c: the image's configuration is added
        p = img.run(["weir", "--show-config"])
        assert p.returncode == 0, p.stderr.decode()
        assert "@type forward" in p.stdout.decode() and "port 8888" in p.stdout.decode()
        # an explicit -c / --config wins (and is not given twice)
        other = img.path("home/fluent/x.conf")
        with open(other, "w") as f:
            f.write(other_conf(free_port()))
        for args in (["weir", "--dry-run", "-c", other], ["weir", "--dry-run", "-c" + other],
                     ["weir", "--dry-run", "--config=" + other],
                     ["weir", "--config", other, "--dry-run"]):
            p = img.run(args)
            assert p.returncode == 0, (args, p.stderr.decode())
            assert "configuration is valid: %s" % other in p.stderr.decode(), p.stderr.decode()
        # a broken configuration: exit status 1 and the reason
        with open(other, "w") as f:
            f.write("<source>\n  @type forward\n  prot 1\n</source>\n")
        p = img.run(["--dry-run", "-c", other])
        assert p.returncode == 1 and "prot" in p.stderr.decode(), p.stderr.decode()
        # any other command runs as given
        p = img.run(["sh", "-c", "id -u; echo $FLUENTD_CONF"])
        assert p.returncode == 0, p.stderr.decode()
        assert p.stdout.decode().split() == [str(img.uid), "fluent.conf"], p.stdout
        p = img.run(["weir", "--version"])
        assert p.returncode == 0 and re.match(rb"weir \d", p.stdout), p
    finally:
        img.cleanup()


if __name__ == "__main__":
    run_tests([
        test_commands_and_options,
        test_fluentd_conf_relative_absolute_and_missing,
        test_fluentd_conf_picks_a_file_in_fluentd_etc,
        test_default_image_run_as_non_root,
        test_healthcheck,
    ])
