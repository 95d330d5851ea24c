"""AttackResults: save/load round trip (JSON + npz, no pickle), table and summary."""

import json
import zipfile

import numpy as np
import pytest

from bridging_tf.attacks import AttackInputData, AttackResults, AttackType, run_attacks
from bridging_tf.errors import UserError


@pytest.fixture(scope="module")
def results():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    data = AttackInputData(train_embeddings=x[:300], train_private=y[:300],
                           eval_embeddings={"unbiased": x[300:350], "biased": x[350:]},
                           eval_private={"unbiased": y[300:350], "biased": y[350:]},
                           num_private=2, private_names=["male", "female"])
    return run_attacks(data, [AttackType.LINEAR, AttackType.MLP], seed=0, verbose=0,
                       linear_epochs=5, mlp_max_epochs=3)


def test_save_load_round_trip_without_pickle(results, tmp_path):
    results.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["attacks.json", "attacks.npz"]
    doc = json.loads((tmp_path / "attacks.json").read_text())
    assert doc["info"]["primary_split"] == "unbiased"
    with zipfile.ZipFile(tmp_path / "attacks.npz") as z:
        for name in z.namelist():
            np.lib.format.read_array(z.open(name), allow_pickle=False)  # raises on object arrays
    again = AttackResults.load(tmp_path)
    for t in (AttackType.LINEAR, AttackType.MLP):
        for split, metrics in results.get(t).per_split.items():
            assert again.get(t).per_split[split] == pytest.approx(metrics)
        assert again.get(t).history.keys() == results.get(t).history.keys()
    np.testing.assert_array_equal(again.get("linear").arrays["kernel"],
                                  results.get("linear").arrays["kernel"])
    view = again.views["unbiased"]
    assert view.classes == results.views["unbiased"].classes
    np.testing.assert_array_equal(view.projections, results.views["unbiased"].projections)
    assert again.summary() == results.summary()


def test_summary_has_one_sentence_per_attack(results):
    lines = results.summary().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("Linear probe") and "chance 50.0% uniform" in lines[0]
    assert "AUC" in lines[1]


def test_to_table_markdown_and_csv_parse(results):
    md = results.to_table().strip().splitlines()
    header = [c.strip() for c in md[0].strip("|").split("|")]
    assert header[:3] == ["attack", "split", "accuracy"] and "AUC" in header
    assert all(len(line.strip("|").split("|")) == len(header) for line in md[2:])
    assert len(md) == 2 + 4  # 2 attacks x 2 splits
    csv_lines = results.to_table("csv").strip().splitlines()
    assert csv_lines[0].startswith("attack,split,accuracy")
    assert float(csv_lines[1].split(",")[2]) == pytest.approx(
        results.get("linear").per_split["unbiased"]["accuracy"], abs=1e-5)


def test_to_dict_is_strict_json(results):
    text = json.dumps(results.to_dict(), allow_nan=True)
    assert json.loads(text)["attacks"]["linear"]["config"]["lr"] == 0.01


def test_get_missing_attack_and_load_missing_folder(results, tmp_path):
    with pytest.raises(KeyError, match="no decoder attack"):
        results.get(AttackType.DECODER)
    with pytest.raises(UserError, match="no saved attack results"):
        AttackResults.load(tmp_path / "nowhere")
