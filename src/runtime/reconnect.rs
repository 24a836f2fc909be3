//! Riding out a lost backend: wait until it answers again, for at most
//! `backend.reconnect_timeout`, telling the run's observer. The redis client reconnects by
//! itself in the background; this is the waiting and the retrying of agora's own commands.
//!
//! Everything of one run that waits (agents, the shard, the coordinator) shares one
//! [`Reconnect`], so an outage has one deadline and is announced once; two runs in one
//! process have their own.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::RunError;
use super::observer::RunObserver;
use crate::backend::{Backend, BackendError};

const FIRST_DELAY: Duration = Duration::from_millis(50);
const MAX_DELAY: Duration = Duration::from_secs(1);

/// How one run waits for its backend.
#[derive(Clone)]
pub(crate) struct Reconnect {
    timeout: Duration,
    /// When the current outage began.
    outage: Arc<Mutex<Option<Instant>>>,
    observer: Arc<dyn RunObserver>,
}

impl Reconnect {
    pub fn new(timeout: Duration, observer: Arc<dyn RunObserver>) -> Self {
        Reconnect {
            timeout,
            outage: Arc::new(Mutex::new(None)),
            observer,
        }
    }

    pub fn observer(&self) -> &Arc<dyn RunObserver> {
        &self.observer
    }

    /// When the current outage began, and whether this caller is the first to notice it.
    fn outage_began(&self) -> (Instant, bool) {
        let mut outage = self.outage.lock().unwrap_or_else(|e| e.into_inner());
        match *outage {
            Some(began) => (began, false),
            None => {
                let now = Instant::now();
                *outage = Some(now);
                (now, true)
            }
        }
    }

    fn outage_ended(&self) -> bool {
        self.outage
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .is_some()
    }

    /// Waits until the backend answers, or the timeout has passed since it stopped answering.
    ///
    /// # Errors
    ///
    /// The backend stayed away past the timeout (`RunError::Backend`, unavailable: exit 3).
    pub async fn wait<B: Backend>(&self, backend: &B) -> Result<(), RunError> {
        let (began, first) = self.outage_began();
        let deadline = began + self.timeout;
        let mut delay = FIRST_DELAY;
        if first {
            tracing::warn!(
                "lost the backend; waiting up to {} for it to come back",
                crate::scenario::format_duration(self.timeout)
            );
        }
        self.observer
            .waiting(Some("the backend does not answer; retrying"));
        let result = loop {
            let left = deadline
                .saturating_duration_since(Instant::now())
                .max(FIRST_DELAY);
            let ping = tokio::time::timeout(left, backend.ping())
                .await
                .unwrap_or_else(|_| Err(BackendError::unavailable("PING did not return", "")));
            match ping {
                Ok(()) => break Ok(()),
                Err(e) if e.is_unavailable() => {
                    let now = Instant::now();
                    if now >= deadline {
                        break Err(self.gave_up(&e));
                    }
                    tokio::time::sleep(delay.min(deadline - now)).await;
                    delay = (delay * 2).min(MAX_DELAY);
                }
                Err(e) => break Err(e.into()),
            }
        };
        self.observer.waiting(None);
        if result.is_ok() && self.outage_ended() {
            tracing::warn!("the backend answers again; going on");
        }
        result
    }

    /// Runs `op` until it succeeds, waiting for the backend whenever it is unreachable, for
    /// at most the timeout in all. Only for operations that can be repeated safely.
    ///
    /// # Errors
    ///
    /// What `op` failed with, when it is not the backend being away; the backend staying away
    /// past the timeout.
    pub async fn retry<B, T, F, Fut>(&self, backend: &B, mut op: F) -> Result<T, RunError>
    where
        B: Backend,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, BackendError>>,
    {
        let deadline = Instant::now() + self.timeout;
        loop {
            match op().await {
                Ok(value) => return Ok(value),
                Err(e) if e.is_unavailable() => {
                    // The backend may answer PING and still fail this: do not go round for ever.
                    if Instant::now() >= deadline {
                        return Err(self.gave_up(&e));
                    }
                    tracing::debug!("{e}; waiting for the backend to come back");
                    self.wait(backend).await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn gave_up(&self, e: &BackendError) -> RunError {
        RunError::Backend(BackendError::unavailable(
            format!(
                "gave up after waiting {} for the backend: {}",
                crate::scenario::format_duration(self.timeout),
                e.message
            ),
            "start Redis again, then continue the run with --resume",
        ))
    }
}
