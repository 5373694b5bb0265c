"""Iterative Kademlia lookup that keeps `alpha` calls in flight and never waits on a slow one.

A call that passes the soft timeout stops holding a slot (another candidate is asked in its place)
and no longer blocks the end of the lookup; its late answer is still used if it comes while the
lookup runs. Contacts that failed recently are skipped.
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kademlia.node import Node

from dht.protocol import Result, parse_nodes
from dht.validate import valid_records
from p2pmarket.wire.records import AnyRecord

if TYPE_CHECKING:
    from dht.protocol import MarketProtocol


class _State(enum.Enum):
    NEW = 0
    INFLIGHT = 1
    SLOW = 2
    DONE = 3
    FAILED = 4


@dataclass(slots=True)
class _Candidate:
    node: Node
    distance: int
    depth: int
    state: _State = _State.NEW
    sent: float = 0.0


@dataclass(slots=True)
class Answer:
    """What one node answered to a FIND_VALUE: its valid records and where its pages continue."""

    node: Node
    records: list[AnyRecord]
    next: int | None


@dataclass(slots=True)
class LookupResult:
    closest: list[Node]
    answers: list[Answer] = field(default_factory=list)
    without_value: list[Node] = field(default_factory=list)
    rounds: int = 0
    rpcs: int = 0
    invalid_values: int = 0


class Lookup:
    def __init__(self, protocol: MarketProtocol, target: bytes, seeds: list[Node], *,
                 ksize: int, alpha: int, want_values: bool = False, quorum: int = 3,
                 patient: bool = False) -> None:
        self.protocol = protocol
        self.target = Node(target)
        self.ksize, self.alpha = ksize, alpha
        self.want_values, self.quorum = want_values, quorum
        # a patient lookup (before a STORE) waits for slow calls instead of leaving them out
        self._settled = (_State.DONE,) if patient else (_State.DONE, _State.SLOW)
        self._candidates: dict[bytes, _Candidate] = {}
        self._result = LookupResult(closest=[])
        self._add(seeds, depth=1)
        if not self._candidates:  # every seed looks dead: better to try them than give up
            self._add(seeds, depth=1, skip_dead=False)

    def _add(self, nodes: list[Node], depth: int, skip_dead: bool = True) -> None:
        own = self.protocol.source_node.id
        for node in nodes:
            if node.id == own or node.id in self._candidates or (
                    skip_dead and self.protocol.is_dead(node)):
                continue
            self._candidates[node.id] = _Candidate(node, node.distance_to(self.target), depth)

    def _nearest(self) -> list[_Candidate]:
        """The k nearest candidates still worth asking or waiting for.

        A value lookup that found nothing among the k nearest looks one window further: a
        write made while some of the k nearest were unreachable landed just beyond them.
        """
        live = (c for c in self._candidates.values() if c.state is not _State.FAILED)
        window = self.ksize * 2 if self.want_values and not self._result.answers else self.ksize
        return sorted(live, key=lambda c: c.distance)[:window]

    def _finished(self) -> bool:
        if self.want_values and len(self._result.answers) >= self.quorum:
            return True
        # with no value yet, a slow call may still bring one: wait for it (up to its timeout)
        settled = (_State.DONE,) if self.want_values and not self._result.answers \
            else self._settled
        return all(c.state in settled for c in self._nearest())

    async def run(self) -> LookupResult:
        loop = asyncio.get_running_loop()
        method = "find_value" if self.want_values else "find_node"
        own = self.protocol.source_node.id
        inflight: dict[asyncio.Future[Result], _Candidate] = {}
        while not self._finished():
            active = sum(1 for c in inflight.values() if c.state is _State.INFLIGHT)
            for cand in self._nearest():
                if active >= self.alpha:
                    break
                if cand.state is _State.NEW:
                    future = self.protocol.call_node(cand.node, method, own, self.target.id)
                    cand.state, cand.sent = _State.INFLIGHT, loop.time()
                    inflight[future] = cand
                    self._result.rpcs += 1
                    active += 1
            if not inflight:
                break
            soft = self.protocol.rtt.soft_timeout()
            waiting = [c.sent + soft for c in inflight.values() if c.state is _State.INFLIGHT]
            timeout = max(0.0, min(waiting) - loop.time()) if waiting else None
            done, _ = await asyncio.wait(inflight, timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
            for future in done:
                self._absorb(inflight.pop(future), future.result())
            now = loop.time()
            for cand in inflight.values():
                if cand.state is _State.INFLIGHT and now - cand.sent >= soft:
                    cand.state = _State.SLOW
        done_nodes = [c for c in self._nearest() if c.state is _State.DONE]
        self._result.closest = [c.node for c in done_nodes]
        self._result.rounds = max((c.depth for c in done_nodes), default=0)
        return self._result

    def _absorb(self, cand: _Candidate, result: Result) -> None:
        ok, answer = result
        if not ok or (isinstance(answer, dict) and "error" in answer):
            cand.state = _State.FAILED
            return
        cand.state = _State.DONE
        if isinstance(answer, dict) and self.want_values:
            records, invalid = valid_records(self.target.id, answer.get("values"),
                                             now=self.protocol.clock())
            self._result.invalid_values += invalid
            nxt = answer.get("next")
            next_offset = nxt if isinstance(nxt, int) and nxt > 0 else None
            if records:
                self._result.answers.append(Answer(cand.node, records, next_offset))
            else:
                self._result.without_value.append(cand.node)
            self._add(parse_nodes(answer.get("nodes"), self.ksize), cand.depth + 1)
        else:
            if self.want_values:
                self._result.without_value.append(cand.node)
            self._add(parse_nodes(answer, self.ksize), cand.depth + 1)
