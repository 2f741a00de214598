#!/usr/bin/env bash
# The `microvm` sandbox driver's guest (src/sandbox/microvm): Debian's kernel and an initramfs
# of Debian's busybox, the kernel's virtio modules and Kiln's init (src/sandbox/microvm/
# init.sh), built from Debian packages (apt-get download: nothing is installed on the host).
#
#   bash scripts/microvm-image.sh [DIR]   # default: build/microvm-image
#
# Writes DIR/vmlinuz, DIR/initramfs.gz and DIR/VERSION (the kernel package's version and the
# init's hash); does nothing when VERSION says they are current. Needs apt-get (the package
# lists present) and busybox-static on the host (scripts/packages-test.txt) for its cpio.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:-build/microvm-image}")
init=src/sandbox/microvm/init.sh

kernel_pkg=$(apt-cache depends linux-image-amd64 | sed -n 's/^ *Depends: \(linux-image-[0-9].*-amd64\)$/\1/p' | head -1)
if [[ -z $kernel_pkg ]]; then
  echo "microvm-image: apt-cache knows no linux-image-amd64 (run apt-get update)" >&2
  exit 1
fi
version="$kernel_pkg $(sha256sum "$init" | cut -c1-16)"
if [[ -f $out/VERSION && $(cat "$out/VERSION") == "$version" && -f $out/vmlinuz && -f $out/initramfs.gz ]]; then
  exit 0
fi
for tool in busybox gzip dpkg-deb; do
  command -v "$tool" >/dev/null || { echo "microvm-image: $tool is missing (apt-get install busybox-static)" >&2; exit 1; }
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download -q "$kernel_pkg" >/dev/null 2>&1) ||
  (cd "$work" && apt-get download "$kernel_pkg")
dpkg-deb -x "$work"/"$kernel_pkg"_*.deb "$work/pkg"
modules=$(echo "$work"/pkg/lib/modules/*/kernel)

# The initramfs: busybox, the modules the init loads (in its order: each after what it
# depends on), the init. The host's /usr is shared read-only at run time.
root=$work/root
mkdir -p "$root"/{kiln,dev,proc,usr,etc,modules,work,tmp,run}
cp "$(command -v busybox)" "$root/kiln/busybox"
for m in drivers/virtio/virtio_ring drivers/virtio/virtio drivers/virtio/virtio_mmio \
  drivers/char/virtio_console fs/netfs/netfs fs/fscache/fscache net/9p/9pnet \
  net/9p/9pnet_virtio fs/9p/9p; do
  cp "$modules/$m.ko" "$root/modules/"
done
install -m 0755 "$init" "$root/init"

mkdir -p "$out"
(cd "$root" && find . | LC_ALL=C sort | busybox cpio -o -H newc 2>/dev/null) | gzip -6 >"$out/initramfs.gz.new"
cp "$(echo "$work"/pkg/boot/vmlinuz-*)" "$out/vmlinuz.new"
mv "$out/initramfs.gz.new" "$out/initramfs.gz"
mv "$out/vmlinuz.new" "$out/vmlinuz"
echo "$version" >"$out/VERSION"
echo "microvm-image: $out ($version)"
