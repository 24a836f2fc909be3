#!/usr/bin/env python3
"""What batching buys: the Python opinion behaviour (examples/python/opinion.py) served
through a real pipe, one request at a time as agora sends them, with the same 100,000
messages sent as steps of 1, 10, 100 and 1,000 messages each. Prints one line per batch
size: steps, seconds, microseconds per step and per message.

    python3 benches/protocol_batching.py [MESSAGES]

(`cargo bench -- protocol-batching` runs it.)
"""

import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    total = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    program = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "examples", "python", "opinion.py")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        bufsize=1,
    )

    def ask(request):
        program.stdin.write(json.dumps(request, separators=(",", ":")) + "\n")
        program.stdin.flush()
        return json.loads(program.stdout.readline())

    agents = [f"citizen_{i}" for i in range(1, 1001)]
    ready = ask({
        "type": "hello", "protocol": 1, "behaviour": "py_opinion", "mode": "lockstep", "seed": 7,
        "tables": [{"id": "citizen", "params": {}, "agents": agents}], "peers": agents,
    })
    assert ready["type"] == "ready", ready
    # The messages an opinion tick carries: each sender's opinion, as the built-in writes it.
    messages = [
        {"sender_id": agents[i % 1000], "seq": 1, "tick": 0, "content": f"{(i % 997) / 997:.4f}",
         "data": {"opinion": (i % 997) / 997}}
        for i in range(1000)
    ]
    state = {"opinion": 0.5, "near_sum": 0.0, "near_count": 0}
    for size in (1, 10, 100, 1000):
        steps = total // size
        started = time.perf_counter()
        for step in range(steps):
            reply = ask({
                "type": "step", "agent": "citizen_1", "table": "citizen", "index": 0, "peer_index": 0,
                "tick": 1, "kind": "tick", "state": state, "messages": messages[:size], "seed": step,
            })
            assert reply["type"] == "done", reply
        seconds = time.perf_counter() - started
        print(f"batch {size:>5}: {steps:>7} steps in {seconds:6.2f}s = "
              f"{seconds / steps * 1e6:8.1f} us per step, {seconds / (steps * size) * 1e6:6.2f} us per message")
    program.stdin.close()
    program.wait()


if __name__ == "__main__":
    main()
