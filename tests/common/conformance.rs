//! The backend conformance suite: one body of tests, run against every backend
//! (`tests/conformance.rs` instantiates it). A backend passes when it keeps the semantics of
//! Redis Streams consumer groups and of the old project's cache.

use std::sync::Arc;
use std::time::Duration;

use agora::backend::{
    Backend, CacheAnswer, CacheAppend, CacheEntry, CacheQuery, Commit, DeadLetter, GroupRead, ScoreBound,
    Transport,
};
use agora::message::{Entry, EntryId};
use agora::random::agent_rng;

use super::{Admin, fields, message};

fn read(group: &str, count: usize) -> GroupRead {
    GroupRead {
        group: group.to_string(),
        consumer: "c".to_string(),
        count,
        pending: false,
    }
}

fn pending(group: &str) -> GroupRead {
    GroupRead {
        pending: true,
        ..read(group, 1000)
    }
}

fn ids(deliveries: &[agora::message::Delivery]) -> Vec<EntryId> {
    deliveries.iter().map(|d| d.id).collect()
}

fn contents(deliveries: &[agora::message::Delivery]) -> Vec<String> {
    deliveries
        .iter()
        .map(|d| d.message().map(|m| m.content.clone()).unwrap_or_default())
        .collect()
}

async fn publish_n<B: Backend>(b: &B, n: u64) -> Vec<EntryId> {
    let messages: Vec<_> = (1..=n)
        .map(|i| message("p", i, Some(0), None, &format!("m{i}")))
        .collect();
    b.publish(&messages).await.unwrap()
}

fn append(agent: &str, n: u64, score: f64, value: &str) -> CacheAppend {
    CacheAppend {
        agent: Arc::from(agent),
        member: CacheEntry {
            agent: agent.to_string(),
            n,
            tick: Some(score as u64),
            value: serde_json::Value::from(value),
        }
        .encode()
        .into(),
        score,
    }
}

fn values(members: &[String]) -> Vec<String> {
    members
        .iter()
        .map(|m| CacheEntry::decode(m).unwrap().value.as_str().unwrap().to_string())
        .collect()
}

async fn members<B: Backend>(b: &B, q: CacheQuery) -> Vec<String> {
    match b.cache_read(&[q]).await.unwrap().pop() {
        Some(CacheAnswer::Members(m)) => m,
        other => panic!("expected members, got {other:?}"),
    }
}

async fn count<B: Backend>(b: &B, bound: ScoreBound) -> u64 {
    match b.cache_read(&[CacheQuery::Count { bound }]).await.unwrap().pop() {
        Some(CacheAnswer::Count(c)) => c,
        other => panic!("expected a count, got {other:?}"),
    }
}

pub async fn groups_are_created_once_and_listed<B: Admin>(b: B) {
    let groups = vec!["group_a".to_string(), "group_b".to_string()];
    b.ensure_groups(&groups).await.unwrap();
    publish_n(&b, 2).await;
    b.read(&[read("group_a", 10)]).await.unwrap();
    // Creating again is not an error and does not reset the group.
    b.ensure_groups(&groups).await.unwrap();
    let infos = b.groups().await.unwrap();
    let names: Vec<&str> = infos.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["group_a", "group_b"]);
    assert_eq!(infos[0].pending, 2, "{infos:?}");
    assert_eq!(infos[1].lag, Some(2), "{infos:?}");
}

pub async fn reading_without_a_group_fails<B: Admin>(b: B) {
    publish_n(&b, 1).await;
    assert!(b.read(&[read("group_missing", 1)]).await.is_err());
}

pub async fn every_group_reads_every_entry<B: Admin>(b: B) {
    b.ensure_groups(&["group_a".into(), "group_b".into()])
        .await
        .unwrap();
    let published = publish_n(&b, 5).await;
    assert!(
        published.windows(2).all(|w| w[0] < w[1]),
        "ids increase: {published:?}"
    );
    let first = b.read(&[read("group_a", 3), read("group_b", 10)]).await.unwrap();
    assert_eq!(ids(&first[0]), published[..3]);
    assert_eq!(ids(&first[1]), published);
    assert_eq!(contents(&first[1]), ["m1", "m2", "m3", "m4", "m5"]);
    let rest = b.read(&[read("group_a", 10), read("group_b", 10)]).await.unwrap();
    assert_eq!(ids(&rest[0]), published[3..]);
    assert!(rest[1].is_empty());
}

pub async fn groups_read_from_the_start_of_the_stream<B: Admin>(b: B) {
    // A group created after entries were written still sees them (it starts at id 0).
    let published = publish_n(&b, 3).await;
    b.ensure_groups(&["group_late".into()]).await.unwrap();
    let got = b.read(&[read("group_late", 10)]).await.unwrap();
    assert_eq!(ids(&got[0]), published);
}

pub async fn pending_entries_until_acknowledged<B: Admin>(b: B) {
    b.ensure_groups(&["group_a".into()]).await.unwrap();
    let published = publish_n(&b, 4).await;
    b.read(&[read("group_a", 3)]).await.unwrap();
    let info = &b.groups().await.unwrap()[0];
    assert_eq!((info.pending, info.lag), (3, Some(1)));
    assert_eq!(b.ack("group_a", &published[..2]).await.unwrap(), 2);
    // Acknowledging again, or an entry never delivered, counts nothing.
    assert_eq!(b.ack("group_a", &published[..1]).await.unwrap(), 0);
    assert_eq!(b.ack("group_a", &published[3..]).await.unwrap(), 0);
    let again = b.read(&[pending("group_a")]).await.unwrap();
    assert_eq!(
        ids(&again[0]),
        published[2..3],
        "only the unacknowledged entry is pending"
    );
    let info = &b.groups().await.unwrap()[0];
    assert_eq!(info.pending, 1);
    assert_eq!(info.last_delivered, published[2]);
}

pub async fn pending_reads_are_per_consumer<B: Admin>(b: B) {
    b.ensure_groups(&["group_a".into()]).await.unwrap();
    publish_n(&b, 2).await;
    let mut other = read("group_a", 1);
    other.consumer = "other".into();
    b.read(&[other.clone(), read("group_a", 1)]).await.unwrap();
    let mine = b.read(&[pending("group_a")]).await.unwrap();
    assert_eq!(contents(&mine[0]), ["m2"]);
    other.pending = true;
    let theirs = b.read(&[other]).await.unwrap();
    assert_eq!(contents(&theirs[0]), ["m1"]);
}

pub async fn seed_style_and_malformed_entries<B: Admin>(b: B) {
    b.ensure_groups(&["group_a".into()]).await.unwrap();
    b.publish_fields(&fields(&[("sender_id", "alice"), ("content", "hi")]))
        .await
        .unwrap();
    b.publish_fields(&fields(&[("content", "who am i")]))
        .await
        .unwrap();
    b.publish_fields(&fields(&[
        ("sender_id", "bob"),
        ("content", "x"),
        ("data", "{oops"),
    ]))
    .await
    .unwrap();
    let got = b.read(&[read("group_a", 10)]).await.unwrap().remove(0);
    assert_eq!(got.len(), 3);
    match &got[0].entry {
        Entry::Message(m) => assert_eq!((&*m.sender_id, m.content.as_str(), m.seq), ("alice", "hi", None)),
        other => panic!("a seed-style entry is a message, got {other:?}"),
    }
    for (d, why) in got[1..].iter().zip(["sender_id", "data"]) {
        match &d.entry {
            Entry::Malformed(m) => assert!(m.reason.contains(why), "{}", m.reason),
            other => panic!("expected a malformed entry, got {other:?}"),
        }
    }
}

pub async fn messages_keep_every_field<B: Admin>(b: B) {
    b.ensure_groups(&["group_a".into()]).await.unwrap();
    let mut m = (*message("a_1", 7, Some(3), Some("a_2"), "hello")).clone();
    m.data = Some(
        serde_json::json!({ "x": 0.1, "n": 3, "s": "é" })
            .as_object()
            .unwrap()
            .clone(),
    );
    b.publish(&[Arc::new(m.clone())]).await.unwrap();
    let got = b.read(&[read("group_a", 1)]).await.unwrap().remove(0);
    assert_eq!(got[0].message().map(|x| (**x).clone()), Some(m));
}

pub async fn range_reads_without_a_group<B: Admin>(b: B) {
    let published = publish_n(&b, 5).await;
    let after_two = b.range(published[1], 2).await.unwrap();
    assert_eq!(ids(&after_two), published[2..4]);
    let all = b.range(EntryId::ZERO, 100).await.unwrap();
    assert_eq!(ids(&all), published);
    assert_eq!(b.last_id().await.unwrap(), published[4]);
}

pub async fn trimming_spares_unread_entries<B: Admin>(b: B) {
    b.ensure_groups(&["group_a".into()]).await.unwrap();
    let published = publish_n(&b, 6).await;
    assert_eq!(b.trim(2).await.unwrap(), 0, "nothing is read yet");
    b.read(&[read("group_a", 4)]).await.unwrap();
    b.ack("group_a", &published[..3]).await.unwrap();
    // Entries 1-3 are read and acknowledged; entry 4 is read but pending.
    assert_eq!(b.trim(2).await.unwrap(), 3);
    let left = b.range(EntryId::ZERO, 10).await.unwrap();
    assert_eq!(ids(&left), published[3..]);
    let pending = b.read(&[pending("group_a")]).await.unwrap();
    assert_eq!(ids(&pending[0]), published[3..4]);
}

pub async fn waiting_for_entries<B: Admin>(b: B) {
    let last = b.last_id().await.unwrap();
    let nothing = b.wait_for_entries(last, Duration::from_millis(50)).await.unwrap();
    assert_eq!(nothing, None);
    let publisher = b.clone();
    let waiter = b.wait_for_entries(last, Duration::from_secs(5));
    let (waited, published) = futures_util::join!(waiter, async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        publish_n(&publisher, 1).await
    });
    assert_eq!(waited.unwrap(), Some(published[0]));
}

pub async fn cache_lists_and_sorted_set<B: Admin>(b: B) {
    b.cache_append(&[
        append("a", 1, 0.0, "a1"),
        append("b", 1, 0.0, "b1"),
        append("a", 2, 1.0, "a2"),
        append("b", 2, 2.0, "b2"),
    ])
    .await
    .unwrap();
    let own = members(
        &b,
        CacheQuery::OwnLast {
            agent: "a".into(),
            n: 5,
        },
    )
    .await;
    assert_eq!(values(&own), ["a1", "a2"]);
    let own = members(
        &b,
        CacheQuery::OwnLast {
            agent: "b".into(),
            n: 1,
        },
    )
    .await;
    assert_eq!(values(&own), ["b2"]);
    let last = members(
        &b,
        CacheQuery::Last {
            n: 3,
            bound: ScoreBound::ALL,
        },
    )
    .await;
    assert_eq!(
        values(&last),
        ["b1", "a2", "b2"],
        "oldest first, ties by member bytes"
    );
    let before_two = members(
        &b,
        CacheQuery::Last {
            n: 10,
            bound: ScoreBound::below(2.0),
        },
    )
    .await;
    assert_eq!(values(&before_two), ["a1", "b1", "a2"]);
    assert_eq!(count(&b, ScoreBound::below(1.0)).await, 2);
    assert_eq!(count(&b, ScoreBound::ALL).await, 4);
    let rank = members(&b, CacheQuery::Rank { rank: 2 }).await;
    assert_eq!(values(&rank), ["a2"]);
    assert!(members(&b, CacheQuery::Rank { rank: 99 }).await.is_empty());
}

pub async fn cache_keeps_equal_values_of_different_writers<B: Admin>(b: B) {
    // The old project scored members by value, so two agents saying the same lost one.
    b.cache_append(&[append("a", 1, 0.0, "same"), append("b", 1, 0.0, "same")])
        .await
        .unwrap();
    assert_eq!(count(&b, ScoreBound::ALL).await, 2);
}

pub async fn cache_samples_are_reproducible<B: Admin>(b: B) {
    let appends: Vec<CacheAppend> = (1..=20)
        .map(|i| append("a", i, i as f64, &format!("v{i}")))
        .collect();
    b.cache_append(&appends).await.unwrap();
    let first = b
        .cache_sample(5, &mut agent_rng(9, 1), ScoreBound::ALL)
        .await
        .unwrap();
    let again = b
        .cache_sample(5, &mut agent_rng(9, 1), ScoreBound::ALL)
        .await
        .unwrap();
    let other = b
        .cache_sample(5, &mut agent_rng(9, 2), ScoreBound::ALL)
        .await
        .unwrap();
    assert_eq!(first.len(), 5);
    assert_eq!(first, again);
    assert_ne!(first, other);
    let mut distinct = first.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 5);
    let bounded = b
        .cache_sample(50, &mut agent_rng(9, 1), ScoreBound::below(4.0))
        .await
        .unwrap();
    let mut got = values(&bounded);
    got.sort();
    assert_eq!(got, ["v1", "v2", "v3"]);
}

pub async fn cache_clear_expire_and_clear_all<B: Admin>(b: B) {
    b.cache_append(&[
        append("a", 1, 0.0, "a1"),
        append("b", 1, 0.0, "b1"),
        append("c", 1, 0.0, "c1"),
    ])
    .await
    .unwrap();
    b.cache_clear("a").await.unwrap();
    assert!(
        members(
            &b,
            CacheQuery::OwnLast {
                agent: "a".into(),
                n: 5
            }
        )
        .await
        .is_empty()
    );
    assert_eq!(
        values(
            &members(
                &b,
                CacheQuery::OwnLast {
                    agent: "b".into(),
                    n: 5
                }
            )
            .await
        ),
        ["b1"]
    );
    assert!(b.cache_expire("b", Duration::from_millis(100)).await.unwrap());
    assert!(
        !b.cache_expire("nobody", Duration::from_millis(100))
            .await
            .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        members(
            &b,
            CacheQuery::OwnLast {
                agent: "b".into(),
                n: 5
            }
        )
        .await
        .is_empty()
    );
    let sizes = b.sizes().await.unwrap();
    assert_eq!(sizes.lists, [("c".to_string(), 1)]);
    assert!(b.cache_clear_all().await.unwrap() >= 2);
    assert_eq!(count(&b, ScoreBound::ALL).await, 0);
    assert!(
        members(
            &b,
            CacheQuery::OwnLast {
                agent: "c".into(),
                n: 5
            }
        )
        .await
        .is_empty()
    );
}

pub async fn commit_applies_a_whole_step<B: Admin>(b: B) {
    b.ensure_groups(&["group_a".into()]).await.unwrap();
    let incoming = publish_n(&b, 3).await;
    b.read(&[read("group_a", 3)]).await.unwrap();
    let out = [message("a", 1, Some(1), Some("b"), "reply")];
    let ids = b
        .commit(&Commit {
            group: "group_a",
            acks: &incoming[..2],
            publish: &out,
            cache: &[append("a", 1, 1.0, "noted")],
            state: Some(("a", r#"{"x":1}"#)),
            dead: &[DeadLetter {
                id: incoming[2],
                agent: "a".into(),
                reason: "it was bad".into(),
                fields: fields(&[("content", "m3")]),
            }],
        })
        .await
        .unwrap();
    assert_eq!(ids.len(), 1);
    assert!(ids[0] > incoming[2]);
    assert_eq!(b.groups().await.unwrap()[0].pending, 1);
    let tail = b.range(incoming[2], 10).await.unwrap();
    assert_eq!(contents(&tail), ["reply"]);
    assert_eq!(
        values(
            &members(
                &b,
                CacheQuery::OwnLast {
                    agent: "a".into(),
                    n: 1
                }
            )
            .await
        ),
        ["noted"]
    );
    let states = b.load_states(&[Arc::from("a"), Arc::from("z")]).await.unwrap();
    assert_eq!(states, [Some(r#"{"x":1}"#.to_string()), None]);
    let dead = b.dead_letters().await.unwrap();
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0].contains(&("reason".to_string(), "it was bad".to_string())),
        "{dead:?}"
    );
    assert!(
        dead[0].contains(&("content".to_string(), "m3".to_string())),
        "{dead:?}"
    );
}

pub async fn cleanup_removes_the_run<B: Admin>(b: B) {
    b.ensure_groups(&["group_a".into()]).await.unwrap();
    let published = publish_n(&b, 2).await;
    b.read(&[read("group_a", 1)]).await.unwrap();
    b.commit(&Commit {
        group: "group_a",
        acks: &published[..1],
        publish: &[],
        cache: &[append("a", 1, 0.0, "x")],
        state: Some(("a", "{}")),
        dead: &[],
    })
    .await
    .unwrap();
    let report = b.delete_run().await.unwrap();
    assert_eq!(report.groups, 1);
    assert!(b.groups().await.unwrap().is_empty());
    let sizes = b.sizes().await.unwrap();
    assert_eq!((sizes.stream, sizes.dead_letters, sizes.timestamps), (0, 0, 0));
    assert!(sizes.lists.is_empty());
    assert_eq!(b.load_states(&[Arc::from("a")]).await.unwrap(), [None]);
}

pub async fn idle_pending_entries_can_be_claimed<B: Admin>(b: B) {
    b.ensure_groups(&["group_a".into()]).await.unwrap();
    let published = publish_n(&b, 3).await;
    let mut gone = read("group_a", 10);
    gone.consumer = "gone".into();
    b.read(std::slice::from_ref(&gone)).await.unwrap();
    let early = b.claim("group_a", "c", Duration::from_secs(60)).await.unwrap();
    assert_eq!(early.claimed, 0, "nothing has been idle that long");
    tokio::time::sleep(Duration::from_millis(150)).await;
    let report = b.claim("group_a", "c", Duration::from_millis(100)).await.unwrap();
    assert_eq!((report.claimed, report.deleted), (3, 0));
    let mine = b.read(&[pending("group_a")]).await.unwrap();
    assert_eq!(ids(&mine[0]), published);
    gone.pending = true;
    assert!(b.read(&[gone]).await.unwrap()[0].is_empty());
    b.ack("group_a", &published).await.unwrap();
    assert_eq!(b.groups().await.unwrap()[0].pending, 0);
}

pub async fn checkpoints_are_kept<B: Admin>(b: B) {
    assert!(b.read_record().await.unwrap().is_empty());
    b.ping().await.unwrap();
    b.write_record(&[("tick", "3".into()), ("status", "running".into())])
        .await
        .unwrap();
    b.write_record(&[("tick", "4".into())]).await.unwrap();
    let mut got = b.read_record().await.unwrap();
    got.sort();
    assert_eq!(
        got,
        [
            ("status".to_string(), "running".to_string()),
            ("tick".to_string(), "4".to_string())
        ]
    );
    b.preflight().await.unwrap();
    b.delete_run().await.unwrap();
    assert!(b.read_record().await.unwrap().is_empty());
}

pub async fn notes_and_hashes_for_bookkeeping<B: Admin>(run: B) {
    let b = run.books();
    let key = format!("{}:control", run.keys().stream);
    let none = b
        .notes(&key, EntryId::ZERO, Duration::from_millis(20))
        .await
        .unwrap();
    assert!(none.is_empty());
    let first = b.note(&key, "one").await.unwrap();
    let second = b.note(&key, "two").await.unwrap();
    assert!(first < second);
    let all = b
        .notes(&key, EntryId::ZERO, Duration::from_millis(20))
        .await
        .unwrap();
    let texts: Vec<&str> = all.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(texts, ["one", "two"]);
    let after = b.notes(&key, first, Duration::from_millis(20)).await.unwrap();
    assert_eq!(after, [(second, "two".to_string())]);
    // A blocked read returns as soon as a note comes.
    let writer = b.clone();
    let key2 = key.clone();
    let (got, _) = futures_util::join!(b.notes(&key, second, Duration::from_secs(5)), async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        writer.note(&key2, "three").await.unwrap()
    });
    assert_eq!(got.unwrap().len(), 1);
    assert_eq!(b.trim_notes(&key, second).await.unwrap(), 1);
    let left = b
        .notes(&key, EntryId::ZERO, Duration::from_millis(20))
        .await
        .unwrap();
    assert_eq!(left.len(), 2, "the second note and the third are left: {left:?}");
    let hash = format!("{}:workers", run.keys().stream);
    b.hash_set(&hash, "1/2", "a").await.unwrap();
    b.hash_set(&hash, "2/2", "b").await.unwrap();
    b.hash_set(&hash, "1/2", "c").await.unwrap();
    let mut fields = b.hash_all(&hash).await.unwrap();
    fields.sort();
    assert_eq!(
        fields,
        [
            ("1/2".to_string(), "c".to_string()),
            ("2/2".to_string(), "b".to_string())
        ]
    );
    run.delete_run().await.unwrap();
    assert!(b.hash_all(&hash).await.unwrap().is_empty());
}

pub async fn one_lease_holder_at_a_time<B: Admin>(b: B) {
    let long = Duration::from_secs(30);
    assert_eq!(b.lease_holder().await.unwrap(), None);
    assert_eq!(b.take_lease("a", long, None).await.unwrap(), None);
    // Taken: another holder is told who has it, and renewing is only for the holder.
    assert_eq!(b.take_lease("b", long, None).await.unwrap().as_deref(), Some("a"));
    assert!(!b.renew_lease("b", long).await.unwrap());
    assert!(b.renew_lease("a", long).await.unwrap());
    // A run's own cleanup keeps it.
    b.delete_run().await.unwrap();
    assert_eq!(b.lease_holder().await.unwrap().as_deref(), Some("a"));
    // Taking over a holder known to be gone, and only that one.
    assert_eq!(
        b.take_lease("b", long, Some("x")).await.unwrap().as_deref(),
        Some("a")
    );
    assert_eq!(b.take_lease("b", long, Some("a")).await.unwrap(), None);
    // Giving it up is for its holder only.
    b.release_lease("a").await.unwrap();
    assert_eq!(b.lease_holder().await.unwrap().as_deref(), Some("b"));
    b.release_lease("b").await.unwrap();
    assert_eq!(b.lease_holder().await.unwrap(), None);
    // A lease that was not renewed lapses. Renewing takes it again only while the run's
    // record still names the holder: no other run has started since.
    assert_eq!(
        b.take_lease("c", Duration::from_millis(50), None).await.unwrap(),
        None
    );
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(b.lease_holder().await.unwrap(), None);
    assert!(!b.renew_lease("c", long).await.unwrap());
    let named = |holder: &str| [(agora::backend::LEASE_HOLDER, holder.to_string())];
    b.write_record(&named("d")).await.unwrap();
    assert!(!b.renew_lease("c", long).await.unwrap());
    b.write_record(&named("c")).await.unwrap();
    assert!(b.renew_lease("c", long).await.unwrap());
    assert_eq!(b.lease_holder().await.unwrap().as_deref(), Some("c"));
}

/// A step whose acknowledgement fails (its group is gone) changes nothing: it publishes
/// nothing, remembers nothing, saves no state. (On Redis a MULTI/EXEC would have published:
/// XACK on a missing group answers 0 and the transaction goes on.)
pub async fn a_commit_whose_group_is_gone_changes_nothing<B: Admin>(b: B) {
    b.ensure_groups(&["group_a".into()]).await.unwrap();
    let published = publish_n(&b, 2).await;
    b.read(&[read("group_a", 10)]).await.unwrap();
    let step = |group| Commit {
        group,
        acks: &published,
        publish: &[],
        cache: &[],
        state: None,
        dead: &[],
    };
    let publish = [message("a", 1, Some(1), None, "after")];
    let cache = [append("a", 1, 1.0, "x")];
    let gone = Commit {
        publish: &publish,
        cache: &cache,
        state: Some(("a", "{\"n\":1}")),
        ..step("group_missing")
    };
    let err = b.commit(&gone).await.unwrap_err();
    assert!(err.message.contains("NOGROUP"), "{err:?}");
    assert_eq!(
        b.range(EntryId::ZERO, 10).await.unwrap().len(),
        2,
        "nothing published"
    );
    assert_eq!(count(&b, ScoreBound::ALL).await, 0, "nothing remembered");
    assert_eq!(b.load_states(&[Arc::from("a")]).await.unwrap(), [None]);
    assert_eq!(
        b.groups().await.unwrap()[0].pending,
        2,
        "the real group's entries stay pending"
    );
    // A step that acknowledges nothing needs no group.
    b.commit(&Commit { acks: &[], ..gone }).await.unwrap();
    assert_eq!(b.range(EntryId::ZERO, 10).await.unwrap().len(), 3);
    b.commit(&step("group_a")).await.unwrap();
    assert_eq!(b.groups().await.unwrap()[0].pending, 0);
}

/// Claiming takes over what idle consumers left pending and removes the consumers left with
/// nothing, whoever they are, but never the claimant.
pub async fn claiming_removes_consumers_left_with_nothing<B: Admin>(b: B) {
    b.ensure_groups(&["group_a".into()]).await.unwrap();
    let published = publish_n(&b, 4).await;
    let as_consumer = |name: &str, count| GroupRead {
        consumer: name.to_string(),
        ..read("group_a", count)
    };
    b.read(&[as_consumer("gone", 2)]).await.unwrap();
    b.read(&[as_consumer("idle", 2)]).await.unwrap();
    b.ack("group_a", &published[2..]).await.unwrap();
    assert_eq!(b.groups().await.unwrap()[0].consumers, 2);
    tokio::time::sleep(Duration::from_millis(60)).await;
    let report = b.claim("group_a", "c", Duration::from_millis(50)).await.unwrap();
    assert_eq!(report.claimed, 2);
    let group = &b.groups().await.unwrap()[0];
    assert_eq!((group.consumers, group.pending), (1, 2), "{group:?}");
    // The claimant stays even with nothing pending.
    b.ack("group_a", &published[..2]).await.unwrap();
    b.claim("group_a", "c", Duration::ZERO).await.unwrap();
    assert_eq!(b.groups().await.unwrap()[0].consumers, 1);
}

/// Entries ever added: trimming does not lower the count, deleting the run does.
pub async fn entries_added_counts_what_trimming_removed<B: Admin>(b: B) {
    assert_eq!(b.entries_added().await.unwrap(), 0);
    b.ensure_groups(&["group_a".into()]).await.unwrap();
    let published = publish_n(&b, 5).await;
    b.read(&[read("group_a", 10)]).await.unwrap();
    b.ack("group_a", &published).await.unwrap();
    assert_eq!(b.trim(1).await.unwrap(), 4);
    assert_eq!(b.entries_added().await.unwrap(), 5);
    b.delete_run().await.unwrap();
    assert_eq!(b.entries_added().await.unwrap(), 0);
}

/// Model answers are kept with the run, the first one for a key wins, and a run's deletion
/// takes them; model use adds up by minute.
pub async fn answers_are_kept_once_and_use_adds_up<B: Admin>(b: B) {
    assert_eq!(b.load_answer("k1").await.unwrap(), None);
    assert_eq!(b.save_answer("k1", "first").await.unwrap(), "first");
    assert_eq!(b.save_answer("k1", "second").await.unwrap(), "first");
    b.save_answer("k2", "other").await.unwrap();
    assert_eq!(b.load_answer("k1").await.unwrap().as_deref(), Some("first"));
    let mut all = b.answers().await.unwrap();
    all.sort();
    assert_eq!(all, ["first", "other"]);
    // Turns at the model follow one another, from now or from the end of the last one: the
    // first starts at once, the next when the minute it booked is over (less the moments
    // between the two calls).
    assert_eq!(b.book_model_turn(60_000).await.unwrap(), 0);
    let second = b.book_model_turn(1).await.unwrap();
    assert!((50_000..=60_000).contains(&second), "{second}");
    let third = b.book_model_turn(0).await.unwrap();
    // Booked after the second: it starts a millisecond after the second's start, whatever
    // the clock did between the calls.
    assert!((50_000..=60_001).contains(&third), "{second} {third}");
    b.delete_run().await.unwrap();
    assert!(b.answers().await.unwrap().is_empty());
    assert_eq!(b.book_model_turn(1).await.unwrap(), 0);
}

/// The network the inbox cases run on: b and c follow a, d follows b.
pub fn small_network() -> Arc<agora::network::Network> {
    let names: Vec<Arc<str>> = ["a", "b", "c", "d"].map(Arc::from).to_vec();
    Arc::new(agora::network::Network::new(names, vec![(1, 0), (2, 0), (3, 1)]))
}

/// On a backend opened with [`small_network`]: a step's messages reach its sender's
/// followers and its addressee only, with the id they have on the stream; another program's
/// entry reaches everyone; acknowledging, lag and cleanup work on the inboxes.
pub async fn inboxes_hold_what_an_agent_hears<B: Admin>(b: B) {
    let groups: Vec<String> = ["a", "b", "c", "d"].map(|a| format!("group_{a}")).to_vec();
    b.ensure_groups(&groups).await.unwrap();
    let out = [
        message("a", 1, Some(0), None, "to followers"),
        message("a", 2, Some(0), Some("d"), "to d as well"),
    ];
    let commit = |group, acks, publish| Commit {
        group,
        acks,
        publish,
        cache: &[],
        state: None,
        dead: &[],
    };
    let sent = b.commit(&commit("group_a", &[], &out)).await.unwrap();
    let outside = b
        .publish_fields(&fields(&[("sender_id", "someone"), ("content", "hello all")]))
        .await
        .unwrap();
    let all: Vec<&str> = groups.iter().map(String::as_str).collect();
    let got = b
        .read(&all.iter().map(|g| read(g, 10)).collect::<Vec<_>>())
        .await
        .unwrap();
    assert_eq!(contents(&got[0]), ["hello all"], "a hears no one");
    assert_eq!(contents(&got[1]), ["to followers", "to d as well", "hello all"]);
    if b.keys().cluster {
        // Each inbox numbers its entries itself (they are relayed from other hash slots).
        assert_eq!(contents(&got[2]), ["to followers", "to d as well", "hello all"]);
        assert_eq!(sent.len(), 2);
        let _ = outside;
    } else {
        assert_eq!(ids(&got[2]), [sent[0], sent[1], outside], "one id everywhere");
    }
    assert_eq!(
        contents(&got[3]),
        ["to d as well", "hello all"],
        "d follows b, not a"
    );
    // A step of b acknowledges in its inbox and publishes to d.
    let reply = [message("b", 1, Some(1), None, "b says")];
    b.commit(&commit("group_b", &ids(&got[1])[..2], &reply))
        .await
        .unwrap();
    let infos = b.groups().await.unwrap();
    let by_name = |n: &str| infos.iter().find(|g| g.name == n).unwrap().clone();
    assert_eq!(by_name("group_b").pending, 1, "{infos:?}");
    assert_eq!(by_name("group_d").lag, Some(1), "{infos:?}");
    assert_eq!(by_name("group_c").lag, Some(0), "{infos:?}");
    let next = b.read(&[read("group_d", 10), read("group_c", 10)]).await.unwrap();
    assert_eq!(contents(&next[0]), ["b says"]);
    assert!(next[1].is_empty());
    // The transcript's view, the stream, has everything once.
    let stream = b.range(EntryId::ZERO, 10).await.unwrap();
    assert_eq!(stream.len(), 4);
    b.delete_run().await.unwrap();
    assert!(b.groups().await.unwrap().is_empty());
    assert!(
        b.read(&[read("group_b", 10)]).await.is_err(),
        "the inboxes' groups are gone"
    );
}
