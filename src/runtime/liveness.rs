//! A running coordinator's sign of life, kept in the run's checkpoint hash, so that a second
//! `agora run` of the same stream (another terminal, another machine) refuses to clean up or
//! resume a run that is still going instead of deleting its keys from under it.
//!
//! The coordinator records its host and process id when it starts and the time every
//! [`BEAT`]. A run counts as alive while its status is `running`, its last beat is less than
//! [`STALE_AFTER`] old, and, when it ran on this host, its process still exists: so a run
//! killed a moment ago can be resumed at once from the same machine, and after a few seconds
//! from any other.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::backend::Backend;

/// How often a running coordinator records that it is alive.
pub(crate) const BEAT: Duration = Duration::from_secs(1);
/// How old the last beat may be before the run is taken for gone.
pub(crate) const STALE_AFTER: Duration = Duration::from_secs(5);

const HOST: &str = "host";
const PID: &str = "pid";
const ALIVE_AT: &str = "alive_at_ms";

/// This machine's name, as the kernel gives it.
pub(crate) fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_string())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The fields that say who runs the stream, for the start of a run.
pub(crate) fn holder_fields() -> [(&'static str, String); 3] {
    [
        (HOST, host_name()),
        (PID, std::process::id().to_string()),
        (ALIVE_AT, now_ms().to_string()),
    ]
}

/// A run that looks alive: who runs it, and how long ago it last said so.
#[derive(Debug, PartialEq)]
pub(crate) struct Alive {
    pub host: String,
    pub pid: u32,
    pub beat_ago: Duration,
}

impl std::fmt::Display for Alive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "process {} on {} (last sign of life {:.1} s ago)",
            self.pid,
            self.host,
            self.beat_ago.as_secs_f64()
        )
    }
}

/// Whether the run recorded in `fields` (the checkpoint hash) is still going.
pub(crate) fn alive(fields: &[(String, String)]) -> Option<Alive> {
    let field = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    if field("status") != Some("running") {
        return None;
    }
    let host = field(HOST)?.to_string();
    let pid: u32 = field(PID)?.parse().ok()?;
    let beat: u64 = field(ALIVE_AT)?.parse().ok()?;
    // A clock behind the other machine's counts as a beat just now.
    let beat_ago = Duration::from_millis(now_ms().saturating_sub(beat));
    if beat_ago > STALE_AFTER {
        return None;
    }
    if host == host_name() && (pid == std::process::id() || !process_exists(pid)) {
        return None;
    }
    Some(Alive { host, pid, beat_ago })
}

/// Whether process `pid` of this machine is running. Where `/proc` cannot tell, it is
/// assumed to be, and the beat's age decides.
fn process_exists(pid: u32) -> bool {
    if !std::path::Path::new("/proc/self/stat").exists() {
        return true;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses; a zombie has exited.
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| matches!(rest.trim_start().chars().next(), Some('Z' | 'X'))),
        Err(_) => false,
    }
}

/// Records a beat every [`BEAT`] until dropped.
pub(crate) struct Heartbeat(tokio::task::JoinHandle<()>);

impl Heartbeat {
    /// Starts beating on the current thread's runtime.
    pub fn start<B: Backend>(backend: B) -> Heartbeat {
        Heartbeat(tokio::task::spawn_local(async move {
            loop {
                tokio::time::sleep(BEAT).await;
                let beat = [(ALIVE_AT, now_ms().to_string())];
                if let Err(e) = backend.write_checkpoint(&beat).await {
                    // The run itself notices a lost backend and waits for it.
                    tracing::debug!("could not record a sign of life: {e}");
                }
            }
        }))
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(status: &str, host: &str, pid: u32, ago_ms: u64) -> Vec<(String, String)> {
        [
            ("status", status.to_string()),
            (HOST, host.to_string()),
            (PID, pid.to_string()),
            (ALIVE_AT, (now_ms() - ago_ms).to_string()),
        ]
        .map(|(k, v)| (k.to_string(), v))
        .to_vec()
    }

    #[test]
    fn a_running_run_on_another_host_with_a_fresh_beat_is_alive() {
        let got = alive(&fields("running", "elsewhere", 42, 500)).expect("alive");
        assert_eq!((got.host.as_str(), got.pid), ("elsewhere", 42));
        assert!(got.beat_ago >= Duration::from_millis(500));
    }

    #[test]
    fn a_stale_beat_an_ended_run_or_no_record_is_not_alive() {
        assert_eq!(alive(&fields("running", "elsewhere", 42, 6_000)), None);
        assert_eq!(alive(&fields("finished", "elsewhere", 42, 0)), None);
        assert_eq!(alive(&fields("interrupted", "elsewhere", 42, 0)), None);
        assert_eq!(alive(&[("status".to_string(), "running".to_string())]), None);
        assert_eq!(alive(&[]), None);
    }

    #[test]
    fn on_this_host_the_process_decides() {
        // The parent of this test process is running; a child that has been waited for is not.
        let parent = std::os::unix::process::parent_id();
        assert!(alive(&fields("running", &host_name(), parent, 0)).is_some());
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let gone = child.id();
        child.wait().unwrap();
        assert_eq!(alive(&fields("running", &host_name(), gone, 0)), None);
        assert_eq!(
            alive(&fields("running", &host_name(), std::process::id(), 0)),
            None
        );
    }
}
