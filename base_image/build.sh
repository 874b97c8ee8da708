#!/usr/bin/env bash
# `make images`: build every image the operator's plan references, from this repository.
#
#   REGISTRY=ghcr.io/flops-operator VERSION=<pyproject version> base_image/build.sh [IMAGE...]
#   PUSH=1 REGISTRY=registry.example.com/flops base_image/build.sh     (make push: build, then push)
#
# Tags are $REGISTRY/<image>:$VERSION. Order: upstream bases (made locally when no registry answers,
# local_bases.sh), the shared layers (base_image/Dockerfile: python-base, mlflow-base, fl-base), then each image.
# Torch's CPU wheel comes from PyTorch's CPU index, or from a local wheel directory when one holds
# it (TORCH_WHEELS=DIR, or found in pip's configured find-links): a build argument, no file edited.
set -euo pipefail
cd "$(dirname "$0")/.."
source base_image/engine.sh
source base_image/stand_in.sh
engine_setup

REGISTRY=${REGISTRY:-ghcr.io/flops-operator}
VERSION=${VERSION:-$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)}
torch_version=$(sed -n 's/^torch==//p' constraints.txt)

# name  Dockerfile  target  base image (build argument BASE)
IMAGES=(
  "python-base       base_image/Dockerfile            python-base -"
  "mlflow-base       base_image/Dockerfile            mlflow-base -"
  "fl-base           base_image/Dockerfile            fl-base     -"
  "operator          operator/Dockerfile              -           python-base"
  "aggregator        aggregator_image/Dockerfile      -           fl-base"
  "learner           learner_image/Dockerfile         -           fl-base"
  "model-server      model_server_image/Dockerfile    -           fl-base"
  "tracking-server   tracking_image/Dockerfile        -           mlflow-base"
  "backend-store     backend_store_image/Dockerfile   -           -"
  "artifact-store    artifact_store_image/Dockerfile  -           -"
  "builder           builder_image/Dockerfile         -           fl-base"
)

if [ -z "${TORCH_WHEELS:-}" ]; then
  for dir in $(python3 -m pip config list 2>/dev/null | sed -n "s/.*find-links='\(.*\)'/\1/p" | tr ' ' '\n'); do
    if compgen -G "$dir/torch-$torch_version+cpu-*.whl" >/dev/null; then
      TORCH_WHEELS=$dir
      break
    fi
  done
fi
torch_args=()
if [ -n "${TORCH_WHEELS:-}" ]; then
  torch_args=(--build-arg "TORCH_WHEELS=$TORCH_WHEELS" --volume "$TORCH_WHEELS:$TORCH_WHEELS:ro")
  echo "== torch $torch_version+cpu from $TORCH_WHEELS"
fi

wanted=("$@")
selected() {
  [ ${#wanted[@]} -eq 0 ] && return 0
  local w
  for w in "${wanted[@]}"; do [ "$w" = "$1" ] && return 0; done
  return 1
}

base_image/local_bases.sh "$ENGINE"
started=$(date +%s)
for row in "${IMAGES[@]}"; do
  read -r name dockerfile target base <<<"$row"
  selected "$name" || continue
  args=(--build-arg "VERSION=$VERSION")
  [ "$target" != - ] && args+=(--target "$target")
  [ "$base" != - ] && args+=(--build-arg "BASE=$REGISTRY/$base:$VERSION")
  [ "$name" = fl-base ] && args+=("${torch_args[@]}")
  case "$ENGINE" in *podman) args+=(--format docker) ;; esac  # keeps HEALTHCHECK
  where=$dockerfile
  [ "$target" != - ] && where="$dockerfile, stage $target"
  echo "== $REGISTRY/$name:$VERSION ($where)"
  t0=$(date +%s)
  "$ENGINE" build "${args[@]}" -f "$dockerfile" -t "$REGISTRY/$name:$VERSION" . \
    > "${BUILD_LOG_DIR:-/tmp}/flops-image-$name.log" 2>&1 \
    || { echo "build of $name failed; its log:" >&2; tail -n 40 "${BUILD_LOG_DIR:-/tmp}/flops-image-$name.log" >&2; exit 1; }
  echo "   built in $(( $(date +%s) - t0 )) s"
done
echo "== all built in $(( $(date +%s) - started )) s"
"$ENGINE" images --format '{{.Repository}}:{{.Tag}}  {{.Size}}' | grep -F "$REGISTRY/" | sort

if [ "${PUSH:-}" = 1 ]; then
  # What Oakestra's workers pull: the images the plan names (the base layers go with them).
  pushed=()
  for row in "${IMAGES[@]}"; do
    read -r name _ target _ <<<"$row"
    [ "$target" = - ] || continue
    selected "$name" || continue
    pushed+=("$REGISTRY/$name:$VERSION")
  done
  # None of them if any is built on a stand-in base (local_bases.sh): it trusts this host's extra CA certificates.
  refuse_stand_ins "$ENGINE" "${pushed[@]}" || exit 1
  for image in "${pushed[@]}"; do
    echo "== pushing $image"
    "$ENGINE" push "$image"
  done
fi
