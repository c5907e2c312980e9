"""How long the test suite takes on N workers with files handed out in path order or longest first.

    python -m pytest -q -n auto --dist loadfile tests --durations=0 > suite.log
    python bench/suite_schedule.py suite.log                # 2 workers, as on the CI machine

Sums each test file's setup, call and teardown times from pytest's `--durations=0` report and simulates
pytest-xdist's `--dist loadfile` scheduling (the next file to the first worker that is free): the makespan in path
order, longest first, and its lower bound (the larger of the total over the workers and the longest file). The
order `tests/conftest.py` gives (`SLOWEST_FILES`) came from this report.
"""

import argparse
import collections
import heapq
import re

LINE = re.compile(r"\s*([\d.]+)s (?:call|setup|teardown)\s+(\S+?)::")


def file_seconds(lines):
    seconds = collections.defaultdict(float)
    for line in lines:
        match = LINE.match(line)
        if match:
            seconds[match.group(2)] += float(match.group(1))
    return dict(seconds)


def makespan(order, seconds, workers):
    free_at = [0.0] * workers
    for path in order:
        heapq.heapreplace(free_at, free_at[0] + seconds[path])
    return max(free_at)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("log", help="pytest output with --durations=0")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--top", type=int, default=10, help="list this many of the longest files")
    args = parser.parse_args()
    with open(args.log) as handle:
        seconds = file_seconds(handle)
    if not seconds:
        raise SystemExit(f"error: no durations in {args.log}; run pytest with --durations=0")
    longest = sorted(seconds, key=seconds.get, reverse=True)
    total = sum(seconds.values())
    print(f"{len(seconds)} files, {total:.0f} s of test work, {args.workers} workers")
    print("| order | makespan s |")
    print("|---|---|")
    print(f"| path order | {makespan(sorted(seconds), seconds, args.workers):.0f} |")
    print(f"| longest first | {makespan(longest, seconds, args.workers):.0f} |")
    print(f"| lower bound | {max(total / args.workers, seconds[longest[0]]):.0f} |")
    for path in longest[:args.top]:
        print(f"{seconds[path]:8.1f} s  {path}")


if __name__ == "__main__":
    main()
