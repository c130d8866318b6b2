"""The report's findings: plain sentences, each with its number, computed from summary.json's
content alone, so that other numbers give other sentences.  None is written in advance.

Notation: layer 1 is the hidden layer next to the input, layer L the one next to the output.
Every ratio is written one way, as a fraction of the larger: "1/12 of".  Two conditions are
ranked only when their ranges over the seeds do not overlap; with one seed nothing is tested.
"""

from __future__ import annotations

import math
from typing import Any

VANISHING = 0.1  # a layer-1 signal below a tenth of layer L's is called vanishing
EVEN = 3.0  # within this factor, the signal is called even across the layers
STEADY = 1.5  # per-layer factors within this of their geometric mean make a steady shrink
SHRINKS = 1.2  # ... when the signal loses at least this factor per layer
NOTABLE = 0.05  # a share of units below this is not singled out


def fraction(ratio: float | None) -> str:
    """0.000627 → "1/1600", 0.0083 → "1/120", 0.62 → "1/1.6"; a ratio above 1 is given as its inverse
    by the caller, so every ratio reads "1/x of"."""
    if ratio is None:
        return "–"
    if ratio <= 0:
        return "0"
    inverse = 1 / ratio if ratio <= 1 else ratio
    if inverse >= 100:  # two significant digits
        return f"1/{round(inverse, 1 - int(math.floor(math.log10(inverse)))):.0f}"
    if inverse >= 10 or abs(inverse - round(inverse)) < 0.005:  # 1/4 for a quarter, not 1/4.0
        return f"1/{inverse:.0f}"
    return f"1/{inverse:.1f}"


def compared(ratio: float, a: str, b: str) -> str:
    """``a`` against ``b`` in one notation: "a is 1/4 of b" or "b is 1/4 of a"."""
    return f"{a} is {fraction(ratio)} of {b}" if ratio <= 1 else f"{b} is {fraction(ratio)} of {a}"


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def findings(summary: dict[str, Any]) -> list[str]:
    """The sentences, a claim's first (``mlp.comparison.claims``)."""
    runs = summary["runs"]
    sentences = []
    if summary.get("claim"):
        from mlp.comparison.claims import evaluate_claim

        sentences += evaluate_claim(summary["claim"], summary)
    seeds = summary.get("seeds", 1)
    if seeds == 1 and len(runs) > 1:
        sentences.append("One seed per condition: the differences below are not tested against the variation "
                         "from seed to seed (run with --seeds 3 or more to test them).")
    done = {a: r for a, r in runs.items() if r.get("status") == "finished"}
    sentences += [f"{a} diverged: its loss became infinite or not a number, so it has no result."
                  for a, r in runs.items() if r.get("status") == "diverged"]
    sentences += accuracy_findings(done, seeds)
    sentences += init_findings(done, summary)
    sentences += signal_findings(done, summary["depth"])
    sentences += inactive_findings(done)
    return sentences


def _value(stat: dict[str, float] | None, percent: bool = True) -> str:
    if stat is None:
        return "–"
    show = (lambda v: f"{v:.2%}") if percent else (lambda v: f"{v:.3f}")
    if stat["min"] == stat["max"]:
        return show(stat["mean"])
    return f"{show(stat['mean'])} (from {show(stat['min'])} to {show(stat['max'])})"


def accuracy_findings(runs: dict[str, Any], seeds: int) -> list[str]:
    accuracy = {a: r["test_accuracy"] for a, r in runs.items() if r.get("test_accuracy")}
    if len(accuracy) < 2:
        return []
    order = sorted(accuracy, key=lambda a: -accuracy[a]["mean"])
    best, worst = order[0], order[-1]
    if seeds == 1:
        gap = (accuracy[best]["mean"] - accuracy[worst]["mean"]) * 100
        return [f"{best} reaches the highest test accuracy, {accuracy[best]['mean']:.2%}; {worst} the lowest, "
                f"{accuracy[worst]['mean']:.2%} ({gap:.1f} points less)."]
    above = [a for a in order[1:] if accuracy[a]["max"] < accuracy[best]["min"]]
    within = [a for a in order[1:] if a not in above]
    text = f"{best} reaches the highest mean test accuracy over {seeds} seeds, {_value(accuracy[best])}"
    if above:
        text += f"; above the whole range of {_and(above)}"
    if within:
        text += f"; {_and(within)} {'is' if len(within) == 1 else 'are'} within the spread of {seeds} seeds " \
                f"(the ranges overlap), so {'it is' if len(within) == 1 else 'they are'} not ranked against it"
    return [text + "."]


def init_findings(runs: dict[str, Any], summary: dict[str, Any]) -> list[str]:
    """At step 0, before any update: the loss against a uniform guess's ln(classes)."""
    n = summary.get("classes")
    losses = {a: r["init_loss"]["mean"] for a, r in runs.items() if r.get("init_loss")}
    if not n or not losses:
        return []
    chance = math.log(n)
    far = {a: v for a, v in losses.items() if abs(v - chance) > 0.25 * chance}
    text = (f"Before the first update (step 0) the validation loss is {_and([f'{v:.2f} ({a})' for a, v in losses.items()])}; "
            f"a uniform guess over {n} classes has ln {n} = {chance:.2f}")
    if far:
        text += f" ({_and(list(far))} start{'s' * (len(far) == 1)} far from it: the initial outputs are not small)"
    return [text + "."]


def signal_findings(runs: dict[str, Any], depth: int) -> list[str]:
    """Vanishing or even signal from layer L back to layer 1, at step 0 (else the first step), and a
    steady per-layer factor compared with the activation's largest derivative.  L is each run's last
    hidden layer (``depth`` when every run has the config's depth; ``model.depth`` may vary)."""
    moment = "init" if all("init" in r["signal"] for r in runs.values()) else "first"
    depths = {a: len(r["signal"].get(moment) or []) for a, r in runs.items()}
    runs = {a: r for a, r in runs.items() if depths[a] >= 2}
    ratios = {a: r["signal_ratio"].get(moment) for a, r in runs.items() if r["signal_ratio"].get(moment)}
    if not ratios:
        return []
    same = len({depths[a] for a in ratios}) == 1
    last = {a: f"layer {depths[a]}" for a in ratios}
    top = f"layer {depths[next(iter(ratios))]}" if same else "the run's last hidden layer"
    when = "at step 0 (before any update)" if moment == "init" else f"at step {next(iter(runs.values()))['steps'].get('first')}"
    vanishing = sorted((a for a in ratios if ratios[a] < VANISHING), key=ratios.get)
    even = [a for a in ratios if 1 / EVEN <= ratios[a] <= EVEN]
    sentences = []
    if vanishing:
        listed = _and([f"{a} ({fraction(ratios[a])})" for a in vanishing])
        sentences.append(f"The gradient signal vanishes on its way back to the input {when} for {listed}: the "
                         f"signal reaching layer 1 (next to the input) is that fraction of the signal at {top} "
                         f"(next to the output).")
    if even:
        listed = _and([f"{a} ({compared(ratios[a], 'layer 1', last[a])})" for a in even])
        sentences.append(f"For {listed} the signal stays within a factor of {EVEN:g} across the layers {when}.")
    between = [a for a in ratios if a not in vanishing and a not in even]
    if between:
        listed = _and([f"{a} ({compared(ratios[a], 'layer 1', last[a])})" for a in between])
        sentences.append(f"In between {when}: {listed}.")
    for a, r in runs.items():
        sentence = steady_factor(a, r, r["signal"].get(moment), when)
        if sentence:
            sentences.append(sentence)
    return sentences


def steady_factor(label: str, run: dict[str, Any], signal: list[float] | None, when: str) -> str | None:
    if not signal or len(signal) < 3 or min(signal) <= 0:
        return None
    steps = [signal[i] / signal[i + 1] for i in range(len(signal) - 1)]  # one layer toward the input
    mean = (signal[0] / signal[-1]) ** (1 / (len(signal) - 1))
    if mean > 1 / SHRINKS or any(not (mean / STEADY <= s <= mean * STEADY) for s in steps):
        return None
    text = (f"For {label} the signal shrinks by a steady factor toward the input {when}: each layer passes back "
            f"about {fraction(mean)} of the signal reaching it (from {fraction(max(steps))} to {fraction(min(steps))}).")
    peak = largest_derivative(run.get("activation"))
    if peak is None:
        return text
    name = run["activation"] if isinstance(run["activation"], str) else run["activation"].get("name")
    if peak / 1.25 <= mean <= peak * 1.25:
        how = "about the same as"
    else:
        how = "smaller than" if mean < peak else "larger than"
    return text + (f" That is {how} {name}'s largest derivative, {fraction(peak) if peak < 1 else f'{peak:.3g}'} "
                   f"(computed from the activation): a unit passes back at most that share of its gradient.")


def largest_derivative(spec) -> float | None:
    if spec is None:
        return None
    from mlp.model import make_activation
    from mlp.observe.units import largest_derivative as peak

    return peak(make_activation(spec, 1))


def inactive_findings(runs: dict[str, Any]) -> list[str]:
    from mlp.observe.units import COLLAPSED, SATURATED

    sentences = []
    kinds = {"dead_max": ("dead", "their derivative was exactly 0 on every example of an interval"),
             "saturated_max": ("saturated", f"their derivative stayed below {fraction(SATURATED)} of the "
                                            "activation's largest on every example of an interval"),
             "negative_max": ("on the negative side", "their input stayed below 0 on every example of an "
                                                      "interval, so they pass back only the slope a of the gradient")}
    top = 0.0
    for key, (word, meaning) in kinds.items():
        notable = []
        for a, r in runs.items():
            peaks = r.get(key) or []
            if peaks:
                top = max(top, max(peaks)) if key != "negative_max" else top
                layer = max(range(len(peaks)), key=peaks.__getitem__)
                if peaks[layer] >= NOTABLE:
                    notable.append((peaks[layer], f"{a}: {peaks[layer]:.0%} of layer {layer + 1}'s units {word}"))
        if notable:
            listed = "; ".join(text for _, text in sorted(notable, reverse=True))
            sentences.append(f"Units {word} ({meaning}), at their largest: {listed}.")
    if not sentences and any(r.get("dead_max") or r.get("saturated_max") for r in runs.values()):
        sentences.append(f"No condition had more than {top:.1%} of any layer's units dead or saturated at a measured step.")
    collapsed = {a: [i + 1 for i, c in enumerate(r.get("collapsed") or []) if c] for a, r in runs.items()}
    collapsed = {a: layers for a, layers in collapsed.items() if layers}
    if collapsed:
        listed = _and([f"{a} (layer{'s' * (len(v) > 1)} {', '.join(map(str, v))})" for a, v in collapsed.items()])
        sentences.append(f"Collapsed layers, whose units hardly vary from one example to the next (their spread fell "
                         f"below {COLLAPSED:.1%} of the output range): {listed}.")
    return sentences
