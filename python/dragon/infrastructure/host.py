"""This host, as the Python layers need it: its boot id (two processes with
the same one share a kernel, so pids mean the same) and whether a pid here
is a given runtime process (its DRAGON_PUID), so a reused pid is never
taken for ours."""

from __future__ import annotations

_boot: str | None = None


def boot_id() -> str:
    """The kernel's boot id ("" if unknown), read once."""
    global _boot
    if _boot is None:
        try:
            with open("/proc/sys/kernel/random/boot_id") as f:
                _boot = f.read().strip()[:36]
        except OSError:
            _boot = ""
    return _boot


def is_process(pid: int, puid: int) -> bool:
    """Whether ``pid`` on this host is the runtime process ``puid`` (any
    live process if puid is 0) and has not ended (zombies have)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[-1].split()[0] in ("Z", "X"):
                return False
        if puid:
            with open(f"/proc/{pid}/environ", "rb") as f:
                return f"\0DRAGON_PUID={puid}\0".encode() in b"\0" + f.read()
        return True
    except (OSError, IndexError):
        return False
