"""Plots of a run, saved as PNG next to its metrics (matplotlib, no display needed)."""

import os

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position


def plot_run(results, output_dir):
    """Training curves (`training.png`) and, for retrieval, Recall@K bars (`recall_at_k.png`). Returns the paths."""
    paths = []
    history = results.get("history", {})
    if history.get("loss"):
        figure, axes = plt.subplots(1, 2, figsize=(9, 3.5))
        epochs = range(results.get("initial_epoch", 0) + 1, results.get("initial_epoch", 0) + len(history["loss"]) + 1)
        axes[0].plot(list(epochs), history["loss"], marker="o")
        axes[0].set(xlabel="epoch", ylabel="training loss", title="loss")
        if history.get("accuracy"):
            axes[1].plot(list(epochs), history["accuracy"], marker="o", label="train")
        if "test_accuracy" in results:
            axes[1].axhline(results["test_accuracy"], color="C1", linestyle="--", label="test (final)")
        axes[1].set(xlabel="epoch", ylabel="accuracy", title="accuracy")
        axes[1].legend()
        for axis in axes:
            axis.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        figure.suptitle(f"{results.get('dataset')} / {results.get('backbone')} / {results.get('head')} head")
        figure.tight_layout()
        paths.append(os.path.join(output_dir, "training.png"))
        figure.savefig(paths[-1], dpi=100)
        plt.close(figure)
    recalls = {key: value for key, value in results.items() if key.startswith("recall@")}
    if recalls:
        figure, axis = plt.subplots(figsize=(4.5, 3.5))
        names = sorted(recalls, key=lambda key: int(key.split("@")[1]))
        bars = axis.bar([name.replace("recall", "R") for name in names], [100 * recalls[name] for name in names])
        axis.bar_label(bars, fmt="%.1f")
        axis.set(ylim=(0, 105), ylabel="Recall@K (%)", title=f"{results.get('dataset')}: unseen classes")
        figure.tight_layout()
        paths.append(os.path.join(output_dir, "recall_at_k.png"))
        figure.savefig(paths[-1], dpi=100)
        plt.close(figure)
    return paths
