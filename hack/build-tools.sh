#!/usr/bin/env bash
# Builds the real third-party components the tests and the demo run against, from their
# published Go modules, into a cache outside the repository:
#   kube-apiserver, kube-controller-manager and kubectl (k8s.io/kubernetes), etcd (go.etcd.io/etcd), dex (github.com/dexidp/dex),
#   helm (helm.sh/helm/v3), which the chart tests use;
#   the node the in-cluster tests run pods on: kubelet, kube-scheduler and kube-proxy
#   (k8s.io/kubernetes) and CoreDNS (github.com/coredns/coredns);
#   actionlint (github.com/rhysd/actionlint), which checks the release workflow;
#   jaeger (github.com/jaegertracing/jaeger), the OTLP receiver the trace tests export to;
#   traefik (github.com/traefik/traefik/v3), the ingress controller the in-cluster tests put in
#   front of the gateway; nginx, unpacked from the Debian package (not installed: no
#   service is started), the other ingress of those tests; and Keycloak, the second OpenID
#   Connect provider, a Java application downloaded from Maven Central (its published SHA-1
#   checked) and unpacked, run on a JDK of the machine (21 or newer).
# Each binary is built once per pinned version; a second run is a no-op. Runs of this script
# take turns (a lock in the cache), so CI can start it in the background early and a later call
# only waits for it. The time of every build is logged, for the CI-time budget.
#
# Usage: hack/build-tools.sh [kube-apiserver|kube-controller-manager|kubectl|etcd|dex|helm|
#                             kubelet|kube-scheduler|kube-proxy|coredns|actionlint|jaeger|
#                             traefik|nginx|keycloak|oauth2-proxy ...]
#        or a group: core | rest (see CORE and REST below)
#        (default: everything the tests use; oauth2-proxy, which only hack/bench-peers.sh
#        runs, is built only when named)
# Prints nothing but progress on stderr; the binaries land in "$PORTCULLIS_TOOLS/bin".
set -euo pipefail

: "${PORTCULLIS_TOOLS:=${XDG_CACHE_HOME:-$HOME/.cache}/portcullis-tools}"
KUBE_VERSION=v1.34.4
ETCD_VERSION=v3.6.16
# Dex tags v2.x without a /v2 module path, so its releases are only reachable as pseudo-versions.
# This one is the commit of Dex v2.45.1; static passwords carry groups since v2.45.0 (dexidp/dex
# PR 4456). Master of August 2026 (v0.0.0-20260806151424-ab64ed778070) needs an api/v2 newer than
# v2.4.0, which the module proxy does not serve, so it cannot be built from modules.
DEX_VERSION=v0.0.0-20260303133905-11d2eeb52b42
# Dex's own go.mod points its api/v2 module at ./api/v2; this published release has the same API.
DEX_API_VERSION=v2.4.0
HELM_VERSION=v3.19.0
COREDNS_VERSION=v1.15.0
ACTIONLINT_VERSION=v1.7.12
# Jaeger v2.13 (its v2 tags do not match the module path; this release of the module is it).
JAEGER_VERSION=v1.76.0
# Traefik v3.7 points a module of its own at a folder its published module does not carry
# (./pkg/config/dynamic/ext), so it cannot be built from the module proxy; v3.6 can.
TRAEFIK_VERSION=v3.6.12
KEYCLOAK_VERSION=26.4.7
# oauth2-proxy, the peer of hack/bench-peers.sh (stock, built from its module; opt-in only).
OAUTH2_PROXY_VERSION=v7.15.6

BIN="$PORTCULLIS_TOOLS/bin"
SRC="$PORTCULLIS_TOOLS/src"
mkdir -p "$BIN" "$SRC"
# One run at a time: two runs building the same binary would race on its source directory.
exec 9>"$PORTCULLIS_TOOLS/.build.lock"
flock 9
# No DWARF in the compiled packages: the binaries are stripped (-s -w) anyway, and skipping it
# makes the compile phase of a cold build cheaper.
export GOFLAGS="${GOFLAGS:-} -trimpath -gcflags=all=-dwarf=false"
export CGO_ENABLED=0

log() { printf '[build-tools] %s\n' "$*" >&2; }

# stamp NAME VERSION: true when BIN/NAME exists and was built from VERSION.
fresh() { [ -x "$BIN/$1" ] && [ "$(cat "$BIN/.$1.version" 2>/dev/null)" = "$2" ]; }
stamp() { echo "$2" >"$BIN/.$1.version"; }

# wrapper DIR MODULE: a throw-away module that only exists to pin and build someone else's main.
wrapper() {
  rm -rf "$1"
  mkdir -p "$1"
  printf 'module portcullis.dev/tools/%s\n\ngo 1.24\n' "$2" >"$1/go.mod"
}

build_kube_apiserver() {
  fresh kube-apiserver "$KUBE_VERSION" && return
  log "kube-apiserver $KUBE_VERSION"
  local dir="$SRC/kube-apiserver" staging="v0.${KUBE_VERSION#v1.}"
  wrapper "$dir" kube-apiserver
  # k8s.io/kubernetes points every k8s.io/* staging module at ./staging/...; replace each with
  # its published release so the module graph resolves outside the kubernetes repo.
  local gomod
  gomod=$(cd "$dir" && go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  {
    echo
    echo 'replace ('
    sed -n 's#^\s*\(k8s\.io/[a-z0-9-]*\) => \./staging/.*#\t\1 => \1 '"$staging"'#p' "$gomod"
    echo ')'
  } >>"$dir/go.mod"
  (cd "$dir" && go get "k8s.io/kubernetes/cmd/kube-apiserver@$KUBE_VERSION" &&
    go build -ldflags='-s -w' -o "$BIN/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver)
  stamp kube-apiserver "$KUBE_VERSION"
}

# The controller manager runs only the namespace, garbage-collector and service-account
# controllers in tests: enough for namespaces to finish deleting and for ownerReferences to work.
build_kube_controller_manager() {
  fresh kube-controller-manager "$KUBE_VERSION" && return
  build_kube_apiserver
  log "kube-controller-manager $KUBE_VERSION"
  (cd "$SRC/kube-apiserver" && go get "k8s.io/kubernetes/cmd/kube-controller-manager@$KUBE_VERSION" &&
    go build -ldflags='-s -w' -o "$BIN/kube-controller-manager" k8s.io/kubernetes/cmd/kube-controller-manager)
  stamp kube-controller-manager "$KUBE_VERSION"
}

# kubectl at the API server's version, so that tests never depend on the skew of whatever kubectl
# the machine happens to have.
build_kubectl() {
  fresh kubectl "$KUBE_VERSION" && return
  build_kube_apiserver
  log "kubectl $KUBE_VERSION"
  (cd "$SRC/kube-apiserver" && go get "k8s.io/kubernetes/cmd/kubectl@$KUBE_VERSION" &&
    go build -ldflags='-s -w' -o "$BIN/kubectl" k8s.io/kubernetes/cmd/kubectl)
  stamp kubectl "$KUBE_VERSION"
}

# kube_version_ldflags: the -X flags Kubernetes' hack/lib/version.sh sets. Without them a binary
# built from the module reports v0.0.0-master+$Format:%H$ (and the node shows that version).
kube_version_ldflags() {
  local minor=${KUBE_VERSION#v1.}
  minor=${minor%%.*}
  local pkg flags=""
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    flags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  echo "$flags"
}

# build_kube_node NAME: kubelet, kube-scheduler or kube-proxy of the pinned Kubernetes release,
# from the module set up for kube-apiserver, with the version stamped.
build_kube_node() {
  fresh "$1" "$KUBE_VERSION-ldflags" && return
  build_kube_apiserver
  log "$1 $KUBE_VERSION"
  (cd "$SRC/kube-apiserver" && go get "k8s.io/kubernetes/cmd/$1@$KUBE_VERSION" &&
    go build -ldflags="-s -w $(kube_version_ldflags)" -o "$BIN/$1" "k8s.io/kubernetes/cmd/$1")
  stamp "$1" "$KUBE_VERSION-ldflags"
}

# CoreDNS with its default plugin set; the node's Corefile uses no `forward` upstream.
build_coredns() {
  fresh coredns "$COREDNS_VERSION" && return
  log "coredns $COREDNS_VERSION"
  local dir="$SRC/coredns"
  wrapper "$dir" coredns
  (cd "$dir" && go get "github.com/coredns/coredns@$COREDNS_VERSION" &&
    go build -ldflags='-s -w' -o "$BIN/coredns" github.com/coredns/coredns)
  stamp coredns "$COREDNS_VERSION"
}

build_actionlint() {
  fresh actionlint "$ACTIONLINT_VERSION" && return
  log "actionlint $ACTIONLINT_VERSION"
  local dir="$SRC/actionlint"
  wrapper "$dir" actionlint
  (cd "$dir" && go get "github.com/rhysd/actionlint/cmd/actionlint@$ACTIONLINT_VERSION" &&
    go build -ldflags="-s -w -X github.com/rhysd/actionlint.version=$ACTIONLINT_VERSION" \
      -o "$BIN/actionlint" github.com/rhysd/actionlint/cmd/actionlint)
  stamp actionlint "$ACTIONLINT_VERSION"
}

build_etcd() {
  fresh etcd "$ETCD_VERSION" && return
  log "etcd $ETCD_VERSION"
  local dir="$SRC/etcd"
  wrapper "$dir" etcd
  # etcd's server module replaces its sibling modules with relative paths; pin the releases.
  cat >>"$dir/go.mod" <<EOF

replace (
	go.etcd.io/etcd/api/v3 => go.etcd.io/etcd/api/v3 $ETCD_VERSION
	go.etcd.io/etcd/client/pkg/v3 => go.etcd.io/etcd/client/pkg/v3 $ETCD_VERSION
	go.etcd.io/etcd/client/v3 => go.etcd.io/etcd/client/v3 $ETCD_VERSION
	go.etcd.io/etcd/pkg/v3 => go.etcd.io/etcd/pkg/v3 $ETCD_VERSION
)
EOF
  (cd "$dir" && go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" &&
    go build -ldflags='-s -w' -o "$BIN/etcd" go.etcd.io/etcd/server/v3)
  stamp etcd "$ETCD_VERSION"
}

build_dex() {
  fresh dex "$DEX_VERSION-$DEX_API_VERSION" && return
  log "dex $DEX_VERSION"
  local dir="$SRC/dex"
  wrapper "$dir" dex
  # Dex's config references its SQLite storage, which needs cgo (gcc is on every machine kind).
  cat >>"$dir/go.mod" <<EOF

replace github.com/dexidp/dex/api/v2 => github.com/dexidp/dex/api/v2 $DEX_API_VERSION
EOF
  (cd "$dir" && go get "github.com/dexidp/dex/cmd/dex@$DEX_VERSION" &&
    CGO_ENABLED=1 go build -ldflags='-s -w' -o "$BIN/dex" github.com/dexidp/dex/cmd/dex)
  stamp dex "$DEX_VERSION-$DEX_API_VERSION"
}

# Helm's release builds stamp its version and the Kubernetes version of its client libraries
# (the default for `helm template` / `helm lint` capabilities); without them it claims
# Kubernetes v1.20 and refuses charts that need a newer one. Same -X flags as Helm's Makefile.
build_helm() {
  fresh helm "$HELM_VERSION-ldflags" && return
  log "helm $HELM_VERSION"
  local dir="$SRC/helm"
  wrapper "$dir" helm
  (cd "$dir" && go get "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" &&
    # client-go v0.N.x is Kubernetes 1.N.
    local kube minor major=1 &&
    kube=$(go list -f '{{.Version}}' -m k8s.io/client-go) &&
    minor=${kube#v0.} && minor=${minor%%.*} &&
    go build -ldflags="-s -w \
      -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION \
      -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=$major \
      -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$minor \
      -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=$major \
      -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$minor" \
      -o "$BIN/helm" helm.sh/helm/v3/cmd/helm)
  stamp helm "$HELM_VERSION-ldflags"
}

# Jaeger v2 (an OpenTelemetry Collector with Jaeger's storage and query API): receives OTLP and
# answers /api/traces. Its go.mod carries a replace directive, which `go install pkg@version`
# refuses, so it is built from a wrapper module like the others.
build_jaeger() {
  fresh jaeger "$JAEGER_VERSION" && return
  log "jaeger $JAEGER_VERSION"
  local dir="$SRC/jaeger"
  wrapper "$dir" jaeger
  (cd "$dir" && go get "github.com/jaegertracing/jaeger/cmd/jaeger@$JAEGER_VERSION" &&
    go build -ldflags='-s -w' -o "$BIN/jaeger" github.com/jaegertracing/jaeger/cmd/jaeger)
  stamp jaeger "$JAEGER_VERSION"
}

# Traefik's go.mod swaps three dependencies for its own forks; a wrapper module must repeat
# the swaps (and the exclusion), or the build takes the originals and fails.
build_traefik() {
  fresh traefik "$TRAEFIK_VERSION" && return
  log "traefik $TRAEFIK_VERSION"
  local dir="$SRC/traefik" gomod
  wrapper "$dir" traefik
  gomod=$(cd "$dir" && go mod download -json "github.com/traefik/traefik/v3@$TRAEFIK_VERSION" |
    sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  sed -n '/^replace (/,/^)/p; /^exclude /p' "$gomod" >>"$dir/go.mod"
  (cd "$dir" && go get "github.com/traefik/traefik/v3/cmd/traefik@$TRAEFIK_VERSION" &&
    go build -ldflags="-s -w -X github.com/traefik/traefik/v3/pkg/version.Version=$TRAEFIK_VERSION" \
      -o "$BIN/traefik" github.com/traefik/traefik/v3/cmd/traefik)
  stamp traefik "$TRAEFIK_VERSION"
}

# oauth2-proxy, stock, from its published module at the pinned release: the peer
# hack/bench-peers.sh compares the gateway with. Not in the default set (nothing but that
# benchmark uses it). The -X flag is the one its Makefile sets, so `--version` tells the truth.
build_oauth2_proxy() {
  fresh oauth2-proxy "$OAUTH2_PROXY_VERSION" && return
  log "oauth2-proxy $OAUTH2_PROXY_VERSION"
  local dir="$SRC/oauth2-proxy" gomod
  wrapper "$dir" oauth2-proxy
  # Repeat its go.mod's replace directives, if any, so the build takes what its release takes.
  gomod=$(cd "$dir" && go mod download -json "github.com/oauth2-proxy/oauth2-proxy/v7@$OAUTH2_PROXY_VERSION" |
    sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  sed -n '/^replace (/,/^)/p; /^replace [^(]/p' "$gomod" >>"$dir/go.mod"
  (cd "$dir" && go get "github.com/oauth2-proxy/oauth2-proxy/v7@$OAUTH2_PROXY_VERSION" &&
    go build -ldflags="-s -w -X github.com/oauth2-proxy/oauth2-proxy/v7/pkg/version.VERSION=$OAUTH2_PROXY_VERSION" \
      -o "$BIN/oauth2-proxy" github.com/oauth2-proxy/oauth2-proxy/v7)
  stamp oauth2-proxy "$OAUTH2_PROXY_VERSION"
}

# nginx from Debian's package, unpacked rather than installed (installing starts a service on
# port 80). Its binary loads only libraries every machine of this kind has (libc, libssl,
# libpcre2, zlib, libcrypt); the in-cluster tests copy them into its image.
build_nginx() {
  local version
  version=$(apt-cache policy nginx 2>/dev/null | sed -n 's/^ *Candidate: //p')
  if [ -z "$version" ] || [ "$version" = "(none)" ]; then
    apt-get update -qq
    version=$(apt-cache policy nginx | sed -n 's/^ *Candidate: //p')
  fi
  fresh nginx "$version" && return
  log "nginx $version (Debian package)"
  local dir="$SRC/nginx"
  rm -rf "$dir"
  mkdir -p "$dir"
  (cd "$dir" && apt-get download -qq "nginx=$version" &&
    dpkg-deb -x nginx_*.deb root)
  install -m 0755 "$dir/root/usr/sbin/nginx" "$BIN/nginx"
  stamp nginx "$version"
}

# Keycloak from its release distribution on Maven Central, checked against the SHA-1 Maven
# Central publishes beside it (the only digest it publishes), unpacked under the cache. Keycloak
# 26 needs Java 21 or newer; the machine's default JDK may be older, so the newest JDK found
# under /usr/lib/jvm (or KEYCLOAK_JAVA_HOME) is written into the `keycloak` launcher, which
# runs the distribution's kc.sh with it. Its build-time options (an in-memory database) are
# fixed here with `kc.sh build`, so the harness runs `start --optimized`: a start writes nothing
# into the cache (start-dev rebuilds the distribution in place at every start, ~25 s, and two
# at once would race) and keeps nothing between runs.
build_keycloak() {
  local java_home
  java_home=$(keycloak_java_home)
  fresh keycloak "$KEYCLOAK_VERSION:$java_home:dev-mem" && return
  log "keycloak $KEYCLOAK_VERSION (Maven Central, Java at $java_home)"
  local name="keycloak-quarkus-dist-$KEYCLOAK_VERSION.zip" dir="$SRC/keycloak"
  local url="https://repo1.maven.org/maven2/org/keycloak/keycloak-quarkus-dist/$KEYCLOAK_VERSION/$name"
  rm -rf "$dir"
  mkdir -p "$dir"
  curl -fsSL --retry 3 -o "$dir/$name" "$url"
  curl -fsSL --retry 3 -o "$dir/$name.sha1" "$url.sha1"
  echo "$(head -c 40 "$dir/$name.sha1")  $dir/$name" | sha1sum --check --quiet -
  unzip -q "$dir/$name" -d "$dir"
  rm "$dir/$name"
  [ -x "$dir/keycloak-$KEYCLOAK_VERSION/bin/kc.sh" ]
  JAVA_HOME="$java_home" JAVA_OPTS_APPEND="-Djava.io.tmpdir=$dir/tmp" \
    "$dir/keycloak-$KEYCLOAK_VERSION/bin/kc.sh" build --db=dev-mem >"$dir/build.log" 2>&1 ||
    { tail -n 20 "$dir/build.log" >&2; return 1; }
  rm -rf "$dir/tmp"
  cat >"$BIN/keycloak" <<LAUNCHER
#!/bin/sh
# Keycloak $KEYCLOAK_VERSION (written by hack/build-tools.sh): kc.sh on a JDK new enough for it.
JAVA_HOME='$java_home' exec "\$(dirname "\$(readlink -f "\$0")")/../src/keycloak/keycloak-$KEYCLOAK_VERSION/bin/kc.sh" "\$@"
LAUNCHER
  chmod 0755 "$BIN/keycloak"
  stamp keycloak "$KEYCLOAK_VERSION:$java_home:dev-mem"
}

# keycloak_java_home: KEYCLOAK_JAVA_HOME, else the JDK under /usr/lib/jvm with the highest
# major version; fails unless it is 21 or newer.
keycloak_java_home() {
  local best="" best_major=0 home major
  for home in ${KEYCLOAK_JAVA_HOME:-/usr/lib/jvm/*}; do
    [ -x "$home/bin/java" ] && [ -f "$home/release" ] || continue
    major=$(sed -n 's/^JAVA_VERSION="\([0-9]*\).*/\1/p' "$home/release")
    if [ -n "$major" ] && [ "$major" -gt "$best_major" ]; then best=$home best_major=$major; fi
  done
  if [ "$best_major" -lt 21 ]; then
    echo "build-tools: Keycloak $KEYCLOAK_VERSION needs a JDK 21 or newer under /usr/lib/jvm" \
      "(or KEYCLOAK_JAVA_HOME); found ${best:-none}" >&2
    return 1
  fi
  echo "$best"
}

# Two groups, in the order the tests need them. `core`: what the control plane, the identity
# providers and the first test packages (cli, gateway) run. `rest`: Jaeger (the trace tests),
# then what only the later in-cluster and release tests use. hack/test.sh starts the tests once
# `core` is built and builds `rest` beside them; a test that needs one of those tools waits for
# it (tests/src/tools.rs).
CORE=(etcd kube-apiserver kube-controller-manager kubectl dex helm nginx keycloak)
REST=(jaeger actionlint kubelet kube-scheduler kube-proxy coredns traefik)
targets=()
for t in "$@"; do
  case "$t" in
    core) targets+=("${CORE[@]}") ;;
    rest) targets+=("${REST[@]}") ;;
    *) targets+=("$t") ;;
  esac
done
[ ${#targets[@]} -gt 0 ] || targets=("${CORE[@]}" "${REST[@]}")
for t in "${targets[@]}"; do
  started=$SECONDS
  case "$t" in
    kube-apiserver) build_kube_apiserver ;;
    kube-controller-manager) build_kube_controller_manager ;;
    kubectl) build_kubectl ;;
    etcd) build_etcd ;;
    dex) build_dex ;;
    helm) build_helm ;;
    kubelet | kube-scheduler | kube-proxy) build_kube_node "$t" ;;
    coredns) build_coredns ;;
    actionlint) build_actionlint ;;
    jaeger) build_jaeger ;;
    traefik) build_traefik ;;
    nginx) build_nginx ;;
    keycloak) build_keycloak ;;
    oauth2-proxy) build_oauth2_proxy ;;
    *) echo "unknown tool: $t" >&2; exit 2 ;;
  esac
  [ $((SECONDS - started)) -lt 1 ] || log "$t ready after $((SECONDS - started)) s"
done
log "tools ready in $BIN"
