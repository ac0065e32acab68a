"""The disk cache's size budget (ui.cache_budget): least-recently-used files go first, a file a running job uses
is never removed, stale leases are ignored, the setting is checked, and the home page shows the use."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest
from apptest_helpers import ok

from influence_core.array_store import ArrayStore


def _entry(store: ArrayStore, name: str, kb: int, age_s: float):
    """One real store file of about ``kb`` kB whose last use was ``age_s`` seconds ago."""
    path = store.save("model", {"name": name}, "v1", {"w": np.zeros(kb * 128, dtype=np.float64)}, {"label": name})
    when = time.time() - age_s
    os.utime(path, (when, when))
    return path


def test_the_least_recently_used_files_go_first_and_a_read_makes_a_file_recent(tmp_path):
    from ui import cache_budget

    store = ArrayStore(tmp_path)
    old, middle, new = (_entry(store, n, 100, age) for n, age in (("old", 300), ("middle", 200), ("new", 100)))
    size = old.stat().st_size
    cache_budget.note_use(old)  # read just now: now the most recent
    removed = cache_budget.enforce(tmp_path, budget=2 * size + 10)
    assert removed == [middle]
    assert old.exists() and new.exists() and not middle.exists()
    assert cache_budget.usage(tmp_path).files == 2
    assert cache_budget.enforce(tmp_path, budget=10 * size) == []  # within the budget: nothing removed


def test_a_file_a_running_job_uses_is_never_removed_and_is_free_after_the_job(tmp_path):
    from ui import cache_budget

    store = ArrayStore(tmp_path)
    leased = _entry(store, "leased", 100, 500)  # the oldest: first in line without its lease
    others = [_entry(store, f"other{i}", 100, 400 - i) for i in range(3)]
    in_job, release = threading.Event(), threading.Event()

    def job() -> None:  # another thread's job reads the file, then keeps running
        with cache_budget.lease(tmp_path):
            cache_budget.note_use(leased)
            os.utime(leased, (time.time() - 500,) * 2)  # as if read long ago: only the lease protects it
            in_job.set()
            release.wait(30)

    worker = threading.Thread(target=job)
    worker.start()
    assert in_job.wait(30)
    removed = cache_budget.enforce(tmp_path, budget=1)  # a budget nothing fits in
    assert leased.exists() and set(removed) == set(others)
    release.set()
    worker.join(30)
    assert not list((tmp_path / cache_budget.LEASE_DIR).glob("*.json"))  # the lease ends with the job
    assert cache_budget.enforce(tmp_path, budget=1) == [leased]


def test_a_lease_of_a_dead_process_is_ignored_and_removed(tmp_path):
    import json
    import socket

    from ui import cache_budget

    store = ArrayStore(tmp_path)
    path = _entry(store, "orphan", 50, 100)
    folder = tmp_path / cache_budget.LEASE_DIR
    folder.mkdir()
    stale = folder / "dead.json"
    dead_pid = 2**22 + 12345  # above the kernel's pid limit: no such process
    stale.write_text(
        json.dumps({"pid": dead_pid, "host": socket.gethostname(), "files": [path.relative_to(tmp_path).as_posix()]})
    )
    assert cache_budget.enforce(tmp_path, budget=1) == [path]
    assert not stale.exists()


def test_the_budget_setting(monkeypatch):
    from ui import cache_budget

    monkeypatch.delenv(cache_budget.ENV_BUDGET, raising=False)
    assert cache_budget.budget_bytes() == cache_budget.DEFAULT_BUDGET_MB * 1_000_000
    monkeypatch.setenv(cache_budget.ENV_BUDGET, "250")
    assert cache_budget.budget_bytes() == 250_000_000
    monkeypatch.setenv(cache_budget.ENV_BUDGET, "none")
    assert cache_budget.budget_bytes() is None
    for bad in ("lots", "-5", "0"):
        monkeypatch.setenv(cache_budget.ENV_BUDGET, bad)
        with pytest.raises(ValueError, match=cache_budget.ENV_BUDGET):
            cache_budget.budget_bytes()


def test_the_app_keeps_its_cache_within_the_budget_and_the_home_page_shows_the_use(app_page, tmp_path, monkeypatch):
    from ui import artifacts, cache_budget
    from ui.config import ModelConfig, RunConfig

    monkeypatch.setenv("INFLUENCE_EXPLORER_CACHE_DIR", str(tmp_path))
    first, second = (RunConfig(model=ModelConfig(hidden=h, epochs=2, polish_steps=5)) for h in (5, 6))
    dataset = artifacts.builtin_dataset(first.data)
    artifacts.load_or_train(first, dataset)
    model_bytes = (
        artifacts.disk_store()
        .path(artifacts.MODEL_KIND, first.cache_key(), artifacts._version(artifacts.MODEL_KIND))
        .stat()
        .st_size
    )
    data_path = next(tmp_path.glob(f"{artifacts.DATA_KIND}/*.npz"))
    time.sleep(0.05)
    cache_budget.note_use(data_path)  # the data is in use again after the first model: more recent
    budget_mb = (data_path.stat().st_size + 1.5 * model_bytes) / 1e6
    monkeypatch.setenv(cache_budget.ENV_BUDGET, f"{budget_mb:.6f}")
    artifacts.load_or_train(second, dataset)  # does not fit beside the first model: the first goes
    assert not artifacts.is_stored(artifacts.MODEL_KIND, first.cache_key())
    assert artifacts.is_stored(artifacts.MODEL_KIND, second.cache_key()) and data_path.exists()
    assert cache_budget.usage(tmp_path).bytes <= budget_mb * 1e6

    import re

    monkeypatch.setenv(cache_budget.ENV_BUDGET, "500")
    before = cache_budget.usage(tmp_path).bytes / 1e6
    at = ok(app_page("app.py", run=second).run())
    after = cache_budget.usage(tmp_path).bytes / 1e6  # the page may write more (a map) after drawing the title
    titles = [e.label for e in at.expander if e.label.startswith("Disk cache")]
    assert len(titles) == 1 and titles[0].endswith(
        " MB of 500 MB (trained models, maps and fitted inverses kept across restarts)"
    ), titles
    shown = float(re.match(r"Disk cache: ([\d.,]+) MB of", titles[0]).group(1).replace(",", ""))
    assert before - 0.05 <= shown <= after + 0.05 and shown > 0, (before, shown, after)
