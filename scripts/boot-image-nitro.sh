#!/usr/bin/env bash
# Boots the enclave image in Nitro mode on QEMU's `nitro-enclave` machine: QEMU loads the EIF
# itself, computes its PCRs and serves an emulated NSM (virtio-nsm), so the enclave runs its
# production code path (no --mock): /dev/nsm, the nsm-hwrng entropy check, attestation
# documents from the NSM API. Slow to set up (QEMU is built from source once), so it is not
# part of scripts/test.sh.
#
# Usage: scripts/boot-image-nitro.sh [--keep] [--dry-run] [--help]
#
# What it does, cached under .tools/:
#   1. builds qemu-system-x86_64 with the nitro-enclave machine from Debian's QEMU source
#      (bookworm-backports; Debian's binary package is built without libcbor, so without it):
#      libcbor-dev and gnutls from Debian, meson from PyPI, x86_64-softmmu only;
#   2. unpacks Debian's bookworm-backports kernel (6.12: it has the NSM driver, nsm.ko, which
#      bookworm's 6.1 lacks), with its virtio-mmio and vsock modules;
#   3. packs the release enclave and init with that kernel (tandem-image --module), with the
#      production arguments and a placeholder KMS key (Nitro mode refuses to start without);
#   4. boots it with vhost-device-vsock, asks the enclave for an attestation document through
#      the vsock bridge, and compares the PCRs the emulated NSM reports with enclave-pcr.json.
#
# What still differs from a Nitro Enclave: vhost-device-vsock passes guest traffic only to
# CID 2, so the heartbeat, logs, blobs and KMS (all to CID 3) go nowhere: the enclave stays
# in its boot sequence after attesting (health shows it), which is all this check needs.
# The NSM's certificate chain is QEMU's own, not AWS's: clients refuse it, as they must.
#
# Status (not yet a passing check): QEMU builds with the machine; the EIF boots on it; our
# init loads virtio-mmio, vsock and nsm.ko; the enclave starts in Nitro mode on /dev/nsm with
# the nsm-hwrng entropy check passing and listens on vsock. Two things remain: (1) the
# enclave's attest stage refuses QEMU's NSM document ("not a COSE_Sign1 document"), so its
# encoding must be compared with a real NSM's (fixtures/nitro) before PCRs can be read from
# it; (2) under TCG the 6.12 kernel sometimes stops at TSC calibration on this machine type
# (no PIT/HPET reference), so some boots never reach /init.
set -euo pipefail

usage() { sed -n '2,32p' "$0" | sed 's/^# \{0,1\}//'; }

cd "$(dirname "$0")/.."
ROOT=$(pwd)
KEEP=0
DRY_RUN=0
for arg in "$@"; do
  case "$arg" in
    --keep) KEEP=1 ;;
    --dry-run) DRY_RUN=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "error: unknown argument $arg (see --help)" >&2; exit 2 ;;
  esac
done

TOOLS="${TANDEM_TOOLS:-$ROOT/.tools}"
QEMU_NITRO="$TOOLS/qemu-nitro/qemu-system-x86_64"
KERNEL_DIR="$TOOLS/kernel-nitro"
# shellcheck source=scripts/enclave-build-flags.sh
. ./scripts/enclave-build-flags.sh
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
REL="$TARGET_DIR/$TANDEM_ENCLAVE_TARGET/release"
TOOL="$TARGET_DIR/release/tandem-image"
VHOST="${VHOST_DEVICE_VSOCK:-$TOOLS/vhost-device-vsock/bin/vhost-device-vsock}"

if [ "$DRY_RUN" = 1 ]; then
  cat <<EOF
# 1. $QEMU_NITRO: apt-get source --download-only -t bookworm-backports qemu; then
../configure --target-list=x86_64-softmmu --without-default-features --enable-libcbor --enable-gnutls --enable-fdt=system --enable-vhost-user --enable-kvm --enable-tcg --disable-docs --disable-werror --disable-install-blobs
ninja qemu-system-x86_64
# 2. apt-get download -t bookworm-backports linux-image-<6.12>-amd64 -> $KERNEL_DIR
# 3. $TOOL pack --kernel vmlinuz-6.12 --module virtio_mmio.ko --module vsock.ko ... --nsm-module nsm.ko --kms-key-id <placeholder>
# 4. $VHOST --guest-cid 16 --socket S --uds-path U
$QEMU_NITRO -M nitro-enclave,vsock=c,id=tandem-nitro-test,acpi=on -kernel enclave.eif -m 1024M -accel tcg -cpu max -chardev socket,id=c,path=S -nographic
EOF
  exit 0
fi

# --- 1. QEMU with the nitro-enclave machine ---------------------------------------------------
if [ ! -x "$QEMU_NITRO" ]; then
  echo "building QEMU with the nitro-enclave machine (once; about half an hour on two cores)"
  if ! grep -rqs "deb-src" /etc/apt/sources.list.d/ /etc/apt/sources.list || ! grep -rqs "bookworm-backports" /etc/apt/sources.list.d/; then
    cat > /etc/apt/sources.list.d/bookworm-backports-src.sources <<'EOF'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    libcbor-dev libgnutls28-dev libfdt-dev libglib2.0-dev ninja-build flex bison python3-venv bzip2 >/dev/null
  SRC="$TOOLS/qemu-nitro-src"
  mkdir -p "$SRC"
  # The orig tarball is what we build; the Debian diff is not needed for one target, and
  # the mirror sometimes lacks it (apt-get then fails after fetching the tarball).
  (cd "$SRC" && apt-get source --download-only -t bookworm-backports qemu >/dev/null 2>&1 || true)
  ORIG=$(find "$SRC" -maxdepth 1 -name 'qemu_*.orig.tar.xz' | sort | tail -1)
  rm -rf "$SRC/tree" && mkdir -p "$SRC/tree" && tar -xf "$ORIG" -C "$SRC/tree" --strip-components=1
  cd "$SRC/tree"
  # Debian's +ds tarball drops meson's wheel and the EDK2 firmware: fetch meson from PyPI,
  # and do not unpack firmware that is not there (x86_64's nitro-enclave needs none).
  mkdir -p python/wheels
  python3 -m pip download --quiet --no-deps -d python/wheels meson==1.5.0 pycotap==1.3.1
  sed -i 's/^    unpack_edk2_blobs = bzip2.found()$/    unpack_edk2_blobs = false/' meson.build
  mkdir -p build && cd build
  ../configure --target-list=x86_64-softmmu --without-default-features --enable-libcbor --enable-gnutls \
    --enable-fdt=system --enable-vhost-user --enable-kvm --enable-tcg --disable-docs --disable-werror \
    --disable-install-blobs >/dev/null
  grep -q "CONFIG_NITRO_ENCLAVE=y" x86_64-softmmu-config-devices.mak
  ninja qemu-system-x86_64 >/dev/null
  mkdir -p "$(dirname "$QEMU_NITRO")"
  cp qemu-system-x86_64 "$QEMU_NITRO"
  cd "$ROOT"
  rm -rf "$SRC/tree"
fi
"$QEMU_NITRO" -machine help | grep -q nitro-enclave || { echo "error: $QEMU_NITRO has no nitro-enclave machine" >&2; exit 1; }

# --- 2. a kernel with the NSM driver -------------------------------------------------------
if ! ls "$KERNEL_DIR"/boot/vmlinuz-* >/dev/null 2>&1; then
  apt-get update -qq
  PKG=$(apt-cache depends -t bookworm-backports linux-image-amd64 | sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | head -1)
  echo "downloading $PKG (bookworm-backports) into $KERNEL_DIR"
  mkdir -p "$KERNEL_DIR.download"
  (cd "$KERNEL_DIR.download" && apt-get download -qq -t bookworm-backports "$PKG" 2>/dev/null)
  rm -rf "$KERNEL_DIR"
  dpkg-deb -x "$KERNEL_DIR.download"/*.deb "$KERNEL_DIR"
  rm -rf "$KERNEL_DIR.download"
fi
KERNEL=$(ls "$KERNEL_DIR"/boot/vmlinuz-*)
MODULES=$(ls -d "$KERNEL_DIR"/lib/modules/*/)

# --- 3. the image ------------------------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/tandem-nitro.XXXXXX")
PIDS=()
# shellcheck disable=SC2329 # called by the trap below
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  if [ "$KEEP" = 1 ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
MODULE_ARGS=()
# Debian compresses 6.12's modules (xz); the init loads plain ones.
for m in drivers/virtio/virtio_mmio net/vmw_vsock/vsock net/vmw_vsock/vmw_vsock_virtio_transport_common \
         net/vmw_vsock/vmw_vsock_virtio_transport drivers/misc/nsm; do
  xz -dc "$MODULES/kernel/$m.ko.xz" > "$WORK/$(basename "$m").ko"
  [ "$(basename "$m")" = nsm ] || MODULE_ARGS+=(--module "$WORK/$(basename "$m").ko")
done
"$TOOL" pack --kernel "$KERNEL" --cmdline "console=ttyS0 reboot=k panic=30" \
  --init "$REL/tandem-init" --enclave "$REL/tandem-enclave" "${MODULE_ARGS[@]}" --nsm-module "$WORK/nsm.ko" \
  --kms-key-id arn:aws:kms:us-east-1:111122223333:key/placeholder --source-date-epoch 1700000000 \
  --out "$WORK/eif" >/dev/null
echo "packed: $(stat -c %s "$WORK/eif/enclave.eif") bytes; our PCRs:"
cat "$WORK/eif/enclave-pcr.json"

# --- 4. boot it on the nitro-enclave machine ---------------------------------------------
UDS="$WORK/vsock.sock"
"$VHOST" --guest-cid 16 --socket "$WORK/vhost.sock" --uds-path "$UDS" >"$WORK/vhost.log" 2>&1 &
PIDS+=($!)
"$TOOL" vsock-bridge --uds "$UDS" --forward to-guest:127.0.0.1:0=5000 >"$WORK/bridge.out" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do [ -S "$WORK/vhost.sock" ] && grep -q ready "$WORK/bridge.out" && break; sleep 0.1; done
API=$(sed -n 's/^vsock-bridge: tcp \(.*\) -> guest vsock port 5000$/\1/p' "$WORK/bridge.out")
START=$SECONDS
# Firmware from Debian's packages (the +ds source has none). acpi=on: Debian's virtio_mmio
# module ignores the virtio_mmio.device= parameters the machine puts on the command line
# (no CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES), so the devices must come from ACPI, which needs
# SeaBIOS's microvm build.
"$QEMU_NITRO" -L /usr/share/qemu -L /usr/share/seabios -M nitro-enclave,vsock=c,id=tandem-nitro-test,acpi=on \
  -kernel "$WORK/eif/enclave.eif" -m 1024M \
  -accel tcg -cpu max -chardev "socket,id=c,path=$WORK/vhost.sock" -nographic -no-reboot \
  -serial "file:$WORK/console.log" -monitor none >"$WORK/qemu.log" 2>&1 &
PIDS+=($!)
ready=0
for _ in $(seq 1 300); do
  if curl -fsS --max-time 5 "http://$API/v1/health" -o "$WORK/health.json" 2>/dev/null; then ready=1; break; fi
  sleep 1
done
if [ "$ready" = 0 ]; then
  echo "FAIL: the enclave did not answer within 300 s" >&2
  tail -n 30 "$WORK/console.log" "$WORK/qemu.log" >&2 || true
  exit 1
fi
echo "the enclave answers over vsock after $((SECONDS - START)) s (TCG); health:"
cat "$WORK/health.json"; echo
grep -E "tandem-init|nsm|listening" "$WORK/console.log" | head -20 || true
curl -fsS -X POST -H 'content-type: application/json' \
  -d '{"nonce":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="}' "http://$API/v1/attestation" \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["document"])' > "$WORK/document.b64"
"$TOOL" attestation-pcrs "$WORK/document.b64" > "$WORK/nsm-pcrs.json"
echo "PCRs in the emulated NSM's attestation document:"
cat "$WORK/nsm-pcrs.json"
status=0
for pcr in PCR0 PCR1 PCR2; do
  ours=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['$pcr'])" "$WORK/eif/enclave-pcr.json")
  nsm=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1])).get('$pcr', ''))" "$WORK/nsm-pcrs.json")
  if [ "$ours" = "$nsm" ]; then echo "ok: $pcr from the NSM equals ours"; else echo "FAIL: $pcr: NSM $nsm, ours $ours"; status=1; fi
done
exit "$status"
