#!/usr/bin/env bash
# Headless Chromium + ChromeDriver (Debian packages) for the report's browser test and --pdf.
# Installs them when missing and this user can (root with apt-get); otherwise says how, and the
# browser test is skipped with that reason.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "Installing chromium and chromium-driver (Debian) for the report tests ..."
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
else
  echo "note: chromium/chromedriver not installed; run 'sudo apt-get install chromium chromium-driver' for the browser test and --pdf" >&2
fi
