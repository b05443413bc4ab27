"""Merge the comparisons of several data draws into one (fsrf.training.comparison.merge_replicates)
and write results.json / results.csv / robustness.png and comparison.md to OUT.

    python scripts/merge_replicates.py OUT RUN_DIR [RUN_DIR ...]

Each RUN_DIR holds the results.json of one `fsrf compare`; its folder name labels the replicate.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from fsrf.runtime.io import atomic_write_text
from fsrf.training.comparison import format_comparison, merge_replicates
from fsrf.training.results import write_results


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__)
        return 2
    out, dirs = Path(argv[0]), [Path(a) for a in argv[1:]]
    missing = [str(d / "results.json") for d in dirs if not (d / "results.json").is_file()]
    if missing:
        print(f"merge_replicates: no results.json in {', '.join(missing)}", file=sys.stderr)
        return 2
    runs = [json.loads((d / "results.json").read_text(encoding="utf-8")) for d in dirs]
    merged = merge_replicates(runs, labels=[d.name for d in dirs])
    write_results(merged, out)
    atomic_write_text(out / "comparison.md", format_comparison(merged))
    print(f"wrote {out}/comparison.md, results.json, results.csv, robustness.png ({len(dirs)} replicates)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
