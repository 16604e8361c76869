#!/usr/bin/env bash
# Test dependencies of the awskms: provider (tests/it/provider_awskms.rs): moto's AWS API emulator
# (moto_server) and boto3 to set it up, pinned, in their own virtualenv at
# /opt/cmkfs-test-tools/moto (where the tests look first; CMKFS_MOTO_VENV overrides).
# moto's KMS does no RSA and enforces no key state; the tests use it for request signing,
# IAM authorization and plumbing (see docs/providers/awskms.md). Idempotent; run as root.
set -euo pipefail
MOTO_VERSION=5.2.1
VENV=/opt/cmkfs-test-tools/moto

if [ -x "$VENV/bin/moto_server" ] && "$VENV/bin/python" -c "import moto, boto3, flask; assert moto.__version__ == '$MOTO_VERSION'" 2>/dev/null; then
  echo "awskms: moto $MOTO_VERSION present ($VENV)"
  exit 0
fi
if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
fi
rm -rf "$VENV"
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check --only-binary=:all: "moto[server]==$MOTO_VERSION"
"$VENV/bin/python" -c "import moto; print('awskms: moto', moto.__version__, 'installed in $VENV')"
