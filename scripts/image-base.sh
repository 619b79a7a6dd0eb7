#!/bin/sh
# Makes the Dockerfile's base image, debian:12-slim, from Debian's own repositories, for a
# machine that has podman but no Docker Hub (no registry, or no Docker at all):
#
#   sh scripts/image-base.sh            # then: podman build --format docker ... (README.md)
#
# mmdebstrap builds a minbase bookworm root file system (essential packages plus apt, merged
# /usr) with the slim image's dpkg settings: no documentation beyond copyright files, no man
# pages, no translations. The tarball is cached, keyed by this recipe, and remade when it is a
# week old (the base then carries the week's security updates); `podman import` turns it
# into docker.io/library/debian:12-slim, where `FROM debian:12-slim` finds it without a pull.
#
# Unlike the real debian:12-slim, the base has no apt hook that deletes downloaded packages
# after each install (docker-clean): the Dockerfile cleans apt's caches itself, and building
# on this base shows that it does.
#
# Environment:
#   PODMAN            the podman command, with global options (default: podman), e.g.
#                     "podman --root /tmp/x/storage --runroot /tmp/x/run" for a storage of its own
#   WEIR_IMAGE_CACHE  where the tarball is kept (default: ${XDG_CACHE_HOME:-~/.cache}/weir)
#   DEBIAN_MIRROR     default http://deb.debian.org/debian (security updates always come from
#                     http://deb.debian.org/debian-security)
# Options: --force  remake the tarball and the image even if they exist.
set -eu

PODMAN=${PODMAN:-podman}
cache=${WEIR_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/weir}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
tag=docker.io/library/debian:12-slim
force=0
case "${1:-}" in
--force) force=1 ;;
"") ;;
*) echo "usage: image-base.sh [--force]" >&2; exit 2 ;;
esac

podman_bin=${PODMAN%% *}
for tool in mmdebstrap "$podman_bin"; do
    command -v "$tool" >/dev/null 2>&1 || {
        echo "image-base.sh: $tool is not installed (sh scripts/deps.sh image)" >&2
        exit 1
    }
done

# The recipe: everything that decides what the tarball holds. Its hash names the tarball.
set -- --variant=minbase --format=tar --skip=output/dev \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/groff/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/lintian/*' \
    --dpkgopt='path-exclude=/usr/share/linda/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --aptopt='Acquire::Languages "none"' \
    bookworm
key=$(printf '%s\n' "$@" "$mirror" | sha256sum | cut -c1-16)
tarball="$cache/debian-12-slim-$key.tar"

if [ "$force" -eq 0 ] && $PODMAN image exists "$tag" 2>/dev/null; then
    echo "image-base.sh: $tag is already there (--force to remake it)" >&2
    exit 0
fi

mkdir -p "$cache"
# a week old: remade, so that the base has the current security updates
find "$cache" -maxdepth 1 -name 'debian-12-slim-*.tar' -mtime +6 -exec rm -f {} +
if [ "$force" -eq 1 ] || [ ! -s "$tarball" ]; then
    echo "image-base.sh: mmdebstrap bookworm (minbase, slim) into $tarball" >&2
    tmp="$tarball.tmp.$$"
    trap 'rm -f "$tmp" "$tmp.log"' EXIT INT TERM
    if ! mmdebstrap "$@" "$tmp" "deb $mirror bookworm main" \
        "deb $mirror bookworm-updates main" \
        "deb http://deb.debian.org/debian-security bookworm-security main" >"$tmp.log" 2>&1; then
        cat "$tmp.log" >&2
        echo "image-base.sh: mmdebstrap failed (its output is above)" >&2
        exit 1
    fi
    mv "$tmp" "$tarball"
fi
$PODMAN import --quiet --change 'CMD ["bash"]' "$tarball" "$tag" >/dev/null
echo "image-base.sh: imported $tarball as $tag" >&2
