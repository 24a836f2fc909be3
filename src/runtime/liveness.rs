//! One run per stream at a time: a running coordinator holds the stream's lease
//! (`{stream}:lease`), so that a second `agora run` of the same stream (another terminal,
//! another machine) refuses to clean up or resume a run that is still going instead of
//! deleting its keys from under it.
//!
//! The lease names its holder (machine, process) and lapses [`LEASE`] after its last renewal;
//! the coordinator renews it every [`BEAT`]. Expiry is kept by the backend's clock, so the
//! machines' clocks do not matter. A holder on the same machine whose process has exited is
//! gone at once, so a crashed run can be resumed straight away from where it ran.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::backend::{Backend, BackendError};

/// How often a running coordinator renews its lease.
pub(crate) const BEAT: Duration = Duration::from_secs(1);
/// How long a lease lasts after its last renewal.
pub(crate) const LEASE: Duration = Duration::from_secs(10);

/// Who holds a stream's lease: the lease's value, as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Holder {
    pub host: String,
    pub pid: u32,
    /// Tells machines (and containers) apart where host names may not: the kernel's boot id
    /// and the process's pid namespace. Empty where they cannot be read.
    pub machine: String,
    /// When the run started (ms since the epoch), and which of this process's runs it is:
    /// no two runs are the same holder.
    pub since_ms: u64,
    #[serde(default)]
    pub run: u64,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "process {} on {}", self.pid, self.host)
    }
}

impl Holder {
    /// A new holder for a run of this process.
    pub fn me() -> Holder {
        static RUNS: AtomicU64 = AtomicU64::new(0);
        Holder {
            host: host_name(),
            pid: std::process::id(),
            machine: machine_id(),
            since_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            run: RUNS.fetch_add(1, Ordering::Relaxed),
        }
    }

    pub fn to_value(&self) -> String {
        // A struct of strings and numbers always serialises.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Whether this holder certainly no longer runs: it ran on this machine and its process
    /// has exited. Elsewhere only the lease's expiry tells.
    pub fn is_gone(&self) -> bool {
        let mine = machine_id();
        let same_machine = if self.machine.is_empty() || mine.is_empty() {
            // Where neither side can read the kernel's ids, a host name has to do, if there
            // is one.
            self.machine.is_empty() && mine.is_empty() && known_host_name().is_some_and(|h| h == self.host)
        } else {
            self.machine == mine
        };
        same_machine && !process_exists(self.pid)
    }
}

/// This machine's name, or "host" where it has none.
pub(crate) fn host_name() -> String {
    known_host_name().unwrap_or_else(|| "host".to_string())
}

fn known_host_name() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: `gethostname` writes at most `buf.len()` bytes into `buf`.
    let from_kernel = (unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0)
        .then(|| String::from_utf8_lossy(buf.split(|&b| b == 0).next().unwrap_or(&[])).into_owned());
    from_kernel
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}

fn machine_id() -> String {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id");
    let pid_namespace = std::fs::read_link("/proc/self/ns/pid");
    match (boot, pid_namespace) {
        (Ok(boot), Ok(ns)) => format!("{} {}", boot.trim(), ns.display()),
        _ => String::new(),
    }
}

/// Whether process `pid` of this machine (and pid namespace) is running.
fn process_exists(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 sends nothing; it only asks whether the process exists.
    let exists = unsafe { libc::kill(pid, 0) } == 0
        || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    // A zombie has exited; only its parent has not collected it yet.
    exists
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            stat.rsplit_once(')')
                .is_some_and(|(_, rest)| matches!(rest.trim_start().chars().next(), Some('Z' | 'X')))
        })
}

/// Whether the lease's holder `value` certainly no longer runs ([`Holder::is_gone`]).
pub(crate) fn gone(value: &str) -> bool {
    serde_json::from_str::<Holder>(value).is_ok_and(|h| h.is_gone())
}

/// How a lease held by someone else reads in an error.
pub(crate) fn describe(value: &str) -> String {
    match serde_json::from_str::<Holder>(value) {
        Ok(holder) => holder.to_string(),
        Err(_) => format!("a holder agora does not know ({value:?})"),
    }
}

/// Takes the stream's lease for `me`, over a holder that is gone; returns the live holder
/// that keeps it otherwise.
pub(crate) async fn take<B: Backend>(backend: &B, me: &Holder) -> Result<Option<String>, BackendError> {
    let value = me.to_value();
    match backend.take_lease(&value, LEASE, None).await? {
        Some(other) if gone(&other) => backend.take_lease(&value, LEASE, Some(&other)).await,
        other => Ok(other),
    }
}

/// How a run lost its lease, once it has: shared by the heartbeat, which finds out, and the
/// run, which stops writing.
pub(crate) type LostTo = Rc<RefCell<Option<String>>>;

/// Renews the lease every [`BEAT`] until dropped. If another run takes the lease meanwhile
/// (this process was stopped longer than [`LEASE`] and another run started), it records who
/// in `lost` and asks the run to stop.
pub(crate) struct Heartbeat {
    task: tokio::task::JoinHandle<()>,
}

impl Heartbeat {
    /// Starts renewing on the current thread's runtime; `stop` is the run's stop signal.
    pub fn start<B: Backend>(backend: B, me: &Holder, stop: watch::Sender<bool>, lost: LostTo) -> Heartbeat {
        let value = me.to_value();
        let task = tokio::task::spawn_local(async move {
            loop {
                tokio::time::sleep(BEAT).await;
                if !renew(&backend, &value, &lost).await {
                    let _ = stop.send(true);
                    return;
                }
            }
        });
        Heartbeat { task }
    }
}

/// Renews `holder`'s lease once; false when it was lost, with how recorded in `lost`. A
/// backend that does not answer counts as kept: the run itself notices it and waits for it.
pub(crate) async fn renew<B: Backend>(backend: &B, holder: &str, lost: &LostTo) -> bool {
    match backend.renew_lease(holder, LEASE).await {
        Ok(true) => true,
        Ok(false) => {
            let stream = &backend.keys().stream;
            let how = match backend.lease_holder().await.ok().flatten() {
                Some(other) => format!("another run took over stream {stream:?} ({})", describe(&other)),
                None => format!(
                    "the lease and the record of stream {stream:?} were deleted (by `agora cleanup`?)"
                ),
            };
            *lost.borrow_mut() = Some(how);
            false
        }
        Err(e) => {
            tracing::debug!("could not renew the stream's lease: {e}");
            true
        }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_renewal_says_how_the_lease_was_lost() {
        use crate::backend::RunStore;
        use crate::backend::memory::MemoryBackend;
        let backend = MemoryBackend::new(crate::backend::Keys::for_stream("s"));
        let holder = Holder::me();
        let me = holder.to_value();
        let lost = LostTo::default();
        assert_eq!(take(&backend, &holder).await.unwrap(), None);
        assert!(renew(&backend, &me, &lost).await && lost.borrow().is_none());
        // `agora cleanup` under the run: its lease and record deleted.
        backend.release_lease(&me).await.unwrap();
        assert!(!renew(&backend, &me, &lost).await);
        assert!(
            lost.borrow().as_deref().unwrap().contains("were deleted"),
            "{lost:?}"
        );
        // Another run took it.
        backend.take_lease("other", LEASE, None).await.unwrap();
        assert!(!renew(&backend, &me, &lost).await);
        assert!(
            lost.borrow()
                .as_deref()
                .unwrap()
                .contains("another run took over"),
            "{lost:?}"
        );
    }

    #[test]
    fn a_holder_on_this_machine_is_gone_when_its_process_is() {
        let mut holder = Holder::me();
        assert!(!holder.machine.is_empty(), "this test needs /proc");
        assert!(!holder.is_gone(), "this process runs");
        let mut child = std::process::Command::new("true").spawn().unwrap();
        holder.pid = child.id();
        child.wait().unwrap();
        assert!(holder.is_gone(), "a process that exited and was waited for");
        // Another machine's process cannot be looked up: only the lease's expiry tells.
        holder.machine = "another boot id".to_string();
        assert!(!holder.is_gone());
        // A holder that could not read its machine's ids is only matched where neither can.
        holder.machine = String::new();
        assert!(!holder.is_gone());
    }

    #[test]
    fn a_zombie_is_gone() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let holder = Holder {
            pid: child.id(),
            ..Holder::me()
        };
        // Not waited for yet: it stays a zombie once it exits.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !holder.is_gone() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(holder.is_gone());
        child.wait().unwrap();
    }

    #[test]
    fn holders_read_back_and_unknown_values_are_described() {
        let me = Holder::me();
        assert_eq!(serde_json::from_str::<Holder>(&me.to_value()).unwrap(), me);
        assert_eq!(
            describe(&me.to_value()),
            format!("process {} on {}", me.pid, me.host)
        );
        assert!(describe("xyz").contains("\"xyz\""));
        assert!(!gone("xyz"), "an unknown holder is never taken for gone");
    }
}
