#!/usr/bin/env bash
# Builds the Portcullis container images without a Docker daemon, as OCI image-layout tar
# archives, plus the kubectl plugin as a release artifact:
#   OUT/portcullis-operator.oci.tar   docker.io/portcullis/operator:<appVersion>
#   OUT/portcullis-gateway.oci.tar    docker.io/portcullis/gateway:<appVersion>
#   OUT/portcullis-pause.oci.tar      docker.io/portcullis/pause:<appVersion> (the test node's
#                                     pod sandbox image)
#   OUT/portcullis-sample-app.oci.tar docker.io/portcullis/sample-app:<appVersion> (the app the
#                                     in-cluster tests and demo put behind Portcullis)
#   OUT/kubectl-portcullis-linux-amd64
#   OUT/images.txt                    name, manifest digest, size of each image
#   OUT/SHA256SUMS
#
# Each image is one uncompressed layer: the static release binary, the CA bundle of the build
# machine (for identity providers and upstreams with public certificates), nothing else: no
# shell, no package manager, no /etc/passwd; it runs as 65532:65532.
#
# Reproducible: every file's mtime and the `created` time are the commit time
# (SOURCE_DATE_EPOCH), paths of the checkout and of the cargo home are remapped out of the
# binaries, and the archive writer (images/, `oci-image`) sorts entries and stamps no host
# field. The same commit built twice gives the same digests (tests/tests/images.rs checks it).
#
# Usage: hack/build-images.sh [OUT_DIR]     (default: $CARGO_TARGET_DIR/images or target/images)
# Import into containerd: ctr -n k8s.io images import OUT/portcullis-gateway.oci.tar
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

TARGET=x86_64-unknown-linux-gnu
target_dir=${CARGO_TARGET_DIR:-$repo/target}
out=${1:-$target_dir/images}
mkdir -p "$out"
out=$(cd "$out" && pwd)

# The chart's appVersion is the tag: the chart's default image references name these images.
version=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\} *$/\1/p' charts/portcullis/Chart.yaml)
[ -n "$version" ] || { echo "build-images: no appVersion in charts/portcullis/Chart.yaml" >&2; exit 1; }
prefix=${PORTCULLIS_IMAGE_PREFIX:-docker.io/portcullis}
revision=$(git rev-parse HEAD)
# A build from a modified tree is not the commit: say so in the revision label.
[ -z "$(git status --porcelain --untracked-files=no)" ] || revision="$revision-dirty"
: "${SOURCE_DATE_EPOCH:=$(git log -1 --format=%ct)}"
export SOURCE_DATE_EPOCH
source_url=${PORTCULLIS_SOURCE_URL:-https://portcullis.dev/src}

# Static binaries: glibc linked in (`+crt-static`; the musl target is not installed here), so
# the image needs no libc. `--target` keeps the flag off build scripts and proc macros.
cargo_home=${CARGO_HOME:-$HOME/.cargo}
export RUSTFLAGS="-C target-feature=+crt-static --remap-path-prefix=$repo=/src --remap-path-prefix=$cargo_home=/cargo"
# aws-lc-sys compiles C: keep the checkout and cargo paths out of its objects too.
export CFLAGS="-ffile-prefix-map=$repo=/src -ffile-prefix-map=$cargo_home=/cargo"
export CARGO_PROFILE_RELEASE_STRIP=symbols
echo "build-images: static release build ($TARGET)" >&2
cargo build --release --locked --target "$TARGET" \
  -p portcullis-gateway -p portcullis-operator -p portcullis-cli -p portcullis-images
bin=$target_dir/$TARGET/release

for b in portcullis-gateway portcullis-operator kubectl-portcullis pause sample-app; do
  # A dynamically linked executable names its program interpreter (ld-linux); a static one
  # has no INTERP header.
  if readelf -lW "$bin/$b" | grep -q 'INTERP'; then
    echo "build-images: $bin/$b is not statically linked:" >&2
    readelf -lW "$bin/$b" | grep -A1 INTERP >&2
    exit 1
  fi
done

ca_bundle=/etc/ssl/certs/ca-certificates.crt
[ -f "$ca_bundle" ] || { echo "build-images: $ca_bundle missing (apt-get install ca-certificates)" >&2; exit 1; }
ca_version=$(dpkg-query -W -f '${Version}' ca-certificates 2>/dev/null || echo unknown)

# image NAME BINARY TITLE DESCRIPTION: writes OUT/portcullis-NAME.oci.tar.
image() {
  local name=$1 binary=$2 title=$3 description=$4
  local file=$out/portcullis-$name.oci.tar
  local digest ca=()
  # The pause program calls nobody; the others trust public CAs besides configured ones.
  [ "$name" = pause ] || ca=(--file "/etc/ssl/certs/ca-certificates.crt=$ca_bundle:0644")
  digest=$("$bin/oci-image" \
    --repository "$prefix/$name" --tag "$version" \
    --file "/usr/local/bin/$binary=$bin/$binary:0755" "${ca[@]}" \
    --entrypoint "/usr/local/bin/$binary" \
    --user 65532:65532 \
    --env PATH=/usr/local/bin \
    --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    --label "org.opencontainers.image.title=$title" \
    --label "org.opencontainers.image.description=$description" \
    --label "org.opencontainers.image.source=$source_url" \
    --label "org.opencontainers.image.url=https://portcullis.dev" \
    --label "org.opencontainers.image.licenses=Apache-2.0" \
    --label "org.opencontainers.image.vendor=Portcullis" \
    --label "org.opencontainers.image.version=$version" \
    --label "org.opencontainers.image.revision=$revision" \
    --label "dev.portcullis.ca-certificates=debian-$ca_version" \
    --created-epoch "$SOURCE_DATE_EPOCH" \
    --out "$file")
  printf '%s:%s %s %s\n' "$prefix/$name" "$version" "$digest" "$(stat -c %s "$file")" >>"$out/images.txt"
}

: >"$out/images.txt"
image operator portcullis-operator "Portcullis operator" \
  "Reconciles AccessPolicy and AccessSession objects and streams state to the gateways"
image gateway portcullis-gateway "Portcullis gateway" \
  "Identity-aware reverse proxy and forward-auth endpoint"
image pause pause "Portcullis pause" \
  "Pod sandbox program: sleeps until SIGTERM, reaps children"
image sample-app sample-app "Portcullis sample app" \
  "The demo's app: shows the identity Portcullis sends and verifies its signed assertion"
install -m 0755 "$bin/kubectl-portcullis" "$out/kubectl-portcullis-linux-amd64"
touch -d "@$SOURCE_DATE_EPOCH" "$out/kubectl-portcullis-linux-amd64"

(cd "$out" && sha256sum portcullis-*.oci.tar kubectl-portcullis-linux-amd64 >SHA256SUMS)
echo "build-images: wrote $out" >&2
cat "$out/images.txt" >&2
