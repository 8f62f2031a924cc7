"""Grouping accuracy and speed of the Log Miner's template mining, against drain3 with default settings.

    uv run python bench/log_clustering.py                 # generated labelled data (tests/fixtures/logs)
    uv run python bench/log_clustering.py DIR [DIR...]    # every *_structured*.csv under DIR

A labelled corpus is a CSV with the columns ``Content`` and ``EventId`` (the LogHub
``<System>_2k.log_structured.csv`` layout, or its ``_corrected`` variant; the system is the
file name up to the first ``_``). Both miners get the ``Content`` column, line by line, in
the same run. Grouping accuracy (GA): a line is right iff its predicted group holds exactly
the lines of its true group. Speed is lines per second, the best of 25 runs of each miner;
for a set of corpora both the mean of their rates and all their lines over all their time.

Systems are split into development ones (the rules may be tuned on them) and held-out ones
(measured only): the means are printed for each part and for all.
"""

from __future__ import annotations

import csv
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from factory.discovery import templates  # noqa: E402
from factory.discovery.templates import cluster_lines, grouping_accuracy  # noqa: E402
from tests.fixtures.logs.synthetic import SYSTEMS, generate  # noqa: E402

Dataset = tuple[str, list[str], list[str]]

# The systems whose samples the rules were developed on; every other system is held out.
DEVELOPMENT = frozenset({"HPC", "OpenSSH", "Apache", "Zookeeper", "HDFS", "Hadoop", "Linux", "Spark", "Proxifier"})
RUNS = 25  # the slices are small (a run takes about a millisecond): the best of many steadies the figure


def ours(lines: Sequence[str]) -> list[int]:
    templates.reset_token_cache()  # each run starts without the token cache an earlier run filled
    return cluster_lines(lines)[0]


def drain3_default(lines: Sequence[str]) -> list[int]:
    from drain3 import TemplateMiner
    from drain3.template_miner_config import TemplateMinerConfig

    miner = TemplateMiner(config=TemplateMinerConfig())
    return [miner.add_log_message(line)["cluster_id"] for line in lines]


def measure(run: Callable[[Sequence[str]], list[int]], lines: list[str], truth: list[str]) -> tuple[float, float]:
    """GA of one run, and lines per second of the fastest of ``RUNS`` runs (each run starts afresh)."""
    best = float("inf")
    predicted: list[int] = []
    for _ in range(RUNS):
        start = time.perf_counter()
        predicted = run(lines)
        best = min(best, time.perf_counter() - start)
    return grouping_accuracy(predicted, truth), len(lines) / best


def corpora(directories: list[Path]) -> list[Dataset]:
    found = []
    for directory in directories:
        for path in sorted(directory.rglob("*_structured*.csv")):
            with path.open(newline="", encoding="utf-8") as handle:
                rows = list(csv.DictReader(handle))
            name = path.name.split("_")[0]
            print(f"read {path} ({len(rows)} lines)")
            found.append((name, [row["Content"] for row in rows], [row["EventId"] for row in rows]))
    return found


def generated() -> list[Dataset]:
    out = []
    for system in sorted(SYSTEMS):
        data = generate(seed=2024, lines=2000, systems=[system])
        out.append((f"gen-{system}", [line for line, _ in data], [label for _, label in data]))
    return out


def main(argv: list[str]) -> int:
    logging.disable(logging.WARNING)  # drain3 warns that it has no config file: defaults are the point
    datasets = corpora([Path(a) for a in argv]) if argv else generated()
    if not datasets:
        print("no *_structured*.csv files found", file=sys.stderr)
        return 2
    print("input: the Content column of each labelled line" if argv else "input: generated labelled lines")
    drain3_default(["warm up"])  # import drain3 before the clock starts
    print(f"{'dataset':<22}{'lines':>7}  {'GA ours':>8}{'lines/s':>10}  {'GA drain3':>9}{'lines/s':>10}")
    rows: dict[str, tuple[float, ...]] = {}
    sizes: dict[str, int] = {}
    for name, lines, truth in datasets:
        sizes[name] = len(lines)
        row = rows[name] = (*measure(ours, lines, truth), *measure(drain3_default, lines, truth))
        part = "" if not argv else " (dev)" if name in DEVELOPMENT else " (held-out)"
        print(f"{name + part:<22}{len(lines):>7}  {row[0]:>8.3f}{row[1]:>10,.0f}  {row[2]:>9.3f}{row[3]:>10,.0f}")
    means = [("mean", list(rows))]
    if argv:
        means = [
            ("mean held-out", [n for n in rows if n not in DEVELOPMENT]),
            ("mean dev", [n for n in rows if n in DEVELOPMENT]),
            ("mean all", list(rows)),
        ]
    for label, names in means:
        if not names:
            continue
        mean = [sum(rows[n][k] for n in names) / len(names) for k in range(4)]
        label = f"{label} ({len(names)})"
        print(f"{label:<22}{'':>7}  {mean[0]:>8.3f}{mean[1]:>10,.0f}  {mean[2]:>9.3f}{mean[3]:>10,.0f}")
        # The mean of the rates favours the small, fast corpora: also all their lines over all their time.
        total = sum(sizes[n] for n in names)
        overall = [total / sum(sizes[n] / rows[n][k] for n in names) for k in (1, 3)]
        print(f"{'  all lines together':<22}{total:>7}  {'':>8}{overall[0]:>10,.0f}  {'':>9}{overall[1]:>10,.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
