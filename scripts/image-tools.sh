#!/usr/bin/env bash
# Installs what booting the enclave image needs, cached under $TOOLS; sourced by
# scripts/test.sh (and usable alone: `TOOLS=.tools . scripts/image-tools.sh`).
#
#   - QEMU 10 (qemu-system-x86) from Debian's bookworm-backports (added to apt's sources);
#   - vhost-device-vsock (rust-vmm, crates.io) into $TOOLS/vhost-device-vsock;
#   - a test kernel: Debian's linux-image package, downloaded with `apt-get download` and
#     unpacked (not installed) into $TOOLS/kernel/<package>/, with the vsock modules the
#     image's init loads.
#
# Exports QEMU, VHOST_DEVICE_VSOCK and TANDEM_TEST_KERNEL_DIR. Each step is skipped when
# its result is already there.
set -euo pipefail

: "${TOOLS:?set TOOLS to the cache directory}"
mkdir -p "$TOOLS"
VHOST_VERSION=0.3.0

apt_updated=0
apt_update() {
  if [ "$apt_updated" = 0 ]; then
    apt-get update -qq
    apt_updated=1
  fi
}

# --- QEMU ---------------------------------------------------------------------------------
if ! command -v qemu-system-x86_64 >/dev/null; then
  echo "installing qemu-system-x86 from bookworm-backports"
  if ! grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/; then
    cat > /etc/apt/sources.list.d/bookworm-backports.sources <<'EOF'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  fi
  apt_update
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    -t bookworm-backports qemu-system-x86 >/dev/null
fi
export QEMU
QEMU=$(command -v qemu-system-x86_64)
"$QEMU" --version | head -1

# --- vhost-device-vsock -------------------------------------------------------------------
export VHOST_DEVICE_VSOCK="$TOOLS/vhost-device-vsock/bin/vhost-device-vsock"
if [ ! -x "$VHOST_DEVICE_VSOCK" ]; then
  echo "installing vhost-device-vsock $VHOST_VERSION from crates.io into $TOOLS/vhost-device-vsock"
  cargo install --quiet --locked --root "$TOOLS/vhost-device-vsock" "vhost-device-vsock@$VHOST_VERSION"
fi
echo "vhost-device-vsock: $VHOST_DEVICE_VSOCK"

# --- the test kernel ----------------------------------------------------------------------
KERNEL_CACHE="$TOOLS/kernel"
mkdir -p "$KERNEL_CACHE"
TANDEM_TEST_KERNEL_DIR=$(find "$KERNEL_CACHE" -mindepth 1 -maxdepth 1 -type d -name 'linux-image-*' 2>/dev/null | sort | tail -1)
if [ -z "$TANDEM_TEST_KERNEL_DIR" ] || ! ls "$TANDEM_TEST_KERNEL_DIR"/boot/vmlinuz-* >/dev/null 2>&1; then
  apt_update
  # linux-image-amd64 is a metapackage: its dependency names the current kernel package.
  PKG=$(apt-cache depends linux-image-amd64 | sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | head -1)
  [ -n "$PKG" ] || { echo "cannot find the kernel package behind linux-image-amd64" >&2; exit 1; }
  echo "downloading $PKG (Debian) into $KERNEL_CACHE (unpacked, not installed)"
  mkdir -p "$KERNEL_CACHE/download"
  (cd "$KERNEL_CACHE/download" && apt-get download -qq "$PKG" 2>/dev/null)
  rm -rf "$KERNEL_CACHE/$PKG.tmp"
  dpkg-deb -x "$KERNEL_CACHE"/download/"$PKG"_*.deb "$KERNEL_CACHE/$PKG.tmp"
  mv "$KERNEL_CACHE/$PKG.tmp" "$KERNEL_CACHE/$PKG"
  rm -rf "$KERNEL_CACHE/download"
  TANDEM_TEST_KERNEL_DIR="$KERNEL_CACHE/$PKG"
fi
export TANDEM_TEST_KERNEL_DIR
echo "test kernel: $(ls "$TANDEM_TEST_KERNEL_DIR"/boot/vmlinuz-*)"
