"""The distributed dictionary: ``from dragon.data.ddict import DDict``
(docs/ddict.md)."""

from dragon.data.ddict.ddict import (DDict, DDictCheckpointSync, DDictError, DDictFull, DDictKeyError,
                                     DDictManagerDied, DDictTimeout)

__all__ = ["DDict", "DDictError", "DDictFull", "DDictKeyError", "DDictManagerDied", "DDictTimeout",
           "DDictCheckpointSync"]
