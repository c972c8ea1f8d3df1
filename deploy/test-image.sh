#!/usr/bin/env bash
# The container image test (issue 14): builds the fleet's image
# (deploy/image/build.sh) from the workspace's debug binaries, unpacks it,
# starts an entrypoint (poz-verifier) from the unpacked rootfs as uid 65532
# and checks that it answers health: HTTP /healthz on its metrics port and
# a grpc.health.v1 Check on its gRPC port. It also checks what the image
# promises: config User 65532:65532, no shell in the rootfs, only the
# binaries, their libraries, CA roots and users, and binaries that are the
# very ones given (sha256).
#
# The runtime is runc (Debian's) with the bundle umoci unpacks, sharing the
# host's network namespace so the test reaches the ports; where the machine
# refuses namespaces it falls back to `chroot --userspec=65532:65532`. It
# prints which one ran. POZ_IMAGE_RUNTIME=runc|chroot forces one.
#
# Binaries: by default it first runs `cargo test --workspace --locked
# --no-run` (the very build the tests step runs next, so nothing is compiled
# twice) and uses $CARGO_TARGET_DIR/debug. POZ_IMAGE_BIN_DIR=DIR uses the
# binaries in DIR as they are, without building.
#
# Installs umoci, runc, skopeo, jq, curl and ca-certificates with apt-get
# when missing (as root). Every process, mount and temporary file it makes
# is removed on exit; every wait is bounded.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

BINARIES=(poz-store poz-verifier poz-signer poz-provider-api poz-query-gw poz-submit-gw pozctl)

echo "== image: prerequisites"
missing=()
for t in umoci runc skopeo jq curl; do
  command -v "$t" >/dev/null 2>&1 || missing+=("$t")
done
[ -s /etc/ssl/certs/ca-certificates.crt ] || missing+=(ca-certificates)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing ${missing[*]} (Debian)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "missing ${missing[*]} and cannot install them (need root and apt-get)" >&2; exit 1
  fi
fi
echo "umoci $(umoci --version | awk '{print $3}'), runc $(runc --version | awk 'NR==1 {print $3}'), $(skopeo --version)"

if [ -n "${POZ_IMAGE_BIN_DIR:-}" ]; then
  bin_src=$POZ_IMAGE_BIN_DIR
  echo "binaries: $bin_src (as given, not built here)"
else
  target=${CARGO_TARGET_DIR:-$root/target}
  bin_src=$target/debug
  echo "binaries: the test build's debug binaries in $bin_src"
  cargo test --workspace --locked --no-run --quiet
fi
for b in "${BINARIES[@]}"; do
  [ -x "$bin_src/$b" ] || { echo "$bin_src/$b is missing" >&2; exit 1; }
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/poz-image.XXXXXX")
ctr=poz-image-test-$$
runc_root=$tmp/runc
svc_pid=
mounted=()
cleanup() {
  set +e
  if [ -d "$runc_root" ]; then
    runc --root "$runc_root" kill "$ctr" KILL >/dev/null 2>&1
    runc --root "$runc_root" delete --force "$ctr" >/dev/null 2>&1
  fi
  if [ -n "$svc_pid" ] && kill -0 "$svc_pid" 2>/dev/null; then
    kill -KILL "$svc_pid" 2>/dev/null
    wait "$svc_pid" 2>/dev/null
  fi
  local m
  for m in "${mounted[@]}"; do umount -l "$m" 2>/dev/null; done
  rm -rf "$tmp"
}
trap cleanup EXIT

# A fixed snapshot of the binaries (hard links where the file system allows):
# a concurrent cargo build replaces the files in the target directory, but
# not these, so the image and the sha256 comparison see the same bytes.
mkdir "$tmp/bin"
for b in "${BINARIES[@]}"; do
  ln "$bin_src/$b" "$tmp/bin/$b" 2>/dev/null || cp "$bin_src/$b" "$tmp/bin/$b"
done
(cd "$tmp/bin" && sha256sum "${BINARIES[@]}") >"$tmp/bin.sha256"

echo "== image: build (deploy/image/build.sh)"
build=(bash deploy/image/build.sh --archive "$tmp/bin" "$tmp/out")
if unshare --net true 2>/dev/null; then
  echo "building in a network namespace of its own (no network: nothing can be pulled)"
  build=(unshare --net "${build[@]}")
fi
"${build[@]}" | tee "$tmp/build.log"
digest=$(awk '$1 == "digest" {print $2}' "$tmp/build.log")
[[ $digest =~ ^sha256:[0-9a-f]{64}$ ]] || { echo "FAIL: no digest printed" >&2; exit 1; }
tag=$(sed -n 's/^image: oci:.*:\([^:]*\)$/\1/p' "$tmp/build.log")
layout=$tmp/out/oci
archive=$tmp/out/poz-fleet-$tag.oci.tar

fail() { echo "FAIL: $*" >&2; exit 1; }

echo "== image: config and contents"
# skopeo reads both outputs independently of umoci.
[ "$(skopeo inspect "oci:$layout:$tag" | jq -r .Digest)" = "$digest" ] || fail "layout digest differs"
[ "$(skopeo inspect "oci-archive:$archive" | jq -r .Digest)" = "$digest" ] || fail "archive digest differs"
skopeo inspect --config "oci:$layout:$tag" >"$tmp/config.json"
user=$(jq -r .config.User "$tmp/config.json")
[ "$user" = "65532:65532" ] || fail "image config User is '$user', not 65532:65532"
for p in 7074 7075 7076 9090 50051 50052 50053 50054; do
  jq -e --arg p "$p/tcp" '.config.ExposedPorts | has($p)' "$tmp/config.json" >/dev/null || fail "port $p not exposed"
done
jq -e '.config.Labels["org.opencontainers.image.revision"] and .config.Labels["org.opencontainers.image.version"]' \
  "$tmp/config.json" >/dev/null || fail "OCI labels missing"
[ "$(jq -r '.architecture + "/" + .os' "$tmp/config.json")" = "amd64/linux" ] || [ "$(uname -m)" != x86_64 ] \
  || fail "architecture/os is not amd64/linux"
echo "User $user, ports $(jq -r '.config.ExposedPorts | keys | join(",")' "$tmp/config.json")"

bundle=$tmp/bundle
umoci unpack --image "$layout:$tag" "$bundle" >/dev/null
rootfs=$bundle/rootfs
for sh in bin/sh bin/bash bin/dash bin/busybox usr/bin/sh; do
  if [ -e "$rootfs/$sh" ] || [ -L "$rootfs/$sh" ]; then fail "/$sh in the image"; fi
done
# Only the binaries, the loader and libraries, CA roots and user files.
unexpected=$(find "$rootfs" ! -type d -printf '%P\n' | grep -Ev \
  '^(usr/local/bin/[a-z-]+|lib64/ld-linux[^/]*|lib/[^/]+-linux-gnu/[^/]+\.so[.0-9]*|etc/(passwd|group|nsswitch\.conf|ssl/certs/ca-certificates\.crt))$' || true)
[ -z "$unexpected" ] || fail "unexpected files in the image: $unexpected"
(cd "$rootfs/usr/local/bin" && sha256sum -c --quiet "$tmp/bin.sha256") || fail "image binaries differ from the given ones"
[ "$(find "$rootfs/usr/local/bin" -mindepth 1 | wc -l)" = "${#BINARIES[@]}" ] || fail "other binaries in /usr/local/bin"
grep -qx 'nonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin' "$rootfs/etc/passwd" || fail "/etc/passwd lacks nonroot 65532"
grep -qx 'nonroot:x:65532:' "$rootfs/etc/group" || fail "/etc/group lacks nonroot 65532"
[ "$(stat -c '%u:%g %a' "$rootfs/tmp")" = "65532:65532 1777" ] || fail "/tmp is not 65532-writable: $(stat -c '%u:%g %a' "$rootfs/tmp")"
echo "no shell; only binaries, $(find "$rootfs/lib" "$rootfs/lib64" -type f | wc -l) loader/libraries, CA roots, users; binaries match sha256; /tmp 65532 1777"
echo "image size: $(du -sh "$layout" | cut -f1) OCI layout (compressed layers), $(du -sh "$rootfs" | cut -f1) unpacked"

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
port=$(free_port)
mport=$(free_port)
while [ "$mport" = "$port" ]; do mport=$(free_port); done
args=(/usr/local/bin/poz-verifier --insecure --listen "127.0.0.1:$port" --metrics-listen "127.0.0.1:$mport")

# The runc bundle: the config umoci derived from the image (its user must be
# the image's 65532), with the service's arguments, the host's network
# namespace, a read-only root with a tmpfs /tmp (as the chart runs it), no
# capabilities and no new privileges.
runc_config() { # ARGS...
  jq --argjson args "$(printf '%s\n' "$@" | jq -R . | jq -s .)" '
    .process.args = $args
    | .process.terminal = false
    | .process.noNewPrivileges = true
    | .process.capabilities = {bounding: [], effective: [], inheritable: [], permitted: [], ambient: []}
    | .linux.namespaces |= map(select(.type != "network"))
    | .root.readonly = true
    | .mounts += [{destination: "/tmp", type: "tmpfs", source: "tmpfs", options: ["nosuid", "nodev", "mode=1777"]}]
  ' "$bundle/config.json.orig" >"$bundle/config.json"
}
cp "$bundle/config.json" "$bundle/config.json.orig"
[ "$(jq -r '.process.user | "\(.uid):\(.gid)"' "$bundle/config.json.orig")" = "65532:65532" ] \
  || fail "the unpacked bundle does not run as 65532:65532"

runtime=${POZ_IMAGE_RUNTIME:-}
if [ -z "$runtime" ]; then
  # Can this machine run a container at all? Probe with another entrypoint
  # (pozctl --version), so a broken service cannot pass for a refusal.
  runc_config /usr/local/bin/pozctl --version
  if timeout 30 runc --root "$runc_root" run --bundle "$bundle" "$ctr-probe" >"$tmp/probe.log" 2>&1 \
     && grep -q '^pozctl ' "$tmp/probe.log"; then
    runtime=runc
  else
    echo "runc cannot run containers here ($(tail -n 1 "$tmp/probe.log")); falling back to chroot"
    runc --root "$runc_root" delete --force "$ctr-probe" >/dev/null 2>&1 || true
    runtime=chroot
  fi
fi

echo "== image: run poz-verifier from the unpacked image with $runtime, as 65532:65532"
log=$tmp/service.log
case $runtime in
  runc)
    runc_config "${args[@]}"
    runc --root "$runc_root" run --bundle "$bundle" "$ctr" </dev/null >"$log" 2>&1 &
    svc_pid=$!
    ;;
  chroot)
    # The environment of the image config, nothing from the host's.
    mapfile -t env < <(jq -r '.config.Env[]' "$tmp/config.json")
    env -i "${env[@]}" "$(command -v chroot)" --userspec=65532:65532 "$rootfs" "${args[@]}" </dev/null >"$log" 2>&1 &
    svc_pid=$!
    ;;
  *) fail "POZ_IMAGE_RUNTIME must be runc or chroot, not $runtime" ;;
esac
echo "runtime: $runtime (command: ${args[*]})"

# Bounded wait for the metrics port's /healthz.
up=0
for _ in $(seq 1 60); do
  if ! kill -0 "$svc_pid" 2>/dev/null; then
    wait "$svc_pid" && rc=0 || rc=$?
    svc_pid=
    cat "$log" >&2
    fail "poz-verifier exited ($rc) before it answered health"
  fi
  if [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$mport/healthz")" = 200 ]; then
    up=1; break
  fi
  sleep 0.5
done
[ "$up" = 1 ] || { cat "$log" >&2; fail "no 200 from /healthz on 127.0.0.1:$mport within 30 s"; }
echo "GET http://127.0.0.1:$mport/healthz: 200"

# The process serving it runs as 65532.
if [ "$runtime" = runc ]; then
  cpid=$(runc --root "$runc_root" state "$ctr" | jq -r .pid)
else
  cpid=$svc_pid
fi
uids=$(awk '/^Uid:/ {print $2, $3, $4, $5}' "/proc/$cpid/status")
[ "$uids" = "65532 65532 65532 65532" ] || fail "the service runs with uids $uids"
echo "service process $cpid: uid 65532"

# grpc.health.v1.Health/Check over HTTP/2 cleartext (curl speaks gRPC's
# framing when given it): an empty service name and the verifier's own name
# must answer SERVING (field 1 = 1), grpc-status 0.
grpc_check() { # SERVICE
  local name=$1 req
  req=$(printf '\\x%02x' 0 0 0 0 $((${#name} ? ${#name} + 2 : 0)))
  [ -z "$name" ] || req+=$(printf '\\x0a\\x%02x%s' "${#name}" "$name")
  printf '%b' "$req" >"$tmp/req"
  curl -sS --max-time 5 --http2-prior-knowledge -X POST \
    -H 'content-type: application/grpc' -H 'te: trailers' \
    --data-binary @"$tmp/req" -D "$tmp/grpc.h" -o "$tmp/grpc.b" \
    "http://127.0.0.1:$port/grpc.health.v1.Health/Check" || fail "gRPC health Check ('$name') failed"
  grep -qi '^grpc-status: 0' "$tmp/grpc.h" || { cat "$tmp/grpc.h" >&2; fail "gRPC health Check ('$name'): not grpc-status 0"; }
  [ "$(od -An -tx1 "$tmp/grpc.b" | tr -d ' \n')" = 00000000020801 ] \
    || fail "gRPC health Check ('$name'): not SERVING: $(od -An -tx1 "$tmp/grpc.b")"
  echo "grpc.health.v1.Health/Check '$name' on 127.0.0.1:$port: SERVING"
}
grpc_check ""
grpc_check poz.v1.Verifier

# SIGTERM drains and stops it (bounded).
if [ "$runtime" = runc ]; then
  runc --root "$runc_root" kill "$ctr" TERM
else
  kill -TERM "$svc_pid"
fi
for _ in $(seq 1 40); do
  kill -0 "$svc_pid" 2>/dev/null || break
  sleep 0.25
done
kill -0 "$svc_pid" 2>/dev/null && fail "poz-verifier still running 10 s after SIGTERM"
wait "$svc_pid" && rc=0 || rc=$?
svc_pid=
[ "$rc" = 0 ] || { cat "$log" >&2; fail "poz-verifier exited $rc after SIGTERM"; }
echo "SIGTERM: stopped, exit 0"
echo "image test passed: runtime $runtime, digest $digest"
