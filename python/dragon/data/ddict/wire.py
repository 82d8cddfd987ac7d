"""The distributed dictionary's wire (docs/ddict.md, "Wire messages"):
request and reply headers, key and value tagging, the key hash. Shared by
the client and the managers; the C++ client (orchestrator/client ddict)
speaks the same bytes."""

from __future__ import annotations

import pickle
import struct
import zlib

VERSION = 1

REQ = struct.Struct("<BBHIIqI")   # op, flags, version, client, seq, checkpoint, key_len
REP = struct.Struct("<BBHI")      # status, flags, version, seq

# ops
CONNECT, PUT, GET, POP, DEL, CONTAINS, LEN, KEYS, ITEMS, CLEAR, DISCONNECT, DESTROY, STATS, FREEZE = range(1, 15)
OP_NAMES = {CONNECT: "connect", PUT: "put", GET: "get", POP: "pop", DEL: "del", CONTAINS: "contains", LEN: "len",
            KEYS: "keys", ITEMS: "items", CLEAR: "clear", DISCONNECT: "disconnect", DESTROY: "destroy",
            STATS: "stats", FREEZE: "freeze"}

# request flags (CHUNKED also on replies)
PERSIST = 1
BROADCAST = 2
CHUNKED = 4

# Values larger than CHUNK_AT travel in CHUNK-byte pieces through a side
# channel the sender makes in its own node's pool, WINDOW pieces deep: the
# request (or reply) carries tag | u64 total | u32 pieces | side descriptor.
# The pieces are sent straight from the caller's buffer and kept as they
# came by the manager, so a value is copied once into the pool and once out.
CHUNK_AT = 1 << 20
CHUNK = 4 << 20
WINDOW = 4
CHUNK_HEAD = struct.Struct("<QI")

# reply status
OK, NOT_FOUND, FULL, ERROR, RETIRED = 0, 1, 2, 3, 4

_U32 = struct.Struct("<I")


def hash_key(kb: bytes, n: int) -> int:
    """The manager of tagged key bytes ``kb`` among ``n``."""
    return zlib.crc32(kb) % n


def key_bytes(key) -> bytes:
    """A key as tagged bytes (raises in the caller if it cannot be pickled)."""
    t = type(key)
    if t is str:
        return b"s" + key.encode("utf-8", "surrogatepass")
    if t is bytes or t is bytearray:
        return b"b" + bytes(key)
    return b"p" + pickle.dumps(key, 5)


def key_object(kb):
    tag = kb[:1]
    if tag == b"s":
        return bytes(kb[1:]).decode("utf-8", "surrogatepass")
    if tag == b"b":
        return bytes(kb[1:])
    if tag == b"p":
        return pickle.loads(kb[1:])
    raise ValueError(f"ddict: a key with an unknown tag {bytes(tag)!r}")


def value_parts(value) -> tuple[bytes, object]:
    """A value as (tag, body): bytes-like values raw, anything else pickled."""
    t = type(value)
    if t is bytes or t is bytearray or t is memoryview:
        return b"b", value
    return b"p", pickle.dumps(value, 5)


class Joined:
    """A value that came in pieces, joined without its tag (no further copy)."""

    __slots__ = ("tag", "data")

    def __init__(self, tag: bytes, data: bytes):
        self.tag = tag
        self.data = data


def value_object(vb):
    """The object of tagged value bytes (a bytes value comes back as bytes)."""
    if type(vb) is Joined:
        return vb.data if vb.tag == b"b" else pickle.loads(vb.data)
    tag = vb[:1]
    if tag == b"b":
        return bytes(vb[1:]) if not isinstance(vb, bytes) else vb[1:]
    if tag == b"p":
        return pickle.loads(memoryview(vb)[1:])
    raise ValueError(f"ddict: a value with an unknown tag {bytes(tag)!r}")


def request(op: int, flags: int, client: int, seq: int, chkpt: int, kb: bytes = b"", vtag: bytes = b"",
            vbody=b"") -> bytes | bytearray:
    head = REQ.pack(op, flags, VERSION, client, seq, chkpt, len(kb))
    if not vtag:
        return head + kb
    m = memoryview(vbody)
    if m.nbytes < 65536:
        return b"".join((head, kb, vtag, m))
    # One buffer, one copy of a large value (join would make the same).
    out = bytearray(len(head) + len(kb) + 1 + m.nbytes)
    n = len(head)
    out[:n] = head
    out[n:n + len(kb)] = kb
    n += len(kb)
    out[n:n + 1] = vtag
    out[n + 1:] = m.cast("B") if m.c_contiguous else m.tobytes()
    return out


def pack_list(items) -> bytes:
    """n * (u32 len, bytes) with a u32 count first."""
    parts = [_U32.pack(len(items))]
    for b in items:
        parts.append(_U32.pack(len(b)))
        parts.append(b)
    return b"".join(parts)


def unpack_list(data, off: int = 0) -> list[bytes]:
    m = memoryview(data)
    (n,) = _U32.unpack_from(m, off)
    off += 4
    out = []
    for _ in range(n):
        (ln,) = _U32.unpack_from(m, off)
        off += 4
        if off + ln > len(m):
            raise ValueError("ddict: a list reply is cut short")
        out.append(bytes(m[off:off + ln]))
        off += ln
    return out


class Chunks:
    """A large value as a manager keeps it: its tag and its pieces."""

    __slots__ = ("tag", "parts", "size")

    def __init__(self, tag: bytes, parts: list, size: int):
        self.tag = tag
        self.parts = parts
        self.size = size

    def __len__(self) -> int:
        return self.size + 1

    def __bytes__(self) -> bytes:
        return b"".join([self.tag, *self.parts])


def chunk_count(size: int) -> int:
    return (size + CHUNK - 1) // CHUNK
