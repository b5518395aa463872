#!/usr/bin/env python3
"""The official Python Kubernetes client (PyPI `kubernetes`) against a running klio-api demo.

Usage: python-client.py KUBECONFIG   (run by conformance/python-client.sh inside its venv)

Checks `kubernetes.dynamic.DynamicClient` discovery, list, get, selectors, paging, watch, the
errors it raises (NotFoundError for an unknown name, 405 for a delete), and the typed
CustomObjectsApi. Read-only: the demo's sample catalog must be unchanged. Prints one line per
check and `N passed, M failed`; exits non-zero on any failure.
"""

import json
import os
import sys
import tempfile
import time
import traceback

from kubernetes import client, config, dynamic, watch
from kubernetes.dynamic.exceptions import DynamicApiError, NotFoundError, ResourceNotFoundError

GROUP = "kliocatalog.enterprisedb.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
EXAMPLE = "cluster-example.backup-20251113093137"
DEMO_NAMES = [
    "cluster-example.backup-20251101020000",
    "cluster-example.backup-20251113093137",
    "cluster-example.backup-20251114093000",
    "pg-analytics.backup-20251120010000",
    "pg-analytics.backup-20251121010000",
    "pg-orders.backup-20251122003000",
]
TIMEOUT = 20  # seconds, for every request

CHECKS = []


def check(fn):
    CHECKS.append(fn)
    return fn


def eq(actual, expected, what=""):
    if actual != expected:
        raise AssertionError(f"{what}: expected {expected!r}, got {actual!r}" if what else f"expected {expected!r}, got {actual!r}")


def names(result):
    return [item.metadata.name for item in result.items]


def assert_status(body, code, reason):
    """A JSON error body must be a metav1.Status for `code`/`reason`."""
    status = json.loads(body)
    eq(status.get("kind"), "Status", "kind")
    eq(status.get("apiVersion"), "v1", "apiVersion")
    eq(status.get("status"), "Failure", "status")
    eq(status.get("code"), code, "code")
    eq(status.get("reason"), reason, "reason")
    return status


def raises(exc_type, fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except exc_type as e:
        return e
    raise AssertionError(f"expected {exc_type.__name__}, nothing was raised")


class Ctx:
    def __init__(self, kubeconfig):
        config.load_kube_config(config_file=kubeconfig)
        self.api_client = client.ApiClient()
        # A discovery cache of our own (the default lives in the shared temp directory).
        self.cache = tempfile.NamedTemporaryFile(prefix="klio-dynamic-discovery-", suffix=".json", delete=False).name
        os.unlink(self.cache)
        self.dyn = dynamic.DynamicClient(self.api_client, cache_file=self.cache)
        self.kb = None


@check
def discovery_resolves_kliobackup(c):
    kb = c.dyn.resources.get(api_version=API_VERSION, kind="KlioBackup")
    c.kb = kb
    eq(kb.name, "kliobackups", "plural")
    eq(kb.kind, "KlioBackup", "kind")
    eq(kb.group, GROUP, "group")
    eq(kb.namespaced, False, "namespaced")
    eq(sorted(kb.verbs), ["get", "list", "watch"], "verbs")
    eq(list(kb.short_names), ["kb"], "shortNames")
    eq(c.dyn.resources.get(api_version=API_VERSION, short_names=["kb"]).name, "kliobackups", "by short name")
    eq(c.dyn.resources.get(api_version=API_VERSION, name="kliobackups").kind, "KlioBackup", "by plural")


@check
def discovery_search_across_groups(c):
    # DynamicClient's search loads every group, the core group (/api/v1) first: the demo answers
    # it as kube-apiserver would for an empty core group.
    eq([r.kind for r in c.dyn.resources.search(kind="KlioBackup")], ["KlioBackup"], "search by kind")
    raises(ResourceNotFoundError, c.dyn.resources.get, api_version="v1", kind="Namespace")


@check
def list_all(c):
    result = c.kb.get(_request_timeout=TIMEOUT)
    eq(result.kind, "KlioBackupList", "kind")
    eq(result.apiVersion, API_VERSION, "apiVersion")
    eq(names(result), DEMO_NAMES, "names")
    if not result.metadata.resourceVersion:
        raise AssertionError(f"list without metadata.resourceVersion: {result.metadata}")
    for item in result.items:
        cluster, backup_id = item.metadata.name.split(".", 1)
        eq(item.kind, "KlioBackup", f"{item.metadata.name} kind")
        eq(item.spec.clusterName, cluster, f"{item.metadata.name} spec.clusterName")
        eq(item.spec.backupID, backup_id, f"{item.metadata.name} spec.backupID")
        eq(item.metadata.labels[f"{GROUP}/cluster"], cluster, f"{item.metadata.name} cluster label")
        eq(item.metadata.namespace, None, f"{item.metadata.name} namespace")


@check
def get_by_name(c):
    obj = c.kb.get(name=EXAMPLE, _request_timeout=TIMEOUT)
    eq(obj.kind, "KlioBackup", "kind")
    eq(obj.apiVersion, API_VERSION, "apiVersion")
    eq(obj.metadata.name, EXAMPLE, "name")
    eq(obj.spec.clusterName, "cluster-example", "spec.clusterName")
    eq(obj.spec.backupID, "backup-20251113093137", "spec.backupID")
    eq(obj.status.startWAL, "000000010000000000000007", "status.startWAL")
    eq(obj.status.startLSN, 117440552, "status.startLSN")
    eq(obj.status.startedAt, "2025-11-13T09:31:37Z", "status.startedAt")
    eq(obj.status.stoppedAt, "2025-11-13T09:31:39Z", "status.stoppedAt")


@check
def label_selector(c):
    eq(names(c.kb.get(label_selector=f"{GROUP}/cluster=pg-analytics", _request_timeout=TIMEOUT)),
       ["pg-analytics.backup-20251120010000", "pg-analytics.backup-20251121010000"], "cluster=pg-analytics")
    eq(names(c.kb.get(label_selector=f"{GROUP}/tier2", _request_timeout=TIMEOUT)),
       ["cluster-example.backup-20251101020000", "pg-analytics.backup-20251120010000"], "tier2 exists")
    eq(names(c.kb.get(label_selector=f"{GROUP}/cluster notin (cluster-example,pg-analytics)", _request_timeout=TIMEOUT)),
       ["pg-orders.backup-20251122003000"], "notin")
    eq(names(c.kb.get(label_selector=f"{GROUP}/cluster=nothing", _request_timeout=TIMEOUT)), [], "no match")


@check
def field_selector(c):
    eq(names(c.kb.get(field_selector="spec.clusterName=pg-analytics", _request_timeout=TIMEOUT)),
       ["pg-analytics.backup-20251120010000", "pg-analytics.backup-20251121010000"], "spec.clusterName")
    eq(names(c.kb.get(field_selector=f"metadata.name={EXAMPLE}", _request_timeout=TIMEOUT)), [EXAMPLE], "metadata.name")
    eq(names(c.kb.get(field_selector="spec.backupID=backup-20251122003000", _request_timeout=TIMEOUT)),
       ["pg-orders.backup-20251122003000"], "spec.backupID")
    eq(names(c.kb.get(field_selector="spec.clusterName=pg-analytics",
                      label_selector=f"{GROUP}/tier2", _request_timeout=TIMEOUT)),
       ["pg-analytics.backup-20251120010000"], "with a label selector")


@check
def unsupported_field_selector_is_bad_request(c):
    e = raises(DynamicApiError, c.kb.get, field_selector="status.phase=x", _request_timeout=TIMEOUT)
    eq(e.status, 400, "HTTP status")
    status = assert_status(e.body, 400, "BadRequest")
    if "status.phase" not in status.get("message", ""):
        raise AssertionError(f"message does not name the field: {status}")


@check
def get_unknown_name_raises_not_found(c):
    e = raises(NotFoundError, c.kb.get, name="nonexistent", _request_timeout=TIMEOUT)
    eq(e.status, 404, "HTTP status")
    status = assert_status(e.body, 404, "NotFound")
    eq(status.get("message"), f'kliobackups.{GROUP} "nonexistent" not found', "message")
    eq(status.get("details", {}).get("name"), "nonexistent", "details.name")


@check
def delete_raises_405(c):
    e = raises(DynamicApiError, c.kb.delete, name=EXAMPLE, _request_timeout=TIMEOUT)
    eq(e.status, 405, "HTTP status")
    assert_status(e.body, 405, "MethodNotAllowed")
    # And the object is still there.
    eq(c.kb.get(name=EXAMPLE, _request_timeout=TIMEOUT).metadata.name, EXAMPLE, "after the delete")


@check
def create_and_patch_raise_405(c):
    body = {"apiVersion": API_VERSION, "kind": "KlioBackup", "metadata": {"name": "x.y"}, "spec": {"clusterName": "x", "backupID": "y"}}
    e = raises(DynamicApiError, c.kb.create, body=body, _request_timeout=TIMEOUT)
    eq(e.status, 405, "create HTTP status")
    assert_status(e.body, 405, "MethodNotAllowed")
    e = raises(DynamicApiError, c.kb.patch, name=EXAMPLE, body={"metadata": {"labels": {"a": "b"}}},
               content_type="application/merge-patch+json", _request_timeout=TIMEOUT)
    eq(e.status, 405, "patch HTTP status")
    assert_status(e.body, 405, "MethodNotAllowed")


@check
def paging_with_limit_and_continue(c):
    pages, token = [], None
    while True:
        page = c.kb.get(limit=2, _continue=token, _request_timeout=TIMEOUT)
        if len(page.items) > 2:
            raise AssertionError(f"a page of {len(page.items)} with limit=2")
        pages.append(names(page))
        token = page.metadata["continue"]  # a missing field reads as None
        remaining = page.metadata["remainingItemCount"]
        if token and remaining != len(DEMO_NAMES) - len(sum(pages, [])):
            raise AssertionError(f"remainingItemCount {remaining} after {pages}")
        if not token:
            break
        if len(pages) > len(DEMO_NAMES):
            raise AssertionError(f"paging does not end: {pages}")
    eq(len(pages), 3, f"pages {pages}")
    eq(sum(pages, []), DEMO_NAMES, "names over all pages")


@check
def watch_sends_initial_objects(c):
    # No resourceVersion: the current state as ADDED events; the server ends the stream after
    # timeoutSeconds, and we stop as soon as every object came.
    seen, deadline = [], time.monotonic() + TIMEOUT
    for event in c.kb.watch(timeout=5):
        eq(event["type"], "ADDED", f"event type ({event['raw_object'].get('metadata', {}).get('name')})")
        eq(event["raw_object"]["kind"], "KlioBackup", "event object kind")
        seen.append(event["object"].metadata.name)
        if len(seen) == len(DEMO_NAMES) or time.monotonic() > deadline:
            break
    eq(sorted(seen), DEMO_NAMES, "initial ADDED events")


@check
def watch_with_field_selector(c):
    seen = []
    for event in c.kb.watch(field_selector="spec.clusterName=pg-orders", timeout=2):
        seen.append((event["type"], event["object"].metadata.name))
    eq(seen, [("ADDED", "pg-orders.backup-20251122003000")], "events until the server's timeout")


@check
def typed_custom_objects_api(c):
    api = client.CustomObjectsApi(c.api_client)
    listed = api.list_cluster_custom_object(GROUP, VERSION, "kliobackups", _request_timeout=TIMEOUT)
    eq([i["metadata"]["name"] for i in listed["items"]], DEMO_NAMES, "list_cluster_custom_object")
    obj = api.get_cluster_custom_object(GROUP, VERSION, "kliobackups", EXAMPLE, _request_timeout=TIMEOUT)
    eq(obj["spec"]["clusterName"], "cluster-example", "get_cluster_custom_object")
    try:
        api.get_cluster_custom_object(GROUP, VERSION, "kliobackups", "nonexistent", _request_timeout=TIMEOUT)
        raise AssertionError("no ApiException for an unknown name")
    except client.ApiException as e:
        eq(e.status, 404, "unknown name")
        assert_status(e.body, 404, "NotFound")
    # kubernetes.watch.Watch over the typed call (how controllers written in Python watch).
    w, seen = watch.Watch(), []
    for event in w.stream(api.list_cluster_custom_object, GROUP, VERSION, "kliobackups",
                          label_selector=f"{GROUP}/cluster=pg-analytics", timeout_seconds=2, _request_timeout=TIMEOUT):
        seen.append((event["type"], event["object"]["metadata"]["name"]))
    eq(sorted(seen), [("ADDED", "pg-analytics.backup-20251120010000"), ("ADDED", "pg-analytics.backup-20251121010000")],
       "Watch.stream events")


@check
def version_endpoint(c):
    # VersionApi.get_code asks for `/version/` (the path in Kubernetes' own OpenAPI document,
    # which kube-apiserver serves, as it does `/version`).
    try:
        info = client.VersionApi(c.api_client).get_code(_request_timeout=TIMEOUT)
    except client.ApiException as e:
        raise AssertionError(f"SERVER BUG: GET /version/ (VersionApi.get_code) answered {e.status}: {e.body}") from None
    if not info.major or not info.minor:
        raise AssertionError(f"/version/ without major/minor: {info}")


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: python-client.py KUBECONFIG")
    try:
        c = Ctx(sys.argv[1])
    except Exception as e:
        print(f"FAIL setup: {type(e).__name__}: {e}")
        print("0 passed, 1 failed")
        sys.exit(1)
    passed = failed = 0
    for fn in CHECKS:
        start = time.monotonic()
        try:
            if c.kb is None and fn is not discovery_resolves_kliobackup:
                raise AssertionError("skipped: discovery failed")
            fn(c)
        except Exception as e:
            failed += 1
            print(f"FAIL {fn.__name__} ({time.monotonic() - start:.1f}s): {type(e).__name__}: {e}")
            if not isinstance(e, AssertionError):
                traceback.print_exc(limit=3, file=sys.stdout)
        else:
            passed += 1
            print(f"PASS {fn.__name__} ({time.monotonic() - start:.1f}s)")
    try:
        os.unlink(c.cache)
    except OSError:
        pass
    print(f"python-client: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
