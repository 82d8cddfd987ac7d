"""Constants shared by the runtime's Python layers."""

from __future__ import annotations

import enum


class PMIBackend(enum.Enum):
    """Which PMI the members of an MPI ProcessGroup get from their agents
    (docs/pmi.md). ``SIMPLE`` is MPICH's PMI-1/PMI-2 wire, ``CRAY`` that plus
    the PALS environment and Dragon's Cray-compatible libpmi, ``PMIX`` an
    OpenPMIx server (Open MPI, mpi4py)."""

    SIMPLE = "simple"
    CRAY = "cray"
    PMIX = "pmix"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def from_str(cls, s: "str | PMIBackend") -> "PMIBackend":
        if isinstance(s, PMIBackend):
            return s
        try:
            return cls(str(s).lower())
        except ValueError:
            raise ValueError(f"unknown PMI backend {s!r} (choose from "
                             + ", ".join(m.value for m in cls) + ")") from None
