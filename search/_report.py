"""Rendering of a ``Comparison``: markdown tables, CSV files, JSON, and the learning-curve PNG."""

from __future__ import annotations

import csv
import json
import math
import os
from typing import TYPE_CHECKING, Any, Sequence

from nasdb.checks import markdown_table

if TYPE_CHECKING:
    from search.compare import Comparison

#: The agent name of the zero-shot suggestion's rows (predictor/zero_shot.py AGENT).
ZERO_SHOT_AGENT = "zero-shot"

LABELS = {"rl": "RL-NAS", "tnaml": "T-NAML", "random": "Random search", "predictor": "Predictor",
          ZERO_SHOT_AGENT: "Zero-shot"}


def _pm(mean: float, std: float) -> str:
    return "n/a" if mean is None or not math.isfinite(mean) else f"{mean:.4f} ± {std:.4f}"


def _num(v: Any, fmt: str = "{:.4f}") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return fmt.format(v) if isinstance(v, float) else str(v)


def _table(header: list[str], rows: list[list[str]]) -> str:
    return "\n".join(markdown_table(header, rows))


def markdown(c: Comparison) -> str:
    n = c.first_n
    s = c.settings
    parts = [f"## Search baselines vs zero-shot ({c.budget} children per search, evaluator {s.get('evaluator')}, "
             f"seed {s.get('seed')})", ""]
    parts += ["### Table 3: RL-NAS", "", _table(
        ["task", f"first {n} of RL-NAS (test)", "RL-NAS best-by-val (test)", "child models", "zero-shot (test)"],
        [[r["task"], _pm(r[f"rl_first{n}_mean"], r[f"rl_first{n}_std"]), _num(r["rl_best_test"]),
          _num(r["rl_child_models"]), _pm(r["zero_shot_mean"], r["zero_shot_std"])] for r in c.table3()]), ""]
    parts += ["### Table 4: first children after transfer", "", _table(
        ["task", f"first {n} of T-NAML", f"first {n} of random", f"first {n} of RL-NAS", "zero-shot"],
        [[r["task"], _pm(r[f"tnaml_first{n}_mean"], r[f"tnaml_first{n}_std"]),
          _pm(r[f"random_first{n}_mean"], r[f"random_first{n}_std"]),
          _pm(r[f"rl_first{n}_mean"], r[f"rl_first{n}_std"]), _pm(r["zero_shot_mean"], r["zero_shot_std"])]
         for r in c.table4()]), ""]
    parts += ["### Cost", "", _table(
        ["task", "method", "children trained", "children evaluated", "pre-training children", "wall time (s)",
         "best test", "found at child"],
        [[r["task"], LABELS.get(r["method"], r["method"]), _num(r["children_trained"]),
          _num(r["children_evaluated"]), _num(r["pretrain_children"]), _num(r["wall_seconds"], "{:.1f}"),
          _num(r["best_test"]), _num(r["best_position"])] for r in c.cost()]), ""]
    if c.regret:
        budgets = sorted({n for by in c.regret.values() for j in by.values() for n in j})
        parts += ["### Regret on the table (incumbent = best observed among the first N; true value = mean over "
                  "seeds)", "", _table(
                      ["task", "method", *[f"regret @{n}" for n in budgets], *[f"percentile @{n}" for n in budgets]],
                      [[r["task"], LABELS.get(r["method"], r["method"]),
                        *[_num(r.get(f"regret@{n}"), "{:.4g}") for n in budgets],
                        *[_num(r.get(f"percentile@{n}"), "{:.2f}") for n in budgets]] for r in c.table_regret()]), ""]
    if not any(c.zero_shot.values()):
        parts.append("Zero-shot: no numbers yet (no rows with agent='zero-shot' for these tasks and no "
                     "zero_shot hook given).")
    return "\n".join(parts).rstrip() + "\n"


def _csv(path: str, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as f:
        if not rows:
            return
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def plot(c: Comparison, path: str, top_n: int = 1) -> str:
    """Best-so-far test accuracy of the best-by-validation child(ren) vs children trained (T-NAML Fig. 2)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(3, len(c.tasks))
    rows = math.ceil(len(c.tasks) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.4 * rows), squeeze=False)
    curves = c.curves(top_n)
    for ax, t in zip(axes.flat, c.tasks):
        for a, ys in curves[t].items():
            ax.plot(range(1, len(ys) + 1), ys, label=LABELS.get(a, a), drawstyle="steps-post")
        zs = [v for v in c.zero_shot.get(t, []) if math.isfinite(v)]
        if zs:
            ax.axhline(sum(zs) / len(zs), color="k", linestyle="--", linewidth=1, label=LABELS[ZERO_SHOT_AGENT])
        ax.set_title(t)
        ax.set_xlabel("child models")
        ax.set_ylabel("test accuracy" if top_n == 1 else f"test accuracy-top{top_n}")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(c.tasks):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def regret_plot(rows: list[dict[str, Any]], agents: Sequence[str], budgets: Sequence[int], path: str) -> str:
    """Mean regret (log scale) after each budget of every search, per held-out task, beside zero-shot:
    ``rows`` as ``BenchmarkReport.rows()`` gives them (also read back from a report.json)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(2, len(rows))
    nrows = math.ceil(len(rows) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(5.2 * cols, 3.6 * nrows), squeeze=False)
    for ax, row in zip(axes.flat, rows):
        values = [row[f"{a}@{n}_regret_mean"] for a in agents for n in budgets] + [row["zero_shot_regret_mean"]]
        floor = min((v for v in values if math.isfinite(v) and v > 0), default=1e-9) / 3
        for a in agents:
            ys = [max(row[f"{a}@{n}_regret_mean"], floor) for n in budgets]
            ax.plot(budgets, ys, marker="o", label=LABELS.get(a, a))
        if math.isfinite(row["zero_shot_regret_mean"]):
            ax.axhline(max(row["zero_shot_regret_mean"], floor), color="k", linestyle="--", linewidth=1,
                       label=LABELS[ZERO_SHOT_AGENT])
        ax.set(xscale="log", yscale="log", title=row["task"], xlabel="children evaluated",
               ylabel="mean regret (lower is better)")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(rows):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(c: Comparison, out_dir: str) -> dict[str, str]:
    os.makedirs(out_dir, exist_ok=True)
    paths = {k: os.path.join(out_dir, f) for k, f in (
        ("markdown", "report.md"), ("table3", "table3.csv"), ("table4", "table4.csv"), ("cost", "cost.csv"),
        ("json", "comparison.json"), ("png", "curves.png"))}
    with open(paths["markdown"], "w") as f:
        f.write(c.to_markdown())
    _csv(paths["table3"], c.table3())
    _csv(paths["table4"], c.table4())
    _csv(paths["cost"], c.cost())
    with open(paths["json"], "w") as f:
        json.dump(c.to_dict(), f, indent=2, default=str)
    plot(c, paths["png"])
    return paths


# -- tabulated benchmarks (search/table_search.py) ------------------------------------------------
def _g(mean: float, std: float, fmt: str) -> str:
    return "n/a" if mean is None or not math.isfinite(mean) else f"{fmt.format(mean)} ± {fmt.format(std)}"


def benchmark_markdown(r: Any) -> str:
    """Per held-out task: zero-shot and every agent at every budget, regret then percentile (mean ± std)."""
    cfg = r.config
    cols = [(a, n) for n in cfg.budgets for a in cfg.agents]
    head = [f"{LABELS.get(a, a)} @{n}" for a, n in cols]
    rows = r.rows()
    reps = max((row["zero_shot_repeats"] for row in rows), default=0)
    bls = r.baseline_names
    parts = [f"## Zero-shot vs search baselines on {r.benchmark or 'the benchmark'} (held-out tasks, judged on "
             f"the table)", "",
             "True value of a configuration: its performance averaged over the benchmark's seeds (higher is "
             "better). Regret = best true value - the method's (lower is better); percentile = % of all "
             "configurations the method's configuration is at least as good as (100 = the best). Zero-shot: "
             "the predictor fitted without the held-out task suggests one configuration before seeing any of "
             f"its rows ({reps} fit(s) per task); searches: the best-observed configuration (one seed's value, "
             f"as the lookup answers) among the first N evaluations, {cfg.repeats} repeat(s) each. "
             "Mean ± std over repeats."
             + (" Baselines (no predictor, one pick each, fitted on the other tasks): portfolio = the configuration "
                "with the best mean within-task rank over the other tasks; gbm / ridge = the argmax of a regressor "
                "on the one-hot encoding fitted to the other tasks' within-task ranks." if bls else ""), ""]
    parts += ["### Regret (lower is better)", "", _table(
        ["task", "configs", "best value", "zero-shot", *bls, *head],
        [[row["task"], str(row["configurations"]), _num(row["best"], "{:.4g}"),
          _g(row["zero_shot_regret_mean"], row["zero_shot_regret_std"], "{:.3g}"),
          *[_num(row[f"{b}_regret"], "{:.3g}") for b in bls],
          *[_g(row[f"{a}@{n}_regret_mean"], row[f"{a}@{n}_regret_std"], "{:.3g}") for a, n in cols]]
         for row in rows]), ""]
    parts += ["### Percentile (higher is better)", "", _table(
        ["task", "zero-shot", *bls, *head],
        [[row["task"], _g(row["zero_shot_percentile_mean"], row["zero_shot_percentile_std"], "{:.2f}"),
          *[_num(row[f"{b}_percentile"], "{:.2f}") for b in bls],
          *[_g(row[f"{a}@{n}_percentile_mean"], row[f"{a}@{n}_percentile_std"], "{:.2f}") for a, n in cols]]
         for row in rows]), ""]
    if reps:
        wins = [f"{LABELS.get(a, a)} @{n}: {sum(_le(row, a, n) for row in rows)}/{len(rows)}" for a, n in cols]
        wins = [f"{b}: {sum(_le_pick(row, b) for row in rows)}/{len(rows)}" for b in bls] + wins
        parts += ["Tasks where the zero-shot mean regret is at most the baseline's or search's: "
                  + "; ".join(wins) + ".", ""]
    if "predictor" in cfg.agents and len(cfg.agents) > 1:
        parts += [_predictor_wins(rows, cfg), ""]
    return "\n".join(parts).rstrip() + "\n"


def _predictor_wins(rows: list[dict[str, Any]], cfg: Any) -> str:
    """How often the predictor agent's mean regret after N is at most each other agent's after N and after
    the largest budget (issue 18's target: the predictor @10 vs random search @100)."""
    top, wins = cfg.budgets[-1], []
    for a in (a for a in cfg.agents if a != "predictor"):
        for n in cfg.budgets:
            for m in sorted({n, top}):
                pairs = [(row[f"predictor@{n}_regret_mean"], row[f"{a}@{m}_regret_mean"]) for row in rows]
                k = sum(math.isfinite(x) and math.isfinite(y) and x <= y for x, y in pairs)
                wins.append(f"@{n} vs {LABELS.get(a, a)} @{m}: {k}/{len(rows)}")
    return "Tasks where the predictor agent's mean regret is at most the other search's: " + "; ".join(wins) + "."


def _le_pick(row: dict[str, Any], baseline: str) -> bool:
    z, b = row["zero_shot_regret_mean"], row[f"{baseline}_regret"]
    return math.isfinite(z) and math.isfinite(b) and z <= b


def _le(row: dict[str, Any], agent: str, n: int) -> bool:
    z, s = row["zero_shot_regret_mean"], row[f"{agent}@{n}_regret_mean"]
    return math.isfinite(z) and math.isfinite(s) and z <= s
