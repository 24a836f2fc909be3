//! Riding out a lost backend: wait until it answers again, for at most
//! `backend.reconnect_timeout`, with the progress line saying so. The redis client reconnects
//! by itself in the background; this is the waiting and the retrying of agora's own commands.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use super::RunError;
use crate::backend::{Backend, BackendError};
use crate::report::progress;

const FIRST_DELAY: Duration = Duration::from_millis(50);
const MAX_DELAY: Duration = Duration::from_secs(1);

/// Waits until the backend answers, or `timeout` has passed.
pub(crate) async fn wait<B: Backend>(backend: &B, timeout: Duration) -> Result<(), RunError> {
    let deadline = Instant::now() + timeout;
    let mut delay = FIRST_DELAY;
    progress::set_waiting(Some("the backend does not answer; retrying"));
    let result = loop {
        match backend.ping().await {
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
    if result.is_ok() {
        tracing::info!("the backend answers again");
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
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(gave_up(timeout, &e));
                }
                tracing::warn!("{e}; waiting for the backend to come back");
                wait(backend, left).await?;
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
