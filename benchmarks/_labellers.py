"""The labellers of ``bench_serve.py --phases name+labels``: people marking pairs in the
labelling view while others search, and the check that no acknowledged click was lost."""

from __future__ import annotations

import json
import random
import threading
import time


class Labellers:
    """``count`` people, each marking a random pair of indexed images every ``interval``
    seconds (70 % "same", merging when asked, else "different") until ``stop`` is set."""

    def __init__(self, client_factory, tally_factory, names: list[str], count: int,
                 interval: float, seed: int) -> None:  # fmt: skip
        self.client_factory, self.names = client_factory, names
        self.count, self.interval, self.seed = count, interval, seed
        self.tally = tally_factory()
        self.acknowledged = {f"labeller{k}": 0 for k in range(count)}
        self.conflicts = 0
        self.lock = threading.Lock()

    def loop(self, k: int, stop: threading.Event) -> None:
        client, rng, who = self.client_factory(), random.Random(self.seed + k), f"labeller{k}"
        while not stop.is_set():
            a, b = rng.sample(self.names, 2)
            op = "same" if rng.random() < 0.7 else "different"
            body = json.dumps({"op": op, "a": a, "b": b, "by": who, "merge": True})
            seconds, error, _ = client.request(
                "POST", "/api/labels", body, {"Content-Type": "application/json"}, expect=201
            )
            if error is not None and error.startswith("HTTP 409"):
                with self.lock:
                    self.conflicts += 1  # a contradiction the store refuses, as it should
            else:
                self.tally.add(seconds, error)
                if error is None:
                    with self.lock:
                        self.acknowledged[who] += 1
            time.sleep(self.interval)

    def threads(self, stop: threading.Event) -> list[threading.Thread]:
        return [threading.Thread(target=self.loop, args=(k, stop)) for k in range(self.count)]

    def result(self, wall: float, client) -> dict:
        """The tally, and what the server holds now against what it acknowledged."""
        _, error, data = client.request("GET", "/api/labels")
        held = json.loads(data)["by"] if error is None else {}
        lost = {who: n - held.get(who, 0) for who, n in self.acknowledged.items()}
        return {
            **self.tally.summary(wall),
            "labellers": self.count,
            "acknowledged": sum(self.acknowledged.values()),
            "conflicts": self.conflicts,
            "held": {who: held.get(who, 0) for who in self.acknowledged},
            "lost": sum(max(0, n) for n in lost.values()),
        }
