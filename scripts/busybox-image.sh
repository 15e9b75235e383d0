#!/usr/bin/env bash
# Build the local image cube-busybox:latest from Debian's static busybox with `docker import`.
# There is no registry to pull from, so tests and demos use this tiny self-made image instead.
# Idempotent: does nothing when the image exists, unless --force is given.
set -euo pipefail

IMAGE="cube-busybox:latest"
BUSYBOX=/bin/busybox
APPLETS="sh sleep httpd wget echo cat ls rm mkdir true false env kill ps grep head tail printf date"

force=0
for arg in "$@"; do
    case "$arg" in
        --force) force=1 ;;
        -h|--help) echo "usage: $0 [--force]"; exit 0 ;;
        *) echo "error: unknown argument '$arg' (usage: $0 [--force])" >&2; exit 2 ;;
    esac
done

if ! command -v docker >/dev/null 2>&1; then
    echo "error: the docker CLI is not installed" >&2; exit 1
fi
if ! docker info >/dev/null 2>&1; then
    echo "error: cannot reach the Docker daemon (is dockerd running? try 'docker info')" >&2; exit 1
fi

if [ "$force" -eq 0 ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "$IMAGE already exists (use --force to rebuild)"
    exit 0
fi

# A dynamically linked busybox would not run in an image without libc: require the static build.
is_static() { [ -x "$BUSYBOX" ] && ! ldd "$BUSYBOX" >/dev/null 2>&1; }
if ! is_static; then
    echo "installing busybox-static..."
    DEBIAN_FRONTEND=noninteractive apt-get install -y busybox-static >/dev/null
fi
if ! is_static; then
    echo "error: $BUSYBOX is missing or not statically linked" >&2; exit 1
fi

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/www" "$root/tmp" "$root/etc"
chmod 1777 "$root/tmp"
cp "$BUSYBOX" "$root/bin/busybox"
for applet in $APPLETS; do
    ln -s busybox "$root/bin/$applet"
done
echo "hello from cube" > "$root/www/index.html"
echo "ok" > "$root/www/health"
echo "root:x:0:0:root:/:/bin/sh" > "$root/etc/passwd"
echo "root:x:0:" > "$root/etc/group"

tar -C "$root" --numeric-owner -c . | docker import \
    --change 'CMD ["sh"]' \
    --change 'ENV PATH=/bin' \
    --message "cube busybox test image" \
    - "$IMAGE" >/dev/null
echo "built $IMAGE"
