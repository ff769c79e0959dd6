"""The snapshot rows of this tree against another revision's, measured here and now, alternating.

    python -m benchmarks.compare REV [--rounds 2] [--only scale,vm]

The ratios in benchmarks/results/latest.md move with the machine as well as with the code: the same
code gave a steady-state ratio of 0.221 at 2,048 functions on one host and 0.31 on another, because
the baseline (a bare read loop: system calls) and the snapshot (mostly Python) do not speed up
alike. So "no ratio worse than last time" can only be judged by running both revisions in the same
place at the same time. This checks ``REV`` out into a temporary git worktree (sharing this tree's
virtualenv) and runs ``benchmarks.run --only <benchmarks>`` there and here, in turn, ``rounds``
times each; then prints, for every row of the chosen benchmarks, the median ratio of each tree and
the change. Nothing is written into either tree.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent


def run_once(tree: Path, only: str, out: Path) -> dict[str, float]:
    """Row label → ratio, from one ``benchmarks.run --only`` in ``tree``."""
    subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--only", only, "--out", str(out)],
        cwd=tree,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    rows = json.loads(out.with_suffix(".json").read_text())["rows"]
    return {f"{r['benchmark']} | {r['size']}": r["ratio"] for r in rows if r.get("ratio") is not None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("rev", help="the git revision to compare with (e.g. the commit of the last latest.md)")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each tree, alternating (default 2)")
    parser.add_argument("--only", default="scale", help="benchmarks to run (default scale; vm boots QEMU)")
    args = parser.parse_args(argv)
    ratios: dict[str, dict[str, list[float]]] = {"then": {}, "now": {}}
    with tempfile.TemporaryDirectory(prefix="rna-compare-") as tmp:
        other = Path(tmp) / "tree"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(other), args.rev], cwd=HERE, check=True)
        try:
            (other / ".venv").symlink_to(HERE / ".venv")
            for n in range(args.rounds):
                for label, tree in (("then", other), ("now", HERE)):
                    got = run_once(tree, args.only, Path(tmp) / f"{label}{n}.md")
                    for row, ratio in got.items():
                        ratios[label].setdefault(row, []).append(ratio)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(other)], cwd=HERE, check=False)
    print(f"| benchmark | size | {args.rev[:12]} | this tree | change |\n|---|---|---|---|---|")
    for row, now in ratios["now"].items():
        then = ratios["then"].get(row)
        if not then:
            continue
        a, b = statistics.median(then), statistics.median(now)
        print(f"| {row} | {a:.3g}× | {b:.3g}× | {b / a - 1:+.0%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
