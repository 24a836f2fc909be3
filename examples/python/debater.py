#!/usr/bin/env python3
"""An LLM debater written in Python: it builds its own prompt from the feed and asks the
scenario's model through agora (`ctx.complete`), so its calls are recorded in llm.jsonl and
replay offline with --replay, like the built-in `llm` behaviour's.

    agora run scenarios/python-debate.toml --replay scenarios/python-debate.llm.jsonl

The agent a post is addressed to answers it and hands the word to another agent at random
(not the one it answered); the first debater opens.

A local Hugging Face model: serve it with vLLM (`vllm serve <model>`) and point [llm] at it,
so that its calls are recorded and replayable too. Calling `transformers` from here instead,
e.g. `pipeline("text-generation", model=...)(prompt)` in place of `ctx.complete(...)`, works,
but its answers are then neither recorded nor replayed, and the run is no longer reproducible.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))

from agora_behaviour import Behaviour, Effects, Refuse, run  # noqa: E402


class Debater(Behaviour):
    summary = "an LLM debater: answers when addressed, then passes the word on"
    params = {
        "topic": ("a four-day work week", "what the agents debate"),
        "stances": ([], "each agent's stance, by its position in the table (cycled)"),
        "feed": (6, "how many recent posts the prompt shows"),
    }

    def check(self, table, params):
        params = super().check(table, params)
        if not isinstance(params["feed"], int) or not 0 <= params["feed"] <= 100:
            raise Refuse("`feed` must be a whole number from 0 to 100", "feed")
        return params

    def init(self, ctx):
        stances = ctx.params["stances"] or ["undecided about"]
        return {"stance": stances[ctx.index % len(stances)], "posts": 0}

    def write(self, state, ctx, replying_to=None):
        feed = ctx.last(ctx.params["feed"])
        lines = [f"- {e.value['author']}: {e.value['text']}" for e in feed if isinstance(e.value, dict)]
        prompt = "Recent posts:\n" + "\n".join(lines) + "\n\n" if lines else ""
        if replying_to is None:
            prompt += f"Open the discussion of {ctx.params['topic']}."
        else:
            prompt += f'{replying_to.sender_id} wrote to you: "{replying_to.content}"\nReply in at most two sentences.'
        text = ctx.complete([
            {"role": "system", "content": f"You are {ctx.agent}. You are {state['stance']} {ctx.params['topic']}."},
            {"role": "user", "content": prompt},
        ]).strip()
        others = [p for p in ctx.peers if p != ctx.agent and (replying_to is None or p != replying_to.sender_id)]
        to = others[ctx.rng.randrange(len(others))] if others else None
        state["posts"] += 1
        return (
            Effects()
            .publish(text, to=to, data={"stance": state["stance"]})
            .remember({"author": ctx.agent, "text": text})
            .count("posts")
        )

    def on_start(self, state, ctx):
        if ctx.peer_index == 0:
            return self.write(state, ctx)

    def on_message(self, state, msg, ctx):
        if msg.to == ctx.agent:
            return self.write(state, ctx, replying_to=msg)


if __name__ == "__main__":
    run(Debater())
