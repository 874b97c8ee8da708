# Sourced by base_image/build.sh (make images): which container engine, and how to run it here.
# Sets ENGINE (podman, else a docker whose engine answers) and, on a machine without systemd,
# CONTAINERS_CONF. Installs podman with apt when neither works and this is root on Debian; otherwise
# says what is missing.

engine_setup() {
  if [ -z "${ENGINE:-}" ]; then
    ENGINE=$(command -v podman || true)
    # A docker client counts only with an engine behind it (some machines ship the client alone).
    if [ -z "$ENGINE" ] && command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
      ENGINE=$(command -v docker)
    fi
  fi
  if [ -z "$ENGINE" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing podman (Debian packages podman, runc, iptables)"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends podman runc iptables \
      containernetworking-plugins >/dev/null
    ENGINE=$(command -v podman)
  fi
  if [ -z "$ENGINE" ]; then
    echo "make images needs podman or docker on PATH (Debian: apt-get install podman runc, as root)" >&2
    return 1
  fi
  case "$ENGINE" in
    *podman)
      if [ ! -d /run/systemd/system ] && [ -z "${CONTAINERS_CONF:-}" ]; then
        CONTAINERS_CONF="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/containers.conf"
        export CONTAINERS_CONF
      fi
      ;;
  esac
  export ENGINE
}
