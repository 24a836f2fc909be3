#!/usr/bin/env python3
"""The built-in `opinion` behaviour in Python: bounded-confidence opinion dynamics
(Hegselmann-Krause), spoken to through agora's protocol.

Each agent starts with an opinion in [0, 1] and publishes it every tick. At the end of a tick
it moves `mu` of the way towards the mean of the opinions it heard that lie within `epsilon`
of its own (its own included). The start draws the opinion as the built-in does (the step's
seed is the agent's first random draw), so the transcript is the built-in's, byte for byte:
tests/programs.rs checks it.

    agora run scenarios/python-opinion.toml
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))

from agora_behaviour import Behaviour, Effects, Refuse, run  # noqa: E402


def announce(opinion):
    # The built-in's message: four decimals as content, the exact value in data; and the
    # agent's opinion reported for agents.csv, as the built-in reports it.
    return Effects().publish(f"{opinion:.4f}", data={"opinion": opinion}).report("opinion", opinion)


class Opinion(Behaviour):
    summary = "bounded confidence (Hegselmann-Krause), in Python"
    params = {
        "epsilon": (0.2, "confidence bound: opinions further away than this are ignored"),
        "mu": (0.5, "how far to move towards the mean of the near opinions, from 0 to 1"),
    }

    def check(self, table, params):
        params = super().check(table, params)
        if not (isinstance(params["epsilon"], (int, float)) and params["epsilon"] >= 0):
            raise Refuse(f"`epsilon` must be a number of at least 0, got {params['epsilon']!r}", "epsilon")
        if not (isinstance(params["mu"], (int, float)) and 0 <= params["mu"] <= 1):
            raise Refuse(f"`mu` must be a number between 0 and 1, got {params['mu']!r}", "mu")
        return params

    def init(self, ctx):
        # seed / 2**53: the uniform number the built-in's ctx.unit() draws first.
        return {"opinion": ctx.seed / 2**53}

    def on_start(self, state, ctx):
        state["near_sum"], state["near_count"] = 0.0, 0
        return announce(state["opinion"])

    def on_message(self, state, msg, ctx):
        heard = (msg.data or {}).get("opinion")
        if isinstance(heard, (int, float)) and abs(heard - state["opinion"]) <= ctx.params["epsilon"]:
            state["near_sum"] += heard
            state["near_count"] += 1

    def on_tick(self, state, ctx):
        opinion = state["opinion"]
        mean = (state["near_sum"] + opinion) / (state["near_count"] + 1)
        state["opinion"] = min(max(opinion + ctx.params["mu"] * (mean - opinion), 0.0), 1.0)
        state["near_sum"], state["near_count"] = 0.0, 0
        return announce(state["opinion"])


if __name__ == "__main__":
    run(Opinion())
