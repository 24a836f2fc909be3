//! A step's messages handed to a behaviour at once ([`Behaviour::on_messages`]), with their
//! payloads decoded once for every agent that reads them and laid out side by side.
//!
//! In a lockstep broadcast tick a thousand agents read the same thousand messages. Asking
//! each message for its payload ([`Message::payload`]) follows three pointers per delivery
//! (the message, its decoded box, the value), which at ten thousand agents no longer stay in
//! the caches. A [`PayloadTable`] decodes the tick's messages once, in handling order, into
//! one `Vec`; each agent scans it in a loop over contiguous values, skipping its own messages.
//!
//! [`Behaviour::on_messages`]: super::Behaviour::on_messages

use std::any::{Any, TypeId};
use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

use serde::de::DeserializeOwned;

use crate::message::Message;

/// The messages of one step, in the order the agent handles them: in lockstep, by sender and
/// the sender's counter; in free mode, as they came. The agent's own messages are not in it.
pub struct Messages<'a> {
    source: Source<'a>,
}

#[derive(Clone, Copy)]
enum Source<'a> {
    List(&'a [&'a Message]),
    /// The step's messages as every agent with the same batch sees them, and the places in
    /// it of this agent's own (ascending), which it does not hand over.
    Shared {
        table: &'a PayloadTable,
        own: &'a [u32],
    },
}

impl<'a> Messages<'a> {
    /// `list` as a batch of its own: what [`Behaviour::on_messages`] gets in free mode, once
    /// some of a step's messages were given up on, and in tests.
    ///
    /// [`Behaviour::on_messages`]: super::Behaviour::on_messages
    pub fn new(list: &'a [&'a Message]) -> Self {
        Messages {
            source: Source::List(list),
        }
    }

    /// `table`'s messages without those at the places `own`.
    pub(crate) fn shared(table: &'a PayloadTable, own: &'a [u32]) -> Self {
        Messages {
            source: Source::Shared { table, own },
        }
    }

    pub fn len(&self) -> usize {
        match self.source {
            Source::List(list) => list.len(),
            Source::Shared { table, own } => table.messages.len().saturating_sub(own.len()),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The messages, in handling order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &'a Message> + 'a {
        self.messages()
    }

    fn messages(&self) -> Iter<'a> {
        let inner = match self.source {
            Source::List(list) => Either::List(list.iter()),
            Source::Shared { table, own } => Either::Shared(Segments::new(&table.messages, own)),
        };
        Iter { inner }
    }

    /// Each message's `data` as `T` (a type of the behaviour's own with the fields it reads),
    /// in handling order: `None` for a message without `data` or whose `data` does not
    /// decode as `T`. Decoded once per message for all agents that read the same batch, the
    /// first type asked for; another type is decoded for each message as
    /// [`Message::payload`] does.
    pub fn payloads<T>(&self) -> Payloads<'a, T>
    where
        T: DeserializeOwned + Clone + Send + Sync + 'static,
    {
        let shared = match self.source {
            Source::Shared { table, own } => table.get::<T>().map(|decoded| Segments::new(decoded, own)),
            Source::List(_) => None,
        };
        let inner = match shared {
            Some(segments) => PayloadsInner::Shared(segments),
            None => PayloadsInner::Each(self.messages()),
        };
        Payloads { inner }
    }
}

/// The messages of a batch, in handling order ([`Messages::iter`]).
struct Iter<'a> {
    inner: Either<'a>,
}

enum Either<'a> {
    List(std::slice::Iter<'a, &'a Message>),
    Shared(Segments<'a, Arc<Message>>),
}

impl<'a> Iterator for Iter<'a> {
    type Item = &'a Message;

    #[inline]
    fn next(&mut self) -> Option<&'a Message> {
        match &mut self.inner {
            Either::List(list) => list.next().copied(),
            Either::Shared(segments) => segments.next().map(|m| &**m),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = match &self.inner {
            Either::List(list) => list.len(),
            Either::Shared(segments) => segments.len(),
        };
        (left, Some(left))
    }
}

impl ExactSizeIterator for Iter<'_> {}

/// The payloads of a batch, in handling order ([`Messages::payloads`]).
pub struct Payloads<'a, T: Clone> {
    inner: PayloadsInner<'a, T>,
}

enum PayloadsInner<'a, T> {
    Shared(Segments<'a, Option<T>>),
    /// A list, or a shared table that keeps another type: decoded message by message.
    Each(Iter<'a>),
}

/// A shared table without the reader's own places: the stretches between them, one after
/// the other, so that the loop over a stretch is a plain loop over a slice.
struct Segments<'a, X> {
    current: std::slice::Iter<'a, X>,
    /// The table after `current` (starting at an own place, when `own` is not empty).
    rest: &'a [X],
    /// Where `rest` starts in the table.
    at: usize,
    /// Own places not yet passed, ascending.
    own: &'a [u32],
}

impl<'a, X> Segments<'a, X> {
    fn new(table: &'a [X], own: &'a [u32]) -> Self {
        let mut segments = Segments {
            current: [].iter(),
            rest: table,
            at: 0,
            own,
        };
        segments.cut();
        segments
    }

    /// Makes `current` the stretch from `at` to the next own place.
    fn cut(&mut self) {
        let end = self
            .own
            .first()
            .map_or(self.rest.len(), |&p| (p as usize - self.at).min(self.rest.len()));
        let (stretch, rest) = self.rest.split_at(end);
        self.current = stretch.iter();
        self.rest = rest;
        self.at += end;
    }

    #[inline]
    fn next(&mut self) -> Option<&'a X> {
        loop {
            if let Some(payload) = self.current.next() {
                return Some(payload);
            }
            // At an own place (or the end): step over it.
            let [_, rest @ ..] = self.rest else { return None };
            self.rest = rest;
            self.at += 1;
            self.own = &self.own[1..];
            self.cut();
        }
    }

    /// Folds every item, a stretch at a time.
    fn fold<A>(mut self, init: A, mut f: impl FnMut(A, &'a X) -> A) -> A {
        let mut acc = std::mem::replace(&mut self.current, [].iter()).fold(init, &mut f);
        while let [_, rest @ ..] = self.rest {
            // At an own place: step over it, and fold the stretch after it.
            self.rest = rest;
            self.at += 1;
            self.own = &self.own[1..];
            self.cut();
            acc = std::mem::replace(&mut self.current, [].iter()).fold(acc, &mut f);
        }
        acc
    }

    fn len(&self) -> usize {
        (self.current.len() + self.rest.len()).saturating_sub(self.own.len())
    }
}

impl<'a, T> Iterator for Payloads<'a, T>
where
    T: DeserializeOwned + Clone + Send + Sync + 'static,
{
    type Item = Option<Cow<'a, T>>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.inner {
            PayloadsInner::Shared(segments) => segments.next().map(|p| p.as_ref().map(Cow::Borrowed)),
            PayloadsInner::Each(messages) => messages.next().map(|m| m.payload::<T>()),
        }
    }

    /// Over a shared table, a loop over each stretch's slice: what `for_each`, `sum` and
    /// `fold` itself use, and what the compiler makes a tight loop of.
    fn fold<A, F>(self, init: A, mut f: F) -> A
    where
        F: FnMut(A, Self::Item) -> A,
    {
        match self.inner {
            PayloadsInner::Shared(segments) => {
                segments.fold(init, |acc, p| f(acc, p.as_ref().map(Cow::Borrowed)))
            }
            PayloadsInner::Each(messages) => messages.fold(init, |acc, m| f(acc, m.payload::<T>())),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = match &self.inner {
            PayloadsInner::Shared(segments) => segments.len(),
            PayloadsInner::Each(messages) => messages.len(),
        };
        (left, Some(left))
    }
}

impl<T> ExactSizeIterator for Payloads<'_, T> where T: DeserializeOwned + Clone + Send + Sync + 'static {}

/// The messages of a batch in handling order, as every agent that reads the batch sees them
/// (its own included), with their payloads decoded on first use.
#[derive(Default)]
pub(crate) struct PayloadTable {
    messages: Vec<Arc<Message>>,
    /// `Vec<Option<T>>` for the first `T` asked for.
    decoded: OnceLock<(TypeId, Box<dyn Any + Send + Sync>)>,
}

impl std::fmt::Debug for PayloadTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PayloadTable")
            .field("messages", &self.messages.len())
            .finish_non_exhaustive()
    }
}

impl PayloadTable {
    pub fn new(messages: Vec<Arc<Message>>) -> Self {
        PayloadTable {
            messages,
            decoded: OnceLock::new(),
        }
    }

    /// The payloads as `T`, when `T` is the type this table keeps.
    fn get<T: DeserializeOwned + Send + Sync + 'static>(&self) -> Option<&[Option<T>]> {
        let wanted = TypeId::of::<T>();
        let (kept, table) = self.decoded.get_or_init(|| {
            let decoded: Vec<Option<T>> = self.messages.iter().map(|m| m.decode_data::<T>()).collect();
            (wanted, Box::new(decoded))
        });
        if *kept != wanted {
            return None;
        }
        table.downcast_ref::<Vec<Option<T>>>().map(Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Clone, serde::Deserialize, PartialEq, Debug)]
    struct X {
        x: f64,
    }

    fn numbered(n: usize) -> Vec<Arc<Message>> {
        (0..n)
            .map(|i| {
                Arc::new(Message {
                    tick: Some(0),
                    sender_id: Arc::from(format!("a{i}")),
                    seq: Some(1),
                    to: None,
                    content: "hi".to_string(),
                    data: (i != 2)
                        .then(|| json!({ "x": i as f64 }).as_object().cloned())
                        .flatten(),
                    decoded: crate::message::DecodedData::default(),
                })
            })
            .collect()
    }

    fn xs<'a>(payloads: impl Iterator<Item = Option<Cow<'a, X>>>) -> Vec<Option<f64>> {
        payloads.map(|p| p.map(|p| p.x)).collect()
    }

    #[test]
    fn a_shared_table_skips_the_readers_own_messages_and_agrees_with_each_message() {
        let all = numbered(6);
        let table = PayloadTable::new(all.clone());
        // The reader sent the messages at places 0 and 4.
        let own = [0u32, 4];
        let list: Vec<&Message> = all
            .iter()
            .enumerate()
            .filter(|(i, _)| !own.contains(&(*i as u32)))
            .map(|(_, m)| &**m)
            .collect();
        let shared = Messages::shared(&table, &own);
        let alone = Messages::new(&list);
        let senders = |m: &Messages<'_>| m.iter().map(|m| m.sender_id.to_string()).collect::<Vec<_>>();
        assert_eq!(senders(&shared), ["a1", "a2", "a3", "a5"]);
        assert_eq!(senders(&shared), senders(&alone));
        assert_eq!((shared.len(), shared.iter().len()), (4, 4));
        let expected = vec![Some(1.0), None, Some(3.0), Some(5.0)];
        assert_eq!(shared.payloads::<X>().len(), 4);
        assert_eq!(xs(shared.payloads::<X>()), expected);
        assert_eq!(xs(alone.payloads::<X>()), expected);
        assert!(matches!(
            shared.payloads::<X>().next(),
            Some(Some(Cow::Borrowed(_)))
        ));
        // Another type than the table keeps: decoded message by message, the same values.
        #[derive(Clone, serde::Deserialize)]
        struct AlsoX {
            x: f64,
        }
        let also: Vec<Option<f64>> = shared.payloads::<AlsoX>().map(|p| p.map(|p| p.x)).collect();
        assert_eq!(also, expected);
    }
}
