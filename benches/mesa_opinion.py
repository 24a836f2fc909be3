#!/usr/bin/env python3
"""The bounded-confidence (Hegselmann-Krause) opinion model of scenarios/opinion.toml in
Mesa 3, swept with Mesa's batch_run as `agora sweep` sweeps it: 1,000 agents, 20 steps,
epsilon 0.1, 0.2, 0.3, 0.4, ten iterations each (40 runs), two processes. Each agent moves
`mu` of the way towards the mean of the opinions within `epsilon` of its own (its own
included) among those of the step before; the near mean comes from the sorted opinions and
their prefix sums (O(log n) an agent, not a loop over all agents), so Mesa is timed at its
best. A DataCollector records the clusters and every agent's opinion each step, as agora
records them.

    python3 -m venv /tmp/mesa && /tmp/mesa/bin/pip install mesa
    /tmp/mesa/bin/python benches/mesa_opinion.py [PROCESSES]
    /tmp/mesa/bin/python benches/mesa_opinion.py single

Prints the wall time of the whole batch_run; with `single`, the time of one model's 20
steps, for the all-pairs model (as agora's `opinion` computes it) and the sorted one.
"""

import bisect
import sys
import time

import mesa


class Citizen(mesa.Agent):
    def __init__(self, model):
        super().__init__(model)
        self.opinion = self.random.random()

    def step(self):
        m = self.model
        lo = bisect.bisect_left(m.sorted_opinions, self.opinion - m.epsilon)
        hi = bisect.bisect_right(m.sorted_opinions, self.opinion + m.epsilon)
        # The sorted opinions include this agent's own, as agora's mean does.
        near = m.prefix[hi] - m.prefix[lo]
        mean = near / (hi - lo)
        self.opinion = min(max(self.opinion + m.mu * (mean - self.opinion), 0.0), 1.0)


def clusters(model):
    ops = sorted(a.opinion for a in model.agents)
    return 1 + sum(1 for a, b in zip(ops, ops[1:]) if b - a > model.epsilon)


class OpinionModel(mesa.Model):
    def __init__(self, n=1000, epsilon=0.2, mu=0.5, seed=None):
        super().__init__(seed=seed)
        self.epsilon, self.mu = epsilon, mu
        for _ in range(n):
            Citizen(self)
        self.datacollector = mesa.DataCollector(
            model_reporters={"clusters": clusters}, agent_reporters={"opinion": "opinion"}
        )
        self.datacollector.collect(self)

    def step(self):
        self.sorted_opinions = sorted(a.opinion for a in self.agents)
        self.prefix = [0.0]
        for x in self.sorted_opinions:
            self.prefix.append(self.prefix[-1] + x)
        self.agents.do("step")
        self.datacollector.collect(self)


class NaiveCitizen(Citizen):
    """The model as agora's `opinion` computes it: each agent looks at every opinion of the
    step before (a million comparisons a step for 1,000 agents)."""

    def step(self):
        m = self.model
        near = [x for x in m.sorted_opinions if abs(x - self.opinion) <= m.epsilon]
        mean = sum(near) / len(near)
        self.opinion = min(max(self.opinion + m.mu * (mean - self.opinion), 0.0), 1.0)


class NaiveModel(OpinionModel):
    def __init__(self, n=1000, epsilon=0.2, mu=0.5, seed=None):
        mesa.Model.__init__(self, seed=seed)
        self.epsilon, self.mu = epsilon, mu
        for _ in range(n):
            NaiveCitizen(self)
        self.datacollector = mesa.DataCollector(
            model_reporters={"clusters": clusters}, agent_reporters={"opinion": "opinion"}
        )
        self.datacollector.collect(self)


def single(model_class, steps=20):
    """One model of 1,000 agents: the seconds its steps take (not building it)."""
    model = model_class(n=1000, epsilon=0.2, mu=0.5, seed=7)
    started = time.perf_counter()
    for _ in range(steps):
        model.step()
    return time.perf_counter() - started


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "single":
    # `single`: one run's steps, the all-pairs model (agora's) and the sorted one, best of 3.
    naive = min(single(NaiveModel) for _ in range(3))
    fast = min(single(OpinionModel) for _ in range(3))
    print(f"mesa single: all-pairs {naive:.3f}s sorted {fast:.3f}s")
elif __name__ == "__main__":
    processes = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    started = time.perf_counter()
    results = mesa.batch_run(
        OpinionModel,
        parameters={"n": 1000, "epsilon": [0.1, 0.2, 0.3, 0.4], "mu": 0.5},
        iterations=10,
        max_steps=20,
        number_processes=processes,
        data_collection_period=1,
        display_progress=False,
    )
    seconds = time.perf_counter() - started
    runs = len({(r["RunId"]) for r in results})
    print(f"mesa batch_run: {runs} runs in {seconds:.2f}s")
