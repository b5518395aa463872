#!/usr/bin/env bash
# Client conformance and robustness checks against one running klio-api demo.
#
# Usage: conformance/clients.sh [path-to-klio-api-binary]      (default: target/debug/klio-api)
#
# Starts `klio-api demo --port 0` in a fresh temporary directory, then runs:
#   python-client   the official Python client (PyPI kubernetes): DynamicClient discovery, list,
#                   get, selectors, paging, watch, NotFoundError, 405 for writes (python-client.py)
#   js-client       the official JavaScript client (npm @kubernetes/client-node 2.x on Node 22):
#                   list, get, errors, generic object API, watch, streaming list, informer
#                   (js-client.sh installs Node and the client once, then runs js-client.mjs)
#   fuzz            schemathesis over the server's published /openapi/v3 group document, at least
#                   FUZZ_REQUESTS (10000) generated requests (fuzz-openapi.py)
#   slowloris       stalled connections vs. the server's handshake and header-read timeouts while it
#                   keeps serving (runs alongside the fuzz; malformed-http.py slowloris)
#   malformed-http  a corpus of malformed HTTP and TLS (malformed-http.py corpus), then: no panic in
#                   the demo's log, /readyz still ok
# and prints a summary and `N passed, M failed` over every check of every step.
#
# The Python packages are installed once into target/conformance-venv (conformance/venv.sh), Node
# and the JavaScript client into target/conformance-js (conformance/js-client.sh).
# The kube-rs checks are Rust integration tests (tests/integration/kube_rs.rs) and run with `cargo test`.
# Knobs: FUZZ_REQUESTS=N, FUZZ_SEED=S, KEEP_TMP=1 (keep the demo directory and every output).
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/.." && pwd)

die() {
    printf 'clients.sh: error: %s\n' "$*" >&2
    exit 2
}

[[ $# -le 1 ]] || die "usage: conformance/clients.sh [path-to-klio-api-binary]"
BIN=${1:-$ROOT/target/debug/klio-api}
[[ $BIN == /* ]] || BIN="$PWD/$BIN"
[[ -x $BIN ]] || die "klio-api binary not found or not executable: $BIN
  build it with:  (cd $ROOT && cargo build)
  or pass its path: conformance/clients.sh path/to/klio-api"
for tool in python3 openssl timeout sha256sum; do
    command -v "$tool" >/dev/null 2>&1 ||
        die "$tool not found on PATH (needed by the client checks; e.g. 'apt-get install python3 python3-venv openssl coreutils')"
done

export PYTHONDONTWRITEBYTECODE=1
START=$(date +%s)
PY=$("$SCRIPT_DIR/venv.sh") # fails loudly, with how to fix it
SETUP_SECONDS=$(($(date +%s) - START))

TMP=$(mktemp -d "${TMPDIR:-/tmp}/klio-clients.XXXXXX")
BACKGROUND=
# shellcheck source=conformance/demo.sh
source "$SCRIPT_DIR/demo.sh"
cleanup() {
    local rc=$?
    if [[ -n $BACKGROUND ]] && kill -0 "$BACKGROUND" 2>/dev/null; then
        kill -TERM "$BACKGROUND" 2>/dev/null || true
        wait "$BACKGROUND" 2>/dev/null || true
    fi
    demo_stop
    if [[ ${KEEP_TMP:-} == 1 ]]; then
        echo "kept $TMP" >&2
    else
        rm -rf "$TMP" 2>/dev/null || { sleep 1; rm -rf "$TMP"; }
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

demo_start "$BIN" "$TMP" || die "could not start the demo: $BIN demo --dir $TMP/demo --port 0"
echo "== client checks against $DEMO_URL (demo log: $DEMO_LOG)"

STEPS=()
declare -A STEP_RC STEP_LINE STEP_SECONDS
# run_step NAME LIMIT CMD...: runs with a time limit, output to the terminal and $TMP/NAME.out.
run_step() {
    local name=$1 limit=$2 t0 rc=0
    shift 2
    STEPS+=("$name")
    echo
    echo "== $name"
    t0=$(date +%s)
    timeout --kill-after=10 "$limit" "$@" >"$TMP/$name.out" 2>&1 || rc=$?
    cat "$TMP/$name.out"
    finish_step "$name" "$rc" "$t0" "$limit"
}
finish_step() {
    local name=$1 rc=$2 t0=$3 limit=$4
    STEP_SECONDS[$name]=$(($(date +%s) - t0))
    STEP_RC[$name]=$rc
    STEP_LINE[$name]=$(grep -E '^[A-Za-z-]+: [0-9]+ passed, [0-9]+ failed$' "$TMP/$name.out" | tail -n 1 || true)
    if ((rc == 124 || rc == 137)); then
        echo "clients.sh: $name did not finish within ${limit}s" | tee -a "$TMP/$name.out"
    fi
}

run_step python-client 120 "$PY" "$SCRIPT_DIR/python-client.py" "$DEMO_KUBECONFIG"

# Installs (once) and runs within its own bounds; the limit here covers a first install.
run_step js-client 240 "$SCRIPT_DIR/js-client.sh" "$DEMO_KUBECONFIG" "$DEMO_DIR"

# The slowloris check runs alongside the fuzz: its stalled connections must not stop the server
# from answering, and the fuzz outlasts the server's 30 s header-read timeout.
STEPS+=(slowloris)
SLOW_T0=$(date +%s)
timeout --kill-after=10 90 python3 "$SCRIPT_DIR/malformed-http.py" slowloris "$DEMO_KUBECONFIG" >"$TMP/slowloris.out" 2>&1 &
BACKGROUND=$!
run_step fuzz 240 "$PY" "$SCRIPT_DIR/fuzz-openapi.py" "$DEMO_KUBECONFIG" --requests "${FUZZ_REQUESTS:-10000}"
rc=0
wait "$BACKGROUND" || rc=$?
BACKGROUND=
echo
echo "== slowloris (ran alongside the fuzz)"
cat "$TMP/slowloris.out"
finish_step slowloris "$rc" "$SLOW_T0" 90

run_step malformed-http 150 python3 "$SCRIPT_DIR/malformed-http.py" corpus "$DEMO_KUBECONFIG" --log "$DEMO_LOG"

# The demo must have survived everything.
STEPS+=(demo)
STEP_SECONDS[demo]=0
if kill -0 "$DEMO_PID" 2>/dev/null && ! grep -q panicked "$DEMO_LOG"; then
    STEP_RC[demo]=0
    STEP_LINE[demo]="demo: 1 passed, 0 failed"
    echo "PASS the demo is still running, no panic in its log" >"$TMP/demo.out"
else
    STEP_RC[demo]=1
    STEP_LINE[demo]="demo: 0 passed, 1 failed"
    echo "FAIL the demo exited or panicked (see its log above)" >"$TMP/demo.out"
    echo
    echo "== FAIL: the demo exited or panicked; its log:"
    if grep -q panicked "$DEMO_LOG"; then grep -n -A5 panicked "$DEMO_LOG" | head -n 40; else tail -n 40 "$DEMO_LOG"; fi
fi

# ---------------------------------------------------------------------------------------------
# Summary: every step's checks, and the sum.

echo
echo "client checks: $BIN against $DEMO_URL, $(($(date +%s) - START))s (Python environment: ${SETUP_SECONDS}s)"
passed=0
failed=0
for name in "${STEPS[@]}"; do
    line=${STEP_LINE[$name]}
    if [[ -n $line ]]; then
        p=$(sed -E 's/.*: ([0-9]+) passed, ([0-9]+) failed$/\1/' <<<"$line")
        f=$(sed -E 's/.*: ([0-9]+) passed, ([0-9]+) failed$/\2/' <<<"$line")
    else
        p=0 f=1 # no summary line: it crashed or timed out
    fi
    if ((f == 0 && STEP_RC[$name] != 0)); then
        f=1 # a non-zero exit with no failed check is still a failure
    fi
    passed=$((passed + p))
    failed=$((failed + f))
    verdict=PASS
    ((f == 0)) || verdict=FAIL
    printf '  %-15s %-4s %3d passed, %2d failed  %4ss\n' "$name" "$verdict" "$p" "$f" "${STEP_SECONDS[$name]}"
    if ((f > 0)); then
        grep -E '^FAIL' "$TMP/$name.out" | sed 's/^/      /' | cut -c1-220 || true
    fi
done
echo
echo "$passed passed, $failed failed"
((failed == 0))
