#!/usr/bin/env bash
# Render a drift report (controller report NAME --html report.html) to a PNG with headless Chromium,
# to check that the page and its inline images display. Usage:
#
#   scripts/render_report.sh report.html shot.png [width] [height]
#
# Chromium is not a dependency of the controller: on Debian, `apt-get install -y chromium`.
# The flags keep it offline and stateless: no GPU, no sandbox (containers run as root), no
# background network, no component updates, a throw-away profile directory.
set -euo pipefail
html="${1:?usage: render_report.sh report.html shot.png [width] [height]}"
out="${2:?usage: render_report.sh report.html shot.png [width] [height]}"
width="${3:-1200}"
height="${4:-4000}"
chromium="${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}"
if [[ -z "$chromium" || ! -x "$chromium" ]]; then
  echo "error: chromium not found; install it (apt-get install -y chromium) or set CHROMIUM" >&2
  exit 1
fi
profile="$(mktemp -d)"
trap 'rm -rf "$profile"' EXIT
abs_html="$(cd "$(dirname "$html")" && pwd)/$(basename "$html")"
abs_out="$(cd "$(dirname "$out")" && pwd)/$(basename "$out")"
"$chromium" --headless --no-sandbox --disable-gpu --disable-background-networking \
  --disable-component-update --no-first-run --user-data-dir="$profile" --hide-scrollbars \
  --window-size="${width},${height}" --screenshot="$abs_out" "file://$abs_html" >/dev/null 2>&1
test -s "$abs_out" || { echo "error: chromium wrote no screenshot to $abs_out" >&2; exit 1; }
echo "wrote $abs_out"
