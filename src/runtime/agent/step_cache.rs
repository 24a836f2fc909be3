//! Cache reads during one agent step.
//!
//! The behaviour's reads are synchronous, but Redis is not: reads are answered from what the
//! runtime has already fetched for this step, or at once by a backend that can (the memory
//! backend), or recorded as a miss. After a miss the runtime fetches the data and runs the
//! step again from the same state and random position, so the behaviour never sees the
//! difference. The agent's own writes of this step are laid over what the backend holds.

use std::cell::RefCell;

use super::call::Remembered;
use crate::backend::{Backend, CacheAnswer, CacheEntry, CacheQuery, ScoreBound};
use crate::behaviour::{BehaviourError, CacheReads};

/// Answers fetched for this step, by query.
#[derive(Debug, Default)]
pub(crate) struct Fetched(Vec<(CacheQuery, CacheAnswer)>);

impl Fetched {
    fn get(&self, query: &CacheQuery) -> Option<&CacheAnswer> {
        self.0.iter().find(|(q, _)| q == query).map(|(_, a)| a)
    }

    pub fn insert(&mut self, query: CacheQuery, answer: CacheAnswer) {
        self.0.push((query, answer));
    }
}

pub(crate) struct StepCache<'a, B> {
    pub backend: &'a B,
    pub fetched: &'a Fetched,
    pub agent: &'a str,
    /// What this step may see of the global sorted set.
    pub bound: ScoreBound,
    /// This step's own writes so far, oldest first.
    pub own: &'a RefCell<Vec<Remembered>>,
    /// Reads that could not be answered yet.
    pub misses: &'a RefCell<Vec<CacheQuery>>,
}

impl<B: Backend> StepCache<'_, B> {
    fn answer(&mut self, query: CacheQuery) -> Option<CacheAnswer> {
        if let Some(answer) = self.fetched.get(&query) {
            return Some(answer.clone());
        }
        if let Some(answer) = self.backend.cache_read_now(&query) {
            return Some(answer);
        }
        self.misses.borrow_mut().push(query);
        None
    }

    fn entries(&mut self, query: CacheQuery) -> Result<Vec<CacheEntry>, BehaviourError> {
        match self.answer(query) {
            Some(CacheAnswer::Members(members)) => decode(&members),
            Some(CacheAnswer::Count(_)) => Err(BehaviourError::new("internal error: count for a list read")),
            None => Err(BehaviourError::pending()),
        }
    }

    /// The last `n` of `committed` followed by this step's own writes.
    fn with_own(&self, mut committed: Vec<CacheEntry>, n: usize) -> Vec<CacheEntry> {
        committed.extend(self.own.borrow().iter().map(|own| own.entry(self.agent)));
        let from = committed.len().saturating_sub(n);
        committed.split_off(from)
    }
}

fn decode(members: &[String]) -> Result<Vec<CacheEntry>, BehaviourError> {
    members
        .iter()
        .map(|m| CacheEntry::decode(m).map_err(BehaviourError::new))
        .collect()
}

impl<B: Backend> CacheReads for StepCache<'_, B> {
    fn own_last(&mut self, n: usize) -> Result<Vec<CacheEntry>, BehaviourError> {
        let committed = self.entries(CacheQuery::OwnLast {
            agent: self.agent.to_string(),
            n,
        })?;
        Ok(self.with_own(committed, n))
    }

    fn last(&mut self, n: usize) -> Result<Vec<CacheEntry>, BehaviourError> {
        let committed = self.entries(CacheQuery::Last { n, bound: self.bound })?;
        Ok(self.with_own(committed, n))
    }

    fn count(&mut self) -> Result<u64, BehaviourError> {
        match self.answer(CacheQuery::Count { bound: self.bound }) {
            Some(CacheAnswer::Count(c)) => Ok(c),
            Some(CacheAnswer::Members(_)) => Err(BehaviourError::new("internal error: members for a count")),
            None => Err(BehaviourError::pending()),
        }
    }

    fn at_ranks(&mut self, ranks: &[u64]) -> Result<Vec<CacheEntry>, BehaviourError> {
        // Ask for every rank before failing, so that one fetch brings them all.
        let mut out = Vec::with_capacity(ranks.len());
        let mut missed = false;
        for &rank in ranks {
            match self.answer(CacheQuery::Rank { rank }) {
                Some(CacheAnswer::Members(m)) => out.extend(decode(&m)?),
                Some(CacheAnswer::Count(_)) => {}
                None => missed = true,
            }
        }
        if missed {
            return Err(BehaviourError::pending());
        }
        Ok(out)
    }
}
