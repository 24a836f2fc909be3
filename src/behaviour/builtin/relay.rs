//! `relay`: workload W1 of the old project's benchmark.
//!
//! Tokens travel round the ring of relay agents (declaration order). At the start, token `k`
//! is published by relay agent number `k mod N`, addressed to the next agent. An agent that
//! receives a token addressed to it remembers it in the cache and, while the token has hops
//! left, publishes it on to the next agent, so each token is published `hops` times in all.
//! Every agent still reads and acknowledges every message, as every consumer group does.
//!
//! A token message says it all in its content, `token 7 hop 12`, with no `data`: every agent
//! reads every message, so each field an entry carries is paid for once per agent (fewer
//! fields made W1 on Redis about 15% faster). With `payload > 0` the content also carries
//! that many random hex digits, drawn from the sender's random stream: a stand-in for real
//! message bodies that also makes the transcript depend on the seed.

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::behaviour::{Behaviour, BehaviourError, Context, Effects, Outgoing, ParamError, Registry, Setup};
use crate::message::Message;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelayParams {
    pub tokens: u64,
    pub hops: u64,
    pub payload: u64,
}

impl Default for RelayParams {
    fn default() -> Self {
        RelayParams {
            tokens: 1,
            hops: 100,
            payload: 0,
        }
    }
}

pub struct Relay {
    tokens: u64,
    hops: u64,
    payload: usize,
}

/// What a relay agent keeps: how many tokens it has passed on.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RelayState {
    pub relayed: u64,
}

/// `token 7 hop 12 ...` as (7, 12).
fn parse_token(content: &str) -> Option<(u64, u64)> {
    // Spaces found byte by byte: `split(' ')` cost more than the rest of a relay's call.
    let word_end = |text: &str| text.bytes().position(|b| b == b' ');
    let rest = content.strip_prefix("token ")?;
    let (token, rest) = rest.split_at(word_end(rest)?);
    let rest = rest.strip_prefix(" hop ")?;
    let hop = &rest[..word_end(rest).unwrap_or(rest.len())];
    Some((token.parse().ok()?, hop.parse().ok()?))
}

pub(crate) fn register(registry: &mut Registry) {
    registry.register(
        "relay",
        "workload W1: tokens travel round the ring of relay agents, `hops` publishes each",
        &[
            (
                "tokens",
                "tokens in flight; token k starts at relay agent k mod N",
            ),
            ("hops", "how many times each token is published in all"),
            (
                "payload",
                "random hex digits each message's content carries (0: none)",
            ),
        ],
        |p: RelayParams, _setup: &Setup<'_>| {
            if p.hops < 1 {
                return Err(ParamError::at("hops", "`hops` must be at least 1"));
            }
            if p.tokens > 1_000_000 {
                return Err(ParamError::at(
                    "tokens",
                    format!("`tokens` is limited to 1000000, got {}", p.tokens),
                ));
            }
            if p.payload > 1 << 20 {
                return Err(ParamError::at(
                    "payload",
                    format!("`payload` is limited to 1048576 digits, got {}", p.payload),
                ));
            }
            Ok(Relay {
                tokens: p.tokens,
                hops: p.hops,
                payload: p.payload as usize,
            })
        },
    );
}

impl Relay {
    fn pass(&self, token: u64, hop: u64, ctx: &mut Context<'_>) -> Outgoing {
        let peers = ctx.peers();
        let next = peers[(ctx.peer_index() + 1) % peers.len()].clone();
        // `token 7 hop 12`, without the formatting machinery: W1 writes 100,000 of them.
        let mut content = String::with_capacity(24 + self.payload);
        content.push_str("token ");
        content.push_str(itoa::Buffer::new().format(token));
        content.push_str(" hop ");
        content.push_str(itoa::Buffer::new().format(hop));
        if self.payload > 0 {
            let mut digits = String::with_capacity(self.payload + 16);
            while digits.len() < self.payload {
                digits.push_str(&format!("{:016x}", ctx.rng().next_u64()));
            }
            digits.truncate(self.payload);
            content.push(' ');
            content.push_str(&digits);
        }
        Outgoing::to(next, content)
    }
}

/// What an agent remembers of each token it receives: `{"hop":3,"token":7}`, the fields in
/// the order a `json!` object writes them, as the cache held them before `remember_as`.
#[derive(Serialize)]
struct Received {
    hop: u64,
    token: u64,
}

/// The metric relay agents report: tokens started, less tokens finished.
pub const IN_FLIGHT: &str = "in_flight";

impl Behaviour for Relay {
    type State = RelayState;

    fn init(&self, _ctx: &mut Context<'_>) -> Result<RelayState, BehaviourError> {
        Ok(RelayState::default())
    }

    fn on_start(&self, _state: &mut RelayState, ctx: &mut Context<'_>) -> Result<Effects, BehaviourError> {
        let n = ctx.peers().len() as u64;
        let mut effects = Effects::none();
        let mut token = ctx.peer_index() as u64;
        let mut started = 0;
        while token < self.tokens {
            effects = effects.publish(self.pass(token, 1, ctx));
            token += n;
            started += 1;
        }
        // `in_flight` counts tokens started and (negatively) finished: its running total is
        // the tokens still travelling.
        if started > 0 {
            effects = effects.count(IN_FLIGHT, started);
        }
        Ok(effects)
    }

    fn on_message(
        &self,
        state: &mut RelayState,
        msg: &Message,
        ctx: &mut Context<'_>,
    ) -> Result<Effects, BehaviourError> {
        if !msg.is_addressed_to(ctx.agent()) {
            return Ok(Effects::none());
        }
        let Some((token, hop)) = parse_token(&msg.content) else {
            // Addressed to us but not a token: not ours to relay.
            return Ok(Effects::none());
        };
        let effects = Effects::new().remember_as(&Received { hop, token });
        if hop >= self.hops {
            return Ok(effects.count(IN_FLIGHT, -1));
        }
        state.relayed += 1;
        Ok(effects.publish(self.pass(token, hop + 1, ctx)))
    }
}

#[cfg(test)]
mod tests {
    use super::parse_token;

    #[test]
    fn tokens_are_read_back() {
        assert_eq!(parse_token("token 7 hop 12"), Some((7, 12)));
        assert_eq!(parse_token("token 7 hop 12 00ff"), Some((7, 12)));
        assert_eq!(parse_token("hello"), None);
        assert_eq!(parse_token("token x hop 1"), None);
        assert_eq!(parse_token("token 7 hop"), None);
        assert_eq!(parse_token("token 7"), None);
        assert_eq!(parse_token("token"), None);
        assert_eq!(parse_token("token  hop 1"), None);
        assert_eq!(parse_token("token 7 hops 1"), None);
        assert_eq!(parse_token("token 7 hop 1x"), None);
        assert_eq!(parse_token("token 7 hop "), None);
    }

    #[test]
    fn a_received_token_is_remembered_as_before_remember_as() {
        use crate::backend::cache::write_entry;
        let lists = crate::Effects::new()
            .remember_as(&super::Received { hop: 1, token: 0 })
            .into_lists();
        let mut written = Vec::new();
        write_entry(&mut written, "agent_1", 1, None, |out| {
            lists.remember[0].write(out)
        });
        // The bytes W1's cache held when relay remembered `json!({"token": t, "hop": h})`.
        let mut before = Vec::new();
        write_entry(&mut before, "agent_1", 1, None, |out| {
            crate::json::value(out, &serde_json::json!({ "token": 0, "hop": 1 }))
        });
        assert_eq!(written, before);
        assert_eq!(
            std::str::from_utf8(&written).unwrap(),
            r#"{"agent":"agent_1","n":1,"tick":null,"value":{"hop":1,"token":0}}"#
        );
    }
}
