"""Tests for the server-client protocol: payload round trips and boundary validation."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, RecordDict

from fedprofile import protocol
from fedprofile.contract.lookalike import SeedAudience
from fedprofile.errors import ProtocolError
from fedprofile.privacy.events import GaussianEvent, NonPrivateEvent, PrivacyEvent
from fedprofile.protocol import (
    PROTOCOL_VERSION,
    ErrorCode,
    GradientReply,
    GradientRequest,
    GramReply,
    GramRequest,
    KMeansReply,
    KMeansRequest,
    LookalikeReply,
    LookalikeRequest,
    MessageKind,
    ProfileReply,
    ProfileRequest,
    ResponseTask,
    ScoreReply,
    ScoreRequest,
)

ROOT = Path(__file__).resolve().parents[2]

EVENTS: tuple[PrivacyEvent, ...] = (
    GaussianEvent(noise_multiplier=2.5, sensitivity=2.449, stage="kmeans-init", round=0,
                  component="sums"),
    GaussianEvent(noise_multiplier=4.0, sensitivity=1.0, stage="kmeans-init", round=0,
                  component="counts"),
    NonPrivateEvent(sensitivity=1.0, stage="kmeans", round=1, component="counts"),
)

TASK = ResponseTask(run_id="0123abcd", spec_fingerprint="f" * 64, stage="ridge", round=0,
                    target="balance", holdout=0.2, holdout_seed=7,
                    segment_centers=np.zeros((0,)))

SAMPLES: dict[str, Any] = {
    "profile-request": ProfileRequest(
        run_id="0123abcd", spec_fingerprint="f" * 64, epsilon_target=1.0, delta=1e-6,
        stages=("kmeans",), planned_events=EVENTS, min_segment_size=50),
    "profile-request-non-private": ProfileRequest(
        run_id="r", spec_fingerprint="f", epsilon_target=math.inf, delta=1e-6, stages=(),
        planned_events=(), min_segment_size=0),
    "profile-reply": ProfileReply(
        partner="bank-a", spec_fingerprint="f" * 64, key_id="k-0123456789ab",
        max_epsilon_per_run=1.0, epsilon_remaining=3.25),
    "profile-reply-unlimited": ProfileReply(
        partner="sim", spec_fingerprint="f", key_id="", max_epsilon_per_run=math.inf,
        epsilon_remaining=math.inf),
    "kmeans-request": KMeansRequest(
        run_id="0123abcd", spec_fingerprint="f" * 64, stage="kmeans", round=2,
        centers=np.array([[0.1, -0.2, 1.0], [0.5, 0.25, 0.0]]), sum_noise_multiplier=3.5,
        count_noise_multiplier=7.0),
    "kmeans-request-non-private": KMeansRequest(
        run_id="r", spec_fingerprint="f", stage="kmeans-init", round=0,
        centers=np.zeros((1, 4)), sum_noise_multiplier=0.0, count_noise_multiplier=0.0),
    "kmeans-reply": KMeansReply(
        sums=np.array([[10.5, -3.0, 2.0], [-1.25, 0.0, 7.0]]), counts=np.array([12.3, -0.7]),
        events=EVENTS[:2]),
    "gram-request": GramRequest(task=TASK, gram_noise_multiplier=4.0,
                                target_noise_multiplier=5.0, with_target=True),
    "gram-request-segment-aware": GramRequest(
        task=dataclasses.replace(TASK, segment_centers=np.ones((3, 4))),
        gram_noise_multiplier=0.0, target_noise_multiplier=0.0, with_target=False),
    "gram-reply": GramReply(gram_upper=np.arange(6.0), xty=np.array([1.0, -2.0, 0.5]),
                            events=EVENTS[:2]),
    "gradient-request": GradientRequest(task=TASK, theta=np.array([0.1, -0.3, 2.0]), clip=1.5,
                                        noise_multiplier=9.0),
    "gradient-reply": GradientReply(gradient=np.array([3.0, -1.0, 0.25]), events=EVENTS[:1]),
    "score-request": ScoreRequest(run_id="r", spec_fingerprint="f" * 64,
                                  segment_model='{"format": "x"}', response_model=""),
    "score-reply": ScoreReply(),
    "gram-request-lookalike": GramRequest(
        task=dataclasses.replace(TASK, stage="lookalike", target="",
                                 seed=SeedAudience(partner="bank-a", expr='y == "yes"')),
        gram_noise_multiplier=4.0, target_noise_multiplier=0.0, with_target=False),
    "lookalike-request": LookalikeRequest(
        run_id="r", spec_fingerprint="f" * 64, model='{"format": "x"}',
        seed=SeedAudience(partner="bank-a", file=True), size=100, threshold=0.5),
    "lookalike-reply": LookalikeReply(),
}


def _decode(payload: Any) -> Callable[[RecordDict], Any]:
    return type(payload).from_record


def _assert_same_payload(a: Any, b: Any) -> None:
    assert type(a) is type(b)
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray):
            assert isinstance(y, np.ndarray)
            assert x.shape == y.shape
            np.testing.assert_array_equal(x, y)
        elif dataclasses.is_dataclass(x):
            _assert_same_payload(x, y)
        else:
            assert x == y, f.name


def _config_keys(payload: Any) -> list[str]:
    return list(payload.to_record()["config"].keys())


# --- round trips -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SAMPLES), ids=list(SAMPLES))
def test_payload_round_trips_through_its_record(name: str) -> None:
    # Prepare
    payload = SAMPLES[name]

    # Execute
    back = _decode(payload)(payload.to_record())

    # Assert
    _assert_same_payload(payload, back)


def test_every_payload_class_of_the_protocol_has_a_round_trip_sample() -> None:
    # Prepare
    payload_classes = {cls for _, cls in inspect.getmembers(protocol, inspect.isclass)
                       if cls.__module__.startswith(protocol.__name__)
                       and hasattr(cls, "to_record") and hasattr(cls, "from_record")}

    # Execute
    sampled = {type(p) for p in SAMPLES.values()}

    # Assert
    assert payload_classes == sampled


def test_round_trip_keeps_event_types_and_values() -> None:
    # Prepare
    payload = SAMPLES["profile-request"]

    # Execute
    back = ProfileRequest.from_record(payload.to_record())

    # Assert
    assert [type(e) for e in back.planned_events] == [GaussianEvent, GaussianEvent,
                                                      NonPrivateEvent]
    assert back.planned_events[0].mu == 0.4
    assert back.planned_events[2].mu == math.inf


def test_reply_decodes_with_the_expected_shape() -> None:
    # Prepare
    payload = SAMPLES["kmeans-reply"]

    # Execute
    back = KMeansReply.from_record(payload.to_record(), shape=(2, 3))

    # Assert
    _assert_same_payload(payload, back)


def test_records_carry_the_protocol_version() -> None:
    # Execute / Assert
    for payload in SAMPLES.values():
        assert payload.to_record()["config"]["protocol-version"] == PROTOCOL_VERSION


def test_request_payloads_declare_their_message_type() -> None:
    # Execute / Assert
    assert ProfileRequest.message_type == MessageKind.PROFILE == "query.profile"
    assert KMeansRequest.message_type == MessageKind.KMEANS == "train.kmeans"


# --- malformed records -----------------------------------------------------------------------

_MISSING_KEYS = [(name, key) for name in SAMPLES if not name.endswith(("-private", "-unlimited"))
                 for key in _config_keys(SAMPLES[name]) if key != "protocol-version"]


@pytest.mark.parametrize(("name", "key"), _MISSING_KEYS,
                         ids=[f"{n}:{k}" for n, k in _MISSING_KEYS])
def test_missing_config_key_raises_protocol_error_naming_it(name: str, key: str) -> None:
    # Prepare
    record = SAMPLES[name].to_record()
    del record["config"][key]

    # Execute / Assert
    with pytest.raises(ProtocolError, match=f"missing field '{key}'"):
        _decode(SAMPLES[name])(record)


_WRONG_TYPES = [
    ("profile-request", "run-id", 12),
    ("profile-request", "spec-fingerprint", b"ff"),
    ("profile-request", "epsilon-target", "1.0"),
    ("profile-request", "epsilon-target", True),
    ("profile-request", "stages", "kmeans"),
    ("profile-request", "planned-events", ["[]"]),
    ("profile-request", "min-segment-size", 50.0),
    ("profile-request", "min-segment-size", False),
    ("profile-reply", "partner", 1),
    ("profile-reply", "key-id", 0.5),
    ("profile-reply", "epsilon-remaining", "lots"),
    ("kmeans-request", "stage", 3),
    ("kmeans-request", "round", "2"),
    ("kmeans-request", "round", 2.0),
    ("kmeans-request", "round", True),
    ("kmeans-request", "sum-noise-multiplier", "3.5"),
    ("kmeans-reply", "events", 7),
]


@pytest.mark.parametrize(("name", "key", "value"), _WRONG_TYPES,
                         ids=[f"{n}:{k}:{type(v).__name__}" for n, k, v in _WRONG_TYPES])
def test_wrong_type_raises_protocol_error_naming_the_field(name: str, key: str,
                                                           value: Any) -> None:
    # Prepare
    record = SAMPLES[name].to_record()
    record["config"][key] = value

    # Execute / Assert
    with pytest.raises(ProtocolError, match=f"field '{key}' must be"):
        _decode(SAMPLES[name])(record)


@pytest.mark.parametrize(("name", "key", "value"), [
    ("profile-request", "delta", -1e-6),
    ("profile-request", "delta", math.inf),
    ("profile-request", "delta", math.nan),
    ("profile-request", "epsilon-target", -math.inf),
    ("profile-request", "epsilon-target", -1.0),
    ("profile-reply", "max-epsilon-per-run", math.nan),
    ("kmeans-request", "sum-noise-multiplier", -1.0),
    ("kmeans-request", "count-noise-multiplier", math.inf),
    ("kmeans-request", "count-noise-multiplier", math.nan),
], ids=["delta-negative", "delta-inf", "delta-nan", "epsilon-minus-inf", "epsilon-negative",
        "max-epsilon-nan", "sum-multiplier-negative", "count-multiplier-inf",
        "count-multiplier-nan"])
def test_invalid_number_raises_protocol_error_naming_the_field(name: str, key: str,
                                                               value: float) -> None:
    # Prepare
    record = SAMPLES[name].to_record()
    record["config"][key] = value

    # Execute / Assert
    with pytest.raises(ProtocolError, match=f"field '{key}' must be a non-negative finite"):
        _decode(SAMPLES[name])(record)


@pytest.mark.parametrize(("name", "array"), [
    ("kmeans-request", "centers"), ("kmeans-reply", "sums"), ("kmeans-reply", "counts")],
    ids=["centers", "sums", "counts"])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
def test_non_finite_array_raises_protocol_error_naming_it(name: str, array: str,
                                                          bad: float) -> None:
    # Prepare
    record = SAMPLES[name].to_record()
    values = record["arrays"][array].numpy().copy()
    values.flat[-1] = bad
    record["arrays"][array] = Array(values)

    # Execute / Assert
    with pytest.raises(ProtocolError, match=f"array '{array}' holds non-finite values"):
        _decode(SAMPLES[name])(record)


@pytest.mark.parametrize(("name", "array"), [
    ("kmeans-request", "centers"), ("kmeans-reply", "sums"), ("kmeans-reply", "counts")],
    ids=["centers", "sums", "counts"])
def test_missing_array_raises_protocol_error_naming_it(name: str, array: str) -> None:
    # Prepare
    record = SAMPLES[name].to_record()
    del record["arrays"][array]

    # Execute / Assert
    with pytest.raises(ProtocolError, match=f"missing array '{array}'"):
        _decode(SAMPLES[name])(record)


@pytest.mark.parametrize("name", ["kmeans-request", "kmeans-reply"])
def test_missing_array_record_raises_protocol_error(name: str) -> None:
    # Prepare
    record = SAMPLES[name].to_record()
    del record["arrays"]

    # Execute / Assert
    with pytest.raises(ProtocolError, match="no 'arrays' ArrayRecord"):
        _decode(SAMPLES[name])(record)


@pytest.mark.parametrize("centers", [np.zeros(3), np.zeros((0, 3)), np.zeros((2, 3, 1))],
                         ids=["one-d", "no-rows", "three-d"])
def test_centers_must_be_a_non_empty_matrix(centers: np.ndarray) -> None:
    # Prepare
    record = SAMPLES["kmeans-request"].to_record()
    record["arrays"]["centers"] = Array(centers)

    # Execute / Assert
    with pytest.raises(ProtocolError, match="'centers' must be a non-empty 2-D array"):
        KMeansRequest.from_record(record)


@pytest.mark.parametrize("centers", [np.zeros(()), np.zeros(3), np.zeros((2, 3, 1))],
                         ids=["scalar", "one-d", "three-d"])
@pytest.mark.parametrize("name", ["gram-request", "gradient-request"])
def test_segment_centers_must_be_empty_or_a_matrix(name: str, centers: np.ndarray) -> None:
    # Prepare
    record = SAMPLES[name].to_record()
    record["arrays"]["segment-centers"] = Array(centers)

    # Execute / Assert
    with pytest.raises(ProtocolError, match="'segment-centers' must be empty or a k x d"):
        _decode(SAMPLES[name])(record)


@pytest.mark.parametrize("version", [PROTOCOL_VERSION + 1, PROTOCOL_VERSION - 1,
                                     str(PROTOCOL_VERSION), None],
                         ids=["next", "previous", "string", "absent"])
@pytest.mark.parametrize("name", ["profile-request", "profile-reply", "kmeans-request",
                                  "kmeans-reply"])
def test_wrong_protocol_version_is_refused(name: str, version: Any) -> None:
    # Prepare
    record = SAMPLES[name].to_record()
    if version is None:
        del record["config"]["protocol-version"]
    else:
        record["config"]["protocol-version"] = version

    # Execute / Assert
    with pytest.raises(ProtocolError, match=f"protocol version {version!r} is not supported"):
        _decode(SAMPLES[name])(record)


@pytest.mark.parametrize("name", ["profile-request", "kmeans-reply"])
def test_missing_or_mistyped_config_record_is_refused(name: str) -> None:
    # Prepare
    without = SAMPLES[name].to_record()
    del without["config"]
    mistyped = SAMPLES[name].to_record()
    mistyped["config"] = ArrayRecord({"x": Array(np.zeros(1))})

    # Execute / Assert
    with pytest.raises(ProtocolError, match="no 'config' record"):
        _decode(SAMPLES[name])(without)
    with pytest.raises(ProtocolError, match="'config' must be a ConfigRecord"):
        _decode(SAMPLES[name])(mistyped)


@pytest.mark.parametrize(("sums", "counts", "shape"), [
    (np.zeros((3, 2)), np.zeros(3), (2, 3)),
    (np.zeros((2, 3)), np.zeros(3), (2, 3)),
    (np.zeros((2, 3)), np.zeros((2, 1)), (2, 3)),
    (np.zeros(6), np.zeros(2), (2, 3)),
], ids=["sums-transposed", "counts-too-long", "counts-two-d", "sums-flat"])
def test_reply_of_the_wrong_shape_is_refused(sums: np.ndarray, counts: np.ndarray,
                                             shape: tuple[int, int]) -> None:
    # Prepare
    record = KMeansReply(sums=sums, counts=counts, events=()).to_record()

    # Execute / Assert
    with pytest.raises(ProtocolError, match=r"expected sums of shape \(2, 3\)"):
        KMeansReply.from_record(record, shape=shape)


_BAD_EVENTS = [
    "not json",
    "5",
    "{}",
    '""',
    "[null]",
    "[{}]",
    json.dumps([{"mechanism": "laplace", "sensitivity": 1, "stage": "s", "round": 0,
                 "component": "c"}]),
    json.dumps([{"mechanism": "gaussian", "noise_multiplier": 0.0, "sensitivity": 1,
                 "stage": "s", "round": 0, "component": "c"}]),
    json.dumps([{"mechanism": "gaussian", "noise_multiplier": "inf", "sensitivity": 1,
                 "stage": "s", "round": 0, "component": "c"}]),
    json.dumps([{"mechanism": "gaussian", "noise_multiplier": 2.0, "sensitivity": "big",
                 "stage": "s", "round": 0, "component": "c"}]),
]
_BAD_EVENT_IDS = ["not-json", "number", "empty-object", "empty-string", "null-item", "empty-item",
                  "unknown-mechanism", "zero-multiplier", "infinite-multiplier", "text-sensitivity"]


@pytest.mark.parametrize("text", _BAD_EVENTS, ids=_BAD_EVENT_IDS)
@pytest.mark.parametrize(("name", "key"), [("kmeans-reply", "events"),
                                           ("profile-request", "planned-events")],
                         ids=["reply-events", "planned-events"])
def test_bad_events_json_raises_protocol_error(name: str, key: str, text: str) -> None:
    # Prepare
    record = SAMPLES[name].to_record()
    record["config"][key] = text

    # Execute / Assert
    with pytest.raises(ProtocolError, match="field 'events' is not a valid event list"):
        _decode(SAMPLES[name])(record)


@pytest.mark.parametrize("namespace", [MessageKind, ErrorCode], ids=["MessageKind", "ErrorCode"])
def test_namespaces_of_constants_cannot_be_instantiated(namespace: type) -> None:
    # Execute / Assert
    with pytest.raises(TypeError, match="cannot be instantiated"):
        namespace()


def test_error_codes_are_distinct() -> None:
    # Prepare
    codes = [v for k, v in vars(ErrorCode).items() if k.isupper()]

    # Execute / Assert
    assert len(codes) == len(set(codes)) == 6
    assert all(isinstance(c, int) for c in codes)


# --- record keys live in the protocol module only --------------------------------------------


def _protocol_record_keys() -> set[str]:
    """Record names and keys spelled in fedprofile/protocol/ (found in its syntax trees)."""
    keys: set[str] = set()
    nodes = [node for path in sorted((ROOT / "fedprofile" / "protocol").glob("*.py"))
             for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))]
    for node in nodes:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) \
                and isinstance(node.value.value, str) \
                and any(isinstance(t, ast.Name) and t.id.startswith("_") and t.id.isupper()
                        for t in node.targets):
            keys.add(node.value.value)
        elif isinstance(node, ast.Dict):
            keys.update(k.value for k in node.keys
                        if isinstance(k, ast.Constant) and isinstance(k.value, str))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                and node.func.id in ("_get", "_float", "_array") and len(node.args) > 1 \
                and isinstance(node.args[1], ast.Constant):
            keys.add(node.args[1].value)
    return keys


# Words that are record keys *and* ordinary fields of the model/ledger JSON documents that the
# server writes (e.g. ``model.privacy["delta"]``, history ``{"stage": ..., "round": ...}``).
# words that are also ordinary fields of model JSON documents (params, privacy records)
_SHARED_WORDS = {"delta", "stage", "round", "target", "holdout", "clip", "theta", "gradient"}


def _key_uses(source: str, label: str, dashed: set[str], words: set[str]) -> list[str]:
    """Places in ``source`` where a protocol record key is spelled as a string literal."""
    tree = ast.parse(source, filename=label)
    found: list[str] = []

    def flag(node: ast.AST, how: str) -> None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and node.value in words:
            found.append(f"{label}:{node.lineno}: {node.value!r} ({how})")

    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and node.value in dashed:
            found.append(f"{label}:{node.lineno}: {node.value!r}")
        elif isinstance(node, ast.Subscript):
            flag(node.slice, "subscript")
        elif isinstance(node, ast.Dict):
            for key in node.keys:
                if key is not None:
                    flag(key, "dict key")
        elif isinstance(node, ast.Compare) and any(isinstance(op, ast.In | ast.NotIn)
                                                   for op in node.ops):
            flag(node.left, "membership test")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr in ("get", "pop", "setdefault") and node.args:
            flag(node.args[0], f".{node.func.attr}()")
    return found


def test_protocol_key_extraction_finds_the_known_keys() -> None:
    # Execute
    keys = _protocol_record_keys()

    # Assert
    assert {"protocol-version", "run-id", "spec-fingerprint", "planned-events",
            "sum-noise-multiplier", "count-noise-multiplier", "sums", "counts", "centers",
            "events", "arrays", "config"} <= keys


def test_no_record_key_is_spelled_in_client_or_server_sources() -> None:
    # Prepare
    keys = _protocol_record_keys()
    dashed = {k for k in keys if "-" in k}
    words = keys - dashed - _SHARED_WORDS
    sources = sorted([*(ROOT / "client").glob("*.py"), *(ROOT / "server").glob("*.py")])

    # Execute
    uses = [use for path in sources
            for use in _key_uses(path.read_text(encoding="utf-8"),
                                 str(path.relative_to(ROOT)), dashed, words)]

    # Assert
    assert sources
    assert uses == []


def test_key_scanner_flags_hand_built_records_but_not_component_names() -> None:
    # Prepare
    source = (
        "def handler(content, reply, mech):\n"
        "    run = content['config']['run-id']\n"
        "    sums = content['arrays'].get('sums')\n"
        "    ok = 'counts' in reply\n"
        "    mech.event(component='sums')\n"
        "    return {'events': run, 'note': 'counts'}\n")

    # Execute
    uses = _key_uses(source, "fake.py", {"run-id"},
                     {"config", "arrays", "sums", "counts", "events"})

    # Assert
    assert sorted(uses) == sorted([
        "fake.py:2: 'config' (subscript)", "fake.py:2: 'run-id'",
        "fake.py:3: 'arrays' (subscript)", "fake.py:3: 'sums' (.get())",
        "fake.py:4: 'counts' (membership test)", "fake.py:6: 'events' (dict key)"])
