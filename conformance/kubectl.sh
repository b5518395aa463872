#!/usr/bin/env bash
# kubectl conformance suite for klio-api.
#
# Usage: conformance/kubectl.sh [path-to-klio-api-binary]
#
# Starts `klio-api demo --port 0` in a fresh temporary directory, then runs the same script of
# kubectl commands with every kubectl it can find and compares each command's stdout, stderr and
# exit code with the golden files in conformance/expected/.
#
# kubectl binaries: the `kubectl` on PATH plus every `kubectl.1.NN` found beside the real kubectl
# (the directory of `readlink -f $(command -v kubectl)`). Restrict the set with
#   KUBECTL_VERSIONS="kubectl kubectl.1.27"     (names looked up beside kubectl, then on PATH,
#                                               or absolute paths)
# Other knobs:
#   JOBS=N              kubectl versions run in parallel (default: number of CPUs, at least 2)
#   KEEP_TMP=1          keep the temporary directory (demo log, every captured output)
#   UPDATE_EXPECTED=1   rewrite conformance/expected/ from one kubectl (UPDATE_FROM, default the
#                       highest kubectl.1.NN) before comparing. Review the diff before committing:
#                       the golden files are the specification, not a snapshot of whatever the
#                       server prints today.
#
# Comparison: text outputs are compared after removing trailing whitespace and blank lines and
# turning non-breaking spaces into spaces (documented cosmetic differences between kubectl
# versions: explain prints an extra blank line in 1.30+; Go's protobuf errors sometimes use
# U+00A0). Everything else (columns, widths, values, field order, messages) must match exactly.
# `-o json` is compared as parsed JSON. Any unexpected stderr (warnings included) is a failure.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
EXPECTED="$SCRIPT_DIR/expected"

die() {
    printf 'kubectl.sh: error: %s\n' "$*" >&2
    exit 2
}

# ---------------------------------------------------------------------------------------------
# Prerequisites: fail loudly, never pass silently.

if [[ $# -gt 1 ]]; then
    die "usage: conformance/kubectl.sh [path-to-klio-api-binary]"
fi
BIN=${1:-$ROOT/target/debug/klio-api}
if [[ $BIN != /* ]]; then
    BIN="$PWD/$BIN"
fi
if [[ ! -x $BIN ]]; then
    die "klio-api binary not found or not executable: $BIN
  build it with:  (cd $ROOT && cargo build)
  or pass its path: conformance/kubectl.sh path/to/klio-api"
fi

KUBECTL_HELP="install kubectl: https://kubernetes.io/docs/tasks/tools/ (e.g. 'apt-get install kubectl' from the Kubernetes apt repository, or 'gcloud components install kubectl'); versioned binaries kubectl.1.27 ... kubectl.1.33 are picked up from the same directory as the real kubectl"
if ! command -v kubectl >/dev/null 2>&1; then
    die "kubectl not found on PATH
  $KUBECTL_HELP"
fi
for tool in python3 timeout diff pgrep; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found on PATH (needed by the suite; install it, e.g. 'apt-get install python3 coreutils diffutils procps')"
done

KUBECTL_DIR=$(dirname "$(readlink -f "$(command -v kubectl)")")

# The kubectl set: parallel arrays of labels and absolute paths.
LABELS=()
PATHS=()
add_kubectl() {
    local name=$1 path
    if [[ $name == */* ]]; then
        path=$name
    elif [[ $name == kubectl ]]; then
        path=$(command -v kubectl)
    elif [[ -x $KUBECTL_DIR/$name ]]; then
        path=$KUBECTL_DIR/$name
    else
        path=$(command -v "$name" 2>/dev/null) || die "kubectl binary '$name' (from KUBECTL_VERSIONS) not found beside $KUBECTL_DIR/kubectl nor on PATH
  $KUBECTL_HELP"
    fi
    [[ -x $path ]] || die "kubectl binary '$name' is not executable: $path"
    local label n=1
    label=$(basename "$name")
    while [[ " ${LABELS[*]} " == *" $label "* ]]; do
        n=$((n + 1))
        label="$(basename "$name")#$n"
    done
    LABELS+=("$label")
    PATHS+=("$path")
}
if [[ -n ${KUBECTL_VERSIONS:-} ]]; then
    for name in $KUBECTL_VERSIONS; do
        add_kubectl "$name"
    done
else
    add_kubectl kubectl
    while IFS= read -r f; do
        add_kubectl "$f"
    done < <(find "$KUBECTL_DIR" -maxdepth 1 -name 'kubectl.1.*' -perm -u+x -printf '%f\n' | sort -V)
fi
[[ ${#LABELS[@]} -gt 0 ]] || die "KUBECTL_VERSIONS is set but names no kubectl"

JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}
((JOBS >= 2)) || JOBS=2

# ---------------------------------------------------------------------------------------------
# The script of commands. Each case: id, expected exit code, how stdout is compared (text|json),
# the basename of its golden files (expected/<base>.out, expected/<base>.err; a missing file
# means "must be empty"), then the kubectl arguments.

NAME=cluster-example.backup-20251113093137
CASES=()
declare -A C_RC C_MODE C_EXP C_ARGS
def() {
    local id=$1 rc=$2 mode=$3 exp=$4
    shift 4
    CASES+=("$id")
    C_RC[$id]=$rc
    C_MODE[$id]=$mode
    C_EXP[$id]=$exp
    C_ARGS[$id]=$(printf "%q " "$@")
    C_ARGS[$id]=${C_ARGS[$id]% }
}
def api-resources           0 text api-resources            api-resources
def api-versions            0 text api-versions             api-versions
def get                     0 text get                      get kliobackups
def get-wide                0 text get-wide                 get kliobackups -o wide
def get-shortname           0 text get                      get kb
def get-category            0 text get                      get klio
def get-yaml                0 text get-yaml                 get kliobackup "$NAME" -o yaml
def get-json                0 json get-json                 get kliobackup "$NAME" -o json
def get-jsonpath            0 text get-jsonpath             get kliobackup "$NAME" -o 'jsonpath={.status.startWAL}'
def get-custom-columns      0 text get-custom-columns       get kliobackup "$NAME" -o custom-columns=NAME:.metadata.name,WAL:.status.startWAL
def get-field-selector      0 text get-field-selector       get kliobackups --field-selector spec.clusterName=pg-analytics
def get-sort-by             0 text get-sort-by              get kliobackups --sort-by=.spec.clusterName
# The server lists by name, which is also clusterName order; sorting by startLSN puts pg-orders
# before pg-analytics, so this proves kubectl really sorted the full objects (includeObject=Object).
def get-sort-by-lsn         0 text get-sort-by-lsn          get kliobackups --sort-by=.status.startLSN
def explain                 0 text explain                  explain kliobackup
def explain-status-recursive 0 text explain-status-recursive explain kliobackup.status --recursive
def get-not-found           1 text get-not-found            get kliobackup nonexistent
def delete-not-allowed      1 text delete-not-allowed       delete kliobackup "$NAME"
def field-selector-unsupported 1 text field-selector-unsupported get kliobackups --field-selector status.phase=x

# ---------------------------------------------------------------------------------------------
# The demo.

TMP=$(mktemp -d "${TMPDIR:-/tmp}/klio-kubectl-conformance.XXXXXX")
DEMO_PID=
WORKERS=() # the kubectl runs in progress (subshells of this script)
cleanup() {
    local rc=$? w kids
    # Interrupted mid-run: stop each worker, end the kubectl it is running (timeout passes the
    # signal on), then the worker itself.
    for w in "${WORKERS[@]}"; do
        kill -0 "$w" 2>/dev/null || continue
        kill -STOP "$w" 2>/dev/null || true
        kids=$(pgrep -P "$w" || true)
        [[ -z $kids ]] || kill -TERM $kids 2>/dev/null || true
        kill -KILL "$w" 2>/dev/null || true
        wait "$w" 2>/dev/null || true
    done
    if [[ -n $DEMO_PID ]] && kill -0 "$DEMO_PID" 2>/dev/null; then
        kill -TERM "$DEMO_PID" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$DEMO_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$DEMO_PID" 2>/dev/null || true
        wait "$DEMO_PID" 2>/dev/null || true
    fi
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

START=$(date +%s.%N)
"$BIN" demo --dir "$TMP/demo" --port 0 >"$TMP/demo.log" 2>&1 &
DEMO_PID=$!

# Bounded wait for the kubeconfig, then for /readyz (open to anyone: no client certificate sent,
# but the server certificate is verified against the kubeconfig's CA).
if ! python3 - "$TMP/demo/kubeconfig" "$DEMO_PID" 30 <<'EOF'; then
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
            text = f.read()
        try:
            config = json.loads(text)
        except ValueError:
            import yaml  # a YAML kubeconfig, if the demo ever writes one
            config = yaml.safe_load(text)
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
    tail -n 40 "$TMP/demo.log" >&2 || true
    die "could not start the demo: $BIN demo --dir $TMP/demo --port 0"
fi
export KUBECONFIG="$TMP/demo/kubeconfig"

# ---------------------------------------------------------------------------------------------
# Running one kubectl: every case in order, with its own fresh HOME and --cache-dir.

run_version() {
    local label=$1 kubectl=$2 dir=$TMP/runs/$1 id args
    mkdir -p "$dir/home" "$dir/cache"
    # The client version, for the report (the gcloud dispatcher picks its kubectl by the
    # server's minor version, so this is asked of the server too).
    HOME="$dir/home" timeout 20 "$kubectl" --cache-dir "$dir/cache-version" version -o json \
        >"$dir/version.json" 2>/dev/null || true
    for id in "${CASES[@]}"; do
        eval "args=(${C_ARGS[$id]})"
        if HOME="$dir/home" timeout 30 "$kubectl" --cache-dir "$dir/cache" "${args[@]}" \
            >"$dir/$id.out" 2>"$dir/$id.err" </dev/null; then
            echo 0 >"$dir/$id.rc"
        else
            echo $? >"$dir/$id.rc"
        fi
    done
}

# JOBS kubectl versions at a time (each one's commands run in order).
for i in "${!LABELS[@]}"; do
    run_version "${LABELS[$i]}" "${PATHS[$i]}" &
    WORKERS+=($!)
    if ((${#WORKERS[@]} >= JOBS)) || ((i == ${#LABELS[@]} - 1)); then
        for w in "${WORKERS[@]}"; do wait "$w" || true; done
        WORKERS=()
    fi
done

# ---------------------------------------------------------------------------------------------
# Regenerating the golden files (explicit request only).

if [[ ${UPDATE_EXPECTED:-} == 1 ]]; then
    from=${UPDATE_FROM:-${LABELS[-1]}}
    [[ -d $TMP/runs/$from ]] || die "UPDATE_FROM=$from is not in the kubectl set (${LABELS[*]})"
    mkdir -p "$EXPECTED"
    for id in "${CASES[@]}"; do
        base=${C_EXP[$id]}
        [[ $base == "$id" ]] || continue # shared golden files are written by their own case
        for stream in out err; do
            if [[ -s $TMP/runs/$from/$id.$stream ]]; then
                cp "$TMP/runs/$from/$id.$stream" "$EXPECTED/$base.$stream"
            else
                rm -f "$EXPECTED/$base.$stream"
            fi
        done
    done
    echo "rewrote $EXPECTED from $from; review with: git diff -- conformance/expected" >&2
fi

# ---------------------------------------------------------------------------------------------
# Comparing.

# The documented cosmetic differences only: trailing whitespace, blank lines, U+00A0, CR.
normalize() {
    if [[ -f $1 ]]; then
        LC_ALL=C sed -e 's/\xc2\xa0/ /g' -e 's/[[:space:]]*$//' "$1" | LC_ALL=C grep -v '^$' || true
    fi
}

# Prints nothing when equal, else a diff (expected first).
compare_text() {
    local expected=$1 actual=$2
    diff -u --label "expected ${expected#"$ROOT"/}" --label "actual" \
        <(normalize "$expected") <(normalize "$actual") || true
}

compare_json() {
    local expected=$1 actual=$2
    python3 - "$expected" "$actual" "expected ${expected#"$ROOT"/}" <<'EOF'
import difflib, json, sys
def load(path):
    try:
        with open(path) as f:
            return json.load(f), None
    except FileNotFoundError:
        return None, "(missing)"
    except ValueError as e:
        return None, f"(not JSON: {e})\n" + open(path).read()
(exp, exp_err), (act, act_err) = load(sys.argv[1]), load(sys.argv[2])
if exp_err is None and act_err is None and exp == act:
    sys.exit(0)
show = lambda v, err: (err if err else json.dumps(v, indent=2, sort_keys=True)).splitlines()
sys.stdout.write("\n".join(difflib.unified_diff(show(exp, exp_err), show(act, act_err), sys.argv[3], "actual", lineterm="")) + "\n")
EOF
}

declare -A RESULT SEEN
passed=0
failed=0
DETAILS=$TMP/details.txt
: >"$DETAILS"
for i in "${!LABELS[@]}"; do
    label=${LABELS[$i]}
    dir=$TMP/runs/$label
    for id in "${CASES[@]}"; do
        base=$EXPECTED/${C_EXP[$id]}
        problems=""
        rc=$(cat "$dir/$id.rc" 2>/dev/null || echo "none")
        if [[ $rc != "${C_RC[$id]}" ]]; then
            problems+="exit code: expected ${C_RC[$id]}, got $rc"$'\n'
        fi
        if [[ ${C_MODE[$id]} == json ]]; then
            d=$(compare_json "$base.out" "$dir/$id.out")
        else
            d=$(compare_text "$base.out" "$dir/$id.out")
        fi
        [[ -z $d ]] || problems+="stdout differs:"$'\n'"$d"$'\n'
        d=$(compare_text "$base.err" "$dir/$id.err")
        [[ -z $d ]] || problems+="stderr differs:"$'\n'"$d"$'\n'
        if [[ -z $problems ]]; then
            RESULT[$label/$id]=PASS
            passed=$((passed + 1))
        else
            RESULT[$label/$id]=FAIL
            failed=$((failed + 1))
            key="$id"$'\n'"$rc"$'\n'"$problems"$'\n'"$(cat "$dir/$id.err" 2>/dev/null)"
            if [[ -n ${SEEN[$key]:-} ]]; then
                echo "==== FAIL: $label: kubectl ${C_ARGS[$id]}: same as ${SEEN[$key]}" >>"$DETAILS"
                continue
            fi
            SEEN[$key]=$label
            {
                echo "==== FAIL: $label: kubectl ${C_ARGS[$id]}"
                printf '%s' "$problems"
                if [[ $rc != "${C_RC[$id]}" && -s $dir/$id.err ]]; then
                    echo "stderr was:"
                    head -n 20 "$dir/$id.err"
                fi
            } >>"$DETAILS"
        fi
    done
done
ELAPSED=$(python3 -c "import sys,time; print(f'{time.time()-float(sys.argv[1]):.1f}')" "$START")

# ---------------------------------------------------------------------------------------------
# Report.

if [[ -s $DETAILS ]]; then
    cat "$DETAILS"
    echo
fi

echo "kubectl conformance: $BIN (demo at $(sed -n 's/.*"server": *"\([^"]*\)".*/\1/p' "$KUBECONFIG" | head -n1)), ${ELAPSED}s"
for i in "${!LABELS[@]}"; do
    version=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["clientVersion"]["gitVersion"])' \
        "$TMP/runs/${LABELS[$i]}/version.json" 2>/dev/null || echo "unknown")
    printf '  %-14s %-8s %s\n' "${LABELS[$i]}" "$version" "${PATHS[$i]}"
done
echo

width=26
for id in "${CASES[@]}"; do ((${#id} + 1 > width)) && width=$((${#id} + 1)); done
row() { # a report row without trailing spaces
    local line
    line=$(printf "%-${width}s" "$1")
    shift
    line+=$(printf ' %-13s' "$@")
    echo "${line%"${line##*[! ]}"}"
}
row command "${LABELS[@]}"
for id in "${CASES[@]}"; do
    cells=()
    for label in "${LABELS[@]}"; do cells+=("${RESULT[$label/$id]}"); done
    row "$id" "${cells[@]}"
done
echo
echo "$passed passed, $failed failed"
((failed == 0))
