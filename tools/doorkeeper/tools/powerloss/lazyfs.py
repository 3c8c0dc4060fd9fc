"""A FUSE file system that forgets everything not yet fsynced when the power is cut.

Run as a daemon (`python -m doorkeeper.tools.powerloss.lazyfs BACKING MOUNTPOINT`, driven by
`doorkeeper.tools.powerloss.mount.LazyMount`). Like LazyFS (the file system Jepsen uses to find
missing fsyncs), it models a disk behind a volatile page cache, and it also holds the name space
in that cache, as a journaling file system does between commits:

- file data: writes land in an in-memory page overlay; `fsync`/`fdatasync` of the file writes
  its pages (and its size and mode) to the backing store. Until then the disk still holds the
  last synced contents, so a cut loses every unsynced write (no torn writes: the loss is whole).
- names: creations, renames, unlinks, mkdir and rmdir change only the visible tree; `fsync` of
  the directory makes that directory's entries durable. A file fsynced in a directory that was
  never fsynced since its creation is on disk but unreachable after a cut (as on ext4).
- a cut is the daemon dying: the harness sends `cut` on stdin, the daemon takes the global lock
  (so no operation is half applied) and answers `frozen` (`cut FRACTION SEED` first persists a
  random FRACTION of the unsynced pages in place: a torn cut, as when the kernel had already
  written some dirty pages back); the harness SIGKILLs the processes
  using the mount, then SIGKILLs the daemon. Everything that lived only in its memory is gone.
  Mounting BACKING again ("reboot") shows exactly the synced state.

The backing directory is a store, not a mirror: `objects/<ino>` holds each inode's synced
contents and `meta.json` the synced directories (name -> ino) and modes. It is rewritten only by
this daemon, under its lock, so the store itself is never torn. Hard links and symlinks are
refused (nothing here uses them); locks are left to the kernel (local POSIX locks).
"""

from __future__ import annotations

import errno
import json
import os
import random
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import mfusepy as fuse

PAGE = 4096
ROOT = 1
F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class Node:
    """One inode as the processes see it, plus what the disk holds for it."""

    ino: int
    mode: int
    children: dict[str, int] | None = None  # visible entries (directories only)
    size: int = 0
    pages: dict[int, bytearray] = field(default_factory=dict)  # unsynced pages
    floor: int = 0  # synced bytes at or beyond this offset were truncated away since the last sync
    synced_size: int = 0
    mtime_ns: int = field(default_factory=time.time_ns)

    @property
    def is_dir(self) -> bool:
        return self.children is not None


class LazyFS(fuse.Operations):
    """The volatile file system over a durable object store (see the module docstring)."""

    use_ns = True

    def __init__(self, backing: Path) -> None:
        self.backing = backing
        self.objects = backing / "objects"
        self.objects.mkdir(parents=True, exist_ok=True)
        self._mutex = threading.Lock()
        self.nodes: dict[int, Node] = {}
        self.durable_dirs: dict[int, dict[str, int]] = {}
        self.durable_modes: dict[int, int] = {}
        self.next_ino = ROOT + 1
        self._boot()

    # ------------------------------------------------------------------ durable store

    def _boot(self) -> None:
        """Load the synced state; drop objects no synced directory reaches (as fsck would)."""
        meta_path = self.backing / "meta.json"
        if meta_path.exists():
            meta = json.loads(meta_path.read_text())
            self.durable_dirs = {int(d): {n: int(i) for n, i in e.items()} for d, e in meta["dirs"].items()}
            self.durable_modes = {int(i): m for i, m in meta["modes"].items()}
            self.next_ino = int(meta["next_ino"])
        else:
            self.durable_dirs = {ROOT: {}}
            self.durable_modes = {ROOT: stat.S_IFDIR | 0o755}
        reachable: set[int] = set()
        stack = [ROOT]
        while stack:
            ino = stack.pop()
            if ino in reachable:
                continue
            reachable.add(ino)
            stack.extend(self.durable_dirs.get(ino, {}).values())
        self.durable_dirs = {d: e for d, e in self.durable_dirs.items() if d in reachable}
        self.durable_modes = {i: m for i, m in self.durable_modes.items() if i in reachable}
        for obj in self.objects.iterdir():
            if int(obj.name) not in reachable:
                obj.unlink()
        for ino in reachable:
            mode = self.durable_modes[ino]
            node = Node(ino, mode)
            if stat.S_ISDIR(mode):
                node.children = dict(self.durable_dirs[ino])
            else:
                obj = self.objects / str(ino)
                node.size = node.synced_size = node.floor = obj.stat().st_size if obj.exists() else 0
            self.nodes[ino] = node
        self._save_meta()

    def _save_meta(self) -> None:
        meta = {
            "next_ino": self.next_ino,
            "dirs": {str(d): e for d, e in self.durable_dirs.items()},
            "modes": {str(i): m for i, m in self.durable_modes.items()},
        }
        tmp = self.backing / "meta.json.tmp"
        tmp.write_text(json.dumps(meta))
        os.replace(tmp, self.backing / "meta.json")

    def _read_synced(self, node: Node, page: int) -> bytearray:
        """Page `page` as the disk holds it, cut at the truncation floor, zero-padded."""
        limit = min(node.synced_size, node.floor)
        start = page * PAGE
        out = bytearray(PAGE)
        if start < limit:
            with open(self.objects / str(node.ino), "rb") as f:
                f.seek(start)
                data = f.read(min(PAGE, limit - start))
            out[: len(data)] = data
        return out

    def _sync_file(self, node: Node) -> None:
        obj = self.objects / str(node.ino)
        with open(obj, "r+b" if obj.exists() else "w+b") as f:
            f.truncate(min(node.synced_size, node.floor))
            for index, data in sorted(node.pages.items()):
                f.seek(index * PAGE)
                f.write(data)
            f.truncate(node.size)
        node.pages.clear()
        node.synced_size = node.floor = node.size
        if self.durable_modes.get(node.ino, node.mode) != node.mode:
            self.durable_modes[node.ino] = node.mode
            self._save_meta()

    def _sync_dir(self, node: Node) -> None:
        assert node.children is not None
        self.durable_dirs[node.ino] = dict(node.children)
        for ino in node.children.values():
            child = self.nodes[ino]
            self.durable_modes[ino] = child.mode
            if child.is_dir:
                self.durable_dirs.setdefault(ino, {})
        self._save_meta()

    # ------------------------------------------------------------------ lookup

    def _lookup(self, path: str) -> Node:
        node = self.nodes[ROOT]
        for part in path.strip("/").split("/"):
            if not part:
                continue
            if node.children is None or part not in node.children:
                raise fuse.FuseOSError(errno.ENOENT)
            node = self.nodes[node.children[part]]
        return node

    def _parent(self, path: str) -> tuple[Node, str]:
        head, _, name = path.rstrip("/").rpartition("/")
        parent = self._lookup(head or "/")
        if parent.children is None:
            raise fuse.FuseOSError(errno.ENOTDIR)
        return parent, name

    def _node(self, path: str | None, fh: int | None) -> Node:
        if fh:
            return self.nodes[fh]
        if path is None:
            raise fuse.FuseOSError(errno.EBADF)
        return self._lookup(path)

    def _new(self, mode: int, is_dir: bool) -> Node:
        node = Node(self.next_ino, mode, {} if is_dir else None)
        self.next_ino += 1
        self.nodes[node.ino] = node
        return node

    # ------------------------------------------------------------------ operations

    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        with self._mutex:
            node = self._node(path, fh)
            return {
                "st_mode": node.mode, "st_size": node.size, "st_uid": os.getuid(), "st_gid": os.getgid(),
                "st_nlink": 2 if node.is_dir else 1, "st_blocks": (node.size + 511) // 512,
                "st_atime": node.mtime_ns, "st_mtime": node.mtime_ns, "st_ctime": node.mtime_ns,
            }

    def readdir(self, path: str, fh: int) -> list[str]:
        with self._mutex:
            node = self._node(path, fh)
            if node.children is None:
                raise fuse.FuseOSError(errno.ENOTDIR)
            return [".", "..", *node.children]

    def opendir(self, path: str) -> int:
        with self._mutex:
            return self._lookup(path).ino

    def fsyncdir(self, path: str, datasync: int, fh: int) -> int:
        with self._mutex:
            self._sync_dir(self._node(path, fh))
        return 0

    def mkdir(self, path: str, mode: int) -> int:
        with self._mutex:
            parent, name = self._parent(path)
            assert parent.children is not None
            if name in parent.children:
                raise fuse.FuseOSError(errno.EEXIST)
            parent.children[name] = self._new(stat.S_IFDIR | (mode & 0o7777), True).ino
        return 0

    def rmdir(self, path: str) -> int:
        with self._mutex:
            parent, name = self._parent(path)
            node = self._lookup(path)
            if node.children is None:
                raise fuse.FuseOSError(errno.ENOTDIR)
            if node.children:
                raise fuse.FuseOSError(errno.ENOTEMPTY)
            assert parent.children is not None
            del parent.children[name]
        return 0

    def create(self, path: str, mode: int, fi: object = None) -> int:
        with self._mutex:
            parent, name = self._parent(path)
            assert parent.children is not None
            if name in parent.children:
                node = self.nodes[parent.children[name]]
            else:
                node = self._new(stat.S_IFREG | (mode & 0o7777), False)
                parent.children[name] = node.ino
            return node.ino

    def open(self, path: str, flags: int) -> int:
        with self._mutex:
            node = self._lookup(path)
            if flags & os.O_TRUNC:
                self._truncate(node, 0)
            return node.ino

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        with self._mutex:
            node = self._node(path, fh)
            end = min(offset + size, node.size)
            out = bytearray()
            pos = offset
            while pos < end:
                index, skip = divmod(pos, PAGE)
                page = node.pages.get(index)
                if page is None:
                    page = self._read_synced(node, index)
                take = min(PAGE - skip, end - pos)
                out += page[skip : skip + take]
                pos += take
            return bytes(out)

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        with self._mutex:
            node = self._node(path, fh)
            pos, done = offset, 0
            while done < len(data):
                index, skip = divmod(pos, PAGE)
                page = node.pages.get(index)
                if page is None:
                    page = node.pages[index] = self._read_synced(node, index)
                take = min(PAGE - skip, len(data) - done)
                page[skip : skip + take] = data[done : done + take]
                pos += take
                done += take
            node.size = max(node.size, offset + len(data))
            node.mtime_ns = time.time_ns()
            return len(data)

    def _truncate(self, node: Node, length: int) -> None:
        if length < node.size:
            for index in [i for i in node.pages if i * PAGE >= length]:
                del node.pages[index]
            index, keep = divmod(length, PAGE)
            if keep:
                page = node.pages.get(index)
                if page is None:
                    page = node.pages[index] = self._read_synced(node, index)
                page[keep:] = bytes(PAGE - keep)
            node.floor = min(node.floor, length)
        node.size = length
        node.mtime_ns = time.time_ns()

    def truncate(self, path: str, length: int, fh: int | None = None) -> int:
        with self._mutex:
            self._truncate(self._node(path, fh), length)
        return 0

    def fsync(self, path: str, datasync: int, fh: int) -> int:
        with self._mutex:
            self._sync_file(self._node(path, fh))
        return 0

    def flush(self, path: str, fh: int) -> int:
        return 0

    def release(self, path: str, fh: int) -> int:
        return 0

    def releasedir(self, path: str, fh: int) -> int:
        return 0

    def unlink(self, path: str) -> int:
        with self._mutex:
            parent, name = self._parent(path)
            assert parent.children is not None
            if name not in parent.children:
                raise fuse.FuseOSError(errno.ENOENT)
            if self.nodes[parent.children[name]].is_dir:
                raise fuse.FuseOSError(errno.EISDIR)
            del parent.children[name]
        return 0

    def rename(self, old: str, new: str) -> int:
        with self._mutex:
            old_parent, old_name = self._parent(old)
            new_parent, new_name = self._parent(new)
            assert old_parent.children is not None and new_parent.children is not None
            if old_name not in old_parent.children:
                raise fuse.FuseOSError(errno.ENOENT)
            ino = old_parent.children[old_name]
            target = new_parent.children.get(new_name)
            if target is not None and self.nodes[target].children:
                raise fuse.FuseOSError(errno.ENOTEMPTY)
            del old_parent.children[old_name]
            new_parent.children[new_name] = ino
        return 0

    def chmod(self, path: str, mode: int) -> int:
        with self._mutex:
            node = self._lookup(path)
            node.mode = stat.S_IFMT(node.mode) | (mode & 0o7777)
        return 0

    def chown(self, path: str, uid: int, gid: int) -> int:
        return 0

    def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
        with self._mutex:
            self._lookup(path).mtime_ns = times[1] if times else time.time_ns()
        return 0

    def statfs(self, path: str) -> dict[str, int]:
        st = os.statvfs(self.backing)
        return {key: getattr(st, key) for key in (
            "f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files", "f_ffree", "f_namemax")}

    def link(self, target: str, source: str) -> int:
        raise fuse.FuseOSError(errno.ENOTSUP)

    def symlink(self, target: str, source: str) -> int:
        raise fuse.FuseOSError(errno.ENOTSUP)

    # ------------------------------------------------------------------ control

    def _write_back_some(self, fraction: float, rng: random.Random) -> None:
        """At a cut, the kernel may already have written back some dirty pages: persist each
        unsynced page with probability `fraction` (extending the file where the page lies past
        its synced end; no name or truncation change is persisted), so a cut can also leave
        files torn, as a real disk can."""
        for node in self.nodes.values():
            chosen = [i for i in sorted(node.pages) if rng.random() < fraction]
            if not chosen:
                continue
            obj = self.objects / str(node.ino)
            with open(obj, "r+b" if obj.exists() else "w+b") as f:
                for index in chosen:
                    end = min(PAGE, node.size - index * PAGE)
                    if end > 0:
                        f.seek(index * PAGE)
                        f.write(node.pages[index][:end])

    def serve_control(self, mountpoint: str) -> None:
        """Read commands from stdin: `cut` freezes every operation for good and answers `frozen`.

        When stdin closes (the harness is gone, even while frozen) the daemon unmounts and exits
        with nothing half done, instead of leaving a frozen mount behind.
        """
        frozen = False
        for line in sys.stdin:
            words = line.split()
            if words and words[0] == "cut" and not frozen:
                self._mutex.acquire()  # held until the harness kills this process
                frozen = True
                if len(words) == 3:
                    self._write_back_some(float(words[1]), random.Random(int(words[2])))
                print("frozen", flush=True)
        if not frozen:
            self._mutex.acquire()
        subprocess.run(["fusermount3", "-u", "-z", mountpoint], capture_output=True, check=False)  # noqa: S607
        os._exit(1)


def main(argv: list[str]) -> int:
    backing, mountpoint = Path(argv[0]), argv[1]
    fs = LazyFS(backing)
    threading.Thread(target=fs.serve_control, args=(mountpoint,), name="control", daemon=True).start()
    fuse.FUSE(fs, mountpoint, foreground=True, nothreads=True, fsname="lazyfs")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
