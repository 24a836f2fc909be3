//! `llm`: an agent that writes its posts with a language model, as the old project's debate
//! agents did (CONTRACT.md, "LLM agents").
//!
//! Who speaks: the agent a post is addressed to replies (turn-taking: the reply is addressed
//! to the next speaker, picked by the policy in `turns`, see [`crate::behaviour::turns`]); the
//! first `llm` agent opens; and, in lockstep, every agent posts unprompted in a tick with
//! probability `activity` (how OASIS steps its agents). Unprompted posts are addressed to no
//! one, so they never start a chain of replies.
//!
//! What it writes: the chat of two messages, the `system` template and the `prompt`
//! template rendered (minijinja, with `trim_blocks` and `lstrip_blocks`), sent through the
//! run's `[llm]` client. The answer, trimmed, is the post; it is remembered in the cache as
//! `{"sender_id", "content"}`, which is what the feed of later posts reads.
//!
//! Anti-repetition: with `repetition_threshold > 0`, a reply whose word-bigram Jaccard
//! similarity (the shared lower-cased word pairs over all word pairs of the two texts) to one
//! of the last `repetition_window` posts exceeds the threshold is asked for again, with a new
//! seed and a note asking for something new, up to `max_regenerations` times; the last
//! answer is posted in any case.

use std::collections::HashSet;
use std::sync::Arc;

use minijinja::{Environment, UndefinedBehavior, Value};
use serde::{Deserialize, Serialize};
use serde_json::{Map, json};

use super::check_probability;
use crate::backend::CacheEntry;
use crate::behaviour::feed::{FeedFrom, FeedSpec, Recommend};
use crate::behaviour::turns::{Heard, Stance, Turn, TurnPolicy, TurnTaking};
use crate::behaviour::{Behaviour, BehaviourError, Context, Effects, Outgoing, ParamError, Registry, Setup};
use crate::llm::{ChatMessage, CompletionRequest};
use crate::message::Message;
use crate::scenario::Mode;

const DEFAULT_SYSTEM: &str = "You are {{ agent }}, taking part in an online discussion. \
Write one short post in your own voice: no greeting, no hashtags, no quotation marks.";

const DEFAULT_PROMPT: &str = "{% if feed %}Recent posts:
{% for post in feed %}- {{ post.sender_id }}: {{ post.content }}
{% endfor %}
{% endif %}
{% if message %}{{ message.sender_id }} wrote to you: {{ message.content }}
Write your reply.{% else %}Write a new post.{% endif %}";

/// The note added when a reply repeats a recent post.
const ASK_AGAIN: &str = "Your reply repeated an earlier post. Say something new.";

/// The variables a template sees besides `vars`.
const BUILT_IN_VARIABLES: [&str; 6] = ["agent", "index", "tick", "message", "feed", "own"];

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LlmParams {
    pub system: String,
    pub prompt: String,
    pub feed: u64,
    pub feed_from: FeedFrom,
    pub recommended: u64,
    pub recommend_by: Recommend,
    pub own: u64,
    pub activity: f64,
    pub vars: toml::Table,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    pub turns: Turns,
    pub echo_probability: f64,
    pub fairness: f64,
    pub explore_epsilon: f64,
    pub repetition_threshold: f64,
    pub repetition_window: u64,
    pub max_regenerations: u64,
}

impl Default for LlmParams {
    fn default() -> Self {
        LlmParams {
            system: DEFAULT_SYSTEM.to_string(),
            prompt: DEFAULT_PROMPT.to_string(),
            feed: 8,
            feed_from: FeedFrom::Everyone,
            recommended: 2,
            recommend_by: Recommend::Recent,
            own: 3,
            activity: 0.0,
            vars: toml::Table::new(),
            model: None,
            temperature: None,
            max_tokens: None,
            turns: Turns::Random,
            echo_probability: 0.6,
            fairness: 0.0,
            explore_epsilon: 0.0,
            repetition_threshold: 0.0,
            repetition_window: 5,
            max_regenerations: 2,
        }
    }
}

/// Who a reply is addressed to: a turn-taking policy, or no one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Turns {
    None,
    Random,
    RoundRobin,
    Echo,
    Contrast,
}

impl Turns {
    fn policy(self) -> Option<TurnPolicy> {
        match self {
            Turns::None => None,
            Turns::Random => Some(TurnPolicy::Random),
            Turns::RoundRobin => Some(TurnPolicy::RoundRobin),
            Turns::Echo => Some(TurnPolicy::Echo),
            Turns::Contrast => Some(TurnPolicy::Contrast),
        }
    }
}

pub struct Llm {
    templates: Environment<'static>,
    vars: Map<String, serde_json::Value>,
    feed: FeedSpec,
    own: usize,
    activity: f64,
    model: Option<String>,
    temperature: Option<f64>,
    max_tokens: Option<u32>,
    turns: Option<TurnTaking>,
    /// Every `llm` agent's stance, by peer index (empty unless the policy uses them).
    stances: Vec<Stance>,
    /// This table's agents' stances, by position in the table, for their posts' `data`.
    own_stances: Vec<Option<Stance>>,
    repetition: Option<Repetition>,
}

/// The anti-repetition guard's settings.
struct Repetition {
    threshold: f64,
    window: usize,
    max_regenerations: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LlmState {
    /// Posts written so far.
    pub posts: u64,
    /// Posts heard from each agent, for the fairness term.
    #[serde(default, skip_serializing_if = "Heard::is_empty")]
    pub heard: Heard,
}

pub(crate) fn register(registry: &mut Registry) {
    registry.register(
        "llm",
        "writes its posts with a language model ([llm]): replies when addressed, posts with probability `activity`",
        &[
            ("system", "the system message: a minijinja template"),
            ("prompt", "the user message: a minijinja template (variables: agent, index, tick, message, feed, own, and vars)"),
            ("feed", "how many recent posts (from the cache, oldest first) the templates see as `feed`"),
            ("feed_from", "whose posts: \"everyone\", \"following\" (the agents one follows, with a [network]) or \"mix\" (those, plus `recommended` from outside)"),
            ("recommended", "mix: how many posts from outside one's network the feed adds (marked `post.recommended`)"),
            ("recommend_by", "mix: which outside posts: \"recent\", \"replied\" (of the authors most replied to lately) or \"random\""),
            ("own", "how many of the agent's own last posts the templates see as `own`"),
            ("activity", "lockstep: probability that an agent posts unprompted in a tick (0: only when addressed)"),
            ("vars", "values the templates may use, as given (lists too: {{ stances[index] }})"),
            ("model", "the model for this table (default: [llm] model)"),
            ("temperature", "for this table (default: [llm] temperature)"),
            ("max_tokens", "for this table (default: [llm] max_tokens)"),
            ("turns", "who a reply is addressed to: \"random\", \"round_robin\", \"echo\", \"contrast\" or \"none\""),
            ("echo_probability", "echo: probability of picking a like-minded agent; contrast: an opposed one"),
            ("fairness", "weigh the next speaker by 1 / (1 + fairness x posts heard from it); 0: off"),
            ("explore_epsilon", "probability of picking any other agent instead, whatever the policy"),
            ("repetition_threshold", "ask again when a reply's word-bigram similarity to a recent post exceeds this; 0: off"),
            ("repetition_window", "how many recent posts the repetition guard compares with"),
            ("max_regenerations", "how many times the repetition guard asks again, at most"),
        ],
        build,
    );
}

fn build(p: LlmParams, setup: &Setup<'_>) -> Result<Llm, ParamError> {
    check_alone(&p)?;
    let vars = variables(&p.vars)?;
    // Agents post with nobody to answer when they may post unprompted (lockstep's activity),
    // or open a debate (turn-taking's first agent).
    let lockstep = setup.mode == Mode::Lockstep;
    let unprompted = (lockstep && p.activity > 0.0) || p.turns.policy().is_some();
    let agents = trial_agents(setup);
    let trial = Trial {
        lockstep,
        unprompted,
        agents: &agents,
    };
    let templates = templates(&p.system, &p.prompt, &vars, trial)?;
    let turns = p
        .turns
        .policy()
        .map(|policy| TurnTaking::new(policy, p.echo_probability, p.fairness, p.explore_epsilon))
        .transpose()?;
    let stances = match &turns {
        Some(t) if t.policy.uses_stances() => peer_stances(setup)?,
        _ => Vec::new(),
    };
    let own_stances = setup
        .agents
        .iter()
        .map(|a| stance_in(&p.vars, a.table_index))
        .collect();
    if setup.mode == Mode::Free && p.activity > 0.0 {
        tracing::warn!(
            "agents[{}] ({}): `activity` applies to lockstep ticks; in free mode llm agents speak when addressed",
            setup.agents.first().map_or(0, |a| a.table),
            setup.table_id
        );
    }
    Ok(Llm {
        templates,
        vars,
        feed: FeedSpec {
            from: p.feed_from,
            size: p.feed as usize,
            recommended: p.recommended as usize,
            by: p.recommend_by,
        },
        own: p.own as usize,
        activity: p.activity,
        model: p.model,
        temperature: p.temperature,
        max_tokens: p.max_tokens,
        turns,
        stances,
        own_stances,
        repetition: (p.repetition_threshold > 0.0).then_some(Repetition {
            threshold: p.repetition_threshold,
            window: p.repetition_window as usize,
            max_regenerations: p.max_regenerations,
        }),
    })
}

/// The parameters that are checked each on its own: numbers within their bounds, a model
/// that names one.
fn check_alone(p: &LlmParams) -> Result<(), ParamError> {
    check_probability("activity", p.activity)?;
    if p.repetition_threshold != 0.0 {
        check_probability("repetition_threshold", p.repetition_threshold)?;
    }
    for (name, n, most) in [
        ("feed", p.feed, 1000),
        ("recommended", p.recommended, 1000),
        ("own", p.own, 1000),
        ("repetition_window", p.repetition_window, 1000),
        ("max_regenerations", p.max_regenerations, 10),
    ] {
        if n > most {
            return Err(ParamError::at(
                name,
                format!("`{name}` is limited to {most}, got {n}"),
            ));
        }
    }
    if let Some(t) = p.temperature
        && !(t.is_finite() && (0.0..=2.0).contains(&t))
    {
        return Err(ParamError::at(
            "temperature",
            format!("must be between 0 and 2, got {t}"),
        ));
    }
    if p.max_tokens == Some(0) {
        return Err(ParamError::at("max_tokens", "must be at least 1"));
    }
    if p.model.as_deref().is_some_and(|m| m.trim().is_empty()) {
        return Err(ParamError::at("model", "must name a model"));
    }
    Ok(())
}

/// The hint for a template that does not parse.
const SYNTAX: &str = "templates are Jinja2 (minijinja): {{ variable }}, {% if x %}...{% endif %}, {% for p in feed %}...{% endfor %}";

/// The hint for a template that uses what is not a variable.
const VARIABLES: &str = "the README's \"LLM agents\" section says what each variable holds; a value of your own goes in params.vars";

/// `vars` as the templates see them; a name that hides a built-in variable is refused.
fn variables(vars: &toml::Table) -> Result<Map<String, serde_json::Value>, ParamError> {
    if let Some(taken) = vars.keys().find(|k| BUILT_IN_VARIABLES.contains(&k.as_str())) {
        return Err(ParamError::at(
            "vars",
            format!("`vars.{taken}` would hide the template variable `{taken}`: give it another name"),
        ));
    }
    match serde_json::to_value(vars) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        _ => Err(ParamError::at("vars", "must be a table of values")),
    }
}

/// The two templates, parsed, with every variable they use known.
fn templates(
    system: &str,
    prompt: &str,
    vars: &Map<String, serde_json::Value>,
    trial: Trial,
) -> Result<Environment<'static>, ParamError> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    let globals: HashSet<String> = env.globals().map(|(name, _)| name.to_string()).collect();
    for (name, source) in [("system", system), ("prompt", prompt)] {
        env.add_template_owned(name, source.to_string()).map_err(|e| {
            ParamError::at(name, format!("the `{name}` template does not parse: {e}")).with_hint(SYNTAX)
        })?;
        let template = env
            .get_template(name)
            .map_err(|e| ParamError::at(name, format!("the `{name}` template: {e}")).with_hint(SYNTAX))?;
        let mut unknown: Vec<String> = template
            .undeclared_variables(false)
            .into_iter()
            .filter(|v| {
                !BUILT_IN_VARIABLES.contains(&v.as_str()) && !vars.contains_key(v) && !globals.contains(v)
            })
            .collect();
        unknown.sort();
        if let Some(first) = unknown.first() {
            let mut known: Vec<&str> = BUILT_IN_VARIABLES.to_vec();
            known.extend(vars.keys().map(String::as_str));
            return Err(ParamError::at(
                name,
                format!(
                    "the `{name}` template uses `{first}`, which is not a variable; the variables are {} (add yours under vars)",
                    known.join(", ")
                ),
            )
            .with_hint(VARIABLES));
        }
    }
    trial_render(&env, vars, trial)?;
    Ok(env)
}

/// What a post's templates see besides `vars`: the variables of [`BUILT_IN_VARIABLES`].
struct Seen<'a> {
    agent: &'a str,
    index: usize,
    tick: serde_json::Value,
    message: serde_json::Value,
    feed: Vec<serde_json::Value>,
    own: Vec<serde_json::Value>,
}

impl Seen<'_> {
    /// The templates' context: `vars` with the built-in variables over them.
    fn context(self, vars: &Map<String, serde_json::Value>) -> Value {
        let mut variables = vars.clone();
        variables.insert("agent".into(), json!(self.agent));
        variables.insert("index".into(), json!(self.index));
        variables.insert("tick".into(), self.tick);
        variables.insert("message".into(), self.message);
        variables.insert("feed".into(), serde_json::Value::Array(self.feed));
        variables.insert("own".into(), serde_json::Value::Array(self.own));
        Value::from_serialize(&variables)
    }
}

/// The agents the templates' trial render is for, by name and index in their table: the
/// table's first and last. `index` picks from lists in `vars`, and a list shorter than the
/// table fails only for the agents past its end.
fn trial_agents<'a>(setup: &Setup<'a>) -> Vec<(&'a str, usize)> {
    match setup.agents {
        [] => vec![("agent_1", 0)],
        [one] => vec![(&*one.name, one.table_index)],
        [first, .., last] => vec![(&*first.name, first.table_index), (&*last.name, last.table_index)],
    }
}

/// What the templates' trial render is to try.
#[derive(Clone, Copy)]
struct Trial<'a> {
    /// Ticks are numbers (lockstep) or null (free mode).
    lockstep: bool,
    /// Agents may post with nobody to answer.
    unprompted: bool,
    /// The agents to render for (name, index in the table).
    agents: &'a [(&'a str, usize)],
}

/// Renders both templates as a run will, before it, for each of the trial's agents: once for
/// a reply, and, when agents may post unprompted, once for the first post of a run (nobody to
/// answer, nothing in the feed).
/// What parsing cannot find (a filter that does not exist, an attribute of null) fails here,
/// at `agora check`, instead of every agent's step in the run.
fn trial_render(
    env: &Environment<'static>,
    vars: &Map<String, serde_json::Value>,
    trial: Trial,
) -> Result<(), ParamError> {
    let post = json!({ "sender_id": "agent_2", "content": "A post." });
    let mut fed = post.clone();
    fed["recommended"] = json!(false);
    let tick = |t: u64| {
        if trial.lockstep {
            json!(t)
        } else {
            serde_json::Value::Null
        }
    };
    let cases = [
        ("for a reply", tick(1), post.clone(), vec![fed], vec![post]),
        (
            "for the first post of a run (message is null and the feed empty)",
            tick(0),
            serde_json::Value::Null,
            Vec::new(),
            Vec::new(),
        ),
    ];
    let tried = if trial.unprompted { 2 } else { 1 };
    for &(agent, index) in trial.agents {
        for (case, tick, message, feed, own) in cases.iter().take(tried).cloned() {
            let context = Seen {
                agent,
                index,
                tick,
                message,
                feed,
                own,
            }
            .context(vars);
            for name in ["system", "prompt"] {
                if let Err(e) = env.get_template(name).and_then(|t| t.render(&context)) {
                    return Err(ParamError::at(
                        name,
                        format!("the `{name}` template fails {case}, for agent {agent} (index {index}): {e}"),
                    )
                    .with_hint(
                        "guard what may be missing, as in {% if message %}...{% endif %}, and give a list in vars one value for each agent of the table; the README's \"LLM agents\" section says what each variable holds",
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The stance of the agent at `position` in a table with these params: `vars.stances`
/// (a list, one per agent) or `vars.stance` (the whole table's).
fn stance_in(params_vars: &toml::Table, position: usize) -> Option<Stance> {
    let value = match (params_vars.get("stances"), params_vars.get("stance")) {
        (Some(toml::Value::Array(list)), _) => list.get(position)?,
        (_, Some(one)) => one,
        _ => return None,
    };
    match value {
        toml::Value::String(s) => Some(Stance::Label(s.clone())),
        toml::Value::Integer(i) => Some(Stance::Number(*i as f64)),
        toml::Value::Float(f) => Some(Stance::Number(*f)),
        _ => None,
    }
}

/// Every `llm` agent's stance, from its own table's `vars`, for `echo` and `contrast`.
fn peer_stances(setup: &Setup<'_>) -> Result<Vec<Stance>, ParamError> {
    setup
        .peers
        .iter()
        .map(|peer| {
            let vars = setup
                .table_params
                .get(peer.table)
                .and_then(|p| p.get("vars"))
                .and_then(toml::Value::as_table);
            vars.and_then(|v| stance_in(v, peer.table_index)).ok_or_else(|| {
                ParamError::at(
                    "turns",
                    format!(
                        "`echo` and `contrast` pick by stance, and agent {} has none: give each table vars.stances (one per agent: a word or a number) or vars.stance",
                        peer.name
                    ),
                )
            })
        })
        .collect()
}

/// A cache entry as the templates see a post: `sender_id` and `content`.
fn post_of(entry: &CacheEntry) -> serde_json::Value {
    let content = match &entry.value {
        serde_json::Value::String(s) => s.clone(),
        v => v
            .get("content")
            .or_else(|| v.get("text"))
            .and_then(|c| c.as_str())
            .map_or_else(|| v.to_string(), str::to_string),
    };
    let sender = entry
        .value
        .get("sender_id")
        .and_then(|s| s.as_str())
        .unwrap_or(&entry.agent);
    json!({ "sender_id": sender, "content": content })
}

/// The word bigrams of a text, lower-cased (single words when it has one word).
fn bigrams(text: &str) -> HashSet<(String, String)> {
    let words: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    if words.len() == 1 {
        return HashSet::from([(words[0].clone(), String::new())]);
    }
    words.windows(2).map(|w| (w[0].clone(), w[1].clone())).collect()
}

/// Jaccard similarity of two texts' word bigrams: 0 (nothing shared) to 1 (the same pairs).
pub fn similarity(a: &str, b: &str) -> f64 {
    let (a, b) = (bigrams(a), bigrams(b));
    let union = a.union(&b).count();
    if union == 0 {
        return 0.0;
    }
    a.intersection(&b).count() as f64 / union as f64
}

impl Llm {
    /// Renders both templates for a post answering `message` (or unprompted).
    fn chat(
        &self,
        message: Option<&Message>,
        ctx: &mut Context<'_>,
    ) -> Result<Vec<ChatMessage>, BehaviourError> {
        let feed: Vec<serde_json::Value> = self
            .feed
            .read(ctx)?
            .iter()
            .map(|post| {
                let mut shown = post_of(&post.entry);
                shown["recommended"] = json!(post.recommended);
                shown
            })
            .collect();
        let own: Vec<serde_json::Value> = ctx.own_last(self.own)?.iter().map(post_of).collect();
        let context = Seen {
            agent: ctx.agent(),
            index: self.index_of(ctx),
            tick: json!(ctx.tick()),
            message: message.map_or(
                serde_json::Value::Null,
                |m| json!({ "sender_id": &*m.sender_id, "content": m.content }),
            ),
            feed,
            own,
        }
        .context(&self.vars);
        let mut chat = Vec::with_capacity(2);
        for name in ["system", "prompt"] {
            let text = self
                .templates
                .get_template(name)
                .and_then(|t| t.render(&context))
                .map_err(|e| BehaviourError::new(format!("rendering the `{name}` template: {e}")))?;
            let text = text.trim();
            if name == "system" && !text.is_empty() {
                chat.push(ChatMessage::system(text));
            } else if name == "prompt" {
                chat.push(ChatMessage::user(text));
            }
        }
        Ok(chat)
    }

    /// The agent's position in its table (`index` in the templates).
    fn index_of(&self, ctx: &Context<'_>) -> usize {
        ctx.table_index()
    }

    fn request(&self, messages: Vec<ChatMessage>) -> CompletionRequest {
        CompletionRequest {
            messages,
            model: self.model.clone(),
            temperature: self.temperature,
            max_tokens: self.max_tokens,
            seed: None,
        }
    }

    /// Asks the model for a post, and again while it repeats a recent one (within bounds).
    /// Returns the text, how many times it asked again, and the tokens all the asking used.
    fn write(
        &self,
        message: Option<&Message>,
        ctx: &mut Context<'_>,
    ) -> Result<(String, u64, u64), BehaviourError> {
        let mut chat = self.chat(message, ctx)?;
        let answer = ctx.complete(self.request(chat.clone()))?;
        let mut tokens = answer.usage.prompt_tokens + answer.usage.completion_tokens;
        let mut text = answer.text.trim().to_string();
        let Some(guard) = &self.repetition else {
            return Ok((text, 0, tokens));
        };
        let recent: Vec<String> = ctx
            .last(guard.window)?
            .iter()
            .map(|e| post_of(e)["content"].as_str().unwrap_or("").to_string())
            .collect();
        let mut again = 0;
        while again < guard.max_regenerations && recent.iter().any(|r| similarity(&text, r) > guard.threshold)
        {
            again += 1;
            chat.push(ChatMessage::assistant(text));
            chat.push(ChatMessage::user(ASK_AGAIN));
            let answer = ctx.complete(self.request(chat.clone()))?;
            tokens += answer.usage.prompt_tokens + answer.usage.completion_tokens;
            text = answer.text.trim().to_string();
        }
        Ok((text, again, tokens))
    }

    /// A post answering `message` (or unprompted), addressed by the turn-taking policy when
    /// `addressed`.
    fn post(
        &self,
        state: &mut LlmState,
        message: Option<&Message>,
        addressed: bool,
        ctx: &mut Context<'_>,
    ) -> Result<Effects, BehaviourError> {
        let (text, again, tokens) = self.write(message, ctx)?;
        let to = match (&self.turns, addressed) {
            (Some(turns), true) => {
                let peers: Arc<[Arc<str>]> = ctx.peers().into();
                let turn = Turn {
                    agents: &peers,
                    me: ctx.peer_index(),
                    last_speaker: message.and_then(|m| peers.iter().position(|p| *p == m.sender_id)),
                    stances: &self.stances,
                    heard: &state.heard,
                };
                let next = turns.next(&turn, ctx);
                (next != ctx.peer_index()).then(|| peers[next].to_string())
            }
            _ => None,
        };
        state.posts += 1;
        let mut data = Map::new();
        if let Some(m) = message {
            data.insert("replying_to".into(), json!(&*m.sender_id));
        }
        if let Some(Some(stance)) = self.own_stances.get(ctx.table_index()) {
            data.insert("stance".into(), json!(stance));
        }
        if again > 0 {
            data.insert("regenerated".into(), json!(again));
        }
        let outgoing = match to {
            Some(to) => Outgoing::to(to, text.clone()),
            None => Outgoing::broadcast(text.clone()),
        };
        let outgoing = if data.is_empty() {
            outgoing
        } else {
            outgoing.with_data(serde_json::Value::Object(data))
        };
        // The model calls and tokens each tick, summed over agents (metrics.csv).
        let mut remembered = json!({ "sender_id": ctx.agent(), "content": text });
        if let (Some(m), Recommend::Replied) = (message, self.feed.by) {
            // What a feed recommending the most replied-to authors counts.
            remembered["replying_to"] = json!(&*m.sender_id);
        }
        Ok(Effects::new()
            .remember(remembered)
            .publish(outgoing)
            .count("llm_calls", 1 + again as i64)
            .count("llm_tokens", tokens as i64))
    }
}

impl Behaviour for Llm {
    type State = LlmState;

    fn init(&self, _ctx: &mut Context<'_>) -> Result<LlmState, BehaviourError> {
        Ok(LlmState::default())
    }

    fn on_start(&self, state: &mut LlmState, ctx: &mut Context<'_>) -> Result<Effects, BehaviourError> {
        // With turn-taking, the first llm agent opens the conversation.
        if self.turns.is_none() || ctx.peer_index() != 0 {
            return Ok(Effects::none());
        }
        self.post(state, None, true, ctx)
    }

    fn on_message(
        &self,
        state: &mut LlmState,
        msg: &Message,
        ctx: &mut Context<'_>,
    ) -> Result<Effects, BehaviourError> {
        if let Some(turns) = &self.turns {
            turns.hear(&mut state.heard, &msg.sender_id);
        }
        if !msg.is_addressed_to(ctx.agent()) {
            return Ok(Effects::none());
        }
        self.post(state, Some(msg), true, ctx)
    }

    fn acts_unprompted(&self) -> bool {
        self.activity > 0.0
    }

    fn on_tick(&self, state: &mut LlmState, ctx: &mut Context<'_>) -> Result<Effects, BehaviourError> {
        if self.activity > 0.0 && ctx.chance(self.activity) {
            return self.post(state, None, false, ctx);
        }
        Ok(Effects::none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn similarity_is_the_jaccard_index_of_word_bigrams() {
        assert_eq!(similarity("the cat sat", "The cat, sat!"), 1.0);
        // {the cat, cat sat} and {the cat, cat ran}: one shared of three.
        assert!((similarity("the cat sat", "the cat ran") - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(similarity("", "anything at all"), 0.0);
        assert_eq!(similarity("yes", "yes"), 1.0);
    }

    use crate::behaviour::testing::Harness;
    use crate::scenario::AgentSpec;

    /// The `llm` behaviour of a one-table scenario of `n` agents `a_1..a_n`, from `params`.
    fn built(params: &str, n: usize) -> Result<Llm, ParamError> {
        let agents: Vec<AgentSpec> = (0..n)
            .map(|i| AgentSpec {
                name: Arc::from(format!("a_{}", i + 1)),
                index: i,
                table: 0,
                peer_index: i,
                table_index: i,
            })
            .collect();
        let table: toml::Table = toml::from_str(params).unwrap();
        let p: LlmParams = table.clone().try_into().unwrap();
        let setup = Setup {
            seed: 1,
            mode: Mode::Lockstep,
            table_id: "a",
            agents: &agents,
            peers: &agents,
            all: &agents,
            table_params: &[table],
        };
        build(p, &setup)
    }

    #[test]
    fn the_agent_addressed_replies_with_what_the_model_wrote_and_passes_the_word() {
        let llm = built(
            "prompt = '{{ message.content if message else \"open\" }} / {{ feed | length }} / {{ topic }}'\nvars = { topic = 'tax' }",
            3,
        )
        .unwrap();
        let mut harness = Harness::new(llm)
            .peers(&["a_1", "a_2", "a_3"])
            .agent("a_2")
            .model(|r| format!("  answer to {}  ", r.messages.last().unwrap().content));
        let (mut state, opening) = harness.start().unwrap();
        assert!(opening.is_empty(), "only a_1 opens");
        let mut asked = Harness::<Llm>::message_from("a_1", "hello");
        asked.to = Some(Arc::from("a_2"));
        let effects = harness.handle(&mut state, &asked).unwrap();
        let post = &effects.published()[0];
        assert_eq!(post.content, "answer to hello / 0 / tax");
        // Random turn-taking: neither itself nor the one it answered.
        assert_eq!(post.to.as_deref(), Some("a_3"));
        assert_eq!(harness.requests().len(), 1);
        assert!(harness.requests()[0].seed.is_some());
        assert_eq!(
            harness.remembered()[0].value["content"],
            "answer to hello / 0 / tax"
        );
        // Not addressed: silent, and no request.
        let effects = harness
            .handle(&mut state, &Harness::<Llm>::message_from("a_3", "hi all"))
            .unwrap();
        assert!(effects.is_empty());
        assert_eq!(harness.requests().len(), 1);
    }

    #[test]
    fn activity_posts_unprompted_to_no_one_and_repetition_asks_again() {
        let llm = built(
            "activity = 1.0\nturns = 'none'\nrepetition_threshold = 0.5\nmax_regenerations = 2",
            2,
        )
        .unwrap();
        let mut harness = Harness::new(llm)
            .peers(&["a_1", "a_2"])
            .model(|_| "the same words again".to_string());
        let (mut state, opening) = harness.start().unwrap();
        assert!(opening.is_empty(), "without turn-taking no one opens");
        let first = harness.end_tick(&mut state).unwrap();
        assert_eq!(first.published()[0].to, None);
        assert_eq!(harness.requests().len(), 1);
        // The same reply as the feed's last post: asked twice more, then posted anyway.
        let second = harness.end_tick(&mut state).unwrap();
        assert_eq!(harness.requests().len(), 4);
        assert_eq!(second.published()[0].data.as_ref().unwrap()["regenerated"], 2);
        let seeds: HashSet<u64> = harness.requests().iter().filter_map(|r| r.seed).collect();
        assert_eq!(seeds.len(), 4, "each request has a seed of its own");
    }

    #[test]
    fn echo_needs_every_stance() {
        let e = built("turns = 'echo'", 2).err().unwrap();
        assert_eq!(e.key.as_deref(), Some("turns"));
        assert!(built("turns = 'echo'\nvars = { stances = ['for', 'against'] }", 2).is_ok());
        assert!(built("turns = 'contrast'\nvars = { stance = 0.5 }", 2).is_ok());
    }

    fn vars(text: &str) -> Map<String, serde_json::Value> {
        variables(&toml::from_str(text).unwrap()).unwrap()
    }

    const TRIAL: Trial = Trial {
        lockstep: true,
        unprompted: true,
        agents: &[("agent_1", 0)],
    };

    #[test]
    fn a_list_in_vars_shorter_than_the_table_is_refused_before_the_run() {
        let params = "prompt = 'You argue {{ stances[index] }}.'\nvars = { stances = ['for', 'against'] }";
        assert!(built(params, 2).is_ok());
        assert!(built(params, 1).is_ok());
        let e = built(params, 3).err().unwrap();
        assert_eq!(e.key.as_deref(), Some("prompt"));
        assert!(e.message.contains("for agent a_3 (index 2)"), "{}", e.message);
        assert!(
            e.hint
                .as_deref()
                .is_some_and(|h| h.contains("one value for each agent")),
            "{e:?}"
        );
    }

    #[test]
    fn templates_may_use_only_known_variables() {
        let known = vars("topic = 'x'");
        assert!(templates("{{ agent }} {{ topic }}", DEFAULT_PROMPT, &known, TRIAL).is_ok());
        let e = templates("{{ agent }}", "{{ topik }} {{ range(3) }}", &known, TRIAL)
            .err()
            .unwrap();
        assert_eq!(e.key.as_deref(), Some("prompt"));
        assert!(
            e.message.contains("`topik`") && e.message.contains("topic"),
            "{}",
            e.message
        );
        let e = templates("{% if %}", "", &known, TRIAL).err().unwrap();
        assert_eq!(e.key.as_deref(), Some("system"));
        // What only rendering finds: a filter that does not exist, null's attribute.
        let e = templates("{{ agent | shout }}", DEFAULT_PROMPT, &known, TRIAL)
            .err()
            .unwrap();
        assert!(
            e.message.contains("fails for a reply") && e.message.contains("shout"),
            "{}",
            e.message
        );
        let e = templates("", "{{ message.content }}", &known, TRIAL)
            .err()
            .unwrap();
        assert_eq!(e.key.as_deref(), Some("prompt"));
        assert!(e.message.contains("first post of a run"), "{}", e.message);
        assert!(templates("", "{{ message.content if message else 'Open.' }}", &known, TRIAL).is_ok());
        // Agents that only ever reply always have a message.
        assert!(
            templates(
                "",
                "{{ message.content }}",
                &known,
                Trial {
                    lockstep: true,
                    unprompted: false,
                    agents: &[("agent_1", 0)],
                }
            )
            .is_ok()
        );
        let e = variables(&toml::from_str("feed = 3").unwrap()).err().unwrap();
        assert!(e.message.contains("vars.feed"), "{}", e.message);
    }
}
