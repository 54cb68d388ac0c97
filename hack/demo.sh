#!/usr/bin/env bash
# Brings up the local Portcullis stack in the foreground: a real control plane (etcd,
# kube-apiserver, kube-controller-manager) with the Portcullis CRDs and the demo policies
# (examples/demo/policy.yaml), Dex with demo users, two sample apps, the operator, and two
# gateway replicas following it behind a load balancer on https://*.portcullis.localhost:8443
# (PORTCULLIS_DEMO_PORT or --demo-port to change). Prints the URLs, credentials and kubectl commands; Ctrl-C stops
# everything.
#
# hack/demo.sh --in-cluster runs the same story the way a cluster runs it: a node (containerd,
# kubelet, CoreDNS; needs root and Debian's containerd, runc, containernetworking-plugins and
# iptables), the images of hack/build-images.sh, `helm install` of charts/portcullis, Dex and the
# sample apps as Deployments, and Traefik in front, serving the demo's apps through the
# gateway's reverse-proxy mode and through Traefik's forward-auth on
# https://*.portcullis.localhost:8443 (PORTCULLIS_DEMO_PORT). One node runs per machine: not
# while hack/test.sh runs its in-cluster tests.
set -euo pipefail
cd "$(dirname "$0")/.."

in_cluster=false
if [ "${1:-}" = "--in-cluster" ]; then
  in_cluster=true
  shift
fi

hack/build-tools.sh
eval "$(hack/tools-env.sh)"
# devstack, and the demo's processes it starts from its own directory: the operator, the
# gateway, the load balancer and the sample apps. Cargo locks target/ while it builds: started
# while hack/test.sh runs in the same checkout, the demo waits for that build first.
echo "hack/demo.sh: building the demo's binaries (cargo waits here if another build, such as hack/test.sh, holds target/)" >&2
cargo build --locked -p portcullis-tests --bins -p portcullis-images -p portcullis-gateway -p portcullis-operator
if ! $in_cluster; then
  exec target/debug/devstack up --state-dir "${PORTCULLIS_DEMO_DIR:-$PWD/target/demo}" --demo "$@"
fi

for c in containerd runc ctr iptables; do
  command -v "$c" >/dev/null || { echo "hack/demo.sh --in-cluster: $c is missing (apt-get install containerd runc containernetworking-plugins iptables)" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "hack/demo.sh --in-cluster: the node needs root" >&2; exit 1; }
hack/build-images.sh
state="${PORTCULLIS_DEMO_DIR:-$PWD/target/demo-cluster}"
devstack=target/debug/devstack
# Whatever an earlier run left (a killed terminal) goes first.
"$devstack" down --state-dir "$state" >/dev/null 2>&1 || true
rm -rf "$state"
mkdir -p "$state"
trap '"$devstack" down --state-dir "$state"' EXIT
# wait_for FILE PID WHAT: until FILE exists, or fail if PID is gone.
wait_for() {
  until [ -e "$1" ]; do
    kill -0 "$2" 2>/dev/null || { echo "hack/demo.sh: $3 failed to start (logs in $state)" >&2; exit 1; }
    sleep 1
  done
}
"$devstack" up --state-dir "$state" --detach-ready-file "$state/up.ready" >"$state/up.log" 2>&1 &
wait_for "$state/up.ready" $! "the control plane"
echo "hack/demo.sh: control plane ready; starting the node" >&2
"$devstack" node --state-dir "$state" --detach-ready-file "$state/node.ready" >"$state/node.log" 2>&1 &
wait_for "$state/node.ready" $! "the node"
echo "hack/demo.sh: node ready; installing the chart, Dex, the apps and Traefik" >&2
"$devstack" demo-cluster --state-dir "$state" "$@"
