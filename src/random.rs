//! Random streams for agents, and draws that do not depend on `rand`'s algorithms.
//!
//! Every agent draws from its own `ChaCha8Rng`, seeded from the scenario seed and switched to
//! the agent's own stream (its declaration index). ChaCha8's output is fixed by its
//! specification, so a seed gives the same numbers on every machine and version. The helpers
//! here turn those numbers into ranges, coins and samples with fixed algorithms, because
//! `rand`'s own (`random_range`, `sample`) may change between releases and would change
//! transcripts with them.

use rand::Rng;
use rand::SeedableRng;
pub use rand_chacha::ChaCha8Rng;

/// The random stream of the agent at `index` in a scenario with `seed`.
pub fn agent_rng(seed: u64, index: usize) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(index as u64);
    rng
}

/// The random stream a scenario's network is drawn from: the scenario seed's last stream,
/// which no agent has (agents are numbered from 0, and there are at most 100,000).
pub fn network_rng(seed: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(u64::MAX);
    rng
}

/// A uniform integer in `0..n`; `n` must be at least 1 (0 is treated as 1).
/// Lemire's multiply-and-reject method: unbiased, and usually one draw.
pub fn below(rng: &mut impl Rng, n: u64) -> u64 {
    let n = n.max(1);
    let threshold = n.wrapping_neg() % n;
    loop {
        let product = u128::from(rng.next_u64()) * u128::from(n);
        if (product as u64) >= threshold {
            return (product >> 64) as u64;
        }
    }
}

/// A uniform float in `[0, 1)` with 53 random bits.
pub fn unit(rng: &mut impl Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// True with probability `p`. Always draws once, whatever `p` is, so that changing a
/// probability does not shift every later draw.
pub fn chance(rng: &mut impl Rng, p: f64) -> bool {
    unit(rng) < p
}

/// `k` distinct integers from `0..n` (all of them if `k >= n`), by Floyd's algorithm, in the
/// order they were chosen.
pub fn distinct(rng: &mut impl Rng, n: u64, k: usize) -> Vec<u64> {
    let k = (k as u64).min(n);
    let mut chosen: Vec<u64> = Vec::with_capacity(k as usize);
    for j in (n - k)..n {
        let t = below(rng, j + 1);
        if chosen.contains(&t) {
            chosen.push(j);
        } else {
            chosen.push(t);
        }
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let a: Vec<u64> = (0..4).map(|_| agent_rng(7, 0).next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        assert_ne!(agent_rng(7, 0).next_u64(), agent_rng(7, 1).next_u64());
        assert_ne!(agent_rng(7, 0).next_u64(), agent_rng(8, 0).next_u64());
    }

    #[test]
    fn chacha8_output_is_what_it_was() {
        // Known answers: if these change, every transcript changes with them.
        assert_eq!(agent_rng(42, 3).next_u64(), 6672028999979260041);
        assert_eq!(below(&mut agent_rng(1, 0), 1_000_000), 402485);
        assert_eq!(unit(&mut agent_rng(0, 0)), 0.7090754154265618);
    }

    #[test]
    fn draws_stay_in_range() {
        let mut rng = agent_rng(1, 0);
        for n in [1u64, 2, 3, 10, 1 << 40] {
            for _ in 0..200 {
                assert!(below(&mut rng, n) < n);
            }
        }
        for _ in 0..1000 {
            let u = unit(&mut rng);
            assert!((0.0..1.0).contains(&u));
        }
        assert!(!chance(&mut rng, 0.0));
        assert!(chance(&mut rng, 1.0));
    }

    #[test]
    fn distinct_draws_are_distinct() {
        let mut rng = agent_rng(3, 0);
        for (n, k) in [(10u64, 3usize), (5, 5), (5, 9), (1000, 20), (0, 2)] {
            let mut d = distinct(&mut rng, n, k);
            assert_eq!(d.len() as u64, (k as u64).min(n));
            assert!(d.iter().all(|&x| x < n));
            d.sort();
            d.dedup();
            assert_eq!(d.len() as u64, (k as u64).min(n));
        }
    }
}
