"""Wire audit: a ClientApp mod that writes every outgoing message's serialized bytes.

An auditor can then inspect exactly what left the partner: the files hold the protobuf
bytes Flower sends (``flwr.common.serde.message_to_proto``), content and metadata alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from flwr.app import Context, Message
from flwr.common.serde import message_to_proto

from fedprofile.client.site import resolve_node_config
from fedprofile.errors import ContractError

__all__ = ["make_capture_mod", "serialize_message"]

CallNext = Callable[[Message, Context], Message]


def serialize_message(message: Message) -> bytes:
    """The exact protobuf bytes of ``message``."""
    return message_to_proto(message).SerializeToString()


def make_capture_mod(defaults: Mapping[int, Mapping[str, Any]] | None = None
                     ) -> Callable[[Message, Context, CallNext], Message]:
    """A mod writing each reply to the node's ``capture-dir`` (when set) before it is sent."""

    def capture_mod(msg: Message, context: Context, call_next: CallNext) -> Message:
        reply = call_next(msg, context)
        try:
            folder = resolve_node_config(context.node_config, defaults,
                                         context.run_config).capture_dir
        except ContractError:  # an unusable config was refused in the reply; still capture it
            raw = context.node_config
            folder = str(raw.get("capture-dir") or raw.get("capture_dir") or "")
        if folder:
            out = Path(folder)
            out.mkdir(parents=True, exist_ok=True)
            kind = (msg.metadata.message_type or "message").replace(".", "-")
            name = f"{time.time_ns()}-{kind}-{'error' if reply.has_error() else 'reply'}.bin"
            (out / name).write_bytes(serialize_message(reply))
        return reply

    return capture_mod
