#!/usr/bin/env python3
"""A malformed-HTTP corpus against a running klio-api demo: raw sockets, over TLS (with the
kubeconfig's admin client certificate, without one, with a stranger's) and without TLS.

Usage:
  malformed-http.py corpus KUBECONFIG [--log DEMO_LOG]
  malformed-http.py slowloris KUBECONFIG [--seconds 45]

corpus: bad methods, huge headers and header floods, broken percent-encodings and odd bytes in
paths and names, absurd query strings, HTTP/1.0 and /0.9, missing or doubled Host, odd line
endings, request smuggling shapes, Expect, pipelining, TLS garbage (random bytes, plaintext HTTP,
SSLv2 hellos, a truncated ClientHello), HTTP/2 oddities, anonymous and foreign client
certificates. Each case must get an answer (or a clean close, where the case says so) within
10 s, never a hang; no 5xx; every error body that is JSON is a metav1.Status whose code is the
HTTP status. After every case the server must still answer /readyz; at the end the demo's log
(--log) must not contain "panicked".

slowloris: holds connections that never finish (TCP without a TLS handshake, a truncated
ClientHello, TLS with no request, a request trickled one byte every 2 s, an idle keep-alive
connection) while probing the server every second; the probes must all succeed, and the server
must cut the stalled connections: handshakes within its 10 s handshake timeout, request headers
within its 30 s header-read timeout.

Both print `PASS`/`FAIL` per case and `<name>: N passed, M failed`; non-zero exit on failure.
"""

import argparse
import atexit
import base64
import json
import os
import random
import select
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time

GROUP = "kliocatalog.enterprisedb.io"
C = f"/apis/{GROUP}/v1alpha1/kliobackups"
NAME = "cluster-example.backup-20251113093137"
I = f"{C}/{NAME}"
CASE_LIMIT = 10.0  # seconds a case may take to be answered or closed
HANDSHAKE_TIMEOUT = 10.0  # the server's (src/server.rs)
HEADER_READ_TIMEOUT = 30.0  # the server's
SLACK = 5.0


# ---------------------------------------------------------------------------------------------
# Connections


class Target:
    def __init__(self, kubeconfig):
        with open(kubeconfig) as f:
            config = json.load(f)
        cluster, user = config["clusters"][0]["cluster"], config["users"][0]["user"]
        server = cluster["server"]
        assert server.startswith("https://"), server
        host, port = server[len("https://"):].rstrip("/").rsplit(":", 1)
        self.host, self.port = host, int(port)
        self.tmp = tempfile.mkdtemp(prefix="klio-malformed-")
        atexit.register(shutil.rmtree, self.tmp, True)
        self.files = {}
        for name, data in (("ca.crt", cluster["certificate-authority-data"]), ("admin.crt", user["client-certificate-data"]),
                           ("admin.key", user["client-key-data"])):
            self.files[name] = os.path.join(self.tmp, name)
            with open(self.files[name], "wb") as f:
                f.write(base64.b64decode(data))

    def context(self, cert="admin", alpn=None):
        ctx = ssl.create_default_context(cafile=self.files["ca.crt"])
        if cert == "admin":
            ctx.load_cert_chain(self.files["admin.crt"], self.files["admin.key"])
        elif cert == "stranger":
            ctx.load_cert_chain(*self.stranger())
        if alpn:
            ctx.set_alpn_protocols(alpn)
        return ctx

    def stranger(self):
        """A client certificate from a CA the server does not trust (made with the openssl CLI)."""
        crt, key = os.path.join(self.tmp, "stranger.crt"), os.path.join(self.tmp, "stranger.key")
        if not os.path.exists(crt):
            subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                            "-nodes", "-keyout", key, "-out", crt, "-days", "1", "-subj", "/CN=stranger/O=system:masters"],
                           check=True, capture_output=True)
        return crt, key

    def tcp(self, timeout=CASE_LIMIT):
        return socket.create_connection((self.host, self.port), timeout=timeout)

    def tls(self, cert="admin", alpn=None, timeout=CASE_LIMIT):
        sock = self.tcp(timeout)
        return self.context(cert, alpn).wrap_socket(sock, server_hostname=self.host)

    def admin_json(self, path):
        with self.tls() as s:
            s.sendall(get(path, b"Connection: close"))
            responses, _, _ = read_responses(s, 1, time.monotonic() + CASE_LIMIT)
            return json.loads(responses[0][2])

    def documented(self, path):
        """The status codes the published OpenAPI document gives for GET `path`."""
        if not hasattr(self, "_openapi"):
            index = self.admin_json("/openapi/v3")
            self._openapi = self.admin_json(index["paths"][f"apis/{GROUP}/v1alpha1"]["serverRelativeURL"])
        return set(self._openapi["paths"][path]["get"]["responses"])

    def future_rv(self):
        """The current resourceVersion with its first part moved far ahead."""
        rv = self.admin_json(C + "?limit=1")["metadata"]["resourceVersion"]
        first, _, rest = rv.partition(".")
        return f"{int(first) + 10**9}.{rest}" if rest else str(int(first) + 10**9)

    def ready(self):
        """Whether /readyz answers `ok` (anonymous TLS, a fresh connection)."""
        try:
            with self.tls(cert=None, timeout=5) as s:
                s.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                responses, _, _ = read_responses(s, 1, time.monotonic() + 5)
                return bool(responses) and responses[0][0] == 200 and responses[0][2].strip() == b"ok"
        except OSError:
            return False


# ---------------------------------------------------------------------------------------------
# A small HTTP/1.x response reader (pipelining, chunked, Content-Length, read-to-close)


def parse_one(buf, head, closed):
    """(response, rest) or (None, buf) when more bytes are needed."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None, buf
    lines = buf[:end].split(b"\r\n")
    try:
        version, code = lines[0].split(b" ", 2)[:2]
        code = int(code)
    except ValueError:
        raise ValueError(f"not an HTTP status line: {lines[0][:100]!r}")
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        headers.setdefault(k.strip().lower().decode("latin-1"), v.strip().decode("latin-1"))
    rest = buf[end + 4:]
    if head or code in (204, 304) or 100 <= code < 200:
        return (code, headers, b"", version), rest
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body, pos = b"", 0
        while True:
            eol = rest.find(b"\r\n", pos)
            if eol < 0:
                return None, buf
            size = int(rest[pos:eol].split(b";")[0], 16)
            if size == 0:
                trailer_end = rest.find(b"\r\n\r\n", eol) if rest[eol + 2:eol + 4] != b"\r\n" else eol
                if trailer_end < 0:
                    return None, buf
                return (code, headers, body, version), rest[trailer_end + 4:]
            if len(rest) < eol + 2 + size + 2:
                return None, buf
            body += rest[eol + 2:eol + 2 + size]
            pos = eol + 2 + size + 2
    if "content-length" in headers:
        n = int(headers["content-length"])
        if len(rest) < n:
            return None, buf
        return (code, headers, rest[:n], version), rest[n:]
    if closed:
        return (code, headers, rest, version), b""
    return None, buf


def read_responses(sock, want, deadline, head=False):
    """Reads up to `want` final responses. Returns (responses, closed, timed_out)."""
    buf, responses, closed = b"", [], False
    sock.setblocking(False)
    try:
        while len(responses) < want:
            while True:
                response, buf2 = parse_one(buf, head, closed)
                if response is None:
                    break
                buf = buf2
                if not 100 <= response[0] < 200:
                    responses.append(response)
                if len(responses) >= want:
                    return responses, closed, False
            if closed:
                if buf.strip():
                    raise ValueError(f"trailing bytes after the last response: {buf[:100]!r}")
                return responses, True, False
            left = deadline - time.monotonic()
            if left <= 0:
                return responses, False, True
            try:
                if isinstance(sock, ssl.SSLSocket) and sock.pending():
                    ready = True
                else:
                    ready = bool(select.select([sock], [], [], min(left, 0.5))[0])
                if not ready:
                    continue
                data = sock.recv(65536)
            except (ssl.SSLWantReadError, BlockingIOError):
                continue
            except (ConnectionResetError, BrokenPipeError, ssl.SSLError, ssl.SSLEOFError):
                data = b""
            if not data:
                closed = True
            buf += data
    finally:
        try:
            sock.setblocking(True)
        except OSError:
            pass
    return responses, closed, False


def wait_closed(sock, deadline):
    """Whether the peer closes `sock` before `deadline` (bytes it sends meanwhile are dropped)."""
    sock.setblocking(False)
    while time.monotonic() < deadline:
        try:
            if isinstance(sock, ssl.SSLSocket) and sock.pending():
                pass
            elif not select.select([sock], [], [], min(0.5, max(0.0, deadline - time.monotonic())))[0]:
                continue
            if not sock.recv(65536):
                return True
        except (ssl.SSLWantReadError, BlockingIOError):
            continue
        except OSError:
            return True
    return False


# ---------------------------------------------------------------------------------------------
# Checks on one exchange


def status_problems(body, code):
    try:
        status = json.loads(body)
    except ValueError as e:
        return [f"not JSON ({e})"]
    if not isinstance(status, dict):
        return ["not a JSON object"]
    return [f"{k}={status.get(k)!r} (want {want!r})"
            for k, want in (("kind", "Status"), ("apiVersion", "v1"), ("status", "Failure"), ("code", code))
            if status.get(k) != want]


def judge(responses, allowed_5xx=()):
    """Problems with the responses: 5xx, JSON error bodies that are not a valid Status."""
    problems = []
    for code, headers, body, _ in responses:
        if code >= 500 and code not in allowed_5xx:
            problems.append(f"server error {code}: {body[:200]!r}")
        if code >= 300 and body.strip():
            if headers.get("content-type", "").startswith("application/json") or body.lstrip()[:1] == b"{":
                p = status_problems(body, code)
                if p:
                    problems.append(f"{code} body is not a valid Status ({'; '.join(p)}): {body[:200]!r}")
    return problems


def summary(responses):
    return ", ".join(f"{code}" + (f" {body[:80]!r}" if code >= 300 and body else "") for code, _, body, _ in responses) or "no response"


class Case:
    """One exchange: `payload` (bytes, or a list of byte chunks sent apart) over `transport`."""

    def __init__(self, name, payload, transport="tls", want=1, expect="response", codes=None, head=False,
                 allowed_5xx=(), close_after=False, alpn=None, raw=False, documented=None, note=""):
        self.name, self.payload, self.transport, self.want = name, payload, transport, want
        # expect: "response" (an answer is required), "response-or-close" (an answer or a close),
        # "close" (the server must close without a hang; an answer is also fine unless codes=[]).
        # codes: the statuses allowed for the answers received ([]: no HTTP answer at all).
        # raw: the answer may be other bytes than HTTP/1 (a TLS alert, HTTP/2 frames): the server
        # must close, or (HTTP/2) answer with frames, within the case's limit.
        self.expect, self.codes, self.head, self.allowed_5xx = expect, codes, head, allowed_5xx
        self.close_after, self.alpn, self.raw = close_after, alpn, raw
        # documented: the status codes the server's OpenAPI document gives for the operation; an
        # answer outside them is a contract bug (`note` says what the case stands for).
        self.documented, self.note = documented, note

    def run(self, target):
        deadline = time.monotonic() + CASE_LIMIT
        try:
            if self.transport == "tcp":
                sock = target.tcp()
            else:
                cert = {"tls": "admin", "anon": None, "stranger": "stranger"}[self.transport]
                try:
                    sock = target.tls(cert=cert, alpn=self.alpn)
                except (ssl.SSLError, ConnectionResetError, BrokenPipeError) as e:
                    if self.transport == "stranger":
                        return [], f"handshake refused ({type(e).__name__})"
                    raise
        except OSError as e:
            return [f"cannot connect: {e}"], ""
        with sock:
            payload = self.payload() if callable(self.payload) else self.payload
            chunks = payload if isinstance(payload, list) else [payload]
            try:
                for i, chunk in enumerate(chunks):
                    if i:
                        time.sleep(0.05)
                    sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError) as e:
                # The server may cut a request it already rejected; what it answered still counts.
                pass
            if self.raw:
                return self.judge_raw(sock, deadline)
            try:
                responses, closed, timed_out = read_responses(sock, self.want, deadline, head=self.head)
            except ValueError as e:
                return [f"unparseable answer: {e}"], ""
            problems = judge(responses, self.allowed_5xx)
            if timed_out:
                problems.append(f"hang: {len(responses)}/{self.want} responses and no close within {CASE_LIMIT:.0f}s")
            elif self.expect == "response" and len(responses) < self.want:
                problems.append(f"closed after {len(responses)}/{self.want} responses")
            if self.codes is not None:
                got = [r[0] for r in responses]
                if self.codes == [] and got:
                    problems.append(f"expected no HTTP answer, got {got}")
                elif any(c not in self.codes for c in got):
                    problems.append(f"expected status in {self.codes}, got {got}")
            if self.documented is not None:
                undocumented = [r[0] for r in responses if str(r[0]) not in self.documented]
                if undocumented:
                    problems.append(f"SERVER BUG: status {undocumented} is not in the operation's published OpenAPI "
                                    f"responses {sorted(self.documented)} ({self.note}): {summary(responses)}")
            if self.codes is not None and self.note and any(r[0] not in self.codes for r in responses):
                problems.append(f"SERVER BUG: {self.note}")
            if self.close_after and not closed and not timed_out:
                if not wait_closed(sock, time.monotonic() + 5):
                    problems.append("the connection stays open (expected a close after the answer)")
            return problems, summary(responses) + (" + close" if closed else "")


    def judge_raw(self, sock, deadline):
        data, closed = b"", False
        sock.setblocking(False)
        while time.monotonic() < deadline and not closed:
            try:
                if not (isinstance(sock, ssl.SSLSocket) and sock.pending()) and \
                        not select.select([sock], [], [], min(0.5, max(0.0, deadline - time.monotonic())))[0]:
                    if is_h2_frames(data):
                        break  # an HTTP/2 server waiting for the client's next frame
                    continue
                chunk = sock.recv(65536)
            except (ssl.SSLWantReadError, BlockingIOError):
                continue
            except OSError:
                chunk = b""
            closed = not chunk
            data += chunk
            if data.startswith(b"HTTP/1"):
                try:
                    if parse_one(data, False, closed)[0] is not None:
                        break  # an HTTP/1 answer (judged below)
                except ValueError:
                    break
        what = (f"{len(data)} bytes " if data else "") + ("TLS alert " if data[:1] == b"\x15" else "") + \
               ("HTTP/2 frames " if is_h2_frames(data) else "") + ("+ close" if closed else "")
        if data.startswith(b"HTTP/1"):
            responses = []
            try:
                while data.startswith(b"HTTP/1"):
                    response, data = parse_one(data, False, True)
                    if response is None:
                        break
                    responses.append(response)
            except ValueError as e:
                return [f"unparseable answer: {e}"], what
            problems = judge(responses, self.allowed_5xx)
            if self.codes is not None and any(r[0] not in self.codes for r in responses):
                problems.append(f"expected status in {self.codes}, got {[r[0] for r in responses]}")
            return problems, summary(responses) + (" + close" if closed else "")
        if not closed and not is_h2_frames(data):
            return [f"hang: no close within {CASE_LIMIT:.0f}s ({len(data)} bytes received)"], what
        return [], what


def is_h2_frames(data):
    """Whether `data` starts with an HTTP/2 SETTINGS or GOAWAY frame (the server's answer)."""
    return len(data) >= 9 and data[3] in (0x04, 0x07) and data[5:9] == b"\x00\x00\x00\x00"


class Resumption:
    """Two connections, the second resuming the first one's TLS session (what kube-rs, curl and
    browsers do): both must be served, the second still as the certificate's user (200, not 401)."""

    def __init__(self, version):
        self.version = version
        self.name = f"TLS session resumption ({version.name}, client certificate)"

    def run(self, target):
        ctx = target.context()
        ctx.minimum_version = ctx.maximum_version = self.version
        session, got = None, []
        for attempt in range(2):
            try:
                with ctx.wrap_socket(target.tcp(), server_hostname=target.host, session=session) as s:
                    s.sendall(get(I, b"Connection: close"))
                    responses, _, _ = read_responses(s, 1, time.monotonic() + CASE_LIMIT)
                    got.append(f"{'resumed' if s.session_reused else 'new'} session: {summary(responses)}")
                    if not responses or responses[0][0] != 200:
                        return [f"connection {attempt + 1}: {got[-1]}"], "; ".join(got)
                    session = s.session
            except (OSError, ssl.SSLError) as e:
                return [f"SERVER BUG: the resumed handshake fails ({type(e).__name__}: {e}): OpenSSL refuses to resume "
                        f"a session of a server that verifies client certificates and has no session id context "
                        f"(SSL_CTX_set_session_id_context); clients that resume (kube-rs) fail on their second connection"], \
                    "; ".join(got + [f"connection {attempt + 1}: {type(e).__name__}"])
        return [], "; ".join(got)


def req(method, target, headers=(), version=b"HTTP/1.1", body=b"", host=True):
    lines = [method + b" " + target + b" " + version]
    if host:
        lines.append(b"Host: 127.0.0.1")
    lines += list(headers)
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def get(path, *headers, **kw):
    return req(b"GET", path.encode() if isinstance(path, str) else path, headers, **kw)


def corpus(target):
    rnd = random.Random(5)
    cases = []
    add = lambda *a, **kw: cases.append(Case(*a, **kw))

    # -- sanity: the corpus' own reader against ordinary requests
    add("baseline list", get(C), codes=[200])
    add("baseline get", get(I), codes=[200])
    add("baseline not found", get(C + "/nonexistent"), codes=[404])

    # -- methods
    for m in (b"POST", b"PUT", b"PATCH", b"DELETE"):
        for path in (C, I):
            add(f"{m.decode()} {'collection' if path == C else 'item'}",
                req(m, path.encode(), [b"Content-Type: application/json", b"Content-Length: 2"], body=b"{}"), codes=[405])
    add("unknown method FOO", req(b"FOO", C.encode()), expect="response-or-close")
    add("lowercase method get", req(b"get", I.encode()), expect="response-or-close")
    add("method with a control byte", req(b"G\x01T", I.encode()), expect="close")
    add("8 KiB method", req(b"X" * 8192, I.encode()), expect="close")
    add("HEAD item", req(b"HEAD", I.encode()), head=True, expect="response-or-close")
    add("OPTIONS *", req(b"OPTIONS", b"*"), expect="response-or-close")
    add("TRACE", req(b"TRACE", I.encode()), expect="response-or-close")
    add("CONNECT authority-form", req(b"CONNECT", b"127.0.0.1:443"), expect="response-or-close")
    add("DELETE collection with a body, no Content-Type",
        req(b"DELETE", C.encode(), [b"Content-Length: 5"], body=b"xxxxx"), codes=[405])

    # -- huge headers and floods (431 or a close, never a hang or a 5xx)
    add("one 100 KiB header", get(I, b"X-Big: " + b"a" * 100_000), expect="close", codes=[431, 400])
    add("one 60 KiB header (under the 64 KiB buffer)", get(I, b"X-Big: " + b"a" * 60_000), expect="response-or-close")
    add("1 MiB of headers", get(I, *[b"X-H%d: %s" % (i, b"v" * 100) for i in range(10_000)]), expect="close", codes=[431, 400])
    add("150 small headers", get(I, *[b"X-H%d: v" % i for i in range(150)]), expect="response-or-close")
    add("5000 one-byte headers", get(I, *[b"X%d:" % i for i in range(5000)]), expect="close", codes=[431, 400])
    add("100 KiB Accept", get(I, b"Accept: " + b"application/json;q=0.5," * 4000), expect="close", codes=[431, 400])
    add("10 KiB Accept of media ranges", get(I, b"Accept: " + b",".join(b"a/b%d" % i for i in range(1500))),
        expect="response-or-close")
    add("huge header name", get(I, b"X" * 70_000 + b": v"), expect="close", codes=[431, 400])

    # -- paths and names: broken percent-encodings and odd bytes
    odd_names = ["%zz", "%", "%2", "%00", "%2F", "a%2Fb", "%ff%fe", "%c0%ae%c0%ae", "%2e%2e", "%2e", ".", "..",
                 "..%2f..%2fetc%2fpasswd", "%C3%A9t%C3%A9.backup", "%E2%80%AE", "a%20b", "a+b", "%0d%0aX-Injected:%201",
                 "x" * 300, "x" * 254, "%25", "%u0041", "cluster-example.backup-20251113093137%00", "-", "_", "a.",
                 "cluster-example.backup-20251113093137.", "%F0%9F%98%80", "a;b", "a,b", "a=b", "@", "~", "'", '"'.replace('"', "%22")]
    for n in odd_names:
        add(f"name {n[:40]!r}", get(f"{C}/{n}"), codes=[400, 404])
    raw_paths = [b"/apis/%s/v1alpha1/kliobackups/\x80\xff" % GROUP.encode(), b"/apis/ kliobackups", b"/apis/\tx",
                 b"//apis//" + GROUP.encode() + b"//v1alpha1//kliobackups", b"/apis/../apis/" + GROUP.encode() + b"/v1alpha1/kliobackups",
                 b"/apis/./" + GROUP.encode() + b"/./v1alpha1/kliobackups", b"apis/" + GROUP.encode(), b"/" * 5000,
                 C.encode() + b"/" + NAME.encode() + b"/status", C.encode() + b"/" + NAME.encode() + b"/../..",
                 C.encode() + b"#fragment", C.encode() + b"?", b"https://127.0.0.1/readyz", b"http://evil.example/" + C.encode(),
                 b"/" + b"a/" * 30_000, b"/\x00", b"/%", b"/api/v1/namespaces/default/pods", b"/apis/" + GROUP.encode() + b"/v9"]
    for p in raw_paths:
        add(f"path {p[:50]!r}", get(p), expect="response-or-close")

    # -- absurd query strings
    queries = ["limit=99999999999999999999999", "limit=-1", "limit=1e3", "limit=0x10", "limit=", "limit=1&limit=2",
               "labelSelector=%zz", "labelSelector=" + "a%3Db%2C" * 7000, "labelSelector=" + "(" * 5000,
               "fieldSelector=" + "spec.clusterName%3Dx%2C" * 2500, "fieldSelector=%00", "fieldSelector=spec.clusterName%3D%3D%3D",
               "&&&===&=&", "=", "%00=%00", "a=%ff%fe", "watch=true&watch=false&timeoutSeconds=1", "watch=yes&timeoutSeconds=1", "timeoutSeconds=99999999999999999999",
               "timeoutSeconds=-5", "continue=!!!", "continue=" + base64.urlsafe_b64encode(b'{"rv":"x","after":"y"}').decode(),
               "continue=" + base64.urlsafe_b64encode(b'{"rv":"999999999999.999999999999","after":""}').decode(),
               "continue=" + "A" * 60_000, "resourceVersion=18446744073709551616", "resourceVersion=-1",
               "resourceVersion=0&resourceVersionMatch=Exact", "resourceVersionMatch=NotOlderThan",
               "resourceVersion=1.2.3.4", "resourceVersion=" + "9" * 5000, "includeObject=Everything", "pretty=%ff",
               "sendInitialEvents=true", "allowWatchBookmarks=maybe", "k" * 60_000, "a=" + "%" * 3000]
    for q in queries:
        add(f"query {q[:50]!r}", get(f"{C}?{q}"), expect="response-or-close")
    # Answers the published OpenAPI document must give (kube-apiserver gives them too).
    list_codes, get_codes = target.documented(C), target.documented(C + "/{name}")
    stale = base64.urlsafe_b64encode(json.dumps({"rv": "1.1", "after": ""}).encode()).decode().rstrip("=")
    add("list with a continue token from a snapshot no longer kept (410 Gone)", get(f"{C}?limit=1&continue={stale}"),
        documented=list_codes, note="an expired continue token is 410 Gone, as in kube-apiserver")
    add("list with a resourceVersion from the future (504 after 3 s)", lambda: get(f"{C}?limit=1&resourceVersion={target.future_rv()}&resourceVersionMatch=NotOlderThan"),
        documented=list_codes, allowed_5xx=(504,), note="a resourceVersion the server has not reached is 504 Timeout, as in kube-apiserver")
    add("get: the published answers are documented", get(C + "/nonexistent"), documented=get_codes, note="get")
    add("item with list-only query", get(f"{I}?watch=true&limit=1&continue=x&labelSelector=%zz"), codes=[200, 400])
    add("watch with an absurd RV and timeout 1", get(f"{C}?watch=1&timeoutSeconds=1&resourceVersion=99999999999999.99999999999"),
        expect="response-or-close", allowed_5xx=(504,))

    # -- Accept oddities
    for a in (b"application/vnd.kubernetes.protobuf", b"*/*;q=0", b"application/json;q=0", b";;;;", b"\xff\xfe",
              b"application/json;as=Table;v=v1;g=meta.k8s.io;q=0.1, text/plain", b"application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io",
              b"application/apply-patch+yaml", b"text/event-stream"):
        add(f"Accept {a[:40]!r}", get(I, b"Accept: " + a), codes=None)

    # -- protocol versions and framing
    add("HTTP/1.0 without Host", get(I, version=b"HTTP/1.0", host=False), close_after=True, codes=[200])
    add("HTTP/1.0 keep-alive", get(I, b"Connection: keep-alive", version=b"HTTP/1.0"), codes=[200])
    add("HTTP/0.9 request line", b"GET /readyz\r\n\r\n", expect="close")
    add("HTTP/2.0 in an HTTP/1 request line", get(I, version=b"HTTP/2.0"), expect="response-or-close", allowed_5xx=(505,))
    add("HTTP/1.2", get(I, version=b"HTTP/1.2"), expect="response-or-close", allowed_5xx=(505,))
    add("HTTP/9.9", get(I, version=b"HTTP/9.9"), expect="response-or-close", allowed_5xx=(505,))
    add("garbage version", get(I, version=b"HTCPCP/1.0"), expect="close")
    add("HTTP/1.1 without Host", get(I, host=False), expect="response-or-close")
    add("two Host headers", get(I, b"Host: other"), expect="response-or-close")
    add("LF-only line endings", b"GET " + I.encode() + b" HTTP/1.1\nHost: x\n\n", expect="response-or-close")
    add("obs-fold header", get(I, b"X-A: a", b" folded"), expect="response-or-close")
    add("header without a colon", get(I, b"NoColonHere"), expect="response-or-close")
    add("space before the colon", get(I, b"Accept : application/json"), expect="response-or-close")
    add("NUL in a header value", get(I, b"X-A: a\x00b"), expect="response-or-close")
    add("bytes 0x80-0xff in a header value", get(I, b"X-A: \x80\xfe\xff"), expect="response-or-close")
    add("empty header name", get(I, b": v"), expect="response-or-close")
    add("request line of spaces", b"   \r\n\r\n", expect="close")
    add("10 leading CRLFs then a request", b"\r\n" * 10 + get(I), expect="response-or-close")
    add("Content-Length and chunked", req(b"POST", C.encode(), [b"Content-Length: 4", b"Transfer-Encoding: chunked"], body=b"0\r\n\r\n"),
        expect="response-or-close")
    add("two different Content-Lengths", req(b"POST", C.encode(), [b"Content-Length: 1", b"Content-Length: 2"], body=b"ab"),
        expect="response-or-close")
    add("negative Content-Length", req(b"POST", C.encode(), [b"Content-Length: -1"]), expect="response-or-close")
    add("Content-Length 1,2", req(b"POST", C.encode(), [b"Content-Length: 1,2"], body=b"ab"), expect="response-or-close")
    add("bad chunk size", req(b"POST", C.encode(), [b"Transfer-Encoding: chunked"], body=b"zz\r\nabc\r\n0\r\n\r\n"),
        expect="response-or-close")
    add("chunk size overflow", req(b"POST", C.encode(), [b"Transfer-Encoding: chunked"], body=b"ffffffffffffffffff\r\nabc"),
        expect="response-or-close")
    add("Transfer-Encoding: gzip, chunked", req(b"POST", C.encode(), [b"Transfer-Encoding: gzip, chunked"], body=b"0\r\n\r\n"),
        expect="response-or-close")
    add("GET with a body", get(I, b"Content-Length: 10", body=b"0123456789"), codes=[200])
    add("GET with a chunked body", get(I, b"Transfer-Encoding: chunked", body=b"5\r\nhello\r\n0\r\n\r\n"), codes=[200])
    add("Expect: 100-continue, 1 GB announced, nothing sent",
        req(b"POST", C.encode(), [b"Expect: 100-continue", b"Content-Length: 1000000000"]), codes=[405, 413, 417])
    add("Expect: nonsense", get(I, b"Expect: 200-ok"), expect="response-or-close")
    add("Upgrade: websocket", get(C + "?watch=true&timeoutSeconds=1", b"Connection: Upgrade", b"Upgrade: websocket",
                                  b"Sec-WebSocket-Version: 13", b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="),
        expect="response-or-close")
    add("Upgrade: h2c", get(I, b"Connection: Upgrade, HTTP2-Settings", b"Upgrade: h2c", b"HTTP2-Settings: AAMAAABkAAQAAP__"),
        expect="response-or-close")
    add("Connection: close", get(I, b"Connection: close"), codes=[200], close_after=True)
    # kube-aggregator forwards each group of the user as its own X-Remote-Group line (and each
    # extra as X-Remote-Extra-*): a user in many groups sends many header lines, well under the
    # 64 KiB header buffer. kube-apiserver limits header bytes (1 MiB), not header lines.
    add("a user in 120 groups (120 X-Remote-Group lines, 5 KiB)",
        get(I, b"X-Remote-User: someone", *[b"X-Remote-Group: team-%03d" % i for i in range(120)]), codes=[200],
        note="a request with more than ~100 header lines is refused with 431, although its headers are far below "
             "the 64 KiB limit: kube-aggregator sends one X-Remote-Group line per group of the user")

    # -- pipelining
    add("3 pipelined requests", get("/readyz") + get(C + "/nonexistent") + get(I), want=3, codes=[200, 404])
    add("50 pipelined requests", get(I) * 50, want=50, codes=[200])
    add("pipelined, the 2nd with Connection: close", get(I) + get(I, b"Connection: close") + get(I), want=2, codes=[200],
        close_after=True)
    add("pipelined after a parse error", b"G\x01T / HTTP/1.1\r\n\r\n" + get(I), expect="close")
    add("request split into 1-byte writes", [bytes([b]) for b in get(I)[:40]] + [get(I)[40:]], codes=[200])

    # -- without a client certificate, with a stranger's
    add("anonymous list", get(C), transport="anon", codes=[401])
    add("anonymous get", get(I), transport="anon", codes=[401])
    add("anonymous /openapi/v3", get("/openapi/v3"), transport="anon", codes=[401, 403])
    add("anonymous /readyz", get("/readyz"), transport="anon", codes=[200])
    add("anonymous /readyz?verbose", get("/readyz?verbose"), transport="anon", codes=[200])
    add("anonymous 100 KiB header", get(I, b"X-Big: " + b"a" * 100_000), transport="anon", expect="close", codes=[431, 400])
    add("anonymous Authorization: Bearer", get(C, b"Authorization: Bearer abc"), transport="anon", codes=[401])
    add("anonymous impersonation headers", get(C, b"Impersonate-User: admin", b"Impersonate-Group: system:masters"),
        transport="anon", codes=[401, 403])
    add("anonymous X-Remote-User", get(C, b"X-Remote-User: admin", b"X-Remote-Group: system:masters"), transport="anon",
        codes=[401])
    add("stranger's certificate", get(C), transport="stranger", expect="close", codes=[401])

    # -- TLS garbage and other bytes on the TLS port (the server must keep serving afterwards)
    add("4 KiB of random bytes", rnd.randbytes(4096), transport="tcp", raw=True, expect="close", codes=[])
    add("random bytes after a TLS record header", b"\x16\x03\x01\x00\xff" + rnd.randbytes(255), transport="tcp",
        raw=True, expect="close", codes=[])
    add("plaintext HTTP on the TLS port", get("/readyz"), transport="tcp", raw=True, expect="close")
    add("SSLv2 ClientHello", bytes.fromhex("802e0103010015000000100700c00300800100800600400400800200803132333435363738393031323334353637383930"),
        transport="tcp", raw=True, expect="close", codes=[])
    add("TLS alert record only", b"\x15\x03\x03\x00\x02\x02\x28", transport="tcp", raw=True, expect="close", codes=[])
    add("huge TLS record length", b"\x16\x03\x01\xff\xff" + rnd.randbytes(1000), transport="tcp", raw=True, expect="close", codes=[])
    add("1 MiB of zeros", b"\x00" * (1 << 20), transport="tcp", raw=True, expect="close", codes=[])
    add("HTTP/2 preface without TLS", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00", transport="tcp",
        raw=True, expect="close", codes=[])

    # -- HTTP/2 over TLS (ALPN h2): a broken preface, garbage frames, a bare preface then HTTP/1
    add("h2: HTTP/1.1 request after ALPN h2", get(I), alpn=["h2"], raw=True, expect="close")
    add("h2: preface then garbage frames", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + rnd.randbytes(2048), alpn=["h2"], raw=True, expect="close")
    add("h2: preface, SETTINGS, then a HEADERS frame with a bad HPACK block",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00" + b"\x00\x00\x05\x01\x05\x00\x00\x00\x01" + b"\xff\xff\xff\xff\xff",
        alpn=["h2"], raw=True, expect="close")
    add("h2 preface over HTTP/1.1 ALPN", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", alpn=["http/1.1"], raw=True, expect="close")

    cases += [Resumption(ssl.TLSVersion.TLSv1_2), Resumption(ssl.TLSVersion.TLSv1_3)]

    results = []
    for case in cases:
        started = time.monotonic()
        try:
            problems, what = case.run(target)
        except Exception as e:  # the corpus' own failure is reported as the case's
            problems, what = [f"case error: {type(e).__name__}: {e}"], ""
        elapsed = time.monotonic() - started
        if not target.ready():
            time.sleep(1)
            if not target.ready():
                problems.append("the server no longer answers /readyz")
        results.append((case.name, problems))
        status = "FAIL" if problems else "PASS"
        print(f"{status} {case.name} ({elapsed:.1f}s): {what}" + "".join(f"\n      {p}" for p in problems))
    return results


# ---------------------------------------------------------------------------------------------
# slowloris


def slowloris(target, seconds):
    """Stalled connections vs. the server's timeouts, while it keeps serving others."""

    def h2_idle():
        sock = target.tls(alpn=["h2"])
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        return sock

    results = []
    groups = {}  # name -> (sockets, limit in seconds the server has to cut them, or None to just report)
    start = time.monotonic()

    def hold(name, n, make, limit):
        socks = []
        for _ in range(n):
            try:
                socks.append(make())
            except OSError as e:
                results.append((f"slowloris: open {name}", [f"cannot open: {e}"]))
                break
        groups[name] = (socks, limit, {})

    hello = None
    # A real ClientHello's first bytes (captured from an in-memory handshake).
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = target.context().wrap_bio(inc, out, server_hostname=target.host)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        hello = out.read()
    hold("TCP, no TLS handshake", 10, lambda: target.tcp(), HANDSHAKE_TIMEOUT)

    def truncated_hello():
        s = target.tcp()
        s.sendall(hello[: len(hello) // 2])
        return s

    hold("truncated ClientHello", 10, truncated_hello, HANDSHAKE_TIMEOUT)
    hold("TLS, no request bytes", 10, lambda: target.tls(), HEADER_READ_TIMEOUT)

    def partial():
        s = target.tls()
        s.sendall(b"GET " + I.encode() + b" HTTP/1.1\r\nHost: x\r\n")
        return s

    hold("partial headers, then nothing", 10, partial, HEADER_READ_TIMEOUT)
    hold("headers trickled 1 byte every 2 s", 10, partial, HEADER_READ_TIMEOUT)

    def sends(payload):
        def make():
            s = target.tls()
            s.sendall(payload)
            return s
        return make

    # Requests the server can only wait on: bare CRs are no line end, empty lines precede a request.
    hold("CR-only line endings", 3, sends(b"GET " + I.encode() + b" HTTP/1.1\rHost: x\r\r"), HEADER_READ_TIMEOUT)
    hold("1000 CRLFs and no request", 3, sends(b"\r\n" * 1000), HEADER_READ_TIMEOUT)
    # HTTP/2 has no header-read timeout: an idle HTTP/2 connection is only reported.
    hold("HTTP/2 preface (ALPN h2), then nothing", 3, h2_idle, None)

    def idle_keepalive():
        s = target.tls()
        s.sendall(get(I))
        responses, _, _ = read_responses(s, 1, time.monotonic() + 5)
        if not responses:
            raise OSError("no answer to the first request")
        return s

    hold("idle keep-alive after one request", 10, idle_keepalive, None)

    probes, probe_failures = 0, []
    trickle = b"X-Slow: " + b"a" * 100
    tick = 0
    stop = start + seconds
    while time.monotonic() < stop:
        # Probe: a full request on a fresh connection must be served promptly.
        t0 = time.monotonic()
        try:
            with target.tls(timeout=5) as s:
                s.sendall(get(I, b"Connection: close"))
                responses, _, _ = read_responses(s, 1, time.monotonic() + 5)
                if not responses or responses[0][0] != 200:
                    probe_failures.append(f"t={t0 - start:.0f}s: {summary(responses)}")
        except OSError as e:
            probe_failures.append(f"t={t0 - start:.0f}s: {type(e).__name__}: {e}")
        probes += 1
        # Trickle one byte per socket every 2 s.
        if tick % 2 == 0:
            socks, _, closed_at = groups["headers trickled 1 byte every 2 s"]
            for s in socks:
                if s in closed_at:
                    continue
                try:
                    s.sendall(trickle[(tick // 2) % len(trickle):][:1])
                except OSError:
                    closed_at[s] = time.monotonic() - start
        # Which stalled connections did the server cut?
        for name, (socks, limit, closed_at) in groups.items():
            for s in socks:
                if s not in closed_at and wait_closed(s, time.monotonic() + 0.01):
                    closed_at[s] = time.monotonic() - start
        if all(len(closed_at) == len(socks) for socks, limit, closed_at in groups.values() if limit is not None):
            if time.monotonic() - start > HANDSHAKE_TIMEOUT + SLACK:
                break
        tick += 1
        time.sleep(max(0.0, 1.0 - (time.monotonic() - t0)))

    elapsed = time.monotonic() - start
    for name, (socks, limit, closed_at) in groups.items():
        times = sorted(closed_at.values())
        what = (f"{len(closed_at)}/{len(socks)} cut, after {times[0]:.0f}-{times[-1]:.0f}s" if times
                else f"0/{len(socks)} cut in {elapsed:.0f}s")
        problems = []
        if limit is not None:
            if len(closed_at) < len(socks):
                problems.append(f"SERVER BUG: {len(socks) - len(closed_at)} still open after {elapsed:.0f}s, although the server's "
                                f"limit is {limit:.0f}s: stalled connections are never cut")
            late = [t for t in times if t > limit + SLACK]
            if late:
                problems.append(f"{len(late)} cut late ({max(late):.0f}s > {limit:.0f}s + {SLACK:.0f}s)")
        name += "" if limit is not None else " (reported only)"
        results.append((f"slowloris: {name}", problems))
        print(f"{'FAIL' if problems else 'PASS'} slowloris: {name}: {what}" + "".join(f"\n      {p}" for p in problems))
        for s in socks:
            try:
                s.close()
            except OSError:
                pass
    problems = [f"{len(probe_failures)} of {probes} probes failed: " + "; ".join(probe_failures[:5])] if probe_failures else []
    results.append(("slowloris: the server keeps serving others", problems))
    print(f"{'FAIL' if problems else 'PASS'} slowloris: the server kept serving others: {probes - len(probe_failures)}/{probes} probes answered"
          + "".join(f"\n      {p}" for p in problems))
    return results


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["corpus", "slowloris"])
    parser.add_argument("kubeconfig")
    parser.add_argument("--log", help="the demo's log, checked for panics (corpus)")
    parser.add_argument("--seconds", type=float, default=HEADER_READ_TIMEOUT + 2 * SLACK, help="slowloris duration at most")
    args = parser.parse_args()
    target = Target(args.kubeconfig)
    if not target.ready():
        print(f"FAIL setup: the server at {target.host}:{target.port} does not answer /readyz")
        print(f"{args.mode}: 0 passed, 1 failed")
        sys.exit(1)
    if args.mode == "corpus":
        results = corpus(target)
        if args.log:
            with open(args.log, errors="replace") as f:
                panics = [line.rstrip() for line in f if "panicked" in line]
            results.append(("no panic in the demo's log", [f"{len(panics)} panics: {panics[:3]}"] if panics else []))
            print(f"{'FAIL' if panics else 'PASS'} no panic in the demo's log" + "".join(f"\n      {p}" for p in panics[:5]))
        ok = target.ready()
        results.append(("/readyz answers at the end", [] if ok else ["not ready"]))
        print(f"{'PASS' if ok else 'FAIL'} /readyz answers at the end")
        label = "malformed-http"
    else:
        results = slowloris(target, args.seconds)
        label = "slowloris"
    failed = sum(1 for _, problems in results if problems)
    print(f"{label}: {len(results) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
