"""Composable stopping rules: reasons name the rule; bad rules fail at construction."""

import pytest

from agent.core.stopping import Budget, ModelDecided, Plateau, TargetStd, all_of, any_of


def hist(stds, **extra):
    return [{"mu_s_std": s, "cycles": i + 1, **extra} for i, s in enumerate(stds)]


def test_target_std():
    rule = TargetStd("mu_s", 0.01)
    assert rule.check(hist([0.02, 0.011])) is None
    assert rule.check(hist([0.02, 0.0099])).startswith("target_std: std(mu_s)")


def test_plateau_needs_k_updates_and_fires_on_small_improvement():
    rule = Plateau("mu_s", k=3, rel=0.05)
    assert rule.check(hist([1.0, 0.99, 0.99])) is None
    assert rule.check(hist([1.0, 0.5, 0.3, 0.2])) is None
    assert rule.check(hist([1.0, 0.5, 0.49, 0.485, 0.48])).startswith("plateau")


def test_budget_and_combinators():
    h = hist([0.5, 0.4, 0.3])
    assert Budget(cycles=3).check(h).startswith("budget: cycles")
    assert Budget(cycles=4).check(h) is None
    assert any_of(TargetStd("mu_s", 0.01), Budget(cycles=3)).check(h).startswith("budget")
    assert all_of(TargetStd("mu_s", 0.01), Budget(cycles=3)).check(h) is None
    both = all_of(TargetStd("mu_s", 0.4), Budget(cycles=3)).check(h)
    assert "target_std" in both and "budget" in both
    assert (TargetStd("mu_s", 0.01) | Budget(cycles=2)).check(h).startswith("budget")


def test_model_decided():
    assert ModelDecided(0.99).check([{"model_prob_max": 0.995, "model_best": "3-level"}]).startswith("model_decided")
    assert ModelDecided(0.99).check([{"model_prob_max": 0.9}]) is None


@pytest.mark.parametrize("make", [lambda: TargetStd("mu_s", 0), lambda: TargetStd("mu_s", -0.01),
                                  lambda: TargetStd("mu_s", float("nan")), lambda: Budget(cycles=0),
                                  lambda: Plateau("mu_s", k=0), lambda: ModelDecided(1.0), lambda: any_of()])
def test_bad_rules_raise(make):
    with pytest.raises(ValueError):
        make()


def test_unknown_quantity_is_named():
    with pytest.raises(ValueError, match="unknown quantity 'mu'"):
        any_of(TargetStd("mu", 0.01), Budget(cycles=5)).validate(["mu_s", "a3d"])
