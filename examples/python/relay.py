#!/usr/bin/env python3
"""The built-in `relay` in Python (workload W1 of the old project's benchmark): tokens travel
round the ring of relay agents; the agent a token is addressed to remembers it and passes it
on until it has been published `hops` times. Its transcript is the built-in's, byte for byte.

    agora run scenarios/python-relay.toml
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))

from agora_behaviour import Behaviour, Effects, Refuse, run  # noqa: E402


class Relay(Behaviour):
    summary = "workload W1 in Python: tokens travel round the ring, `hops` publishes each"
    params = {
        "tokens": (1, "tokens in flight; token k starts at relay agent k mod N"),
        "hops": (100, "how many times each token is published in all"),
    }

    def check(self, table, params):
        params = super().check(table, params)
        if not isinstance(params["hops"], int) or params["hops"] < 1:
            raise Refuse("`hops` must be at least 1", "hops")
        return params

    def init(self, ctx):
        return {"relayed": 0}

    def next_agent(self, ctx):
        return ctx.peers[(ctx.peer_index + 1) % len(ctx.peers)]

    def on_start(self, state, ctx):
        effects = Effects()
        for token in range(ctx.peer_index, ctx.params["tokens"], len(ctx.peers)):
            effects.publish(f"token {token} hop 1", to=self.next_agent(ctx)).count("in_flight")
        return effects

    def on_message(self, state, msg, ctx):
        if msg.to != ctx.agent:
            return None
        words = msg.content.split(" ")
        if len(words) < 4 or words[0] != "token" or words[2] != "hop":
            return None
        token, hop = int(words[1]), int(words[3])
        effects = Effects().remember({"token": token, "hop": hop})
        if hop >= ctx.params["hops"]:
            return effects.count("in_flight", -1)
        state["relayed"] += 1
        return effects.publish(f"token {token} hop {hop + 1}", to=self.next_agent(ctx))


if __name__ == "__main__":
    run(Relay())
