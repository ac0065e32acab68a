"""A size budget for the app's disk cache: least-recently-used files are removed beyond it, never one a running
job uses (no Streamlit here).

- **Budget:** ``INFLUENCE_EXPLORER_CACHE_BUDGET_MB`` megabytes (default ``DEFAULT_BUDGET_MB``; ``none`` = no
  limit). Checked after every file the cache writes (:func:`enforce`, from ``ui.artifacts``), in whichever process
  wrote it (a worker or the server).
- **Recency:** a file's modification time is its last use: :func:`note_use` sets it to now on every read and
  write through ``ui.artifacts`` (the writes are atomic renames, so a reader never sees a half-written file).
- **Leases:** a job runs inside :func:`lease` (``ui.workers.Task`` does it); every cache file the job reads or
  writes is listed in a lease file ``<cache>/.leases/<host>-<pid>-<id>.json`` (written atomically) until the job
  ends, and :func:`enforce` never removes a listed file. A lease whose process is gone (same host, pid not alive)
  or that is older than ``LEASE_MAX_AGE_S`` (another host that crashed) is stale and ignored, then removed.

Eviction removes only ``.npz`` entries under the cache root; a removed entry is simply recomputed when next asked
for (by key: nothing refers to a file by name).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ENV_BUDGET = "INFLUENCE_EXPLORER_CACHE_BUDGET_MB"
DEFAULT_BUDGET_MB = 1024
LEASE_DIR = ".leases"
LEASE_MAX_AGE_S = 12 * 3600.0

__all__ = ["budget_bytes", "note_use", "lease", "enforce", "usage", "Usage", "leased_names"]


def budget_bytes() -> int | None:
    """The budget in bytes from ``INFLUENCE_EXPLORER_CACHE_BUDGET_MB`` (None = no limit)."""
    raw = os.environ.get(ENV_BUDGET, "").strip()
    if not raw:
        return DEFAULT_BUDGET_MB * 1_000_000
    if raw.lower() in ("none", "off", "unlimited"):
        return None
    try:
        mb = float(raw)
    except ValueError:
        raise ValueError(f"{ENV_BUDGET} must be a number of megabytes (or 'none' for no limit), got {raw!r}") from None
    if not mb > 0:
        raise ValueError(f"{ENV_BUDGET} must be more than 0 megabytes (or 'none' for no limit), got {raw!r}")
    return int(mb * 1_000_000)


# ---------------------------------------------------------------------------------------------------- leases

_current = threading.local()


class _Lease:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.path = root / LEASE_DIR / f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:12]}.json"
        self.names: set[str] = set()

    def add(self, path: Path) -> None:
        name = _relative(self.root, path)
        if name is None or name in self.names:
            return
        self.names.add(name)
        self._write()

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:8]}.tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump({"pid": os.getpid(), "host": socket.gethostname(), "files": sorted(self.names)}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)

    def release(self) -> None:
        self.path.unlink(missing_ok=True)


def _relative(root: Path, path: Path) -> str | None:
    try:
        return Path(path).resolve().relative_to(root.resolve()).as_posix()
    except ValueError:  # not under the cache root
        return None


@contextmanager
def lease(root: Path | None) -> Iterator[None]:
    """Within this block (one job, on this thread), every cache file under ``root`` that :func:`note_use` sees is
    protected from eviction. Nested blocks share the outer lease. ``root`` None (cache off): nothing to do."""
    if root is None or getattr(_current, "lease", None) is not None:
        yield
        return
    _current.lease = _Lease(Path(root))
    try:
        yield
    finally:
        _current.lease.release()
        _current.lease = None


def note_use(path: Path) -> None:
    """``path`` was just read or written: it becomes the most recently used file, and is leased by the running
    job (if any)."""
    try:
        os.utime(path, None)
    except OSError:  # removed meanwhile: nothing to note
        return
    current = getattr(_current, "lease", None)
    if current is not None:
        current.add(Path(path))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def leased_names(root: Path) -> set[str]:
    """The files (relative to ``root``) listed by live leases; stale lease files are removed."""
    names: set[str] = set()
    folder = Path(root) / LEASE_DIR
    if not folder.is_dir():
        return names
    host = socket.gethostname()
    for path in folder.glob("*.json"):
        try:
            age = time.time() - path.stat().st_mtime
            record = json.loads(path.read_text(encoding="utf-8"))
            stale = age > LEASE_MAX_AGE_S or (record.get("host") == host and not _alive(int(record.get("pid", -1))))
        except (OSError, ValueError, TypeError, AttributeError):
            continue  # being replaced, or unreadable: ignore this time
        if stale:
            path.unlink(missing_ok=True)
        else:
            names.update(str(n) for n in record.get("files", []))
    return names


# ---------------------------------------------------------------------------------------------------- eviction


@dataclass(frozen=True)
class Usage:
    """What the cache holds: ``bytes`` in ``files`` entries, against ``budget`` bytes (None = no limit)."""

    bytes: int
    files: int
    budget: int | None


def _files(root: Path) -> list[tuple[float, int, Path]]:
    """(last use, size, path) of every entry under ``root``."""
    out = []
    for path in Path(root).glob("*/*.npz"):
        if path.name.startswith("."):  # a temporary file of an atomic write
            continue
        try:
            st = path.stat()
        except FileNotFoundError:
            continue
        out.append((st.st_mtime, st.st_size, path))
    return out


def usage(root: Path | None) -> Usage:
    files = _files(Path(root)) if root is not None else []
    return Usage(bytes=sum(size for _, size, _ in files), files=len(files), budget=budget_bytes())


_enforce_lock = threading.Lock()


def enforce(root: Path | None, budget: int | None = None, keep: Path | None = None) -> list[Path]:
    """Remove least-recently-used entries until the cache is within ``budget`` bytes (default
    :func:`budget_bytes`), skipping leased files and ``keep`` (the file just written). Returns the removed
    paths."""
    budget = budget_bytes() if budget is None else budget
    if root is None or budget is None:
        return []
    root = Path(root)
    with _enforce_lock:
        files = _files(root)
        total = sum(size for _, size, _ in files)
        if total <= budget:
            return []
        leased = leased_names(root)
        if keep is not None:
            leased.add(_relative(root, keep) or "")
        removed = []
        for _, size, path in sorted(files, key=lambda f: f[0]):
            if total <= budget:
                break
            if _relative(root, path) in leased:
                continue
            try:
                path.unlink()
            except FileNotFoundError:  # another process evicted it meanwhile
                pass
            total -= size
            removed.append(path)
        return removed
