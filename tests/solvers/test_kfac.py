"""K-FAC / EK-FAC against exact Gauss-Newton blocks on small float64 models, weights, files and bad input."""

import numpy as np
import pytest
import torch
from torch import nn

from influence_core import InfluenceCalculator, train_model
from influence_core.curvature.objective import Objective
from influence_core.models.zoo import SmallCNN
from influence_core.sampling.samplers import HessianSample
from influence_core.solvers.factor_io import FactorFileError
from influence_core.solvers.kfac import KFACError, KFACInverse, fit_kfac


@pytest.fixture(scope="module")
def logreg_obj(digits, digits_logreg64):
    return Objective(digits_logreg64, digits.X_train, digits.y_train, digits_logreg64.weight_decay)


@pytest.fixture(scope="module")
def mlp64(digits):
    return train_model(digits, "mlp", seed=0, epochs=5, hidden=(16,), dtype="float64")


@pytest.fixture(scope="module")
def mlp_obj(digits, mlp64):
    return Objective(mlp64, digits.X_train, digits.y_train, mlp64.weight_decay)


@pytest.fixture(scope="module")
def cnn_obj(digits):
    torch.manual_seed(0)
    model = SmallCNN((8, 8), 10, channels=(2, 3), hidden=6).double().eval()
    return Objective(model, digits.X_train[:60], digits.y_train[:60], 1e-3)


def _block_index(block) -> torch.Tensor:
    cols = list(range(*block.weight)) + (list(range(*block.bias)) if block.bias else [])
    return torch.tensor(cols)


def _eigenbasis(inv: KFACInverse, l: int, p: int) -> torch.Tensor:
    """Rows = the flat vectors of the Kronecker eigenbasis q_G[:, o] q_A[:, a]ᵀ of block l, (d_out·d_in, p)."""
    b, f = inv.blocks[l], inv.factors[l]
    Q = torch.einsum("go,ia->oagi", f["qg"], f["qa"]).reshape(b.d_out * b.d_in, b.d_out, b.d_in)
    flat = torch.zeros(len(Q), p, dtype=torch.float64)
    inv._write_layer(flat, b, Q)
    return flat


def test_kfac_one_sample_linear_layer_equals_exact_gauss_newton(logreg_obj):
    obj = logreg_obj
    inv = fit_kfac(obj, [5], method="kfac", fisher="gauss_newton", damping=0.01)
    G = obj.hessian([5], mode="gauss_newton")  # includes wd·I, like inv.dense()
    torch.testing.assert_close(inv.dense(), G, rtol=0, atol=1e-12)
    B = obj.per_sample_grads(obj.X[:3], obj.y[:3])
    exact = torch.linalg.solve(G + 0.01 * torch.eye(obj.n_params, dtype=G.dtype), B.T).T
    torch.testing.assert_close(inv.solve(B).x, exact, rtol=1e-9, atol=1e-12)


def test_kfac_one_sample_each_mlp_block_equals_exact_gauss_newton_block(mlp_obj):
    obj = mlp_obj
    inv = fit_kfac(obj, [7], method="kfac", fisher="gauss_newton")
    G, D = obj.hessian([7], mode="gauss_newton"), inv.dense()
    assert [b.module for b in inv.blocks] == ["body.0", "head"] and not inv.others
    for b in inv.blocks:
        c = _block_index(b)
        torch.testing.assert_close(D[c][:, c], G[c][:, c], rtol=0, atol=1e-13)
    c0, c1 = _block_index(inv.blocks[0]), _block_index(inv.blocks[1])
    assert D[c0][:, c1].abs().max() == 0 and G[c0][:, c1].abs().max() > 1e-6  # block-diagonal by layer


@pytest.mark.parametrize("which", ["logreg", "cnn"])
def test_ekfac_correction_is_exact_diagonal_in_the_eigenbasis(which, logreg_obj, cnn_obj):
    obj = logreg_obj if which == "logreg" else cnn_obj
    gen = np.random.default_rng(0)
    idx = np.sort(gen.choice(obj.n, 40, replace=False))
    w = gen.uniform(0.5, 2.0, size=40)
    inv = fit_kfac(obj, idx, w, method="ekfac", fisher="gauss_newton")
    G = obj.hessian(idx, w, mode="gauss_newton") - obj.weight_decay * torch.eye(obj.n_params, dtype=torch.float64)
    if which == "cnn":
        assert [b.kind for b in inv.blocks] == ["conv2d", "conv2d", "linear", "linear"]
    for l, f in enumerate(inv.factors):
        Q = _eigenbasis(inv, l, obj.n_params)
        exact = torch.einsum("kp,pq,kq->k", Q, G, Q)
        torch.testing.assert_close(f["lam"].reshape(-1), exact, rtol=1e-9, atol=1e-13)
        # K-FAC's eigenvalues λ_G λ_A differ from the exact diagonal on more than one point
        kfac = torch.outer(f["lg"], f["la"]).reshape(-1)
        big = exact > 1e-6 * exact.max()
        assert ((kfac - exact).abs()[big] / exact[big]).max() > 1e-3


def test_weighted_fit_equals_fit_on_duplicated_rows(digits, mlp64):
    X, y = digits.X_train[:30], digits.y_train[:30]
    counts = np.random.default_rng(1).integers(1, 4, size=30)
    dup = np.repeat(np.arange(30), counts)
    weighted = Objective(mlp64, X, y, mlp64.weight_decay)
    duplicated = Objective(mlp64, X[dup], y[dup], mlp64.weight_decay)
    sample = HessianSample(np.arange(30), counts.astype(float), "manual", 30, 0)
    for fisher in ("empirical", "gauss_newton"):
        a = fit_kfac(weighted, sample, method="ekfac", fisher=fisher, chunk_size=7)
        b = fit_kfac(duplicated, None, method="ekfac", fisher=fisher)
        for ca, cb in zip(a.covariances, b.covariances):
            torch.testing.assert_close(ca["A"], cb["A"], rtol=1e-10, atol=1e-14)
            torch.testing.assert_close(ca["G"], cb["G"], rtol=1e-10, atol=1e-14)
        for fa, fb in zip(a.factors, b.factors):
            torch.testing.assert_close(fa["lam"], fb["lam"], rtol=1e-9, atol=1e-14)
        # ...and they differ from the unweighted fit on the 30 distinct rows
        c = fit_kfac(weighted, np.arange(30), method="ekfac", fisher=fisher)
        assert (c.factors[0]["lam"] - a.factors[0]["lam"]).abs().max() > 1e-3 * a.factors[0]["lam"].abs().max()


def test_true_fisher_is_seeded_and_tends_to_gauss_newton(mlp_obj):
    idx = np.arange(50)
    a = fit_kfac(mlp_obj, idx, method="kfac", fisher="true", seed=3)
    b = fit_kfac(mlp_obj, idx, method="kfac", fisher="true", seed=3)
    c = fit_kfac(mlp_obj, idx, method="kfac", fisher="true", seed=4)
    torch.testing.assert_close(a.covariances[1]["G"], b.covariances[1]["G"], rtol=0, atol=0)
    assert not torch.equal(a.covariances[1]["G"], c.covariances[1]["G"])
    many = fit_kfac(mlp_obj, idx, method="kfac", fisher="true", label_samples=400, seed=0)
    exact = fit_kfac(mlp_obj, idx, method="kfac", fisher="gauss_newton")
    for m, e in zip(many.covariances, exact.covariances):
        assert (m["G"] - e["G"]).norm() < 0.1 * e["G"].norm()
        torch.testing.assert_close(m["A"], e["A"])  # A does not depend on the labels
    emp = fit_kfac(mlp_obj, idx, method="kfac", fisher="empirical")
    assert (emp.covariances[1]["G"] - exact.covariances[1]["G"]).norm() > 0.1 * exact.covariances[1]["G"].norm()


def test_heuristic_damping_is_recorded_and_applied(mlp_obj):
    inv = fit_kfac(mlp_obj, np.arange(100), method="ekfac", fisher="gauss_newton", damping="heuristic")
    expected = {b.module: 0.1 * float(f["lam"].mean()) for b, f in zip(inv.blocks, inv.factors)}
    assert inv.damping_used["layers"] == pytest.approx(expected)
    B = mlp_obj.per_sample_grads(mlp_obj.X[:2], mlp_obj.y[:2])
    res = inv.solve(B)
    assert res.info["layer_damping"] == pytest.approx(expected) and res.info["damping_rule"] == "heuristic"
    # per block: (Q diag(Λ + wd + δ_l) Qᵀ) x = b
    for b, f in zip(inv.blocks, inv.factors):
        c = _block_index(b)
        Q = _eigenbasis(inv, inv.blocks.index(b), mlp_obj.n_params)[:, c]
        M = Q.T @ torch.diag(f["lam"].reshape(-1) + mlp_obj.weight_decay + expected[b.module]) @ Q
        torch.testing.assert_close(res.x[:, c] @ M, B[:, c], rtol=1e-8, atol=1e-10)
    undamped = inv.with_damping(0.0).solve(B).x
    assert (undamped - res.x).abs().max() > 1e-3 * res.x.abs().max()


def test_ekfac_scores_close_to_exact_gauss_newton_on_logreg(digits, digits_logreg64, logreg_obj):
    """A sanity check of the scale conventions: same sign and 1/n as the exact Gauss-Newton influence (at
    δ = 0.1; K-FAC of a multinomial logistic regression is only an approximation: Pearson 0.95-0.98 measured)."""
    calc = InfluenceCalculator(digits_logreg64, digits.X_train, digits.y_train)
    calc.fit(None, solver="exact", curvature="gauss_newton", damping=0.1)
    exact = calc.scores(digits.X_test[:4], digits.y_test[:4])
    inv = fit_kfac(logreg_obj, None, method="ekfac", fisher="gauss_newton", damping=0.1)
    S = inv.solve(calc.gradients(digits.X_test[:4], digits.y_test[:4])).x
    approx = calc.scores_from_ihvp(S)
    for t in range(4):
        assert np.corrcoef(exact[t], approx[t])[0, 1] > 0.9
        assert 1 / 3 < np.abs(approx[t]).mean() / np.abs(exact[t]).mean() < 3.0


def test_save_reload_gives_identical_scores_and_cache(tmp_path, digits, mlp64, mlp_obj):
    inv = fit_kfac(mlp_obj, np.arange(0, 400, 2), method="ekfac", fisher="true", damping="heuristic", seed=1)
    path = inv.save(tmp_path)
    assert path.name == f"ekfac-{inv.key}.npz"
    loaded = KFACInverse.load(path, mlp_obj)
    assert loaded.config == inv.config and loaded.damping_used == inv.damping_used
    calc = InfluenceCalculator(mlp64, digits.X_train, digits.y_train)
    B = calc.gradients(digits.X_test[:3], digits.y_test[:3])
    np.testing.assert_array_equal(calc.scores_from_ihvp(inv.solve(B).x), calc.scores_from_ihvp(loaded.solve(B).x))
    # cache_dir: the second fit finds the file for this configuration and loads it (no raw covariances then)
    first = fit_kfac(mlp_obj, np.arange(50), method="kfac", fisher="empirical", cache_dir=tmp_path)
    again = fit_kfac(mlp_obj, np.arange(50), method="kfac", fisher="empirical", cache_dir=tmp_path, damping=0.5)
    assert first.covariances is not None and again.covariances is None and again.damping == 0.5
    other = fit_kfac(mlp_obj, np.arange(51), method="kfac", fisher="empirical", cache_dir=tmp_path)
    assert other.key != first.key and other.covariances is not None
    torch.testing.assert_close(again.with_damping(0.0).solve(B).x, first.solve(B).x, rtol=0, atol=0)


def test_bad_factor_files_give_clear_errors(tmp_path, digits, mlp_obj, logreg_obj):
    inv = fit_kfac(mlp_obj, np.arange(20), method="kfac", fisher="empirical", damping=0.1)
    path = inv.save(tmp_path / "f.npz")
    with pytest.raises(FactorFileError, match="another parameter layout"):
        KFACInverse.load(path, logreg_obj)
    retrained = train_model(digits, "mlp", seed=1, epochs=1, hidden=(16,), dtype="float64")
    with pytest.raises(FactorFileError, match="other parameter values"):
        KFACInverse.load(path, Objective(retrained, digits.X_train, digits.y_train, retrained.weight_decay))
    data = path.read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(FactorFileError, match="corrupt or truncated"):
        KFACInverse.load(tmp_path / "cut.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip file at all")
    with pytest.raises(FactorFileError, match="corrupt or truncated"):
        KFACInverse.load(tmp_path / "junk.npz")
    np.savez(tmp_path / "foreign.npz", a=np.zeros(3))
    with pytest.raises(FactorFileError, match="not a factor file"):
        KFACInverse.load(tmp_path / "foreign.npz")
    with pytest.raises(FactorFileError, match="no factor file"):
        KFACInverse.load(tmp_path / "missing.npz")
    arrays = dict(np.load(path, allow_pickle=False))
    arrays["0.lam"] = arrays["0.lam"][:, :-1]
    np.savez(tmp_path / "shape.npz", **arrays)
    with pytest.raises(FactorFileError, match="shapes"):
        KFACInverse.load(tmp_path / "shape.npz")
    arrays = dict(np.load(path, allow_pickle=False))
    arrays["1.qa"][0, 0] = np.nan
    np.savez(tmp_path / "nan.npz", **arrays)
    with pytest.raises(FactorFileError, match="NaN"):
        KFACInverse.load(tmp_path / "nan.npz")


class _WithNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 12)
        self.norm = nn.BatchNorm1d(12)
        self.head = nn.Linear(12, 10)

    def forward(self, x):
        return self.head(torch.tanh(self.norm(self.fc(x))))


class _Twice(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 64)
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        return self.head(torch.tanh(self.fc(torch.tanh(self.fc(x)))))


def test_unsupported_parameters_error_identity_or_ignore(digits):
    torch.manual_seed(0)
    model = _WithNorm().double().eval()
    obj = Objective(model, digits.X_train[:50], digits.y_train[:50], 1e-3)
    with pytest.raises(KFACError, match=r"norm\.weight \(BatchNorm1d.*other='identity'"):
        fit_kfac(obj, None)
    B = obj.per_sample_grads(obj.X[:2], obj.y[:2])
    ident = fit_kfac(obj, None, fisher="gauss_newton", other="identity", damping=0.1)
    ignore = fit_kfac(obj, None, fisher="gauss_newton", other="ignore", damping=0.1)
    assert [n for n, _, _ in ident.others] == ["norm.weight", "norm.bias"]
    X1, X0 = ident.solve(B).x, ignore.solve(B).x
    for _, a, b in ident.others:
        torch.testing.assert_close(X1[:, a:b], B[:, a:b] / (1e-3 + 0.1))
        assert X0[:, a:b].abs().max() == 0
    kfac_cols = torch.cat([_block_index(b) for b in ident.blocks])
    torch.testing.assert_close(X1[:, kfac_cols], X0[:, kfac_cols])
    with pytest.raises(KFACError, match="more than once"):
        fit_kfac(Objective(_Twice().double(), digits.X_train[:10], digits.y_train[:10]), None)
    prelu = nn.Sequential(nn.Linear(64, 8), nn.PReLU(), nn.Linear(8, 10)).double()
    with pytest.raises(KFACError, match=r"1\.weight \(PReLU, 1 numbers\)"):
        fit_kfac(Objective(prelu, digits.X_train[:10], digits.y_train[:10]), None)
    grouped = nn.Sequential(
        nn.Unflatten(1, (4, 4, 4)), nn.Conv2d(4, 4, 3, groups=2), nn.Flatten(), nn.Linear(16, 10)
    ).double()
    with pytest.raises(KFACError, match=r"1\.weight \(Conv2d, a grouped convolution \(groups=2\)"):
        fit_kfac(Objective(grouped, digits.X_train[:10], digits.y_train[:10]), None)


def test_bad_options_give_clear_errors(mlp_obj):
    with pytest.raises(KFACError, match="unknown method"):
        fit_kfac(mlp_obj, None, method="kfc")
    with pytest.raises(KFACError, match="unknown fisher"):
        fit_kfac(mlp_obj, None, fisher="exact")
    with pytest.raises(KFACError, match="damping"):
        fit_kfac(mlp_obj, None, damping=-1.0)
    with pytest.raises(KFACError, match="damping"):
        fit_kfac(mlp_obj, None, damping="kronfluence")
    with pytest.raises(KFACError, match="label_samples"):
        fit_kfac(mlp_obj, None, label_samples=0)
    with pytest.raises(ValueError, match="weights must have shape"):
        fit_kfac(mlp_obj, np.arange(5), np.ones(4))
    inv = fit_kfac(mlp_obj, np.arange(5), damping=0.1)
    with pytest.raises(ValueError, match=r"right-hand sides must be \(k, "):
        inv.solve(torch.zeros(2, 3, dtype=torch.float64))


def test_float32_model_solve_inverts_the_approximation(digits, digits_mlp):
    obj = Objective(digits_mlp, digits.X_train, digits.y_train, digits_mlp.weight_decay)
    inv = fit_kfac(obj, np.arange(0, 1000, 5), method="ekfac", fisher="true", damping=0.01)
    B = obj.per_sample_grads(obj.X[:4], obj.y[:4])
    X = inv.solve(B).x
    assert X.dtype == torch.float32 and X.shape == B.shape
    back = inv.matmul(X, damping=True)
    assert ((back - B).norm(dim=1) / B.norm(dim=1)).max() < 1e-5


def test_factor_file_paths_create_no_folders_and_follow_no_links(tmp_path, digits, mlp64):
    """A factor_file in a missing folder used to create the folder (even at the filesystem root); a symlink in its
    place was written through; random bytes were reported with numpy's advice to load with allow_pickle=True."""
    calc = InfluenceCalculator(mlp64, digits.X_train, digits.y_train)
    fit = dict(solver="kfac", damping=0.1, curvature="gauss_newton", fisher="empirical")
    with pytest.raises(ValueError, match="factor_file .*the folder .*missing.* does not exist"):
        calc.fit(np.arange(20), factor_file=tmp_path / "missing" / "f.npz", **fit)
    with pytest.raises(ValueError, match="does not exist"):
        calc.fit(np.arange(20), factor_file=tmp_path / "missing" / "factors", **fit)  # a directory two levels down
    assert not (tmp_path / "missing").exists()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / "link.npz").symlink_to(victim)
    with pytest.raises(FactorFileError, match="not a readable factor file"):
        calc.fit(np.arange(20), factor_file=tmp_path / "link.npz", **fit)
    assert victim.read_text() == "precious"
    (tmp_path / "random.npz").write_bytes(np.random.default_rng(0).bytes(4000))
    with pytest.raises(FactorFileError) as info:
        calc.fit(np.arange(20), factor_file=tmp_path / "random.npz", **fit)
    assert "allow_pickle" not in str(info.value) and "not a readable factor file" in str(info.value)
    np.save(tmp_path / "objects.npy", np.array([{}], dtype=object), allow_pickle=True)
    (tmp_path / "objects.npy").rename(tmp_path / "objects.npz")
    with pytest.raises(FactorFileError) as info:
        calc.fit(np.arange(20), factor_file=tmp_path / "objects.npz", **fit)
    assert "allow_pickle" not in str(info.value)
    calc.fit(np.arange(20), factor_file=tmp_path / "factors", **fit)  # one directory named by the user: made
    assert len(list((tmp_path / "factors").glob("kfac-*.npz"))) == 1
