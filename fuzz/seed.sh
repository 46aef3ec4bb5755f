#!/usr/bin/env bash
# Seeds the unpack fuzzers' corpora with small valid archives (plain, gzip, zstd; files,
# directories, an in-tree symlink) so the fuzzers start from deep inside the tar format.
set -euo pipefail
cd "$(dirname "$0")"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/src/bin" "$work/src/etc" corpus/unpack_tar corpus/unpack_tarball
printf 'hello\n' > "$work/src/etc/conf"
printf '#!/bin/sh\necho hi\n' > "$work/src/bin/tool"
chmod 755 "$work/src/bin/tool"
ln -s ../etc/conf "$work/src/bin/conf"
tar -C "$work/src" -cf corpus/unpack_tar/seed.tar .
tar -C "$work/src" --format=gnu -cf corpus/unpack_tar/seed-gnu.tar .
cp corpus/unpack_tar/seed.tar corpus/unpack_tarball/seed.tar
gzip -c corpus/unpack_tar/seed.tar > corpus/unpack_tarball/seed.tar.gz
zstd -q -c corpus/unpack_tar/seed.tar > corpus/unpack_tarball/seed.tar.zst
echo "seeded corpus/unpack_tar and corpus/unpack_tarball"
