"""Entry points of the review's experiments; `nngk-experiment NAME [flags]` runs one of them."""

import importlib
import sys

EXPERIMENTS = {
    "enrolment": "trainers.experiments.enrolment",
    "retrieval": "trainers.experiments.retrieval",
    "robustness": "trainers.experiments.robustness",
    "samples_per_class": "trainers.experiments.samples_per_class",
}


def run():
    """`nngk-experiment NAME [flags]` (NAME: retrieval, robustness, samples_per_class): the same as
    `python -m trainers.experiments.NAME`."""
    name = sys.argv[1].replace("-", "_") if len(sys.argv) > 1 else ""
    if name not in EXPERIMENTS:
        print(f"usage: nngk-experiment {{{'|'.join(EXPERIMENTS)}}} [flags]  (--help after the name lists its flags)",
              file=sys.stderr)
        sys.exit(2)
    sys.argv = [f"{sys.argv[0]} {name}"] + sys.argv[2:]
    importlib.import_module(EXPERIMENTS[name]).run()
