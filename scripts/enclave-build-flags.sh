#!/usr/bin/env bash
# The flags Dockerfile.enclave builds the enclave with, for CI and scripts to share.
# Source it: `. scripts/enclave-build-flags.sh`.
#
# The enclave binary is static (glibc with `crt-static`), in both build paths (this one and
# Dockerfile.enclave), because the image has no dynamic loader or shared libraries of its
# own: our initramfs carries /init and the binary, nothing else. glibc rather than musl:
#   - the toolchain's own x86_64-unknown-linux-gnu standard library serves, so no second
#     target (musl's std) has to be fetched by rustup, here or in the pinned rust image;
#   - glibc's allocator keeps the DKG's many allocations fast; musl's is several times slower
#     under threads, and we would have to bring another allocator to undo that;
#   - ring's C and assembly are compiled by the same gcc either way.
# The one cost: a static glibc cannot load NSS modules, so getaddrinfo on a host *name*
# fails. The enclave resolves no names (vsock addresses and numeric IPs only; KMS is
# reached through the parent's vsock-proxy), and a name would fail loudly, not silently.
#
# `--target` is given explicitly so that RUSTFLAGS (and crt-static) apply to the target
# only, not to build scripts and proc-macros, which cannot be static. The binaries land in
# target/$TANDEM_ENCLAVE_TARGET/release/.
export CARGO_INCREMENTAL=0
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-0}"
TANDEM_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export TANDEM_ENCLAVE_TARGET=x86_64-unknown-linux-gnu
export TANDEM_ENCLAVE_RUSTFLAGS="--remap-path-prefix=${TANDEM_ROOT}=/tandem --remap-path-prefix=${CARGO_HOME:-$HOME/.cargo}=/cargo -C codegen-units=1 -C strip=symbols -C target-feature=+crt-static"
