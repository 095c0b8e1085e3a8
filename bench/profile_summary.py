"""Summarise a py-spy profile recorded with ``--format raw`` (collapsed stacks).

``python -m bench.profile_summary FILE [--top N]`` prints the functions with the most *own* time
(samples where the function itself was running, not something it called), the most *total* time
(samples where it was anywhere on the stack), and own time per source file. Functions are merged
across line numbers. Time inside a C extension (sqlite3, orjson) counts as own time of the Python
function that called it, e.g. ``execute`` for SQLite work.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

_FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>.*?)(?::\d+)?\)$")
_PREFIXES = (
    re.compile(r".*/site-packages/"),
    re.compile(r".*/src/(?=cityops/)"),
    re.compile(r".*/lib/python3\.\d+/"),
)


def frame_name(frame: str) -> tuple[str, str]:
    """(function with its file, file) of one py-spy frame like ``get (cityops/store/sqlite.py:290)``."""
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip(), "?"
    path = match.group("file")
    for prefix in _PREFIXES:
        path = prefix.sub("", path, count=1)
    return f"{match.group('function')} ({path})", path


def parse(lines: Iterable[str]) -> tuple[Counter[str], Counter[str], Counter[str], int]:
    """Own samples per function, total samples per function, own samples per file, all samples."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    files: Counter[str] = Counter()
    samples = 0
    for line in lines:
        line = line.rstrip("\n")
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [
            frame_name(f)
            for f in stack.split(";")
            if f and not f.startswith("process ") and not f.startswith("thread ")
        ]
        if not frames:
            continue
        samples += count
        leaf, leaf_file = frames[-1]
        own[leaf] += count
        files[leaf_file] += count
        for name in {name for name, _ in frames}:
            total[name] += count
    return own, total, files, samples


def summarise(lines: Iterable[str], top: int = 20) -> str:
    own, total, files, samples = parse(lines)
    if not samples:
        return "no samples (was the process idle, or could py-spy not attach?)\n"

    def table(title: str, counter: Counter[str]) -> list[str]:
        out = [title]
        for name, count in counter.most_common(top):
            out.append(f"  {100.0 * count / samples:5.1f}%  {count:7d}  {name}")
        return out

    lines_out = [f"{samples} samples (active, non-idle)"]
    lines_out += table("own time (the function itself, C calls it makes included):", own)
    lines_out += table("total time (anywhere on the stack):", total)
    lines_out += table("own time by file:", files)
    return "\n".join(lines_out) + "\n"


def summarise_file(path: Path, top: int = 20) -> str:
    with open(path, encoding="utf-8", errors="replace") as handle:
        return summarise(handle, top)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.profile_summary", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("files", nargs="+", type=Path, help="py-spy --format raw outputs")
    parser.add_argument("--top", type=int, default=20, help="rows per table (20)")
    args = parser.parse_args(argv)
    for path in args.files:
        print(f"== {path}")
        print(summarise_file(path, args.top))


if __name__ == "__main__":
    main()
