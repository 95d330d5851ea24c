"""The public surface other modules code against."""

import bridging_tf.attacks as attacks
import bridging_tf.reporting as reporting
from bridging_tf.attacks import AttackType


def test_attacks_public_symbols():
    assert sorted(attacks.__all__) == sorted([
        "AttackInputData", "AttackResult", "AttackResults", "AttackType", "DEFAULT_OPTIONS",
        "GaussianView", "attacker_advantage", "auc_score", "balanced_accuracy",
        "bhattacharyya_coefficient", "classification_metrics", "first_principal_component",
        "gaussian_pc_view", "mean_ci", "run_attacks"])
    for name in attacks.__all__:
        assert getattr(attacks, name) is not None


def test_attack_types_and_defaults_match_the_paper():
    assert [t.value for t in AttackType] == ["linear", "mlp", "decoder"]
    assert AttackType.parse("MLP") is AttackType.MLP
    d = attacks.DEFAULT_OPTIONS
    assert (d["linear_epochs"], d["linear_lr"], d["linear_batch_size"], d["linear_step_size"],
            d["linear_gamma"]) == (50, 0.01, 256, 20, 0.1)


def test_reporting_public_symbols():
    assert sorted(reporting.__all__) == ["Run", "aggregate", "build_report", "find_runs",
                                         "markdown_tables", "run_row"]
