"""How fast the `mintca` command starts: wall time of `mintca --help` and of a few
`--help` screens, the import of app.cli.main alone, and the slowest imports
(`python -X importtime`). Prints a table; the target is <= 0.25 s for `mintca --help`.

    .venv/bin/python bench/cli.py [--runs 7] [--top 12]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

# `python -m app.cli` is what the `mintca` console script runs, without the script's own
# `importlib.metadata` entry-point lookup; both are measured.
SCRIPT = Path(sys.executable).with_name("mintca")
COMMANDS: list[tuple[str, list[str]]] = [
    ("mintca --help", [str(SCRIPT), "--help"]),
    ("mintca enroll --help", [str(SCRIPT), "enroll", "--help"]),
    ("mintca cert list --help", [str(SCRIPT), "cert", "list", "--help"]),
    ("python -c 'import app.cli.main'", [sys.executable, "-c", "import app.cli.main"]),
    ("python -c 'pass' (interpreter alone)", [sys.executable, "-c", "pass"]),
]


def wall_time(argv: list[str], runs: int) -> float:
    """Median wall time of `runs` runs, after one warm-up run (page cache, .pyc files)."""
    subprocess.run(argv, check=True, capture_output=True)
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def slowest_imports(argv: list[str], top: int) -> list[tuple[int, str]]:
    """(cumulative microseconds, module) from `python -X importtime argv`, slowest first.
    A module's time includes the modules it imported (shown indented below it)."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", *argv], check=True, capture_output=True, text=True
    )
    rows = []
    for line in result.stderr.splitlines():
        # "import time: self [us] | cumulative | imported package", nesting by indentation
        fields = line.split("|")
        if not line.startswith("import time:") or len(fields) != 3 or "cumulative" in line:
            continue
        rows.append((int(fields[1]), fields[2].rstrip()))
    return sorted(rows, reverse=True)[:top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()

    width = max(len(name) for name, _ in COMMANDS)
    print(f"{'command':<{width}}  median wall time ({args.runs} runs)")
    print(f"{'-' * width}  ------")
    for name, argv in COMMANDS:
        print(f"{name:<{width}}  {wall_time(argv, args.runs) * 1000:7.0f} ms")

    print("\nslowest imports of `mintca --help` (python -X importtime, cumulative)")
    script = "import sys; from app.cli.main import main; sys.argv = ['mintca', '--help']; main()"
    for cumulative, name in slowest_imports(["-c", script], args.top):
        print(f"{cumulative / 1000:7.1f} ms  {name}")


if __name__ == "__main__":
    main()
