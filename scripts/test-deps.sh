#!/usr/bin/env bash
# Fetches the binaries the test suite needs beyond pip, idempotently:
#   <repo>/.test-deps/bin/prometheus, <repo>/.test-deps/bin/promtool  (Debian's `prometheus`)
#   chromium on PATH                                                  (Debian's `chromium`)
# Exits non-zero if any of them is still missing afterwards, so a test run never skips them.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
deps="$repo/.test-deps"
mkdir -p "$deps/bin" "$deps/debs"

sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

updated=0
apt_update_once() {
  if [ "$updated" -eq 0 ]; then sudo_if_needed apt-get update -qq; updated=1; fi
}

fetch_prometheus() {
  if [ -x "$deps/bin/prometheus" ] && [ -x "$deps/bin/promtool" ]; then return 0; fi
  # `apt-get download` writes into the working directory; it needs no root.
  (cd "$deps/debs" && rm -f prometheus_*.deb \
     && { apt-get download -qq prometheus 2>/dev/null \
          || { apt_update_once && apt-get download -qq prometheus; }; })
  local deb
  deb="$(ls "$deps"/debs/prometheus_*.deb | head -n1)"
  rm -rf "$deps/prometheus-root"
  dpkg -x "$deb" "$deps/prometheus-root"
  ln -sf "$deps/prometheus-root/usr/bin/prometheus" "$deps/bin/prometheus"
  ln -sf "$deps/prometheus-root/usr/bin/promtool" "$deps/bin/promtool"
}

fetch_chromium() {
  if command -v chromium >/dev/null 2>&1; then return 0; fi
  export DEBIAN_FRONTEND=noninteractive
  sudo_if_needed apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 \
    || { apt_update_once \
         && sudo_if_needed apt-get install -y -qq --no-install-recommends chromium >/dev/null; }
}

fetch_prometheus
fetch_chromium

missing=0
for exe in "$deps/bin/prometheus" "$deps/bin/promtool"; do
  if ! "$exe" --version >/dev/null 2>&1; then echo "test-deps: missing $exe" >&2; missing=1; fi
done
if ! command -v chromium >/dev/null 2>&1; then echo "test-deps: missing chromium" >&2; missing=1; fi
[ "$missing" -eq 0 ] && echo "test-deps: ok ($deps/bin: prometheus promtool; chromium: $(command -v chromium))"
exit "$missing"
