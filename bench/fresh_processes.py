"""Variants run in turns, each run in a fresh Python process: for benchmarks whose effect depends on process state
(tf.data's threads, compiled functions, caches), so every run starts alike and machine noise hits the variants alike.
"""

import json
import subprocess
import sys
import tempfile


def run_in_turns(variants, runs, code_for):
    """`{variant: [result, ...]}`: `runs` rounds, each running every variant once, in order.

    `code_for(variant, folder)` returns the Python source of one run; it runs in an empty temporary `folder` (its
    working directory) and prints its result as JSON on its last line of stdout. Each result is also logged to stderr.
    """
    results = {variant: [] for variant in variants}
    for number in range(runs):
        for variant in variants:
            with tempfile.TemporaryDirectory() as folder:
                output = subprocess.run([sys.executable, "-c", code_for(variant, folder)], cwd=folder,
                                        capture_output=True, text=True, check=True).stdout
            results[variant].append(json.loads(output.strip().splitlines()[-1]))
            print(f"run {number + 1}/{runs} {variant}: {results[variant][-1]}", file=sys.stderr, flush=True)
    return results
