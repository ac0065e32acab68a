"""The keyed on-disk array store (influence_core.array_store) and models as arrays (influence_core.models.storage):
round trips, computed once, corrupt / foreign / pickled files refused with a clear message, atomic writes."""

from __future__ import annotations

import io
import pickle
import threading
import zipfile

import numpy as np
import pytest
import torch

from influence_core import predict_logits, train_model
from influence_core.array_store import ArrayStore, StoreFileError, code_version, entry_key
from influence_core.models.storage import model_from_arrays, model_to_arrays

CONFIG = {"data": {"name": "digits", "seed": 0}, "model": {"arch": "mlp", "hidden": 8}}
VERSION = "v1"


def arrays():
    return {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([1, 2, 3])}


def test_round_trip_and_key_depends_on_everything(tmp_path):
    store = ArrayStore(tmp_path)
    store.save("map", CONFIG, VERSION, arrays(), {"label": "x", "seconds": 1.5})
    got, meta = store.load("map", CONFIG, VERSION)
    np.testing.assert_array_equal(got["a"], arrays()["a"])
    assert got["a"].dtype == np.float32 and meta == {"label": "x", "seconds": 1.5}
    other = {**CONFIG, "model": {"arch": "mlp", "hidden": 9}}
    assert store.load("map", other, VERSION) is None
    assert store.load("map", CONFIG, "v2") is None
    assert store.load("model", CONFIG, VERSION) is None
    assert (
        len({entry_key("map", CONFIG, VERSION), entry_key("map", other, VERSION), entry_key("map", CONFIG, "v2")}) == 3
    )
    assert [e.label for e in store.entries()] == ["x"]
    assert store.clear() == 1 and store.entries() == []


def test_code_version_follows_the_source():
    a = code_version("influence_core.array_store")
    assert a == code_version("influence_core.array_store")
    assert a != code_version("influence_core.array_store", "influence_core.io_safety")


def test_get_or_compute_computes_once_across_store_objects_and_threads(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return arrays(), {"label": "once"}

    stores = [ArrayStore(tmp_path) for _ in range(2)]
    results = []
    shared = ArrayStore(tmp_path)
    threads = [
        threading.Thread(target=lambda: results.append(shared.get_or_compute("map", CONFIG, VERSION, compute)))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and sorted(r[2] for r in results) == [False, True, True, True]
    _, meta, loaded = stores[1].get_or_compute("map", CONFIG, VERSION, compute)  # a "new process"
    assert loaded and meta["label"] == "once" and len(calls) == 1
    assert not list(tmp_path.rglob("*.tmp*"))  # atomic writes leave no temporary files


def _write_npz(path, **members):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        np.savez(fh, **members)


def test_corrupt_file_is_reported_removed_and_recomputed(tmp_path):
    store = ArrayStore(tmp_path)
    path = store.save("map", CONFIG, VERSION, arrays())
    path.write_bytes(path.read_bytes()[:100])  # truncated, e.g. a disk that filled up
    with pytest.raises(StoreFileError, match="cannot be read"):
        store.load("map", CONFIG, VERSION)
    problems = []
    got, _, loaded = store.get_or_compute("map", CONFIG, VERSION, lambda: (arrays(), {}), problems.append)
    assert not loaded and len(problems) == 1 and "removed and the result is computed again" in problems[0]
    assert str(path) in problems[0]
    assert store.load("map", CONFIG, VERSION) is not None  # the recomputed entry was saved


def test_foreign_files_are_refused(tmp_path):
    store = ArrayStore(tmp_path)
    path = store.path("map", CONFIG, VERSION)
    _write_npz(path, xy=np.zeros((3, 2)))  # a plain .npz, not one of the store's
    with pytest.raises(StoreFileError, match="not a file of this store"):
        store.load("map", CONFIG, VERSION)
    other = {**CONFIG, "data": {"name": "mnist5k", "seed": 0}}
    other_path = store.save("map", other, VERSION, arrays())
    path.write_bytes(other_path.read_bytes())  # another configuration's file under this name
    with pytest.raises(StoreFileError, match="different key, config.*foreign or renamed"):
        store.load("map", CONFIG, VERSION)
    path.write_bytes(b"not a zip file at all")
    with pytest.raises(StoreFileError, match="cannot be read"):
        store.load("map", CONFIG, VERSION)
    assert {e.problem is not None for e in store.entries()} == {False, True}  # listed with its problem


class _Exploit:
    def __reduce__(self):
        import os

        return (os.system, (f"touch {MARKER}",))


MARKER = None


def test_a_pickle_inside_a_store_file_is_never_unpickled(tmp_path):
    global MARKER
    marker = tmp_path / "unpickled"
    MARKER = marker
    store = ArrayStore(tmp_path)
    path = store.save("map", CONFIG, VERSION, arrays())
    # add an object array member (np.save pickles it) to an otherwise valid store file
    buf = io.BytesIO()
    np.save(buf, np.array([_Exploit()], dtype=object), allow_pickle=True)
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr("evil.npy", buf.getvalue())
    with pytest.raises(StoreFileError, match="cannot be read"):
        store.load("map", CONFIG, VERSION)
    path.write_bytes(pickle.dumps(_Exploit()))  # a bare pickle named like a store file
    with pytest.raises(StoreFileError):
        store.load("map", CONFIG, VERSION)
    assert not marker.exists()
    with pytest.raises(ValueError, match="object arrays are refused"):
        store.save("map", CONFIG, VERSION, {"x": np.array([object()], dtype=object)})


def test_model_round_trip_gives_the_same_outputs(tmp_path, digits):
    for arch, kw in (("mlp", {"hidden": (8,), "epochs": 2}), ("logreg", {}), ("cnn", {"epochs": 1})):
        model = train_model(digits, arch, seed=0, polish_steps=3, max_polish_steps=3, **kw)
        store = ArrayStore(tmp_path)
        arr, record = model_to_arrays(model)
        store.save("model", {"arch": arch}, VERSION, arr, record)
        loaded_arrays, meta = ArrayStore(tmp_path).load("model", {"arch": arch}, VERSION)
        again = model_from_arrays(loaded_arrays, meta)
        np.testing.assert_array_equal(predict_logits(again, digits.X_test), predict_logits(model, digits.X_test))
        assert again.weight_decay == model.weight_decay and not again.training
        assert again.training_report["loaded_from_disk"] is True
        assert again.training_report["test_accuracy"] == model.training_report["test_accuracy"]
    bad = dict(arr)
    bad[next(iter(bad))] = np.zeros((1, 1), dtype=np.float32)
    with pytest.raises(ValueError, match="do not fit"):
        model_from_arrays(bad, meta)
    assert torch.get_num_threads() >= 1
