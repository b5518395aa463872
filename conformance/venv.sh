#!/usr/bin/env bash
# Creates (once) the Python virtual environment of the client conformance scripts and prints the
# path of its python. The environment lives in target/conformance-venv (next to cargo's output,
# ignored by git, removed by `cargo clean`) and is rebuilt only when
# conformance/requirements-clients.txt or the Python version changes.
#
# Usage: PY=$(conformance/venv.sh)      (progress and errors go to stderr)
# Knobs: CONFORMANCE_VENV=DIR (another location), PIP_INDEX_URL etc. are passed on to pip.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
REQ=$SCRIPT_DIR/requirements-clients.txt
VENV=${CONFORMANCE_VENV:-${CARGO_TARGET_DIR:-$ROOT/target}/conformance-venv}

die() {
    printf 'venv.sh: error: %s\n' "$*" >&2
    exit 2
}

command -v python3 >/dev/null 2>&1 || die "python3 not found on PATH: install Python 3.9 or newer (e.g. 'apt-get install python3 python3-venv')"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 9))' ||
    die "Python 3.9 or newer is needed, found $(python3 --version 2>&1)"

key="$(python3 --version 2>&1) $(sha256sum "$REQ" | cut -d' ' -f1)"
if [[ -x $VENV/bin/python && -f $VENV/.klio-stamp && $(cat "$VENV/.klio-stamp") == "$key" ]]; then
    echo "$VENV/bin/python"
    exit 0
fi

echo "venv.sh: creating $VENV ($(python3 --version 2>&1)) with $(grep -v '^#' "$REQ" | xargs)" >&2
rm -rf "$VENV"
mkdir -p "$(dirname "$VENV")"
if ! python3 -m venv "$VENV" >&2; then
    rm -rf "$VENV"
    die "'python3 -m venv' failed: install the venv module (Debian/Ubuntu: 'apt-get install python3-venv')"
fi
start=$(date +%s)
if ! "$VENV/bin/python" -m pip install --disable-pip-version-check --no-input -q -r "$REQ" >&2; then
    rm -rf "$VENV"
    die "pip could not install $(grep -v '^#' "$REQ" | xargs) from the Python package index.
  The client conformance checks need them; check the network or a PIP_INDEX_URL mirror, then rerun."
fi
echo "$key" >"$VENV/.klio-stamp"
echo "venv.sh: installed in $(($(date +%s) - start))s" >&2
echo "$VENV/bin/python"
