//! Random graph generators, each drawn from one random stream with agora's portable draws
//! ([`crate::random`]), so that a seed gives the same graph on every machine and version.
//!
//! The generators draw undirected graphs, as their textbook definitions do; the network makes
//! each undirected edge a follow both ways. Nodes are agent indices `0..n`; an edge is
//! `(a, b)` with `a != b`, each at most once.

use std::collections::HashSet;

use rand::Rng;

use crate::random::{below, chance, unit};

/// An undirected edge between two agent indices.
pub type Edge = (u32, u32);

/// The ring lattice: each node joined to its `k / 2` nearest neighbours on each side, so every
/// node has degree `k` (Watts and Strogatz 1998, the starting lattice). `k` is even and
/// below `n`.
pub fn ring(n: u32, k: u32) -> Vec<Edge> {
    let half = k / 2;
    let mut edges = Vec::with_capacity(n as usize * half as usize);
    for j in 1..=half {
        for u in 0..n {
            edges.push((u, (u + j) % n));
        }
    }
    edges
}

/// What [`watts_strogatz`] drew: the graph and how many of the lattice's edges it rewired.
pub struct Rewired {
    pub edges: Vec<Edge>,
    pub rewired: u64,
}

/// The Watts-Strogatz small world (Watts and Strogatz 1998, "Collective dynamics of
/// small-world networks"): the ring lattice, then each edge `(u, u + j)`, taken for
/// `j = 1..=k/2` and `u = 0..n` in turn, is rewired with probability `p` to `(u, w)` with `w`
/// uniform among the nodes that are neither `u` nor already joined to it (networkx's
/// `watts_strogatz_graph` uses the same order). The number of edges stays `n * k / 2`.
pub fn watts_strogatz(n: u32, k: u32, p: f64, rng: &mut impl Rng) -> Rewired {
    let lattice = ring(n, k);
    let mut adjacent: Vec<HashSet<u32>> = vec![HashSet::with_capacity(k as usize); n as usize];
    for &(a, b) in &lattice {
        adjacent[a as usize].insert(b);
        adjacent[b as usize].insert(a);
    }
    let mut rewired = 0;
    for &(u, v) in &lattice {
        // One draw per edge, whatever happens next, so that p changes only what it must.
        if !chance(rng, p) || adjacent[u as usize].len() as u32 >= n - 1 {
            continue;
        }
        let w = loop {
            let w = below(rng, u64::from(n)) as u32;
            if w != u && !adjacent[u as usize].contains(&w) {
                break w;
            }
        };
        adjacent[u as usize].remove(&v);
        adjacent[v as usize].remove(&u);
        adjacent[u as usize].insert(w);
        adjacent[w as usize].insert(u);
        rewired += 1;
    }
    let mut edges = Vec::with_capacity(lattice.len());
    for (a, near) in adjacent.iter().enumerate() {
        let a = a as u32;
        edges.extend(near.iter().filter(|&&b| a < b).map(|&b| (a, b)));
    }
    edges.sort_unstable();
    Rewired { edges, rewired }
}

/// The Barabasi-Albert scale-free graph (Barabasi and Albert 1999, "Emergence of scaling in
/// random networks"): nodes `0..m` start unconnected; each later node joins `m` distinct
/// earlier nodes chosen with probability proportional to their degree (the first joins all
/// `m`). Every new node brings exactly `m` edges: `m * (n - m)` in all. `1 <= m < n`.
pub fn barabasi_albert(n: u32, m: u32, rng: &mut impl Rng) -> Vec<Edge> {
    let mut edges = Vec::with_capacity((n - m) as usize * m as usize);
    // Each node appears once per edge end: a uniform pick from it is a pick by degree.
    let mut ends: Vec<u32> = Vec::with_capacity(2 * edges.capacity());
    let mut targets: Vec<u32> = (0..m).collect();
    for source in m..n {
        for &t in &targets {
            edges.push((t, source));
            ends.push(t);
            ends.push(source);
        }
        targets.clear();
        while (targets.len() as u32) < m.min(source + 1) {
            let pick = ends[below(rng, ends.len() as u64) as usize];
            if !targets.contains(&pick) {
                targets.push(pick);
            }
        }
        targets.sort_unstable();
    }
    edges
}

/// The Erdos-Renyi graph G(n, p) (Gilbert 1959): each of the `n (n - 1) / 2` pairs is an edge
/// with probability `p`, independently. Drawn by skipping geometrically over the pairs that
/// are not edges (Batagelj and Brandes 2005, "Efficient generation of large random
/// networks"), so it costs about the number of edges, not the number of pairs.
pub fn erdos_renyi(n: u32, p: f64, rng: &mut impl Rng) -> Vec<Edge> {
    let mut edges = Vec::new();
    if p <= 0.0 || n < 2 {
        return edges;
    }
    if p >= 1.0 {
        for a in 0..n {
            edges.extend((a + 1..n).map(|b| (a, b)));
        }
        return edges;
    }
    let log_q = (1.0 - p).ln();
    // The pairs (w, v) with w < v, in the order v = 1, w = 0; v = 2, w = 0, 1; ...
    let (mut v, mut w): (u64, i64) = (1, -1);
    let n = u64::from(n);
    while v < n {
        let r = unit(rng);
        let skip = ((1.0 - r).ln() / log_q).floor();
        w += 1 + if skip.is_finite() {
            skip as i64
        } else {
            i64::MAX / 2
        };
        while w >= v as i64 && v < n {
            w -= v as i64;
            v += 1;
        }
        if v < n {
            edges.push((w as u32, v as u32));
        }
    }
    edges
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::agent_rng;

    fn degrees(n: u32, edges: &[Edge]) -> Vec<u32> {
        let mut degree = vec![0; n as usize];
        for &(a, b) in edges {
            degree[a as usize] += 1;
            degree[b as usize] += 1;
        }
        degree
    }

    fn no_loops_or_doubles(edges: &[Edge]) {
        let mut seen = HashSet::new();
        for &(a, b) in edges {
            assert_ne!(a, b, "self-loop");
            assert!(seen.insert((a.min(b), a.max(b))), "edge {a}-{b} twice");
        }
    }

    #[test]
    fn ring_gives_every_node_degree_k() {
        let edges = ring(20, 4);
        assert_eq!(edges.len(), 40);
        assert!(degrees(20, &edges).iter().all(|&d| d == 4));
        no_loops_or_doubles(&edges);
        assert!(edges.contains(&(19, 1)), "the lattice wraps around");
    }

    #[test]
    fn watts_strogatz_keeps_the_edge_count_and_rewires_about_p() {
        let (n, k) = (2000, 10);
        let none = watts_strogatz(n, k, 0.0, &mut agent_rng(1, 0));
        assert_eq!(none.rewired, 0);
        let mut lattice = ring(n, k);
        for e in &mut lattice {
            *e = (e.0.min(e.1), e.0.max(e.1));
        }
        lattice.sort_unstable();
        assert_eq!(none.edges, lattice);
        let drawn = watts_strogatz(n, k, 0.1, &mut agent_rng(1, 0));
        assert_eq!(drawn.edges.len(), (n * k / 2) as usize);
        no_loops_or_doubles(&drawn.edges);
        // Binomial(10000, 0.1): mean 1000, sd 30.
        assert!((850..1150).contains(&drawn.rewired), "{} rewired", drawn.rewired);
        let moved = drawn
            .edges
            .iter()
            .filter(|e| lattice.binary_search(e).is_err())
            .count() as u64;
        assert!(
            moved <= drawn.rewired && moved + 50 > drawn.rewired,
            "{moved} of {}",
            drawn.rewired
        );
        let again = watts_strogatz(n, k, 0.1, &mut agent_rng(1, 0));
        assert_eq!(again.edges, drawn.edges);
    }

    #[test]
    fn barabasi_albert_adds_m_edges_per_new_node() {
        let (n, m) = (3000, 3);
        let edges = barabasi_albert(n, m, &mut agent_rng(5, 0));
        assert_eq!(edges.len(), (m * (n - m)) as usize);
        no_loops_or_doubles(&edges);
        for source in m..n {
            let up = edges.iter().filter(|e| e.1 == source).count();
            assert_eq!(up, m as usize, "node {source}");
            assert!(edges.iter().filter(|e| e.1 == source).all(|e| e.0 < source));
        }
        // Preferential attachment: hubs far above the mean degree of 2m.
        let max = *degrees(n, &edges).iter().max().unwrap();
        assert!(max > 60, "largest degree {max}");
        assert_eq!(edges, barabasi_albert(n, m, &mut agent_rng(5, 0)));
        assert_ne!(edges, barabasi_albert(n, m, &mut agent_rng(6, 0)));
    }

    #[test]
    fn erdos_renyi_has_about_p_of_all_pairs() {
        let n = 1000;
        let edges = erdos_renyi(n, 0.01, &mut agent_rng(3, 0));
        no_loops_or_doubles(&edges);
        // Binomial(499500, 0.01): mean 4995, sd 70.
        assert!((4600..5400).contains(&edges.len()), "{} edges", edges.len());
        assert!(edges.iter().all(|&(a, b)| a < b && b < n));
        assert_eq!(erdos_renyi(10, 1.0, &mut agent_rng(3, 0)).len(), 45);
        assert!(erdos_renyi(10, 0.0, &mut agent_rng(3, 0)).is_empty());
        assert_eq!(edges, erdos_renyi(n, 0.01, &mut agent_rng(3, 0)));
    }
}
