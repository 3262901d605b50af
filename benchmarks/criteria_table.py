"""Tabulate and plot IMP runs that differ in their mask criterion (Zhou et al. 2019, Fig. 3 and 5).

Reads every `imp-<hash>/` of a run store (as `pai imp --criterion ...` writes them, e.g. by
`pai preset benchmarks/presets/criteria-lenet300.toml`) and writes into --out:

- `criteria.csv`: one row per criterion and level (weights remaining, test accuracy after
  training, and the accuracy of the level's start weights before any training, the untrained
  supermask accuracy of the criterion's mask);
- `criteria.png`: both against the weights remaining, one line per criterion;
- `criteria.md`: the two tables, criteria as columns.

    python benchmarks/criteria_table.py --store runs/criteria-lenet300 --out results/criteria-lenet300
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pai.pruning.criteria import DEFAULT_CRITERION

ORDER = (
    "large_final",
    "magnitude_increase",
    "movement",
    "large_init_large_final",
    "large_init",
    "random",
    "small_init",
    "small_init_small_final",
    "small_final",
)


def collect(store: Path) -> pd.DataFrame:
    """Every level of every IMP run in `store`, with its criterion."""
    frames = []
    for run in sorted(store.glob("**/imp-*")):
        levels = run / "levels.csv"
        if not levels.is_file():
            continue
        config = json.loads((run / "config.json").read_text())
        table = pd.read_csv(levels)
        table.insert(0, "criterion", config.get("criterion", DEFAULT_CRITERION))
        table.insert(1, "imp_run", run.name)
        frames.append(table)
    if not frames:
        raise SystemExit(f"no finished IMP run (levels.csv) in {store}")
    table = pd.concat(frames, ignore_index=True)
    table["weights_remaining"] = 100 * table["density"]
    rank = {name: index for index, name in enumerate(ORDER)}
    table["order"] = table["criterion"].map(lambda c: rank.get(c, len(rank)))
    return table.sort_values(["order", "level"]).drop(columns="order")


def markdown(table: pd.DataFrame, column: str) -> str:
    """Criteria as columns, weights remaining as rows, accuracies in percent."""
    wide = table.pivot_table(index="weights_remaining", columns="criterion", values=column)
    wide = wide[[c for c in ORDER if c in wide.columns]].sort_index(ascending=False)
    header = "| weights remaining (%) | " + " | ".join(wide.columns) + " |"
    rule = "|---:|" + "---:|" * len(wide.columns)
    rows = [
        f"| {index:.1f} | " + " | ".join(f"{100 * v:.2f}" for v in row) + " |"
        for index, row in wide.iterrows()
    ]
    return "\n".join([header, rule, *rows])


def plot(table: pd.DataFrame, path: Path) -> None:
    criteria = [c for c in ORDER if c in set(table["criterion"])]
    colors = dict(zip(criteria, sns.color_palette("tab10", len(criteria)), strict=True))
    figure = Figure(figsize=(11, 4.2))
    for index, (column, label) in enumerate(
        [("test_accuracy", "after training"), ("untrained_test_accuracy", "untrained (supermask)")]
    ):
        ax = figure.add_subplot(1, 2, index + 1)
        for criterion in criteria:
            rows = table[table["criterion"] == criterion]
            style = "-" if criterion.startswith(("large", "magnitude", "movement")) else "--"
            ax.plot(rows["weights_remaining"], 100 * rows[column], style, marker="o",
                    markersize=3, color=colors[criterion], label=criterion)  # fmt: skip
        ax.set_xscale("log")
        ax.invert_xaxis()
        ax.set_xlabel("weights remaining (%)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"LeNet-300-100 on MNIST: {label}", fontsize=10)
        ax.grid(alpha=0.3)
    figure.axes[0].legend(fontsize=7)
    FigureCanvasAgg(figure)
    figure.tight_layout()
    figure.savefig(path, dpi=150)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    table = collect(args.store)
    args.out.mkdir(parents=True, exist_ok=True)
    columns = ["criterion", "level", "kept", "weights_remaining", "untrained_test_accuracy",
               "test_accuracy", "best_test_accuracy", "imp_run"]  # fmt: skip
    table[columns].to_csv(args.out / "criteria.csv", index=False)
    plot(table, args.out / "criteria.png")
    text = "## Test accuracy after training (%)\n\n" + markdown(table, "test_accuracy")
    text += "\n\n## Untrained accuracy of the level's start weights (%)\n\n"
    text += markdown(table, "untrained_test_accuracy") + "\n"
    (args.out / "criteria.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
