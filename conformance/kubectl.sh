#!/usr/bin/env bash
# kubectl conformance suite for klio-api.
#
# Usage: conformance/kubectl.sh [path-to-klio-api-binary]
#
# Starts `klio-api demo --port 0` in a fresh temporary directory, then runs the cases of
# conformance/kubectl-cases.tsv (kubectl commands, one per line) with every kubectl it can find and
# compares each command's stdout, stderr and exit code with the golden files in conformance/expected/.
#
# kubectl binaries: the `kubectl` on PATH plus every `kubectl.1.NN` found beside the real kubectl
# (the directory of `readlink -f $(command -v kubectl)`). Restrict the set with
#   KUBECTL_VERSIONS="kubectl kubectl.1.27"     (names looked up beside kubectl, then on PATH,
#                                               or absolute paths)
# Other knobs:
#   JOBS=N              kubectl versions run in parallel (default: number of CPUs, at least 2)
#   KEEP_TMP=1          keep the temporary directory (demo log, every captured output)
#   WATCH_WAIT=S        the longest wait for each step of the watch phase (default 10)
#   WATCH_VERBOSE=1     print how long each step of the watch phase took
#   FRONT_PROXY=1       put conformance/front-proxy.py between kubectl and the service: it
#                       authenticates kubectl by its client certificate and forwards with its own
#                       front-proxy certificate and X-Remote-User/X-Remote-Group, as the
#                       kube-apiserver's aggregation layer does (the demo trusts its front-proxy CA)
#   UPDATE_EXPECTED=1   rewrite conformance/expected/ from one kubectl (UPDATE_FROM, default the
#                       highest kubectl.1.NN) before comparing. Review the diff before committing:
#                       the golden files are the specification, not a snapshot of whatever the
#                       server prints today.
#
# Comparison: text outputs are compared after removing trailing whitespace and blank lines and
# turning non-breaking spaces into spaces (documented cosmetic differences between kubectl
# versions: explain prints an extra blank line in 1.30+; Go's protobuf errors sometimes use
# U+00A0). Everything else (columns, widths, values, field order, messages) must match exactly.
# `-o json` (one document or a stream of watch events) is compared as parsed JSON. Any unexpected
# stderr (warnings included) is a failure.
#
# resourceVersions are catalog revisions (timestamps), new on every run. Each captured output has
# its resourceVersion values replaced by <RV1>, <RV2>, ... numbered in increasing revision order
# (the raw output is kept as *.raw): the field must still be there, well-formed, and distinct
# versions must stay distinct and ordered (a watch's ADDED then DELETED come after the listing).
# Request traces (-v=6) are reduced to "VERB path?query status" lines for our resource, continue
# tokens numbered <TOKEN1>, <TOKEN2>, ...
#
# Two phases:
#   1. every kubectl runs the command script (JOBS versions at a time); nothing changes the
#      catalog meanwhile.
#   2. watch: every kubectl starts its watches at once (`get -w` and `-w -o json
#      --output-watch-events`, bounded by `timeout`); once all have printed the listing, the suite
#      adds ONE record to the demo catalog (a copy of a demo record under a new cluster and backup
#      ID), waits until every watch printed it, deletes it, waits until every watch printed that,
#      then stops the watches. Each wait polls the outputs (at most WATCH_WAIT seconds, default 10;
#      the demo re-reads its catalog every 2 s). One change for everybody keeps the outputs exact.
#      A watch must still be running when the suite stops it (exit code "watching").
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
# The cases, from conformance/kubectl-cases.tsv (its header says what each field means; the
# documentation generator reads the same file for its kubectl page).

CASES_FILE=$SCRIPT_DIR/kubectl-cases.tsv
[[ -r $CASES_FILE ]] || die "the cases file is missing: $CASES_FILE"
CASES=()
declare -A C_RC C_MODE C_OUT C_ERR C_ARGS C_KIND C_FILTER
line_no=0
while IFS=$'\t' read -r -a fields || [[ ${#fields[@]} -gt 0 ]]; do
    line_no=$((line_no + 1))
    [[ ${#fields[@]} -eq 0 || ${fields[0]} == \#* ]] && continue
    where="$CASES_FILE:$line_no"
    ((${#fields[@]} >= 7)) || die "$where: a case needs an id, phase, exit, compare, golden, filter and at least one kubectl argument (tab-separated)"
    id=${fields[0]}
    [[ -z ${C_KIND[$id]:-} ]] || die "$where: case $id is defined twice"
    case ${fields[1]} in
    seq | bg) [[ ${fields[2]} =~ ^[0-9]+$ ]] || die "$where: exit ${fields[2]}: a phase-1 case exits with a number" ;;
    watch) [[ ${fields[2]} == watching ]] || die "$where: a watch case's exit is \"watching\"" ;;
    *) die "$where: phase ${fields[1]}: one of seq, bg, watch" ;;
    esac
    [[ ${fields[3]} == text || ${fields[3]} == json ]] || die "$where: compare ${fields[3]}: text or json"
    [[ ${fields[5]} == - || ${fields[5]} == requests ]] || die "$where: filter ${fields[5]}: - or requests"
    CASES+=("$id")
    C_KIND[$id]=${fields[1]}
    C_RC[$id]=${fields[2]}
    C_MODE[$id]=${fields[3]}
    C_OUT[$id]=${fields[4]%%,*}
    C_ERR[$id]=${fields[4]##*,}
    [[ ${fields[5]} == - ]] || C_FILTER[$id]=${fields[5]}
    C_ARGS[$id]=$(printf "%q " "${fields[@]:6}")
    C_ARGS[$id]=${C_ARGS[$id]% }
done <"$CASES_FILE"
((${#CASES[@]} > 0)) || die "$CASES_FILE defines no case"

# ---------------------------------------------------------------------------------------------
# The demo.

TMP=$(mktemp -d "${TMPDIR:-/tmp}/klio-kubectl-conformance.XXXXXX")
HELPER=$SCRIPT_DIR/kubectl-helper.py
DEMO_PID=
PROXY_PID=
WORKERS=()  # the kubectl runs in progress (subshells of this script)
WATCHERS=() # the phase-2 watches (`timeout` processes, children of this script)
cleanup() {
    local rc=$? w kids
    # Interrupted mid-run: stop each worker, end the kubectls it is running (timeout passes the
    # signal on to its process group), then the worker itself.
    for w in "${WORKERS[@]}"; do
        kill -0 "$w" 2>/dev/null || continue
        kill -STOP "$w" 2>/dev/null || true
        kids=$(pgrep -P "$w" || true)
        [[ -z $kids ]] || kill -TERM $kids 2>/dev/null || true
        kill -KILL "$w" 2>/dev/null || true
        wait "$w" 2>/dev/null || true
    done
    for w in "${WATCHERS[@]}"; do
        kill -TERM "$w" 2>/dev/null || true
        wait "$w" 2>/dev/null || true
    done
    if [[ -n $PROXY_PID ]]; then
        kill -TERM "$PROXY_PID" 2>/dev/null || true
        wait "$PROXY_PID" 2>/dev/null || true
    fi
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
            # "ok", or kube-apiserver's verbose form ("[+]check ok" lines, then "readyz check passed").
            if resp.status == 200 and (body == "ok" or body.endswith("readyz check passed")):
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

if [[ ${FRONT_PROXY:-} == 1 ]]; then
    demo_url=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["clusters"][0]["cluster"]["server"])' "$KUBECONFIG")
    python3 "$SCRIPT_DIR/front-proxy.py" "$TMP/demo/pki" "$demo_url" "$TMP/proxy.port" 2>"$TMP/proxy.log" &
    PROXY_PID=$!
    for _ in $(seq 100); do
        [[ -s $TMP/proxy.port ]] && break
        kill -0 "$PROXY_PID" 2>/dev/null || { cat "$TMP/proxy.log" >&2; die "the front proxy did not start"; }
        sleep 0.1
    done
    [[ -s $TMP/proxy.port ]] || die "the front proxy did not start within 10 s"
    python3 -c '
import json, sys
config = json.load(open(sys.argv[1]))
config["clusters"][0]["cluster"]["server"] = sys.argv[3]
json.dump(config, open(sys.argv[2], "w"))
' "$KUBECONFIG" "$TMP/proxy-kubeconfig" "https://127.0.0.1:$(cat "$TMP/proxy.port")"
    export KUBECONFIG="$TMP/proxy-kubeconfig"
    echo "through the front proxy at 127.0.0.1:$(cat "$TMP/proxy.port") (X-Remote-User from the client certificate)"
fi

# ---------------------------------------------------------------------------------------------
# Running one kubectl: every case in order, with its own fresh HOME and --cache-dir.

# After a case ran: resourceVersions numbered, request traces reduced (raw outputs kept as *.raw).
postprocess() {
    local dir=$1 id=$2
    if grep -q resourceVersion "$dir/$id.out" 2>/dev/null; then
        python3 "$HELPER" rv "$dir/$id.out"
    fi
    if [[ ${C_FILTER[$id]:-} == requests ]]; then
        python3 "$HELPER" requests "$dir/$id.err"
    fi
}

run_version() {
    local label=$1 kubectl=$2 dir=$TMP/runs/$1 id args pids=() bg=()
    mkdir -p "$dir/home" "$dir/cache"
    # The client version, for the report (the gcloud dispatcher picks its kubectl by the
    # server's minor version, so this is asked of the server too).
    HOME="$dir/home" timeout 20 "$kubectl" --cache-dir "$dir/cache-version" version -o json \
        >"$dir/version.json" 2>/dev/null || true
    # Background cases first (direct children, so an interrupted run ends them too).
    for id in "${CASES[@]}"; do
        [[ ${C_KIND[$id]} == bg ]] || continue
        eval "args=(${C_ARGS[$id]})"
        HOME="$dir/home" timeout 30 "$kubectl" --cache-dir "$dir/cache-$id" "${args[@]}" \
            >"$dir/$id.out" 2>"$dir/$id.err" </dev/null &
        pids+=($!)
        bg+=("$id")
    done
    for id in "${CASES[@]}"; do
        [[ ${C_KIND[$id]} == seq ]] || continue
        eval "args=(${C_ARGS[$id]})"
        if HOME="$dir/home" timeout 30 "$kubectl" --cache-dir "$dir/cache" "${args[@]}" \
            >"$dir/$id.out" 2>"$dir/$id.err" </dev/null; then
            echo 0 >"$dir/$id.rc"
        else
            echo $? >"$dir/$id.rc"
        fi
        postprocess "$dir" "$id"
    done
    for i in "${!bg[@]}"; do
        if wait "${pids[$i]}"; then
            echo 0 >"$dir/${bg[$i]}.rc"
        else
            echo $? >"$dir/${bg[$i]}.rc"
        fi
        postprocess "$dir" "${bg[$i]}"
    done
}

# Phase 1: JOBS kubectl versions at a time (each one's commands run in order).
for i in "${!LABELS[@]}"; do
    run_version "${LABELS[$i]}" "${PATHS[$i]}" &
    WORKERS+=($!)
    if ((${#WORKERS[@]} >= JOBS)) || ((i == ${#LABELS[@]} - 1)); then
        for w in "${WORKERS[@]}"; do wait "$w" || true; done
        WORKERS=()
    fi
done

# Phase 2: every watch at once around one catalog change.
WATCH_IDS=()
for id in "${CASES[@]}"; do
    if [[ ${C_KIND[$id]} == watch ]]; then WATCH_IDS+=("$id"); fi
done
if ((${#WATCH_IDS[@]} > 0)); then
    WATCH_WAIT=${WATCH_WAIT:-10}
    CATALOG=$TMP/demo/catalog/tier1
    WATCH_SOURCE=$CATALOG/cluster-example/backup-20251113093137.json
    WATCH_CLUSTER=pg-watch
    WATCH_BACKUP=backup-20251125120000
    WATCH_RECORD=$CATALOG/$WATCH_CLUSTER/$WATCH_BACKUP.json
    [[ -f $WATCH_SOURCE ]] || die "the demo has no $WATCH_SOURCE to copy for the watch test (did the demo's sample catalog change?)"
    # Rows of the listing (the golden plain get, less its header).
    WATCH_INITIAL=$(($(grep -c . "$EXPECTED/get.out") - 1))
    WATCH_SPECS=()
    declare -A WATCH_PID
    for i in "${!LABELS[@]}"; do
        label=${LABELS[$i]}
        dir=$TMP/runs/$label
        for id in "${WATCH_IDS[@]}"; do
            eval "args=(${C_ARGS[$id]})"
            HOME="$dir/home" timeout 90 "${PATHS[$i]}" --cache-dir "$dir/cache" "${args[@]}" \
                >"$dir/$id.out" 2>"$dir/$id.err" </dev/null &
            WATCHERS+=($!)
            WATCH_PID[$label/$id]=$!
            WATCH_SPECS+=("${C_MODE[$id]}:$!:$dir/$id.out")
        done
    done
    python3 "$HELPER" poll initial "$WATCH_WAIT" "$WATCH_CLUSTER.$WATCH_BACKUP" "$WATCH_INITIAL" "${WATCH_SPECS[@]}"
    python3 "$HELPER" record "$WATCH_SOURCE" "$WATCH_RECORD" "$WATCH_CLUSTER" "$WATCH_BACKUP"
    python3 "$HELPER" poll added "$WATCH_WAIT" "$WATCH_CLUSTER.$WATCH_BACKUP" "$WATCH_INITIAL" "${WATCH_SPECS[@]}"
    # Only the file: removing its directory could race with the catalog server's directory scan.
    rm "$WATCH_RECORD"
    python3 "$HELPER" poll deleted "$WATCH_WAIT" "$WATCH_CLUSTER.$WATCH_BACKUP" "$WATCH_INITIAL" "${WATCH_SPECS[@]}"
    # Stop them: a watch still running is what is expected ("watching"); one that ended by
    # itself reports its own exit code.
    for label in "${LABELS[@]}"; do
        dir=$TMP/runs/$label
        for id in "${WATCH_IDS[@]}"; do
            pid=${WATCH_PID[$label/$id]}
            if kill -0 "$pid" 2>/dev/null; then
                kill -TERM "$pid" 2>/dev/null || true
                wait "$pid" 2>/dev/null || true
                echo watching >"$dir/$id.rc"
            elif wait "$pid"; then
                echo 0 >"$dir/$id.rc"
            else
                echo $? >"$dir/$id.rc"
            fi
            postprocess "$dir" "$id"
        done
    done
    WATCHERS=()
fi

# ---------------------------------------------------------------------------------------------
# Regenerating the golden files (explicit request only).

if [[ ${UPDATE_EXPECTED:-} == 1 ]]; then
    from=${UPDATE_FROM:-${LABELS[-1]}}
    [[ -d $TMP/runs/$from ]] || die "UPDATE_FROM=$from is not in the kubectl set (${LABELS[*]})"
    mkdir -p "$EXPECTED"
    for id in "${CASES[@]}"; do
        for stream in out err; do
            if [[ $stream == out ]]; then base=${C_OUT[$id]}; else base=${C_ERR[$id]}; fi
            [[ $base == "$id" ]] || continue # shared golden files are written by their own case
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
# Ages (the AGE column, last on a line: `395d`, `2y30d`, `45s`) move with the clock.
normalize() {
    if [[ -f $1 ]]; then
        LC_ALL=C sed -e 's/\xc2\xa0/ /g' -e 's/[[:space:]]*$//' "$1" |
            LC_ALL=C sed -E -e 's/ +([0-9]+[smhdy]){1,2}$/   <AGE>/' | LC_ALL=C grep -v '^$' || true
    fi
}

# Prints nothing when equal, else a diff (expected first).
compare_text() {
    local expected=$1 actual=$2
    diff -u --label "expected ${expected#"$ROOT"/}" --label "actual" \
        <(normalize "$expected") <(normalize "$actual") || true
}

compare_json() {
    python3 "$HELPER" compare-json "$1" "$2" "expected ${1#"$ROOT"/}"
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
        problems=""
        rc=$(cat "$dir/$id.rc" 2>/dev/null || echo "none")
        if [[ $rc != "${C_RC[$id]}" ]]; then
            problems+="exit code: expected ${C_RC[$id]}, got $rc"$'\n'
        fi
        if [[ ${C_MODE[$id]} == json ]]; then
            d=$(compare_json "$EXPECTED/${C_OUT[$id]}.out" "$dir/$id.out")
        else
            d=$(compare_text "$EXPECTED/${C_OUT[$id]}.out" "$dir/$id.out")
        fi
        [[ -z $d ]] || problems+="stdout differs:"$'\n'"$d"$'\n'
        d=$(compare_text "$EXPECTED/${C_ERR[$id]}.err" "$dir/$id.err")
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
