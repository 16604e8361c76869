#!/usr/bin/env bash
# Dependencies of the `tpm:` key provider and its tests (tests/it/provider_tpm.rs), on Debian/Ubuntu:
#   libtss2-dev + pkg-config  build tss-esapi (cargo feature `tpm`)
#   swtpm + swtpm-tools       the software TPM 2.0 the tests start on free loopback ports
#   tpm2-tools                provisions, evicts and re-persists the test keys
# Idempotent: installs only what is missing. Run as root (scripts/test.sh does).
set -euo pipefail
pkgs=(libtss2-dev pkg-config swtpm swtpm-tools tpm2-tools)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
for t in swtpm tpm2_createprimary tpm2_create tpm2_load tpm2_evictcontrol tpm2_flushcontext pkg-config; do
  command -v "$t" >/dev/null || { echo "scripts/providers/tpm.sh: $t still missing after install" >&2; exit 1; }
done
pkg-config --exists tss2-esys || { echo "scripts/providers/tpm.sh: tss2-esys (libtss2-dev) not found by pkg-config" >&2; exit 1; }
