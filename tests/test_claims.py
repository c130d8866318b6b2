"""The claims' sentences, from fabricated summaries: each flips between supported and not
supported (and "within the spread") as the numbers cross its stated criterion."""

from __future__ import annotations

import json

import pytest
import yaml

from conftest import TINY
from mlp.comparison import claims
from mlp.comparison.claims import KNOWN_CLAIMS, evaluate_claim


def run(settings, acc=None, **numbers):
    """One summary entry; ``acc`` a float or a (min, max) pair."""
    entry = {"settings": settings, "run_dirs": []}
    if acc is not None:
        low, high = acc if isinstance(acc, tuple) else (acc, acc)
        entry["test_accuracy"] = {"mean": (low + high) / 2, "min": low, "max": high}
    entry.update(numbers)
    return entry


def summary(runs, seeds=1, varied=("model.activation",)):
    return {"varied": list(varied), "seeds": seeds, "runs": runs, "findings": []}


def verdict(sentence: str) -> str:
    return sentence.rsplit(": ", 1)[-1].rstrip(".")


def test_every_claim_has_a_judge_and_unknown_ones_are_named():
    assert set(KNOWN_CLAIMS) == set(claims._CLAIMS)
    (sentence,) = evaluate_claim("flat-earth", {})
    assert "flat-earth" in sentence and "dying-relu" in sentence


@pytest.mark.parametrize("claim", KNOWN_CLAIMS)
def test_an_empty_summary_is_not_measured(claim):
    sentences = evaluate_claim(claim, summary({}))
    assert sentences and sentences[0].startswith("Claim: ")
    assert verdict(sentences[0]) == "not measured"


def vanishing(sigmoid_first, relu_first):
    return summary({
        "sigmoid": run({"model.activation": "sigmoid"}, signal={"init": [sigmoid_first, 0.1, 1.0]}),
        "relu": run({"model.activation": "relu"}, signal={"init": [relu_first, 0.9, 1.0]}),
        "tanh": run({"model.activation": "tanh"}, signal={"first": [0.4, 0.7, 1.0]}),
    })


def test_vanishing_gradients_flips_with_the_ratio():
    first, tanh = evaluate_claim("vanishing-gradients", vanishing(0.0006, 0.95))
    assert verdict(first) == "supported"
    assert "with sigmoid layer 1 gets 1/1700 of the last hidden layer's signal at step 0" in first
    assert "with ReLU layer 1 gets 1/1.1 of" in first
    assert "at most 1/10" in first  # the criterion is stated
    assert verdict(tanh) == "not supported" and "1/2.5 of the last hidden layer's signal at step 1" in tanh
    assert verdict(evaluate_claim("vanishing-gradients", vanishing(0.3, 0.95))[0]) == "not supported"
    assert verdict(evaluate_claim("vanishing-gradients", vanishing(0.0006, 0.3))[0]) == "not supported"


def dying(high_dead, remedy_dead, seeds=1):
    def entry(activation, norm, lr, dead):
        return run({"model.activation": activation, "model.norm": norm, "optimizer.lr": lr}, acc=0.9,
                   dead_max=[dead, 0.0])
    return summary({
        "relu, none, 0.03": entry("relu", "none", 0.03, high_dead),
        "leaky, none, 0.03": entry({"name": "leaky_relu", "negative_slope": 0.1}, "none", 0.03, 0.0),
        "relu, batch, 0.03": entry("relu", "batch", 0.03, remedy_dead),
        "relu, none, 0.001": entry("relu", "none", 0.001, 0.03),
        "leaky, batch, 0.001": entry("leaky_relu", "batch", 0.001, 0.0),
    }, seeds=seeds)


def test_dying_relu_flips_with_the_dead_shares():
    first, accuracy = evaluate_claim("dying-relu", dying(0.94, 0.02))
    assert verdict(first) == "supported"
    assert "ReLU at lr 0.03 94%" in first and "batch norm 2.0%" in first and "lr 0.001 3.0%" in first
    assert accuracy.startswith("Test accuracy: ReLU at lr 0.03 90.0%")
    assert verdict(evaluate_claim("dying-relu", dying(0.30, 0.02))[0]) == "not supported"
    assert verdict(evaluate_claim("dying-relu", dying(0.94, 0.25))[0]) == "not supported"


def test_dying_relu_without_a_remedy_is_not_measured():
    s = dying(0.94, 0.02)
    del s["runs"]["relu, batch, 0.03"]
    first = evaluate_claim("dying-relu", s)[0]
    assert verdict(first) == "not measured" and "(some of the numbers it needs are missing)" in first
    assert "ReLU at lr 0.03 94%" in first  # what was measured is still said
    one_rate = summary({k: v for k, v in dying(0.94, 0.02)["runs"].items() if v["settings"]["optimizer.lr"] == 0.03})
    for run_ in one_rate["runs"].values():
        del run_["settings"]["optimizer.lr"]  # the learning rate not varied: no smaller one to judge
    first = evaluate_claim("dying-relu", one_rate)[0]
    assert verdict(first) == "not measured" and "ReLU at the high learning rate 94%" in first


def test_activations_are_found_by_name_or_label():
    s = summary({"leaky_relu(negative_slope=0.1)": run({"model.activation": "leaky_relu(negative_slope=0.1)"}),
                 "ReLU": run({"model.activation": "ReLU"})})
    from mlp.comparison import evidence
    assert [label for label, _ in evidence.find(s, model__activation=evidence.is_activation("leaky_relu"))] == [
        "leaky_relu(negative_slope=0.1)"]
    assert evidence.one(s, model__activation=evidence.is_activation("relu"))[0] == "ReLU"


def test_dying_relu_reads_each_seed_from_the_run_folders(tmp_path):
    s = dying(0.94, 0.02, seeds=2)
    high = s["runs"]["relu, none, 0.03"]
    for seed, dead in enumerate((0.93, 0.31)):  # one seed dies, the other does not
        folder = tmp_path / f"seed{seed}"
        folder.mkdir()
        (folder / "diagnostics.json").write_text(json.dumps({"summary": {"inactive_max": [dead, 0.1]}}))
        high["run_dirs"].append(str(folder))
    first = evaluate_claim("dying-relu", s)[0]
    assert verdict(first) == "within the spread of 2 seeds" and "31%–93%" in first


def init_summary(he_acc, glorot_acc, seeds=1):
    return summary({
        "relu, xavier": run({"model.activation": "relu", "model.init": "xavier"}, glorot_acc,
                            signal={"init": [0.002, 0.08]}),
        "relu, kaiming": run({"model.activation": "relu", "model.init": "he"}, he_acc, signal={"init": [0.1, 0.07]}),
        "tanh, default": run({"model.activation": "tanh", "model.init": "default"}, 0.11,
                             signal={"init": [8e-5, 0.05]}),
        "tanh, xavier": run({"model.activation": "tanh", "model.init": "glorot"}, 0.90,
                            signal={"init": [0.025, 0.11]}),
    }, seeds=seeds, varied=("model.activation", "model.init"))


def test_init_judges_relu_and_tanh_apart():
    relu, tanh = evaluate_claim("init", init_summary(0.72, 0.41))
    assert verdict(relu) == "supported"
    assert "with Glorot layer 1 gets 1/40 of" in relu and "with He the last hidden layer gets 1/1.4 of layer 1's signal" in relu
    assert "test accuracy with He 72.0%, with Glorot 41.0%" in relu
    assert verdict(tanh) == "not supported" and "with Glorot layer 1 gets 1/4.4 of" in tanh  # kept only a quarter
    assert verdict(evaluate_claim("init", init_summary(0.41, 0.72))[0]) == "not supported"
    overlapping = init_summary((0.40, 0.80), (0.30, 0.50), seeds=3)
    assert verdict(evaluate_claim("init", overlapping)[0]) == "within the spread of 3 seeds"


def linear_summary(deep, classifier, relu):
    return summary({
        "identity, 0": run({"model.activation": "identity", "model.depth": 0}, classifier),
        "relu, 0": run({"model.activation": "relu", "model.depth": 0}, classifier),
        "identity, 4": run({"model.activation": "identity", "model.depth": 4}, deep),
        "relu, 1": run({"model.activation": "relu", "model.depth": 1}, relu),
        "relu, 4": run({"model.activation": "relu", "model.depth": 4}, relu),
        "identity, 1": run({"model.activation": "identity", "model.depth": 1}, deep),
    }, seeds=2, varied=("model.activation", "model.depth"))


def test_linear_flips_when_depth_helps_a_linear_network():
    (sentence,) = evaluate_claim("linear", linear_summary((0.90, 0.91), (0.919, 0.921), (0.97, 0.975)))
    assert verdict(sentence) == "supported"
    assert "with 4 identity layers 90.5% (90.0%–91.0%), with the linear classifier" in sentence
    assert "with 1 hidden layer of relu 97.2% (97.0%–97.5%); above the deep linear network's" in sentence
    (sentence,) = evaluate_claim("linear", linear_summary((0.95, 0.96), (0.919, 0.921), (0.97, 0.975)))
    assert verdict(sentence) == "not supported"
    (sentence,) = evaluate_claim("linear", linear_summary((0.90, 0.91), (0.919, 0.921), (0.915, 0.975)))
    assert verdict(sentence) == "within the spread of 2 seeds"


def zero_summary(tmp_path, sigmoid_means, sigmoid_losses, relu_zeros):
    def entry(name, means, losses, zeros=None):
        dirs = []
        for seed, loss in enumerate(losses):
            folder = tmp_path / f"{name}{seed}"
            folder.mkdir(exist_ok=True)
            (folder / "metrics.json").write_text(json.dumps({"epochs": [{"epoch": 1, "train_loss": loss}]}))
            dirs.append(str(folder))
        numbers = {"mean_output": {"last": means}}
        if zeros is not None:
            numbers["zero_share"] = {"last": zeros}
        return {**run({"model.activation": name}, 0.9, **numbers), "run_dirs": dirs}
    return summary({"sigmoid": entry("sigmoid", sigmoid_means, sigmoid_losses),
                    "tanh": entry("tanh", [-0.05, -0.0006], [0.75, 0.78]),
                    "relu": entry("relu", [0.9, 1.1], [0.57, 0.59], relu_zeros),
                    "elu": entry("elu", [0.3, 0.4], [0.6, 0.6])}, seeds=2)


def test_zero_centred_flips_with_the_means_losses_and_zeros(tmp_path):
    means, loss, zeros, elu = evaluate_claim("zero-centred", zero_summary(tmp_path, [0.48, 0.51], [2.13, 2.18],
                                                                          [0.55, 0.7]))
    assert verdict(means) == "supported" and "sigmoid 0.48 0.51 (layers 1–2, last)" in means
    assert "tanh -0.05 0.00 (layers" in means
    assert verdict(loss) == "supported" and "sigmoid 2.130–2.180, tanh 0.750–0.780" in loss
    assert verdict(zeros) == "supported" and "ReLU 55% 70%" in zeros
    assert verdict(elu) == "supported"
    means, loss, zeros, _ = evaluate_claim("zero-centred", zero_summary(tmp_path, [0.48, 0.2], [0.70, 0.76],
                                                                        [0.55, 0.1]))
    assert verdict(means) == "not supported"
    assert verdict(loss) == "within the spread of 2 seeds"  # 0.70–0.76 overlaps tanh's 0.75–0.78
    assert verdict(zeros) == "not supported"


def cost_summary(sigmoid_ratios):
    rounds = len(sigmoid_ratios)
    relu = [0.010] * rounds
    return {**summary({name: run({"model.activation": name}, 0.9) for name in ("relu", "sigmoid", "gelu")}),
            "timing": {"device": "cpu", "rounds": rounds, "median_s": {"relu": 0.010},
                       "per_step_s": {"relu": relu, "sigmoid": [0.010 * r for r in sigmoid_ratios],
                                      "gelu": [0.013] * rounds}}}


def test_cost_says_cheaper_dearer_or_within_the_noise():
    (sentence,) = evaluate_claim("cost", cost_summary([1.2, 1.25, 1.3, 1.22, 1.28]))
    assert verdict(sentence) == "supported" and "sigmoid 1.25× ReLU's time" in sentence
    (sentence,) = evaluate_claim("cost", cost_summary([0.9, 1.25, 1.1, 0.95, 1.05]))
    assert verdict(sentence) == "within the noise"
    assert "sigmoid 1.05× ReLU's time (middle half 0.95–1.10, within the noise)" in sentence
    assert "gelu 1.30× ReLU's time (middle half 1.30–1.30, ReLU cheaper)" in sentence
    (sentence,) = evaluate_claim("cost", cost_summary([0.8, 0.85, 0.82, 0.9, 0.8]))
    assert verdict(sentence) == "not supported"


def test_cost_measures_the_runs_configs_in_one_process(tmp_path):
    runs = {}
    for name in ("relu", "tanh"):
        folder = tmp_path / "out" / name
        folder.mkdir(parents=True)
        config = {**TINY, "model": {**TINY["model"], "activation": name, "width": 16}}
        (folder / "config.yaml").write_text(yaml.safe_dump(config))
        runs[name] = {**run({"model.activation": name}, 0.9), "run_dirs": [str(folder)]}
    (sentence,) = evaluate_claim("cost", summary(runs))
    assert "tanh " in sentence and "ReLU's time" in sentence and "15 rounds" in sentence
    timing = json.loads((tmp_path / "out" / "timing.json").read_text())
    assert len(timing["per_step_s"]["relu"]) == len(timing["per_step_s"]["tanh"]) == 15
