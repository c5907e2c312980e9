"""Log-log plot of search time against the number of centers, per index and dimension, from bench/search.py JSON.

    python bench/search.py --json bench/search.json && python bench/plot_scaling.py bench/search.json

Also prints, for each d, the smallest N at which an approximate index with recall@k >= --min_recall answers a
batch faster than the exact search: where `search="auto"` should hand over.
"""

import argparse
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("json_files", nargs="+")
    parser.add_argument("--output", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "scaling.png"))
    parser.add_argument("--min_recall", type=float, default=0.95)
    args = parser.parse_args()
    rows = [row for path in args.json_files for row in json.load(open(path))]
    dims = sorted({row["d"] for row in rows})
    figure, axes = plt.subplots(1, len(dims), figsize=(4.5 * len(dims), 3.8), squeeze=False)
    for axis, dimension in zip(axes[0], dims):
        subset = [row for row in rows if row["d"] == dimension]
        for name in sorted({row["index"] for row in subset}, key=lambda n: (n != "exact", n)):
            points = sorted((row["N"], row["ms"]) for row in subset if row["index"] == name)
            axis.plot(*zip(*points), marker="o", label=name)
        floor = sorted({(row["N"], row["floor_ms"]) for row in subset})
        axis.plot(*zip(*floor), linestyle=":", color="black", label="matmul floor")
        axis.set(xscale="log", yscale="log", xlabel="centers N", ylabel="ms per batch", title=f"d = {dimension}")
        axis.legend(fontsize=7)
        exact = {row["N"]: row["ms"] for row in subset if row["index"] == "exact"}
        handover = [(row["N"], row["index"]) for row in subset
                    if row["index"] not in ("exact", "faiss-flat") and row["recall"] >= args.min_recall
                    and row["ms"] < exact.get(row["N"], 0)]
        where = f"N = {min(handover)[0]} ({min(handover)[1]})" if handover else "not within the measured N"
        print(f"d={dimension}: first approximate index faster than exact with recall >= {args.min_recall}: {where}")
    figure.tight_layout()
    figure.savefig(args.output, dpi=100)
    print(f"saved {args.output}")


if __name__ == "__main__":
    main()
