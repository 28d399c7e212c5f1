"""NACK: a result asking the platform to redeliver its input later (Numaflow >= 1.8.2).

A map result carries the reserved tag :data:`NACK` and, optionally, :class:`NackOptions`;
a sink result carries the status NACK and the options. Older platforms cannot honour
it (they read the tag as an ordinary tag and the status as a success), so a server
sends it only when told the platform is new enough (``PYNUMAFLOW_NACK=1``, which also
makes its server-info require Numaflow 1.8.2); otherwise a nack is a failure, retried.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Dict, Optional, Union

__all__ = ["NACK", "NackOptions"]

NACK = "U+005C__NACK__"
"""The reserved tag of a map result that negatively acknowledges its input."""

_UINT32 = 2**32
_UINT64 = 2**64


@dataclass(frozen=True)
class NackOptions:
    """How the platform should redeliver a nacked input; every field is optional.

    Args:
        reason: why, for the logs (and a user-defined source's ``nack`` handler).
        max_deliveries: a hint: deliver at most this many times in all.
        delay: wait this long before redelivering (a ``timedelta``, or milliseconds).
        nack_map: free-form string pairs passed along to a user-defined source.

    A pipeline vertex reading from the inter-step buffer honours ``delay`` only; a
    user-defined source gets every field in its ``nack`` handler.

    Raises:
        TypeError: a field has the wrong type.
        ValueError: ``max_deliveries`` or ``delay`` is negative or too large.

    """

    reason: Optional[str] = None
    max_deliveries: Optional[int] = None
    delay: Union[timedelta, int, None] = None
    nack_map: Dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.reason is not None and not isinstance(self.reason, str):
            raise TypeError(f"NackOptions reason must be str, found {type(self.reason).__name__}")
        _check_int("max_deliveries", self.max_deliveries, _UINT32)
        if isinstance(self.delay, timedelta):
            object.__setattr__(self, "delay", self.delay // timedelta(milliseconds=1))
        _check_int("delay", self.delay, _UINT64)
        if not isinstance(self.nack_map, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.nack_map.items()
        ):
            raise TypeError("NackOptions nack_map must be a dict of str to str")

    @property
    def delay_ms(self) -> Optional[int]:
        """The delay in milliseconds, if one was given."""
        return self.delay if isinstance(self.delay, int) else None


def _check_int(name: str, value: object, limit: int) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"NackOptions {name} must be an int, found {type(value).__name__}")
    if not 0 <= value < limit:
        raise ValueError(f"NackOptions {name} must be in [0, {limit}), got {value}")
