#!/usr/bin/env bash
# The official Python Kubernetes client (PyPI `kubernetes`) against a running klio-api demo.
#
# Usage: conformance/python-client.sh KUBECONFIG
#   (start one with `klio-api demo --dir DIR --port 0`; KUBECONFIG is DIR/kubeconfig.
#    conformance/clients.sh starts a demo and runs this with the other client checks.)
#
# Creates the cached virtual environment first (conformance/venv.sh: pip install kubernetes,
# into target/conformance-venv), then runs conformance/python-client.py, which prints one line per
# check and `python-client: N passed, M failed`.
set -euo pipefail
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

if [[ $# -ne 1 || ! -f $1 ]]; then
    echo "usage: conformance/python-client.sh KUBECONFIG   (the kubeconfig a running 'klio-api demo' wrote)" >&2
    exit 2
fi
PY=$("$SCRIPT_DIR/venv.sh")
exec timeout 120 "$PY" "$SCRIPT_DIR/python-client.py" "$1"
