#!/usr/bin/env bash
# Seeds every fuzzer's corpus: the unpack fuzzers with small valid archives (plain, gzip, zstd;
# files, directories, an in-tree symlink), the others with valid documents, bodies and paths,
# so that each starts from deep inside its format.
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

# The document and API targets start from valid bodies, paths and a signed fleet document.
mkdir -p corpus/catalog corpus/api_bodies corpus/api_paths corpus/fleet_document corpus/config_yaml corpus/oci_documents
catalog='{"packages":[{"package":"web","version":"1.2.0","url":"oci://registry.test/web:1.2.0"},{"package":"db","version":"2.0.0","url":"https://example.test/db.tar.gz","sha256":"5e8848f8c1e7bd3a2b9a5ecb3dbb1bd9b3b3a5b0b2f1bd8e6fcd41ab2bfa42d8","size":10,"platform":"linux","arch":"amd64"}]}'
printf '%s' "$catalog" > corpus/catalog/seed.json
printf '%s' "$catalog" > corpus/api_bodies/catalog.json
printf '%s' '{"version":"1.2.0","install_args":["--flag","x"]}' > corpus/api_bodies/params.json
printf '%s' '{"version":"1.2.0"}' > corpus/api_bodies/version.json
printf '%s' '{"version":"0.1.0","packages":{"web":{"Stable":"1.2.0","Experiment":""}},"remote_config_state":[{"package":"web","stable_version":"1.2.0","experiment_version":"","task":{"id":"t1","operation":"install","version":"1.2.0","state":"RUNNING","progress":{"phase":"download","bytes_done":1,"bytes_total":2}}}]}' > corpus/api_bodies/status.json
for p in /status /catalog /web/install /web/experiment/start /%2e%2e/install /a/./b /pkg.v1/remove '/%2E./x'; do
  printf '%s' "$p" > "corpus/api_paths/$(printf '%s' "$p" | sha256sum | cut -c1-16)"
done
printf 'agent:\n  a:\n    b: 1\n' > corpus/config_yaml/seed.yaml
mkdir -p corpus/config_operations
printf '%s' '{"deployment_id":"c1","file_operations":[{"file_op":"merge-patch","file_path":"/x.yaml","patch":{"x":"SEC[k]","y":{"z":1}}}]}' > corpus/config_operations/merge.json
printf '%s' '{"deployment_id":"c2","file_operations":[{"file_op":"patch","file_path":"/conf.d/x.json","patch":[{"op":"add","path":"/a","value":[1,2]},{"op":"remove","path":"/x"}]}]}' > corpus/config_operations/patch.json
printf '%s' '{"deployment_id":"c3","file_operations":[{"file_op":"copy","file_path":"/x.yaml","destination_path":"/conf.d/y.yaml"},{"file_op":"move","file_path":"/conf.d/x.json","destination_path":"/out/x.json"},{"file_op":"delete","file_path":"/ln.yaml"},{"file_op":"delete-all","file_path":"/conf.d"}]}' > corpus/config_operations/files.json
printf '%s' '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:5e8848f8c1e7bd3a2b9a5ecb3dbb1bd9b3b3a5b0b2f1bd8e6fcd41ab2bfa42d8","size":2},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:5e8848f8c1e7bd3a2b9a5ecb3dbb1bd9b3b3a5b0b2f1bd8e6fcd41ab2bfa42d8","size":10}]}' > corpus/oci_documents/manifest.json
doc="$work/fleet.json"
cat > "$doc" <<'JSON'
{"generation": 7, "expires": "2027-01-31T00:00:00Z",
 "catalog": {"packages": [
  {"package": "web", "version": "1.2.0", "url": "oci://registry.test/web:1.2.0"},
  {"package": "web", "version": "1.3.0", "url": "oci://registry.test/web:1.3.0"},
  {"package": "db", "version": "2.0.0", "url": "oci://registry.test/db:2.0.0"}]},
 "packages": {
  "web": {"stable": "1.2.0", "experiment": {"version": "1.3.0", "percent": 10, "selector": {"role": "web"},
   "health": {"command": ["/bin/true", "arg"], "interval": "10s", "timeout": "5s", "failures": 3, "grace": "30s"},
   "max_duration": "1h", "auto_promote_after": "20m"}},
  "db": {"stable": "2.0.0"}}}
JSON
# Signed with the fuzzing key (keys/), never a key anything trusts: document, NUL, signature.
minisign -S -s keys/fleet.sec -m "$doc" -x "$work/fleet.sig" -t "outpost fleet generation 7" >/dev/null </dev/null
{ cat "$doc"; printf '\0'; cat "$work/fleet.sig"; } > corpus/fleet_document/signed
cp "$doc" corpus/fleet_document/unsigned.json
echo "seeded corpus/{catalog,api_bodies,api_paths,fleet_document,config_yaml,config_operations,oci_documents}"
