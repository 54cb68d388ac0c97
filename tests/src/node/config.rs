//! The node's configuration files, as text. Each setting that is not a default is here because
//! pods do not start (or the machine is changed) without it; the comments say which.

use std::path::Path;

use super::{BRIDGE, CLUSTER_DNS_IP, GATEWAY_IP, NODE_NAME, POD_CIDR, TAINT_KEY};
use crate::stack::SERVICE_CLUSTER_IP_RANGE;

/// Paths of one node, all inside its directory.
#[derive(Clone, Debug)]
pub struct NodePaths {
    pub root: std::path::PathBuf,
}

impl NodePaths {
    pub fn new(root: &Path) -> Self {
        NodePaths {
            root: root.to_owned(),
        }
    }
    pub fn join(&self, rel: &str) -> std::path::PathBuf {
        self.root.join(rel)
    }
    pub fn containerd_socket(&self) -> std::path::PathBuf {
        self.join("containerd/containerd.sock")
    }
    pub fn log(&self, component: &str) -> std::path::PathBuf {
        self.join(&format!("logs/{component}.log"))
    }
}

/// containerd 1.6 (config version 2): everything under the node directory, its own socket, the
/// CRI plugin with our sandbox image and CNI configuration.
pub fn containerd(p: &NodePaths, sandbox_image: &str) -> String {
    let d = p.root.display();
    format!(
        r#"version = 2
root = "{d}/containerd/root"
state = "{d}/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = "{sock}"

[ttrpc]
  address = "{sock}.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/containerd/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox_image}"
  # root here lacks CAP_SYS_RESOURCE: runc cannot give the sandbox its oom_score_adj of -998
  # and every pod would stick in ContainerCreating.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        # runc's state inside the node directory, so leftovers of a killed run are found
        # (`runc --root`) and nothing else on the machine is touched.
        Root = "{d}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{d}/cni/net.d"
"#,
        sock = p.containerd_socket().display(),
    )
}

/// One bridge with the pod range; no masquerading (pod traffic must not leave the machine), the
/// IPAM state inside the node directory.
pub fn cni(p: &NodePaths) -> String {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "portcullis",
        "plugins": [{
            "type": "bridge",
            "bridge": BRIDGE,
            "isGateway": true,
            "ipMasq": false,
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": POD_CIDR, "gateway": GATEWAY_IP}]],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": p.join("cni/ipam").display().to_string(),
            },
        }],
    })
    .to_string()
}

/// The kubelet: cgroupfs on cgroup v1, no swap check, no host resolver for pods, x509 + webhook
/// authentication and webhook authorization, everything it writes inside the node directory,
/// no image garbage collection (the images were imported, nothing could pull them back) and
/// eviction thresholds a busy test machine does not cross. The node is tainted: only pods that
/// tolerate [`TAINT_KEY`] run on it, so Deployments of the process-level tests stay Pending
/// (and are deleted at once with their namespaces) instead of starting on it.
pub fn kubelet(p: &NodePaths, ca: &Path, cert: &Path, key: &Path) -> String {
    let d = p.root.display();
    format!(
        r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
tlsCertFile: {cert}
tlsPrivateKeyFile: {key}
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: {ca}
authorization:
  mode: Webhook
containerRuntimeEndpoint: unix://{sock}
cgroupDriver: cgroupfs
failSwapOn: false
failCgroupV1: false
resolvConf: ""
clusterDNS: [{CLUSTER_DNS_IP}]
clusterDomain: cluster.local
volumePluginDir: {d}/kubelet-plugins
podLogsDir: {d}/pod-logs
makeIPTablesUtilChains: false
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
registerWithTaints:
  - key: {TAINT_KEY}
    value: "true"
    effect: NoSchedule
evictionHard:
  memory.available: 50Mi
  nodefs.available: 1%
  nodefs.inodesFree: 1%
  imagefs.available: 1%
"#,
        ca = ca.display(),
        cert = cert.display(),
        key = key.display(),
        sock = p.containerd_socket().display(),
    )
}

/// kube-proxy in iptables mode: listens on loopback only, NodePorts only on the pod network
/// (never on the machine's external address), and leaves every sysctl alone (no conntrack
/// sizing, no `route_localnet`).
pub fn kube_proxy(kubeconfig: &Path) -> String {
    format!(
        r#"apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: {kubeconfig}
mode: iptables
hostnameOverride: {NODE_NAME}
clusterCIDR: {POD_CIDR}
bindAddress: 127.0.0.1
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: ["{POD_CIDR}"]
iptables:
  localhostNodePorts: false
  masqueradeAll: false
conntrack:
  maxPerCore: 0
  min: 0
"#,
        kubeconfig = kubeconfig.display(),
    )
}

/// The in-cluster demo's namespace (`crate::installed::demo`).
pub const DEMO_NAMESPACE: &str = "portcullis-demo";
/// The domain of the in-cluster demo's public names, which browsers resolve to this machine.
pub const DEMO_DOMAIN: &str = "portcullis.localhost";
/// Dex's public name in the in-cluster demo, and the Service the node's DNS answers it with:
/// the gateways reach the identity provider at the issuer URL the browser uses.
pub const DEMO_DEX: (&str, &str) = (
    "dex.portcullis.localhost",
    "dex.portcullis-demo.svc.cluster.local",
);

/// CoreDNS for `cluster.local`, as a Deployment behind the `kube-dns` Service. No `forward`:
/// pods resolve cluster names only (and the in-cluster demo's Dex, [`DEMO_DEX`]), and nothing
/// asks a resolver outside the machine. It listens on 1053 so it runs without privileges; the
/// Service maps 53 to it.
pub fn coredns(image: &str) -> String {
    let (dex_public, dex_service) = DEMO_DEX;
    format!(
        r#"apiVersion: v1
kind: ServiceAccount
metadata:
  name: coredns
  namespace: kube-system
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: portcullis-node:coredns
rules:
  - apiGroups: [""]
    resources: [services, pods, namespaces]
    verbs: [list, watch]
  - apiGroups: [discovery.k8s.io]
    resources: [endpointslices]
    verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: portcullis-node:coredns
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: portcullis-node:coredns
subjects:
  - kind: ServiceAccount
    name: coredns
    namespace: kube-system
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: coredns
  namespace: kube-system
data:
  Corefile: |
    .:1053 {{
        errors
        health :8080
        ready :8181
        rewrite name exact {dex_public} {dex_service}
        kubernetes cluster.local in-addr.arpa ip6.arpa {{
            pods insecure
            fallthrough in-addr.arpa ip6.arpa
        }}
        cache 30
        loadbalance
    }}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: coredns
  namespace: kube-system
  labels: {{k8s-app: kube-dns}}
spec:
  replicas: 1
  selector:
    matchLabels: {{k8s-app: kube-dns}}
  template:
    metadata:
      labels: {{k8s-app: kube-dns}}
    spec:
      serviceAccountName: coredns
      dnsPolicy: Default
      tolerations:
        - {{key: {TAINT_KEY}, operator: Exists, effect: NoSchedule}}
      securityContext:
        runAsNonRoot: true
        runAsUser: 65532
        runAsGroup: 65532
        seccompProfile: {{type: RuntimeDefault}}
      containers:
        - name: coredns
          image: {image}
          imagePullPolicy: Never
          args: [-conf, /etc/coredns/Corefile]
          ports:
            - {{name: dns, containerPort: 1053, protocol: UDP}}
            - {{name: dns-tcp, containerPort: 1053, protocol: TCP}}
          readinessProbe:
            httpGet: {{path: /ready, port: 8181}}
            periodSeconds: 2
          livenessProbe:
            httpGet: {{path: /health, port: 8080}}
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities: {{drop: [ALL]}}
          volumeMounts:
            - {{name: config, mountPath: /etc/coredns, readOnly: true}}
      volumes:
        - name: config
          configMap: {{name: coredns}}
---
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels: {{k8s-app: kube-dns}}
spec:
  clusterIP: {CLUSTER_DNS_IP}
  selector: {{k8s-app: kube-dns}}
  ports:
    - {{name: dns, port: 53, targetPort: 1053, protocol: UDP}}
    - {{name: dns-tcp, port: 53, targetPort: 1053, protocol: TCP}}
"#
    )
}

/// The node's RBAC and the `kubernetes` Service's endpoint. The kubelet acts as
/// `system:node:<name>`; with RBAC as the only authorizer that user needs the `system:node`
/// role bound explicitly. The API server of the shared stack reconciles no endpoints (it
/// listens on loopback only), so the endpoint pods reach it through is written here: the relay
/// on the bridge gateway.
pub fn cluster_objects(relay_port: u16) -> String {
    format!(
        r#"apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: portcullis-node:kubelet
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: system:node
subjects:
  - apiGroup: rbac.authorization.k8s.io
    kind: User
    name: system:node:{NODE_NAME}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kubernetes
  namespace: default
  labels:
    kubernetes.io/service-name: kubernetes
    endpointslice.kubernetes.io/managed-by: portcullis-tests
addressType: IPv4
endpoints:
  - addresses: ["{GATEWAY_IP}"]
    conditions: {{ready: true}}
ports:
  - name: https
    port: {relay_port}
    protocol: TCP
"#
    )
}

/// Service range, for the network guard.
pub fn service_cidr() -> &'static str {
    SERVICE_CLUSTER_IP_RANGE
}
