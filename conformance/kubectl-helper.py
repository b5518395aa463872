#!/usr/bin/env python3
# Part of conformance/kubectl.sh, which runs it as `python3 kubectl-helper.py COMMAND ARGS...`.
"""The suite's output processing: normalizing resourceVersions and request traces, comparing
JSON, writing the watch record, and polling the watch outputs."""
import difflib, json, os, re, sys, time

RV = re.compile(r'("resourceVersion"\s*:\s*"|resourceVersion:\s*"?)(\d+(?:\.\d+)*)')


def rewrite(path, text, new):
    if new != text:
        os.replace(path, path + ".raw")
        with open(path, "w") as f:
            f.write(new)


def rv(path):
    """resourceVersion values -> <RV1>, <RV2>, ... in increasing revision order."""
    text = open(path).read()
    values = sorted({m.group(2) for m in RV.finditer(text)}, key=lambda v: [int(p) for p in v.split(".")])
    names = {v: f"<RV{i + 1}>" for i, v in enumerate(values)}
    rewrite(path, text, RV.sub(lambda m: m.group(1) + names[m.group(2)], text))


KLOG = re.compile(r"^[IWEF]\d{4} ")
URL = re.compile(r"https?://[^/\s\"]+(/[^\s\"]*)")
TOKEN = re.compile(r"(continue=)([^&\s\"]+)")


def requests(path):
    """A -v=6 stderr -> "VERB path?query status" per request for our resource; other klog lines
    dropped, anything else (warnings, errors) kept as is."""
    text = open(path).read()
    out, tokens = [], {}
    for line in text.splitlines():
        if not KLOG.match(line):
            out.append(line)
            continue
        url = URL.search(line)
        if not url or "/kliobackups" not in url.group(1):
            continue
        verb = re.search(r'verb="(\w+)"', line) or re.search(r"\] (\w+) https?://", line)
        status = re.search(r'status="(\d+)', line) or re.search(r" (\d{3}) [A-Z]", line)
        target = TOKEN.sub(lambda m: m.group(1) + tokens.setdefault(m.group(2), f"<TOKEN{len(tokens) + 1}>"), url.group(1))
        out.append(f"{verb.group(1) if verb else '?'} {target} {status.group(1) if status else '?'}")
    rewrite(path, text, "".join(l + "\n" for l in out))


def documents(text):
    """Every JSON document in text (one, or a stream of watch events)."""
    decoder, docs, i = json.JSONDecoder(), [], 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i == len(text):
            return docs
        doc, i = decoder.raw_decode(text, i)
        docs.append(doc)


def compare_json(expected, actual, label):
    def load(path):
        try:
            with open(path) as f:
                docs = documents(f.read())
            return (docs[0] if len(docs) == 1 else docs), None
        except FileNotFoundError:
            return None, "(missing)"
        except ValueError as e:
            return None, f"(not JSON: {e})\n" + open(path).read()
    (exp, exp_err), (act, act_err) = load(expected), load(actual)
    if exp_err is None and act_err is None and exp == act:
        return
    show = lambda v, err: (err if err else json.dumps(v, indent=2, sort_keys=True)).splitlines()
    sys.stdout.write("\n".join(difflib.unified_diff(show(exp, exp_err), show(act, act_err), label, "actual", lineterm="")) + "\n")


def record(src, dest, cluster, backup):
    """A copy of a demo record as another cluster's backup, written atomically (the catalog
    server skips dot files, so it never reads half a file)."""
    with open(src) as f:
        r = json.load(f)
    r["clusterName"], r["name"] = cluster, backup
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    tmp = os.path.join(os.path.dirname(dest), ".writing")
    with open(tmp, "w") as f:
        json.dump(r, f)
    os.replace(tmp, dest)


def events(path):
    """The complete watch events printed so far as (type, name)."""
    out = []
    for line in open(path).read().splitlines():
        try:
            e = json.loads(line)
        except ValueError:
            continue  # not complete yet
        if isinstance(e, dict):
            out.append((e.get("type"), ((e.get("object") or {}).get("metadata") or {}).get("name")))
    return out


def poll(stage, limit, name, initial, *watches):
    """Waits (at most limit seconds) until every running watch printed what `stage` needs."""
    def done(kind, path):
        if kind == "text":
            lines = [l for l in open(path).read().splitlines() if l.strip()]
            rows = sum(1 for l in lines if l.split()[0] == name)
            return {"initial": len(lines) >= 1 + initial, "added": rows >= 1, "deleted": rows >= 2}[stage]
        ev = events(path)
        return {
            "initial": len(ev) >= initial,
            "added": ("ADDED", name) in ev,
            "deleted": ("DELETED", name) in ev,
        }[stage]
    def alive(pid):
        try:
            os.kill(pid, 0)
            return True
        except OSError:
            return False
    deadline, initial = time.monotonic() + float(limit), int(initial)
    pending = [w.split(":", 2) for w in watches]
    while True:
        pending = [(k, pid, p) for k, pid, p in pending if alive(int(pid)) and not done(k, p)]
        if not pending or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    for k, pid, p in pending:
        print(f"kubectl.sh: watch phase: {stage}: still waiting after {limit}s for {p}", file=sys.stderr)
    if os.environ.get("WATCH_VERBOSE"):
        print(f"kubectl.sh: watch phase: {stage} took {time.monotonic() - deadline + float(limit):.1f}s", file=sys.stderr)


if __name__ == "__main__":
    globals()[sys.argv[1].replace("-", "_")](*sys.argv[2:])
