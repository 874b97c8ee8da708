#!/usr/bin/env bash
# The two upstream base images, made locally when no container registry can be reached.
#
#   base_image/local_bases.sh ENGINE
#
# For docker.io/library/python:3.11-slim and docker.io/library/debian:bookworm-slim: nothing if the
# engine has it; else a pull; else (no registry, e.g. a machine that reaches only package mirrors)
# a stand-in under the same name, made with mmdebstrap from Debian bookworm packages (Python 3.11
# is bookworm's python3), so that every Dockerfile stays the one a normal machine builds. A stand-in is
# labelled (stand_in.sh): `make push` refuses to push images built on one.
set -euo pipefail
engine=$1
here=$(cd "$(dirname "$0")" && pwd)
source "$here/stand_in.sh"

have() { "$engine" image exists "$1" 2>/dev/null || "$engine" image inspect "$1" >/dev/null 2>&1; }

make_rootfs() {  # name, packages
  local name=$1 packages=$2 work
  if ! command -v mmdebstrap >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      apt-get update -q >/dev/null
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends mmdebstrap >/dev/null
    else
      echo "$name cannot be pulled and mmdebstrap is missing to make it (apt-get install mmdebstrap)" >&2
      exit 1
    fi
  fi
  work=$(mktemp -d)
  echo "== $name: no registry answers; making a stand-in from Debian bookworm with mmdebstrap"
  # The hook: `python`/`pip` where the official image has them, pip allowed to install system-wide
  # (as in the official image), and the host's extra CA certificates trusted (some networks
  # intercept TLS to the package registries).
  mmdebstrap --quiet --variant=minbase --include="$packages" \
    --customize-hook='ln -sf /usr/bin/python3 "$1/usr/local/bin/python" 2>/dev/null || true' \
    --customize-hook='[ ! -e "$1/usr/bin/pip3" ] || ln -sf /usr/bin/pip3 "$1/usr/local/bin/pip"' \
    --customize-hook='rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED' \
    --customize-hook='for c in /usr/local/share/ca-certificates/*.crt; do [ -e "$c" ] && cp "$c" "$1/usr/local/share/ca-certificates/"; done; chroot "$1" update-ca-certificates >/dev/null 2>&1 || true' \
    bookworm "$work/rootfs.tar"
  import_stand_in "$engine" "$work/rootfs.tar" "$name" "$3"
  rm -rf "$work"
}

ensure() {  # name, packages, default command
  local name=$1
  if have "$name"; then
    label_old_stand_in "$engine" "$name"
    return
  fi
  if timeout 120 "$engine" pull -q "$name" >/dev/null 2>&1; then
    echo "== $name: pulled"
    return
  fi
  make_rootfs "$@"
}

ensure docker.io/library/python:3.11-slim "python3,python3-venv,python3-pip,ca-certificates,passwd" python3
ensure docker.io/library/debian:bookworm-slim "ca-certificates,passwd" bash
