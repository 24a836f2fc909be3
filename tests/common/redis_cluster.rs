//! A three-node Redis Cluster of the test's own: three `redis-server --cluster-enabled yes`
//! on free ports, joined with `redis-cli --cluster create` (each primary, no replicas),
//! stopped when dropped.
//!
//! `REDIS_CLI` may name the `redis-cli` binary; otherwise it is taken from `PATH`.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use super::redis_server::RedisServer;

pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

fn cli() -> PathBuf {
    if let Ok(path) = std::env::var("REDIS_CLI") {
        return PathBuf::from(path);
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join("redis-cli"))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| {
            panic!(
                "redis-cli is not installed, and the cluster tests need it: run scripts/test.sh \
                 (it installs it), or `sudo apt-get install redis-tools`, or set REDIS_CLI to its path"
            )
        })
}

impl RedisCluster {
    pub fn start() -> Self {
        Self::start_keeping("no")
    }

    /// A cluster whose nodes keep every write in their AOF (`appendfsync always`): a node
    /// killed and started again ([`RedisServer::restart`]) comes back with its data.
    pub fn start_with_aof() -> Self {
        Self::start_keeping("yes")
    }

    fn start_keeping(appendonly: &str) -> Self {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                RedisServer::start_with(&[
                    "--appendonly",
                    appendonly,
                    "--appendfsync",
                    "always",
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "5000",
                ])
            })
            .collect();
        let addresses: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let output = Command::new(cli())
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", cli().display()));
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let cluster = RedisCluster { nodes };
        cluster.wait_until_ok();
        cluster
    }

    /// Waits until every node says the cluster is ok (each knows every slot's owner).
    fn wait_until_ok(&self) {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            if self
                .nodes
                .iter()
                .all(|n| n.command(&["CLUSTER", "INFO"]).contains("cluster_state:ok"))
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the cluster did not come up within 30 s");
    }

    /// The URL of the first node, from which the client finds the others.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.nodes[0].port)
    }

    pub fn parsed_url(&self) -> agora::backend::url::RedisUrl {
        agora::backend::url::RedisUrl::parse(&self.url()).unwrap()
    }

    /// Sends one command to the node that holds its key (the others answer MOVED).
    pub fn command(&self, args: &[&str]) -> String {
        let mut last = String::new();
        for node in &self.nodes {
            last = node.command(args);
            if !last.starts_with("-MOVED") {
                return last;
            }
        }
        last
    }

    /// The last tick the run on `stream` has completed, from its record (`{stream}:run`).
    pub fn completed_tick(&self, stream: &str) -> Option<u64> {
        let reply = self.command(&["HGET", &format!("{stream}:run"), "tick"]);
        reply.lines().nth(1).and_then(|l| l.parse().ok())
    }

    /// How many keys each node holds.
    pub fn keys_per_node(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .map(|n| {
                let reply = n.command(&["DBSIZE"]);
                reply.trim().trim_start_matches(':').parse().unwrap()
            })
            .collect()
    }
}
