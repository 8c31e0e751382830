"""The coordinator's sending and collecting of one step, over a stand-in of Flower's grid."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flwr.app import ConfigRecord, RecordDict

from fedprofile.server.federation import Federation


@dataclass
class _Reply:
    """What the federation reads of a reply: whom it answers, from where, and its content."""

    reply_to: str
    content: RecordDict
    src: int

    @property
    def metadata(self) -> Any:
        return type("Metadata", (), {"reply_to_message_id": self.reply_to,
                                     "src_node_id": self.src})()

    def has_error(self) -> bool:
        return False


@dataclass
class _Grid:
    """Answers each message after ``delay[node]`` pulls; a node in ``silent`` never answers."""

    delay: dict[int, int] = field(default_factory=dict)
    silent: set[int] = field(default_factory=set)
    pushed: dict[str, Any] = field(default_factory=dict)
    pulls: dict[str, int] = field(default_factory=dict)

    def push_messages(self, messages: list[Any]) -> list[str]:
        ids = [f"m{len(self.pushed) + i}" for i in range(len(messages))]
        self.pushed.update(zip(ids, messages, strict=True))
        return ids

    def pull_messages(self, ids: list[str]) -> list[_Reply]:
        out = []
        for message_id in ids:
            node = self.pushed[message_id].metadata.dst_node_id
            self.pulls[message_id] = self.pulls.get(message_id, 0) + 1
            if node not in self.silent and self.pulls[message_id] > self.delay.get(node, 0):
                out.append(_Reply(message_id, RecordDict({"r": ConfigRecord({"node": node})}),
                                  node))
        return out


def _federation(grid: _Grid) -> Federation:
    return Federation(grid=grid, node_ids=[1, 2, 3], min_partners=1,  # type: ignore[arg-type]
                      timeout=0.3, names={1: "p1", 2: "p2", 3: "p3"})


def _node(content: RecordDict) -> int:
    return int(content["r"]["node"])  # type: ignore[index, call-overload]


def test_replies_that_come_late_are_collected_and_a_silent_partner_leaves(
        server_task: None) -> None:
    grid = _Grid(delay={1: 3}, silent={2})
    fed = _federation(grid)

    got = fed.broadcast("query.x", RecordDict(), _node)

    assert got == {1: 1, 3: 3}
    assert fed.node_ids == [1, 3]
    assert fed.dropped == {"p2": "did not answer query.x within 0.3 s"}


def test_a_partner_left_out_of_a_step_leaves_the_run(server_task: None) -> None:
    fed = _federation(_Grid())

    got = fed.send("query.x", {1: RecordDict(), 2: RecordDict()}, _node)

    assert got == {1: 1, 2: 2}
    assert fed.dropped == {"p3": "was left out of query.x"}


def test_a_step_for_some_partners_keeps_the_others(server_task: None) -> None:
    fed = _federation(_Grid(silent={2}))

    got = fed.send("query.x", {1: RecordDict(), 2: RecordDict()}, _node, others_stay=True)

    assert got == {1: 1}
    assert fed.node_ids == [1, 3]
    assert fed.dropped == {"p2": "did not answer query.x within 0.3 s"}
