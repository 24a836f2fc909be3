"""Write an agora behaviour in Python.

agora starts your program and speaks to it in JSON lines on its standard input and output
(protocol version 1, docs/protocol.md). This module speaks the protocol for you: subclass
:class:`Behaviour`, override what your agents do, and call :func:`run`::

    from agora_behaviour import Behaviour, Effects, run

    class Echo(Behaviour):
        summary = "repeats what it hears"
        params = {"p_echo": (1.0, "probability of repeating")}

        def init(self, ctx):
            return {"spoken": 0}

        def on_message(self, state, msg, ctx):
            if ctx.rng.random() < ctx.params["p_echo"]:
                state["spoken"] += 1
                return Effects().publish(msg.content)

    if __name__ == "__main__":
        run(Echo())

and in the scenario::

    [behaviours.echo]
    command = ["python3", "echo.py"]

    [[agents]]
    id = "e"
    count = 3
    behaviour = "echo"
    params = { p_echo = 0.5 }

The rules that keep runs reproducible and resumable are the Rust behaviours' own:

- Decide everything from the state, the message and the context: no clocks, no global
  random numbers (use ``ctx.rng``, seeded for each step from the agent's own stream), no
  network (ask a model through ``ctx.complete``), no files.
- Keep everything an agent knows in its state (a dict, mutated in place): agora saves it as
  JSON after every step and hands it back with the next, in any copy of your program.
- A step may run more than once (when it reads the cache or asks a model, it runs again with
  the answer), always from the same state and the same seed: that is why the rules above
  matter.

Standard library only; Python 3.8 or later. Importable by path (``sys.path``) or installed
with ``pip install ./python``.
"""

from __future__ import annotations

import json
import operator
import random
import sys
import traceback
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

__all__ = [
    "Behaviour",
    "Context",
    "Effects",
    "Entry",
    "Message",
    "Refuse",
    "PROTOCOL",
    "run",
    "serve",
]

#: The protocol version this module speaks.
PROTOCOL = 1


class Refuse(Exception):
    """Raise from :meth:`Behaviour.check` to refuse a table's params: agora reports it as
    bad input (exit code 2) with your message, before any run starts."""

    def __init__(self, message: str, key: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        self.key = key


class _Pending(Exception):
    """An input of the step is not there yet: the step ends with a ``need`` reply, and agora
    sends it again with the answer. Never catch it (a bare ``except:`` would)."""


class Message:
    """A message another agent published."""

    __slots__ = ("sender_id", "seq", "tick", "to", "content", "data")

    def __init__(self, wire: Dict[str, Any]) -> None:
        self.sender_id: str = wire["sender_id"]
        self.seq: Optional[int] = wire.get("seq")
        self.tick: Optional[int] = wire.get("tick")
        #: The agent it is addressed to, or None.
        self.to: Optional[str] = wire.get("to")
        self.content: str = wire["content"]
        #: A JSON object, or None.
        self.data: Optional[Dict[str, Any]] = wire.get("data")

    def __repr__(self) -> str:
        return f"Message({self.sender_id!r}, {self.content!r}, to={self.to!r})"


class Entry:
    """A value some agent remembered (a cache entry)."""

    __slots__ = ("agent", "tick", "value")

    def __init__(self, agent: str, tick: Optional[int], value: Any) -> None:
        self.agent = agent
        self.tick = tick
        self.value = value

    def __repr__(self) -> str:
        return f"Entry({self.agent!r}, {self.value!r})"


class Effects:
    """What a call produced: messages to publish, values to remember, counts to report.
    The builder methods return the effects, so they chain."""

    def __init__(self) -> None:
        self.published: List[Dict[str, Any]] = []
        self.remembered: List[Any] = []
        self.metrics: Dict[str, int] = {}
        self.levels: Dict[str, float] = {}
        self.values: Dict[str, float] = {}

    def publish(self, content: str, to: Optional[str] = None, data: Optional[Dict[str, Any]] = None) -> "Effects":
        """Publishes ``content`` for every agent, or addressed ``to`` one (every agent still
        reads it). ``data`` is a JSON object carried with it."""
        message: Dict[str, Any] = {"content": str(content)}
        if to is not None:
            message["to"] = to
        if data is not None:
            message["data"] = data
        self.published.append(message)
        return self

    def remember(self, value: Any) -> "Effects":
        """Appends a JSON value to the cache: this agent's list and everyone's sorted set."""
        self.remembered.append(value)
        return self

    def count(self, metric: str, delta: int = 1) -> "Effects":
        """Adds a whole number to a counter the summary reports, summed over agents. A
        fraction is an error (``set`` or ``report`` take any number): it is never rounded."""
        try:
            whole = operator.index(delta)  # int, and numpy's integers
        except TypeError:
            if not (isinstance(delta, float) and delta.is_integer()):
                raise TypeError(
                    f"count({metric!r}, {delta!r}): a counter adds whole numbers; "
                    "use set() or report() for a number that is not one"
                ) from None
            whole = int(delta)
        self.metrics[metric] = self.metrics.get(metric, 0) + whole
        return self

    def set(self, metric: str, value: float) -> "Effects":
        """Sets a model-level number for this tick (a row of metrics.csv); when several
        agents set it in one tick, the largest stands."""
        self.levels[metric] = float(value)
        return self

    def report(self, name: str, value: float) -> "Effects":
        """Reports this agent's value of ``name`` for this tick (a row of agents.csv)."""
        self.values[name] = float(value)
        return self

    def extend(self, other: Optional["Effects"]) -> None:
        if other is None:
            return
        self.published.extend(other.published)
        self.remembered.extend(other.remembered)
        for name, delta in other.metrics.items():
            self.count(name, delta)
        for name, value in other.levels.items():
            self.levels[name] = max(self.levels.get(name, value), value)
        self.values.update(other.values)


def _key(read: Dict[str, int]) -> Tuple[str, int]:
    ((kind, n),) = read.items()
    return kind, n


class Context:
    """The world as one agent sees it during one step."""

    def __init__(self, request: Dict[str, Any], table: "_Table", peers: List[str]) -> None:
        #: This agent's name.
        self.agent: str = request["agent"]
        #: Its table's id, and its position in the table (from 0).
        self.table: str = request["table"]
        self.index: int = request["index"]
        #: Its position among :attr:`peers`.
        self.peer_index: int = request["peer_index"]
        #: The lockstep tick; None in free mode.
        self.tick: Optional[int] = request.get("tick")
        #: The agents that run this behaviour, in declaration order.
        self.peers: List[str] = peers
        #: With a sparse ``[network]``: the agents that hear this one (its followers) and run
        #: this behaviour, in declaration order; None when everyone hears everyone.
        self.audience: Optional[List[str]] = request.get("audience")
        #: With a sparse ``[network]``: the agents this one follows; None when everyone hears
        #: everyone.
        self.following: Optional[List[str]] = request.get("following")
        #: The table's params, defaults filled in.
        self.params: Dict[str, Any] = table.params
        #: The step's seed (below 2**53), drawn from the agent's own random stream.
        #: ``seed / 2**53`` is the uniform number a Rust behaviour's ``ctx.unit()`` would draw.
        self.seed: int = request["seed"]
        self._rng: Optional[random.Random] = None
        self._reads: Dict[Tuple[str, int], List[Entry]] = {
            _key(answer["read"]): [Entry(e["agent"], e.get("tick"), e.get("value")) for e in answer["entries"]]
            for answer in request.get("reads", [])
        }
        self._completions: List[Dict[str, Any]] = request.get("completions", [])
        self._own: List[Entry] = []
        self._need_reads: List[Dict[str, int]] = []
        self._need_completions: List[Dict[str, Any]] = []

    @property
    def rng(self) -> random.Random:
        """The step's random numbers, seeded with :attr:`seed`: the same step always draws
        the same ones. (``random()`` and ``getrandbits()`` give the same numbers on every
        Python 3; ``randrange`` and ``choice`` on the same minor version.)"""
        if self._rng is None:
            self._rng = random.Random(self.seed)
        return self._rng

    def _read(self, kind: str, n: int) -> List[Entry]:
        found = self._reads.get((kind, int(n)))
        if found is None:
            self._need_reads.append({kind: int(n)})
            raise _Pending()
        return found

    def own_last(self, n: int) -> List[Entry]:
        """This agent's last ``n`` cache entries, oldest first (what this step remembered
        included)."""
        return (self._read("own_last", n) + self._own)[-n:] if n > 0 else []

    def last(self, n: int) -> List[Entry]:
        """Everyone's last ``n`` cache entries, oldest first (in lockstep, what the ticks
        before wrote; and what this step remembered)."""
        return (self._read("last", n) + self._own)[-n:] if n > 0 else []

    def sample(self, n: int) -> List[Entry]:
        """``n`` distinct cache entries of everyone's, drawn at random by agora from the
        step's seed (fewer if the cache holds fewer)."""
        return self._read("sample", n)

    def complete(
        self,
        messages: Iterable[Dict[str, str]],
        model: Optional[str] = None,
        temperature: Optional[float] = None,
        max_tokens: Optional[int] = None,
        seed: Optional[int] = None,
    ) -> str:
        """A language model's answer to a chat (``[{"role": "system", "content": ...}, ...]``),
        from the scenario's ``[llm]`` client: recorded in ``llm.jsonl``, replayed with
        ``--replay``, never asked twice. Unset settings come from ``[llm]``; the seed, unless
        given, is drawn from ``ctx.rng``."""
        request: Dict[str, Any] = {"messages": [{"role": m["role"], "content": m["content"]} for m in messages]}
        if model is not None:
            request["model"] = model
        if temperature is not None:
            request["temperature"] = float(temperature)
        if max_tokens is not None:
            request["max_tokens"] = int(max_tokens)
        request["seed"] = int(seed) if seed is not None else self.rng.randrange(1 << 31)
        for answer in self._completions:
            if answer["request"] == request:
                return answer["text"]
        self._need_completions.append(request)
        raise _Pending()


class Behaviour:
    """What your agents do. One object serves every agent of the tables that use it; each
    agent's state is what :meth:`init` returns, a JSON-serialisable dict that the methods
    change in place. Each method returns :class:`Effects`, or None for nothing."""

    #: One line on what it does, for ``agora behaviours``.
    summary: str = ""
    #: The params it takes: ``{"name": (default, "what it means")}``. When set, other keys in a
    #: table's params are refused, and the defaults are filled in.
    params: Dict[str, Tuple[Any, str]] = {}
    #: Whether ``on_tick`` may publish after a tick in which nothing was published: then a
    #: quiet lockstep tick does not end the run.
    acts_unprompted: bool = False
    #: Model-level numbers agora works out each tick from the values the agents reported
    #: (``Effects.report``), one row each in metrics.csv and a column in sweep.csv:
    #: ``{"yes_share": ("mean", "yes")}``. Statistics: mean, sum, min, max, median, std
    #: (population, as numpy's), count (how many agents reported the value).
    model_reporters: Dict[str, Tuple[str, str]] = {}

    def check(self, table: str, params: Dict[str, Any]) -> Dict[str, Any]:
        """Validates one table's params and returns them with the defaults filled in. Raise
        :class:`Refuse` to refuse them. The default refuses keys :attr:`params` does not
        declare (when it declares any) and fills in the defaults."""
        if self.params:
            for key, value in params.items():
                if key not in self.params:
                    known = ", ".join(sorted(self.params))
                    raise Refuse(f"unknown parameter {key!r}; the parameters are {known}", key)
                default = self.params[key][0]
                if not _same_kind(value, default):
                    raise Refuse(
                        f"expected {_kind(default)} (the default is {json.dumps(default)}), got {json.dumps(value)}",
                        key,
                    )
        resolved = {name: default for name, (default, _doc) in self.params.items()}
        resolved.update(params)
        return resolved

    def init(self, ctx: Context) -> Any:
        """An agent's first state."""
        return {}

    def on_start(self, state: Any, ctx: Context) -> Optional[Effects]:
        """What the agent does at the start, before it has heard anything (tick 0)."""
        return None

    def on_message(self, state: Any, msg: Message, ctx: Context) -> Optional[Effects]:
        """What the agent does with one message another agent published."""
        return None

    def on_tick(self, state: Any, ctx: Context) -> Optional[Effects]:
        """What the agent does at the end of each lockstep tick, after its messages."""
        return None


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


def _same_kind(value: Any, default: Any) -> bool:
    """Whether ``value`` is of the declared default's kind (an int where a float is expected
    is fine; a bool is not a number). A default of None takes anything."""
    return default is None or _kind(value) == _kind(default)


class _Table:
    def __init__(self, table_id: str, params: Dict[str, Any]) -> None:
        self.id = table_id
        self.params = params


class _Server:
    """One program's side of the protocol: the hello, then one step at a time."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.tables: Dict[str, _Table] = {}
        self.peers: List[str] = []

    def hello(self, hello: Dict[str, Any]) -> Dict[str, Any]:
        if hello.get("protocol") != PROTOCOL:
            print(f"agora speaks protocol {hello.get('protocol')}; this helper speaks {PROTOCOL}", file=sys.stderr)
        self.peers = hello.get("peers", [])
        resolved: Dict[str, Any] = {}
        for table in hello.get("tables", []):
            try:
                params = self.behaviour.check(table["id"], dict(table.get("params") or {}))
            except Refuse as refusal:
                reply: Dict[str, Any] = {"type": "refused", "table": table["id"], "message": refusal.message}
                if refusal.key is not None:
                    reply["key"] = refusal.key
                return reply
            except Exception as e:  # a check that breaks on odd params: they are still refused
                traceback.print_exc(file=sys.stderr)
                return {"type": "refused", "table": table["id"], "message": f"{type(e).__name__}: {e}"}
            self.tables[table["id"]] = _Table(table["id"], params)
            resolved[table["id"]] = params
        declares = [
            {"name": name, "default": default, "doc": doc} for name, (default, doc) in self.behaviour.params.items()
        ]
        return {
            "type": "ready",
            "protocol": PROTOCOL,
            "params": resolved,
            "summary": self.behaviour.summary or (type(self.behaviour).__doc__ or "").strip().split("\n")[0],
            "declares": declares,
            "acts_unprompted": bool(self.behaviour.acts_unprompted),
            "model_reporters": {
                name: [statistic, value] for name, (statistic, value) in self.behaviour.model_reporters.items()
            },
        }

    def step(self, request: Dict[str, Any]) -> Dict[str, Any]:
        table = self.tables.get(request["table"]) or _Table(request["table"], {})
        ctx = Context(request, table, self.peers)
        b = self.behaviour
        effects = Effects()
        kind = request["kind"]
        state = request.get("state")
        at: Optional[int] = None
        # Which hook runs: a failure in init, on_start or on_tick is the step's, and agora does
        # not dead-letter the messages for it.
        hook = "init"
        try:
            if kind == "start":
                state = b.init(ctx)
                hook = "on_start"
                effects.extend(self._remembering(ctx, b.on_start(state, ctx), hook))
            hook = "on_message"
            for k, wire in enumerate(request.get("messages", [])):
                at = k
                effects.extend(self._remembering(ctx, b.on_message(state, Message(wire), ctx), hook))
            at = None
            if kind == "tick":
                hook = "on_tick"
                effects.extend(self._remembering(ctx, b.on_tick(state, ctx), hook))
        except _Pending:
            return {"type": "need", "reads": ctx._need_reads, "completions": ctx._need_completions}
        except Exception as e:  # the step fails: agora retries it, then dead-letters the message
            traceback.print_exc(file=sys.stderr)
            reply: Dict[str, Any] = {"type": "error", "message": f"{type(e).__name__}: {e}", "hook": hook}
            if at is not None:
                reply["at"] = at
            return reply
        return {
            "type": "done",
            "state": state,
            "publish": effects.published,
            "remember": effects.remembered,
            "metrics": effects.metrics,
            "levels": effects.levels,
            "values": effects.values,
        }

    @staticmethod
    def _remembering(ctx: Context, effects: Optional[Effects], hook: str) -> Optional[Effects]:
        if effects is not None and not isinstance(effects, Effects):
            raise TypeError(
                f"{hook} returned a {type(effects).__name__}; it must return Effects "
                "(for example Effects().publish(...)) or None"
            )
        # What a call remembers, later calls of the same step read (as in agora's Rust context).
        if effects is not None:
            ctx._own.extend(Entry(ctx.agent, ctx.tick, value) for value in effects.remembered)
        return effects


def serve(behaviour: Behaviour, lines: Iterable[str], write: Callable[[str], None]) -> None:
    """Answers each line of ``lines`` with ``write``: the protocol without the process around
    it, for tests."""
    server = _Server(behaviour)
    for line in lines:
        if not line.strip():
            continue
        message = json.loads(line)
        kind = message.get("type")
        if kind == "hello":
            reply = server.hello(message)
        elif kind == "step":
            reply = server.step(message)
        else:
            reply = {"type": "error", "message": f"unknown request type {kind!r}"}
        try:
            line = json.dumps(reply, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as e:
            # A state, message or remembered value that JSON cannot hold (a set, an object, a
            # NaN) fails the step, in words, instead of ending the program.
            line = json.dumps(
                {
                    "type": "error",
                    "message": f"the step's answer is not JSON ({e}): states, messages' data and remembered "
                    "values are made of dicts, lists, str, int, float (not NaN), bool and None",
                },
                separators=(",", ":"),
            )
        write(line + "\n")


def run(behaviour: Behaviour) -> None:
    """Serves agora on standard input and output until agora closes the input. Print your own
    diagnostics to standard error: agora passes them on, prefixed with the behaviour and the
    agent; standard output belongs to the protocol."""
    stdout = sys.stdout

    def write(line: str) -> None:
        stdout.write(line)
        stdout.flush()

    # Anything the behaviour prints by mistake goes to stderr, not into the protocol.
    sys.stdout = sys.stderr
    try:
        serve(behaviour, sys.stdin, write)
    except KeyboardInterrupt:
        pass
