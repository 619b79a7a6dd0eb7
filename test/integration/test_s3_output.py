"""`<match> @type s3` end to end: the real weir binary, a real sender with acks, and s3rver
(from node_modules, pinned in package.json) as the S3 server.

s3rver 3.7.1 checks that the access key exists but does not verify SigV4 signatures, so every
request goes through a verifying proxy written here: it recomputes the SigV4 signature from
the request as received (its own implementation, from the AWS documentation), checks
x-amz-content-sha256 and Content-MD5 against the body and the session token against the
credentials it knows, refuses keys longer than S3's 1024 bytes as S3 does, and only then
forwards to s3rver. It records every request for the assertions, and fails requests on
purpose as S3 does, scripted per test (ProxyState.inject): error answers with S3's XML
bodies (503 SlowDown, 500 InternalError, a 200 CompleteMultipartUpload carrying an <Error>),
a connection reset in the middle of the request body, a response that never comes, and a
session token that S3 declares expired.

Fake credential endpoints (IMDSv2/v1, ECS, STS AssumeRole and AssumeRoleWithWebIdentity) run
here too, on 127.0.0.1; they hand out temporary keys that the proxy then accepts.

What a user would check is what is asserted: the objects in the bucket, their keys, their
bytes decoded line by line (with gzip -dc | jq for JSON), and that no secret reaches the log.

Needs `npm ci` at the repository root (s3rver) and node; zstd and jq from Debian."""

import base64
import datetime
import gzip
import hashlib
import hmac
import http.client
import http.server
import io
import json
import os
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import tempfile
import threading
import time
import urllib.parse

import msgpack

from weirtest import (SOURCE_DIR, Weir, dry_run, free_port, make_certs, run_tests, scrape,
                      wait_port)

T0 = 1700000000  # 2023-11-14T22:13:20Z: old, so time buckets are ready as soon as written
S3RVER_JS = os.path.join(SOURCE_DIR, "node_modules", "s3rver", "bin", "s3rver.js")

# Every weir run gets this environment: nothing from the machine's AWS setup, and never the
# real instance metadata address.
BASE_ENV = {
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_SESSION_TOKEN": "",
    "AWS_PROFILE": "", "AWS_DEFAULT_PROFILE": "", "AWS_SHARED_CREDENTIALS_FILE": "",
    "AWS_CONFIG_FILE": "", "AWS_ROLE_ARN": "", "AWS_WEB_IDENTITY_TOKEN_FILE": "",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "", "AWS_CONTAINER_CREDENTIALS_FULL_URI": "",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN": "", "AWS_REGION": "", "AWS_CA_BUNDLE": "",
    "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
}


# ---- SigV4, written independently of weir's C code -------------------------------------------

def aws_quote(s, keep_slash):
    return urllib.parse.quote(s, safe="-_.~" + ("/" if keep_slash else ""))


def sigv4_signature(secret, method, path, query, headers, signed, payload_hash, amz_date,
                    region, service):
    """path: as received (percent-encoded); query: raw query string; headers: name -> value."""
    canon_path = aws_quote(urllib.parse.unquote(path), True) or "/"
    pairs = []
    for part in query.split("&") if query else []:
        k, _, v = part.partition("=")
        pairs.append((aws_quote(urllib.parse.unquote(k), False),
                      aws_quote(urllib.parse.unquote(v), False)))
    canon_query = "&".join("%s=%s" % kv for kv in sorted(pairs))
    lines = []
    for h in signed:
        v = " ".join(headers.get(h, "").split())
        lines.append("%s:%s\n" % (h, v))
    creq = "\n".join([method, canon_path, canon_query, "".join(lines), ";".join(signed),
                      payload_hash])
    scope = "%s/%s/%s/aws4_request" % (amz_date[:8], region, service)
    sts = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                     hashlib.sha256(creq.encode()).hexdigest()])
    k = ("AWS4" + secret).encode()
    for part in (amz_date[:8], region, service, "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    return hmac.new(k, sts.encode(), hashlib.sha256).hexdigest()


AUTH_RE = re.compile(r"AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request,"
                     r"\s*SignedHeaders=([^,]+),\s*Signature=([0-9a-f]{64})$")


def verify_request(keys, method, path, query, headers, body, service="s3"):
    """Returns None when the request is correctly signed, else (status, code, message)."""
    m = AUTH_RE.match(headers.get("authorization", ""))
    if not m:
        return 403, "AccessDenied", "missing or malformed Authorization"
    key, date, region, svc, signed, sig = m.groups()
    if key not in keys:
        return 403, "InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist"
    secret, tokens = keys[key]
    sha = hashlib.sha256(body).hexdigest()
    if headers.get("x-amz-content-sha256") != sha:
        return 400, "XAmzContentSHA256Mismatch", "x-amz-content-sha256 is not the body's hash"
    if "content-md5" in headers and \
            headers["content-md5"] != base64.b64encode(hashlib.md5(body).digest()).decode():
        return 400, "BadDigest", "Content-MD5 does not match the body"
    signed = signed.split(";")
    for required in ("host", "x-amz-date", "x-amz-content-sha256"):
        if required not in signed:
            return 403, "AccessDenied", "%s is not signed" % required
    for h in headers:
        if h.startswith("x-amz-") and h not in signed:
            return 403, "AccessDenied", "%s is sent but not signed" % h
    token = headers.get("x-amz-security-token")
    if token and token in keys.get("__revoked__", (None, set()))[1]:
        return 400, "ExpiredToken", "The provided token has expired."
    if tokens and token not in tokens:
        return 403, "InvalidToken", "The provided token is malformed or otherwise invalid."
    if not tokens and token:
        return 403, "InvalidToken", "unexpected session token"
    amz_date = headers.get("x-amz-date", "")
    try:
        t = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(
            tzinfo=datetime.timezone.utc).timestamp()
    except ValueError:
        return 403, "AccessDenied", "bad x-amz-date"
    if abs(time.time() - t) > 900 or date != amz_date[:8] or svc != service:
        return 403, "RequestTimeTooSkewed", "date or scope is wrong"
    want = sigv4_signature(secret, method, path, query, headers, signed, sha, amz_date, region,
                           service)
    if not hmac.compare_digest(want, sig):
        return 403, "SignatureDoesNotMatch", "The request signature we calculated does not " \
                                             "match the signature you provided."
    return None


def error_xml(code, message):
    return ("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>%s</Code><Message>%s"
            "</Message><RequestId>proxy</RequestId></Error>" % (code, message)).encode()


class Quiet(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        pass  # a client that hangs up mid-request is not a test failure


def serve(handler_cls, port, state, tls=None):
    srv = Quiet(("127.0.0.1", port), handler_cls)
    srv.state = state
    if tls:
        srv.socket = tls.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


# ---- the verifying proxy in front of s3rver ------------------------------------------------

S3_MAX_KEY_LEN = 1024  # bytes of UTF-8; S3 answers KeyTooLongError beyond

# What an injected fault does to a request that it matches:
#   error     answer `status` with S3's XML error `code` (after the signature is checked)
#   error200  answer 200 with an <Error> body, as CompleteMultipartUpload may; nothing stored
#   reset     read half the body, then reset the connection (SO_LINGER 0 + close)
#   hang      store the request in s3rver, then never answer (until the client gives up)
#   lost      store the request in s3rver, then reset the connection instead of answering
#   expire    S3 declares the request's session token expired from now on (400 ExpiredToken)
FAULT_KINDS = ("error", "error200", "reset", "hang", "lost", "expire")


class Fault:
    def __init__(self, pattern, count, kind, status, code):
        assert kind in FAULT_KINDS, kind
        self.re = re.compile(pattern)
        self.count, self.kind, self.status, self.code = count, kind, status, code


class ProxyState:
    def __init__(self, backend_port):
        self.backend_port = backend_port
        self.keys = {}  # access key -> (secret, set of accepted tokens or None)
        self.log = []  # (method, path, query, headers, body length, status)
        self.faults = []  # Fault, in the order they were injected
        self.injected = []  # (kind, code, method, path, query) of every fault that fired
        self.conns = set()  # open client connections, closed when S3 "goes down"
        self.revoked = set()  # session tokens S3 now calls expired
        self.bodies = {}  # (method, path, query) -> body, for small bodies
        self.lock = threading.Lock()

    def add_key(self, key, secret, token=None):
        with self.lock:
            old = self.keys.get(key)
            tokens = set(old[1]) if old and old[1] else set()
            if token:
                tokens.add(token)
            self.keys[key] = (secret, tokens or None)

    def inject(self, pattern, count=1, kind="error", status=503, code="SlowDown"):
        """The next `count` requests whose "METHOD /path?query" matches the regular expression
        `pattern` get the fault `kind` (see FAULT_KINDS). PutObject is r"^PUT /b/p/[^?]*\\?$",
        UploadPart "partNumber=", CreateMultipartUpload "^POST .*\\?uploads=$",
        CompleteMultipartUpload "^POST .*\\?uploadId="."""
        with self.lock:
            self.faults.append(Fault(pattern, count, kind, status, code))

    def take_fault(self, method, path, query, kinds):
        """The first live fault of one of `kinds` that matches the request, used up once."""
        line = "%s %s?%s" % (method, path, query)
        with self.lock:
            for f in self.faults:
                if f.count > 0 and f.kind in kinds and f.re.search(line):
                    f.count -= 1
                    self.injected.append((f.kind, f.code, method, path, query))
                    return f
        return None

    def requests(self, method=None, path=None):
        with self.lock:
            return [r for r in self.log if (method is None or r[0] == method) and
                    (path is None or path in r[1])]


class ProxyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def setup(self):
        super().setup()
        with self.server.state.lock:
            self.server.state.conns.add(self.connection)

    def finish(self):
        with self.server.state.lock:
            self.server.state.conns.discard(self.connection)
        super().finish()

    def reply(self, status, body, headers=()):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def reset_mid_body(self, n):
        """Reads half the body, then resets the connection: an RST, not a FIN."""
        self.rfile.read(n // 2)
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True

    def hold_until_client_leaves(self):
        """A response that never comes: wait until the client gives up and hangs up."""
        self.connection.settimeout(600)
        try:
            while self.connection.recv(65536):
                pass
        except OSError:
            pass
        self.close_connection = True

    def handle_any(self):
        st = self.server.state
        n = int(self.headers.get("Content-Length") or 0)
        path, _, query = self.path.partition("?")
        headers = {k.lower(): v for k, v in self.headers.items()}

        def log(status, length):
            st.log.append((self.command, path, query, headers, length, status))
        if st.take_fault(self.command, path, query, ("reset",)):
            with st.lock:
                log(0, n)
            return self.reset_mid_body(n)
        body = self.rfile.read(n) if n else b""
        with st.lock:
            keys = dict(st.keys)
            keys["__revoked__"] = (None, set(st.revoked))
            if len(body) < 4096:
                st.bodies[(self.command, path, query)] = body
        bad = verify_request(keys, self.command, path, query, headers, body)
        key = urllib.parse.unquote(path).split("/", 2)[2:]
        if not bad and key and len(key[0].encode()) > S3_MAX_KEY_LEN:
            bad = (400, "KeyTooLongError", "Your key is too long")
        fault = None if bad else st.take_fault(self.command, path, query,
                                               ("error", "error200", "expire", "hang", "lost"))
        if fault and fault.kind == "expire":
            with st.lock:
                st.revoked.add(headers.get("x-amz-security-token"))
            bad = (400, "ExpiredToken", "The provided token has expired.")
        elif fault and fault.kind == "error":
            bad = (fault.status, fault.code, "injected by the test")
        elif fault and fault.kind == "error200":
            with st.lock:
                log(200, len(body))
            return self.reply(200, error_xml(fault.code, "injected by the test"),
                              [("Content-Type", "application/xml")])
        if bad:
            with st.lock:
                log(bad[0], len(body))
            return self.reply(bad[0], error_xml(bad[1], bad[2]),
                              [("Content-Type", "application/xml")])
        # s3rver knows only S3RVER (and does not check signatures): forward as that key
        fwd = {k: v for k, v in self.headers.items()
               if k.lower() not in ("host", "connection", "content-length", "expect")}
        fwd["Authorization"] = re.sub(r"Credential=[^/]+/", "Credential=S3RVER/",
                                      self.headers["Authorization"])
        conn = http.client.HTTPConnection("127.0.0.1", st.backend_port, timeout=60)
        try:
            conn.request(self.command, self.path, body=body if n else None, headers=fwd)
            resp = conn.getresponse()
            data = resp.read()
        except OSError:
            with st.lock:
                st.log.append((self.command, path, query, headers, len(body), 502))
            return self.reply(502, error_xml("BadGateway", "s3rver is down"))
        finally:
            conn.close()
        with st.lock:
            st.log.append((self.command, path, query, headers, len(body), resp.status))
        if fault and fault.kind == "hang":
            return self.hold_until_client_leaves()
        if fault and fault.kind == "lost":
            return self.reset_mid_body(0)
        hdrs = [(k, v) for k, v in resp.getheaders()
                if k.lower() not in ("content-length", "transfer-encoding", "connection")]
        self.send_response(resp.status)
        for k, v in hdrs:
            self.send_header(k, v)
        if self.command == "HEAD":
            self.send_header("Content-Length", resp.getheader("Content-Length") or "0")
            self.end_headers()
        else:
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_any


# ---- fake AWS credential endpoints ------------------------------------------------------------

class AwsState:
    def __init__(self, proxy):
        self.proxy = proxy
        self.log = []  # (method, path, headers, body)
        self.imds_v2 = True
        self.imds_token = "imds-session-token-XYZ"
        self.expires_in = 3600
        self.ecs_auth = None
        self.web_token = None
        self.base_keys = {}  # STS callers: key -> (secret, None)
        self.issued = []  # (source, key, secret, token)
        self.lock = threading.Lock()

    def issue(self, source):
        with self.lock:
            n = len(self.issued) + 1
        key = "ASIA%sTEMP%d" % (source.upper(), n)
        secret = "tmp-secret-%s-%d-%s" % (source, n, os.urandom(4).hex())
        token = "tmp-token-%s-%d-%s" % (source, n, os.urandom(8).hex())
        self.proxy.add_key(key, secret, token)
        with self.lock:
            self.issued.append((source, key, secret, token))
        exp = datetime.datetime.fromtimestamp(time.time() + self.expires_in,
                                              datetime.timezone.utc)
        return key, secret, token, exp.strftime("%Y-%m-%dT%H:%M:%SZ")


class AwsHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def reply(self, status, body, ctype="text/plain"):
        if isinstance(body, str):
            body = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def creds_json(self, source):
        key, secret, token, exp = self.server.state.issue(source)
        return json.dumps({"Code": "Success", "Type": "AWS-HMAC", "AccessKeyId": key,
                           "SecretAccessKey": secret, "Token": token, "Expiration": exp})

    def handle_any(self):
        st = self.server.state
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        with st.lock:
            st.log.append((self.command, self.path, headers, body))
        p = self.path
        if p == "/latest/api/token" and self.command == "PUT":
            if not st.imds_v2:
                return self.reply(404, "not found")
            if headers.get("x-aws-ec2-metadata-token-ttl-seconds") != "21600":
                return self.reply(400, "missing ttl")
            return self.reply(200, st.imds_token)
        if p.startswith("/latest/meta-data/iam/security-credentials/"):
            if st.imds_v2 and headers.get("x-aws-ec2-metadata-token") != st.imds_token:
                return self.reply(401, "unauthorized")
            if p.endswith("/"):
                return self.reply(200, "weir-role\n")
            if p.endswith("/weir-role"):
                return self.reply(200, self.creds_json("imds"), "application/json")
            return self.reply(404, "no such role")
        if p.startswith("/ecs/") or p.startswith("/v2/credentials/"):
            if st.ecs_auth and headers.get("authorization") != st.ecs_auth:
                return self.reply(403, "bad token")
            return self.reply(200, self.creds_json("ecs"), "application/json")
        if p == "/" and self.command == "POST":
            return self.sts(headers, body)
        return self.reply(404, "no such path")

    def sts(self, headers, body):
        st = self.server.state
        form = dict(urllib.parse.parse_qsl(body.decode()))
        action = form.get("Action")
        if form.get("Version") != "2011-06-15":
            return self.reply(400, error_xml("InvalidAction", "bad version"), "text/xml")
        if action == "AssumeRole":
            bad = verify_request(st.base_keys, "POST", "/", "", headers, body, service="sts")
            if bad:
                return self.reply(bad[0], error_xml(bad[1], bad[2]), "text/xml")
            if not form.get("RoleArn") or not form.get("RoleSessionName"):
                return self.reply(400, error_xml("MissingParameter", "RoleArn"), "text/xml")
            source = "sts"
        elif action == "AssumeRoleWithWebIdentity":
            if "authorization" in headers:
                return self.reply(400, error_xml("InvalidRequest", "signed"), "text/xml")
            if form.get("WebIdentityToken") != st.web_token:
                return self.reply(400, error_xml("InvalidIdentityToken", "bad token"), "text/xml")
            source = "web"
        else:
            return self.reply(400, error_xml("InvalidAction", action or "none"), "text/xml")
        key, secret, token, exp = st.issue(source)
        xml = ("<%sResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><%sResult>"
               "<Credentials><AccessKeyId>%s</AccessKeyId><SecretAccessKey>%s</SecretAccessKey>"
               "<SessionToken>%s</SessionToken><Expiration>%s</Expiration></Credentials>"
               "</%sResult></%sResponse>" % (action, action, key, secret, token, exp, action,
                                               action))
        return self.reply(200, xml, "text/xml")

    do_GET = do_PUT = do_POST = handle_any


# ---- the S3 side: s3rver + proxy, objects read from s3rver's directory ----------------------

class S3:
    def __init__(self):
        if not os.path.exists(S3RVER_JS):
            raise RuntimeError("s3rver is missing: run `npm ci` in %s" % SOURCE_DIR)
        self.dir = tempfile.mkdtemp(prefix="weir-s3rver-")
        self.backend_port = free_port()
        self.port = free_port()
        self.proc = None
        self.proxy = None
        self.state = ProxyState(self.backend_port)
        self.state.add_key("S3RVER", "S3RVER")
        self.start()

    def start(self):
        # s3rver makes ListObjectsV2 continuation tokens with DES, which OpenSSL 3 keeps in its
        # legacy provider: without it every truncated listing is a 500
        self.proc = subprocess.Popen(["node", "--openssl-legacy-provider", S3RVER_JS, "-d",
                                      self.dir, "-p",
                                      str(self.backend_port), "--address", "127.0.0.1",
                                      "--silent"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.backend_port, timeout=20)
        self.proxy = serve(ProxyHandler, self.port, self.state)

    def stop(self):
        """S3 goes away: new connections are refused."""
        self.proxy.shutdown()
        self.proxy.server_close()
        with self.state.lock:
            for c in self.state.conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        self.proc.terminate()
        self.proc.wait(10)

    def objects(self, bucket):
        """{key: (bytes, metadata dict)} of what s3rver stored completely. s3rver answers
        before its file write has finished, so an object counts once the MD5 it recorded
        matches the bytes on disk."""
        out = {}
        root = os.path.join(self.dir, bucket)
        for d, _, files in os.walk(root):
            for f in files:
                if not f.endswith("._S3rver_object"):
                    continue
                key = os.path.relpath(os.path.join(d, f[:-len("._S3rver_object")]), root)
                with open(os.path.join(d, f), "rb") as fh:
                    data = fh.read()
                try:
                    with open(os.path.join(d, f + ".md5")) as fh:
                        if fh.read().strip() != hashlib.md5(data).hexdigest():
                            continue
                except FileNotFoundError:
                    continue
                try:  # written last; absent or partial while s3rver is still at it
                    with open(os.path.join(d, f[:-len("object")] + "metadata.json")) as fh:
                        meta = json.load(fh)
                except (FileNotFoundError, ValueError):
                    continue
                out[key] = (data, meta)
        return out

    def wait_objects(self, bucket, pred, timeout=20):
        deadline = time.time() + timeout
        while time.time() < deadline:
            objs = self.objects(bucket)
            if pred(objs):
                return objs
            time.sleep(0.1)
        return self.objects(bucket)


def gz_lines(objs):
    """Lines in all the gzip objects of an S3.objects() answer."""
    return sum(len(gzip.decompress(data).splitlines()) for data, _ in objs.values())


S3_SERVER = None
AWS = None


def s3():
    global S3_SERVER, AWS
    if S3_SERVER is None:
        S3_SERVER = S3()
        AWS = AwsState(S3_SERVER.state)
        AWS.port = free_port()
        AWS.server = serve(AwsHandler, AWS.port, AWS)
    return S3_SERVER


# ---- weir and the sender --------------------------------------------------------------------

def match_conf(d, name, bucket, creds, path="logs/", extra="", buffer_extra="", pattern="**",
               retry_wait="1s"):
    return """
<match %s>
  @type s3
  @id %s
  s3_bucket %s
  s3_endpoint http://127.0.0.1:%d
  force_path_style true
  path %s
%s
%s
  <buffer tag,time>
    @type file
    path %s/buf-%s
    timekey 1
    timekey_wait 0
    retry_wait %s
    retry_max_interval %s
%s
  </buffer>
</match>
""" % (pattern, name, bucket, s3().port, path, creds, extra, d, name, retry_wait,
       "2s" if retry_wait == "1s" else retry_wait, buffer_extra)


STATIC = "  aws_key_id S3RVER\n  aws_sec_key S3RVER\n"


TMPDIRS = []
WEIRS = []  # killed at the end if a failed test left one running


def tmpdir(prefix):
    d = tempfile.mkdtemp(prefix=prefix)
    TMPDIRS.append(d)
    return d


def start_weir(matches, env=None, ok=True):
    d = tmpdir("weir-s3-it-")
    port = free_port()
    conf = """
<system>
  log_level debug
</system>
<source>
  @type forward
  port %d
  bind 127.0.0.1
</source>
""" % port + "".join(m(d) if callable(m) else m for m in matches)
    e = dict(BASE_ENV)
    e["HOME"] = d
    e.update(env or {})
    w = Weir(conf, env=e, workdir=d)
    WEIRS.append(w)
    w.port = port
    w.start([port] if ok else [])
    return w


def fwd_send(port, tag, records, t=T0, timeout=15):
    """Sends records as one forward message with an ack request; True when acknowledged."""
    entries = [[msgpack.ExtType(0, struct.pack(">II", t, 0)), r] for r in records]
    chunk = base64.b64encode(os.urandom(12)).decode()
    data = msgpack.packb([tag, entries, {"chunk": chunk}], use_bin_type=True)
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(data)
                u = msgpack.Unpacker(raw=False)
                while True:
                    b = s.recv(4096)
                    if not b:
                        raise ConnectionError("closed")
                    u.feed(b)
                    for msg in u:
                        return msg == {"ack": chunk}
        except OSError:
            time.sleep(0.2)
    return False


def stop_weir(w, secrets=()):
    rc = w.stop(signal.SIGTERM)
    log = w.log()
    assert rc == 0, "weir exited %d:\n%s" % (rc, log)
    check_no_secrets(log, secrets)
    return log


def check_no_secrets(log, secrets):
    issued = [s for i in AWS.issued for s in (i[2], i[3])] if AWS else []
    for s in list(secrets) + issued:
        assert s not in log, "a secret reached the log: %r" % s


def records(prefix, n, start=0):
    return [{"seq": start + i, "message": "%s-%d" % (prefix, start + i), "n": 1.5}
            for i in range(n)]


def ungzip(b):
    return gzip.decompress(b)


def unzstd(b):
    return subprocess.run(["zstd", "-dc"], input=b, capture_output=True, check=True).stdout


DECODE = {"gz": ungzip, "zst": unzstd, "json": lambda b: b, "txt": lambda b: b}
CONTENT_TYPE = {"gz": "application/x-gzip", "zst": "application/x-zst",
                "json": "application/json", "txt": "text/plain"}


def parse_lines(fmt, text, tag):
    """Records back from a formatted object, as a user's tool would read them."""
    if fmt == "msgpack":
        return list(msgpack.Unpacker(io.BytesIO(text), raw=False))
    out = []
    for line in text.decode().splitlines():
        if fmt == "json":
            out.append(json.loads(line))
        elif fmt == "out_file":
            ts, t, js = line.split("\t", 2)
            assert ts == "2023-11-14T22:13:20+00:00", ts
            assert t == tag, t
            out.append(json.loads(js))
        elif fmt == "ltsv":
            kv = dict(f.split(":", 1) for f in line.split("\t"))
            out.append({"seq": int(kv["seq"]), "message": kv["message"], "n": float(kv["n"])})
        elif fmt == "single_value":
            out.append(line)
    return out


# ---- tests ------------------------------------------------------------------------------------

FORMATS = ["json", "out_file", "ltsv", "single_value", "msgpack"]
STORES = [("gzip", "gz"), ("zstd", "zst"), ("json", "json"), ("text", "txt")]


def test_every_format_and_store_as():
    srv = s3()
    matches = []
    for fmt in FORMATS:
        for store, _ in STORES:
            name = "%s-%s" % (fmt.replace("_", ""), store)
            matches.append(lambda d, fmt=fmt, store=store, name=name: match_conf(
                d, name, "formats", STATIC, path="%s/%s/" % (fmt, store),
                extra="  store_as %s\n  <format>\n    @type %s\n  </format>\n" % (store, fmt),
                pattern="f.%s.%s" % (fmt, store)))
    w = start_weir(matches)
    sent = records("m", 25)
    for fmt in FORMATS:
        for store, _ in STORES:
            assert fwd_send(w.port, "f.%s.%s" % (fmt, store), sent)
    want = 5 * 4
    objs = srv.wait_objects("formats", lambda o: len(o) >= want)
    stop_weir(w)
    assert len(objs) == want, sorted(objs)
    for fmt in FORMATS:
        for store, ext in STORES:
            key = "%s/%s/20231114221320_0.%s" % (fmt, store, ext)
            assert key in objs, (key, sorted(objs))
            data, meta = objs[key]
            assert meta["content-type"] == CONTENT_TYPE[ext], (key, meta)
            assert meta["x-amz-storage-class"] == "STANDARD"
            got = parse_lines(fmt, DECODE[ext](data), "f.%s.%s" % (fmt, store))
            if fmt == "single_value":
                assert got == [r["message"] for r in sent], (key, got[:3])
            else:
                assert got == sent, (key, got[:3])
    # a user's pipeline: gzip -dc object | jq -c .
    data, _ = objs["json/gzip/20231114221320_0.gz"]
    jq = subprocess.run("gzip -dc | jq -c .", shell=True, input=data, capture_output=True,
                        check=True).stdout.decode().splitlines()
    assert [json.loads(line) for line in jq] == sent
    assert jq[0] == '{"seq":0,"message":"m-0","n":1.5}', jq[0]
    # every upload was signed correctly and carried Content-MD5 (the proxy checks both)
    puts = srv.state.requests("PUT", "/formats/")
    assert len(puts) == want and all(r[5] == 200 and "content-md5" in r[3] for r in puts)


def test_check_object_index_and_metadata():
    srv = s3()
    extra = ("  storage_class STANDARD_IA\n  acl bucket-owner-full-control\n  tagging a=b&c=d\n"
             "  warn_for_delay 1h\n  <inject>\n    tag_key tag\n  </inject>\n"
             "  s3_metadata {\"team\":\"audit\",\"index\":\"%{index}\",\"src\":\"${tag}\"}\n")
    w = start_weir([lambda d: match_conf(d, "idx", "index", STATIC, path="${tag}/%Y/",
                                          extra=extra, buffer_extra="    timekey 3600")])
    assert fwd_send(w.port, "app.web", records("a", 10))
    objs = srv.wait_objects("index", lambda o: len(o) >= 1)
    # the same hour again: a second chunk for the same slice
    assert fwd_send(w.port, "app.web", records("b", 7), t=T0 + 60)
    objs = srv.wait_objects("index", lambda o: len(o) >= 2)
    log = stop_weir(w)
    assert "delayed events were put to s3://index/app.web/2023/2023111422_0.gz" in log, log
    k0, k1 = "app.web/2023/2023111422_0.gz", "app.web/2023/2023111422_1.gz"
    assert sorted(objs) == [k0, k1], sorted(objs)
    lines0 = ungzip(objs[k0][0]).decode().splitlines()
    lines1 = ungzip(objs[k1][0]).decode().splitlines()
    assert [json.loads(x.split("\t")[2])["message"] for x in lines0] == ["a-%d" % i for i in range(10)]
    # <inject> ran before <format>
    assert json.loads(lines0[0].split("\t")[2]) == {"seq": 0, "message": "a-0", "n": 1.5,
                                                    "tag": "app.web"}
    assert [json.loads(x.split("\t")[2])["message"] for x in lines1] == ["b-%d" % i for i in range(7)]
    m0, m1 = objs[k0][1], objs[k1][1]
    assert m0["x-amz-meta-team"] == "audit" and m0["x-amz-meta-src"] == "app.web", m0
    assert m0["x-amz-meta-index"] == "0" and m1["x-amz-meta-index"] == "1", (m0, m1)
    assert m0["x-amz-storage-class"] == "STANDARD_IA"
    # the HEAD loop: _0 free for the first; _0 taken then _1 free for the second
    heads = [(r[1], r[5]) for r in srv.state.requests("HEAD", "/index/app.web/")]
    assert heads == [("/index/" + k0, 404), ("/index/" + k0, 200), ("/index/" + k1, 404)], heads
    put = srv.state.requests("PUT", "/index/app.web/")[0][3]
    assert put["x-amz-acl"] == "bucket-owner-full-control" and put["x-amz-tagging"] == "a=b&c=d"


def test_placeholder_in_a_tag_stays_as_written():
    """A tag is substituted once: its %{index} is neither the index in the key nor in
    s3_metadata (it used to be expanded again), and the key reaches S3 as written."""
    srv = s3()
    extra = "  s3_metadata {\"src\":\"${tag}\",\"index\":\"%{index}\"}\n"
    w = start_weir([lambda d: match_conf(d, "pct", "pct", STATIC, path="${tag}/", extra=extra)])
    assert fwd_send(w.port, "m.%{index}.%{x}.", records("p", 2))
    objs = srv.wait_objects("pct", lambda o: len(o) >= 1)
    stop_weir(w)
    assert sorted(objs) == ["m.%{index}.%{x}./20231114221320_0.gz"], sorted(objs)
    meta = objs["m.%{index}.%{x}./20231114221320_0.gz"][1]
    assert meta["x-amz-meta-src"] == "m.%{index}.%{x}." and meta["x-amz-meta-index"] == "0", meta


def test_same_key_twice_duplicated_path_or_overwrite():
    srv = s3()
    fmt = "  s3_object_key_format %{path}fixed.%{file_extension}\n"
    w = start_weir([lambda d: match_conf(d, "dup", "dup", STATIC, path="a/", extra=fmt,
                                         pattern="t"),
                    lambda d: match_conf(d, "ovw", "dup", STATIC, path="b/",
                                         extra=fmt + "  overwrite true\n", pattern="ovw")])
    for tag, first, second in (("t", "a", "b"), ("ovw", "c", "d")):
        assert fwd_send(w.port, tag, records(first, 2))
        srv.wait_objects("dup", lambda o: len(o) >= (1 if tag == "t" else 2))
        assert fwd_send(w.port, tag, records(second, 3), t=T0 + 5)
    objs = srv.wait_objects("dup", lambda o: "b/fixed.gz" in o and
                            b'"d-2"' in ungzip(o["b/fixed.gz"][0]))
    deadline = time.time() + 10
    while "duplicated path is generated" not in w.log() and time.time() < deadline:
        time.sleep(0.2)
    log = stop_weir(w)
    # without overwrite the second chunk cannot be stored under the same key: it is retried
    assert "duplicated path is generated. use %{index} in s3_object_key_format: " \
           "path = a/fixed.gz" in log, log
    assert b'"a-0"' in ungzip(objs["a/fixed.gz"][0])
    # with overwrite the second chunk replaces the first, with a warning
    assert "s3://dup/b/fixed.gz already exists, but will overwrite" in log, log
    lines = ungzip(objs["b/fixed.gz"][0]).decode().splitlines()
    assert [json.loads(x.split("\t")[2])["message"] for x in lines] == ["d-0", "d-1", "d-2"]


def test_multipart_upload_above_threshold():
    srv = s3()
    # the second part of the first attempt is refused for good: the upload must be aborted,
    # and the chunk retried as a whole
    srv.state.inject("partNumber=2&", 1, "error", 400, "InvalidArgument")
    w = start_weir([lambda d: match_conf(
        d, "mp", "multipart", STATIC, path="big/",
        extra="  store_as text\n  multipart_threshold 1m\n  multipart_chunk_size 5m\n"
              "  <format>\n    @type json\n  </format>\n",
        buffer_extra="    timekey 3600\n    flush_mode interval\n    flush_interval 1h")])
    now = int(time.time())
    pad = "p" * 1000
    total = 11000  # about 11 MB of JSON lines: parts of 5 MiB, 5 MiB and the rest
    for b in range(0, total, 1000):
        recs = [{"seq": b + i, "pad": pad} for i in range(1000)]
        assert fwd_send(w.port, "big", recs, t=now)
    w.proc.send_signal(signal.SIGUSR1)  # flush now
    objs = srv.wait_objects("multipart", lambda o: len(o) >= 1, timeout=60)
    log = stop_weir(w)
    assert len(objs) == 1, sorted(objs)
    (key, (data, meta)), = objs.items()
    assert key.startswith("big/") and key.endswith("_0.txt"), key
    seqs = [json.loads(line)["seq"] for line in data.decode().splitlines()]
    assert seqs == list(range(total))
    assert meta["content-type"] == "text/plain"
    q = [(r[0], r[2], r[5]) for r in srv.state.requests(path="/multipart/big/")
         if r[0] != "HEAD"]
    # attempt 1: initiate, part 1, part 2 refused, abort
    assert [x[0] for x in q[:4]] == ["POST", "PUT", "PUT", "DELETE"], q
    assert q[0][1] == "uploads=" and q[2][2] == 400, q
    first_id = re.search(r"uploadId=([^&]+)", q[1][1]).group(1)
    assert q[3][1] == "uploadId=" + first_id, q
    assert "UploadPart s3://multipart/big/" in log and "InvalidArgument" in log, log
    # attempt 2: initiate, three parts, complete
    rest = q[4:]
    assert rest[0][:2] == ("POST", "uploads="), rest
    parts = [x for x in rest if x[0] == "PUT"]
    assert [re.search(r"partNumber=(\d+)", p[1]).group(1) for p in parts] == ["1", "2", "3"]
    assert rest[-1][0] == "POST" and rest[-1][1].startswith("uploadId=") and \
        rest[-1][2] == 200, rest
    sizes = [r[4] for r in srv.state.requests("PUT", "/multipart/big/")][-3:]
    assert sizes[0] == sizes[1] == 5 * 1024 * 1024 and sizes[2] == len(data) - 10 * 1024 * 1024


def test_fluentd_buffer_chunks_are_uploaded_as_fluentd_formatted_them():
    """A buffer volume that Fluentd used: its out_s3 chunks (formatted JSON lines + .meta) are
    adopted at start and uploaded gzip'd under the key their metadata gives, unchanged."""
    from test_buffer_durability import fluentd_chunk
    srv = s3()
    lines = [b'{"seq":%d,"from":"fluentd"}\n' % i for i in range(4)]

    def with_fluentd_leftovers(d):
        buf = os.path.join(d, "buf-adopt")
        os.makedirs(buf)
        fluentd_chunk(buf, "q", "5f32232e76a4d1bdfdbeed36c384b03b", "old.tag", T0, lines)
        return match_conf(d, "adopt", "adopt", STATIC, path="fluentd/",
                          extra="  <format>\n    @type json\n  </format>\n",
                          pattern="never.matches")

    w = start_weir([with_fluentd_leftovers])
    objs = srv.wait_objects("adopt", lambda o: len(o) >= 1)
    stop_weir(w)
    assert sorted(objs) == ["fluentd/20231114221320_0.gz"], sorted(objs)
    assert ungzip(objs["fluentd/20231114221320_0.gz"][0]) == b"".join(lines)


def test_s3_down_then_back_every_acked_event_arrives():
    srv = s3()
    w = start_weir([lambda d: match_conf(d, "down", "down", STATIC, path="d/",
                                          extra="  <format>\n    @type json\n  </format>\n")])
    acked = []
    assert fwd_send(w.port, "t", records("up", 20))
    acked += range(20)
    srv.wait_objects("down", lambda o: len(o) >= 1)
    srv.stop()
    # S3 is gone; weir keeps acknowledging (the buffer is on disk) and retries
    for i, sec in enumerate((5, 6, 7)):
        assert fwd_send(w.port, "t", records("down", 10, start=100 * (i + 1)), t=T0 + sec)
        acked += range(100 * (i + 1), 100 * (i + 1) + 10)
    deadline = time.time() + 15
    while "failed to flush" not in w.log() and time.time() < deadline:
        time.sleep(0.2)
    assert "failed to flush" in w.log(), w.log()
    assert "s3://down/d/" in w.log(), w.log()
    srv.start()

    def all_there(objs):
        seqs = []
        for data, _ in objs.values():
            seqs += [json.loads(x)["seq"] for x in ungzip(data).decode().splitlines()]
        return set(acked) <= set(seqs)
    objs = srv.wait_objects("down", all_there, timeout=30)
    log = stop_weir(w)
    assert all_there(objs), (sorted(objs), log)
    assert "retries" in log  # "chunk ... delivered after N retries"


def test_in_request_retry_on_slowdown():
    srv = s3()
    srv.state.inject("^PUT /slow/s/", 2, "error", 503, "SlowDown")
    w = start_weir([lambda d: match_conf(d, "slow", "slow", STATIC, path="s/",
                                          extra="  s3_region eu-west-1\n"
                                                "  compute_checksums false\n")])
    assert fwd_send(w.port, "t", records("s", 5))
    objs = srv.wait_objects("slow", lambda o: len(o) >= 1)
    log = stop_weir(w)
    assert len(objs) == 1
    puts = srv.state.requests("PUT", "/slow/s/")
    assert [r[5] for r in puts] == [503, 503, 200], puts
    assert "failed to flush" not in log  # absorbed by the 0.3 s / 0.6 s retries
    assert all("content-md5" not in r[3] for r in puts)  # compute_checksums false
    # the bucket was created in the configured region, signed for it
    create = srv.state.requests("PUT", "/slow")[0]
    assert create[1] == "/slow" and "/eu-west-1/s3/aws4_request" in create[3]["authorization"]
    assert b"<LocationConstraint>eu-west-1</LocationConstraint>" in \
        srv.state.bodies[("PUT", "/slow", "")]


def prometheus_source(port):
    return "<source>\n  @type prometheus\n  bind 127.0.0.1\n  port %d\n</source>\n" % port


def seqs_in(objs, prefix):
    """Every record's seq, line by line, from the objects under `prefix` (gzip'd or text)."""
    seqs = []
    for key, (data, _) in sorted(objs.items()):
        if key.startswith(prefix):
            text = ungzip(data) if key.endswith(".gz") else data
            seqs += [json.loads(line)["seq"] for line in text.decode().splitlines()]
    return seqs


# Each fault scenario: its own output (@id = tag = key prefix), the faults S3 hands it, and
# the failed requests weir_s3_request_errors_total must count for it, by reason.
PUT = r"^PUT /faults/%s/[^?]*\?$"
FAULT_SCENARIOS = {
    # PutObject throttled twice then failing twice: the in-place retries (3) run out, the
    # buffer's retry stores the chunk at the next attempt
    "put": ([(PUT % "put", 2, "error", 503, "SlowDown"),
             (PUT % "put", 2, "error", 500, "InternalError")],
            {"throttled": 2, "server_error": 2}),
    # a HEAD of the index loop throttled, then the PUT's connection reset in the body
    "reset": ([(r"^HEAD /faults/reset/", 1, "error", 503, "SlowDown"),
               (PUT % "reset", 1, "reset", 0, "")], {"throttled": 1, "connection": 1}),
    # stored, but the answer never comes: weir gives up after its 60 s request timeout and
    # sends the same PUT to the same key again
    "hang": ([(PUT % "hang", 1, "hang", 0, "")], {"timeout": 1}),
    # stored, but every answer is lost: after the in-place retries the buffer's retry must
    # send the same key again, not find it taken and write the events to a second object
    "lost": ([(PUT % "lost", 4, "lost", 0, "")], {"connection": 4}),
    # every step of a multipart upload fails with 503 SlowDown and 500 InternalError (and the
    # parts with a reset, Complete with a 200 carrying an <Error>), each retried in place:
    # one upload, no abort
    "mp": ([(r"^POST /faults/mp/.*\?uploads=$", 1, "error", 503, "SlowDown"),
            (r"^POST /faults/mp/.*\?uploads=$", 1, "error", 500, "InternalError"),
            (r"^PUT /faults/mp/.*partNumber=1&", 1, "reset", 0, ""),
            (r"^PUT /faults/mp/.*partNumber=1&", 1, "error", 503, "SlowDown"),
            (r"^PUT /faults/mp/.*partNumber=2&", 1, "error", 500, "InternalError"),
            (r"^PUT /faults/mp/.*partNumber=2&", 1, "error", 503, "SlowDown"),
            (r"^POST /faults/mp/.*\?uploadId=", 1, "error", 503, "SlowDown"),
            (r"^POST /faults/mp/.*\?uploadId=", 1, "error", 500, "InternalError"),
            (r"^POST /faults/mp/.*\?uploadId=", 1, "error200", 200, "InternalError")],
           {"throttled": 4, "connection": 1, "server_error": 4}),
    # the credentials expire between two parts: new ones, and the same upload goes on
    "expire": ([(r"^PUT /faults/expire/.*partNumber=2&", 1, "expire", 400, "ExpiredToken")],
               {"credentials": 1}),
}
MULTIPART = ("mp", "expire")


def test_retry_never_overwrites_another_chunks_object():
    """A chunk's PUT fails (four 503 SlowDown answers: nothing stored; or four resets: maybe
    stored), and while it waits for its retry another chunk of the same hour finds _0 free and
    stores its events there. The retry must not write over that object: it goes to _1. (weir
    used to remember the key of any PUT it had sent and send the retry to it, overwriting the
    other chunk's object, whose chunk was already deleted: those events were gone.)"""
    srv = s3()
    for name, kind, status, code in (("ow503", "error", 503, "SlowDown"),
                                     ("owreset", "reset", 0, "")):
        srv.state.inject(PUT % name, 4, kind, status, code)
    matches = [lambda d, n=n: match_conf(
        d, n, "faults", STATIC, path=n + "/", pattern=n + ".**", retry_wait="8s",
        extra="  <format>\n    @type json\n  </format>\n") for n in ("ow503", "owreset")]
    w = start_weir(matches)
    for n in ("ow503", "owreset"):
        assert fwd_send(w.port, n + ".a", records("a", 10))
    # the first chunks' attempts end after their fourth failed PUT
    deadline = time.time() + 30
    while time.time() < deadline:
        fired = [i for i in srv.state.injected if i[3].startswith(("/faults/ow503/",
                                                                   "/faults/owreset/"))]
        if len(fired) == 8:
            break
        time.sleep(0.1)
    assert len(fired) == 8, (fired, w.log())
    for n in ("ow503", "owreset"):
        assert fwd_send(w.port, n + ".b", records("b", 10, start=100))

    def both(objs):
        return all(sorted(seqs_in(objs, n + "/")) == list(range(10)) + list(range(100, 110))
                   for n in ("ow503", "owreset"))
    objs = srv.wait_objects("faults", both, timeout=40)
    log = stop_weir(w)
    for n in ("ow503", "owreset"):
        got = sorted(seqs_in(objs, n + "/"))
        assert got == list(range(10)) + list(range(100, 110)), (n, got, log)
        assert len([k for k in objs if k.startswith(n + "/")]) == 2, (n, sorted(objs))


def test_s3_faults_every_acked_event_arrives_once():
    """What S3 really does to requests, on PutObject and every multipart step: each acked
    event is in the bucket exactly once, and every failure and retry is in the metrics."""
    srv = s3()
    with AWS.lock:
        AWS.log.clear()
    for name, (faults, _) in FAULT_SCENARIOS.items():
        for f in faults:
            srv.state.inject(*f)
    imds = ("  <instance_profile_credentials>\n    ip_address 127.0.0.1\n    port %d\n"
            "  </instance_profile_credentials>\n" % AWS.port)
    prom = free_port()
    matches = [prometheus_source(prom)]
    for name in FAULT_SCENARIOS:
        big = name in MULTIPART
        matches.append(lambda d, name=name, big=big: match_conf(
            d, name, "faults", imds if name == "expire" else STATIC, path=name + "/",
            pattern=name, extra="  <format>\n    @type json\n  </format>\n" +
            ("  store_as text\n  multipart_threshold 1m\n  multipart_chunk_size 5m\n"
             if big else ""),
            buffer_extra="    timekey 3600\n    flush_mode interval\n    flush_interval 1h"
            if big else ""))
    w = start_weir(matches)
    wait_port(prom)
    acked = {}
    for name in FAULT_SCENARIOS:
        if name in MULTIPART:  # about 6 MB: a part of 5 MiB and one of the rest
            for b in range(0, 6000, 1000):
                assert fwd_send(w.port, name, [{"seq": b + i, "pad": "p" * 1000}
                                               for i in range(1000)])
            acked[name] = list(range(6000))
        else:
            assert fwd_send(w.port, name, records(name, 20))
            acked[name] = list(range(20))
    w.proc.send_signal(signal.SIGUSR1)  # the multipart chunks' time buckets are not over

    def all_there(objs):
        return all(set(seqs_in(objs, n + "/")) >= set(acked[n]) for n in acked)
    # weir is done when it counts every chunk delivered: the hung PUT is stored in s3rver
    # long before weir's timeout ends it and the retry answers
    def delivered():
        m = scrape(prom)
        done = all(m.get(("weir_output_delivered_records_total",
                          frozenset({"plugin_id": n, "type": "s3"}.items()))) == len(acked[n])
                   for n in acked)
        return m if done else None
    deadline = time.time() + 150
    while not delivered() and time.time() < deadline:
        time.sleep(0.5)
    m = delivered()
    assert m, w.log()
    objs = srv.wait_objects("faults", all_there)
    log = stop_weir(w)
    for name, (faults, errors) in FAULT_SCENARIOS.items():
        got = seqs_in(objs, name + "/")
        # every acked event, nothing else, and no duplicate: every retry of a request that
        # may have been stored (the hang) went to the same key
        assert sorted(got) == acked[name], (name, len(got), len(set(got)), log)
        assert len([k for k in objs if k.startswith(name + "/")]) == 1, (name, sorted(objs))
        fired = [i for i in srv.state.injected if i[3].startswith("/faults/%s/" % name)]
        assert len(fired) == sum(f[1] for f in faults), (name, fired)
        lab = {"plugin_id": name, "type": "s3"}
        for reason in ("throttled", "server_error", "timeout", "connection", "credentials",
                       "unstorable", "refused"):
            assert m[("weir_s3_request_errors_total",
                      frozenset(dict(lab, reason=reason).items()))] == errors.get(reason, 0), \
                (name, reason)
        retried = m[("weir_s3_request_retries_total", frozenset(lab.items()))]
        chunk_retries = m[("fluentd_output_status_retry_count", frozenset(lab.items()))]
        # each failed request was sent again at once, but the fourth failure of "put" and
        # "lost", which ended that attempt: the buffer retried the chunk
        assert chunk_retries == (1 if name in ("put", "lost") else 0), (name, chunk_retries)
        assert retried == sum(errors.values()) - chunk_retries, (name, retried)
    # the multipart uploads: one each, every part stored once more after its failure, no abort
    for name in MULTIPART:
        q = [(r[0], r[2], r[5]) for r in srv.state.requests(path="/faults/%s/" % name)
             if r[0] != "HEAD"]
        assert [x for x in q if x[0] == "DELETE"] == [], (name, q)
        ok_init = [x for x in q if x[1] == "uploads=" and x[2] == 200]
        assert len(ok_init) == 1, (name, q)
    tokens = [r[3].get("x-amz-security-token") for r in srv.state.requests(path="/faults/expire/")
              if r[0] != "HEAD"]
    assert tokens[0] != tokens[-1] and tokens[-1] not in srv.state.revoked, tokens
    assert log.count("failed to flush") == 2, log  # "put" and "lost"
    assert "goes to s3://faults/lost/20231114221320_0.gz again: its last attempt may have " \
           "stored it" in log, log


def test_unstorable_objects_go_to_backup_at_once():
    """A key S3 cannot store (over 1024 bytes, or refused by S3 as such) is given up at the
    first attempt: backup, the reason in the log, the metrics. AccessDenied is not: an
    operator can fix it, so the chunk is retried, with an error in the log."""
    srv = s3()
    long_path = ("d" * 200 + "/") * 4 + "x" * 194  # 998 bytes, no path segment over 255
    srv.state.inject(r"^PUT /keys/.*/k\.s/", 1, "error", 400, "KeyTooLongError")
    srv.state.inject(r"^PUT /keys/.*/k\.d/", 2, "error", 403, "AccessDenied")
    prom = free_port()
    w = start_weir([prometheus_source(prom), lambda d: match_conf(
        d, "keys", "keys", STATIC, path=long_path + "/${tag}/", pattern="k.**",
        extra="  <format>\n    @type json\n  </format>\n")])
    wait_port(prom)
    # the key is long_path/<tag>/20231114221320_0.gz: 1019 bytes + the tag
    for tag in ("k.abc", "k.abcd", "k.s", "k.d"):
        assert fwd_send(w.port, tag, records(tag, 3))
    lab = frozenset({"plugin_id": "keys", "type": "s3"}.items())
    deadline = time.time() + 30
    m = {}
    while time.time() < deadline:
        m = scrape(prom)
        if m.get(("weir_output_delivered_records_total", lab)) == 6 and \
                m.get(("weir_output_backup_chunks_total", lab)) == 2:
            break
        time.sleep(0.3)
    objs = srv.wait_objects("keys", lambda o: len(o) >= 2)
    log = stop_weir(w)
    # exactly at the limit: stored; the denied chunk: stored after its retries
    key = long_path + "/k.abc/20231114221320_0.gz"
    assert len(key.encode()) == 1024
    assert sorted(objs) == sorted([key, long_path + "/k.d/20231114221320_0.gz"]), \
        sorted(objs)
    assert [json.loads(x)["seq"] for x in ungzip(objs[key][0]).decode().splitlines()] == \
        [0, 1, 2]
    # one past the limit: never sent to S3, given up at once, as is what S3 calls too long
    assert not srv.state.requests(path="/keys/" + long_path + "/k.abcd/")
    assert "given up (object key of 1025 bytes is longer than S3's limit of 1024: " in log, log
    assert "HTTP 400 KeyTooLongError: injected by the test; S3 can never store this " \
           "object)" in log, log
    backup = os.path.join(w.dir, "buf-keys", "backup")
    assert len(os.listdir(backup)) == 2, os.listdir(backup)
    assert m[("weir_output_backup_chunks_total", lab)] == 2, m
    assert m[("weir_s3_request_errors_total", lab | {("reason", "unstorable")})] == 1
    assert m[("weir_s3_request_errors_total", lab | {("reason", "refused")})] == 2
    # the only chunk retries are the denied chunk's: an operator may fix a policy any time
    assert m[("fluentd_output_status_retry_count", lab)] == 2, m
    assert log.count("AccessDenied: injected by the test; this will fail until the "
                     "configuration, the bucket or its policy is fixed") == 2, log


def test_s3_errors_are_logged_with_code_and_message():
    srv = s3()
    srv.state.add_key("AKIDWRONG", "the-right-secret")
    # start-up check: a bad key stops weir with S3's answer
    w = start_weir([lambda d: match_conf(d, "bad", "badkey",
                                          "  aws_key_id AKIDWRONG\n  aws_sec_key wrong-secret-1\n")],
                   ok=False)
    rc = w.proc.wait(30)
    log = w.log()
    assert rc != 0
    assert "can't call S3 API" in log and "SignatureDoesNotMatch" in log, log
    check_no_secrets(log, ["wrong-secret-1"])
    # without start-up checks: every flush fails with the code and message, and is retried
    w = start_weir([lambda d: match_conf(d, "bad2", "badkey",
                                          "  aws_key_id AKIDWRONG\n  aws_sec_key wrong-secret-2\n",
                                          extra="  check_apikey_on_start false\n"
                                                "  check_bucket false\n  check_object false\n")])
    assert fwd_send(w.port, "t", records("x", 3))
    deadline = time.time() + 10
    while w.log().count("failed to flush") < 2 and time.time() < deadline:
        time.sleep(0.2)
    log = stop_weir(w, ["wrong-secret-2"])
    assert log.count("failed to flush") >= 2, log
    assert "HTTP 403 SignatureDoesNotMatch: The request signature we calculated" in log, log


def creds_case(name, creds, env=None, secrets=()):
    """One weir with the given credentials config; returns (objects, log)."""
    srv = s3()
    w = start_weir([lambda d: match_conf(d, name, "creds-" + name, creds, path=name + "/")],
                   env=env)
    assert fwd_send(w.port, "t", records(name, 4))
    objs = srv.wait_objects("creds-" + name, lambda o: len(o) >= 1)
    log = stop_weir(w, secrets)
    assert len(objs) == 1, (sorted(objs), log)
    return objs, log


def proxy_tokens(bucket):
    return [r[3].get("x-amz-security-token") for r in s3().state.requests(path="/" + bucket)]


def aws_log(prefix):
    with AWS.lock:
        return [e for e in AWS.log if e[1].startswith(prefix)]


def test_credentials_imds_v2_token_flow_and_refresh():
    s3()
    AWS.imds_v2 = True
    AWS.expires_in = 605  # refreshed once they come within 600 s of expiring
    with AWS.lock:
        AWS.log.clear()
    srv = s3()
    conf = ("  <instance_profile_credentials>\n    ip_address 127.0.0.1\n    port %d\n"
            "  </instance_profile_credentials>\n" % AWS.port)
    w = start_weir([lambda d: match_conf(d, "imds", "creds-imds", conf, path="i/")])
    assert fwd_send(w.port, "t", records("i", 3))
    srv.wait_objects("creds-imds", lambda o: len(o) >= 1)
    time.sleep(6)
    assert fwd_send(w.port, "t", records("j", 3), t=T0 + 1)
    objs = srv.wait_objects("creds-imds", lambda o: len(o) >= 2)
    stop_weir(w)
    AWS.expires_in = 3600
    assert len(objs) == 2, sorted(objs)
    calls = aws_log("/latest/")
    # IMDSv2: a token first, then the role and its credentials, both with the token
    assert calls[0][0] == "PUT" and calls[0][1] == "/latest/api/token"
    assert calls[0][2]["x-aws-ec2-metadata-token-ttl-seconds"] == "21600"
    gets = [c for c in calls if c[0] == "GET"]
    assert gets and all(c[2].get("x-aws-ec2-metadata-token") == AWS.imds_token for c in gets)
    fetched = [c for c in gets if c[1].endswith("/weir-role")]
    assert len(fetched) >= 2, calls  # the second upload came after a refresh
    tokens = set(proxy_tokens("creds-imds")) - {None}
    assert len(tokens) >= 2, tokens
    assert all(t.startswith("tmp-token-imds-") for t in tokens)


def test_credentials_imds_v1_fallback():
    s3()
    AWS.imds_v2 = False
    with AWS.lock:
        AWS.log.clear()
    try:
        creds_case("imdsv1", "  <instance_profile_credentials>\n    ip_address 127.0.0.1\n"
                             "    port %d\n  </instance_profile_credentials>\n" % AWS.port)
    finally:
        AWS.imds_v2 = True
    gets = [c for c in aws_log("/latest/") if c[0] == "GET"]
    assert gets and all("x-aws-ec2-metadata-token" not in c[2] for c in gets), gets


def test_credentials_ecs_relative_and_full_uri():
    s3()
    AWS.ecs_auth = "ecs-auth-token-123"
    try:
        creds_case("ecsrel", "  <instance_profile_credentials>\n    ip_address 127.0.0.1\n"
                             "    port %d\n  </instance_profile_credentials>\n" % AWS.port,
                   env={"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "/v2/credentials/abc",
                        "AWS_CONTAINER_AUTHORIZATION_TOKEN": "ecs-auth-token-123"},
                   secrets=["ecs-auth-token-123"])
        # nothing configured: the default chain finds the container endpoint
        creds_case("ecsfull", "",
                   env={"AWS_CONTAINER_CREDENTIALS_FULL_URI":
                        "http://127.0.0.1:%d/ecs/full" % AWS.port,
                        "AWS_CONTAINER_AUTHORIZATION_TOKEN": "ecs-auth-token-123"},
                   secrets=["ecs-auth-token-123"])
    finally:
        AWS.ecs_auth = None
    assert all(t and t.startswith("tmp-token-ecs-") for t in proxy_tokens("creds-ecsrel"))
    assert all(t and t.startswith("tmp-token-ecs-") for t in proxy_tokens("creds-ecsfull"))
    assert aws_log("/v2/credentials/abc") and aws_log("/ecs/full")


def test_credentials_sts_assume_role():
    s3()
    AWS.base_keys = {"AKIDBASE": ("base-secret-456", None)}
    conf = ("  aws_key_id AKIDBASE\n  aws_sec_key base-secret-456\n"
            "  <assume_role_credentials>\n    role_arn arn:aws:iam::123456789012:role/weir\n"
            "    role_session_name weir-test\n    external_id ext-1\n"
            "    sts_endpoint_url http://127.0.0.1:%d\n  </assume_role_credentials>\n" % AWS.port)
    creds_case("sts", conf, secrets=["base-secret-456"])
    calls = [c for c in aws_log("/") if c[0] == "POST"]
    form = dict(urllib.parse.parse_qsl(calls[-1][3].decode()))
    assert form["Action"] == "AssumeRole" and form["RoleSessionName"] == "weir-test"
    assert form["ExternalId"] == "ext-1" and form["DurationSeconds"] == "3600", form
    assert "/us-east-1/sts/aws4_request" in calls[-1][2]["authorization"]
    assert all(t and t.startswith("tmp-token-sts-") for t in proxy_tokens("creds-sts"))


def test_credentials_web_identity():
    s3()
    d = tmpdir("weir-web-")
    tok = os.path.join(d, "token")
    AWS.web_token = "eyJ-web-identity-jwt-" + os.urandom(6).hex()
    with open(tok, "w") as f:
        f.write(AWS.web_token + "\n")
    conf = ("  <web_identity_credentials>\n    role_arn arn:aws:iam::1:role/web\n"
            "    role_session_name weir-web\n    web_identity_token_file %s\n"
            "    sts_endpoint_url http://127.0.0.1:%d\n  </web_identity_credentials>\n"
            % (tok, AWS.port))
    creds_case("web", conf, secrets=[AWS.web_token])
    assert all(t and t.startswith("tmp-token-web-") for t in proxy_tokens("creds-web"))
    # and from the environment, with nothing configured (EKS IRSA)
    creds_case("webenv", "", env={"AWS_ROLE_ARN": "arn:aws:iam::1:role/web",
                                  "AWS_WEB_IDENTITY_TOKEN_FILE": tok,
                                  "AWS_ENDPOINT_URL_STS": "http://127.0.0.1:%d" % AWS.port},
               secrets=[AWS.web_token])
    assert all(t and t.startswith("tmp-token-web-") for t in proxy_tokens("creds-webenv"))


def test_credentials_shared_file_profile_and_env():
    srv = s3()
    srv.state.add_key("AKIDSHARED", "shared-secret-789")
    srv.state.add_key("AKIDENVKEY", "env-secret-012", "env-session-token-345")
    d = tmpdir("weir-shared-")
    path = os.path.join(d, "credentials")
    with open(path, "w") as f:
        f.write("# weir test\n[default]\naws_access_key_id = AKIDNOPE\n"
                "aws_secret_access_key = nope\n\n; the one in use\n[logs]\n"
                "aws_access_key_id = AKIDSHARED\naws_secret_access_key = shared-secret-789\n")
    creds_case("shared", "  <shared_credentials>\n    path %s\n    profile_name logs\n"
                         "  </shared_credentials>\n" % path, secrets=["shared-secret-789"])
    creds_case("profile", "  aws_profile logs\n", env={"AWS_SHARED_CREDENTIALS_FILE": path},
               secrets=["shared-secret-789"])
    creds_case("envchain", "", env={"AWS_ACCESS_KEY_ID": "AKIDENVKEY",
                                    "AWS_SECRET_ACCESS_KEY": "env-secret-012",
                                    "AWS_SESSION_TOKEN": "env-session-token-345"},
               secrets=["env-secret-012", "env-session-token-345"])
    assert set(proxy_tokens("creds-envchain")) == {"env-session-token-345"}


def test_tls_endpoint_ca_bundle_and_verify():
    srv = s3()
    d = tmpdir("weir-tls-")
    make_certs(d)  # a CA and a server certificate for 127.0.0.1
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(os.path.join(d, "server.crt"), os.path.join(d, "server.plain.key"))
    port = free_port()
    tls = serve(ProxyHandler, port, srv.state, tls=ctx)
    try:
        def conf(name, extra):
            return lambda dd: match_conf(dd, name, "tls", STATIC, path=name + "/",
                                         extra=extra).replace(
                "http://127.0.0.1:%d" % srv.port, "https://127.0.0.1:%d" % port)
        ca = os.path.join(d, "ca.crt")
        w = start_weir([conf("ca", "  ssl_ca_bundle %s\n" % ca)])
        assert fwd_send(w.port, "t", records("tls", 3))
        objs = srv.wait_objects("tls", lambda o: len(o) >= 1)
        stop_weir(w)
        assert list(objs) == ["ca/20231114221320_0.gz"], sorted(objs)
        # AWS_CA_BUNDLE, as the SDK reads it
        w = start_weir([conf("env", "")], env={"AWS_CA_BUNDLE": ca})
        assert fwd_send(w.port, "t", records("tls", 3))
        objs = srv.wait_objects("tls", lambda o: len(o) >= 2)
        stop_weir(w)
        assert "env/20231114221320_0.gz" in objs
        # an unknown CA is refused at start-up, with the reason
        w = start_weir([conf("noca", "")], ok=False)
        assert w.proc.wait(30) != 0
        assert "can't call S3 API" in w.log() and "certificate" in w.log(), w.log()
        # unless verification is off
        w = start_weir([conf("nover", "  ssl_verify_peer false\n")])
        assert fwd_send(w.port, "t", records("tls", 3))
        objs = srv.wait_objects("tls", lambda o: len(o) >= 3)
        log = stop_weir(w)
        assert "nover/20231114221320_0.gz" in objs and "ssl_verify_peer is false" in log
    finally:
        tls.shutdown()
        tls.server_close()


def test_credentials_expired_token_is_fetched_again():
    srv = s3()
    with AWS.lock:
        AWS.log.clear()
    conf = ("  <instance_profile_credentials>\n    ip_address 127.0.0.1\n    port %d\n"
            "  </instance_profile_credentials>\n" % AWS.port)
    w = start_weir([lambda d: match_conf(d, "expired", "expired", conf, path="e/")])
    assert fwd_send(w.port, "t", records("e", 3))
    srv.wait_objects("expired", lambda o: len(o) >= 1)
    first = [t for t in proxy_tokens("expired") if t][-1]
    with srv.state.lock:
        srv.state.revoked.add(first)  # S3 now answers ExpiredToken (a bare 400 to HEAD)
    assert fwd_send(w.port, "t", records("f", 3), t=T0 + 1)
    objs = srv.wait_objects("expired", lambda o: len(o) >= 2, timeout=20)
    log = stop_weir(w)
    assert len(objs) == 2, (sorted(objs), log)
    # the upload fetched new credentials and went on: no failed flush, no wait for a retry
    assert "failed to flush" not in log, log
    assert "S3 refused the credentials (HTTP 400); fetching new ones" in log, log
    fetched = [c for c in aws_log("/latest/meta-data/iam/security-credentials/weir-role")]
    assert len(fetched) == 2, fetched
    assert proxy_tokens("expired")[-1] not in srv.state.revoked


def test_dry_run_contacts_nothing():
    s3()
    with AWS.lock:
        AWS.log.clear()
    d = tmpdir("weir-dry-")
    conf = os.path.join(d, "fluent.conf")
    with open(conf, "w") as f:
        f.write("""
<match **>
  @type s3
  s3_bucket never-created
  s3_endpoint http://127.0.0.1:%d
  <instance_profile_credentials>
    ip_address 127.0.0.1
    port %d
  </instance_profile_credentials>
  <buffer>
    @type file
    path %s/buf
  </buffer>
</match>
""" % (s3().port, AWS.port, d))
    n = len(s3().state.log)
    rc, err = dry_run(conf, env=BASE_ENV)
    assert rc == 0, err
    assert not AWS.log and len(s3().state.log) == n
    assert not os.path.exists(os.path.join(d, "buf"))
    with open(conf, "w") as f:
        f.write("<match **>\n  @type s3\n  s3_bucket b\n  store_as lzo\n</match>\n")
    rc, err = dry_run(conf, env=BASE_ENV)
    assert rc == 1 and "store_as lzo is not supported" in err, err


def test_start_warns_about_keys_a_retry_cannot_keep():
    """A key format whose key can change between two attempts at the same chunk makes a second
    object when a chunk is uploaded again after a crash: weir says so at start, once per such
    placeholder, and says nothing for formats whose keys stay with the chunk."""
    d = tmpdir("weir-unstable-")
    conf = os.path.join(d, "fluent.conf")
    cases = [
        # (s3_object_key_format or None for the default, check_object, placeholders warned)
        (None, True, ["%{index}"]),
        ("%{path}%{time_slice}_%{index}.%{file_extension}", True, ["%{index}"]),
        ("%{path}%{time_slice}_%{uuid_flush}.%{file_extension}", True, ["%{uuid_flush}"]),
        ("%{path}%{time_slice}_%{uuid_flush}.%{file_extension}", False, ["%{uuid_flush}"]),
        (None, False, ["%{hms_slice}"]),
        ("%{path}%{time_slice}_%{hms_slice}_${chunk_id}.%{file_extension}", False,
         ["%{hms_slice}"]),
        ("%{path}%{index}_%{uuid_flush}.%{file_extension}", True, ["%{uuid_flush}", "%{index}"]),
        # stable: the chunk's id, its time bucket, its tag
        ("%{path}%Y/%m/%d/%{time_slice}_${tag}_${chunk_id}.%{file_extension}", False, []),
        ("%{path}%Y/%m/%d/%{time_slice}_${tag}_${chunk_id}.%{file_extension}", True, []),
        ("%{path}%{date_slice}_%{hex_random}.%{file_extension}", False, []),
        # without check_object %{index} is not expanded (it is empty): nothing changes
        ("%{path}%{time_slice}_%{index}_${chunk_id}.%{file_extension}", False, []),
    ]
    for fmt, check, want in cases:
        with open(conf, "w") as f:
            f.write("<match **>\n  @type s3\n  s3_bucket b\n  s3_endpoint http://127.0.0.1:%d\n"
                    "%s  check_object %s\n</match>\n" % (
                        s3().port, "  s3_object_key_format %s\n" % fmt if fmt else "",
                        "true" if check else "false"))
        rc, err = dry_run(conf, env=BASE_ENV)
        assert rc == 0, err
        warned = [m.group(1) for m in re.finditer(
            r"\[warn\]: s3: s3_object_key_format '[^']*': (%\{\w+\}) cannot be stable across "
            r"a retry: .* becomes a second object with the same events, and Snowpipe loads them "
            r"twice\. Use \$\{chunk_id\} instead", err)]
        assert warned == want, (fmt, check, warned, err)


def main():
    try:
        run_tests([
            test_every_format_and_store_as,
            test_check_object_index_and_metadata,
            test_placeholder_in_a_tag_stays_as_written,
            test_same_key_twice_duplicated_path_or_overwrite,
            test_multipart_upload_above_threshold,
            test_fluentd_buffer_chunks_are_uploaded_as_fluentd_formatted_them,
            test_s3_down_then_back_every_acked_event_arrives,
            test_s3_faults_every_acked_event_arrives_once,
            test_retry_never_overwrites_another_chunks_object,
            test_unstorable_objects_go_to_backup_at_once,
            test_in_request_retry_on_slowdown,
            test_s3_errors_are_logged_with_code_and_message,
            test_credentials_imds_v2_token_flow_and_refresh,
            test_credentials_imds_v1_fallback,
            test_credentials_ecs_relative_and_full_uri,
            test_credentials_sts_assume_role,
            test_credentials_web_identity,
            test_credentials_shared_file_profile_and_env,
            test_credentials_expired_token_is_fetched_again,
            test_tls_endpoint_ca_bundle_and_verify,
            test_dry_run_contacts_nothing,
            test_start_warns_about_keys_a_retry_cannot_keep,
        ])
    finally:
        cleanup()


def cleanup():
    """Stops what the tests left running (weir, s3rver) and removes their directories."""
    for w in WEIRS:
        w.__exit__(None, None, None)
    if S3_SERVER and S3_SERVER.proc and S3_SERVER.proc.poll() is None:
        S3_SERVER.proc.terminate()
    if S3_SERVER:
        shutil.rmtree(S3_SERVER.dir, ignore_errors=True)
    for d in TMPDIRS:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
