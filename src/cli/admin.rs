//! `agora cleanup` and `agora inspect`: a run's keys on Redis.

use std::time::Duration;

use super::args::{CleanupArgs, InspectArgs};
use crate::backend::keys::run_key_suffix;
use crate::backend::redis::{RedisBackend, admin};
use crate::backend::url::RedisUrl;
use crate::backend::{Keys, RunStore};
use crate::error::{Error, exit};
use crate::scenario::ScenarioError;

/// What an admin command does with the run's keys.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    Delete,
}

/// The URL and keys for `cleanup` and `inspect`. The URL comes as it does for `agora run`:
/// `--redis-url`, else `AGORA_BACKEND__URL`, else (to read only) the default. A command
/// that deletes keys never falls back to the default: the server must be named.
fn connect_admin(
    url: Option<&str>,
    access: Access,
    stream: &str,
    group_prefix: &str,
    cache_prefix: Option<&str>,
) -> Result<(RedisUrl, Keys), Error> {
    let from_env = std::env::var("AGORA_BACKEND__URL").ok();
    let (origin, text) = match (url, from_env.as_deref()) {
        (Some(url), _) => ("--redis-url", url),
        (None, Some(url)) => ("environment variable AGORA_BACKEND__URL", url),
        (None, None) if access == Access::Delete => {
            return Err(Error::Usage(format!(
                "agora cleanup deletes keys, so it needs to be told on which Redis: pass --redis-url URL (for example --redis-url {}) or set AGORA_BACKEND__URL",
                crate::backend::url::DEFAULT
            )));
        }
        (None, None) => ("the default URL", crate::backend::url::DEFAULT),
    };
    let url = RedisUrl::parse(text)
        .map_err(|e| Error::Scenario(ScenarioError::new(origin, None, e.message).with_hint(e.hint)))?;
    if stream.is_empty() {
        return Err(Error::Usage("--stream: the stream key must not be empty".into()));
    }
    // `x:dead` is one of run x's keys, never a run's stream (`agora run` refuses such names).
    if let Some(suffix) = run_key_suffix(stream).filter(|s| stream.len() > s.len()) {
        return Err(Error::Usage(format!(
            "--stream {stream:?} is not a run's stream but one of its keys (runs keep {suffix:?} beside their stream): give the stream itself, --stream {:?}",
            &stream[..stream.len() - suffix.len()]
        )));
    }
    let cache_prefix = cache_prefix.map_or_else(|| Keys::default_cache_prefix(stream), str::to_string);
    Ok((url, Keys::new(stream, group_prefix, cache_prefix)))
}

pub(super) fn cleanup(args: CleanupArgs) -> Result<u8, Error> {
    let (url, keys) = connect_admin(
        args.redis_url.as_deref(),
        Access::Delete,
        &args.stream,
        &args.group_prefix,
        args.cache_prefix.as_deref(),
    )?;
    let groups = match args.num_groups {
        Some(count) => admin::Groups::Numbered {
            prefix: args.group_prefix.clone(),
            count,
        },
        None => admin::Groups::Listed,
    };
    let report = actix_rt::System::new().block_on(async {
        let backend = RedisBackend::connect_as_found(&url, keys.clone(), Duration::from_secs(5)).await?;
        let holder = backend.lease_holder().await?;
        if let Some(holder) = holder.as_deref().filter(|h| !crate::runtime::liveness::gone(h)) {
            tracing::warn!(
                "a run of stream {:?} is still going: {}; its keys are deleted all the same, and it will stop",
                keys.stream,
                crate::runtime::liveness::describe(holder)
            );
        }
        let mut report = admin::cleanup(&backend, groups).await?;
        // A run's own cleanup keeps the lease; this one removes the run, lease and all (a live
        // run finds its lease and record gone, and stops).
        if let Some(holder) = holder {
            backend.release_lease(&holder).await?;
            report.keys += 1;
        }
        Ok::<_, crate::backend::BackendError>(report)
    })?;
    println!(
        "deleted {} consumer group{} and {} key{} of stream {:?} on {url}",
        report.groups,
        if report.groups == 1 { "" } else { "s" },
        report.keys,
        if report.keys == 1 { "" } else { "s" },
        keys.stream
    );
    if report.groups == 0 && report.keys == 0 {
        // Nothing there is fine (cleaning up twice), but a misspelt stream looks the same.
        eprintln!(
            "note: nothing of stream {:?} was there; if a run should be, check --stream (the scenario's backend.stream, which `agora check` shows)",
            keys.stream
        );
    }
    Ok(exit::SUCCESS)
}

pub(super) fn inspect(args: InspectArgs) -> Result<u8, Error> {
    let (url, keys) = connect_admin(
        args.redis_url.as_deref(),
        Access::Read,
        &args.stream,
        "group_",
        args.cache_prefix.as_deref(),
    )?;
    let inspection = actix_rt::System::new().block_on(async {
        let backend = RedisBackend::connect_as_found(&url, keys, Duration::from_secs(5)).await?;
        admin::inspect(&backend).await
    })?;
    if args.json {
        let json = serde_json::to_string_pretty(&inspection).map_err(|e| Error::Usage(e.to_string()))?;
        println!("{json}");
    } else {
        print!("{}", inspection.table());
    }
    Ok(exit::SUCCESS)
}
