"""The README's "Pseudo labels at scale" table from ``bench_pseudo_labels.py --out`` JSON lines.

One row per (N, distance, kNN) run, the last record winning where a run was repeated; the ARI
between the exact and the approximate labels from the comparison records; and, per distance and
search, the growth exponent ``a`` of the pipeline's seconds (least squares on log N, log seconds;
time ~ N^a) with the seconds it predicts where a search did not run (exact at 10^6).

    python benchmarks/scale_table.py benchmarks/results/bench_pseudo_labels_scale.jsonl
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np


def load(path: Path) -> tuple[dict[tuple, dict], dict[tuple, float]]:
    """``(runs, agreement)``: runs by (n, distance, knn); ARI exact vs approximate by (n, distance)."""
    runs: dict[tuple, dict[str, Any]] = {}
    agreement: dict[tuple, float] = {}
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        if "ari_exact_vs_approximate" in record:
            agreement[(record["n"], record["distance"])] = record["ari_exact_vs_approximate"]
        elif "pipeline" in record:
            runs[(record["n"], record["distance"], record["knn"])] = record
    return runs, agreement


def growth(runs: dict[tuple, dict], distance: str, knn: str) -> tuple[float, float] | None:
    """``(a, log c)`` of seconds = c N^a over the sizes this search ran at, or None (< 2 sizes)."""
    points = sorted(
        (n, r["pipeline"]["seconds"]) for (n, d, k), r in runs.items() if d == distance and k == knn
    )
    if len(points) < 2:
        return None
    a, log_c = np.polyfit(np.log([p[0] for p in points]), np.log([p[1] for p in points]), 1)
    return float(a), float(log_c)


def recall_cell(recall: Any) -> str:
    if recall is None:
        return "1"
    if isinstance(recall, dict):
        return f"intra {recall['intra']:.3f}, inter {recall['inter']:.3f}"
    return f"{recall:.3f}"


def table(runs: dict[tuple, dict], agreement: dict[tuple, float]) -> list[str]:
    """Markdown lines: the runs, then the growth exponents."""
    lines = [
        "| N | distance | kNN | pipeline | of which kNN | peak RSS | recall of the lists "
        "| ARI against the identities | ARI against the exact labels |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for n, distance, knn in sorted(
        runs, key=lambda key: (key[0], key[1] != "jaccard", key[2] != "exact")
    ):
        r = runs[(n, distance, knn)]
        seconds = r["pipeline"]["seconds"]
        cell = f"{seconds:.1f} s"
        exact = runs.get((n, distance, "exact"))
        if knn == "approximate" and exact is not None:
            cell = f"**{cell}** ({seconds / exact['pipeline']['seconds']:.2f}x)"
        ari = agreement.get((n, distance)) if knn == "approximate" else None
        lines.append(
            f"| {n:,} | {distance} | {knn} | {cell} | {r['stages']['knn']['seconds']:.1f} s "
            f"| {r['pipeline']['peak_gb']:.2f} GB | {recall_cell(r.get('recall'))} "
            f"| {r['ari']:.3f} | {'-' if ari is None else f'**{ari:.3f}**'} |"
        )
    lines.append("")
    sizes = sorted({n for n, _, _ in runs})
    for distance in sorted({d for _, d, _ in runs}, key=lambda d: d != "jaccard"):
        for knn in ("exact", "approximate"):
            fit = growth(runs, distance, knn)
            if fit is None:
                continue
            a, log_c = fit
            ran = sorted(n for n, d, k in runs if d == distance and k == knn)
            missing = [n for n in sizes if n not in ran and n > max(ran)]
            predicted = "".join(
                f"; predicts {np.exp(log_c) * n**a / 60:.0f} min at N = {n:,}" for n in missing
            )
            lines.append(
                f"- {distance}, {knn}: seconds grow as N^{a:.2f} over N = "
                f"{', '.join(f'{n:,}' for n in ran)}{predicted}"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="bench_pseudo_labels.py --out file")
    args = parser.parse_args()
    print("\n".join(table(*load(args.results))))


if __name__ == "__main__":
    main()
