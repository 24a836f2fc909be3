//! Riding out a lost backend: wait until it answers again, for at most
//! `backend.reconnect_timeout`, with the progress line saying so. The redis client reconnects
//! by itself in the background; this is the waiting and the retrying of agora's own commands.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::RunError;
use crate::backend::{Backend, BackendError};
use crate::report::progress;

const FIRST_DELAY: Duration = Duration::from_millis(50);
const MAX_DELAY: Duration = Duration::from_secs(1);

/// When the current outage began: every agent waiting on it shares one deadline, and it is
/// logged once.
static OUTAGE: Mutex<Option<Instant>> = Mutex::new(None);

/// When the outage began, and whether this caller is the first to notice it.
fn outage_began() -> (Instant, bool) {
    let mut outage = OUTAGE.lock().unwrap_or_else(|e| e.into_inner());
    match *outage {
        Some(began) => (began, false),
        None => {
            let now = Instant::now();
            *outage = Some(now);
            (now, true)
        }
    }
}

fn outage_ended() -> bool {
    OUTAGE.lock().unwrap_or_else(|e| e.into_inner()).take().is_some()
}

/// Waits until the backend answers, or `timeout` has passed since it stopped answering.
pub(crate) async fn wait<B: Backend>(backend: &B, timeout: Duration) -> Result<(), RunError> {
    let (began, first) = outage_began();
    let deadline = began + timeout;
    let mut delay = FIRST_DELAY;
    if first {
        tracing::warn!(
            "lost the backend; waiting up to {} for it to come back",
            crate::scenario::format_duration(timeout)
        );
    }
    progress::set_waiting(Some("the backend does not answer; retrying"));
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
                    break Err(gave_up(timeout, &e));
                }
                tokio::time::sleep(delay.min(deadline - now)).await;
                delay = (delay * 2).min(MAX_DELAY);
            }
            Err(e) => break Err(e.into()),
        }
    };
    progress::set_waiting(None);
    if result.is_ok() && outage_ended() {
        tracing::warn!("the backend answers again; going on");
    }
    result
}

/// Runs `op` until it succeeds, waiting for the backend whenever it is unreachable, for at
/// most `timeout` in all. Only for operations that can be repeated safely.
pub(crate) async fn retry<B, T, F, Fut>(backend: &B, timeout: Duration, mut op: F) -> Result<T, RunError>
where
    B: Backend,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, BackendError>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match op().await {
            Ok(value) => return Ok(value),
            Err(e) if e.is_unavailable() => {
                // The backend may answer PING and still fail this: do not go round for ever.
                if Instant::now() >= deadline {
                    return Err(gave_up(timeout, &e));
                }
                tracing::debug!("{e}; waiting for the backend to come back");
                wait(backend, timeout).await?;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn gave_up(timeout: Duration, e: &BackendError) -> RunError {
    RunError::Backend(BackendError::unavailable(
        format!(
            "gave up after waiting {} for the backend: {}",
            crate::scenario::format_duration(timeout),
            e.message
        ),
        "start Redis again, then continue the run with --resume",
    ))
}
