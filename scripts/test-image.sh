#!/usr/bin/env bash
# The enclave image's tests, run by scripts/test.sh after its one release build:
#
#  1. reproducible packing: the release enclave and init packed twice, in two directories,
#     give identical bytes and PCRs; one byte changed in the enclave binary moves PCR2 (and
#     PCR0, which covers everything) and nothing else; the EIF is read back and checked;
#  2. the boot: the image's kernel and ramdisks boot under QEMU (TCG) with a vhost-user-vsock
#     device; the enclave listens on real AF_VSOCK in the guest; on the host, tandem-proxy
#     reaches it through vhost-device-vsock, the CLI creates an account and signs through
#     proxy -> vsock -> enclave, the enclave's logs arrive over vsock, the proxy pushes its
#     clock and AWS credentials over the control vsock port, KMS (moto) and the parent's blob
#     service are reached over vsock, and the boot heartbeat arrives as nitro-cli expects.
#
# What differs from a Nitro Enclave, on purpose and only on the test's command line (a
# test-only ramdisk appended at boot replaces boot.conf and enclave.conf; the image itself
# is the packed one, with a Debian kernel instead of nitro-cli's):
#   - no NSM in the guest: the enclave runs with --mock (development attester; its trust
#     root is made on the host and packed into the test ramdisk), and KMS is moto without an
#     attested recipient (--danger-kms-no-recipient);
#   - vhost-device-vsock passes guest traffic only to CID 2 (the host) and drops other CIDs,
#     so the parent's CID is 2 here where production uses 3 (heartbeat, logs, blobs, KMS);
#   - the virtio and vsock modules of the test kernel are loaded instead of nsm.ko.
#
# Usage: scripts/test-image.sh [--skip-boot] [--keep] [--help]   (--keep: leave the work directory)
# Environment: TANDEM_TEST_KERNEL_DIR, VHOST_DEVICE_VSOCK, QEMU (scripts/image-tools.sh),
#              TANDEM_MOTO_SERVER, CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

SKIP_BOOT=0
KEEP=0
for arg in "$@"; do
  case "$arg" in
    --skip-boot) SKIP_BOOT=1 ;;
    --keep) KEEP=1 ;;
    -h|--help) sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $arg (try --help)" >&2; exit 2 ;;
  esac
done

# shellcheck source=scripts/enclave-build-flags.sh
. ./scripts/enclave-build-flags.sh
TARGET_DIR="${CARGO_TARGET_DIR:-$(pwd)/target}"
REL="$TARGET_DIR/$TANDEM_ENCLAVE_TARGET/release"
TOOL="$TARGET_DIR/release/tandem-image"
export TANDEM_IMAGE="$TOOL"
KERNEL_DIR="${TANDEM_TEST_KERNEL_DIR:?run scripts/image-tools.sh first}"
KERNEL=$(ls "$KERNEL_DIR"/boot/vmlinuz-*)
MODULES=$(ls -d "$KERNEL_DIR"/lib/modules/*/)
CMDLINE="console=ttyS0 panic=-1 reboot=k quiet"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/tandem-image-test.XXXXXX")
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true; done
  if [ "$KEEP" = 1 ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

pass=0
fail=0
ok() { pass=$((pass + 1)); echo "ok: $*"; }
bad() { fail=$((fail + 1)); echo "FAIL: $*" >&2; }
expect() { # expect DESCRIPTION COMMAND... : passes when the command succeeds
  local what=$1; shift
  if "$@" >/dev/null 2>&1; then ok "$what"; else bad "$what"; fi
}
json() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2], {'d': d}))" "$@"; }

pack() { # pack OUT ENCLAVE
  SOURCE_DATE_EPOCH=1700000000 scripts/build-image.sh --kernel "$KERNEL" --cmdline "$CMDLINE" \
    --enclave "$2" --init "$REL/tandem-init" --out "$1" >/dev/null
}

# --- 1. reproducible packing ---------------------------------------------------------------
START=$(date +%s.%N)
pack "$WORK/a" "$REL/tandem-enclave"
PACK_SECONDS=$(python3 -c "import time; print(f'{time.time() - $START:.2f}')")
pack "$WORK/b" "$REL/tandem-enclave"
if cmp -s "$WORK/a/enclave.eif" "$WORK/b/enclave.eif"; then ok "two packings, two directories: identical EIF bytes"; else bad "the two EIFs differ"; fi
if cmp -s "$WORK/a/enclave-pcr.json" "$WORK/b/enclave-pcr.json"; then ok "identical PCRs"; else bad "the PCRs differ"; fi
echo "image: $(stat -c %s "$WORK/a/enclave.eif") bytes, packed in ${PACK_SECONDS}s; PCRs:"
cat "$WORK/a/enclave-pcr.json"

# One byte of the binary, in the middle of its code.
cp "$REL/tandem-enclave" "$WORK/enclave.changed"
python3 - "$WORK/enclave.changed" <<'PY'
import sys
p = sys.argv[1]
b = bytearray(open(p, 'rb').read())
b[len(b) // 2] ^= 0x01
open(p, 'wb').write(bytes(b))
PY
pack "$WORK/c" "$WORK/enclave.changed"
for pcr in PCR0 PCR2; do
  if [ "$(json "$WORK/a/enclave-pcr.json" "d['$pcr']")" != "$(json "$WORK/c/enclave-pcr.json" "d['$pcr']")" ]; then
    ok "one byte of the binary moves $pcr"; else bad "one byte of the binary left $pcr unchanged"; fi
done
if [ "$(json "$WORK/a/enclave-pcr.json" "d['PCR1']")" = "$(json "$WORK/c/enclave-pcr.json" "d['PCR1']")" ]; then
  ok "and leaves PCR1 (kernel, cmdline, init) alone"; else bad "one byte of the binary moved PCR1"; fi
"$TOOL" extract "$WORK/a/enclave.eif" --out "$WORK/xa" >/dev/null
"$TOOL" extract "$WORK/c/enclave.eif" --out "$WORK/xc" >/dev/null
for part in kernel cmdline ramdisk-0.cpio; do
  if cmp -s "$WORK/xa/$part" "$WORK/xc/$part"; then ok "$part unchanged"; else bad "$part changed"; fi
done
if ! cmp -s "$WORK/xa/ramdisk-1.cpio" "$WORK/xc/ramdisk-1.cpio"; then ok "the application ramdisk changed"; else bad "ramdisk-1 unchanged"; fi

# Read back: CRC, sections in order, the PCRs recomputed from the sections.
"$TOOL" describe "$WORK/a/enclave.eif" > "$WORK/describe.json"
if [ "$(json "$WORK/describe.json" "[s['type'] for s in d['sections']]")" = "['kernel', 'cmdline', 'metadata', 'ramdisk', 'ramdisk']" ] \
   && [ "$(json "$WORK/describe.json" "d['crc']")" = ok ] \
   && [ "$(json "$WORK/describe.json" "d['measurements']")" = "$(json "$WORK/a/enclave-pcr.json" "d")" ]; then
  ok "the EIF reads back: CRC, five sections in order, PCRs recomputed"
else
  bad "describe disagrees:"; cat "$WORK/describe.json" >&2
fi
if cmp -s "$WORK/xa/kernel" "$KERNEL" && [ "$(cat "$WORK/xa/cmdline")" = "$CMDLINE" ]; then
  ok "kernel and cmdline sections are the inputs"; else bad "kernel or cmdline section differs from the input"; fi

if [ "$SKIP_BOOT" = 1 ]; then
  echo "image: $pass passed, $fail failed (boot skipped)"
  [ "$fail" = 0 ]
  exit
fi

# --- 2. the boot ----------------------------------------------------------------------------
MOTO="${TANDEM_MOTO_SERVER:?the boot test needs moto (scripts/test.sh installs it)}"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { # wait_for SECONDS COMMAND...
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.2
  done
}
start() { # start NAME COMMAND... : in its own process group, logs in $WORK/NAME.{out,err}
  local name=$1; shift
  setsid "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" &
  PIDS+=($!)
}

# AWS's API emulator, with a KMS key for the enclave's data key.
MOTO_PORT=$(free_port)
start moto "$MOTO" -H 127.0.0.1 -p "$MOTO_PORT"
wait_for 60 curl -fsS "http://127.0.0.1:$MOTO_PORT/moto-api/" || { bad "moto did not start"; cat "$WORK/moto.err" >&2; exit 1; }
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_DEFAULT_REGION=us-east-1
KEY_ID=$("$(dirname "$MOTO")/python" -c "import boto3; print(boto3.client('kms', endpoint_url='http://127.0.0.1:$MOTO_PORT').create_key()['KeyMetadata']['KeyId'])")

# The trust inputs, made on the host: the mock enclave's development attestation chain
# (and, once the enclave writes it, its PCR file) in a data directory packed into the test
# ramdisk. The CLI is given the same files explicitly.
OVERLAY="$WORK/overlay"
mkdir -p "$OVERLAY/etc/tandem" "$OVERLAY/lib/modules"
"$REL/tandem-enclave" --mock --memory-store --data-dir "$OVERLAY/data" --listen tcp://127.0.0.1:0 \
  --kms-key-id "$KEY_ID" --kms-endpoint http://127.0.0.1:9 --danger-kms-no-recipient >"$WORK/prep.out" 2>&1 &
PREP=$!
wait_for 30 grep -q "listening on" "$WORK/prep.out" || { bad "the host enclave did not start"; cat "$WORK/prep.out" >&2; }
kill "$PREP" 2>/dev/null; wait "$PREP" 2>/dev/null || true
DEV_ROOT="$OVERLAY/data/attestation/dev-root.pem"
PCR_FILE="$OVERLAY/data/attestation/enclave-pcr.json"   # written by the mock enclave once it pins PCRs
expect "trust inputs prepared on the host ($DEV_ROOT)" test -s "$DEV_ROOT"

# The test kernel's virtio and vsock modules, in dependency order (their modinfo `depends`).
BOOT_CONF="# test-only: replaces the image's boot.conf (no nsm.ko; vsock from the test kernel)"$'\n'
for m in drivers/virtio/virtio_ring drivers/virtio/virtio drivers/virtio/virtio_pci_modern_dev \
         drivers/virtio/virtio_pci_legacy_dev drivers/virtio/virtio_pci net/vmw_vsock/vsock \
         net/vmw_vsock/vmw_vsock_virtio_transport_common net/vmw_vsock/vmw_vsock_virtio_transport; do
  if [ -f "$MODULES/kernel/$m.ko" ]; then
    cp "$MODULES/kernel/$m.ko" "$OVERLAY/lib/modules/"
    BOOT_CONF+="module /lib/modules/$(basename "$m").ko"$'\n'
  fi
done
BOOT_CONF+="heartbeat 2 9000"$'\n'
printf '%s' "$BOOT_CONF" > "$OVERLAY/etc/tandem/boot.conf"
# The production arguments, but: --mock and its data directory, the parent at CID 2, KMS at
# moto through the host's vsock port 8000 (plain HTTP inside the vsock stream).
cat > "$OVERLAY/etc/tandem/enclave.conf" <<EOF
# test-only: replaces the image's enclave.conf (see scripts/test-image.sh for why)
exec /usr/local/bin/tandem-enclave
arg --mock
arg --data-dir
arg /data
arg --listen
arg vsock://4294967295:5000
arg --control-listen
arg vsock://4294967295:5001
arg --blob-store
arg parent:vsock://2:7000
arg --ship-logs
arg vsock://2:5002
arg --log-json
arg --kms-key-id
arg $KEY_ID
arg --kms-endpoint
arg http://127.0.0.1:$MOTO_PORT
arg --kms-transport
arg vsock://2:8000
arg --danger-kms-no-recipient
env TANDEM_KMS_REGION=us-east-1
EOF
"$TOOL" cpio --root "$OVERLAY" --out "$WORK/overlay.cpio"

# The host side of the guest's vsock: the bridge, and the proxy with every parent service
# (the blob service on the bridge's Unix socket for guest port 7000).
UDS="$WORK/vsock.sock"
LOG_PORT=$(free_port)
start bridge "$TOOL" vsock-bridge --uds "$UDS" --forward to-guest:127.0.0.1:0=5000 \
  --forward to-guest:127.0.0.1:0=5001 --forward "to-host:5002=127.0.0.1:$LOG_PORT" \
  --forward "to-host:8000=127.0.0.1:$MOTO_PORT" --forward heartbeat:9000
wait_for 20 grep -q "vsock-bridge: ready" "$WORK/bridge.out" || { bad "the bridge did not start"; cat "$WORK/bridge.err" >&2; exit 1; }
API=$(sed -n 's/^vsock-bridge: tcp \(.*\) -> guest vsock port 5000$/\1/p' "$WORK/bridge.out")
CONTROL=$(sed -n 's/^vsock-bridge: tcp \(.*\) -> guest vsock port 5001$/\1/p' "$WORK/bridge.out")
start proxy "$REL/tandem-proxy" --listen 127.0.0.1:0 --self-signed "$WORK/tls" \
  --enclave "tcp://$API" --enclave-control "tcp://$CONTROL" --enclave-logs "tcp://127.0.0.1:$LOG_PORT" \
  --push-credentials env --blob-dir "$WORK/blobs" --blob-listen "unix://${UDS}_7000"
wait_for 20 grep -q "listening on" "$WORK/proxy.out" || { bad "the proxy did not start"; cat "$WORK/proxy.err" >&2; exit 1; }
PROXY=$(sed -n 's/^tandem-proxy listening on \(https:[^ ]*\)$/\1/p' "$WORK/proxy.out")

# Boot. Under TCG on a busy machine a boot has been seen to stall before the enclave was
# ready (once in six runs here): a stalled first boot is reported with its console and
# booted once more, so a second stall fails the test.
health() { curl -fsS --max-time 5 --cacert "$WORK/tls/ca.pem" "$PROXY/v1/health" -o "$WORK/health.json" && grep -q '"ready":true' "$WORK/health.json"; }
for attempt in 1 2; do
  BOOT_START=$SECONDS
  start qemu scripts/boot-image.sh --eif "$WORK/a/enclave.eif" --uds "$UDS" \
    --extra-ramdisk "$WORK/overlay.cpio" --console "$WORK/console.log"
  if [ "$attempt" = 2 ] || wait_for 240 health; then break; fi
  echo "WARNING: boot $attempt was not ready within 240 s; its console ends with:" >&2
  tail -n 15 "$WORK/console.log" >&2 || true
  kill -- "-${PIDS[${#PIDS[@]}-1]}" 2>/dev/null || true
  sleep 2
done
if health || wait_for 300 health; then
  READY_SECONDS=$((SECONDS - BOOT_START))
  ok "the enclave in QEMU is ready through proxy -> vsock after ${READY_SECONDS}s (TCG)"
else
  bad "the enclave did not become ready within 300 s"
  for f in console.log qemu.err bridge.out proxy.err health.json; do echo "--- $f" >&2; tail -40 "$WORK/$f" >&2 2>/dev/null || true; done
  echo "image: $pass passed, $fail failed"
  exit 1
fi
expect "health says mock mode (no NSM in QEMU)" grep -q '"mockMode":true' "$WORK/health.json"
expect "our init loaded the vsock modules" \
  grep -q "tandem-init: loaded /lib/modules/vmw_vsock_virtio_transport.ko" "$WORK/console.log"
expect "our init sent the boot heartbeat" grep -q "tandem-init: boot heartbeat sent to vsock 2:9000" "$WORK/console.log"
expect "the host received 0xB7 on port 9000 and echoed it" grep -q "heartbeat 0xb7 received" "$WORK/bridge.out"

# The SDK through the CLI: proxy -> vsock -> enclave.
# The trust inputs go in explicitly. A mock enclave that writes its measurements makes
# PCR_FILE at the host preparation above; the CLI then pins them (the option's one line).
PIN=()
[ ! -s "$PCR_FILE" ] || PIN=(--pcr-file "$PCR_FILE")
cli() {
  "$REL/tandem" --json --server "$PROXY" --ca-cert "$WORK/tls/ca.pem" --mock-root "$DEV_ROOT" \
    "${PIN[@]}" --wallet "$WORK/wallet" "$@"
}
T0=$SECONDS
if cli account create --label boot > "$WORK/create.json" 2>"$WORK/create.err"; then
  ok "account created through proxy -> vsock -> enclave in $((SECONDS - T0))s: $(json "$WORK/create.json" "d.get('address')")"
else
  bad "account create failed: $(cat "$WORK/create.err")"
fi
if cli sign message --account boot "booted for real" > "$WORK/sign.json" 2>"$WORK/sign.err"; then
  ok "signed through the booted image: $(json "$WORK/sign.json" "str(d.get('signature'))[:24]")..."
else
  bad "sign failed: $(cat "$WORK/sign.err")"
fi

# The other vsock paths.
curl -fsS --cacert "$WORK/tls/ca.pem" "$PROXY/v1/health" -o "$WORK/health.json"
expect "the proxy's clock reached the control vsock port (health reports the drift)" \
  grep -q True <(json "$WORK/health.json" "d.get('clockDriftMs') is not None")
echo "clock drift measured by the enclave: $(json "$WORK/health.json" "d.get('clockDriftMs')") ms"
expect "credentials pushed over the control vsock port" grep -q "pushed AWS credentials to the enclave" "$WORK/proxy.err"
expect "boot stages attest, credentials, unwrapDataKey (KMS over vsock), ready: all done" \
  grep -q "'done', 'done', 'done', 'done'" <(json "$WORK/health.json" "[s['state'] for s in d['stages']]")
expect "the enclave's logs arrived over vsock in the proxy's log" grep -q '"target":"enclave"' "$WORK/proxy.err"
expect "sealed blobs reached the parent's blob service over vsock" test -n "$(find "$WORK/blobs" -type f 2>/dev/null)"

echo "boot-to-ready under TCG: ${READY_SECONDS}s; image $(stat -c %s "$WORK/a/enclave.eif") bytes"
echo "image: $pass passed, $fail failed"
[ "$fail" = 0 ]
