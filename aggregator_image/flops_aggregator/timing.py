"""Where a round's time goes, exchange by exchange.

An exchange is one configure → push → replies → aggregate cycle (a round has a train and an evaluate exchange,
or, with fused evaluation, one; the last round then adds the final evaluate). Its wall time runs from the
strategy's configure call to the end of its aggregation, plus the bookkeeping (best model, MLflow) done in it.
The work in it is the slowest learner's evaluate + fit time, as that learner measured it; the rest is overhead.

The phases follow the learner whose reply came last (it decided when the exchange could end):
    configure    sampling learners, building the messages
    delivery     push → that learner's ClientApp process exists (upload, SuperNode pull, task dispatch, fork/exec)
    start        process exists → the ClientApp's handler runs (imports, Flower's runtime, app loading)
    setup        the handler's time outside evaluate and fit: task, data, lazy imports of training, model,
                 received weights, building the reply
    work         evaluate + fit
    reply        reply built → the ServerApp pulled it (push to the SuperNode, to the SuperLink, our poll)
    aggregation  the strategy's aggregation after the last reply
    bookkeeping  keeping the best model and logging the round to MLflow
Learner timestamps are the learner's clock: the phases across them are only exact on one host (the benchmark);
the overhead itself uses durations only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from flwr.app import Message

from flops_learner import contract as keys

PHASES = ("configure", "delivery", "start", "setup", "work", "reply", "aggregation", "bookkeeping")


@dataclass(frozen=True)
class LearnerTiming:
    started_at: float
    entered_at: float
    replied_at: float
    evaluate: float
    fit: float
    received_at: float
    """When the ServerApp pulled the reply (the ServerApp's clock)."""

    @property
    def work(self) -> float:
        return self.evaluate + self.fit

    @classmethod
    def of(cls, reply: Message, received_at: float | None) -> LearnerTiming | None:
        """From a reply's timing record; None for an error reply or one without it."""
        if reply.has_error() or keys.TIMING_RECORD not in reply.content or received_at is None:
            return None
        t = reply.content[keys.TIMING_RECORD]
        return cls(float(t[keys.STARTED_AT]), float(t[keys.ENTERED_AT]), float(t[keys.REPLIED_AT]),
                   float(t[keys.EVALUATE_SECONDS]), float(t[keys.FIT_SECONDS]),
                   received_at)


@dataclass
class Exchange:
    kind: str
    round: int
    started_at: float = field(default_factory=time.time)
    pushed_at: float | None = None
    learners: list[LearnerTiming] = field(default_factory=list)
    aggregated_at: float | None = None
    bookkeeping: float = 0.0

    def wall(self) -> float:
        end = self.aggregated_at if self.aggregated_at is not None else time.time()
        return end - self.started_at + self.bookkeeping

    def work(self) -> float:
        return max((t.work for t in self.learners), default=0.0)

    def phases(self) -> dict[str, float]:
        aggregated = self.aggregated_at if self.aggregated_at is not None else time.time()
        pushed = self.pushed_at if self.pushed_at is not None else self.started_at
        out = dict.fromkeys(PHASES, 0.0)
        out.update(configure=pushed - self.started_at, bookkeeping=self.bookkeeping)
        if not self.learners:
            out["aggregation"] = aggregated - pushed
            return out
        last = max(self.learners, key=lambda t: (t.received_at, t.replied_at))
        out.update(delivery=last.started_at - pushed, start=last.entered_at - last.started_at,
                   # The handler's time outside evaluate/fit (reading weights, building the reply) counts as setup.
                   setup=last.replied_at - last.entered_at - last.work, work=last.work,
                   reply=last.received_at - last.replied_at, aggregation=aggregated - last.received_at)
        return out

    def to_json(self) -> dict:
        return {"kind": self.kind, "round": self.round, "wall": self.wall(), "work": self.work(),
                "learners": len(self.learners), "phases": self.phases()}


@dataclass
class RoundTiming:
    """The exchanges that make up one round."""

    exchanges: list[Exchange] = field(default_factory=list)

    def wall(self) -> float:
        return sum(e.wall() for e in self.exchanges)

    def work(self) -> float:
        return sum(e.work() for e in self.exchanges)

    def overhead(self) -> float:
        return self.wall() - self.work()

    def phases(self) -> dict[str, float]:
        out = dict.fromkeys(PHASES, 0.0)
        for exchange in self.exchanges:
            for name, seconds in exchange.phases().items():
                out[name] += seconds
        return out

    def to_json(self) -> dict:
        return {"wall": self.wall(), "work": self.work(), "overhead": self.overhead(), "phases": self.phases(),
                "exchanges": [e.to_json() for e in self.exchanges]}
