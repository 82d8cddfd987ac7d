"""A distributed dictionary's manager: one member of the dictionary's
ProcessGroup, holding one shard. It takes requests from its request channel
(in its node's pool) and answers on each client's reply channel, one request
at a time (docs/ddict.md). Untrusted bytes get an error reply or are
dropped; they never end the loop."""

from __future__ import annotations

import json
import os
import pickle
import sys
import threading
import time

from dragon import _core
from dragon._runtime import current_runtime
from dragon.data.ddict import wire
from dragon.infrastructure import host, large

REQUEST_CAPACITY = 512
# The read mirror (docs/ddict.md): at most this many bytes of a manager's
# shard in a pool of its own that the clients of its node read without a
# message; 0 turns it off.
MIRROR_BYTES = int(os.environ.get("DRAGON_DDICT_MIRROR_BYTES", str(256 << 20)))
REQUEST_BLOCK = 1536   # a 1 KiB value and its header fit inline in a slot
_MISSING = object()
_GONE = None           # a tombstone: the key was removed at this checkpoint


class Shard:
    """The data of one manager: a table per kept checkpoint, the keys
    written with pput per checkpoint, the bytes they use."""

    def __init__(self, index: int, node: int, capacity: int, wss: int, wait_for_keys: bool):
        self.index = index
        self.node = node
        self.capacity = capacity
        self.wss = max(1, wss)
        self.wait_for_keys = wait_for_keys
        self.versions: dict[int, dict] = {0: {}}
        self.persist: dict[int, set] = {0: set()}
        self.bkeys: set = set()
        self.used = 0
        self.frozen = False
        self.waiters: dict[tuple[int, bytes], list] = {}
        self.ops = 0

    # ---- checkpoints ----------------------------------------------------------------

    def oldest(self) -> int:
        return min(self.versions)

    def check_chkpt(self, c: int) -> str | None:
        if c < 0:
            return f"checkpoint {c} is negative"
        if c < self.oldest():
            return (f"checkpoint {c} is no longer kept by manager {self.index} (node {self.node}): its working set "
                    f"holds checkpoints {sorted(self.versions)} (working_set_size {self.wss})")
        return None

    def table_for_write(self, c: int) -> tuple[dict, list]:
        """The table of checkpoint c, opened if new; returns it and the
        waiters of retired checkpoints (to be told)."""
        t = self.versions.get(c)
        retired: list = []
        if t is None:
            t = self.versions[c] = {}
            self.persist[c] = set()
            while len(self.versions) > self.wss:
                retired += self.retire()
        return t, retired

    def retire(self) -> list:
        old = min(self.versions)
        tab = self.versions.pop(old)
        pers = self.persist.pop(old)
        nxt = min(self.versions)
        ntab, npers = self.versions[nxt], self.persist[nxt]
        for kb, vb in tab.items():
            if kb in pers and vb is not _GONE and kb not in ntab:
                ntab[kb] = vb
                npers.add(kb)
            elif vb is not _GONE:
                self.used -= len(kb) + len(vb)
        out = []
        for (c, kb) in [w for w in self.waiters if w[0] == old]:
            out += self.waiters.pop((c, kb))
        return out

    def lookup(self, kb: bytes, c: int):
        """The value bytes of kb as seen at checkpoint c, or None."""
        t = self.versions.get(c)
        if t is not None:
            v = t.get(kb, _MISSING)
            if v is not _MISSING:
                return v
        if len(self.versions) == 1 and t is not None:
            return None
        for c2 in sorted((x for x in self.versions if x < c), reverse=True):
            t2 = self.versions[c2]
            if kb in t2:
                return t2[kb] if kb in self.persist[c2] else None
        return None

    def visible(self, c: int) -> dict:
        """Every key visible at checkpoint c -> its value bytes."""
        t = self.versions.get(c, {})
        if len(self.versions) == 1:
            return {k: v for k, v in t.items() if v is not _GONE} if c in self.versions else {}
        out: dict = {}
        seen = set(t)
        for k, v in t.items():
            if v is not _GONE:
                out[k] = v
        for c2 in sorted((x for x in self.versions if x < c), reverse=True):
            for k in self.persist[c2]:
                if k not in seen:
                    seen.add(k)
                    v = self.versions[c2].get(k)
                    if v is not _GONE and v is not None:
                        out[k] = v
        return out

    # ---- operations -----------------------------------------------------------------

    def put(self, kb: bytes, vb: bytes, c: int, persist: bool) -> tuple[int, bytes, list]:
        if self.frozen:
            return wire.ERROR, f"the dictionary is frozen (manager {self.index}): unfreeze() it to write".encode(), []
        err = self.check_chkpt(c)
        if err:
            return wire.RETIRED, err.encode(), []
        t = self.versions.get(c)
        old = t.get(kb) if t is not None else None
        need = len(kb) + len(vb) - ((len(kb) + len(old)) if old is not None else 0)
        if self.used + need > self.capacity:
            return wire.FULL, (f"manager {self.index} (node {self.node}) is full: {self.used} of {self.capacity} bytes "
                               f"used, a key and value of {len(kb) + len(vb)} bytes do not fit").encode(), []
        t, retired = self.table_for_write(c)
        t[kb] = vb
        self.used += need
        if persist:
            self.persist[c].add(kb)
        else:
            self.persist[c].discard(kb)
        return wire.OK, b"", retired

    def remove(self, kb: bytes, c: int):
        """Removes kb at checkpoint c; returns its value bytes or None."""
        v = self.lookup(kb, c)
        if v is None:
            return None
        t, _ = self.versions.get(c), None
        if t is not None and kb in t:
            self.used -= len(kb) + len(t[kb])
            if len(self.versions) == 1:
                del t[kb]
            else:
                t[kb] = _GONE
            self.persist[c].discard(kb)
        else:
            # visible through an older persistent key: a tombstone hides it here
            t, _r = self.table_for_write(c)
            t[kb] = _GONE
        self.bkeys.discard(kb)
        return v

    def clear(self, c: int) -> None:
        for kb in list(self.visible(c)):
            self.remove(kb, c)
        self.bkeys.clear()


class Manager:
    def __init__(self, index: int, n: int, node: int, capacity: int, wss: int, wait_for_keys: bool, name: str):
        self.rt = current_runtime()
        self.shard = Shard(index, node, capacity, wss, wait_for_keys)
        self.index = index
        self.n = n
        self.name = name
        self.ch = _core.Channel.create(self.rt, capacity=REQUEST_CAPACITY, block_size=REQUEST_BLOCK)
        self.clients: dict[int, _core.Channel] = {}
        self.next_client = 1
        self.running = True
        self.mirror = self._make_mirror(capacity)
        self.unmirrored: set = set()   # keys visible at the mirrored checkpoint that it does not hold
        self.mirrored = 0              # the checkpoint the mirror shows
        if self.mirror is not None:
            self.mirror.reset(0, not wait_for_keys)

    # ---- the read mirror ------------------------------------------------------------

    def _make_mirror(self, capacity: int):
        size = min(MIRROR_BYTES, max(capacity, 1 << 20))
        if size <= 0:
            return None
        try:
            return _core.Mirror.create(self.rt.run_id, self.rt.node_id, f"ddict{os.getpid()}", size,
                                       max(1024, size // 2048))
        except _core.DragonError as e:   # (no room in /dev/shm: every read asks the manager)
            print(f"ddict manager {self.index}: no read mirror: {e}", file=sys.stderr)
            return None

    def _complete(self) -> bool:
        return not self.unmirrored and not self.shard.wait_for_keys

    def mirror_key(self, kb: bytes) -> None:
        """After kb changed at any checkpoint: the mirror shows its value at
        the newest one (a new newest checkpoint: the whole mirror is rebuilt)."""
        mr = self.mirror
        if mr is None:
            return
        s = self.shard
        newest = max(s.versions)
        if newest != self.mirrored:
            self.mirror_all()
            return
        v = s.lookup(kb, newest)
        was = bool(self.unmirrored)
        if v is None:
            mr.remove(kb)
            self.unmirrored.discard(kb)
        elif isinstance(v, wire.Chunks) or not mr.put(kb, v):
            mr.remove(kb)
            self.unmirrored.add(kb)
            mr.set_complete(False)
            return
        else:
            self.unmirrored.discard(kb)
        if was and self._complete():
            mr.set_complete(True)

    def mirror_all(self) -> None:
        """The mirror rebuilt for the newest checkpoint (after a new one, a clear, a retire)."""
        mr = self.mirror
        if mr is None:
            return
        s = self.shard
        newest = max(s.versions)
        mr.reset(newest, False)   # (readers meanwhile: hits are right, a miss asks the manager)
        self.unmirrored = set()
        for kb, v in s.visible(newest).items():
            if isinstance(v, wire.Chunks) or not mr.put(kb, v):
                mr.remove(kb)
                self.unmirrored.add(kb)
        self.mirrored = newest
        mr.set_complete(self._complete())

    # ---- replies --------------------------------------------------------------------

    def reply_value(self, client: int, seq: int, v) -> None:
        """An ok reply with a stored value: inline, or its pieces through a side channel."""
        if not isinstance(v, wire.Chunks):
            self.reply(client, seq, wire.OK, v)
            return
        if client not in self.clients:
            return
        side = _core.Channel.create(self.rt, capacity=wire.WINDOW, block_size=0)
        head = v.tag + wire.CHUNK_HEAD.pack(v.size, len(v.parts)) + side.descriptor.encode()
        self.reply(client, seq, wire.OK, head, wire.CHUNKED)
        threading.Thread(target=self._send_parts, args=(side, v.parts, client), daemon=True).start()

    def _send_parts(self, side, parts, client) -> None:
        try:
            for p in parts:
                side.send(p, 60.0)
            deadline = time.monotonic() + 60.0
            while side.queued() and time.monotonic() < deadline:
                time.sleep(0.001)
        except Exception as e:  # the client went away mid-read
            print(f"ddict manager {self.index}: a large value to client {client} was not read: {e}", file=sys.stderr)
        finally:
            side.destroy()

    def recv_parts(self, head) -> wire.Chunks | None:
        """The pieces of a chunked put (None if they did not all come)."""
        tag = bytes(head[:1])
        size, n = wire.CHUNK_HEAD.unpack_from(head, 1)
        desc = bytes(head[1 + wire.CHUNK_HEAD.size:]).decode()
        side = _core.Channel.attach(self.rt, desc)
        parts = []
        got = 0
        for _ in range(n):
            try:
                p = side.recv(30.0)
            except _core.DragonError as e:
                print(f"ddict manager {self.index}: a chunked put stopped after {got} of {size} bytes: {e}",
                      file=sys.stderr)
                return None
            parts.append(p)
            got += len(p)
        if got != size:
            return None
        return wire.Chunks(tag, parts, size)

    def reply(self, client: int, seq: int, status: int, payload=b"", flags: int = 0) -> None:
        ch = self.clients.get(client)
        if ch is None:
            return
        msg = wire.REP.pack(status, flags, wire.VERSION, seq) + payload
        if len(msg) > large.LARGE:
            # Chunks go as the client reads them: in a thread, so a slow or
            # dead reader never holds up the other clients.
            threading.Thread(target=self._send_large, args=(ch, msg, client), daemon=True).start()
            return
        try:
            if ch.is_local:
                ch.send(msg, 5.0)
            else:
                ch.send(msg, None)   # on its way; the gateway waits if the channel is full
        except _core.DragonTimeoutError:
            print(f"ddict manager {self.index}: client {client} does not read its replies; one dropped",
                  file=sys.stderr)
        except _core.DragonError as e:
            print(f"ddict manager {self.index}: client {client} is gone ({e}); forgotten", file=sys.stderr)
            self.clients.pop(client, None)

    def _send_large(self, ch, msg, client) -> None:
        try:
            large.send(ch, msg, None)
        except Exception as e:  # the client went away
            print(f"ddict manager {self.index}: a large reply to client {client} failed: {e}", file=sys.stderr)

    # ---- the loop -------------------------------------------------------------------

    def serve(self) -> None:
        recv = self.ch.recv
        poll = _core.poll
        item = [(self.ch, _core.READABLE)]
        while self.running:
            # Wait in poll (at once with a backlog; else a short spin, then
            # the futex), not in a blocking recv, whose spin yields the cpu in
            # a loop that competes with the clients on a machine with few
            # cpus; then take the message with a try-once.
            try:
                if not poll(item, 1.0)[0]:
                    continue
                msg = recv(0)
            except _core.DragonTimeoutError:
                continue
            if large.is_record(msg):
                try:
                    msg = large.fetch(msg)
                except Exception as e:
                    print(f"ddict manager {self.index}: a large request could not be read: {e}", file=sys.stderr)
                    continue
                if msg is None:
                    continue  # its sender died mid-send
            try:
                self.handle(msg)
            except Exception as e:  # a bug or bad bytes: answer if we can, never stop
                try:
                    op, flags, ver, client, seq, c, klen = wire.REQ.unpack_from(msg, 0)
                    self.reply(client, seq, wire.ERROR, f"manager {self.index}: {type(e).__name__}: {e}".encode())
                except Exception:
                    pass
                print(f"ddict manager {self.index}: request failed: {type(e).__name__}: {e}", file=sys.stderr)
        self.close()

    def handle(self, msg) -> None:
        if len(msg) < wire.REQ.size:
            print(f"ddict manager {self.index}: a {len(msg)}-byte request is shorter than a header; dropped",
                  file=sys.stderr)
            return
        op, flags, ver, client, seq, c, klen = wire.REQ.unpack_from(msg, 0)
        if ver != wire.VERSION:
            self.reply(client, seq, wire.ERROR, f"wire version {ver} is not {wire.VERSION}".encode())
            return
        off = wire.REQ.size
        if off + klen > len(msg):
            self.reply(client, seq, wire.ERROR, f"key length {klen} runs past the {len(msg)}-byte request".encode())
            return
        m = memoryview(msg)
        kb = bytes(m[off:off + klen])
        s = self.shard
        s.ops += 1
        if op == wire.GET:
            err = s.check_chkpt(c)
            if err:
                self.reply(client, seq, wire.RETIRED, err.encode())
                return
            v = s.lookup(kb, c)
            if v is None:
                if s.wait_for_keys and not (flags & wire.PERSIST):
                    s.waiters.setdefault((c, kb), []).append((client, seq))
                    return
                self.reply(client, seq, wire.NOT_FOUND)
            else:
                self.reply_value(client, seq, v)
        elif op == wire.PUT:
            if flags & wire.CHUNKED:
                vb = self.recv_parts(m[off + klen:])
                if vb is None:
                    self.reply(client, seq, wire.ERROR, b"the pieces of a large value did not all come")
                    return
            else:
                vb = bytes(m[off + klen:])
            tag = vb.tag if isinstance(vb, wire.Chunks) else vb[:1]
            if tag not in (b"b", b"p"):
                self.reply(client, seq, wire.ERROR, b"a value must begin with its tag, b or p")
                return
            status, text, retired = s.put(kb, vb, c, bool(flags & wire.PERSIST))
            if status == wire.OK:
                self.mirror_key(kb)   # (before the reply: a reader after it sees the new value)
                if flags & wire.BROADCAST:
                    s.bkeys.add(kb)
                else:
                    s.bkeys.discard(kb)
                for w in s.waiters.pop((c, kb), ()):
                    self.reply_value(w[0], w[1], vb)
            for w in retired:
                self.reply(w[0], w[1], wire.RETIRED, b"the checkpoint was retired while waiting for its key")
            self.reply(client, seq, status, text)
        elif op == wire.CONTAINS:
            err = s.check_chkpt(c)
            if err:
                self.reply(client, seq, wire.RETIRED, err.encode())
                return
            self.reply(client, seq, wire.OK if s.lookup(kb, c) is not None else wire.NOT_FOUND)
        elif op in (wire.POP, wire.DEL):
            if s.frozen:
                self.reply(client, seq, wire.ERROR, f"the dictionary is frozen (manager {self.index})".encode())
                return
            err = s.check_chkpt(c)
            if err:
                self.reply(client, seq, wire.RETIRED, err.encode())
                return
            v = s.remove(kb, c)
            if v is not None:
                self.mirror_key(kb)
            if v is None:
                self.reply(client, seq, wire.NOT_FOUND)
            elif op == wire.POP:
                self.reply_value(client, seq, v)
            else:
                self.reply(client, seq, wire.OK)
        elif op == wire.LEN:
            err = s.check_chkpt(c)
            if err:
                self.reply(client, seq, wire.RETIRED, err.encode())
                return
            vis = s.visible(c)
            n = len(vis) if self.index == 0 else sum(1 for k in vis if k not in s.bkeys)
            self.reply(client, seq, wire.OK, n.to_bytes(8, "little"))
        elif op in (wire.KEYS, wire.ITEMS):
            err = s.check_chkpt(c)
            if err:
                self.reply(client, seq, wire.RETIRED, err.encode())
                return
            vis = s.visible(c)
            if flags & wire.BROADCAST:        # manager(i) views: this shard's keys, broadcast ones too
                keys = list(vis)
            else:
                keys = [k for k in vis if self.index == 0 or k not in s.bkeys]
            if op == wire.KEYS:
                self.reply(client, seq, wire.OK, wire.pack_list(keys))
            else:
                flat = []
                for k in keys:
                    flat.append(k)
                    v = vis[k]
                    flat.append(bytes(v) if isinstance(v, wire.Chunks) else v)
                self.reply(client, seq, wire.OK, wire.pack_list(flat))
        elif op == wire.CLEAR:
            if s.frozen:
                self.reply(client, seq, wire.ERROR, f"the dictionary is frozen (manager {self.index})".encode())
                return
            s.clear(c)
            self.mirror_all()
            self.reply(client, seq, wire.OK)
        elif op == wire.CONNECT:
            desc = bytes(m[off + klen:]).decode()
            try:
                ch = _core.Channel.attach(self.rt, desc)
            except _core.DragonError as e:
                print(f"ddict manager {self.index}: a client's reply channel does not attach: {e}", file=sys.stderr)
                return
            cid = self.next_client
            self.next_client += 1
            self.clients[cid] = ch
            self.reply(cid, seq, wire.OK, cid.to_bytes(4, "little"))
        elif op == wire.DISCONNECT:
            self.clients.pop(client, None)
            for key in list(s.waiters):
                s.waiters[key] = [w for w in s.waiters[key] if w[0] != client]
                if not s.waiters[key]:
                    del s.waiters[key]
        elif op == wire.STATS:
            st = {"manager": self.index, "node": s.node, "pid": os.getpid(),
                  "puid": int(os.environ.get("DRAGON_PUID") or 0), "keys": len(s.visible(c)),
                  "used_bytes": s.used, "capacity_bytes": s.capacity, "checkpoints": sorted(s.versions),
                  "working_set_size": s.wss, "frozen": s.frozen, "clients": len(self.clients), "ops": s.ops,
                  "waiting_gets": sum(len(w) for w in s.waiters.values())}
            self.reply(client, seq, wire.OK, json.dumps(st).encode())
        elif op == wire.FREEZE:
            s.frozen = bytes(m[off + klen:]) in (b"\x01", b"b\x01")  # a tagged or a bare byte
            self.reply(client, seq, wire.OK)
        elif op == wire.DESTROY:
            if self.mirror is not None:   # (first: no read is answered from it once destroy() returned)
                self.mirror.destroy()
                self.mirror = None
            for ws in s.waiters.values():
                for w in ws:
                    self.reply(w[0], w[1], wire.ERROR, f"manager {self.index} was destroyed".encode())
            s.waiters.clear()
            self.reply(client, seq, wire.OK)
            self.running = False
        else:
            self.reply(client, seq, wire.ERROR, f"unknown op {op}".encode())

    def close(self) -> None:
        if self.mirror is not None:
            self.mirror.destroy()   # (clients' lookups from here on: unknown, so they ask, and learn it ended)
            self.mirror = None
        for ch in self.clients.values():
            try:
                ch.flush(5.0) if not ch.is_local else None
            except Exception:
                pass
        self.clients.clear()
        try:
            self.ch.destroy()
        except Exception:
            pass


def serve(index: int, n: int, node: int, capacity: int, wss: int, wait_for_keys: bool, name: str,
          boot_desc: str) -> None:
    """A manager's life: make the request channel, say where it is on the
    creator's bootstrap channel, answer until destroyed (or stopped)."""
    m = Manager(index, n, node, capacity, wss, wait_for_keys, name)
    rec = {"index": index, "desc": m.ch.descriptor, "pid": os.getpid(),
           "puid": int(os.environ.get("DRAGON_PUID") or 0), "node": m.rt.node_id, "boot": host.boot_id(),
           "mirror": [m.mirror.pool_name, m.mirror.offset] if m.mirror is not None else None}
    boot = _core.Channel.attach(m.rt, boot_desc)
    boot.send(pickle.dumps(rec), None)
    if not boot.is_local:
        boot.flush(None)
    prof = os.environ.get("DRAGON_DDICT_PROFILE")   # a directory: each manager's cProfile stats go there
    if prof:
        import cProfile

        pr = cProfile.Profile()
        pr.enable()
    try:
        m.serve()
    except KeyboardInterrupt:
        m.close()
    finally:
        if prof:
            pr.disable()
            pr.dump_stats(os.path.join(prof, f"ddict-manager-{index}-{os.getpid()}.prof"))
