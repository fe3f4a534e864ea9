#!/usr/bin/env bash
# Boots an enclave image's kernel and ramdisks under QEMU, with a real virtio-vsock device
# served by vhost-device-vsock, so the enclave inside listens on real AF_VSOCK.
#
# Usage: scripts/boot-image.sh --eif FILE --uds PATH [--extra-ramdisk CPIO]... [--cmdline ARGS]
#                              [--guest-cid N] [--memory MiB] [--cpus N] [--kvm]
#                              [--console FILE] [--dry-run] [--help]
#
#   --eif FILE            the image (kernel, cmdline and ramdisks are taken from it)
#   --uds PATH            vhost-device-vsock's host-side socket: the host reaches guest port P
#                         with "CONNECT P" on PATH; guest connections to CID 2 port P arrive
#                         on PATH_P (tandem-image vsock-bridge speaks both)
#   --extra-ramdisk CPIO  appended after the image's ramdisks (a later file replaces an
#                         earlier one: tests swap boot.conf/enclave.conf this way). Repeatable.
#   --cmdline ARGS        kernel command line instead of the image's
#   --guest-cid N         the guest's vsock CID (default: 16, as run-enclave.sh)
#   --memory MiB          guest memory (default: 1024)
#   --cpus N              guest vCPUs (default: 2)
#   --kvm                 use KVM instead of TCG (it hangs after the boot stub on some hosts)
#   --console FILE        write the serial console here (default: stdout)
#   --dry-run             print the commands instead of running them
#
# Environment: QEMU (default qemu-system-x86_64), VHOST_DEVICE_VSOCK (default: on PATH or
# .tools/vhost-device-vsock/bin), TANDEM_IMAGE (the packer; default target/release/tandem-image).
# Differs from a Nitro Enclave: no NSM device (the image's enclave must run with --mock), and
# vhost-device-vsock only passes guest traffic to CID 2 (the host), where Nitro's parent is 3.
set -euo pipefail

usage() { sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; }

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
EIF=""
UDS=""
EXTRA=()
CMDLINE=""
CID=16
MEMORY=1024
CPUS=2
KVM=0
CONSOLE=""
DRY_RUN=0
while [ $# -gt 0 ]; do
  case "$1" in
    --eif) EIF="${2:?--eif needs a file}"; shift ;;
    --uds) UDS="${2:?--uds needs a path}"; shift ;;
    --extra-ramdisk) EXTRA+=("${2:?--extra-ramdisk needs a file}"); shift ;;
    --cmdline) CMDLINE="${2:?--cmdline needs a string}"; shift ;;
    --guest-cid) CID="${2:?--guest-cid needs a number}"; shift ;;
    --memory) MEMORY="${2:?--memory needs MiB}"; shift ;;
    --cpus) CPUS="${2:?--cpus needs a number}"; shift ;;
    --kvm) KVM=1 ;;
    --console) CONSOLE="${2:?--console needs a file}"; shift ;;
    --dry-run) DRY_RUN=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "error: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[ -n "$EIF" ] || { echo "error: --eif is required" >&2; exit 2; }
[ -n "$UDS" ] || { echo "error: --uds is required" >&2; exit 2; }

QEMU="${QEMU:-qemu-system-x86_64}"
VHOST="${VHOST_DEVICE_VSOCK:-$(command -v vhost-device-vsock || echo "${TANDEM_TOOLS:-$ROOT/.tools}/vhost-device-vsock/bin/vhost-device-vsock")}"
TOOL="${TANDEM_IMAGE:-${CARGO_TARGET_DIR:-$ROOT/target}/release/tandem-image}"
WORK="$(dirname "$UDS")/boot-image.$$"
VHOST_SOCKET="$WORK/vhost-user.sock"

run() {
  if [ "$DRY_RUN" = 1 ]; then
    printf '%q ' "$@"
    printf '\n'
  else
    "$@"
  fi
}

run mkdir -p "$WORK"
run "$TOOL" extract "$EIF" --out "$WORK"
if [ "$DRY_RUN" = 0 ]; then
  [ -n "$CMDLINE" ] || CMDLINE="$(cat "$WORK/cmdline")"
  cat "$WORK/initrd.cpio" "${EXTRA[@]}" > "$WORK/initrd.all"
else
  CMDLINE="${CMDLINE:-<the image cmdline>}"
  echo "# cat $WORK/initrd.cpio ${EXTRA[*]} > $WORK/initrd.all"
fi

VHOST_CMD=("$VHOST" --guest-cid "$CID" --socket "$VHOST_SOCKET" --uds-path "$UDS")
if [ "$DRY_RUN" = 1 ]; then
  run "${VHOST_CMD[@]}"
else
  rm -f "$UDS" "$VHOST_SOCKET"
  "${VHOST_CMD[@]}" &
  VHOST_PID=$!
  trap 'kill "$VHOST_PID" 2>/dev/null || true; rm -rf "$WORK"' EXIT
  for _ in $(seq 1 100); do [ -S "$VHOST_SOCKET" ] && break; sleep 0.1; done
  [ -S "$VHOST_SOCKET" ] || { echo "error: vhost-device-vsock did not create $VHOST_SOCKET" >&2; exit 1; }
fi

if [ "$KVM" = 1 ]; then ACCEL=(-accel kvm -cpu host); else ACCEL=(-accel tcg -cpu max); fi
# vhost-user needs the guest's memory shared with the device process: a memfd backend.
QEMU_CMD=("$QEMU" -machine "q35,memory-backend=mem" "${ACCEL[@]}" -smp "$CPUS" -m "${MEMORY}M"
  -object "memory-backend-memfd,id=mem,size=${MEMORY}M,share=on"
  -chardev "socket,id=vsock,path=$VHOST_SOCKET" -device "vhost-user-vsock-pci,chardev=vsock"
  -kernel "$WORK/kernel" -initrd "$WORK/initrd.all" -append "$CMDLINE"
  -nographic -no-reboot -nodefaults -serial "${CONSOLE:+file:$CONSOLE}")
[ -n "$CONSOLE" ] || QEMU_CMD[${#QEMU_CMD[@]}-1]=stdio
run "${QEMU_CMD[@]}"
