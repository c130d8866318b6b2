"""The tutorials' claims about activations, each judged against a stated criterion from the
numbers of one ``mlp compare`` (the built-in experiments, ``configs/experiments/<claim>.yaml``).

``evaluate_claim(claim, summary)`` returns sentences for the report, first among its findings.
The first sentence states the claim, the criterion, the numbers and the verdict: "supported",
"not supported", "within the spread of N seeds" (the seeds disagree, or two ranges overlap), or
"not measured" (a number it needs is missing).  Thresholds are fixed here, stated in every
sentence, and never depend on the runs:

- the signal "vanishes" when layer 1's is at most 1/10 of the last hidden layer's (SMALL) and
  "arrives whole" when it is at least 1/2 (WHOLE), at initialisation (step 0; step 1 where there
  is no step-0 record);
- many units are dead at 50% of a layer (DEAD_MANY), few at 10% (DEAD_FEW);
- a mean output is "about" a value within 0.1 of it (MEAN_CLOSE);
- ReLU is sparse when at least 1/4 of a layer's outputs are exactly 0 per example (SPARSE).

Measured on the real MNIST when these experiments were written (docs/experiments.md): the
vanishing, dying, init (ReLU part) and linear claims held; Glorot's init keeps only about 1/4 of
the signal in the 12-layer tanh network (so that half of the init claim is not supported there);
on a busy 2-core CPU ReLU's step was cheaper than ELU's in both measurements, but within the noise
of sigmoid's and SiLU's, so the cost claim came out "within the noise".
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mlp.comparison import evidence as ev
from mlp.comparison.findings import fraction
from mlp.comparison.evidence import Check

KNOWN_CLAIMS = ("vanishing-gradients", "dying-relu", "init", "linear", "cost", "zero-centred")

SMALL, WHOLE = 0.1, 0.5
DEAD_MANY, DEAD_FEW = 0.5, 0.1
MEAN_CLOSE = 0.1
SPARSE = 0.25
EXPONENTIAL = ("sigmoid", "tanh", "elu", "gelu", "silu", "celu", "selu", "softplus", "mish")
AT_INIT = ("init", "first")
AFTER = ("last", "epoch 1")


def evaluate_claim(claim: str, summary: dict) -> list[str]:
    """The claim's sentences, computed from ``summary`` (summary.json's content)."""
    judge = _CLAIMS.get(claim)
    if judge is None:
        return [f"Claim '{claim}' is not one this tool checks (it checks {', '.join(KNOWN_CLAIMS)})."]
    try:
        return judge(summary if isinstance(summary, dict) else {})
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, ZeroDivisionError) as e:
        # a summary of an unexpected shape: say so rather than break the report
        return [f"Claim '{claim}': not measured (the summary does not hold its numbers: {type(e).__name__})."]


# ---------------------------------------------------------------------------------------------
# the signal: vanishing-gradients and init


def signal_ratio(run: dict[str, Any] | None) -> tuple[float, str] | None:
    """Layer 1's signal over the last hidden layer's, at initialisation; with the moment used."""
    found = ev.per_layer(run or {}, "signal", AT_INIT)
    if found is None or len(found[0]) < 2 or found[0][-1] <= 0:
        return None
    layers, moment = found
    return layers[0] / layers[-1], moment


def _ratio_check(name: str, run, want: str) -> Check | None:
    """``want`` "small" (≤ SMALL) or "whole" (≥ WHOLE)."""
    found = signal_ratio(run)
    if found is None:
        return None
    ratio, moment = found
    ok = ratio <= SMALL if want == "small" else ratio >= WHOLE
    step = 0 if moment == "init" else 1
    if ratio <= 1:
        said = f"layer 1 gets {fraction(ratio)} of the last hidden layer's signal"
    else:  # one notation for every ratio (docs/diagnostics.md): the smaller as "1/x of" the larger
        said = f"the last hidden layer gets {fraction(ratio)} of layer 1's signal"
    return Check(ok, f"with {name} {said} at step {step}")


def _run(summary, **want):
    found = ev.one(summary, **want)
    return found[1] if found else None


def vanishing_gradients(summary: dict) -> list[str]:
    seeds = ev.seeds_of(summary)
    sigmoid = _run(summary, model__activation=ev.is_activation("sigmoid"))
    tanh = _run(summary, model__activation=ev.is_activation("tanh"))
    relu = _run(summary, model__activation=ev.is_activation("relu"))
    criterion = (f"layer 1's signal (the gradient reaching it, RMS of ∂ℓ/∂z) is at most 1/{1 / SMALL:g} of the "
                 f"last hidden layer's with sigmoid and at least 1/{1 / WHOLE:g} of it with ReLU, at initialisation")
    main = ev.sentence("in a deep sigmoid network the signal reaching the first layers is a small fraction of "
                       "the last layer's; with ReLU it arrives whole", criterion,
                       [_ratio_check("sigmoid", sigmoid, "small"), _ratio_check("ReLU", relu, "whole")], seeds)
    sentences = [main]
    if tanh is not None:
        sentences.append(ev.sentence(
            "with tanh the signal vanishes too", f"layer 1's signal at most 1/{1 / SMALL:g} of the last hidden "
            "layer's at initialisation", [_ratio_check("tanh", tanh, "small")], seeds))
    return sentences


def _accuracy_check(better_name: str, better, worse_name: str, worse) -> Check | None:
    a, b = ev.accuracy_range(better or {}), ev.accuracy_range(worse or {})
    if a is None or b is None:
        return None
    ok = ev.above(a, b)
    return Check(ok, f"test accuracy with {better_name} {_acc_text(a)}, with {worse_name} {_acc_text(b)}")


def _acc_text(r: tuple[float, float, float]) -> str:
    return f"{r[1]:.1%}" if r[0] == r[2] else f"{r[1]:.1%} ({r[0]:.1%}–{r[2]:.1%})"


def init(summary: dict) -> list[str]:
    seeds = ev.seeds_of(summary)

    def run(activation: str, init_name: str):
        return _run(summary, model__activation=ev.is_activation(activation),
                    model__init=lambda v: v is not None and ev.same_init(v, init_name))

    def part(activation, bad, good, bad_name, good_name, claim):
        bad_run, good_run = run(activation, bad), run(activation, good)
        criterion = (f"layer 1's signal at initialisation at most 1/{1 / SMALL:g} of the last hidden layer's "
                     f"with {bad_name}, at least 1/{1 / WHOLE:g} with {good_name}, and {good_name}'s test "
                     f"accuracy above {bad_name}'s in every seed")
        return ev.sentence(claim, criterion, [
            _ratio_check(bad_name, bad_run, "small"), _ratio_check(good_name, good_run, "whole"),
            _accuracy_check(good_name, good_run, bad_name, bad_run)], seeds)

    return [part("relu", "xavier", "kaiming", "Glorot", "He",
                 "a deep ReLU network with Glorot's init loses the signal layer by layer and learns slowly; "
                 "He's init keeps it"),
            part("tanh", "default", "xavier", "PyTorch's default", "Glorot",
                 "a deep tanh network with PyTorch's default init loses the signal; Glorot's keeps it")]


# ---------------------------------------------------------------------------------------------
# dying-relu


def _dead(run) -> list[float] | None:
    """The largest dead share of any layer, one per seed (or one for the summary's mean)."""
    seeds = ev.per_seed(run, ev.dead_per_seed)
    if seeds:
        return [max(layers) for layers in seeds]
    found = ev.per_layer(run, "dead_max") or ev.per_layer(run, "inactive_max")
    return [max(found[0])] if found else None


def _dead_check(name: str, run, many: bool) -> Check | None:
    shares = _dead(run) if run is not None else None
    if not shares:
        return None
    ok = ev.all_of([s >= DEAD_MANY if many else s <= DEAD_FEW for s in shares])
    return Check(ok, f"{name} {ev.span(shares, ev.percent)}")


def _lrs(summary) -> list[float]:
    return sorted({ev.number((r.get("settings") or {}).get("optimizer.lr")) for r in summary.get("runs", {}).values()}
                  - {None})


def dying_relu(summary: dict) -> list[str]:
    seeds = ev.seeds_of(summary)
    lrs = _lrs(summary)
    high, low = (lrs[-1], lrs[0]) if len(lrs) >= 2 else (None, None)
    plain = lambda v: v in (None, "none")  # noqa: E731
    at = lambda lr: (lambda v: ev.number(v) == lr)  # noqa: E731
    relu_high = _run(summary, model__activation=ev.is_activation("relu"), model__norm=plain, optimizer__lr=at(high))
    remedies = [
        ("leaky ReLU", _run(summary, model__activation=ev.is_activation("leaky_relu", "prelu"), model__norm=plain,
                            optimizer__lr=at(high))),
        ("batch norm", _run(summary, model__activation=ev.is_activation("relu"),
                            model__norm=lambda v: v == "batch", optimizer__lr=at(high))),
        (f"lr {low:g}" if low else "a smaller lr", None if low is None else
         _run(summary, model__activation=ev.is_activation("relu"), model__norm=plain, optimizer__lr=at(low))),
    ]
    where = f"lr {high:g}" if high else "the high learning rate"
    criterion = (f"the largest dead share of any layer (units whose input was never positive over an interval) "
                 f"is at least {DEAD_MANY:.0%} for ReLU at {where} and at most {DEAD_FEW:.0%} with each remedy, "
                 f"in every seed")
    checks = [_dead_check(f"ReLU at {where}", relu_high, True)]
    checks += [_dead_check(name, run, False) for name, run in remedies]
    sentences = [ev.sentence("a too-large learning rate leaves many ReLU units dead, and leaky ReLU, batch norm "
                             "and a smaller learning rate each prevent it", criterion, checks, seeds)]
    accuracies = [(name, ev.accuracy_range(run or {})) for name, run in [(f"ReLU at {where}", relu_high), *remedies]]
    shown = [f"{name} {_acc_text(acc)}" for name, acc in accuracies if acc is not None]
    if shown:
        sentences.append(f"Test accuracy: {'; '.join(shown)}.")
    return sentences


# ---------------------------------------------------------------------------------------------
# linear


def linear(summary: dict) -> list[str]:
    seeds = ev.seeds_of(summary)
    runs = summary.get("runs") or {}
    depth = lambda r: ev.number((r.get("settings") or {}).get("model.depth"))  # noqa: E731
    classifier = next((r for r in runs.values() if depth(r) == 0), None)
    deep_linear = [r for r in runs.values() if ev.activation_name((r.get("settings") or {}).get("model.activation"))
                   == "identity" and (depth(r) or 0) >= 2]
    deep = max(deep_linear, key=depth) if deep_linear else None
    nonlinear = [r for r in runs.values() if (depth(r) or 0) >= 1 and ev.activation_name(
        (r.get("settings") or {}).get("model.activation")) not in (None, "identity")]
    one_layer = min(nonlinear, key=depth) if nonlinear else None
    a, b = ev.accuracy_range(deep or {}), ev.accuracy_range(classifier or {})
    no_better = None
    if a is not None and b is not None:
        no_better = Check(ev.above(a, b) is not True, f"test accuracy with {depth(deep):.0f} identity layers "
                          f"{_acc_text(a)}, with the linear classifier (no hidden layer) {_acc_text(b)}")
    name = f"{depth(one_layer):.0f} hidden layer of " + ev.activation_name(
        one_layer["settings"]["model.activation"]) if one_layer else "one nonlinearity"
    criterion = ("the deep linear network's test accuracy is not above the linear classifier's (range over seeds), "
                 f"and the network with {name} is above both in every seed")
    checks = [no_better, _accuracy_check(name, one_layer, "the linear classifier", classifier)]
    if checks[-1] is not None:  # the linear classifier's range is already given
        checks[-1].text = checks[-1].text.split(", with the linear classifier")[0]
    checks.append(_accuracy_check(name, one_layer, "the deep linear network", deep))
    if checks[-1] is not None:
        checks[-1].text = {True: "above", None: "overlapping", False: "not above"}[checks[-1].ok] + \
            " the deep linear network's"
    return [ev.sentence("without an activation depth adds nothing: a deep linear network does no better than a "
                        "linear classifier, one nonlinearity does", criterion, checks, seeds)]


# ---------------------------------------------------------------------------------------------
# zero-centred (and ELU's mean)


def _mean_check(name: str, run, centre: float) -> Check | None:
    found = ev.per_layer(run or {}, "mean_output", AFTER)
    if found is None:
        return None
    means, moment = found
    ok = all(abs(m - centre) <= MEAN_CLOSE for m in means)
    return Check(ok, f"{name} {_means(means)} (layers 1–{len(means)}, {moment})")


def _means(values: list[float]) -> str:
    """Two decimals each, with no "-0.00"."""
    return " ".join(f"{v:.2f}".replace("-0.00", "0.00") for v in values)


def zero_centred(summary: dict) -> list[str]:
    seeds = ev.seeds_of(summary)
    sigmoid = _run(summary, model__activation=ev.is_activation("sigmoid"))
    tanh = _run(summary, model__activation=ev.is_activation("tanh"))
    relu = _run(summary, model__activation=ev.is_activation("relu"))
    elu = _run(summary, model__activation=ev.is_activation("elu"))
    sentences = [ev.sentence(
        "sigmoid's outputs are not zero-centred (their mean is about 0.5), tanh's are",
        f"every layer's mean output within {MEAN_CLOSE:g} of 0.5 for sigmoid and of 0 for tanh",
        [_mean_check("sigmoid", sigmoid, 0.5), _mean_check("tanh", tanh, 0.0)], seeds)]
    losses = {name: ev.per_seed(run or {}, ev.first_epoch_loss) for name, run in (("sigmoid", sigmoid), ("tanh", tanh))}
    loss_check = None
    if losses["sigmoid"] and losses["tanh"]:
        s, t = (_range(losses["sigmoid"]), _range(losses["tanh"]))
        loss_check = Check(ev.above(s, t), f"sigmoid {ev.span(losses['sigmoid'], '{:.3f}'.format)}, "
                                           f"tanh {ev.span(losses['tanh'], '{:.3f}'.format)}")
    sentences.append(ev.sentence(
        "tanh's network learns faster over the first epoch than sigmoid's", "the mean training loss over the first "
        "epoch is lower with tanh in every seed (part of the gap is sigmoid's smaller derivative, at most 1/4, "
        "not only its mean)", [loss_check], seeds))
    zeros = ev.per_layer(relu or {}, "zero_share", AFTER)
    sparse = None if zeros is None else Check(all(z >= SPARSE for z in zeros[0]), "ReLU " + " ".join(
        ev.percent(z) for z in zeros[0]) + f" (layers 1–{len(zeros[0])}, {zeros[1]})")
    sentences.append(ev.sentence("ReLU's outputs are sparse", f"at least {SPARSE:.0%} of every layer's outputs are "
                                 "exactly 0, per example", [sparse], seeds))
    if elu is not None:
        sentences.append(_elu_sentence(elu, relu, seeds))
    return sentences


def _range(values: list[float]) -> tuple[float, float, float]:
    return min(values), sum(values) / len(values), max(values)


def _elu_sentence(elu, relu, seeds: int) -> str:
    a = ev.per_layer(elu, "mean_output", AFTER)
    b = ev.per_layer(relu or {}, "mean_output", AFTER)
    check = None
    if a is not None and b is not None and len(a[0]) == len(b[0]):
        check = Check(all(abs(x) < abs(y) for x, y in zip(a[0], b[0])),
                      f"ELU {_means(a[0])}, ReLU {_means(b[0])}")
    return ev.sentence("ELU's mean output is nearer zero than ReLU's", "|mean output| smaller with ELU in every "
                       "layer", [check], seeds)


# ---------------------------------------------------------------------------------------------
# cost


def cost(summary: dict) -> list[str]:
    from mlp.comparison.cost import paired_ratios, ratio_spread

    runs = summary.get("runs") or {}
    labels = {ev.activation_name((r.get("settings") or {}).get("model.activation")): label for label, r in runs.items()}
    base = labels.get("relu")
    others = [name for name in labels if name in EXPONENTIAL]
    timing = measure_cost(summary) if base and others else None
    claim = "ReLU is cheaper per training step than the exponential activations"
    criterion = ("time per step (forward, backward, optimizer step) measured in one process in interleaved rounds; "
                 "ReLU is cheaper when the first quartile of the per-round ratio (other / ReLU) is above 1, "
                 "dearer when the third is below 1, otherwise the difference is within the noise")
    if timing is None:
        return [f"Claim: {claim}. Criterion: {criterion}. Measured: nothing (the runs lack ReLU, an exponential "
                "activation, or their configs): not measured."]
    parts, states = [], []
    for name in others:
        ratios = paired_ratios(timing, labels[name], base)
        if ratios is None:
            continue
        q1, median, q3 = ratio_spread(ratios)
        state = "cheaper" if q1 > 1 else "dearer" if q3 < 1 else "noise"
        states.append(state)
        word = {"cheaper": "ReLU cheaper", "dearer": "ReLU dearer", "noise": "within the noise"}[state]
        parts.append(f"{name} {median:.2f}× ReLU's time (middle half {q1:.2f}–{q3:.2f}, {word})")
    if not states:
        return [f"Claim: {claim}. Criterion: {criterion}. Measured: no paired times: not measured."]
    result = ("supported" if all(s == "cheaper" for s in states) else "not supported" if "dearer" in states
              else "within the noise")
    base_ms = timing["median_s"][base] * 1000
    return [f"Claim: {claim}. Criterion: {criterion}. Measured on {timing.get('device', '?')}, ReLU {base_ms:.2f} ms "
            f"per step, {timing.get('rounds')} rounds: {'; '.join(parts)}: {result}."]


def measure_cost(summary: dict) -> dict | None:
    """The ``timing`` block: the summary's own, or measured now from the runs' configs (the first
    seed's), then kept in ``summary["timing"]`` and written to ``timing.json`` in the folder that
    holds all the runs (the compare's output folder)."""
    if isinstance(summary.get("timing"), dict):
        return summary["timing"]
    from mlp.comparison.cost import measure
    from mlp.config import load_config
    from mlp.errors import UserError

    configs, folders = {}, []  # folders: every run's, to find the one that holds them all
    for label, run in (summary.get("runs") or {}).items():
        dirs = ev.run_dirs(run)
        if not dirs:
            return None
        try:
            configs[label] = load_config(dirs[0] / "config.yaml")
        except UserError:
            return None
        folders += [d.resolve() for d in dirs]
    try:
        timing = measure(configs)
    except (RuntimeError, OSError, UserError):  # no memory for the networks, a device gone
        return None
    common = Path(os.path.commonpath(folders))
    _write_timing((common.parent if common in folders else common) / "timing.json", timing)
    summary["timing"] = timing
    return timing


def _write_timing(path: Path, timing: dict) -> None:
    import json

    try:
        path.write_text(json.dumps(timing, indent=1), encoding="utf-8")
    except OSError:
        pass  # the numbers are in the report's sentence either way


_CLAIMS = {"vanishing-gradients": vanishing_gradients, "dying-relu": dying_relu, "init": init, "linear": linear,
           "cost": cost, "zero-centred": zero_centred}
