//! The backend conformance suite (tests/common/conformance.rs), run on each backend.

mod common;

use agora::backend::Keys;
use std::time::Duration;

use agora::backend::memory::MemoryBackend;
use agora::backend::redis::RedisBackend;
use common::conformance as case;
use common::redis_cluster::RedisCluster;
use common::redis_server::RedisServer;

/// One test per case, for a backend made by `$make`.
macro_rules! conformance {
    ($name:ident, $make:expr, [$($case:ident),* $(,)?]) => {
        mod $name {
            use super::*;
            $(
                #[test]
                fn $case() {
                    let (backend, _guard) = $make;
                    common::block_on(async { case::$case(backend.await).await });
                }
            )*
        }
    };
}

macro_rules! all_cases {
    ($name:ident, $make:expr) => {
        conformance!(
            $name,
            $make,
            [
                groups_are_created_once_and_listed,
                reading_without_a_group_fails,
                every_group_reads_every_entry,
                groups_read_from_the_start_of_the_stream,
                pending_entries_until_acknowledged,
                pending_reads_are_per_consumer,
                seed_style_and_malformed_entries,
                messages_keep_every_field,
                range_reads_without_a_group,
                trimming_spares_unread_entries,
                waiting_for_entries,
                cache_lists_and_sorted_set,
                cache_keeps_equal_values_of_different_writers,
                cache_samples_are_reproducible,
                cache_clear_expire_and_clear_all,
                commit_applies_a_whole_step,
                cleanup_removes_the_run,
                idle_pending_entries_can_be_claimed,
                checkpoints_are_kept,
                notes_and_hashes_for_bookkeeping,
                one_lease_holder_at_a_time,
                a_commit_whose_group_is_gone_changes_nothing,
                claiming_removes_consumers_left_with_nothing,
                entries_added_counts_what_trimming_removed,
                answers_are_kept_once_and_use_adds_up,
            ]
        );
    };
}

/// A fresh memory backend (and nothing to keep alive).
fn memory() -> (impl std::future::Future<Output = MemoryBackend>, ()) {
    (async { MemoryBackend::new(Keys::for_stream("conformance")) }, ())
}

/// A Redis backend on a server of the test's own, kept alive by the returned guard.
fn redis() -> (impl std::future::Future<Output = RedisBackend>, RedisServer) {
    let server = RedisServer::start();
    let url = server.parsed_url();
    let connect = async move {
        RedisBackend::connect(&url, Keys::for_stream("conformance"), Duration::from_secs(5))
            .await
            .expect("connect to the test's redis-server")
    };
    (connect, server)
}

all_cases!(memory, memory());
all_cases!(redis, redis());

/// The memory backend with agents reading inboxes ([`case::small_network`]).
fn memory_inboxes() -> (impl std::future::Future<Output = MemoryBackend>, ()) {
    let keys = Keys::for_stream("conformance").with_inboxes(true);
    (
        async move { MemoryBackend::with_network(keys, Some(case::small_network())) },
        (),
    )
}

/// Redis with agents reading inboxes ([`case::small_network`]).
fn redis_inboxes() -> (impl std::future::Future<Output = RedisBackend>, RedisServer) {
    let server = RedisServer::start();
    let url = server.parsed_url();
    let connect = async move {
        let keys = Keys::for_stream("conformance").with_inboxes(true);
        RedisBackend::connect(&url, keys, Duration::from_secs(5))
            .await
            .expect("connect to the test's redis-server")
            .with_network(Some(case::small_network()))
    };
    (connect, server)
}

conformance!(
    memory_with_inboxes,
    memory_inboxes(),
    [inboxes_hold_what_an_agent_hears]
);
conformance!(
    redis_with_inboxes,
    redis_inboxes(),
    [inboxes_hold_what_an_agent_hears]
);

/// A three-node Redis Cluster, its keys spread over slots, agents reading inboxes
/// ([`case::small_network`]).
fn redis_cluster_inboxes() -> (impl std::future::Future<Output = RedisBackend>, RedisCluster) {
    let cluster = RedisCluster::start();
    let url = cluster.parsed_url();
    let connect = async move {
        let keys = Keys::for_stream("conformance").with_cluster(true);
        RedisBackend::connect(&url, keys, Duration::from_secs(5))
            .await
            .expect("connect to the test's cluster")
            .with_network(Some(case::small_network()))
    };
    (connect, cluster)
}

conformance!(
    redis_cluster_with_inboxes,
    redis_cluster_inboxes(),
    [
        inboxes_hold_what_an_agent_hears,
        cache_lists_and_sorted_set,
        cache_keeps_equal_values_of_different_writers,
        cache_samples_are_reproducible,
        cache_clear_expire_and_clear_all,
        checkpoints_are_kept,
        notes_and_hashes_for_bookkeeping,
        one_lease_holder_at_a_time,
        answers_are_kept_once_and_use_adds_up,
    ]
);
