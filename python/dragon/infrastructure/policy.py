"""Where processes go and which cpus they use: ``Policy``.

The fields and enums are DragonHPC's, so scripts written for it port as they
are. What each means here:

- ``placement``: ``HOST_NAME`` puts the processes on the node(s) named
  ``host_name``; ``HOST_ID`` on node ``host_id`` (Dragon's node id, 0..N-1);
  ``LOCAL`` on the caller's node; ``ANYWHERE``/``DEFAULT`` lets the runtime
  spread them by ``distribution``.
- ``distribution``: ``ROUNDROBIN`` (and ``DEFAULT``) deals processes over
  the nodes one at a time, ``BLOCK`` fills a node before the next.
- ``cpu_affinity``: bind each process to exactly these OS cpu ids.
- ``gpu_env_str``, ``gpu_affinity``, ``wait_mode`` and ``refcounted`` are
  accepted and ignored (no accelerator support yet).

A template's policy wins over its group's, field by field; ``with
Policy(...):`` sets a policy for everything made inside the block.
"""

from __future__ import annotations

import enum
import threading
from dataclasses import dataclass, field, fields


@dataclass
class Policy:
    class Placement(enum.IntEnum):
        LOCAL = -5
        ANYWHERE = -4
        HOST_NAME = -3
        HOST_ID = -2
        DEFAULT = -1

    class Distribution(enum.IntEnum):
        ROUNDROBIN = 1
        BLOCK = 2
        DEFAULT = 3

    class WaitMode(enum.IntEnum):
        IDLE = 1
        SPIN = 2
        DEFAULT = 3

    placement: "Policy.Placement" = Placement.DEFAULT
    host_name: str = ""
    host_id: int = -1
    distribution: "Policy.Distribution" = Distribution.DEFAULT
    cpu_affinity: list[int] = field(default_factory=list)
    gpu_env_str: str = ""
    gpu_affinity: list[int] = field(default_factory=list)
    wait_mode: "Policy.WaitMode" = WaitMode.DEFAULT
    refcounted: bool = True

    def __post_init__(self) -> None:
        self.placement = Policy.Placement(self.placement)
        self.distribution = Policy.Distribution(self.distribution)
        self.wait_mode = Policy.WaitMode(self.wait_mode)
        self.cpu_affinity = [int(c) for c in self.cpu_affinity]
        if any(c < 0 for c in self.cpu_affinity):
            raise ValueError(f"Policy.cpu_affinity: cpu ids are >= 0, got {self.cpu_affinity}")
        if self.placement == Policy.Placement.HOST_NAME and not self.host_name:
            raise ValueError("Policy: placement HOST_NAME needs host_name")
        if self.placement == Policy.Placement.HOST_ID and self.host_id < 0:
            raise ValueError("Policy: placement HOST_ID needs host_id (a node id, >= 0)")

    # ---- DragonHPC's helpers --------------------------------------------------------

    def get_sdict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @property
    def sdesc(self) -> dict:
        return self.get_sdict()

    @classmethod
    def from_sdict(cls, d: dict) -> "Policy":
        return cls(**d)

    @classmethod
    def merge(cls, low: "Policy | None", high: "Policy | None") -> "Policy":
        """``high``'s fields that are set (not default, not empty) over ``low``."""
        if low is None:
            return high if high is not None else cls()
        if high is None:
            return low
        default = cls()
        out = {}
        for f in fields(cls):
            hv = getattr(high, f.name)
            out[f.name] = hv if hv != getattr(default, f.name) and hv != [] else getattr(low, f.name)
        return cls(**out)

    @classmethod
    def global_policy(cls) -> "Policy":
        return cls(placement=cls.Placement.ANYWHERE, distribution=cls.Distribution.ROUNDROBIN,
                   wait_mode=cls.WaitMode.IDLE)

    @classmethod
    def thread_policy(cls) -> "Policy | None":
        """The policies of the enclosing ``with Policy(...)`` blocks, merged."""
        out = None
        for p in getattr(_stack, "policies", []):
            out = cls.merge(out, p)
        return out

    def __enter__(self) -> None:
        if not hasattr(_stack, "policies"):
            _stack.policies = []
        _stack.policies.append(self)

    def __exit__(self, *exc) -> None:
        _stack.policies.pop()


_stack = threading.local()


def resolve(group: Policy | None, template: Policy | None) -> Policy:
    """The policy a template's processes get: the group's under the
    template's (each already holds the `with Policy()` blocks around its
    creation)."""
    return Policy.merge(group, template)
