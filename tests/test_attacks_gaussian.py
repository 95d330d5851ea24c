"""PCA / Gaussian view against plain numpy on a fixed case."""

import math

import numpy as np
import pytest

from bridging_tf.attacks import bhattacharyya_coefficient, gaussian_pc_view


def test_gaussian_view_matches_numpy_on_fixed_case():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 50)
    x = rng.normal(size=(100, 5)) * [1.0, 0.8, 0.5, 0.2, 0.1]
    x[:, 0] += np.where(y == 1, 4.0, -4.0)
    view = gaussian_pc_view(x, y, names=["male", "female"])

    xc = x - x.mean(axis=0)
    evals, evecs = np.linalg.eigh(np.cov(xc, rowvar=False))
    pc = evecs[:, -1]
    pc = pc if pc[np.argmax(np.abs(pc))] > 0 else -pc
    proj = xc @ pc
    np.testing.assert_allclose(view.projections, proj, rtol=1e-4, atol=1e-4)
    assert view.explained_variance_ratio == pytest.approx(evals[-1] / evals.sum())
    for c in (0, 1):
        assert view.classes[c]["mean"] == pytest.approx(proj[y == c].mean(), abs=1e-5)
        assert view.classes[c]["std"] == pytest.approx(proj[y == c].std(ddof=0), abs=1e-5)
    assert view.classes[1]["name"] == "female" and view.classes[0]["count"] == 50
    m0, s0, m1, s1 = (view.classes[0]["mean"], view.classes[0]["std"],
                      view.classes[1]["mean"], view.classes[1]["std"])
    bd = (m0 - m1) ** 2 / (4 * (s0 ** 2 + s1 ** 2)) + 0.5 * math.log(
        (s0 ** 2 + s1 ** 2) / (2 * s0 * s1))
    assert view.overlap == pytest.approx(math.exp(-bd))
    assert view.overlap < 0.1  # well separated


def test_bhattacharyya_coefficient_known_values():
    assert bhattacharyya_coefficient(0.0, 1.0, 0.0, 1.0) == pytest.approx(1.0)
    assert bhattacharyya_coefficient(0.0, 1.0, 2.0, 1.0) == pytest.approx(math.exp(-0.5))
    # The paper's IMDB numbers (Fig. 8): Vanilla separated, EnD overlapping.
    vanilla = bhattacharyya_coefficient(-0.42, 0.27, 0.42, 0.47)
    end = bhattacharyya_coefficient(0.09, 0.93, -0.09, 0.91)
    assert vanilla < 0.6 < 0.99 < end


def test_gaussian_view_csv_and_curves(tmp_path):
    rng = np.random.default_rng(1)
    view = gaussian_pc_view(rng.normal(size=(20, 3)), np.arange(20) % 3)
    path = view.to_csv(tmp_path / "pc.csv")
    lines = path.read_text().splitlines()
    assert lines[0] == "projection,private" and len(lines) == 21
    curves = view.curves(50)
    assert set(curves) == {"x", "pdf_0", "pdf_1", "pdf_2"} and len(curves["x"]) == 50
    assert view.overlap_matrix.shape == (3, 3)


def test_constant_embeddings_survive_a_save_load_round_trip():
    import math

    from bridging_tf.attacks.gaussian import GaussianView
    view = gaussian_pc_view(np.ones((10, 4)), np.array([0, 1] * 5))
    info = {**view.to_dict(), "explained_variance_ratio": None}  # NaN is saved as JSON null
    again = GaussianView.from_saved(info, view.arrays())
    assert math.isnan(again.explained_variance_ratio)
