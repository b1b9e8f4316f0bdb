#!/usr/bin/env bash
# Render a Snakemake HTML report in headless Chromium (installed from Debian packages when missing).
#
# Usage:
#   tests/browser/render_report.sh REPORT.html OUT.png [WIDTH,HEIGHT]   # screenshot of the report's start page
#   tests/browser/render_report.sh --install-only                       # only make sure Chromium is there
#   tests/browser/render_report.sh --which                              # print the Chromium binary, or fail
#
# Chromium is looked up as $CHROMIUM, then chromium / chromium-browser / google-chrome on PATH. When none is
# found it is installed with apt-get (root, or passwordless sudo, needed); the install time is printed on
# stderr. Exit status 3 means "Chromium is not available and could not be installed" (the pytest tests
# turn that into a skip with the reason printed here).
#
# The screenshot waits for the report's JavaScript with --virtual-time-budget (the report is one
# self-contained file: React and the data are embedded, nothing is fetched). The pytest tests
# (tests/workflow/test_report_browser.py, test_explorer_browser.py) drive Chromium through the DevTools protocol
# instead (tests/browser/browser_common.py; the walks are report_browser.py and explorer_browser.py, also commands:
# `.venv/bin/python tests/browser/report_browser.py results/report.html OUTDIR`) to catch JavaScript errors, click
# through every figure and screenshot.
set -euo pipefail

NOT_AVAILABLE=3

find_chromium() {
    local candidate
    for candidate in "${CHROMIUM:-}" chromium chromium-browser google-chrome google-chrome-stable; do
        [[ -n "$candidate" ]] || continue
        if command -v "$candidate" >/dev/null 2>&1; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

install_chromium() {
    local sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
            sudo=(sudo -n)
        else
            echo "render_report: chromium is missing and this user is not root (no passwordless sudo) to apt-get it" >&2
            return "$NOT_AVAILABLE"
        fi
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "render_report: chromium is missing and there is no apt-get to install it" >&2
        return "$NOT_AVAILABLE"
    fi
    local start=$SECONDS log
    log=$(mktemp)
    echo "render_report: installing chromium with apt-get (log: $log) ..." >&2
    # Debian's package is `chromium`; refresh the package lists only when it is unknown.
    if ! apt-cache show chromium >/dev/null 2>&1; then
        "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=600 update >>"$log" 2>&1 || true
    fi
    # The SLURM test may be installing its packages at the same moment (another pytest worker): wait for the lock.
    if ! DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends \
        chromium fonts-dejavu-core >>"$log" 2>&1; then
        tail -n 15 "$log" >&2
        echo "render_report: apt-get install chromium failed (offline, or no such package?); see $log" >&2
        return "$NOT_AVAILABLE"
    fi
    rm -f "$log"
    echo "render_report: chromium installed in $((SECONDS - start)) s" >&2
}

ensure_chromium() {
    local binary
    if binary=$(find_chromium); then
        echo "$binary"
        return 0
    fi
    install_chromium || return $?
    if ! binary=$(find_chromium); then
        echo "render_report: apt-get ran but no chromium binary is on PATH" >&2
        return "$NOT_AVAILABLE"
    fi
    echo "$binary"
}

case "${1:-}" in
    --install-only)
        ensure_chromium >/dev/null
        exit 0
        ;;
    --which)
        ensure_chromium
        exit 0
        ;;
    "" | -h | --help)
        sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'
        [[ -n "${1:-}" ]] && exit 0 || exit 2
        ;;
esac

if [[ $# -lt 2 ]]; then
    echo "usage: $0 REPORT.html OUT.png [WIDTH,HEIGHT]" >&2
    exit 2
fi
report=$1
out=$2
size=${3:-1400,1000}
if [[ ! -f "$report" ]]; then
    echo "render_report: no such report: $report" >&2
    exit 2
fi
chromium=$(ensure_chromium)

report_url="file://$(cd "$(dirname "$report")" && pwd)/$(basename "$report")"
out_abs="$(cd "$(dirname "$out")" && pwd)/$(basename "$out")"
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT

"$chromium" --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --hide-scrollbars \
    --no-first-run --no-default-browser-check --user-data-dir="$profile" \
    --window-size="$size" --virtual-time-budget=15000 --run-all-compositor-stages-before-draw \
    --screenshot="$out_abs" "$report_url" 2> >(grep -v -E 'dbus|Fontconfig|GPU|gpu_|sandbox|unexpected operator' >&2 || true)

if [[ ! -s "$out_abs" ]]; then
    echo "render_report: chromium wrote no screenshot to $out_abs" >&2
    exit 1
fi
echo "$out_abs"
