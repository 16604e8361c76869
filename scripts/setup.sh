#!/usr/bin/env bash
# The main job on a fresh Debian/Ubuntu machine: install what cmkfs needs, build and install
# it, create a KEK in the local key store, create an encrypted volume and mount it.
#   usage: sudo scripts/setup.sh [CIPHER_DIR] [MOUNTPOINT] [KEY_NAME]
# Defaults: /srv/cmkfs/cipher, /mnt/cmkfs, key "default" in /var/lib/cmkfs/keys.
# Re-running it reuses the existing key and volume.
set -euo pipefail
cd "$(dirname "$0")/.."
CIPHER=${1:-/srv/cmkfs/cipher}
MNT=${2:-/mnt/cmkfs}
KEY=${3:-default}
export PATH="$HOME/.cargo/bin:$PATH"
[ "$(id -u)" = 0 ] || { echo "run as root (it installs packages and mounts): sudo $0" >&2; exit 2; }
# fuse3 for mounting; libtss2-dev and pkg-config because the binary is built with every key
# provider (--all-features: the TPM provider links Debian's libtss2).
missing=()
for p in fuse3 libtss2-dev pkg-config; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "cargo is needed: install Rust (https://rustup.rs or 'apt-get install cargo')" >&2; exit 2; }
cargo build --release --locked --all-features --quiet
install -m 0755 target/release/cmkfs /usr/local/bin/cmkfs
# The mount helper mount(8), `mount -a`, fstab and systemd run for type fuse.cmkfs.
ln -sf /usr/local/bin/cmkfs /sbin/mount.fuse.cmkfs
# The template unit for mounting a configured volume at boot: systemctl enable --now cmkfs@NAME.
install -d /etc/systemd/system
install -m 0644 packaging/systemd/cmkfs@.service /etc/systemd/system/cmkfs@.service
# Man page and bash completion, generated from the binary's own flag definitions.
install -d /usr/local/share/man/man1 /usr/local/share/bash-completion/completions
cmkfs man --dir /usr/local/share/man/man1
cmkfs completions bash > /usr/local/share/bash-completion/completions/cmkfs
if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
STORE=/var/lib/cmkfs/keys
if [ -d "$STORE/$KEY" ]; then
  URI="local:$STORE/$KEY"
  echo "reusing key $URI"
else
  URI=$(cmkfs key create --store "$STORE" "$KEY" --bits 3072 | tail -n1)
fi
if [ ! -e "$CIPHER/cmkfs.volume" ]; then
  cmkfs init --kek "$URI" "$CIPHER"
fi
mkdir -p "$MNT"
if mountpoint -q "$MNT"; then
  echo "$MNT is already mounted"
elif cmkfs volume list --json | grep -qF "\"cipher_dir\": \"$(realpath "$CIPHER")\""; then
  cmkfs mount "$CIPHER" "$MNT"
else
  # A volume made before this host kept a local configuration (/etc/cmkfs/volumes): the KEK
  # named here on the command line is trusted, and the volume is pinned on this first mount.
  cmkfs mount --kek "$URI" "$CIPHER" "$MNT"
fi
cmkfs status "$MNT"
echo
echo "Encrypted volume mounted at $MNT (ciphertext in $CIPHER). Unmount with: cmkfs umount $MNT"
