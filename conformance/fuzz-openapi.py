#!/usr/bin/env python3
"""Property-based fuzzing of klio-api with schemathesis, driven by the OpenAPI v3 document the
server publishes.

Usage: fuzz-openapi.py KUBECONFIG [--requests N] [--workers W] [--seed S] [--max-seconds T]

The document is fetched from the running server (`/openapi/v3`, then the group version's
`serverRelativeURL`) over TLS with the kubeconfig's CA and admin client certificate, and loaded
with `schemathesis.openapi.from_url`. Both operations (list/watch, get) are fuzzed in
schemathesis' positive and negative generation modes, plus positive cases pinned to real names,
selectors and continue tokens so that 200s are common too, with several Accept headers, until at
least N requests (default 10000) were sent; one worker process per operation (2 cores: the
generator is the bottleneck, not the server).

Every response is checked:
  server-errors    no 5xx but the operation's documented 502/503 (and even those are reported:
                   the demo's catalog is up), an answer within 10 s;
  status-bodies    every non-2xx answer has a metav1.Status body: kind Status, apiVersion v1,
                   status Failure, code equal to the HTTP status; JSON, or YAML (Content-Type
                   application/yaml) for a client that accepts YAML, as kube-apiserver negotiates;
  schema           schemathesis' status_code_conformance, content_type_conformance and
                   response_schema_conformance (for the document's media type, JSON);
  watch-streams    a 200 to a watch (any `watch` value but 0 and false, as kube-apiserver reads
                   it) streams JSON lines {"type":...,"object":...} (read for a moment, then
                   closed: a watch only ends at its timeout);
  request-count    at least N requests within --max-seconds;
  still-ready      /readyz answers ok afterwards.
Failures are grouped by kind with one reproducing request each. Prints `fuzz: N passed, M failed`
over those six checks; exits non-zero on any failure.
"""

import argparse
import atexit
import base64
import collections
import concurrent.futures
import json
import os
import random
import shutil
import sys
import tempfile
import time
import urllib.parse

# Hypothesis keeps a directory of its own (".hypothesis" in the working directory): not in the repo.
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", os.path.join(tempfile.gettempdir(), "klio-fuzz-hypothesis"))

JSON = "application/json"
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
# Accept headers clients send: what the document describes (JSON) most of the time, then kubectl's
# Table, `-o yaml`'s, wildcards, protobuf (not served), YAML, and nonsense.
ACCEPTS = [None] * 6 + [JSON, TABLE, "application/json, */*", "*/*", "application/vnd.kubernetes.protobuf",
                        "application/yaml", "text/html;q=0.9, x/y", ";;;", "application/json;as=Table;v=v9;g=x"]
# The ones the document's JSON schemas describe (schemathesis' checks apply).
SCHEMA_ACCEPTS = {None, JSON, "application/json, */*", "*/*"}
WATCH_READ = 0.2  # seconds a watch stream is read before it is closed
REQUEST_TIMEOUT = 10.0
WATCH_EVENT_TYPES = {"ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR"}
CHECKS = ["server-errors", "status-bodies", "schema", "watch-streams", "request-count", "still-ready"]
GROUP = "kliocatalog.enterprisedb.io"
LIST_PATH = f"/apis/{GROUP}/v1alpha1/kliobackups"
# Valid selectors (the realistic list cases pick among them; the rest of the query is generated).
FIELD_SELECTORS = ["", "spec.clusterName=pg-analytics", "metadata.name=cluster-example.backup-20251113093137",
                   "spec.backupID=backup-20251122003000", "spec.clusterName!=pg-orders", "spec.clusterName==x"]
LABEL_SELECTORS = ["", f"{GROUP}/cluster=cluster-example", f"{GROUP}/tier2", f"!{GROUP}/tier2",
                   f"{GROUP}/cluster in (pg-orders,pg-analytics)", f"{GROUP}/server=klio,{GROUP}/tier1"]


def load_kubeconfig(path, tmp):
    with open(path) as f:
        config = json.load(f)
    cluster = config["clusters"][0]["cluster"]
    user = config["users"][0]["user"]
    files = {}
    for name, data in (("ca.crt", cluster["certificate-authority-data"]), ("admin.crt", user["client-certificate-data"]),
                       ("admin.key", user["client-key-data"])):
        files[name] = os.path.join(tmp, name)
        with open(files[name], "wb") as f:
            f.write(base64.b64decode(data))
    return cluster["server"].rstrip("/"), files


def new_session(files):
    import requests

    session = requests.Session()
    session.trust_env = False  # REQUESTS_CA_BUNDLE and proxies from the environment would win over `verify`
    session.verify = files["ca.crt"]
    session.cert = (files["admin.crt"], files["admin.key"])
    session.mount("https://", requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=2, max_retries=0))
    return session


def status_problems(body, code, content_type="application/json"):
    """Why `body` is not a metav1.Status for HTTP status `code` (empty when it is), read as its
    Content-Type says: YAML for application/yaml, else JSON."""
    if content_type.split(";")[0].strip() == "application/yaml":
        import yaml  # PyYAML, which the kubernetes client installs

        try:
            status = yaml.safe_load(body)
        except yaml.YAMLError as e:
            return [f"not YAML ({str(e)[:100]})"]
    else:
        try:
            status = json.loads(body)
        except ValueError as e:
            return [f"not JSON ({e})"]
    if not isinstance(status, dict):
        return ["not an object"]
    problems = []
    for key, want in (("kind", "Status"), ("apiVersion", "v1"), ("status", "Failure"), ("code", code)):
        if status.get(key) != want:
            problems.append(f"{key}={status.get(key)!r} (want {want!r})")
    if not isinstance(status.get("message", ""), str) or not isinstance(status.get("reason", ""), str):
        problems.append("message/reason not strings")
    return problems


def is_watch(query):
    """Whether the server streams a watch: as kube-apiserver reads `watch` (apimachinery's
    boolean), its first value is anything but 0 or false."""
    if "watch" not in (query or {}):
        return False
    value = query["watch"]
    if isinstance(value, (list, tuple)):
        if not value:
            return False
        value = value[0]
    if isinstance(value, bool):
        return value
    return str(value).lower() not in ("0", "false")


def describe_request(method, url, params, headers):
    query = urllib.parse.urlencode(params or {}, doseq=True)
    line = f"{method} {url}{'?' + query if query else ''}"
    if headers:
        line += " " + " ".join(f"[{k}: {v}]" for k, v in headers.items())
    return line


def worker(base, files, doc_url, op_path, target, seed, max_seconds):
    """Fuzzes one operation; returns (counts, {(check, kind): [count, example]})."""
    import hypothesis
    import requests
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st
    from schemathesis.core.failures import FailureGroup
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    session = new_session(files)
    schema = schemathesis.openapi.from_url(doc_url, verify=files["ca.crt"], cert=(files["admin.crt"], files["admin.key"]),
                                           timeout=REQUEST_TIMEOUT)
    op = next(r.ok() for r in schema.get_all_operations() if r.ok().path == op_path)
    documented = {str(code) for code in op.definition.raw.get("responses", {})}
    label = f"{op.method.upper()} {op.path}"
    counts = collections.Counter()
    failures = {}
    started = time.monotonic()

    def fail(check, kind, example):
        entry = failures.setdefault((check, f"{label}: {kind}"), [0, example])
        entry[0] += 1

    # Real names and a real continue token, for the pinned positive cases.
    listed = session.get(base + LIST_PATH, timeout=REQUEST_TIMEOUT).json()
    names = [item["metadata"]["name"] for item in listed["items"]]
    page = session.get(base + LIST_PATH, params={"limit": "2"}, timeout=REQUEST_TIMEOUT).json()
    token = page["metadata"].get("continue", "")
    P, N = schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE
    if op.path == LIST_PATH:
        pinned = [op.as_strategy(P, query={"fieldSelector": f, "labelSelector": l})
                  for f in FIELD_SELECTORS for l in LABEL_SELECTORS[:3]]
        pinned += [op.as_strategy(P, query={"labelSelector": l}) for l in LABEL_SELECTORS]
        pinned += [op.as_strategy(P, query={"continue": token, "limit": n}) for n in (0, 1, 2, 100)]
    else:
        pinned = [op.as_strategy(P, path_parameters={"name": n}) for n in names]
    strategies = [("positive", op.as_strategy(P)), ("negative", op.as_strategy(N)), ("pinned", st.one_of(pinned))]

    def check_response(case, accept, where, resp, body):
        code = resp.status_code
        counts[f"{label} {code}"] += 1
        example = f"{where}\n      -> {code} {resp.headers.get('Content-Type', '')} {body[:300]!r}"
        if code >= 500:
            if str(code) not in documented:
                fail("server-errors", f"undocumented server error {code}", example)
            else:
                fail("server-errors", f"documented {code}, but the catalog is up", example)
        if code >= 300:
            problems = status_problems(body, code, resp.headers.get("Content-Type", ""))
            if problems:
                fail("status-bodies", f"{code} body is not a valid Status: {'; '.join(problems)}", example)
        if accept in SCHEMA_ACCEPTS and not (code == 200 and is_watch(case.query)):
            try:
                case.validate_response(resp, checks=[status_code_conformance, content_type_conformance,
                                                     response_schema_conformance])
            except FailureGroup as group:
                for failure in group.exceptions:
                    title = getattr(failure, "title", type(failure).__name__)
                    msg = (getattr(failure, "message", "") or str(failure)).strip().splitlines()
                    fail("schema", f"schemathesis: {title}: {msg[0] if msg else ''}"[:300], example)
            except Exception as e:  # a check that could not run is reported, not fatal to the run
                fail("schema", f"schemathesis could not check: {type(e).__name__}: {str(e)[:200]}", example)

    def check_watch(where, resp):
        counts["watch streams"] += 1
        ctype = resp.headers.get("Content-Type", "")
        if not ctype.startswith("application/json"):
            fail("watch-streams", f"watch stream with Content-Type {ctype!r}", where)
        data = b""
        deadline = time.monotonic() + WATCH_READ
        try:
            for chunk in resp.iter_content(chunk_size=None):
                data += chunk
                if b"\n" in data or time.monotonic() > deadline:
                    break
        except requests.RequestException:
            pass  # an idle stream: the read timed out
        for line in data.split(b"\n")[:-1]:  # whole lines only
            try:
                event = json.loads(line)
                ok = isinstance(event, dict) and event.get("type") in WATCH_EVENT_TYPES and isinstance(event.get("object"), dict)
                if ok and event["type"] == "ERROR":
                    ok = not status_problems(json.dumps(event["object"]).encode(), event["object"].get("code"))
                elif ok:
                    ok = event["object"].get("kind") in ("KlioBackup", "Table")
            except ValueError:
                ok = False
            if not ok:
                fail("watch-streams", "malformed watch event", f"{where}\n      -> {line[:300]!r}")

    def send(case, accept):
        kwargs = case.as_transport_kwargs(base_url=base)
        method, url = kwargs.pop("method"), kwargs.pop("url")
        params = kwargs.pop("params", None) or {}
        headers = dict(kwargs.pop("headers", None) or {})
        headers.pop("User-Agent", None)
        if accept is not None:
            headers["Accept"] = accept
        where = describe_request(method, url, params, headers)
        counts["requests"] += 1
        try:
            if is_watch(params):
                with session.request(method, url, params=params, headers=headers, cookies=kwargs.get("cookies"),
                                     timeout=(REQUEST_TIMEOUT, WATCH_READ), stream=True) as resp:
                    if resp.status_code == 200:
                        check_watch(where, resp)
                        return  # closing mid-stream drops the connection; the pool opens another
                    resp.content  # an error answer: read it whole
            else:
                resp = session.request(method, url, params=params, headers=headers, cookies=kwargs.get("cookies"),
                                       timeout=REQUEST_TIMEOUT)
        except requests.RequestException as e:
            fail("server-errors", f"no answer: {type(e).__name__}", f"{where}\n      -> {e}")
            session.close()
            return
        check_response(case, accept, where, resp, resp.content)

    rng = random.Random(f"{seed}/{op_path}")
    # Rounds over the three strategies until `target` requests were sent (hypothesis may give
    # fewer examples than asked on a small search space) or the time is up.
    per_round = max(50, -(-target // (2 * len(strategies))))
    while counts["requests"] < target and time.monotonic() - started < max_seconds:
        for name, strategy in strategies:
            left = target - counts["requests"]
            if left <= 0 or time.monotonic() - started >= max_seconds:
                break

            @settings(max_examples=min(per_round, left), deadline=None, database=None, phases=[Phase.generate],
                      suppress_health_check=list(HealthCheck), print_blob=False)
            @hypothesis.seed(rng.randrange(2**32))
            @given(st.tuples(strategy, st.sampled_from(ACCEPTS)))
            def fuzz(pair):
                if time.monotonic() - started < max_seconds:
                    counts[f"{label} [{name}]"] += 1
                    send(*pair)

            fuzz()
    counts["seconds"] = round(time.monotonic() - started)
    return dict(counts), {f"{check}\t{kind}": v for (check, kind), v in failures.items()}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("kubeconfig")
    parser.add_argument("--requests", type=int, default=10000, help="at least this many requests in total")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (one operation each at most)")
    parser.add_argument("--seed", type=int, default=int(os.environ.get("FUZZ_SEED", "20261125")))
    parser.add_argument("--max-seconds", type=float, default=150.0, help="stop generating after this long")
    args = parser.parse_args()

    import hypothesis
    import requests
    import schemathesis

    tmp = tempfile.mkdtemp(prefix="klio-fuzz-")
    atexit.register(shutil.rmtree, tmp, True)
    base, files = load_kubeconfig(args.kubeconfig, tmp)
    session = new_session(files)
    index = session.get(f"{base}/openapi/v3", timeout=REQUEST_TIMEOUT)
    index.raise_for_status()
    relative = index.json()["paths"][f"apis/{GROUP}/v1alpha1"]["serverRelativeURL"]
    doc_url = base + relative
    schema = schemathesis.openapi.from_url(doc_url, verify=files["ca.crt"], cert=(files["admin.crt"], files["admin.key"]),
                                           timeout=REQUEST_TIMEOUT)
    paths = [r.ok().path for r in schema.get_all_operations()]
    print(f"fuzz: {doc_url}")
    print(f"fuzz: schemathesis {schemathesis.__version__}, hypothesis {hypothesis.__version__}, seed {args.seed}, "
          f"{len(paths)} operations, {args.workers} workers")

    started = time.monotonic()
    share = -(-args.requests // len(paths))
    jobs = [(base, files, doc_url, path, share, args.seed, args.max_seconds) for path in paths]
    counts, failures = collections.Counter(), {}
    if args.workers > 1:
        with concurrent.futures.ProcessPoolExecutor(max_workers=min(args.workers, len(jobs))) as pool:
            results = list(pool.map(worker, *zip(*jobs)))
    else:
        results = [worker(*job) for job in jobs]
    for c, f in results:
        counts.update({k: v for k, v in c.items() if k != "seconds"})
        for key, (n, example) in f.items():
            failures.setdefault(key, [0, example])[0] += n
    elapsed = time.monotonic() - started
    print(f"fuzz: {counts['requests']} requests in {elapsed:.1f}s ({counts['requests'] / max(elapsed, 0.001):.0f}/s), "
          f"{counts['watch streams']} watch streams opened")
    for key in sorted(k for k in counts if k not in ("requests", "watch streams")):
        print(f"fuzz:   {counts[key]:6d}  {key}")

    def fail(check, kind, example):
        failures.setdefault(f"{check}\t{kind}", [0, example])[0] += 1

    if counts["requests"] < args.requests:
        fail("request-count", f"only {counts['requests']} of {args.requests} requests within {args.max_seconds:.0f}s", "")
    try:
        ready = session.get(f"{base}/readyz", timeout=REQUEST_TIMEOUT)
        if ready.status_code != 200 or ready.text.strip() != "ok":
            fail("still-ready", "not ready after fuzzing", f"/readyz -> {ready.status_code} {ready.text!r}")
    except requests.RequestException as e:
        fail("still-ready", "not ready after fuzzing", f"/readyz -> {e}")

    failed_checks = set()
    for key, (n, example) in failures.items():
        check, kind = key.split("\t", 1)
        failed_checks.add(check)
        print(f"FAIL [{check}] {kind} ({n}x)\n      {example}")
    for check in CHECKS:
        print(f"{'FAIL' if check in failed_checks else 'PASS'} {check}")
    print(f"fuzz: {len(CHECKS) - len(failed_checks)} passed, {len(failed_checks)} failed")
    sys.exit(1 if failed_checks else 0)


if __name__ == "__main__":
    main()
