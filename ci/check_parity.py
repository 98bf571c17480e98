"""CI gate: every exported model kept ONNX Runtime within tolerance of the trained model.

The export stage already fails when parity breaks; this reads what it recorded in each
`<repository>/<name>/1/metadata.json` and prints one line per model, so the numbers are in the CI log.

    python ci/check_parity.py [models/repository]

Exit status 1 if a model has no parity record, a difference over its tolerance, or predicted classes
that disagree; 2 if the repository holds no model at all.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path


def problems(parity: object) -> list[str]:
    """What is wrong with one model's parity record (empty when it passes)."""
    if not isinstance(parity, dict):
        return ["no parity record"]
    difference, tolerance = parity.get("max_abs_diff"), parity.get("tolerance")
    if not all(isinstance(value, int | float) for value in (difference, tolerance)):
        return [f"max_abs_diff {difference!r} or tolerance {tolerance!r} is not a number"]
    found = []
    if not (math.isfinite(difference) and difference <= tolerance):
        found.append(f"max |diff| {difference:.3g} > tolerance {tolerance:g}")
    if parity.get("classes_agree", True) is not True:
        found.append("predicted classes disagree")
    return found


def main(argv: list[str]) -> int:
    repository = Path(argv[0] if argv else "models/repository")
    files = sorted(repository.glob("*/1/metadata.json"))
    if not files:
        print(f"no model in {repository} (no */1/metadata.json): run the pipeline first", file=sys.stderr)
        return 2
    failed = 0
    for path in files:
        name = path.parents[1].name
        parity = json.loads(path.read_text(encoding="utf-8")).get("parity")
        found = problems(parity)
        if found:
            failed += 1
            print(f"FAIL {name}: {'; '.join(found)}")
        else:
            agree = "classes agree, " if "classes_agree" in parity else ""
            print(
                f"ok   {name}: max |diff| {parity['max_abs_diff']:.2e} <= {parity['tolerance']:g} "
                f"({agree}{parity.get('samples', '?')} samples)"
            )
    print(f"{len(files) - failed} of {len(files)} models pass the ONNX parity gate")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
