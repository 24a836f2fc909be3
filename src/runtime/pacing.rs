//! Free mode's time controller (the old project's): a least time between any two publishes
//! of the run (`scenario.min_publish_interval`), and between two of one agent
//! (`agents.min_publish_interval`).
//!
//! A step that publishes takes the next free slot before it commits, and waits for it: slots
//! are handed out in the order steps ask, each `interval` after the last. A step's messages
//! are one publish (they are committed together). The run-wide interval holds per process:
//! with `--workers N`, N processes each keep it.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// The run-wide interval of one process, shared by its agents.
#[derive(Debug)]
pub(crate) struct Pacer {
    interval: Duration,
    /// When the next publish may happen.
    next: Mutex<Option<Instant>>,
}

/// One agent's side: its own interval and when it may publish next.
#[derive(Debug, Default)]
pub(crate) struct AgentPace {
    pub interval: Option<Duration>,
    next: Option<Instant>,
}

impl Pacer {
    pub fn new(interval: Duration) -> Self {
        Pacer {
            interval,
            next: Mutex::new(None),
        }
    }

    /// Takes the earliest slot after `earliest` and after the last one handed out.
    fn take_slot(&self, earliest: Instant) -> Instant {
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        let slot = next.map_or(earliest, |n| n.max(earliest));
        *next = Some(slot + self.interval);
        slot
    }
}

impl AgentPace {
    pub fn new(interval: Option<Duration>) -> Self {
        AgentPace { interval, next: None }
    }

    /// Waits until this agent may publish: after its own interval since its last publish,
    /// and in the run's next slot.
    pub async fn wait_turn(&mut self, run: Option<&Pacer>) {
        let now = Instant::now();
        let mut slot = self.next.map_or(now, |n| n.max(now));
        if let Some(pacer) = run {
            slot = pacer.take_slot(slot);
        }
        if slot > now {
            tokio::time::sleep_until(slot).await;
        }
        if let Some(interval) = self.interval {
            self.next = Some(slot + interval);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn publishes_keep_both_intervals() {
        let run = Pacer::new(Duration::from_secs(3));
        let (mut a, mut b) = (
            AgentPace::new(Some(Duration::from_secs(10))),
            AgentPace::new(None),
        );
        let start = Instant::now();
        a.wait_turn(Some(&run)).await;
        b.wait_turn(Some(&run)).await;
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(3),
            "b waits for the run's interval"
        );
        a.wait_turn(Some(&run)).await;
        assert_eq!(start.elapsed(), Duration::from_secs(10), "a waits for its own");
        b.wait_turn(Some(&run)).await;
        assert_eq!(start.elapsed(), Duration::from_secs(13));
        let mut free = AgentPace::new(None);
        free.wait_turn(None).await;
        assert_eq!(start.elapsed(), Duration::from_secs(13), "no interval, no wait");
    }
}
