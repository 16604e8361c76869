#!/usr/bin/env bash
# Dependencies of the pkcs11: provider tests (tests/it/provider_pkcs11.rs). Idempotent; run as root
# by scripts/test.sh before `cargo test --all-features`.
#   - SoftHSM2 (Debian softhsm2 2.6.1) and pkcs11-tool (opensc): a token that does RSA-OAEP-SHA1
#   - kryoptic (crates.io, a Rust PKCS#11 soft token) built once as a cdylib into a cache
#     directory: a token that does RSA-OAEP-SHA256 inside the token
# The tests find kryoptic at $CMKFS_KRYOPTIC_MODULE, else at the path this script prints last.
set -euo pipefail
export PATH="$HOME/.cargo/bin:$PATH"
KRYOPTIC_VERSION=1.5.4
# sha256 of kryoptic-$KRYOPTIC_VERSION.crate as published on crates.io
KRYOPTIC_SHA256=21b64b7679ce821f19a7a48b7e40146f26fbb9daa64ee2acb6376788a26d7ae8
CACHE=${CMKFS_TEST_CACHE:-/var/cache/cmkfs-test}/kryoptic/$KRYOPTIC_VERSION
SO=$CACHE/libkryoptic_pkcs11.so

pkgs=(softhsm2 opensc python3-pykcs11 libssl-dev pkg-config libclang-dev curl ca-certificates)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ ! -s "$SO" ]; then
  work=$(mktemp -d /tmp/cmkfs-kryoptic.XXXXXX)
  trap 'rm -rf "$work"' EXIT
  curl -sSfL -o "$work/k.crate" "https://static.crates.io/crates/kryoptic/kryoptic-$KRYOPTIC_VERSION.crate"
  echo "$KRYOPTIC_SHA256  $work/k.crate" | sha256sum -c --quiet -
  tar xzf "$work/k.crate" -C "$work"
  mkdir -p "$CACHE"
  # rsa + sqlite storage + all hashes (OAEP-SHA256 and SHA-1), linked to the system OpenSSL 3.
  ( cd "$work/kryoptic-$KRYOPTIC_VERSION" &&
    CARGO_TARGET_DIR="$work/target" cargo build --quiet --release --locked --no-default-features \
      --features kryoptic-lib/dynamic,kryoptic-lib/rsa,kryoptic-lib/sqlitedb,kryoptic-lib/hash_all )
  install -m 0644 "$work/target/release/libkryoptic_pkcs11.so" "$SO.tmp"
  mv "$SO.tmp" "$SO"
fi
echo "kryoptic PKCS#11 module: $SO"
