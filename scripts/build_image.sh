#!/usr/bin/env bash
# Build the semroute container image from the Dockerfile with buildah: chroot isolation, no daemon, and no
# container registry needed (none is reachable from our build machines).
#
#   scripts/build_image.sh [TAG]          default TAG: localhost/semroute:latest
#
# Needs buildah, and mmdebstrap the first time (apt-get install -y buildah mmdebstrap), run as root. Without a
# registry there is no python:3.11-slim to start from, so the base image is made here: a minimal Debian bookworm
# root filesystem with python3 (mmdebstrap, from Debian's package mirror), imported with buildah as
# localhost/semroute-base:bookworm. With a registry, BASE_IMAGE=python:3.11-slim builds on the usual base.
#
# Environment:
#   BASE_IMAGE       base of both stages (default localhost/semroute-base:bookworm, made when missing)
#   HOST_PIP         auto (default): bind-mount this machine's pip configuration into the build's RUN steps
#                    (/etc/pip.conf, /etc/xdg/pip, the CA bundle, the local directories pip.conf names), so a
#                    build behind a TLS-intercepting proxy or from a local wheelhouse works; no: mount nothing
#   (RUN steps then see the same package sources this machine's pip uses; the image keeps none of them)
#   STORAGE_DRIVER   containers/storage driver (default vfs: works inside containers, where overlay may not)
# The image is written in docker format: the OCI format has no HEALTHCHECK.
set -euo pipefail
cd "$(dirname "$0")/.."

TAG=${1:-localhost/semroute:latest}
BASE_IMAGE=${BASE_IMAGE:-localhost/semroute-base:bookworm}
export STORAGE_DRIVER=${STORAGE_DRIVER:-vfs}
export BUILDAH_ISOLATION=${BUILDAH_ISOLATION:-chroot}
SUITE=bookworm

command -v buildah >/dev/null || { echo "build_image: buildah not found (apt-get install -y buildah)" >&2; exit 2; }

if ! buildah inspect --type image "$BASE_IMAGE" >/dev/null 2>&1; then
  if [[ $BASE_IMAGE != localhost/semroute-base:* ]]; then
    echo "build_image: base image $BASE_IMAGE is not in local storage; buildah will try to pull it" >&2
  else
    command -v mmdebstrap >/dev/null || {
      echo "build_image: no base image and no mmdebstrap to make one (apt-get install -y mmdebstrap)" >&2; exit 2; }
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    echo "build_image: making $BASE_IMAGE (Debian $SUITE, python3) with mmdebstrap ..." >&2
    # minbase: essential packages + apt; python3-venv for the virtual environments both stages use; passwd for
    # useradd; no documentation, manuals or translations (the image never shows them)
    mmdebstrap --variant=minbase --include=python3,python3-venv,ca-certificates,passwd \
      --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
      --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
      --dpkgopt='path-exclude=/usr/share/locale/*' \
      "$SUITE" "$work/rootfs.tar" >&2
    ctr=$(buildah from scratch)
    buildah add "$ctr" "$work/rootfs.tar" / >/dev/null
    buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --env LANG=C.UTF-8 \
      --cmd '["python3"]' --label "org.opencontainers.image.description=Debian $SUITE minbase + python3 (mmdebstrap)" \
      "$ctr"
    buildah commit --rm -q "$ctr" "$BASE_IMAGE" >/dev/null
  fi
fi

mounts=()
if [[ ${HOST_PIP:-auto} == auto ]]; then
  # site-wide files at their own paths; the user's pip.conf where root's pip looks for it (RUN steps run as root)
  paths=(/etc/pip.conf /etc/xdg/pip /etc/ssl/certs/ca-certificates.crt)
  user_conf=${XDG_CONFIG_HOME:-$HOME/.config}/pip/pip.conf
  [[ -f $user_conf ]] && mounts+=(--volume "$user_conf:/root/.config/pip/pip.conf:ro")
  # a file:// index is mounted whole: its simple/ pages link to files beside it
  for conf in /etc/pip.conf /etc/xdg/pip/pip.conf "$user_conf"; do
    [[ -f $conf ]] && while read -r p; do paths+=("$p"); done < <(grep -oE '(file://)?/[^ ]+' "$conf" | sed -e 's|^file://||' -e 's|/simple/*$||')
  done
  for p in $(printf '%s\n' "${paths[@]}" | sort -u); do
    [[ -e $p ]] && mounts+=(--volume "$p:$p:ro")
  done
fi

(( ${#mounts[@]} )) && echo "build_image: RUN steps see: ${mounts[*]}" >&2
args=(--build-arg "BASE_IMAGE=$BASE_IMAGE")

t0=$(date +%s)
buildah bud --isolation "$BUILDAH_ISOLATION" --pull=false --layers --format docker "${mounts[@]}" "${args[@]}" -t "$TAG" . >&2
echo "build_image: built $TAG in $(( $(date +%s) - t0 )) s" >&2
buildah images --format '{{.Name}}:{{.Tag}} {{.Size}}' "$TAG"
