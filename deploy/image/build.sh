#!/usr/bin/env bash
# Builds the fleet's container image `poz-fleet`: ONE multi-binary OCI image
# FROM SCRATCH holding only the service binaries, the shared libraries they
# link (found with ldd, copied together with the dynamic loader), Debian's CA
# roots, /etc/passwd and /etc/group naming uid/gid 65532 `nonroot`, and an
# empty /tmp. No Docker daemon, no registry, no network: it writes an OCI
# image layout with Debian's `umoci` (nothing is pulled; the base is empty).
#
# Why umoci rather than buildah: umoci writes the OCI layout directory
# directly, with no container storage (buildah's vfs driver keeps another
# full copy of every layer under /var/lib/containers, and the debug binaries
# are ~1.8 GB), no policy.json and no daemon state to clean up; the same tool
# unpacks the image into a runtime bundle for the test.
#
# Usage: deploy/image/build.sh [--archive] [BIN_DIR [OUT_DIR]]
#   BIN_DIR  directory holding the binaries (default: $CARGO_TARGET_DIR/release
#            if it holds them all, else $CARGO_TARGET_DIR/debug;
#            CARGO_TARGET_DIR defaults to ./target)
#   OUT_DIR  output directory (default: $CARGO_TARGET_DIR/poz-fleet-image);
#            receives OUT_DIR/oci (OCI image layout, tag = workspace version)
#            and, with --archive, OUT_DIR/poz-fleet-VERSION.oci.tar
#            (an oci-archive: `skopeo copy oci-archive:FILE ...`).
# Environment: POZ_IMAGE_TAG (default: the workspace version),
#   SOURCE_DATE_EPOCH (timestamps of files and config; default: the commit
#   time of HEAD, so the same binaries give the same digest).
# Prints the manifest digest as the last line: `digest sha256:...`.
#
# Entrypoints: /usr/local/bin/{poz-store,poz-verifier,poz-signer,
# poz-provider-api,poz-query-gw,poz-submit-gw,pozctl}. The image sets no
# Entrypoint; its default command is `/usr/local/bin/pozctl --help`, so a
# container names the service it runs (Kubernetes `command:`, or
# `podman run IMAGE poz-store ...`; PATH is /usr/local/bin).
set -euo pipefail

BINARIES=(poz-store poz-verifier poz-signer poz-provider-api poz-query-gw poz-submit-gw pozctl)
PORTS=(7074 7075 7076 9090 50051 50052 50053 50054)
NAME=poz-fleet

archive=0
if [ "${1:-}" = --archive ]; then archive=1; shift; fi
root=$(cd "$(dirname "$0")/../.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}

has_all() {
  local b
  for b in "${BINARIES[@]}"; do [ -x "$1/$b" ] || return 1; done
}
if [ $# -ge 1 ] && [ -n "$1" ]; then
  bin_dir=$1
elif has_all "$target/release"; then
  bin_dir=$target/release
else
  bin_dir=$target/debug
fi
out=${2:-$target/$NAME-image}
bin_dir=$(cd "$bin_dir" && pwd)
for b in "${BINARIES[@]}"; do
  [ -x "$bin_dir/$b" ] || { echo "build.sh: $bin_dir/$b is missing (cargo build --release --workspace)" >&2; exit 1; }
done
for tool in umoci jq ldd sha256sum; do
  command -v "$tool" >/dev/null || { echo "build.sh: $tool is missing (Debian: apt-get install umoci jq)" >&2; exit 1; }
done
ca=/etc/ssl/certs/ca-certificates.crt
[ -s "$ca" ] || { echo "build.sh: $ca is missing (Debian: apt-get install ca-certificates)" >&2; exit 1; }

version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$root/Cargo.toml")
license=$(sed -n '/^\[workspace.package\]/,/^\[/s/^license *= *"\(.*\)"/\1/p' "$root/Cargo.toml")
source_url=$(sed -n '/^\[workspace.package\]/,/^\[/s/^repository *= *"\(.*\)"/\1/p' "$root/Cargo.toml")
tag=${POZ_IMAGE_TAG:-$version}
revision=$(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)
epoch=${SOURCE_DATE_EPOCH:-$(git -C "$root" log -1 --format=%ct 2>/dev/null || date +%s)}
created=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)
case $(uname -m) in
  x86_64) arch=amd64 ;; aarch64) arch=arm64 ;; *) arch=$(uname -m) ;;
esac

mkdir -p "$out"
out=$(cd "$out" && pwd)
layout=$out/oci
img="$layout:$tag"
stage=$(mktemp -d "$out/.stage.XXXXXX")
trap 'rm -rf "$stage"' EXIT
rm -rf "$layout"

# An empty image (FROM scratch), unpacked into a bundle whose rootfs is
# filled and repacked once per layer: layer 1 the base, layer 2 the binaries.
umoci init --layout "$layout"
umoci new --image "$img"
bundle=$stage/bundle
umoci unpack --image "$img" "$bundle"
rootfs=$bundle/rootfs

# Layer 1 (base): loader, libraries, CA roots, users, /tmp.
mkdir -p "$rootfs/etc/ssl/certs" "$rootfs/tmp"
libs=$(for b in "${BINARIES[@]}"; do
  ldd "$bin_dir/$b" | awk -v bin="$b" '
    /not found/ { print "MISSING " bin ": " $1; next }
    $2 == "=>" && $3 ~ /^\// { print $3; next }
    $1 ~ /^\// { print $1 }'
done | sort -u)
if grep -q '^MISSING' <<<"$libs"; then
  grep '^MISSING' <<<"$libs" >&2; exit 1
fi
for lib in $libs; do
  # At the path the binaries ask for (the ELF interpreter /lib64/ld-linux-*,
  # /lib/<triplet>/libc.so.6 ...), the file that path resolves to here.
  mkdir -p "$rootfs$(dirname "$lib")"
  cp -L "$lib" "$rootfs$lib"
done
cp -L "$ca" "$rootfs/etc/ssl/certs/ca-certificates.crt"
cat >"$rootfs/etc/passwd" <<'P'
root:x:0:0:root:/root:/sbin/nologin
nonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin
P
cat >"$rootfs/etc/group" <<'G'
root:x:0:
nonroot:x:65532:
G
# glibc's name service without a cache: files, then DNS (Kubernetes mounts
# /etc/hosts and /etc/resolv.conf).
cat >"$rootfs/etc/nsswitch.conf" <<'N'
passwd: files
group: files
hosts: files dns
N
chmod 0644 "$rootfs"/etc/passwd "$rootfs"/etc/group "$rootfs"/etc/nsswitch.conf "$rootfs/etc/ssl/certs/ca-certificates.crt"
chown -R 0:0 "$rootfs"
chmod 0755 "$rootfs"
chown 65532:65532 "$rootfs/tmp"
chmod 1777 "$rootfs/tmp"
find "$rootfs" -depth -exec touch -h -d "@$epoch" {} +
umoci repack --refresh-bundle --image "$img" --history.created "$created" \
  --history.created_by "deploy/image/build.sh: base" \
  --history.comment "dynamic loader, $(wc -w <<<"$libs") shared objects, CA roots, passwd/group (65532 nonroot), /tmp" \
  "$bundle"

# Layer 2: the binaries.
mkdir -p "$rootfs/usr/local/bin"
for b in "${BINARIES[@]}"; do
  cp "$bin_dir/$b" "$rootfs/usr/local/bin/$b"
  chmod 0755 "$rootfs/usr/local/bin/$b"
done
chown -R 0:0 "$rootfs/usr"
find "$rootfs/usr" -exec touch -h -d "@$epoch" {} +
touch -h -d "@$epoch" "$rootfs"
umoci repack --image "$img" --history.created "$created" \
  --history.created_by "deploy/image/build.sh: binaries" \
  --history.comment "${BINARIES[*]}" \
  "$bundle"
rm -rf "$bundle"
cfg=(--image "$img" --no-history --created "$created" --os linux --architecture "$arch"
  --author "poz-fleet"
  --config.user 65532:65532 --config.workingdir /
  --config.env PATH=/usr/local/bin
  --config.env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
  --config.stopsignal SIGTERM
  --config.cmd /usr/local/bin/pozctl --config.cmd --help)
for p in "${PORTS[@]}"; do cfg+=(--config.exposedports "$p/tcp"); done
labels=(
  "org.opencontainers.image.title=$NAME"
  "org.opencontainers.image.description=POZ fleet services (${BINARIES[*]}) in /usr/local/bin; run as 65532:65532"
  "org.opencontainers.image.version=$version"
  "org.opencontainers.image.revision=$revision"
  "org.opencontainers.image.created=$created"
  "org.opencontainers.image.licenses=$license"
  "org.opencontainers.image.source=$source_url"
  "org.opencontainers.image.base.name=scratch"
  "org.opencontainers.image.ref.name=$tag"
)
for l in "${labels[@]}"; do cfg+=(--config.label "$l" --manifest.annotation "$l"); done
umoci config "${cfg[@]}"
umoci gc --layout "$layout"

digest=$(jq -r --arg t "$tag" '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $t) | .digest' "$layout/index.json")
[ -n "$digest" ] || { echo "build.sh: tag $tag not in $layout/index.json" >&2; exit 1; }
manifest=$layout/blobs/${digest%%:*}/${digest#*:}
layers=$(jq '[.layers[].size] | add' "$manifest")
echo "image: oci:$layout:$tag"
echo "binaries: $bin_dir"
echo "layers: $(jq '.layers | length' "$manifest"), compressed $((layers / 1048576)) MiB"
if [ "$archive" = 1 ]; then
  # An oci-archive is a tar of the layout directory.
  tarball=$out/$NAME-$tag.oci.tar
  tar --sort=name --mtime="@$epoch" --owner=0 --group=0 --numeric-owner -C "$layout" -cf "$tarball" .
  echo "archive: oci-archive:$tarball ($(($(stat -c %s "$tarball") / 1048576)) MiB)"
fi
echo "digest $digest"
