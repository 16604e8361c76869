#!/usr/bin/env bash
# Makes the golden volume of the current format version under tests/golden/v<N>/.
# Run once per format version, commit the result, never regenerate an existing version:
# every later build must mount and read it (tests/it/golden.rs).
#   usage: scripts/make-golden.sh N        (as root, FUSE available)
set -euo pipefail
N=${1:?format version}
cd "$(dirname "$0")/.."
D=tests/golden/v$N
[ -e "$D" ] && { echo "$D exists; golden volumes are never regenerated" >&2; exit 1; }
cargo build --quiet
B=$PWD/target/debug/cmkfs
T=$(mktemp -d)
export CMKFS_CONFIG_DIR=$T/config
trap 'umount -l "$T/mnt" 2>/dev/null || true; rm -rf "$T"' EXIT
mkdir -p "$D" "$T/mnt"
"$B" key create --store "$T/keys" golden --bits 2048 >/dev/null
cp "$T/keys/golden/v1.pem" "$D/kek.pem"
"$B" init --kek "pem:$PWD/$D/kek.pem" "$D/cipher"
"$B" mount --log-file "$T/log" "$D/cipher" "$T/mnt"
M=$T/mnt
printf 'hello, cmkfs format %s\n' "$N" > "$M/hello.txt"
: > "$M/empty"
python3 -c "import sys; sys.stdout.buffer.write(bytes((i*7+3)%251 for i in range(3*4096+1000)))" > "$M/blocks.bin"
truncate -s 1M "$M/sparse.bin"
printf 'middle' | dd of="$M/sparse.bin" bs=1 seek=524288 conv=notrunc status=none
mkdir "$M/dir"
printf 'nested\n' > "$M/dir/nested.txt"
ln -s hello.txt "$M/link"
setfattr -n user.note -v golden "$M/hello.txt"
if [ "$N" -ge 2 ]; then
  python3 -c "import sys; sys.stdout.buffer.write(bytes((i*13+5)%251 for i in range(2*4096)))" > "$M/torn.bin"
fi
if [ "$N" -ge 3 ]; then
  # Format 3 encrypts names: a long name (side file), a non-ASCII one, an xattr on a directory.
  printf 'long\n' > "$M/dir/$(printf 'l%.0s' $(seq 1 200))"
  printf 'unicode\n' > "$M/dir/Gehaltsübersicht-日本語.txt"
  setfattr -n user.dirnote -v golden-dir "$M/dir"
fi
( cd "$M" && find . -type f -printf '%P\n' | sort | while read -r f; do
    printf '%s %s %s\n' "$(sha256sum < "$f" | cut -d' ' -f1)" "$(stat -c %s "$f")" "$f"; done ) > "$D/manifest.txt"
"$B" umount "$M"
if [ "$N" -ge 2 ]; then
  # Block 1 of torn.bin: its last write was interrupted between its entry and its ciphertext
  # (the daemon dies at that crash point). Readers must return the old content (the manifest's).
  CMKFS_TEST_CRASH_AT=layout:entries-written "$B" mount --log-file "$T/log2" "$D/cipher" "$M"
  python3 -c "import os; fd = os.open('$M/torn.bin', os.O_WRONLY); os.pwrite(fd, b'X' * 4096, 4096)" 2>/dev/null \
    && { echo "the crash point did not fire" >&2; exit 1; }
  umount -l "$M"
fi
# git keeps no xattrs: record the backing ones (encrypted values) for the test to restore.
( cd "$D/cipher" && getfattr -h -d -e base64 -m '^user\.' -R . 2>/dev/null ) > "$D/xattrs.txt"
echo "made $D"
