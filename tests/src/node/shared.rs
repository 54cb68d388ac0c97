//! The node of a test run, as seen by one test process: found or started (`devstack node`)
//! under a lock, once per process, on top of [`TestCluster::shared`].

use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::OnceCell;

use super::{NodeInfo, node_dir};
use crate::cluster::{TestCluster, lock_file, spawn_devstack};

/// The node's bring-up on a loaded 2-core machine: containerd, image import, kubelet, CoreDNS.
const START_TIMEOUT: Duration = Duration::from_secs(300);

static SHARED: OnceCell<TestNode> = OnceCell::const_new();

/// The node of the shared cluster.
#[derive(Debug)]
pub struct TestNode {
    info: NodeInfo,
    cluster: &'static TestCluster,
}

impl TestNode {
    /// The node of this test run; starts it (and the cluster) on first use. Panics with the
    /// error chain if it cannot be started.
    pub async fn shared() -> &'static TestNode {
        match Self::try_shared().await {
            Ok(node) => node,
            Err(e) => panic!("portcullis test node unavailable: {e:#}"),
        }
    }

    /// Like [`TestNode::shared`], returning the error.
    pub async fn try_shared() -> Result<&'static TestNode> {
        SHARED.get_or_try_init(init).await
    }

    pub fn info(&self) -> &NodeInfo {
        &self.info
    }

    pub fn cluster(&self) -> &'static TestCluster {
        self.cluster
    }

    /// The last `lines` lines of every container log of pods in `namespace`, for diagnostics.
    pub fn pod_logs(&self, namespace: &str, lines: usize) -> String {
        let mut out = String::new();
        let Ok(pods) = std::fs::read_dir(&self.info.pod_logs) else {
            return out;
        };
        let mut dirs: Vec<_> = pods.filter_map(|e| e.ok().map(|e| e.path())).collect();
        dirs.sort();
        for pod in dirs.iter().filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{namespace}_")))
        }) {
            for container in std::fs::read_dir(pod).into_iter().flatten().flatten() {
                for log in std::fs::read_dir(container.path())
                    .into_iter()
                    .flatten()
                    .flatten()
                {
                    out += &format!(
                        "----- {} -----\n{}\n",
                        log.path().display(),
                        crate::fsutil::tail(&log.path(), lines)
                    );
                }
            }
        }
        out
    }
}

async fn init() -> Result<TestNode> {
    let cluster = TestCluster::try_shared().await?;
    let stack_dir = &cluster.info().state_dir;
    let dir = node_dir(stack_dir);
    let _lock = lock_file(stack_dir, ".node-lock").await?;
    let client = cluster.client().await?;
    let info = match NodeInfo::load(&dir) {
        Ok(info) if info.healthy(&client).await => info,
        _ => {
            super::preflight()?;
            spawn_devstack(
                stack_dir,
                "node",
                "node-ready",
                "devstack-node.log",
                START_TIMEOUT,
            )
            .await?;
            NodeInfo::load(&dir).context("the node started but wrote no node.json")?
        }
    };
    Ok(TestNode { info, cluster })
}
