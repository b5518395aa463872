# shellcheck shell=bash
# Starting and stopping `klio-api demo --port 0` for the conformance scripts (sourced, not run).
# The same pattern as kubectl.sh: a bounded wait for the kubeconfig and /readyz, and a stop that
# sends TERM, waits up to 5 s, then KILLs.
#
#   source conformance/demo.sh
#   demo_start BIN DIR     # runs BIN demo --dir DIR/demo --port 0, log in DIR/demo.log;
#                          # sets DEMO_PID, DEMO_DIR, DEMO_LOG, DEMO_KUBECONFIG, DEMO_URL;
#                          # returns non-zero (after printing the log's tail) if not ready in 30 s
#   demo_stop              # idempotent; call it from the EXIT trap

DEMO_PID=
DEMO_DIR=
DEMO_LOG=
DEMO_KUBECONFIG=
DEMO_URL=

demo_start() {
    local bin=$1 dir=$2
    DEMO_DIR=$dir/demo
    DEMO_LOG=$dir/demo.log
    DEMO_KUBECONFIG=$DEMO_DIR/kubeconfig
    "$bin" demo --dir "$DEMO_DIR" --port 0 >"$DEMO_LOG" 2>&1 &
    DEMO_PID=$!
    # Bounded wait for the kubeconfig, then for /readyz (open to anyone: no client certificate
    # sent, but the server certificate is verified against the kubeconfig's CA).
    if ! python3 - "$DEMO_KUBECONFIG" "$DEMO_PID" 30 <<'EOF'; then
import base64, json, os, ssl, sys, time, urllib.request
path, pid, limit = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
deadline = time.monotonic() + limit
last = "kubeconfig not written"
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit("the demo exited before it was ready")
    try:
        with open(path) as f:
            config = json.load(f)
        cluster = config["clusters"][0]["cluster"]
        ctx = ssl.create_default_context(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
        with urllib.request.urlopen(cluster["server"] + "/readyz", context=ctx, timeout=2) as resp:
            body = resp.read().decode().strip()
            if resp.status == 200 and body == "ok":
                sys.exit(0)
            last = f"/readyz answered {resp.status}: {body!r}"
    except FileNotFoundError:
        pass
    except Exception as e:  # not ready yet, partially written file, ...
        last = f"{type(e).__name__}: {e}"
    time.sleep(0.1)
sys.exit(f"the demo was not ready within {limit:.0f}s: {last}")
EOF
        echo "---- end of the demo log ----" >&2
        tail -n 40 "$DEMO_LOG" >&2 || true
        return 1
    fi
    DEMO_URL=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["clusters"][0]["cluster"]["server"])' "$DEMO_KUBECONFIG")
}

demo_stop() {
    if [[ -n $DEMO_PID ]] && kill -0 "$DEMO_PID" 2>/dev/null; then
        kill -TERM "$DEMO_PID" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$DEMO_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$DEMO_PID" 2>/dev/null || true
        wait "$DEMO_PID" 2>/dev/null || true
    fi
    DEMO_PID=
}
