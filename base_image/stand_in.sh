# Sourced by local_bases.sh and build.sh: the stand-in base images, and why `make push` never pushes what is built
# on them.
#
# A stand-in (made by local_bases.sh when no registry answers) carries the label STAND_IN_LABEL. Labels are part
# of an image's config, which every image built FROM it inherits, so each image of `make images` built on a
# stand-in carries it too, however many bases lie between: that label is what the push check looks at.
# A stand-in trusts the build host's extra CA certificates (networks that intercept TLS to the package registries
# need them there): fine for the host that built it, not for images other machines pull.

STAND_IN_LABEL=flops-operator.stand-in-base
STAND_IN_WHY="made locally with mmdebstrap because no registry answered; trusts the build host's extra CA certificates"

# engine, tarball, name, default command: the stand-in base from a root filesystem, labelled.
import_stand_in() {
  "$1" import --quiet \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change "CMD [\"$4\"]" \
    --change "LABEL $STAND_IN_LABEL=\"$STAND_IN_WHY\"" \
    "$2" "$3" >/dev/null
}

# engine, image: the label's value on the image (empty when it is not built on a stand-in).
stand_in_of() {
  local value
  value=$("$1" image inspect --format "{{ index .Config.Labels \"$STAND_IN_LABEL\" }}" "$2") || return 1
  [ "$value" = "<no value>" ] && value=
  printf '%s' "$value"
}

# engine, name: a stand-in made before stand-ins were labelled (an import: its only history entry says
# "imported from ...", which no image pulled from a registry does) gets the label now, so that images built on it
# from now on carry it as well.
label_old_stand_in() {
  local engine=$1 name=$2 comment work
  [ -z "$(stand_in_of "$engine" "$name")" ] || return 0
  comment=$("$engine" image inspect --format '{{.Comment}}' "$name" 2>/dev/null || true)
  case "$(printf '%s' "$comment" | tr '[:upper:]' '[:lower:]')" in
    "imported from"*) ;;
    *) return 0 ;;
  esac
  echo "== $name: a stand-in made before they were labelled; labelling it (the images built on it are rebuilt)"
  work=$(mktemp -d)
  printf 'FROM %s\nLABEL %s="%s"\n' "$name" "$STAND_IN_LABEL" "$STAND_IN_WHY" >"$work/Containerfile"
  "$engine" build --quiet -t "$name" -f "$work/Containerfile" "$work" >/dev/null
  rm -rf "$work"
}

# engine, image...: one line per image built on a stand-in base, and status 1 if there is any (or one cannot be
# inspected): what `make push` must not push.
refuse_stand_ins() {
  local engine=$1 image value refused=0
  shift
  for image in "$@"; do
    if ! value=$(stand_in_of "$engine" "$image"); then
      echo "make push: cannot inspect $image" >&2
      refused=1
    elif [ -n "$value" ]; then
      echo "make push: refusing to push $image: it is built on a stand-in base image ($STAND_IN_LABEL: $value)." \
        "Push images built on the real bases: where a registry answers, remove the stand-ins" \
        "($(basename "$engine") rmi docker.io/library/python:3.11-slim docker.io/library/debian:bookworm-slim)" \
        "and run make push again (it pulls them)." >&2
      refused=1
    fi
  done
  return $refused
}
