"""The report's automatic summary: a few sentences on what differs between the models.

Every sentence is computed from ``report.json`` (nothing is claimed that is not in the
numbers) and states the sample sizes behind it. Percentages are shown to one decimal, as in
the tables. Each function returns a list of sentences, empty when its data is absent.
"""

from __future__ import annotations

import math

from ..stats import RESAMPLES, difference, excludes_zero, find_pair, mcnemar, unpack_hits

MINUS = "\u2212"


def pct(fraction: float) -> str:
    return f"{100 * fraction:.1f}"


def signed(points: float, digits: int = 1) -> str:
    """``+1.2`` / ``−3.1`` (a real minus sign); ``±0.0`` when it rounds to zero."""
    text = f"{abs(points):.{digits}f}"
    if float(text) == 0:
        return f"\u00b1{text}"
    return f"+{text}" if points > 0 else f"{MINUS}{text}"


def _span(low, high, spec: str, signed: bool = False, suffix: str = "") -> str:
    """``a to b``, or ``a`` when both show the same."""
    def show(value):
        text = format(value, spec)
        return (("+" + text if value > 0 else text.replace("-", MINUS)) if signed else text) + suffix

    return show(low) if show(low) == show(high) else f"{show(low)} to {show(high)}"


def _rows(report: dict) -> dict[str, dict]:
    return {row["label"]: row for row in report.get("models", [])}


def counterpart(report: dict, label: str) -> str | None:
    """The label of the non-EMCA model that EMCA model ``label`` extends, if among the checkpoints."""
    rows = _rows(report)
    row = rows.get(label)
    if not row or not row.get("emca"):
        return None
    wanted = f"resnet{row['depth']}_{row['attention']}"
    return next((other for other, r in rows.items() if r["model"] == wanted), None)


def _mce_difference(results: dict, a: str, b: str) -> dict | None:
    """The paired bootstrap of mCE a - b in the robustness results (points), None without one."""
    pair = find_pair((results.get("intervals") or {}).get("pairs") or [], a, b)
    found = (pair or {}).get("mce")
    return None if found is None else {key: 100 * found[key] for key in ("difference", "low", "high")}


def interval_text(comparison: dict, digits: int = 1) -> str:
    """``difference −3.1, 95% CI [−5.0, −1.2]`` (points)."""
    def show(value):
        return f"{value:.{digits}f}".replace("-", MINUS)

    return (f"difference {show(comparison['difference'])}, "
            f"95% CI [{show(comparison['low'])}, {show(comparison['high'])}]")


def _versus(who: str, value: float, comparison: dict | None, fallback: str) -> str:
    """How the best model compares with ``who`` on mCE: lower, or tied when the paired
    interval holds 0; ``fallback`` (the wording without intervals) when there is none."""
    if comparison is None:
        return fallback
    if excludes_zero(comparison):
        return f"lower mCE than {who} ({value:.1f}; {interval_text(comparison)})"
    return f"tied with {who} ({value:.1f}; {interval_text(comparison)}, which holds 0)"


def robustness(report: dict) -> list[str]:
    results = report.get("robustness") or {}
    scored = {label: m for label, m in (results.get("models") or {}).items() if m.get("mce") is not None}
    if len(scored) < 2:
        return []
    ranked = sorted(scored, key=lambda label: scored[label]["mce"])
    best, runner_up = ranked[0], ranked[1]
    mce = {label: 100 * m["mce"] for label, m in scored.items()}
    twin = counterpart(report, best)
    to_runner_up = _mce_difference(results, best, runner_up)
    if best == results["baseline"]:
        if to_runner_up is not None and not excludes_zero(to_runner_up):
            sentence = (f"{best}, the CE baseline (= 100), has the lowest mCE, but {runner_up} ({mce[runner_up]:.1f}) "
                        f"is tied with it ({interval_text(to_runner_up)}, which holds 0)")
        else:
            sentence = (f"{best}, the CE baseline (= 100), has the lowest mCE: every other model has larger "
                        f"corruption errors, the closest being {runner_up} ({mce[runner_up]:.1f}"
                        + (f"; {interval_text(to_runner_up)}" if to_runner_up else "") + ")")
        return [sentence + "."] + _corruption_sentences(report, results, scored, best)
    sentence = f"{best} has the lowest mCE, {mce[best]:.1f} ({results['baseline']} = 100)"
    if twin in scored:
        sentence += ", " + _versus(f"its non-EMCA counterpart {twin}", mce[twin], _mce_difference(results, best, twin),
                                   f"{mce[twin] - mce[best]:.1f} below its non-EMCA counterpart {twin} "
                                   f"({mce[twin]:.1f})")
        if twin != runner_up:
            sentence += "; the next best is " + (
                f"{runner_up} ({mce[runner_up]:.1f})" if to_runner_up is None else
                f"{runner_up} ({mce[runner_up]:.1f}; {interval_text(to_runner_up)}"
                + (")" if excludes_zero(to_runner_up) else ", a tie)"))
    elif f"{mce[best]:.1f}" == f"{mce[runner_up]:.1f}" and to_runner_up is None:
        sentence += f", tied with {runner_up}"
    else:
        sentence += ", " + _versus(f"the next best, {runner_up}", mce[runner_up], to_runner_up,
                                   f"{mce[runner_up] - mce[best]:.1f} below the next best, {runner_up} "
                                   f"({mce[runner_up]:.1f})")
    return [sentence + "."] + _corruption_sentences(report, results, scored, best)


def _corruption_sentences(report: dict, results: dict, scored: dict, best: str) -> list[str]:
    """Relative mCE leader (when another model) and the hardest and easiest corruption."""
    sentences = []
    relative = {label: m["relative_mce"] for label, m in scored.items() if m.get("relative_mce") is not None}
    qualifier = ""
    if len(relative) < 2:
        relative = {label: m["relative_mce_partial"] for label, m in scored.items() if "relative_mce_partial" in m}
        over = len(next(iter(scored.values())).get("relative_mce_partial_over", []))
        qualifier = f", over the {over} corruptions where it is defined"
    if len(relative) >= 2:
        least = min(relative, key=relative.get)
        if least != best:
            sentences.append(f"The smallest degradation from clean accuracy (relative mCE{qualifier}) is {least}'s, "
                             f"{pct(relative[least])}.")
    mean_error = {}
    for c in results.get("corruptions", []):
        values = [e for m in results["models"].values() for e in m["errors"].get(c, {}).values()]
        if values:
            mean_error[c] = sum(values) / len(values)
    if len(mean_error) >= 2:
        hardest, easiest = max(mean_error, key=mean_error.get), min(mean_error, key=mean_error.get)
        sentences.append(f"The hardest corruption is {hardest.replace('_', ' ')} "
                         f"(mean error {pct(mean_error[hardest])}% "
                         f"over models and severities), the easiest {easiest.replace('_', ' ')} "
                         f"({pct(mean_error[easiest])}%).")
    return sentences


def top1_test(report: dict, a: str, b: str) -> dict | None:
    """McNemar's exact test of two models' clean top-1 on the same images, from the per-image
    correctness in report.json; None when it is not there."""
    rows = _rows(report)
    clean_a, clean_b = (rows.get(a) or {}).get("clean") or {}, (rows.get(b) or {}).get("clean") or {}
    if not clean_a.get("correct") or not clean_b.get("correct") or clean_a["n"] != clean_b["n"]:
        return None
    return mcnemar(unpack_hits(clean_a["correct"], clean_a["n"]), unpack_hits(clean_b["correct"], clean_b["n"]))


def p_text(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.2g}" if p < 0.1 else f"p = {p:.2f}"


def accuracy(report: dict) -> list[str]:
    clean = {row["label"]: row["clean"] for row in report.get("models", []) if row.get("clean")}
    if len(clean) < 2:
        return []
    shown = {label: pct(c["top1"]) for label, c in clean.items()}
    top = max(float(v) for v in shown.values())
    leaders = [label for label, v in shown.items() if float(v) == top]
    n = next(iter(clean.values()))["n"]
    if len(leaders) == len(clean):
        return [f"All models reach the same clean top-1, {top:.1f}% (n = {n})."]
    others = sorted(((float(v), label) for label, v in shown.items() if label not in leaders), reverse=True)
    who = leaders[0] if len(leaders) == 1 else " and ".join([", ".join(leaders[:-1]), leaders[-1]])
    verb = "has" if len(leaders) == 1 else "share"
    sentence = (f"{who} {verb} the best clean top-1, {top:.1f}% on {n} images, {top - others[0][0]:.1f} points above "
                f"the next best ({others[0][0]:.1f}%)")
    test = top1_test(report, leaders[0], others[0][1]) if len(leaders) == 1 else None
    if test is not None:
        discordant = test["a_only"] + test["b_only"]
        verdict = "a real difference" if test["p_value"] < 0.05 else "within sampling noise, a tie"
        sentence += (f"; McNemar's exact test over the {discordant} images only one of {who} and {others[0][1]} "
                     f"gets right ({test['a_only']} vs {test['b_only']}): {p_text(test['p_value'])}, {verdict}")
    return [sentence + "."]


def _pointing_game(report: dict) -> dict[str, dict]:
    """The first method's explanation rows, by model."""
    rows = (report.get("explanations") or {}).get("rows") or []
    if not rows:
        return {}
    method = rows[0]["method"]
    return {row["model"]: row for row in rows if row["method"] == method and "pointing_game_mean" in row}


def pairs(report: dict) -> list[str]:
    """One sentence per EMCA model whose non-EMCA counterpart is among the checkpoints."""
    rows = _rows(report)
    robust = (report.get("robustness") or {}).get("models") or {}
    explained = _pointing_game(report)
    sentences = []
    for label, row in rows.items():
        twin = counterpart(report, label)
        if twin is None:
            continue
        parts = []
        a, b = robust.get(label, {}).get("mce"), robust.get(twin, {}).get("mce")
        if a is not None and b is not None:
            paired = _mce_difference(report.get("robustness") or {}, label, twin)
            parts.append(f"mCE {pct(a)} vs {pct(b)} ("
                         + (f"{interval_text(paired)}{'' if excludes_zero(paired) else ', a tie'}" if paired
                            else signed(100 * (a - b))) + ")")
        a, b = (row.get("clean") or {}).get("top1"), (rows[twin].get("clean") or {}).get("top1")
        if a is not None and b is not None:
            test = top1_test(report, label, twin)
            parts.append(f"clean top-1 {pct(a)}% vs {pct(b)}% ({signed(100 * (a - b))}"
                         + (f", McNemar {p_text(test['p_value'])}" if test else "") + ")")
        if label in explained and twin in explained:
            a, b = explained[label]["pointing_game_mean"], explained[twin]["pointing_game_mean"]
            paired = pointing_difference(explained[label], explained[twin], report.get("settings"))
            parts.append(f"pointing game {pct(a)}% vs {pct(b)}% ("
                         + (f"{interval_text(paired)}{'' if excludes_zero(paired) else ', a tie'}" if paired
                            else signed(100 * (a - b))) + ")")
        a, b = row.get("params"), rows[twin].get("params")
        if a is not None and b is not None:
            change = f"{a - b:+,}".replace("-", MINUS) if a != b else "\u00b10"
            share = f", {signed(100 * (a - b) / b, 2)}%" if round(100 * abs(a - b) / b, 2) else ""
            parts.append(f"{a:,} vs {b:,} parameters ({change}{share})")
        if parts:
            sentences.append(f"{label} vs {twin}: " + ", ".join(parts) + ".")
    return sentences


def pointing_difference(a: dict, b: dict, settings: dict | None = None, metric: str = "pointing_game",
                        scale: float = 100) -> dict | None:
    """Paired bootstrap of a heatmap score, model row ``a`` minus ``b``, from their per-image
    scores on the same images (``per_image`` of the explanation rows); None without them."""
    values_a, values_b = (a.get("per_image") or {}).get(metric), (b.get("per_image") or {}).get(metric)
    if not values_a or not values_b or len(values_a) != len(values_b):
        return None
    settings = settings or {}
    found = difference(values_a, values_b, settings.get("resamples", RESAMPLES), settings.get("seed", 0))
    return {key: scale * found[key] for key in ("difference", "low", "high")}


def explanations(report: dict) -> list[str]:
    rows = _pointing_game(report)
    if len(rows) < 2:
        return []
    method = next(iter(rows.values()))["method"]
    ranked = sorted(rows, key=lambda label: rows[label]["pointing_game_mean"], reverse=True)
    best, second = rows[ranked[0]], rows[ranked[1]]
    top = pct(best["pointing_game_mean"])
    tied = [label for label in rows if pct(rows[label]["pointing_game_mean"]) == top]  # in table order
    if len(tied) > 1:
        sentences = [f"With {method}, {' and '.join([', '.join(tied[:-1]), tied[-1]])} share the best pointing game, "
                     f"{top}% on {best['n']} images."]
        return sentences + _faithfulness(rows, report.get("settings"))
    sentence = (f"With {method}, {ranked[0]} localises the object best: pointing game "
                f"{pct(best['pointing_game_mean'])}% [{pct(best['pointing_game_ci_low'])}, "
                f"{pct(best['pointing_game_ci_high'])}] on {best['n']} images")
    paired = pointing_difference(best, second, report.get("settings"))
    if paired is not None:
        sentence += (f", ahead of the runner-up {ranked[1]} ({pct(second['pointing_game_mean'])}%; "
                     f"{interval_text(paired)})" if excludes_zero(paired) else
                     f", tied with the runner-up {ranked[1]} ({pct(second['pointing_game_mean'])}%; "
                     f"{interval_text(paired)}, which holds 0)")
    elif best["pointing_game_ci_low"] <= second["pointing_game_ci_high"]:
        sentence += (f"; its 95% interval overlaps that of the runner-up {ranked[1]} "
                     f"({pct(second['pointing_game_mean'])}%), so this ranking is not certain")
    else:
        sentence += f", clearly ahead of the runner-up {ranked[1]} ({pct(second['pointing_game_mean'])}%)"
    return [sentence + "."] + _faithfulness(rows, report.get("settings"))


def _faithfulness(rows: dict[str, dict], settings: dict | None = None) -> list[str]:
    sentences = []
    if all("insertion_auc_mean" in r and "deletion_auc_mean" in r for r in rows.values()):
        parts = []
        for metric, word, pick in (("insertion_auc", "highest", max), ("deletion_auc", "lowest", min)):
            ranked = sorted(rows, key=lambda label: rows[label][f"{metric}_mean"], reverse=pick is max)
            leader, next_best = ranked[0], ranked[1]
            part = f"the {word} {metric.replace('_auc', ' AUC')} is {leader}'s ({rows[leader][f'{metric}_mean']:.3f}"
            paired = pointing_difference(rows[leader], rows[next_best], settings, metric, scale=1)
            if paired is not None:
                part += (f"; vs {next_best}: {interval_text(paired, 3)}"
                         + ("" if excludes_zero(paired) else ", a tie"))
            parts.append(part + ")")
        sentences.append(f"Faithfulness: {parts[0]}, {parts[1]}.")
    return sentences


def efficiency(report: dict) -> list[str]:
    rows = [row for row in report.get("models", []) if row.get("attention") is not None]
    relative = [row["relative_throughput"] for row in rows if row.get("relative_throughput") is not None]
    if not rows:
        return []
    if not relative:
        return ["There is no plain ResNet among the checkpoints, so throughput is not compared with one."]
    base = next(row["throughput_baseline"] for row in rows if row.get("relative_throughput") is not None)
    plain = _rows(report).get(base, {})
    extra = [row["params"] - plain["params"] for row in rows
             if row.get("throughput_baseline") == base and plain.get("params")]
    speed = _span(min(relative), max(relative), ".2f", suffix="x")
    sentence = f"Relative to the plain {base}, the attention models run at {speed} its CPU throughput"
    if extra:
        most = max(abs(e) for e in extra) / plain["params"] * 100
        sentence += (f" and have {_span(min(extra), max(extra), ',d', signed=True)} parameters "
                     f"(at most {most:.2f}% of {plain['params']:,})")
    return [sentence + "."]


def attention(report: dict) -> list[str]:
    weights = (report.get("attention") or {}).get("scale_weights") or []
    shares: dict[str, list[float]] = {}
    for module in weights:
        if module.get("earlier_share") is not None:
            shares.setdefault(module["model"], []).append(module["earlier_share"])
    if not shares:
        return []
    means = {label: sum(v) / len(v) for label, v in shares.items()}
    listed = ", ".join(f"{label} {pct(value)}%" for label, value in means.items())
    return [f"EMCA modules take on average this share of their aggregated descriptor from earlier maps "
            f"(mean |w_r s_r| over sources other than the current map, averaged over stages): {listed}."]


def caveat(report: dict) -> list[str]:
    settings = report.get("settings", {})
    robust = (report.get("robustness") or {}).get("models") or {}
    parts = []
    if robust:
        n = next(iter(robust.values()))["n"]
        parts.append(f"each robustness error comes from {n} images (one image = {100 / n:.1f} points)")
    rows = (report.get("explanations") or {}).get("rows") or []
    if rows:
        parts.append(f"localisation from {rows[0]['n']} images")
    clean = [row["clean"] for row in report.get("models", []) if row.get("clean")]
    if clean:
        n = clean[0]["n"]
        p = sum(c["top1"] for c in clean) / len(clean)
        half = 196 * math.sqrt(max(p * (1 - p), 1 / n) / n)
        parts.append(f"clean accuracy from {n} (95% interval about \u00b1{half:.1f} points at {100 * p:.0f}%)")
    if not parts:
        return []
    return ["Sample sizes: " + "; ".join(parts) + f" ({settings.get('data', '?')} {settings.get('split', '?')} split). "
            "Differences of a point or two are within sampling noise."]


def summarize(report: dict) -> list[str]:
    """All summary sentences, in reading order."""
    return (robustness(report) + accuracy(report) + pairs(report) + explanations(report) + efficiency(report)
            + attention(report) + caveat(report))
