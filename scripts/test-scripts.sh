#!/usr/bin/env bash
# Tests of the operator scripts: shellcheck on every script, and the commands their
# --dry-run prints. Run by scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

pass=0
fail=0
check() { # check NAME HAYSTACK NEEDLE
  if grep -qF -- "$3" <<<"$2"; then
    pass=$((pass + 1))
  else
    fail=$((fail + 1))
    echo "FAIL: $1: expected to find: $3" >&2
  fi
}
refuses() { # refuses NAME COMMAND...
  local name=$1; shift
  if "$@" >/dev/null 2>&1; then
    fail=$((fail + 1)); echo "FAIL: $name: expected a non-zero exit" >&2
  else
    pass=$((pass + 1))
  fi
}

shellcheck -x scripts/*.sh .ci/run && pass=$((pass + 1))

out=$(scripts/fuzz.sh --dry-run --seconds 5 envelope 2>&1)
check "fuzz dry-run" "$out" "cargo +nightly fuzz run --release envelope corpus/envelope -- -max_total_time=5"
refuses "fuzz unknown target" scripts/fuzz.sh --dry-run no-such-target
check "fuzz help" "$(scripts/fuzz.sh --help)" "--seconds N"

out=$(scripts/build-eif.sh --dry-run --out /tmp/eif-out --tag tandem:test)
check "build-eif docker" "$out" "docker build -f Dockerfile.enclave"
check "build-eif tag" "$out" "-t tandem:test ."
check "build-eif nitro" "$out" "nitro-cli build-enclave --docker-uri tandem:test --output-file /tmp/eif-out/enclave.eif"
check "build-eif epoch" "$out" "SOURCE_DATE_EPOCH="
out=$(scripts/build-eif.sh --dry-run --tag t --signing-cert c.pem --private-key k.pem)
check "build-eif signing" "$out" "--signing-certificate c.pem --private-key k.pem"
refuses "build-eif half signing" scripts/build-eif.sh --dry-run --signing-cert c.pem
refuses "build-eif unpinned production" env RUST_IMAGE=rust:1 scripts/build-eif.sh --dry-run --production
refuses "build-eif unknown flag" scripts/build-eif.sh --bogus
check "build-eif help" "$(scripts/build-eif.sh --help)" "--production"

out=$(scripts/run-enclave.sh --dry-run --cpu-count 4 --memory 4096 --enclave-cid 21 --region eu-west-1 2>&1)
check "run-enclave nitro" "$out" "nitro-cli run-enclave --eif-path ./eif/enclave.eif --cpu-count 4 --memory 4096 --enclave-cid 21"
check "run-enclave vsock-proxy" "$out" "vsock-proxy 8000 kms.eu-west-1.amazonaws.com 443 --config"
check "run-enclave health" "$out" "/v1/health"
if grep -qF -- "--debug-mode" <<<"$out"; then fail=$((fail + 1)); echo "FAIL: debug mode without the flag" >&2; else pass=$((pass + 1)); fi
out=$(scripts/run-enclave.sh --dry-run --debug-mode 2>&1)
check "run-enclave debug flag" "$out" "--enclave-cid 16 --debug-mode"
check "run-enclave debug warning" "$out" "WARNING: --debug-mode"
refuses "run-enclave unknown flag" scripts/run-enclave.sh --bogus
check "run-enclave help" "$(scripts/run-enclave.sh --help)" "--cpu-count"

out=$(scripts/build-image.sh --dry-run --blobs /blobs --out /tmp/img 2>&1)
check "build-image enclave" "$out" "--target x86_64-unknown-linux-gnu -p tandem-enclave"
check "build-image static" "$out" "target-feature=+crt-static"
check "build-image init" "$out" "--manifest-path image/Cargo.toml -p tandem-init"
check "build-image blobs" "$out" "--kernel /blobs/bzImage"
check "build-image cmdline" "$out" "--cmdline-file /blobs/cmdline"
check "build-image nsm" "$out" "--nsm-module /blobs/nsm.ko"
check "build-image out" "$out" "--out /tmp/img"
out=$(scripts/build-image.sh --dry-run --kernel k --cmdline c --enclave e --init i --signing-cert c.pem --private-key k.pem 2>&1)
check "build-image signing" "$out" "--signing-cert c.pem --private-key k.pem"
if grep -qF -- "cargo build --locked --release --target" <<<"$out"; then fail=$((fail + 1)); echo "FAIL: build-image built despite --enclave/--init" >&2; else pass=$((pass + 1)); fi
refuses "build-image no kernel" scripts/build-image.sh --dry-run
refuses "build-image half signing" scripts/build-image.sh --dry-run --blobs /b --signing-cert c.pem
refuses "build-image production without KMS key" env -u KMS_KEY_ID scripts/build-image.sh --dry-run --blobs /b --production
refuses "build-image unknown flag" scripts/build-image.sh --bogus
check "build-image help" "$(scripts/build-image.sh --help)" "--blobs DIR"
# The two build paths build the same static binary: the Dockerfile's RUSTFLAGS carry crt-static.
check "Dockerfile static" "$(cat Dockerfile.enclave)" "-C target-feature=+crt-static"
check "Dockerfile target" "$(cat Dockerfile.enclave)" "--target x86_64-unknown-linux-gnu -p tandem-enclave"

out=$(scripts/boot-image.sh --dry-run --eif /tmp/e.eif --uds /tmp/v.sock --extra-ramdisk /tmp/t.cpio --guest-cid 21 2>&1)
check "boot-image vhost" "$out" "vhost-device-vsock --guest-cid 21 --socket"
check "boot-image uds" "$out" "--uds-path /tmp/v.sock"
check "boot-image tcg" "$out" "-accel tcg"
check "boot-image vsock device" "$out" "-device vhost-user-vsock-pci"
check "boot-image shared memory" "$out" "share=on"
check "boot-image extra ramdisk" "$out" "/tmp/t.cpio"
check "boot-image kvm" "$(scripts/boot-image.sh --dry-run --eif e --uds u --kvm 2>&1)" "-accel kvm"
refuses "boot-image no eif" scripts/boot-image.sh --dry-run --uds u
refuses "boot-image unknown flag" scripts/boot-image.sh --bogus
check "boot-image help" "$(scripts/boot-image.sh --help)" "vhost-device-vsock"
check "test-image help" "$(scripts/test-image.sh --help)" "differs from a Nitro Enclave"
check "check-reproducible help" "$(scripts/check-reproducible.sh --help)" "two clean"
out=$(scripts/check-reproducible.sh --dry-run --kernel /k 2>&1)
check "check-reproducible two trees" "$out" "tar -x -C"
refuses "check-reproducible no kernel" scripts/check-reproducible.sh --dry-run

out=$(scripts/boot-image-nitro.sh --dry-run)
check "boot-image-nitro qemu" "$out" "--enable-libcbor"
check "boot-image-nitro machine" "$out" "-M nitro-enclave,vsock=c"
check "boot-image-nitro help" "$(scripts/boot-image-nitro.sh --help)" "emulated NSM"
refuses "boot-image-nitro unknown flag" scripts/boot-image-nitro.sh --bogus

echo "scripts: $pass passed, $fail failed"
[ "$fail" = 0 ]
