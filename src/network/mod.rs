//! Who hears whom: the scenario's social graph (CONTRACT.md, "Networks").
//!
//! A [`Network`] is a directed graph over the agents, in declaration order: an edge
//! `follower -> followee` means the follower hears what the followee publishes. A message
//! reaches the followers of its sender and the agent it is addressed to, and no one else
//! ([`Network::recipients`]); both backends deliver it into those agents' inboxes only, so a
//! sparse graph costs messages x followers deliveries, not messages x agents.
//!
//! Without a `[network]` section, or with `kind = "complete"` and no table restricting whom
//! it follows, there is no `Network` at all: every agent reads the one broadcast stream, as
//! before networks existed, and transcripts stay what they were.
//!
//! - `generate`: the random graph generators.
//! - `edges`: an edge list read from a CSV file.

pub mod edges;
pub mod generate;

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::message::Message;

/// The run folder's file of who followed whom: a header `follower,followee`, then one follow a
/// line.
pub const NETWORK_FILE: &str = "network.csv";

/// The agent indices a step published to, for counting what each agent must read in the next
/// tick: each message's sender and, when it is addressed, its addressee.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Routes(pub Vec<(u32, Option<u32>)>);

impl Routes {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A directed graph over a scenario's agents, stored both ways as compressed rows.
#[derive(Debug)]
pub struct Network {
    names: Vec<Arc<str>>,
    index: HashMap<Arc<str>, u32>,
    /// `followers[offsets[i]..offsets[i + 1]]`: who hears agent `i`, ascending.
    followers: Rows,
    /// Whom agent `i` follows, ascending.
    following: Rows,
    /// Everyone hears everything, as with no network: inboxes filled for a Redis Cluster,
    /// where each agent reads an inbox of its own in its own hash slot.
    broadcast: bool,
}

#[derive(Debug, Default)]
struct Rows {
    offsets: Vec<u32>,
    targets: Vec<u32>,
}

impl Rows {
    /// Rows from `(row, target)` pairs, sorted and without duplicates.
    fn from_pairs(n: usize, pairs: &[(u32, u32)]) -> Rows {
        let mut offsets = vec![0u32; n + 1];
        for &(row, _) in pairs {
            offsets[row as usize + 1] += 1;
        }
        for i in 0..n {
            offsets[i + 1] += offsets[i];
        }
        let mut fill = offsets.clone();
        let mut targets = vec![0u32; pairs.len()];
        for &(row, target) in pairs {
            targets[fill[row as usize] as usize] = target;
            fill[row as usize] += 1;
        }
        let mut rows = Rows { offsets, targets };
        for i in 0..n {
            let (from, to) = (rows.offsets[i] as usize, rows.offsets[i + 1] as usize);
            rows.targets[from..to].sort_unstable();
        }
        rows
    }

    fn row(&self, i: usize) -> &[u32] {
        &self.targets[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }
}

impl Network {
    /// The network of `follows` (`(follower, followee)` agent indices; duplicates and
    /// self-follows are dropped) over agents named `names`.
    pub fn new(names: Vec<Arc<str>>, mut follows: Vec<(u32, u32)>) -> Network {
        follows.retain(|&(a, b)| a != b);
        follows.sort_unstable();
        follows.dedup();
        let n = names.len();
        let following = Rows::from_pairs(n, &follows);
        let reversed: Vec<(u32, u32)> = follows.iter().map(|&(a, b)| (b, a)).collect();
        let followers = Rows::from_pairs(n, &reversed);
        let index = names
            .iter()
            .enumerate()
            .map(|(i, name)| (name.clone(), i as u32))
            .collect();
        Network {
            names,
            index,
            followers,
            following,
            broadcast: false,
        }
    }

    /// Everyone hears every message, its sender included, as on the broadcast stream: the
    /// inboxes of a scenario without a network on a Redis Cluster. It holds no follows.
    pub fn broadcast(names: Vec<Arc<str>>) -> Network {
        Network {
            broadcast: true,
            ..Network::new(names, Vec::new())
        }
    }

    /// Whether this is [`Network::broadcast`]: not a network of the scenario's.
    pub fn is_broadcast(&self) -> bool {
        self.broadcast
    }

    /// Mutual follows for each undirected edge of a generated graph.
    pub fn undirected(names: Vec<Arc<str>>, edges: &[generate::Edge]) -> Network {
        let follows = edges.iter().flat_map(|&(a, b)| [(a, b), (b, a)]).collect();
        Network::new(names, follows)
    }

    pub fn agents(&self) -> usize {
        self.names.len()
    }

    pub fn name(&self, i: u32) -> &Arc<str> {
        &self.names[i as usize]
    }

    /// The index of the agent called `name`, if there is one.
    pub fn index_of(&self, name: &str) -> Option<u32> {
        self.index.get(name).copied()
    }

    /// Who hears what agent `i` publishes, ascending.
    pub fn followers(&self, i: u32) -> &[u32] {
        self.followers.row(i as usize)
    }

    /// Whom agent `i` follows, ascending.
    pub fn following(&self, i: u32) -> &[u32] {
        self.following.row(i as usize)
    }

    /// Follows in the whole network.
    pub fn edges(&self) -> usize {
        self.following.targets.len()
    }

    /// Who receives a message from agent `sender`, addressed to `to` when it is: the sender's
    /// followers, and the addressee (once, whether or not it follows the sender).
    pub fn recipients(&self, sender: u32, to: Option<u32>) -> impl Iterator<Item = u32> + '_ {
        let followers = self.followers(sender);
        let extra = to.filter(|t| followers.binary_search(t).is_err());
        followers.iter().copied().chain(extra)
    }

    /// Who hears a stream entry: an agent's message reaches its [`recipients`]; anything
    /// else (`None`: a malformed entry, or another program's, and a message whose sender is
    /// not an agent of the scenario) reaches everyone. Both backends fill inboxes by this.
    ///
    /// [`recipients`]: Network::recipients
    pub fn hearers<'a>(&'a self, message: Option<&Message>) -> impl Iterator<Item = u32> + 'a {
        let route = message
            .filter(|_| !self.broadcast)
            .and_then(|m| self.route(&m.sender_id, m.to.as_deref()));
        let everyone = route.is_none().then(|| 0..self.agents() as u32);
        route
            .into_iter()
            .flat_map(|(sender, to)| self.recipients(sender, to))
            .chain(everyone.into_iter().flatten())
    }

    /// The route of a message (sender and addressee indices), when its sender is an agent.
    pub fn route(&self, sender: &str, to: Option<&str>) -> Option<(u32, Option<u32>)> {
        let sender = self.index_of(sender)?;
        Some((sender, to.and_then(|t| self.index_of(t))))
    }

    /// How many of the messages `routes` describes each agent receives, by agent index.
    pub fn expected(&self, routes: &Routes) -> Vec<u64> {
        let mut counts = vec![0u64; self.agents()];
        for &(sender, to) in &routes.0 {
            if sender as usize >= counts.len() {
                continue;
            }
            for r in self.recipients(sender, to.filter(|&t| (t as usize) < counts.len())) {
                counts[r as usize] += 1;
            }
        }
        counts
    }

    /// A SHA-256 of the follows, in hex: two networks with the same agents are the same
    /// network exactly when their digests are equal.
    pub fn digest(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut hash = Sha256::new();
        for offset in &self.following.offsets {
            hash.update(offset.to_le_bytes());
        }
        for target in &self.following.targets {
            hash.update(target.to_le_bytes());
        }
        hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// How many agents follow `d` others, for `d` from 0 to the largest out-degree.
    pub fn out_degree_counts(&self) -> Vec<u64> {
        degree_counts((0..self.agents() as u32).map(|i| self.following(i).len()))
    }

    /// How many agents have `d` followers, for `d` from 0 to the largest in-degree.
    pub fn in_degree_counts(&self) -> Vec<u64> {
        degree_counts((0..self.agents() as u32).map(|i| self.followers(i).len()))
    }

    /// Writes the graph as CSV: a header `follower,followee`, then one follow a line, by
    /// follower in declaration order, then by followee.
    pub fn write_csv(&self, path: &Path) -> std::io::Result<()> {
        let names = &self.names;
        let follows = names.iter().enumerate().flat_map(|(i, follower)| {
            self.following(i as u32)
                .iter()
                .map(move |&j| (&**follower, &*names[j as usize]))
        });
        write_follows(path, follows)
    }
}

/// A degree class: degrees from `2^k` to `2^(k+1) - 1` (0 alone is class 0), as log-binned
/// degree distributions of scale-free networks are drawn. Returns the class's bounds.
pub fn degree_class(degree: usize) -> (usize, usize) {
    if degree == 0 {
        return (0, 0);
    }
    let low = 1usize << degree.ilog2();
    (low, 2 * low - 1)
}

/// What `summary.json` says of a run's network.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NetworkSummary {
    pub kind: String,
    /// Follows in the whole network.
    pub follows: u64,
    /// Follows per agent.
    pub mean_degree: f64,
    /// How many agents follow `d` others, by `d` (agents following none included).
    pub out_degree: std::collections::BTreeMap<u64, u64>,
    /// How many agents have `d` followers, by `d`.
    pub in_degree: std::collections::BTreeMap<u64, u64>,
}

impl NetworkSummary {
    pub fn of(kind: &str, network: &Network) -> Self {
        let sparse = |counts: Vec<u64>| {
            counts
                .into_iter()
                .enumerate()
                .filter(|&(_, c)| c > 0)
                .map(|(d, c)| (d as u64, c))
                .collect()
        };
        NetworkSummary {
            kind: kind.to_string(),
            follows: network.edges() as u64,
            mean_degree: network.edges() as f64 / network.agents().max(1) as f64,
            out_degree: sparse(network.out_degree_counts()),
            in_degree: sparse(network.in_degree_counts()),
        }
    }

    /// The complete network over `n` agents.
    pub fn complete(n: u64) -> Self {
        let degree = std::collections::BTreeMap::from([(n.saturating_sub(1), n)]);
        NetworkSummary {
            kind: "complete".to_string(),
            follows: n * n.saturating_sub(1),
            mean_degree: n.saturating_sub(1) as f64,
            out_degree: degree.clone(),
            in_degree: degree,
        }
    }
}

fn degree_counts(degrees: impl Iterator<Item = usize>) -> Vec<u64> {
    let mut counts: Vec<u64> = Vec::new();
    for d in degrees {
        if counts.len() <= d {
            counts.resize(d + 1, 0);
        }
        counts[d] += 1;
    }
    counts
}

/// Writes the complete graph over `names` as CSV (the network of a scenario whose
/// `[network]` is `complete`, which has no [`Network`] value: it is the broadcast stream).
pub fn write_complete_csv(names: &[Arc<str>], path: &Path) -> std::io::Result<()> {
    let follows = names
        .iter()
        .flat_map(|a| names.iter().filter(move |b| *b != a).map(move |b| (&**a, &**b)));
    write_follows(path, follows)
}

/// `network.csv`: the header `follower,followee`, then `follows`, one a line.
fn write_follows<'a>(path: &Path, follows: impl Iterator<Item = (&'a str, &'a str)>) -> std::io::Result<()> {
    let file = std::fs::File::create(path)?;
    let mut out = csv::Writer::from_writer(std::io::BufWriter::new(file));
    out.write_record(["follower", "followee"])?;
    for (follower, followee) in follows {
        out.write_record([follower, followee])?;
    }
    out.into_inner().map_err(|e| e.into_error())?.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<Arc<str>> {
        (0..n).map(|i| Arc::from(format!("a_{i}"))).collect()
    }

    #[test]
    fn degree_classes_double() {
        let classes: Vec<(usize, usize)> = [0, 1, 2, 3, 4, 7, 8, 15, 16].map(degree_class).to_vec();
        assert_eq!(
            classes,
            [
                (0, 0),
                (1, 1),
                (2, 3),
                (2, 3),
                (4, 7),
                (4, 7),
                (8, 15),
                (8, 15),
                (16, 31)
            ]
        );
    }

    #[test]
    fn a_message_reaches_followers_and_its_addressee_once() {
        // 1 and 2 follow 0; 3 follows 1.
        let net = Network::new(names(4), vec![(1, 0), (2, 0), (3, 1), (2, 0), (0, 0)]);
        assert_eq!(net.edges(), 3);
        assert_eq!(net.followers(0), [1, 2]);
        assert_eq!(net.following(2), [0]);
        assert_eq!(net.recipients(0, None).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(net.recipients(0, Some(2)).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(net.recipients(0, Some(3)).collect::<Vec<_>>(), [1, 2, 3]);
        let stranger = Message {
            tick: None,
            sender_id: "stranger".into(),
            seq: None,
            to: None,
            content: String::new(),
            data: None,
            decoded: crate::message::DecodedData::default(),
        };
        assert_eq!(net.hearers(Some(&stranger)).collect::<Vec<_>>(), [0, 1, 2, 3]);
        assert_eq!(net.hearers(None).count(), 4);
        let routes = Routes(vec![(0, None), (0, Some(3)), (1, None), (3, Some(0))]);
        assert_eq!(net.expected(&routes), [1, 2, 2, 2]);
        assert_eq!(net.out_degree_counts(), [1, 3]);
        assert_eq!(net.in_degree_counts(), [2, 1, 1]);
    }
}
