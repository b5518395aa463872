#!/usr/bin/env python3
"""Hostile clients against the API service, at the scale of issue 12, with the figures each must
reach. Standard library only.

Usage: conformance/attacks.py [path-to-klio-api] [--only NAME,...] [--recovery-seconds 60]

Sets up, in a temporary directory: the demo PKI (from `klio-api demo`), a catalog of 10 000
backups served by `klio-api catalog serve`, a kube-apiserver double (TokenReview, with a delay
when asked; SubjectAccessReview: `rita` may list, watch and get one backup by name, `lister`
anything, anonymous nothing), and `klio-api server api-server` delegating to it. Then, one after
the other:

  methods      3 000 requests with distinct invented HTTP methods (200 characters each)
  rbac         repeated fieldSelector and watch parameters from a user RBAC restricts to one name
  anonymous    8 000 anonymous GETs of distinct 60 KB paths
  tokens       600 concurrent requests with distinct bearer tokens, TokenReviews taking 2 s
  unread-lists 500 clients that request the 10 000-backup list and never read it
  idle-tls     5 000 TLS connections that send no request
  no-tls       4 600 TCP connections that never start TLS
  unread-watch 200 watches with timeoutSeconds=5 whose clients never read
  h2-rapid-reset   20 000 HTTP/2 streams opened and reset at once (kept from the first audit)
  h2-continuation  50 connections sending a header block that never ends

During each, `kubectl get` (the demo's admin, through the real kubectl) runs every second and must
succeed. Measured: the API service's RSS (idle, peak during the attack, and after: polled every
second until back within 20 % of idle, for at most --recovery-seconds), /metrics size, RBAC
bypasses, TokenReviews at once, threads, connections left, access-log bytes. Idle is the RSS right
before each attack (the bounded caches an attack fills stay filled; the first and last RSS are
printed too). Targets: peak at most 64 MB above idle, back within 20 % of idle, /metrics under
1 MB, 0 bypasses, the cap and the timeout applied, every kubectl request served. Prints a table; exits non-zero when a target is
missed (ATTACKS_REPORT_ONLY=1: report only).
"""

import argparse
import base64
import concurrent.futures
import http.server
import json
import os
import random
import resource
import select
import shutil
import signal
import socket
import ssl
import string
import subprocess
import sys
import tempfile
import threading
import time

GROUP = "kliocatalog.enterprisedb.io"
COLLECTION = f"/apis/{GROUP}/v1alpha1/kliobackups"
BACKUPS = 10_000
MB = 1_000_000
PEAK_BUDGET = 64 * MB
RECOVERY_RATIO = 0.20
SERVICE_TOKEN = "attack-service-token"
TOKENS = {"rita-token": "rita", "lister-token": "lister"}
EXAMPLE = "cluster-example.backup-20251113093137"


def log(msg):
    print(msg, flush=True)


# ---------------------------------------------------------------------------------------------
# The process under test


def rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def threads(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return 0


def sockets(pid):
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                n += 1
        except OSError:
            pass
    return n


def established_by_server(port, client_ports):
    """How many of these client connections the server (listening on `port`) still holds open:
    its side of the connection, in /proc/net/tcp, is ESTABLISHED (a closed one moves to FIN_WAIT
    and then goes)."""
    held = 0
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            local, remote, state = fields[1], fields[2], fields[3]
            if int(local.split(":")[1], 16) == port and int(remote.split(":")[1], 16) in client_ports and state == "01":
                held += 1
    return held


class Monitor:
    """Samples the RSS (and threads) of a process every 50 ms while running."""

    def __init__(self, pid):
        self.pid, self.peak, self.peak_threads, self.stop = pid, 0, 0, threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop.is_set():
            try:
                self.peak = max(self.peak, rss(self.pid))
                self.peak_threads = max(self.peak_threads, threads(self.pid))
            except OSError:
                return
            time.sleep(0.05)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


# ---------------------------------------------------------------------------------------------
# A minimal HTTP/1.1 client over TLS


class Target:
    def __init__(self, port, ca):
        self.port = port
        self.ctx = ssl.create_default_context(cafile=ca)
        self.ctx.set_alpn_protocols(["http/1.1"])

    def connect(self, rcvbuf=None, timeout=30):
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        raw.settimeout(timeout)
        raw.connect(("127.0.0.1", self.port))
        return self.ctx.wrap_socket(raw, server_hostname="127.0.0.1")


def send(sock, method, path, headers=()):
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\n"
    for k, v in headers:
        head += f"{k}: {v}\r\n"
    sock.sendall((head + "\r\n").encode())


def read_response(f):
    """Reads one response from a file object: (status, headers, body)."""
    line = f.readline()
    if not line:
        raise ConnectionError("closed without an answer")
    status = int(line.split()[1])
    headers = {}
    while True:
        line = f.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        k, _, v = line.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    body = b""
    if "content-length" in headers:
        body = f.read(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        parts = []
        while True:
            size = int(f.readline().split(b";")[0], 16)
            chunk = f.read(size + 2)
            if size == 0:
                break
            parts.append(chunk[:-2])
        body = b"".join(parts)
    return status, headers, body


def request(target, method, path, headers=(), timeout=30):
    sock = target.connect(timeout=timeout)
    try:
        send(sock, method, path, list(headers) + [("Connection", "close")])
        with sock.makefile("rb") as f:
            return read_response(f)
    finally:
        sock.close()


# ---------------------------------------------------------------------------------------------
# The kube-apiserver double


class KubeDouble:
    def __init__(self, pki):
        self.token_delay = 0.0
        self.lock = threading.Lock()
        self.reviews = self.reviews_in_flight = self.max_reviews_in_flight = self.sars = 0
        double = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def answer(self, code, obj):
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self.answer(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.headers.get("Authorization") != f"Bearer {SERVICE_TOKEN}":
                    return self.answer(401, {"kind": "Status", "code": 401})
                if self.path.endswith("/tokenreviews"):
                    with double.lock:
                        double.reviews += 1
                        double.reviews_in_flight += 1
                        double.max_reviews_in_flight = max(double.max_reviews_in_flight, double.reviews_in_flight)
                    time.sleep(double.token_delay)
                    with double.lock:
                        double.reviews_in_flight -= 1
                    user = TOKENS.get(body["spec"]["token"])
                    body["status"] = ({"authenticated": True, "user": {"username": user, "groups": ["system:authenticated"]}}
                                      if user else {"authenticated": False, "error": "invalid bearer token"})
                    return self.answer(201, body)
                if self.path.endswith("/subjectaccessreviews"):
                    with double.lock:
                        double.sars += 1
                    spec = body["spec"]
                    attrs = spec.get("resourceAttributes") or {}
                    user = spec.get("user")
                    allowed = user == "lister" or (
                        user == "rita" and attrs.get("name") == EXAMPLE and attrs.get("verb") in ("list", "watch", "get"))
                    body["status"] = {"allowed": allowed}
                    return self.answer(201, body)
                self.answer(404, {"kind": "Status", "code": 404})

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 128

        self.server = Server(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(os.path.join(pki, "api-server.crt"), os.path.join(pki, "api-server.key"))
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def kubeconfig(self, path, ca):
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "double",
            "clusters": [{"name": "double", "cluster": {"server": f"https://127.0.0.1:{self.port}", "certificate-authority": ca}}],
            "users": [{"name": "klio-api", "user": {"token": SERVICE_TOKEN}}],
            "contexts": [{"name": "double", "context": {"cluster": "double", "user": "klio-api"}}],
        }
        with open(path, "w") as f:
            json.dump(config, f)


# ---------------------------------------------------------------------------------------------
# Setting up


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(target, proc, limit=60):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"the API service exited with {proc.returncode}")
        try:
            if request(target, "GET", "/readyz", timeout=2)[0] == 200:
                return
        except (OSError, ConnectionError, ValueError):
            pass
        time.sleep(0.1)
    sys.exit("the API service was not ready in time")


def write_catalog(template_dir, out_dir):
    template_file = next(os.path.join(d, f) for d, _, fs in os.walk(template_dir) for f in fs if f.endswith(".json"))
    with open(template_file) as f:
        template = json.load(f)
    for i in range(BACKUPS):
        cluster = f"pg-{i % 50:02d}"
        record = dict(template, name=f"backup-{i:06d}", clusterName=cluster, startedAt=1_700_000_000 + i * 60,
                      stoppedAt=1_700_000_000 + i * 60 + 30)
        d = os.path.join(out_dir, cluster)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"backup-{i:06d}.json"), "w") as f:
            json.dump(record, f)
    # The product document's backup, for the RBAC checks.
    for d, _, fs in os.walk(template_dir):
        for f in fs:
            if f == "backup-20251113093137.json":
                os.makedirs(os.path.join(out_dir, "cluster-example"), exist_ok=True)
                shutil.copy(os.path.join(d, f), os.path.join(out_dir, "cluster-example", f))


class Stack:
    def __init__(self, binary, tmp):
        self.tmp = tmp
        # The demo writes the PKI and a sample catalog; it is stopped once its kubeconfig exists.
        demo_dir = os.path.join(tmp, "demo")
        demo = subprocess.Popen([binary, "demo", "--dir", demo_dir, "--port", "0"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not os.path.exists(os.path.join(demo_dir, "kubeconfig")):
            if time.monotonic() > deadline or demo.poll() is not None:
                sys.exit("the demo did not write its kubeconfig")
            time.sleep(0.1)
        time.sleep(0.2)
        demo.send_signal(signal.SIGTERM)
        demo.wait(10)
        pki = os.path.join(demo_dir, "pki")
        self.pki = pki
        catalog = os.path.join(tmp, "catalog")
        write_catalog(os.path.join(demo_dir, "catalog", "tier1"), catalog)
        self.procs = []
        catalog_port = free_port()
        self.spawn("catalog", [binary, "catalog", "serve", "--dir", catalog, "--listen", f"127.0.0.1:{catalog_port}",
                               "--tls-cert-file", f"{pki}/catalog-server.crt", "--tls-private-key-file",
                               f"{pki}/catalog-server.key", "--client-ca-file", f"{pki}/ca.crt"])
        self.kube = KubeDouble(pki)
        kubeconfig = os.path.join(tmp, "kube-double.kubeconfig")
        self.kube.kubeconfig(kubeconfig, f"{pki}/ca.crt")
        self.port = free_port()
        self.log_path = os.path.join(tmp, "api-server.log")
        self.api = self.spawn("api-server", [
            binary, "server", "api-server", "--bind-address", "127.0.0.1", "--secure-port", str(self.port),
            "--tls-cert-file", f"{pki}/api-server.crt", "--tls-private-key-file", f"{pki}/api-server.key",
            "--client-ca-file", f"{pki}/ca.crt", "--kubeconfig", kubeconfig, "--authentication-skip-lookup",
            "--klio-url", f"https://127.0.0.1:{catalog_port}", "--klio-server-cert", f"{pki}/ca.crt",
            "--klio-client-cert", f"{pki}/klio-client.crt", "--klio-client-key", f"{pki}/klio-client.key",
            "--catalog-refresh-seconds", "5"], log=self.log_path)
        self.target = Target(self.port, f"{pki}/ca.crt")
        self.held = []
        wait_ready(self.target, self.api)
        # kubectl as the demo's admin, at this service.
        with open(os.path.join(demo_dir, "kubeconfig")) as f:
            config = json.load(f)
        config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{self.port}"
        self.kubeconfig = os.path.join(tmp, "kubeconfig")
        with open(self.kubeconfig, "w") as f:
            json.dump(config, f)
        user = config["users"][0]["user"]
        for name, key in (("admin.crt", "client-certificate-data"), ("admin.key", "client-key-data")):
            with open(os.path.join(tmp, name), "wb") as f:
                f.write(base64.b64decode(user[key]))
        self.admin_ctx = ssl.create_default_context(cafile=f"{pki}/ca.crt")
        self.admin_ctx.load_cert_chain(os.path.join(tmp, "admin.crt"), os.path.join(tmp, "admin.key"))

    def spawn(self, name, argv, log=None):
        out = open(log or os.path.join(self.tmp, f"{name}.log"), "wb")
        env = dict(os.environ, KLIO_API_LOG_FORMAT="json")
        p = subprocess.Popen(argv, stdout=out, stderr=out, env=env)
        self.procs.append(p)
        return p

    def admin(self, path):
        """GET as the demo's admin (system:masters)."""
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        sock = self.admin_ctx.wrap_socket(raw, server_hostname="127.0.0.1")
        try:
            send(sock, "GET", path, [("Connection", "close")])
            with sock.makefile("rb") as f:
                return read_response(f)
        finally:
            sock.close()

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        self.kube.server.shutdown()


class Kubectl:
    """Runs `kubectl get` every second while an attack runs; counts failures."""

    def __init__(self, kubeconfig):
        self.kubeconfig, self.ok, self.failed, self.errors = kubeconfig, 0, 0, []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        commands = [["get", "kliobackup", EXAMPLE, "-o", "name"],
                    ["get", "kliobackups", "--field-selector", f"metadata.name={EXAMPLE}"]]
        i = 0
        while not self.stop.is_set():
            args = commands[i % len(commands)]
            i += 1
            try:
                r = subprocess.run(["kubectl", "--kubeconfig", self.kubeconfig, "--request-timeout=30s", *args],
                                   capture_output=True, text=True, timeout=40)
                if r.returncode == 0 and EXAMPLE in r.stdout:
                    self.ok += 1
                else:
                    self.failed += 1
                    self.errors.append((r.stderr or r.stdout).strip()[:200])
            except subprocess.TimeoutExpired:
                self.failed += 1
                self.errors.append("kubectl timed out")
            self.stop.wait(1.0)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


# ---------------------------------------------------------------------------------------------
# The attacks


def pool_run(n_workers, items, fn):
    with concurrent.futures.ThreadPoolExecutor(n_workers) as ex:
        return list(ex.map(fn, items))


def keepalive_flood(target, requests, workers, headers=()):
    """Sends (method, path) pairs over `workers` keep-alive connections; returns the statuses."""
    chunks = [requests[i::workers] for i in range(workers)]

    def run(chunk):
        statuses = []
        sock = f = None
        for method, path in chunk:
            for _ in range(2):
                try:
                    if sock is None:
                        sock = target.connect()
                        f = sock.makefile("rb")
                    send(sock, method, path, headers)
                    status, h, _ = read_response(f)
                    statuses.append(status)
                    if h.get("connection", "").lower() == "close":
                        sock.close()
                        sock = None
                    break
                except (OSError, ConnectionError, ValueError):
                    if sock:
                        sock.close()
                    sock = None
            else:
                statuses.append(0)
        if sock:
            sock.close()
        return statuses

    return [s for part in pool_run(workers, chunks, run) for s in part]


def attack_methods(stack, fig):
    rnd = random.Random(12)
    methods = ["X" + "".join(rnd.choices(string.ascii_uppercase, k=199)) for _ in range(3000)]
    statuses = keepalive_flood(stack.target, [(m, "/apis" if i % 2 else COLLECTION) for i, m in enumerate(methods)], 8)
    metrics = stack.admin("/metrics")[2]
    fig["requests"] = len(statuses)
    fig["answers"] = summarize(statuses)
    fig["/metrics bytes"] = len(metrics)
    leaked = sum(1 for m in methods[:200] if m.encode() in metrics)
    fig["method names in /metrics"] = leaked
    fig.check(len(metrics) < MB, "/metrics under 1 MB")
    fig.check(leaked == 0, "no method name in /metrics")


def attack_rbac(stack, fig):
    auth = [("Authorization", "Bearer rita-token")]
    x = f"metadata.name%3D{EXAMPLE}"
    other = "pg-00.backup-000000"
    selectors = ["", f"fieldSelector={x}", f"fieldSelector={x}&fieldSelector=", f"fieldSelector=&fieldSelector={x}",
                 f"fieldSelector={x}&fieldSelector=metadata.name%3D{other}", f"field%53elector={x}&fieldSelector=",
                 f"fieldSelector={x};fieldSelector=", f"fieldSelector={x}%2Cspec.clusterName%3Dcluster-example"]
    watches = ["", "watch=1&", "watch=1&watch=0&", "watch=0&watch=1&", "watch=&", "watch=true&watch=false&"]
    queries = [f"{w}{s}&timeoutSeconds=2" for s in selectors for w in watches]

    def one(q):
        status, _, body = request(stack.target, "GET", f"{COLLECTION}?{q}", auth, timeout=60)
        first = next((p[len("watch="):] for p in q.split("&") if p.startswith("watch=")), None)
        is_watch = first is not None and first not in ("0",) and first.lower() != "false"
        if status != 200:
            return status, None
        text = body.decode()
        try:
            doc = json.loads(text)
        except json.JSONDecodeError:
            doc = None
        if isinstance(doc, dict) and doc.get("kind") == "KlioBackupList":
            names, served_watch = [i["metadata"]["name"] for i in doc["items"]], False
        else:
            events = [json.loads(line) for line in text.splitlines() if line.strip()]
            names, served_watch = [e["object"]["metadata"]["name"] for e in events if e["type"] == "ADDED"], True
        bypass = served_watch != is_watch or any(n != EXAMPLE for n in names)
        return status, bypass

    results = pool_run(16, queries, one)
    fig["requests"] = len(results)
    fig["allowed"] = sum(1 for s, _ in results if s == 200)
    fig["denied"] = sum(1 for s, _ in results if s == 403)
    bypasses = sum(1 for _, b in results if b)
    fig["RBAC bypasses"] = bypasses
    fig.check(bypasses == 0, "0 RBAC bypasses")
    fig.check(fig["allowed"] > 0 and fig["denied"] > 0, "both allowed and denied forms exercised")


def attack_anonymous(stack, fig):
    rnd = random.Random(3)
    log_before = os.path.getsize(stack.log_path)
    # Distinct paths of 60 KB (a random prefix, then filler).
    filler = "".join(rnd.choices(string.ascii_lowercase, k=60_000))
    paths = [("GET", f"/anything/{rnd.getrandbits(64):016x}/{i}/{filler}") for i in range(8000)]
    statuses = keepalive_flood(stack.target, paths, 16)
    fig["requests"] = len(statuses)
    fig["answers"] = summarize(statuses)
    grown = os.path.getsize(stack.log_path) - log_before
    fig["access log bytes"] = grown
    fig.check(grown < 8000 * 1024, "access log under 1 KB a request")


def attack_tokens(stack, fig):
    stack.kube.token_delay = 2.0
    before = stack.kube.reviews
    try:
        def one(i):
            try:
                return request(stack.target, "GET", COLLECTION, [("Authorization", f"Bearer made-up-{i:04d}")], timeout=60)[0]
            except (OSError, ConnectionError, ValueError):
                return 0
        statuses = pool_run(600, range(600), one)
    finally:
        stack.kube.token_delay = 0.0
    fig["requests"] = len(statuses)
    fig["answers"] = summarize(statuses)
    fig["TokenReviews"] = stack.kube.reviews - before
    fig["TokenReviews at once"] = stack.kube.max_reviews_in_flight
    fig.check(stack.kube.max_reviews_in_flight <= 32, "at most 32 TokenReviews at once")
    fig.check(all(s in (401, 429) for s in statuses), "401 or 429 (with Retry-After) for every request")


def hold_unread(stack, n, path, headers, seconds, done_when_closed=False, sample=None):
    """Opens n connections that send `path` and never read; returns (connections accepted,
    seconds until the server closed them all or None)."""
    socks = []

    def open_one(_):
        try:
            s = stack.target.connect(rcvbuf=4096)
            send(s, "GET", path, headers)
            return s
        except (OSError, ssl.SSLError):
            return None

    socks = [s for s in pool_run(50, range(n), open_one) if s]
    ports = {s.getsockname()[1] for s in socks}
    opened = time.monotonic()
    if sample is not None and socks:
        # What the server answered, from a few of them (reading a little does not unblock it).
        sample["answers (sample)"] = summarize(first_status(s) for s in socks[:: max(1, len(socks) // 5)])
    closed_after = None
    while time.monotonic() - opened < seconds:
        if established_by_server(stack.port, ports) == 0:
            closed_after = time.monotonic() - opened
            if done_when_closed:
                break
        time.sleep(0.25)
    if seconds:
        close_all(socks)
    else:
        stack.held = socks
    return len(socks), closed_after


def close_all(socks):
    for s in socks:
        try:
            s.close()
        except OSError:
            pass


def in_flight(stack, kind="readOnly"):
    """apiserver_current_inflight_requests{request_kind=kind} (readOnly: less the /metrics
    request itself)."""
    for line in stack.admin("/metrics")[2].decode().splitlines():
        if line.startswith(f'apiserver_current_inflight_requests{{request_kind="{kind}"}}'):
            return int(float(line.split()[-1])) - (kind == "readOnly")
    return 0


def attack_unread_lists(stack, fig):
    peak = [0]
    stop = threading.Event()

    def watch_gauge():
        while not stop.is_set():
            peak[0] = max(peak[0], in_flight(stack))
            stop.wait(0.5)

    t = threading.Thread(target=watch_gauge, daemon=True)
    t.start()
    # Held past the 15 s write-stall timeout; the clients answered 429 stay connected (idle).
    opened, _ = hold_unread(stack, 500, COLLECTION, [("Authorization", "Bearer lister-token")], 0)
    started = time.monotonic()  # every client has sent its request
    left_at = None
    while time.monotonic() - started < 30:
        if in_flight(stack) <= 0:
            left_at = time.monotonic() - started
            break
        time.sleep(0.5)
    stop.set()
    t.join()
    close_all(stack.held)
    stack.held = []
    fig["connections"] = opened
    fig["lists in flight, most"] = peak[0]
    fig["none left, s after the last request"] = "never" if left_at is None else round(left_at, 1)
    # (kubectl's own requests, exempt from the cap as system:masters, count in the gauge too)
    fig.check(peak[0] <= 400 + 2, "the in-flight cap (400) holds")
    fig.check(left_at is not None and left_at < 15 + 5, "stalled lists dropped at the write-stall timeout (15 s)")


def first_status(sock):
    """The status of the answer on a connection that has not read it yet (best effort)."""
    try:
        sock.settimeout(5)
        line = sock.recv(64).split(b"\r\n")[0].split()
        return int(line[1]) if len(line) > 1 else 0
    except (OSError, ValueError):
        return 0


def attack_unread_watches(stack, fig):
    path = f"{COLLECTION}?watch=1&timeoutSeconds=5"
    started = time.monotonic()
    opened, _ = hold_unread(stack, 200, path, [("Authorization", "Bearer lister-token")], 0, sample=fig)
    # The server's side: every watch ended (a client whose buffers filled is disconnected; one
    # whose buffers did not gets the end of the stream and stays an idle connection).
    most, ended_at = 0, None
    while time.monotonic() - started < 20:
        open_watches = in_flight(stack, "watch")
        most = max(most, open_watches)
        if open_watches == 0 and most > 0:
            ended_at = time.monotonic() - started
            break
        time.sleep(0.25)
    ports = {s.getsockname()[1] for s in stack.held}
    time.sleep(2)  # the connections of stalled watches are cut a second or two past their deadline
    fig["watches"] = opened
    fig["open at once, most"] = most
    fig["all ended after s"] = "never" if ended_at is None else round(ended_at, 1)
    fig["connections the server cut"] = len(ports) - established_by_server(stack.port, ports)
    close_all(stack.held)
    stack.held = []
    fig.check(ended_at is not None and ended_at < 5 + 4, "ended at timeoutSeconds (5 s), within 4 s")


def attack_idle_tls(stack, fig):
    socks = []
    lock = threading.Lock()
    failures = [0]

    def open_one(_):
        try:
            s = stack.target.connect(timeout=20)
            with lock:
                socks.append(s)
        except (OSError, ssl.SSLError):
            with lock:
                failures[0] += 1

    pool_run(32, range(5000), open_one)
    time.sleep(2)
    fig["handshakes"] = len(socks)
    fig["server connections"] = sockets(stack.api.pid) - stack.base_sockets
    for s in socks:
        try:
            s.close()
        except OSError:
            pass
    fig.check(fig["server connections"] <= 2048 + 16, "at most 2048 connections (the cap)")


def attack_no_tls(stack, fig):
    socks = []
    for _ in range(4600):
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", stack.port))
        except BlockingIOError:
            pass
        socks.append(s)
    time.sleep(3)
    fig["connections"] = len(socks)
    fig["server connections"] = sockets(stack.api.pid) - stack.base_sockets
    for s in socks:
        s.close()


class H2Connection:
    """A TLS connection speaking HTTP/2 (ALPN h2), its preface and SETTINGS sent, reading (and
    dropping) what the server writes while it sends, so neither side blocks on the other. One
    thread drives it through a memory BIO: OpenSSL's connection may not be read in one thread and
    written in another (CPython then crashes, as a drain thread once made this script do)."""

    def __init__(self, stack):
        ctx = ssl.create_default_context(cafile=f"{stack.pki}/ca.crt")
        ctx.set_alpn_protocols(["h2"])
        self.raw = socket.create_connection(("127.0.0.1", stack.port), timeout=30)
        self.raw.setblocking(False)
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.incoming, self.outgoing, server_hostname="127.0.0.1")
        deadline = time.monotonic() + 30
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._send_pending(deadline)
                self._wait_readable(deadline)
                self._receive()
        assert self.tls.selected_alpn_protocol() == "h2"
        self.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0, b""))

    def sendall(self, data):
        self.tls.write(data)
        self._send_pending(time.monotonic() + 30)

    def close(self):
        self.raw.close()

    def _send_pending(self, deadline):
        pending = self.outgoing.read()
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError("the server stopped reading")
            readable, writable, _ = select.select([self.raw], [self.raw] if pending else [], [], 1)
            if readable:
                self._receive()
            if writable:
                try:
                    pending = pending[self.raw.send(pending):]
                except BlockingIOError:
                    pass

    def _wait_readable(self, deadline):
        if not select.select([self.raw], [], [], max(0, deadline - time.monotonic()))[0]:
            raise TimeoutError("no answer from the server")

    def _receive(self):
        """What the socket holds, decrypted and dropped; a connection the server ended raises."""
        try:
            data = self.raw.recv(65536)
        except BlockingIOError:
            return
        if not data:
            raise ConnectionResetError("the server closed the connection")
        self.incoming.write(data)
        try:
            while self.tls.read(65536):
                pass
        except ssl.SSLWantReadError:
            pass


def h2_connection(stack):
    return H2Connection(stack)


def frame(kind, flags, stream, payload):
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


# HPACK: :method GET, :scheme https, :path / (static table), :authority x (literal, indexed name).
H2_GET = b"\x82\x87\x84\x01\x01x"


def attack_h2_rapid_reset(stack, fig):
    """HTTP/2 rapid reset (CVE-2023-44487): streams opened and cancelled at once, 20 000 of them."""
    sent = refused = 0
    while sent < 20_000:
        try:
            sock = h2_connection(stack)
            batch = b"".join(frame(1, 0x5, sid, H2_GET) + frame(3, 0, sid, (8).to_bytes(4, "big"))
                             for sid in range(1, 2001, 2))
            sock.sendall(batch)
            sent += 1000
            sock.close()
        except (OSError, ssl.SSLError):
            refused += 1
            sent += 1000
    fig["streams reset"] = sent
    fig["connections refused or cut"] = refused


def attack_h2_continuation(stack, fig):
    """HTTP/2 CONTINUATION flood: a header block that never ends, 50 connections x 1 000 frames."""
    cut = 0
    for _ in range(50):
        try:
            sock = h2_connection(stack)
            sock.sendall(frame(1, 0x1, 1, H2_GET))  # END_STREAM, no END_HEADERS
            junk = b"\x40\x05x-pad" + b"\x7f\x81\x7f" + b"a" * 16_000  # a literal header, 16 000 bytes
            for _ in range(1000):
                sock.sendall(frame(9, 0, 1, junk))
            sock.close()
        except (OSError, ssl.SSLError):
            cut += 1
    fig["connections"] = 50
    fig["cut by the server"] = cut
    fig.check(cut == 50, "every flooding connection is cut")


ATTACKS = [
    ("methods", attack_methods),
    ("rbac", attack_rbac),
    ("anonymous", attack_anonymous),
    ("tokens", attack_tokens),
    ("unread-lists", attack_unread_lists),
    ("idle-tls", attack_idle_tls),
    ("no-tls", attack_no_tls),
    ("unread-watch", attack_unread_watches),
    ("h2-rapid-reset", attack_h2_rapid_reset),
    ("h2-continuation", attack_h2_continuation),
]


def summarize(statuses):
    counts = {}
    for s in statuses:
        counts[s] = counts.get(s, 0) + 1
    return " ".join(f"{k}:{v}" for k, v in sorted(counts.items()))


class Figures(dict):
    def __init__(self, name):
        super().__init__()
        self.name, self.failures = name, []

    def check(self, ok, what):
        if not ok:
            self.failures.append(what)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("binary", nargs="?", default="target/debug/klio-api")
    ap.add_argument("--only", default="")
    ap.add_argument("--recovery-seconds", type=float, default=60)
    args = ap.parse_args()
    binary = os.path.abspath(args.binary)
    if not os.access(binary, os.X_OK):
        sys.exit(f"attacks.py: {binary} is not an executable (build it: cargo build)")
    if shutil.which("kubectl") is None:
        sys.exit("attacks.py: kubectl is needed on PATH")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < 12_000:
        sys.exit(f"attacks.py: needs at least 12000 open files (ulimit -n is {hard})")
    only = set(filter(None, args.only.split(",")))
    tmp = tempfile.mkdtemp(prefix="klio-attacks-")
    started = time.monotonic()
    stack = None
    results = []
    try:
        log(f"== setting up: {BACKUPS} backups, catalog server, kube-apiserver double, {binary}")
        stack = Stack(binary, tmp)
        # Warm: the rendered whole lists (JSON and Table) are part of idle.
        for accept in ("application/json", "application/json;as=Table;v=v1;g=meta.k8s.io"):
            raw = socket.create_connection(("127.0.0.1", stack.port))
            s = stack.admin_ctx.wrap_socket(raw, server_hostname="127.0.0.1")
            s.sendall(f"GET {COLLECTION} HTTP/1.1\r\nHost: x\r\nAccept: {accept}\r\nConnection: close\r\n\r\n".encode())
            with s.makefile("rb") as f:
                assert read_response(f)[0] == 200
            s.close()
        time.sleep(3)
        stack.base_sockets = sockets(stack.api.pid)
        first_idle = rss(stack.api.pid)
        log(f"idle RSS {first_idle / MB:.1f} MB ({stack.base_sockets} sockets)")
        for name, attack in ATTACKS:
            if only and name not in only:
                continue
            fig = Figures(name)
            log(f"== {name}")
            # Idle: between attacks, each one's own reference (the caches they fill stay filled).
            idle = rss(stack.api.pid)
            fig["idle MB"] = round(idle / MB, 1)
            t0 = time.monotonic()
            with Monitor(stack.api.pid) as mon, Kubectl(stack.kubeconfig) as kubectl:
                attack(stack, fig)
            took = time.monotonic() - t0
            fig["seconds"] = round(took, 1)
            fig["peak RSS MB"] = round(mon.peak / MB, 1)
            fig["peak - idle MB"] = round((mon.peak - idle) / MB, 1)
            fig["peak threads"] = mon.peak_threads
            fig["kubectl ok/all"] = f"{kubectl.ok}/{kubectl.ok + kubectl.failed}"
            fig.check(mon.peak - idle <= PEAK_BUDGET, "peak RSS at most 64 MB above idle")
            fig.check(kubectl.failed == 0 and kubectl.ok > 0, "kubectl served during the attack")
            if kubectl.errors:
                fig["kubectl error"] = kubectl.errors[0]
            # Back within 20 % of idle?
            t1 = time.monotonic()
            after = rss(stack.api.pid)
            while after > idle * (1 + RECOVERY_RATIO) and time.monotonic() - t1 < args.recovery_seconds:
                time.sleep(1)
                after = rss(stack.api.pid)
            fig["RSS after MB"] = round(after / MB, 1)
            fig["back in s"] = round(time.monotonic() - t1, 1)
            fig.check(after <= idle * (1 + RECOVERY_RATIO), "back within 20 % of idle")
            if os.environ.get("ATTACKS_DEBUG") == "1":
                with open(f"/proc/{stack.api.pid}/smaps_rollup") as f:
                    log(f.read())
                log(f"threads {threads(stack.api.pid)}, sockets {sockets(stack.api.pid)}")
            if stack.api.poll() is not None:
                fig.check(False, "the API service is still running")
                results.append(fig)
                break
            log("   " + ", ".join(f"{k} {v}" for k, v in fig.items()))
            results.append(fig)
        metrics = stack.admin("/metrics")[2]
        # After all of them, against the first idle (waits at most --recovery-seconds).
        t1 = time.monotonic()
        last_rss = rss(stack.api.pid)
        while last_rss > first_idle * (1 + RECOVERY_RATIO) and time.monotonic() - t1 < args.recovery_seconds:
            time.sleep(1)
            last_rss = rss(stack.api.pid)
        settled_in = time.monotonic() - t1
        if os.environ.get("ATTACKS_HOLD"):
            log(f"holding the stack for {os.environ['ATTACKS_HOLD']} s: api-server pid {stack.api.pid}")
            time.sleep(float(os.environ["ATTACKS_HOLD"]))
    finally:
        if stack:
            stack.stop()
    # The table.
    log("")
    log(f"Attacks on the API service ({BACKUPS} backups; idle RSS {first_idle / MB:.1f} MB at the start, "
        f"{last_rss / MB:.1f} MB after all of them ({settled_in:.0f} s after the last); /metrics {len(metrics)} bytes at the end; "
        f"{time.monotonic() - started:.0f} s in all)")
    log(f"{'attack':<13} {'idle MB':>8} {'peak-idle MB':>12} {'after MB':>9} {'back s':>7} {'kubectl':>8}  figures")
    failed = 0
    for fig in results:
        extra = {k: v for k, v in fig.items() if k not in ("idle MB", "peak - idle MB", "RSS after MB", "back in s", "kubectl ok/all",
                                                           "peak RSS MB")}
        verdict = "ok" if not fig.failures else "MISSED: " + "; ".join(fig.failures)
        failed += bool(fig.failures)
        log(f"{fig.name:<13} {fig['idle MB']:>8} {fig['peak - idle MB']:>12} {fig['RSS after MB']:>9} {fig['back in s']:>7} "
            f"{fig['kubectl ok/all']:>8}  {', '.join(f'{k}={v}' for k, v in extra.items())}  [{verdict}]")
    # Informational: each attack is held to its own idle; across all of them the bounded caches
    # stay filled and the heap keeps some fragments.
    drift = (last_rss - first_idle) / first_idle * 100
    log(f"{'after all':<13} {first_idle / MB:>8.1f} {'':>12} {last_rss / MB:>9.1f} {settled_in:>7.1f} {'':>8}  "
        f"{drift:+.0f} % from the first idle, {settled_in:.0f} s after the last attack (informational)")
    log(f"attacks: {len(results) - failed} passed, {failed} failed")
    if os.environ.get("KEEP_TMP") != "1":
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        log(f"kept {tmp}")
    if failed and os.environ.get("ATTACKS_REPORT_ONLY") != "1":
        sys.exit(1)


if __name__ == "__main__":
    main()
