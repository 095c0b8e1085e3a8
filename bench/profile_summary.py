"""Summarise a py-spy profile recorded with ``--format raw`` (collapsed stacks).

``python -m bench.profile_summary FILE [--top N]`` prints where the sampled process spent its busy
time: own time per layer (CityOps store/hub/api, Starlette, uvicorn, event loop), per function and
per source line (samples where that code itself was running, not something it called), and the
total time of CityOps functions (samples where they were anywhere on the stack). Functions are
merged across line numbers.

Without ``py-spy --native``, time inside C code counts as own time of the Python function that
called it: SQLite work shows in the CityOps store function that runs ``execute``, socket writes in
uvicorn's ``send``, and the event loop's own work (epoll, uvloop callbacks) in ``Runner.run``.
py-spy leaves out idle samples (its idle detection is a heuristic: a thread waiting on a lock
or queue can count as busy), so percentages are of busy samples, summed over all threads.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

_FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")
_PREFIXES = (
    re.compile(r".*/site-packages/"),
    re.compile(r".*/src/(?=cityops/)"),
    re.compile(r".*/lib/python3\.\d+/"),
)
_LAYERS = (
    ("cityops/store/", "cityops.store (SQLite calls included)"),
    ("cityops/hub/", "cityops.hub"),
    ("cityops/api/", "cityops.api"),
    ("cityops/", "cityops (other)"),
    ("starlette/", "starlette"),
    ("uvicorn/", "uvicorn (HTTP parsing, socket writes)"),
    ("asyncio/", "event loop (uvloop/asyncio: epoll, callbacks)"),
    ("orjson", "orjson"),
)
_ENTRY_POINTS = ("(cityops/cli.py)", "(cityops/__main__.py)")


def _short(path: str) -> str:
    for prefix in _PREFIXES:
        path = prefix.sub("", path, count=1)
    return path


def layer_of(path: str) -> str:
    for prefix, name in _LAYERS:
        if path.startswith(prefix):
            return name
    return "other (stdlib and libraries)"


@dataclass(frozen=True)
class Frame:
    """One py-spy frame, e.g. ``get (cityops/store/sqlite.py:290)``."""

    function: str
    path: str
    line: str

    @classmethod
    def parse(cls, text: str) -> Frame:
        match = _FRAME.match(text.strip())
        if match is None:
            return cls(text.strip(), "?", "")
        return cls(match.group("function"), _short(match.group("file")), match.group("line") or "")

    @property
    def name(self) -> str:
        return f"{self.function} ({self.path})"

    @property
    def name_with_line(self) -> str:
        return f"{self.function} ({self.path}:{self.line})" if self.line else self.name


@dataclass
class Profile:
    """Sample counts of one profile."""

    samples: int = 0
    own: Counter[str] = field(default_factory=Counter)
    own_lines: Counter[str] = field(default_factory=Counter)
    own_files: Counter[str] = field(default_factory=Counter)
    own_layers: Counter[str] = field(default_factory=Counter)
    total: Counter[str] = field(default_factory=Counter)
    threads: Counter[str] = field(default_factory=Counter)

    @classmethod
    def parse(cls, lines: Iterable[str]) -> Profile:
        profile = cls()
        for line in lines:
            stack, _, count_text = line.rstrip("\n").rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            parts = [f for f in stack.split(";") if f]
            frames = [Frame.parse(f) for f in parts if not f.startswith(("process ", "thread "))]
            if not frames:
                continue
            count = int(count_text)
            thread = next((f for f in parts if f.startswith("thread ")), None)
            if thread is not None:  # py-spy --threads: "thread (TID): NAME"
                profile.threads[thread.partition("): ")[2] or thread] += count
            leaf = frames[-1]
            profile.samples += count
            profile.own[leaf.name] += count
            profile.own_lines[leaf.name_with_line] += count
            profile.own_files[leaf.path] += count
            profile.own_layers[layer_of(leaf.path)] += count
            for name in {frame.name for frame in frames}:
                profile.total[name] += count
        return profile


def summarise(lines: Iterable[str], top: int = 20) -> str:
    profile = Profile.parse(lines)
    if not profile.samples:
        return "no samples (was the process idle, or could py-spy not attach?)\n"

    def table(title: str, counter: Counter[str]) -> list[str]:
        out = [title]
        for name, count in counter.most_common(top):
            out.append(f"  {100.0 * count / profile.samples:5.1f}%  {count:7d}  {name}")
        return out

    ours = Counter(
        {n: c for n, c in profile.total.items() if "(cityops/" in n and not n.endswith(_ENTRY_POINTS)}
    )
    out = [f"{profile.samples} samples (busy, idle left out)"]
    if profile.threads:
        out += table("busy samples by thread (MainThread runs the event loop):", profile.threads)
    out += table("own time by layer:", profile.own_layers)
    out += table("own time by function (C calls it makes included):", profile.own)
    out += table("own time by source line:", profile.own_lines)
    out += table("total time of CityOps functions (anywhere on the stack):", ours)
    return "\n".join(out) + "\n"


def summarise_file(path: Path, top: int = 20) -> str:
    with open(path, encoding="utf-8", errors="replace") as handle:
        return summarise(handle, top)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.profile_summary", description="Summarise py-spy --format raw profiles."
    )
    parser.add_argument("files", nargs="+", type=Path, help="py-spy --format raw outputs")
    parser.add_argument("--top", type=int, default=20, help="rows per table (20)")
    args = parser.parse_args(argv)
    for path in args.files:
        print(f"== {path}")
        print(summarise_file(path, args.top))


if __name__ == "__main__":
    main()
