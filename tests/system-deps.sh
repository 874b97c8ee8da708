#!/usr/bin/env bash
# What the test suite needs beyond its Python packages (`make deps`, run by `make test`).
# On Debian as root it installs what is missing; otherwise it names each missing thing and the
# command that installs it, and fails.
set -euo pipefail
PY=${PY:-python3}
# Debian keeps server binaries in sbin, which is not on every user's PATH.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

missing_packages() {
  # The venv `make install` creates needs ensurepip (Debian: python3-venv).
  "$PY" -c 'import ensurepip' 2>/dev/null || echo python3-venv
  # The MySQL backend-store end-to-end test runs a private MariaDB server.
  { command -v mariadbd && command -v mariadb-install-db; } >/dev/null 2>&1 || echo mariadb-server
  # Bring-your-own-model tests: a Git server (git http-backend, git daemon), a real registry (CNCF distribution)
  # and htpasswd for its logins.
  command -v git >/dev/null 2>&1 || echo git
  command -v docker-registry >/dev/null 2>&1 || echo docker-registry
  command -v htpasswd >/dev/null 2>&1 || echo apache2-utils
}

packages=$(missing_packages)
if [ -n "$packages" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "deps: installing $packages (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  # shellcheck disable=SC2086  # one word per package
  apt-get install -y -q --no-install-recommends $packages
  packages=$(missing_packages)
fi
if [ -n "$packages" ]; then
  for package in $packages; do
    case $package in
      python3-venv) echo "deps: missing: Python's venv/ensurepip for $PY: sudo apt-get install python3-venv" >&2 ;;
      mariadb-server) echo "deps: missing: mariadbd and mariadb-install-db: sudo apt-get install mariadb-server" >&2 ;;
      *) echo "deps: missing: $package: sudo apt-get install $package" >&2 ;;
    esac
  done
  echo "deps: make test needs them (run it as root on Debian to have them installed)" >&2
  exit 1
fi
if ! command -v kubectl >/dev/null; then
  echo "deps: note: no kubectl: tests/e2e/test_manifests_kustomize.py (kustomize render of manifests/operator) will be skipped"
fi
