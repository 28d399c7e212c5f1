"""User metadata groups <-> common.Metadata bytes, checked against google.protobuf.

(betterproto drops a map entry whose key and value are both defaults; protobuf keeps
it, and so do we.)
"""

from __future__ import annotations

from types import ModuleType

from hypothesis import given, settings
from hypothesis import strategies as st

from pynumaflow._codec import fields
from pynumaflow._types.errors import CodecError

GROUPS = st.dictionaries(
    st.text(max_size=8),
    st.dictionaries(st.text(max_size=8), st.binary(max_size=16), max_size=4),
    max_size=4,
)


def metadata(pb2: ModuleType, user: dict, system: dict | None = None, previous: str = "") -> bytes:
    message = pb2.Metadata(previous_vertex=previous)
    for target, groups in ((message.user_metadata, user), (message.sys_metadata, system or {})):
        for group, values in groups.items():
            target[group].key_value.update(values)
    return message.SerializeToString(deterministic=True)  # type: ignore[no-any-return]


@given(groups=GROUPS)
def test_encoding_decodes_in_protobuf(
    stubs: dict[str, ModuleType], groups: dict[str, dict[str, bytes]]
) -> None:
    """What encode_user_metadata writes, protobuf reads as those user groups, and so do we."""
    pb2 = stubs["common_pb2"]
    parsed = pb2.Metadata.FromString(fields.encode_user_metadata(groups))
    assert {g: dict(kv.key_value) for g, kv in parsed.user_metadata.items()} == groups
    assert not parsed.sys_metadata
    assert fields.decode_metadata(fields.encode_user_metadata(groups)) == (groups, {})


@given(groups=GROUPS, previous=st.text(max_size=8), system=GROUPS)
def test_decoding_reads_user_and_system_groups(
    stubs: dict[str, ModuleType],
    groups: dict[str, dict[str, bytes]],
    previous: str,
    system: dict[str, dict[str, bytes]],
) -> None:
    """A Metadata decodes to its user and system groups; user_metadata_of's part to users'."""
    raw = metadata(stubs["common_pb2"], groups, system, previous)
    kept = fields.user_metadata_of(raw, 0, len(raw))
    assert fields.decode_metadata(kept) == (groups, {})
    assert fields.decode_metadata(raw) == (groups, system)


def _accepted(check: object, data: bytes, start: int, end: int) -> bool:
    try:
        check(data, start, end)  # type: ignore[operator]
    except CodecError:
        return False
    return True


@settings(max_examples=400, deadline=None)
@given(
    groups=GROUPS,
    system=GROUPS,
    previous=st.text(max_size=200),
    cut=st.integers(min_value=0),
    flip=st.integers(min_value=0),
    bit=st.integers(min_value=0, max_value=7),
    garbage=st.binary(max_size=40),
)
def test_a_request_metadata_is_refused_exactly_when_its_walk_refuses_it(
    stubs: dict[str, ModuleType],
    groups: dict[str, dict[str, bytes]],
    system: dict[str, dict[str, bytes]],
    previous: str,
    cut: int,
    flip: int,
    bit: int,
    garbage: bytes,
) -> None:
    """The quick check of a request's metadata refuses what user_metadata_of refuses."""
    raw = bytearray(metadata(stubs["common_pb2"], groups, system, previous))
    candidates = [bytes(raw), garbage]
    if raw:
        candidates.append(bytes(raw[: cut % len(raw)]))
        raw[flip % len(raw)] ^= 1 << bit
        candidates.append(bytes(raw))
    for data in candidates:
        framed = b"\x0a" + data + b"\x00\x01"  # a span inside a larger message
        for span in ((data, 0, len(data)), (framed, 1, 1 + len(data))):
            accepted = _accepted(fields._check_metadata, *span)
            assert accepted == _accepted(fields.user_metadata_of, *span), data
