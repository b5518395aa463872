#!/usr/bin/env bash
# The documentation site in a real browser.
#
# Usage: conformance/docs-browser.sh [SITE_DIR]        (default: docs/site)
#
# Serves SITE_DIR with `python3 -m http.server` on a free 127.0.0.1 port, and has headless
# Chromium (Debian's package, driven by playwright-core) load every page. Fails on a page that
# does not load, a console error, a failed or non-200 request, a request leaving 127.0.0.1, a
# link whose target does not answer 200 or whose #anchor does not exist, or a page without its
# stylesheet. Saves screenshots of the reference page to target/docs-browser/.
#
# Needs: chromium (/usr/bin/chromium; installed with apt-get when running as root, as in CI),
# node and npm (playwright-core is installed once into target/docs-browser/node_modules), python3.
# Knobs: CHROMIUM=/path/to/chromium, PLAYWRIGHT_CORE_VERSION (default below).
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
SITE=${1:-$ROOT/docs/site}
WORK=$ROOT/target/docs-browser
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
PLAYWRIGHT_CORE_VERSION=${PLAYWRIGHT_CORE_VERSION:-1.65.1}

die() {
    printf 'docs-browser.sh: error: %s\n' "$*" >&2
    exit 2
}

[[ -f $SITE/index.html ]] || die "no site at $SITE (generate it with: cargo run -p klio-docs -- --out docs/site)"
SITE=$(cd "$SITE" && pwd)

# apt-get install, for root only (CI runs as root); `apt-get update` first when the lists are
# missing or the package is not found in them.
apt_install() {
    if [[ $(id -u) != 0 ]]; then
        return 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq "$@" >/dev/null 2>&1 || {
        apt-get update -qq && apt-get install -y -qq "$@" >/dev/null
    }
}

if [[ ! -x $CHROMIUM ]]; then
    if [[ $CHROMIUM == /usr/bin/chromium ]] && apt_install chromium; then
        echo "installed chromium: $($CHROMIUM --version 2>/dev/null || echo '?')"
    else
        die "Chromium not found at $CHROMIUM.
  As root (or in CI) this script installs it with 'apt-get install chromium'; otherwise run
    sudo apt-get update && sudo apt-get install -y chromium
  or point CHROMIUM at a Chromium or Chrome binary: CHROMIUM=/path/to/chrome $0"
    fi
fi
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    apt_install nodejs npm || die "node and npm are required (apt-get install nodejs npm)"
fi
command -v python3 >/dev/null 2>&1 || apt_install python3 || die "python3 is required (apt-get install python3)"

# playwright-core (no browser download: it drives the Chromium above), cached under target/.
mkdir -p "$WORK"
installed=$(node -e 'try { console.log(require(process.argv[1]).version) } catch { }' \
    "$WORK/node_modules/playwright-core/package.json" 2>/dev/null || true)
if [[ $installed != "$PLAYWRIGHT_CORE_VERSION" ]]; then
    echo "installing playwright-core@$PLAYWRIGHT_CORE_VERSION into $WORK/node_modules"
    [[ -f $WORK/package.json ]] || echo '{"private": true}' >"$WORK/package.json"
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --prefix "$WORK" --no-audit --no-fund --loglevel=error \
        "playwright-core@$PLAYWRIGHT_CORE_VERSION" >&2 ||
        die "npm could not install playwright-core@$PLAYWRIGHT_CORE_VERSION"
fi

# The site on a free loopback port.
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
LOG=$WORK/http-server.log
python3 -m http.server "$PORT" --bind 127.0.0.1 --directory "$SITE" >"$LOG" 2>&1 &
SERVER_PID=$!
cleanup() {
    local rc=$?
    if kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
python3 - "$PORT" <<'EOF' || die "the HTTP server did not start (log: $LOG)"
import sys, time, urllib.request
for _ in range(100):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/index.html", timeout=1).read()
        sys.exit(0)
    except Exception:
        time.sleep(0.1)
sys.exit(1)
EOF

echo "docs browser check: $SITE on http://127.0.0.1:$PORT/ with $($CHROMIUM --version 2>/dev/null || echo "$CHROMIUM")"
PLAYWRIGHT_DIR=$WORK/node_modules CHROMIUM=$CHROMIUM \
    node "$SCRIPT_DIR/docs-browser.mjs" "http://127.0.0.1:$PORT/" "$SITE" "$WORK"
