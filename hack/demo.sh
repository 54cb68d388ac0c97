#!/usr/bin/env bash
# Brings up the local Portcullis stack in the foreground: a real control plane (etcd,
# kube-apiserver, kube-controller-manager) with the Portcullis CRDs and a sample policy, and Dex
# with demo users. Prints the URLs, credentials and kubectl commands; Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."

hack/build-tools.sh
eval "$(hack/tools-env.sh)"
cargo build --locked -p portcullis-tests --bin devstack
exec target/debug/devstack up --state-dir "${PORTCULLIS_DEMO_DIR:-$PWD/target/demo}" --demo "$@"
