"""A catalogue of bad inputs to the Python API and the command line, each run in its own process under an
address-space limit and a timeout, and each outcome classified:

- ``clean``: refused with one short line that names the argument (CLI: exit 2 and one ``error:`` line; API: a
  ``ValueError``/``TypeError`` whose message names it), and nothing written where it must not be;
- ``unclear``: refused, but with a message that does not name the argument, a raw error from deep inside
  (``IndexError``, ``UnboundLocalError``, ...), a traceback, or numpy's advice to load with ``allow_pickle=True``;
- ``silent``: accepted (exit 0 / no exception) or a forbidden side effect (a file written through a symlink,
  outside the folder given, a folder created, a half file left);
- ``hang``: still running at the timeout; ``crash``: killed by a signal or out of memory.

Run from the repository root (the code under test is the checkout the script lies in, or ``--root``)::

    python benchmarks/hostile_inputs.py --json docs/hostile_inputs.json
    python benchmarks/hostile_inputs.py --root /tmp/wt-main-before --json before.json   # another checkout
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

AS_LIMIT = 3 * 2**30
OWN_ERRORS = {"ValueError", "TypeError", "SolverError", "SchedulerUnreachableError", "NotFittedError"}
"""Exception types that count as a clear refusal through the API (with a message naming the argument)."""
PY = sys.executable

# ------------------------------------------------------------------------------------------------ shared preludes
TINY = """
import numpy as np, torch
from influence_core import dataset_from_arrays, train_model
X = np.random.default_rng(0).normal(size=(40, 4)); y = np.arange(40) % 2
ds = dataset_from_arrays(X, y, X[:6], y[:6], name="tiny")
"""
MODEL = (
    TINY
    + """
from influence_core.influence.calculator import InfluenceCalculator, top_influences
model = train_model(ds, "logreg", seed=0, polish_steps=5)
Xf = ds.X_train.astype(np.float32)
"""
)
FITTED = (
    MODEL
    + """
calc = InfluenceCalculator(model, ds.X_train, ds.y_train).fit(damping=0.01)
"""
)
LDS = """
import numpy as np
from influence_core.evaluation.lds import linear_datamodeling_score, output_values, lds, RetrainPlan, RetrainedOutputs
rng = np.random.default_rng(0)
from influence_core.evaluation.lds import draw_subsets
M = draw_subsets(10, 6, 0.5, seed=2); S = rng.normal(size=(3, 10)); Y = rng.normal(size=(6, 3))
"""
SMALL_LDS = [
    "--dataset",
    "digits",
    "--arch",
    "logreg",
    "--subsets",
    "2",
    "--retrain-seeds",
    "1",
    "--test-points",
    "2",
    "--quiet",
    "--epochs",
    "1",
]
TINY_FAITH = [
    "faithfulness",
    "--dataset",
    "digits",
    "--arch",
    "logreg",
    "--samplers",
    "random",
    "--m",
    "8",
    "--seeds",
    "1",
    "--test-points",
    "2",
    "--quiet",
]


@dataclass
class Case:
    """One bad input. ``code`` (API, run after ``prelude``) or ``argv`` (CLI); ``names``: words one of which the
    message must contain (the argument); ``rc``: the exit code of a clean CLI refusal (1 for an operating-system
    error such as a full disk, 2 otherwise); ``setup(W)`` prepares files in the case's folder W; ``check(W)`` returns
    a violated post-condition (a side effect) or None; ``succeed``: a valid input that must simply work."""

    cls: str
    name: str
    names: tuple[str, ...] = ()
    code: str = ""
    prelude: str = ""
    argv: list[str] = field(default_factory=list)
    setup: Callable[[Path], None] | None = None
    check: Callable[[Path], str | None] | None = None
    timeout: float = 180.0
    succeed: bool = False
    fsize: int | None = None
    rc: int = 2


def _victim(W: Path) -> None:
    (W / "victim.txt").write_text("precious")


def _link(name: str) -> Callable[[Path], None]:
    def setup(W: Path) -> None:
        _victim(W)
        os.symlink(W / "victim.txt", W / name)

    return setup


def _victim_intact(W: Path) -> str | None:
    return None if (W / "victim.txt").read_bytes() == b"precious" else "the file behind the symlink was overwritten"


def _absent(*rel: str) -> Callable[[Path], str | None]:
    def check(W: Path) -> str | None:
        found = [r for r in rel if os.path.lexists(W / r)]
        return f"created {found}" if found else None

    return check


def _unchanged(rel: str, content: bytes) -> tuple[Callable[[Path], None], Callable[[Path], str | None]]:
    def setup(W: Path) -> None:
        (W / rel).write_bytes(content)

    def check(W: Path) -> str | None:
        return None if (W / rel).read_bytes() == content else f"{rel} was overwritten"

    return setup, check


def _npy_bytes() -> bytes:
    import io

    import numpy as np

    buf = io.BytesIO()
    np.save(buf, np.arange(5.0))
    return buf.getvalue()


def cases() -> list[Case]:
    out: list[Case] = []
    add = out.append
    inf = ["influence", "--arch", "logreg", "--quiet"]

    # ------------------------------------------------------------------------------------------------- outputs
    add(
        Case(
            "outputs",
            "influence --out symlink",
            ("--out", "link"),
            argv=[*inf, "--out", "{W}/s.npy"],
            setup=_link("s.npy"),
            check=_victim_intact,
        )
    )
    add(
        Case(
            "outputs",
            "influence --out DIR",
            ("--out", "director"),
            argv=[*inf, "--out", "{W}/d"],
            setup=lambda W: (W / "d").mkdir(),
            check=_absent("d.npy"),
        )
    )
    s, c = _unchanged("other.npy", _npy_bytes())
    add(
        Case(
            "outputs",
            "influence --resume on a foreign .npy",
            ("--out", "score file", "manifest"),
            argv=[*inf, "--out", "{W}/other.npy", "--resume"],
            setup=s,
            check=c,
        )
    )
    s, c = _unchanged("text.npy", b"hello\n")
    add(
        Case(
            "outputs",
            "influence --resume on a text file",
            ("--out", "score file", "manifest"),
            argv=[*inf, "--out", "{W}/text.npy", "--resume"],
            setup=s,
            check=c,
        )
    )
    add(
        Case(
            "outputs",
            "influence --out on a full disk",
            ("s.npy",),
            argv=[*inf, "--out", "{W}/s.npy", "--test-index", *map(str, range(60))],
            fsize=200_000,
            rc=1,
            check=_absent("s.npy"),
        )
    )
    add(
        Case(
            "outputs",
            "faithfulness --name ../../escaped",
            ("--name",),
            argv=[*TINY_FAITH, "--out", "{W}/a/b/faith", "--name", "../../escaped"],
            check=_absent("a/escaped.json", "a/escaped.md", "escaped.json"),
        )
    )
    add(
        Case(
            "outputs",
            "faithfulness --name a/b",
            ("--name",),
            argv=[*TINY_FAITH, "--out", "{W}/f", "--name", "sub/x"],
            check=_absent("f/sub"),
        )
    )
    add(
        Case(
            "outputs",
            "lds study --name ../x",
            ("--name",),
            argv=[
                "lds",
                "study",
                *SMALL_LDS,
                "--samplers",
                "random",
                "--m",
                "8",
                "--sampler-seeds",
                "1",
                "--out",
                "{W}/l",
                "--name",
                "../x",
                "--cache",
                "{W}/cache",
            ],
            check=_absent("x.json"),
        )
    )
    add(
        Case(
            "outputs",
            "lds study --out FILE",
            ("--out",),
            argv=[
                "lds",
                "study",
                *SMALL_LDS,
                "--samplers",
                "random",
                "--m",
                "8",
                "--sampler-seeds",
                "1",
                "--out",
                "{W}/afile",
                "--cache",
                "{W}/cache",
            ],
            setup=lambda W: (W / "afile").write_text("x"),
            check=_absent("cache"),
        )
    )
    add(
        Case(
            "outputs",
            "lds score --json /dev/full",
            ("--json",),
            argv=["lds", "score", *SMALL_LDS, "--json", "/dev/full", "--cache", "{W}/cache"],
            check=_absent("cache"),
        )
    )
    add(
        Case(
            "outputs",
            "lds score --json symlink",
            ("--json", "link"),
            argv=["lds", "score", *SMALL_LDS, "--json", "{W}/r.json", "--cache", "{W}/cache"],
            setup=_link("r.json"),
            check=_victim_intact,
        )
    )
    add(
        Case(
            "outputs",
            "lds score --save-test-indices in a missing folder",
            ("--save-test-indices",),
            argv=["lds", "score", *SMALL_LDS, "--save-test-indices", "{W}/no/idx.npy", "--cache", "{W}/cache"],
            check=_absent("cache", "no"),
        )
    )
    add(
        Case(
            "outputs",
            "lds score --cache is a file",
            ("--cache",),
            argv=["lds", "score", *SMALL_LDS, "--cache", "{W}/afile"],
            setup=lambda W: (W / "afile").write_text("x"),
        )
    )
    add(
        Case(
            "outputs",
            "lds score --scores missing",
            ("--scores",),
            argv=["lds", "score", *SMALL_LDS, "--scores", "{W}/missing.npy", "--cache", "{W}/cache"],
            check=_absent("cache"),
        )
    )
    add(
        Case(
            "outputs",
            "lds score --scores text file",
            ("--scores",),
            argv=["lds", "score", *SMALL_LDS, "--scores", "{W}/t.npy", "--cache", "{W}/cache"],
            setup=lambda W: (W / "t.npy").write_text("not an array\n"),
            check=_absent("cache"),
        )
    )
    add(
        Case(
            "outputs",
            "validate --json symlink",
            ("--json", "link"),
            argv=["validate", "--n-test", "1", "--n-retrain", "2", "--json", "{W}/v.json"],
            setup=_link("v.json"),
            check=_victim_intact,
        )
    )
    add(
        Case(
            "outputs",
            "removal --report in a missing folder",
            ("--report", "--runs"),
            argv=["removal", "--report", "{W}/new/r.md", "--runs", "{W}/none"],
            check=_absent("new"),
        )
    )
    add(
        Case(
            "outputs",
            "API scores(out=symlink)",
            ("out", "link"),
            prelude=FITTED,
            code="calc.scores(ds.X_test, ds.y_test, out='{W}/s.npy')",
            setup=_link("s.npy"),
            check=_victim_intact,
        )
    )
    add(
        Case(
            "outputs",
            "API scores(out=DIR)",
            ("out", "director"),
            prelude=FITTED,
            code="calc.scores(ds.X_test, ds.y_test, out='{W}/d')",
            setup=lambda W: (W / "d").mkdir(),
        )
    )
    add(
        Case(
            "outputs",
            "kfac factor_file in a missing folder",
            ("factor_file",),
            prelude=MODEL,
            code="InfluenceCalculator(model, ds.X_train, ds.y_train).fit(solver='ekfac', damping=0.01, "
            "curvature='gauss_newton', factor_file='{W}/new/f.npz')",
            check=_absent("new"),
        )
    )
    add(
        Case(
            "outputs",
            "kfac factor_file symlink",
            ("factor_file", "link"),
            prelude=MODEL,
            code="InfluenceCalculator(model, ds.X_train, ds.y_train).fit(solver='ekfac', damping=0.01, "
            "curvature='gauss_newton', factor_file='{W}/f.npz')",
            setup=_link("f.npz"),
            check=_victim_intact,
        )
    )
    add(
        Case(
            "outputs",
            "faithfulness write_outputs name with a path",
            ("name",),
            prelude="from influence_core.studies.faithfulness import write_outputs",
            code="write_outputs(None, '{W}/o', '../evil')",
            check=_absent("evil.json", "o"),
        )
    )

    add(
        Case(
            "outputs",
            "influence --out without .npy",
            ("--out", ".npy"),
            argv=[*inf, "--out", "{W}/scores"],
            check=_absent("scores.npy", "scores"),
        )
    )
    add(
        Case(
            "outputs",
            "lds score --save-test-indices symlink",
            ("--save-test-indices", "link"),
            argv=["lds", "score", *SMALL_LDS, "--save-test-indices", "{W}/i.npy", "--cache", "{W}/cache"],
            setup=_link("i.npy"),
            check=_victim_intact,
        )
    )
    add(
        Case(
            "outputs",
            "lds score --scores .npy of Python objects",
            ("--scores",),
            argv=["lds", "score", *SMALL_LDS, "--scores", "{W}/o.npy", "--cache", "{W}/cache"],
            setup=lambda W: __import__("numpy").save(
                W / "o.npy", __import__("numpy").array([{}, 1], dtype=object), allow_pickle=True
            ),
            check=_absent("cache"),
        )
    )
    add(
        Case(
            "outputs",
            "lds study output file is a symlink",
            ("link", "--out", "--name"),
            argv=[
                "lds",
                "study",
                *SMALL_LDS,
                "--samplers",
                "random",
                "--m",
                "8",
                "--sampler-seeds",
                "1",
                "--out",
                "{W}",
                "--name",
                "r",
                "--cache",
                "{W}/cache",
            ],
            setup=_link("r.json"),
            check=_victim_intact,
        )
    )
    add(
        Case(
            "outputs",
            "faithfulness --name ''",
            ("--name",),
            argv=[*TINY_FAITH, "--out", "{W}/f", "--name", ""],
            check=_absent("f"),
        )
    )
    add(
        Case(
            "outputs",
            "load_npz dangling symlink",
            ("link", "no such"),
            prelude="from influence_core import load_npz",
            setup=lambda W: os.symlink(W / "nothing.npz", W / "d.npz"),
            code="load_npz('{W}/d.npz')",
        )
    )

    # --------------------------------------------------------------------------------------- numbers: LDS
    add(
        Case(
            "numbers",
            "LDS identical masks",
            ("mask", "identical", "subsets"),
            prelude=LDS,
            code="print(linear_datamodeling_score(S, np.repeat(M[:1], 6, 0), Y)['lds'])",
        )
    )
    add(
        Case(
            "numbers",
            "LDS all-True masks",
            ("mask",),
            prelude=LDS,
            code="print(linear_datamodeling_score(S, np.ones_like(M), Y)['lds'])",
        )
    )
    add(
        Case(
            "numbers",
            "LDS constant scores",
            ("scores", "constant"),
            prelude=LDS,
            code="print(linear_datamodeling_score(np.ones_like(S), M, Y)['lds'])",
        )
    )
    add(
        Case(
            "numbers",
            "LDS constant outputs",
            ("outputs", "constant"),
            prelude=LDS,
            code="print(linear_datamodeling_score(S, M, np.ones_like(Y))['lds'])",
        )
    )
    add(
        Case(
            "numbers",
            "LDS complex scores",
            ("complex",),
            prelude=LDS,
            code="print(linear_datamodeling_score(S + 1j, M, Y)['lds'])",
        )
    )
    add(
        Case(
            "numbers",
            "LDS string scores",
            ("scores",),
            prelude=LDS,
            code="print(linear_datamodeling_score(S.astype(str), M, Y)['lds'])",
        )
    )
    add(
        Case(
            "numbers",
            "LDS complex outputs",
            ("outputs", "complex"),
            prelude=LDS,
            code="print(linear_datamodeling_score(S, M, Y + 1j)['lds'])",
        )
    )
    add(
        Case(
            "numbers",
            "output_values label -1",
            ("label",),
            prelude=LDS,
            code="print(output_values(rng.normal(size=(3, 4)), np.array([0, 1, -1])))",
        )
    )
    add(
        Case(
            "numbers",
            "output_values label 7 of 4 classes",
            ("label",),
            prelude=LDS,
            code="print(output_values(rng.normal(size=(3, 4)), np.array([0, 1, 7])))",
        )
    )
    add(
        Case(
            "numbers",
            "output_values label 1.5",
            ("label",),
            prelude=LDS,
            code="print(output_values(rng.normal(size=(3, 4)), np.array([0, 1, 1.5])))",
        )
    )
    lds_obj = (
        "R = RetrainedOutputs(RetrainPlan(n_subsets=6, n_seeds=1), M, rng.normal(size=(1, 6, 5, 3)), "
        "rng.normal(size=(5, 3)), np.array([0, 1, 2, 0, 1]))\n"
    )
    add(
        Case(
            "numbers",
            "lds() fractional test indices",
            ("indices", "test_indices"),
            prelude=LDS + lds_obj,
            code="print(lds(S[:2], R, [0.7, 1.9]).lds)",
        )
    )
    add(
        Case(
            "numbers",
            "lds() boolean test indices",
            ("indices", "test_indices"),
            prelude=LDS + lds_obj,
            code="print(lds(S[:2], R, [True, False]).lds)",
        )
    )

    # ------------------------------------------------------------------------------------ numbers: options
    for setting, value in [
        ("grad_tol", "float('nan')"),
        ("grad_tol", "-1.0"),
        ("max_polish_steps", "-5"),
        ("epochs", "2.5"),
        ("epochs", "'3'"),
        ("batch_size", "0.5"),
        ("hidden", "(2.5,)"),
        ("lr", "'fast'"),
        ("weight_decay", "None"),
        ("polish_steps", "2.5"),
        ("polish_steps", "10**12"),
        ("epochs", "10**9"),
        ("max_polish_steps", "10**15"),
        ("hidden", "(10**9,)"),
        ("dtype", "'float16'"),
    ]:
        extra = "" if setting == "epochs" else ", epochs=1"
        add(
            Case(
                "numbers",
                f"train_model {setting}={value}",
                (setting,),
                prelude=TINY,
                timeout=60,
                code=f"train_model(ds, 'mlp', seed=0, {setting}={value}{extra})",
            )
        )
    add(
        Case(
            "numbers",
            "train_model device='meta'",
            ("device", "meta"),
            prelude=TINY,
            code="train_model(ds, 'logreg', device='meta')",
        )
    )
    add(
        Case(
            "numbers",
            "retrain_outputs threads=-1",
            ("threads",),
            prelude=TINY + "from influence_core.evaluation.lds "
            "import retrain_outputs, RetrainPlan\nm = train_model(ds, 'logreg', seed=0, polish_steps=5)",
            code="retrain_outputs(m, ds, RetrainPlan(n_subsets=2, n_seeds=1), cache_dir=False, threads=-1)",
        )
    )
    add(
        Case(
            "numbers",
            "retrain_outputs threads=10**6",
            ("threads",),
            prelude=TINY + "from influence_core.evaluation"
            ".lds import retrain_outputs, RetrainPlan\nm = train_model(ds, 'logreg', seed=0, polish_steps=5)",
            code="retrain_outputs(m, ds, RetrainPlan(n_subsets=2, n_seeds=1), cache_dir=False, threads=10**6)",
        )
    )
    add(
        Case(
            "numbers",
            "CLI lds score --threads 10**6",
            ("--threads",),
            argv=["lds", "score", *SMALL_LDS, "--threads", "1000000", "--cache", "{W}/cache"],
            check=_absent("cache"),
        )
    )
    add(
        Case(
            "numbers",
            "top_influences complex scores",
            ("complex", "real", "scores"),
            prelude=MODEL,
            code="print(top_influences(np.array([1 + 1j, 2, 3])))",
        )
    )
    add(
        Case(
            "numbers",
            "CLI lds score --alpha nan",
            ("--alpha", "alpha"),
            argv=["lds", "score", *SMALL_LDS, "--alpha", "nan", "--cache", "{W}/cache"],
            check=_absent("cache"),
        )
    )
    add(Case("numbers", "train_model seed=-1", ("seed",), prelude=TINY, code="train_model(ds, 'logreg', seed=-1)"))
    add(Case("numbers", "train_model seed=2.5", ("seed",), prelude=TINY, code="train_model(ds, 'logreg', seed=2.5)"))
    add(
        Case(
            "numbers",
            "calculator chunk_size=2.5",
            ("chunk_size",),
            prelude=MODEL,
            code="InfluenceCalculator(model, ds.X_train, ds.y_train, chunk_size=2.5)",
        )
    )
    add(
        Case(
            "numbers",
            "scores test_chunk_size=2.5",
            ("test_chunk_size",),
            prelude=FITTED,
            code="calc.scores(ds.X_test, ds.y_test, test_chunk_size=2.5)",
        )
    )
    add(
        Case(
            "numbers",
            "fit hessian_weights strings",
            ("weight",),
            prelude=MODEL,
            code="InfluenceCalculator(model, ds.X_train, ds.y_train).fit([0, 1, 2], ['a', 'b', 'c'], damping=0.1)",
        )
    )
    add(
        Case(
            "numbers",
            "fit hessian_weights negative",
            ("weight",),
            prelude=MODEL,
            code="InfluenceCalculator(model, ds.X_train, ds.y_train).fit([0, 1, 2], [1, -1, 1], damping=0.1)",
        )
    )
    add(
        Case(
            "numbers",
            "fit hessian_indices 1.5",
            ("indices", "hessian_indices"),
            prelude=MODEL,
            code="InfluenceCalculator(model, ds.X_train, ds.y_train).fit([0, 1.5, 2], damping=0.1)",
        )
    )
    add(
        Case(
            "numbers",
            "dataset_from_arrays test_fraction='0.2'",
            ("test_fraction",),
            prelude=TINY,
            code="dataset_from_arrays(X, y, test_fraction='0.2')",
        )
    )
    add(
        Case(
            "numbers", "dataset_from_arrays seed=-1", ("seed",), prelude=TINY, code="dataset_from_arrays(X, y, seed=-1)"
        )
    )
    add(
        Case(
            "numbers",
            "dataset_from_arrays seed=2**40",
            ("seed",),
            prelude=TINY,
            code="dataset_from_arrays(X, y, seed=2**40)",
        )
    )
    add(
        Case(
            "numbers",
            "load_dataset digits seed=2.5",
            ("seed",),
            prelude="from influence_core import load_dataset",
            code="load_dataset('digits', seed=2.5)",
        )
    )
    add(
        Case(
            "numbers",
            "mnist1d train_split=1.5",
            ("train_split",),
            prelude="from influence_core import load_dataset",
            code="load_dataset('mnist1d', train_split=1.5)",
        )
    )
    add(
        Case(
            "numbers",
            "mnist1d num_samples=2500.7",
            ("num_samples",),
            prelude="from influence_core import load_dataset",
            code="load_dataset('mnist1d', num_samples=2500.7)",
        )
    )
    add(
        Case(
            "numbers",
            "CLI lds score --threads -1",
            ("--threads",),
            argv=["lds", "score", *SMALL_LDS, "--threads", "-1", "--cache", "{W}/cache"],
            check=_absent("cache"),
        )
    )
    add(
        Case(
            "numbers",
            "CLI lds score --subsets 10**9",
            ("--subsets", "n_subsets"),
            argv=["lds", "score", *SMALL_LDS[:4], "--subsets", "1000000000", "--cache", "{W}/cache"],
        )
    )
    add(Case("numbers", "CLI influence --seed -1", ("--seed", "seed"), argv=[*inf, "--seed", "-1"]))
    add(Case("numbers", "CLI influence --seed 2**40", ("--seed", "seed"), argv=[*inf, "--seed", str(2**40)]))
    add(
        Case(
            "numbers",
            "CLI faithfulness --seeds 0",
            ("--seeds", "n_seeds"),
            argv=[*TINY_FAITH[:-5], "--seeds", "0", "--out", "{W}/f"],
        )
    )

    # ------------------------------------------------------------------------------------- errors that hide
    for label, ex in [("'bogus'", "'bogus'"), ("object()", "object()"), ("unreachable tcp", "'tcp://127.0.0.1:9'")]:
        add(
            Case(
                "errors",
                f"scores executor={label}",
                ("executor", "scheduler"),
                prelude=FITTED,
                timeout=60,
                code=f"calc.scores(ds.X_test, ds.y_test, executor={ex})",
            )
        )
    add(
        Case(
            "errors",
            "kfac factor_file of random bytes",
            ("factor_file",),
            prelude=MODEL,
            setup=lambda W: (W / "f.npz").write_bytes(os.urandom(4000)),
            code="InfluenceCalculator(model, ds.X_train, ds.y_train).fit(solver='ekfac', damping=0.01, "
            "curvature='gauss_newton', factor_file='{W}/f.npz')",
        )
    )
    add(
        Case(
            "errors",
            "kfac factor_file .npy of objects",
            ("factor_file",),
            prelude=MODEL,
            setup=lambda W: __import__("numpy").save(
                open(W / "f.npz", "wb"), __import__("numpy").array([{}, 1], dtype=object), allow_pickle=True
            ),
            code="InfluenceCalculator(model, ds.X_train, ds.y_train).fit(solver='ekfac', damping=0.01, "
            "curvature='gauss_newton', factor_file='{W}/f.npz')",
        )
    )
    add(
        Case(
            "errors",
            "dataset_from_arrays ragged lists",
            ("X_train",),
            prelude=TINY,
            code="dataset_from_arrays([[1, 2], [3]] * 20, y)",
        )
    )
    add(
        Case(
            "errors",
            "dataset_from_arrays string arrays",
            ("X_train",),
            prelude=TINY,
            code="dataset_from_arrays(X.astype(str), y)",
        )
    )
    add(
        Case(
            "errors",
            "dataset_from_arrays uint64 label 2**63+5",
            ("label", "y_train"),
            prelude=TINY,
            code="yy = y.astype(np.uint64); yy[3] = 2**63 + 5; dataset_from_arrays(X, yy, X, y)",
        )
    )
    add(
        Case(
            "errors",
            "load_npz text stream",
            ("load_npz", "npz", "source"),
            prelude="import io\nfrom influence_core import load_npz",
            code="load_npz(io.StringIO('hello'))",
        )
    )
    add(
        Case(
            "errors",
            "load_npz integer",
            ("load_npz", "npz", "source"),
            prelude="from influence_core import load_npz",
            code="load_npz(5)",
        )
    )
    add(
        Case(
            "errors",
            "load_npz directory",
            ("director",),
            prelude="from influence_core import load_npz",
            code="load_npz('{W}')",
        )
    )
    add(
        Case(
            "errors",
            "load_npz FIFO",
            ("fifo", "not a regular file", "pipe"),
            prelude="from influence_core import load_npz",
            setup=lambda W: os.mkfifo(W / "p.npz"),
            code="load_npz('{W}/p.npz')",
        )
    )
    add(
        Case(
            "errors",
            "load_npz symlink to /dev/zero",
            ("not a regular file", "device", "link"),
            prelude="from influence_core import load_npz",
            setup=lambda W: os.symlink("/dev/zero", W / "z.npz"),
            code="load_npz('{W}/z.npz')",
        )
    )
    add(
        Case(
            "errors",
            "calculator label 7 of 2 classes",
            ("label", "y_train"),
            prelude=MODEL,
            code="yy = ds.y_train.copy(); yy[0] = 7; InfluenceCalculator(model, ds.X_train, yy).fit(damping=0.1)",
        )
    )
    add(
        Case(
            "errors",
            "scores label 7 of 2 classes",
            ("y_test", "label"),
            prelude=FITTED,
            code="calc.scores(ds.X_test, np.array([7] * len(ds.X_test)))",
        )
    )
    add(
        Case(
            "errors",
            "calculator loss_fn returns a scalar",
            ("loss_fn", "loss"),
            prelude=MODEL,
            code="import torch.nn.functional as F\nc = InfluenceCalculator(model, Xf, ds.y_train, "
            "loss_fn=lambda z, t: F.cross_entropy(z, t)).fit(damping=0.1, curvature='hessian')\n"
            "c.scores(ds.X_test, ds.y_test)",
        )
    )
    add(
        Case(
            "errors",
            "calculator output_fn returns numpy",
            ("output_fn",),
            prelude=MODEL,
            code="c = InfluenceCalculator(model, Xf, ds.y_train, output_fn=lambda o: o.detach().numpy())"
            ".fit(damping=0.1)\nc.scores(ds.X_test, ds.y_test)",
        )
    )
    add(
        Case(
            "errors",
            "calculator model on meta device",
            ("model", "meta", "device"),
            prelude=MODEL,
            code="InfluenceCalculator(torch.nn.Linear(4, 2, device='meta'), Xf, ds.y_train).fit(damping=0.1)",
        )
    )
    add(
        Case(
            "errors",
            "calculator float16 model",
            ("float16", "dtype"),
            prelude=MODEL,
            code="InfluenceCalculator(torch.nn.Linear(4, 2).half(), Xf, ds.y_train).fit(damping=0.1)",
        )
    )
    for value in ("'small'", "None", "float('nan')"):
        add(
            Case(
                "errors",
                f"fit damping={value}",
                ("damping",),
                prelude=MODEL,
                code=f"InfluenceCalculator(model, ds.X_train, ds.y_train).fit(damping={value})",
            )
        )
    add(
        Case(
            "errors",
            "calculator chunk_size='big'",
            ("chunk_size",),
            prelude=MODEL,
            code="InfluenceCalculator(model, ds.X_train, ds.y_train, chunk_size='big')",
        )
    )
    add(
        Case(
            "errors",
            "scores integer X_test of a float model",
            ("X_test",),
            prelude=FITTED,
            code="S = calc.scores(np.round(ds.X_test * 10).astype(np.int64), ds.y_test)\n"
            "assert np.allclose(S, calc.scores(np.round(ds.X_test * 10), ds.y_test)); print('ok')",
            succeed=True,
        )
    )
    add(
        Case(
            "errors",
            "scores string X_test",
            ("X_test",),
            prelude=FITTED,
            code="calc.scores(ds.X_test.astype(str), ds.y_test)",
        )
    )
    add(
        Case(
            "errors",
            "scores ragged X_test",
            ("X_test",),
            prelude=FITTED,
            code="calc.scores([[1.0, 2.0], [3.0]], [0, 1])",
        )
    )
    add(
        Case(
            "errors",
            "top_influences(['a', 'b'])",
            ("scores", "top_influences"),
            prelude=MODEL,
            code="top_influences(['a', 'b'])",
        )
    )
    add(
        Case(
            "errors",
            "train_model device='cuda' without CUDA",
            ("device",),
            prelude=TINY,
            code="train_model(ds, 'logreg', device='cuda')",
        )
    )
    add(
        Case(
            "errors",
            "train_model((X, y, Xt, yt))",
            ("dataset",),
            prelude=TINY,
            code="train_model((X, y, X, y), 'logreg')",
        )
    )
    add(
        Case(
            "errors",
            "bench query --hessian foo",
            ("--hessian",),
            argv=["bench", "query", "--configs", "digits:logreg", "--hessian", "foo"],
        )
    )
    add(
        Case(
            "errors",
            "removal --report with a damaged run JSON",
            ("results.json", "run"),
            argv=["removal", "--report", "{W}/r.md", "--runs", "{W}/run"],
            setup=lambda W: ((W / "run").mkdir(), (W / "run" / "results.json").write_text("{broken")),
        )
    )
    add(
        Case(
            "errors",
            "faithfulness tiny run (valid input)",
            (),
            succeed=True,
            timeout=240,
            argv=[*TINY_FAITH, "--out", "{W}/f"],
        )
    )

    # ---------------------------------------------------------------------------------------- work without end
    add(
        Case(
            "unbounded",
            "mnist1d num_samples=10**9",
            ("num_samples",),
            timeout=60,
            prelude="from influence_core import load_dataset",
            code="load_dataset('mnist1d', num_samples=10**9)",
        )
    )
    add(
        Case(
            "unbounded",
            "CG max_iter=10**30 tol=1e-300",
            ("stagnat", "max_iter", "tol"),
            timeout=60,
            prelude="import torch\nfrom influence_core.solvers.cg import solve_cg\n"
            "A = torch.randn(30, 30, dtype=torch.float64, generator=torch.Generator().manual_seed(0))\n"
            "A = A @ A.T + torch.eye(30, dtype=torch.float64)",
            code="r = solve_cg(lambda V: V @ A, torch.ones(2, 30, dtype=torch.float64), 0.0, max_iter=10**30, "
            "tol=1e-300, on_nonconvergence='raise')",
        )
    )
    add(
        Case(
            "unbounded",
            "LiSSA max_iter=10**30 tol=1e-300",
            ("stagnat", "max_iter", "tol"),
            timeout=60,
            prelude="import torch\nfrom influence_core.solvers.lissa import solve_lissa\n"
            "A = torch.randn(30, 30, dtype=torch.float64, generator=torch.Generator().manual_seed(0))\n"
            "A = A @ A.T / 30 + torch.eye(30, dtype=torch.float64)",
            code="r = solve_lissa(lambda V: V @ A, torch.ones(2, 30, dtype=torch.float64), 0.0, max_iter=10**30, "
            "tol=1e-300, on_nonconvergence='raise')",
        )
    )
    add(
        Case(
            "unbounded",
            "draw_subsets n_subsets=10**12",
            ("n_subsets", "K"),
            timeout=60,
            prelude="from influence_core.evaluation.lds import draw_subsets",
            code="draw_subsets(100, 10**12, 0.5)",
        )
    )
    add(
        Case(
            "unbounded",
            "mnist1d num_samples=10**7 via CLI",
            ("num_samples", "--dataset"),
            timeout=60,
            prelude="from influence_core import load_dataset",
            code="load_dataset('mnist1d', num_samples=10**7)",
        )
    )
    return out


# ------------------------------------------------------------------------------------------------ the runner
API_RUNNER = """
import json, sys, traceback
def _report(**kw):
    sys.__stdout__.write("\\n@@RESULT@@" + json.dumps(kw) + "\\n"); sys.__stdout__.flush()
try:
{body}
except BaseException as exc:
    tb = traceback.extract_tb(exc.__traceback__)
    _report(outcome="raised", type=type(exc).__name__, mro=[c.__name__ for c in type(exc).__mro__],
            message=str(exc)[:2000], where=f"{{tb[-1].filename}}:{{tb[-1].lineno}}" if tb else "")
else:
    _report(outcome="returned")
"""


def _limits(fsize: int | None) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (AS_LIMIT, AS_LIMIT))
        if fsize is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
        os.setsid()

    return apply


def run_case(case: Case, root: Path) -> dict:
    with tempfile.TemporaryDirectory(prefix="hostile-") as tmp:
        W = Path(tmp)
        if case.setup:
            case.setup(W)
        env = {**os.environ, "PYTHONPATH": str(root), "MPLBACKEND": "Agg", "INFLUENCE_LDS_CACHE": str(W / "dcache")}
        if case.argv:
            cmd = [PY, "-m", "influence_core", *[a.replace("{W}", str(W)) for a in case.argv]]
        else:
            body = textwrap.indent(case.prelude.strip() + "\n" + case.code.replace("{W}", str(W)), "    ")
            cmd = [PY, "-c", API_RUNNER.format(body=body)]
        start = time.perf_counter()
        proc = subprocess.Popen(
            cmd,
            cwd=W,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=_limits(case.fsize),
        )
        try:
            stdout, stderr = proc.communicate(timeout=case.timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return {"outcome": "hang", "detail": f"still running after {case.timeout:.0f} s"}
        seconds = time.perf_counter() - start
        try:
            violation = case.check(W) if case.check else None
        except OSError as exc:
            violation = f"post-condition unreadable: {exc}"
    record = {"seconds": round(seconds, 2), "rc": proc.returncode}
    return record | classify(case, proc.returncode, stdout, stderr, violation)


def _names(case: Case, message: str) -> bool:
    low = message.lower()
    return not case.names or any(n.lower() in low for n in case.names)


def classify(case: Case, rc: int, stdout: str, stderr: str, violation: str | None) -> dict:
    if rc < 0 or rc in (137, 139) or "MemoryError" in stderr:
        return {"outcome": "crash", "detail": f"rc {rc}: {stderr.strip()[-300:]}"}
    if violation:
        return {"outcome": "silent", "detail": violation}
    if case.argv:
        lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
        if case.succeed:
            return {"outcome": "clean" if rc == 0 else "unclear", "detail": (lines or [""])[-1][:300]}
        if rc == 0:
            return {"outcome": "silent", "detail": "exit 0"}
        last = lines[-1] if lines else ""
        one = len(lines) == 1 and last.startswith("error:") and "Traceback" not in stderr
        good = rc == case.rc and one and _names(case, last) and "allow_pickle" not in last
        return {"outcome": "clean" if good else "unclear", "detail": last[:300]}
    marker = [ln for ln in stdout.splitlines() if ln.startswith("@@RESULT@@")]
    if not marker:
        return {"outcome": "crash", "detail": f"rc {rc}, no result: {stderr.strip()[-300:]}"}
    res = json.loads(marker[-1][len("@@RESULT@@") :])
    if case.succeed:
        return {
            "outcome": "clean" if res["outcome"] == "returned" else "unclear",
            "detail": f"{res.get('type', '')}: {res.get('message', '')}"[:300],
        }
    if res["outcome"] == "returned":
        return {"outcome": "silent", "detail": "returned without an error"}
    if res["type"] == "MemoryError":
        return {"outcome": "crash", "detail": "MemoryError"}
    message = res["message"]
    good = (
        (set(res["mro"]) & OWN_ERRORS)
        and "\n" not in message.strip()
        and len(message) < 600
        and _names(case, message)
        and "allow_pickle" not in message
        and res["type"] not in ("UnboundLocalError", "IndexError", "AssertionError")
    )
    return {"outcome": "clean" if good else "unclear", "detail": f"{res['type']}: {message}"[:300]}


OUTCOMES = ("clean", "unclear", "silent", "hang", "crash")


def markdown(before: dict, after: dict) -> str:
    """A before/after table per class of fault and one line per case whose outcome changed or is not clean."""
    classes = sorted({c["class"] for c in before["cases"] + after["cases"]})
    lines = ["| | " + " | ".join(OUTCOMES) + " |", "|---|" + "---:|" * len(OUTCOMES)]
    for label, rec in (("before", before), ("after", after)):
        lines.append(
            f"| **{label}** (all {len(rec['cases'])}) | " + " | ".join(str(rec["counts"][o]) for o in OUTCOMES) + " |"
        )
        for cls in classes:
            cases = [c for c in rec["cases"] if c["class"] == cls]
            lines.append(
                f"| {label}: {cls} ({len(cases)}) | "
                + " | ".join(str(sum(c["outcome"] == o for c in cases)) for o in OUTCOMES)
                + " |"
            )
    old = {c["case"]: c for c in before["cases"]}
    lines += ["", "| case | before | after | after: message or reason |", "|---|---|---|---|"]
    for c in after["cases"]:
        b = old.get(c["case"], {}).get("outcome", "-")
        detail = c.get("detail", "").replace("|", "\\|").replace("\n", " ")[:140]
        lines.append(f"| {c['case']} | {b} | {c['outcome']} | {detail} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(Path(__file__).resolve().parents[1]), help="checkout under test")
    parser.add_argument("--json", default=None, help="write every case and the counts to this JSON file")
    parser.add_argument("--only", nargs="+", default=None, help="run only the cases whose name contains one of these")
    parser.add_argument(
        "--merge",
        default=None,
        metavar="JSON",
        help="with --json: take the other cases from this earlier result file (a partial rerun)",
    )
    parser.add_argument(
        "--compare",
        nargs=2,
        metavar=("BEFORE", "AFTER"),
        default=None,
        help="no run: print the Markdown comparison of two result files",
    )
    args = parser.parse_args()
    if args.compare:
        print(markdown(*(json.loads(Path(f).read_text()) for f in args.compare)), end="")
        return 0
    root = Path(args.root).resolve()
    chosen = [c for c in cases() if args.only is None or any(o in c.name for o in args.only)]
    results = []
    for case in chosen:
        res = run_case(case, root)
        results.append({"class": case.cls, "case": case.name, **res})
        print(f"{res['outcome']:8s} {case.cls:9s} {case.name}: {res.get('detail', '')[:150]}", flush=True)
    if args.merge:
        rerun = {r["case"] for r in results}
        earlier = json.loads(Path(args.merge).read_text())["cases"]
        order = [c.name for c in cases()]
        results = sorted(
            [r for r in earlier if r["case"] not in rerun] + results,
            key=lambda r: order.index(r["case"]) if r["case"] in order else len(order),
        )
    counts = {k: sum(r["outcome"] == k for r in results) for k in OUTCOMES}
    print(json.dumps(counts))
    if args.json:
        load = os.getloadavg()
        record = {
            "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
            "root": str(root),
            "counts": counts,
            "loadavg": [round(x, 2) for x in load],
            "address_space_limit": AS_LIMIT,
            "cases": results,
        }
        Path(args.json).write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
