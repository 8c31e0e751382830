"""The coordinator's view of the partners: sending instructions and validating replies.

Replies are validated as a set: error replies are logged per partner in plain words, a
partner that refuses on policy grounds or fails is dropped from the rest of the run, and the
run stops with :class:`RunAborted` when fewer than ``min_partners`` remain.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from flwr.app import Message, RecordDict
from flwr.serverapp import Grid

from fedprofile.errors import FedprofileError, ProtocolError
from fedprofile.protocol import ErrorCode

__all__ = ["Federation", "RunAborted", "SecureAggregationDeclined", "group_reasons",
           "wait_for_nodes"]

log = logging.getLogger("fedprofile.server")
_MIN_POLL_SECONDS = 0.01
_MAX_POLL_SECONDS = 0.25
_POLL_FRACTION = 0.25
"""Replies are pulled again after a quarter of the time already waited (10 ms at least,
0.25 s at most): a reply is seen at most about 25 % later than it arrived, so a fast round
(simulation, a warm partner) waits milliseconds, a slow one asks the SuperLink a few times
per second."""
T = TypeVar("T")

_REASONS = {ErrorCode.POLICY_REFUSED: "refused by its privacy policy",
            ErrorCode.SECAGG_REFUSED: "its privacy policy demands partner noise",
            ErrorCode.CONTRACT_MISMATCH: "contract or configuration problem",
            ErrorCode.DATA_ERROR: "problem with its data",
            ErrorCode.PROTOCOL_ERROR: "malformed instruction",
            ErrorCode.INTERNAL: "internal error"}


def group_reasons(reasons: Mapping[str, str], *, total: int | None = None) -> str:
    """Partners' reasons with identical ones said once: ``all 5 partners: why``.

    Parameters
    ----------
    reasons : mapping of str to str
        Partner name -> reason.
    total : int, optional
        Partners in the run; when every one of them gave the same reason the text says
        "all N partners".
    """
    groups: dict[str, list[str]] = {}
    for name, why in reasons.items():
        groups.setdefault(why, []).append(name)
    parts = []
    for why, names in groups.items():
        if len(names) == 1:
            who = names[0]
        elif total is not None and len(names) == total:
            who = f"all {total} partners"
        else:
            who = f"{len(names)} partners ({', '.join(names)})"
        parts.append(f"{who}: {why}")
    return "; ".join(parts)


class RunAborted(FedprofileError):
    """The run cannot go on (too few partners left); the message says who and why."""


class SecureAggregationDeclined(RunAborted):
    """Partners whose policy demands partner noise refused the announced secure aggregation.

    Raised when the run was announced, before any release: a run whose placement was chosen
    by ``noise = "auto"`` is planned again with partner noise.
    """


def wait_for_nodes(grid: Grid, *, expected: int, timeout: float) -> list[int]:
    """Node ids once ``expected`` nodes are connected, or all connected at ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= expected or time.monotonic() >= deadline:
            return nodes
        time.sleep(0.5)


@dataclass
class Federation:
    """The partners of one run and how to reach them.

    Parameters
    ----------
    grid : Grid
        Flower's grid.
    node_ids : list of int
        Nodes taking part.
    min_partners : int
        Fewest partners the run may continue with.
    timeout : float
        Seconds to wait for one round of replies.
    """

    grid: Grid
    node_ids: list[int]
    min_partners: int
    timeout: float
    names: dict[int, str] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)
    error_codes: dict[str, int] = field(default_factory=dict)
    """The error code of each partner that left with an error reply."""

    def name(self, node_id: int) -> str:
        """Partner name of a node (its node id until it has introduced itself)."""
        return self.names.get(node_id, f"node {node_id}")

    def _drop(self, node_id: int, why: str, left: dict[str, str] | None = None) -> None:
        name = self.name(node_id)
        self.dropped[name] = why
        self.node_ids = [n for n in self.node_ids if n != node_id]
        if left is None:
            log.warning("Partner %s leaves the run: %s", name, why)
        else:
            left[name] = why

    def broadcast(self, message_type: str, content: RecordDict,
                  decode: Callable[[RecordDict], T]) -> dict[int, T]:
        """Send one instruction to every partner; return the valid decoded replies by node."""
        return self.send(message_type, {node: content for node in self.node_ids}, decode)

    def send(self, message_type: str, contents: Mapping[int, RecordDict],
             decode: Callable[[RecordDict], T], *, others_stay: bool = False
             ) -> dict[int, T]:
        """Send each partner in ``contents`` its own instruction; as :meth:`broadcast`.

        A partner of the run left out of ``contents`` leaves the run, unless ``others_stay``
        (a step that needs only some partners' answers).
        """
        for node in [n for n in self.node_ids if n not in contents and not others_stay]:
            self._drop(node, f"was left out of {message_type}")
        targets = [n for n in self.node_ids if n in contents]
        messages = [Message(content=contents[node].copy(),
                            message_type=message_type, dst_node_id=node)
                    for node in targets]
        sent = dict(zip(self.grid.push_messages(messages), targets, strict=True))
        replies = self._collect(set(sent))
        by_node: dict[int, T] = {}
        answered = set()
        left: dict[str, str] = {}
        for reply in replies:
            # error replies made by the SuperLink (a node that went away) carry its own id
            # as source: the message they answer says which partner it was
            node = sent.get(reply.metadata.reply_to_message_id, reply.metadata.src_node_id)
            answered.add(node)
            if reply.has_error():
                code = reply.error.code
                self.error_codes[self.name(node)] = code
                self._drop(node, f"{_REASONS.get(code, 'error')} - {reply.error.reason}", left)
                continue
            try:
                by_node[node] = decode(reply.content)
            except ProtocolError as exc:
                self._drop(node, f"sent a malformed reply ({exc})", left)
        for node in [n for n in targets if n not in answered and n in self.node_ids]:
            self._drop(node, f"did not answer {message_type} within {self.timeout:g} s", left)
        if left:
            log.warning("Leaving the run at %s: %s", message_type,
                        group_reasons(left, total=len(sent)))
        self.check_quorum(message_type)
        return by_node

    def _collect(self, pending: set[str]) -> list[Message]:
        """Pull replies until every message is answered or the round's timeout passes.

        Each message is pulled on its own, so one partner's broken upload (a node killed
        while sending) cannot hold back the others' replies.
        """
        start = time.monotonic()
        deadline = start + self.timeout
        replies: list[Message] = []
        while pending and (now := time.monotonic()) < deadline:
            for message_id in sorted(pending):
                batch = list(self.grid.pull_messages([message_id]))
                replies.extend(batch)
                pending.difference_update(r.metadata.reply_to_message_id for r in batch)
            if pending:
                wait = min(max((now - start) * _POLL_FRACTION, _MIN_POLL_SECONDS),
                           _MAX_POLL_SECONDS)
                time.sleep(min(wait, max(deadline - time.monotonic(), 0.0)))
        return replies

    def check_quorum(self, message_type: str) -> None:
        """Raise :class:`RunAborted` if fewer than ``min_partners`` partners remain."""
        if len(self.node_ids) >= self.min_partners:
            return
        total = len(self.node_ids) + len(self.dropped)
        details = group_reasons(self.dropped, total=total)
        raise RunAborted(f"The run stopped at {message_type}: {len(self.node_ids)} partner(s) "
                         f"left, fewer than the minimum of {self.min_partners}. {details}")

    def summary(self) -> dict[str, Any]:
        """Who took part and who left, for the model and the report."""
        return {"partners": [self.name(n) for n in self.node_ids], "dropped": dict(self.dropped)}
