#!/usr/bin/env bash
# The system programs the tests start for real: Debian's Chromium (the MLflow UI test) and
# PostgreSQL (an MLflow tracking server's backend store). Installs what is missing with apt-get
# (as root, or with passwordless sudo); otherwise stops with the command to run.
set -euo pipefail

missing=()
# Debian's chromium; Ubuntu runners (GitHub's) ship Google Chrome instead, which does as well.
command -v chromium >/dev/null 2>&1 || command -v google-chrome >/dev/null 2>&1 || missing+=(chromium)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
[ ${#missing[@]} -eq 0 ] && exit 0

install=(apt-get install -y --no-install-recommends "${missing[@]}")
if [ "$(id -u)" -eq 0 ]; then
  run=()
elif sudo -n true 2>/dev/null; then
  run=(sudo)
else
  echo "missing system packages: ${missing[*]}; install them with: sudo ${install[*]}" >&2
  exit 1
fi
echo "installing ${missing[*]} (apt-get)"
"${run[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
"${run[@]}" env DEBIAN_FRONTEND=noninteractive "${install[@]}" -q >/dev/null
