#!/usr/bin/env bash
# Brings up the local Portcullis stack in the foreground: a real control plane (etcd,
# kube-apiserver, kube-controller-manager) with the Portcullis CRDs and the demo policies
# (examples/demo/policy.yaml), Dex with demo users, two sample apps, the operator, and two
# gateway replicas following it behind a load balancer on https://*.portcullis.localhost:8443
# (PORTCULLIS_DEMO_PORT or --demo-port to change). Prints the URLs, credentials and kubectl commands; Ctrl-C stops
# everything.
set -euo pipefail
cd "$(dirname "$0")/.."

hack/build-tools.sh
eval "$(hack/tools-env.sh)"
# devstack, and the demo's processes it starts from its own directory: the operator, the
# gateway, the load balancer and the sample apps. Cargo locks target/ while it builds: started
# while hack/test.sh runs in the same checkout, the demo waits for that build first.
echo "hack/demo.sh: building the demo's binaries (cargo waits here if another build, such as hack/test.sh, holds target/)" >&2
cargo build --locked -p portcullis-tests --bins -p portcullis-images -p portcullis-gateway -p portcullis-operator
exec target/debug/devstack up --state-dir "${PORTCULLIS_DEMO_DIR:-$PWD/target/demo}" --demo "$@"
