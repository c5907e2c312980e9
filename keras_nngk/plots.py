"""Plots of a run, saved as PNG next to its metrics (matplotlib, no display needed)."""

import io
import os

import matplotlib
import matplotlib.ticker
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

from keras_nngk.utils.files import write_atomically  # noqa: E402  pylint: disable=wrong-import-position


def save_figure(figure, path, dpi=100):
    """Saves a figure as PNG atomically (a killed run never leaves half an image)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return write_atomically(path, buffer.getvalue())


def _finish(figure, path):
    """Lays the figure out, writes it to `path` (atomically) and closes it; returns the path."""
    figure.tight_layout()
    save_figure(figure, path)
    plt.close(figure)
    return path


def plot_run(results, output_dir):
    """Training curves (`training.png`) and, for retrieval, Recall@K bars (`recall_at_k.png`). Returns the paths."""
    paths = []
    history = results.get("history", {})
    if history.get("loss"):
        figure, axes = plt.subplots(1, 2, figsize=(9, 3.5))
        first = results.get("history_first_epoch", results.get("initial_epoch", 0))  # Older runs: initial_epoch.
        epochs = range(first + 1, first + len(history["loss"]) + 1)
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
        save_figure(figure, paths[-1])
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
        save_figure(figure, paths[-1])
        plt.close(figure)
    return paths


def plot_accuracy_matrix(results, path):
    """Heatmap of a continual run's accuracy matrix: row t = after training task t, column s = test set of task s."""
    matrix = 100 * np.asarray(results["accuracy_matrix"])
    figure, axis = plt.subplots(figsize=(1.0 + 0.8 * matrix.shape[1], 0.8 + 0.7 * matrix.shape[0]))
    image = axis.imshow(matrix, vmin=0, vmax=100, cmap="viridis")
    for (row, column), value in np.ndenumerate(matrix):
        axis.text(column, row, f"{value:.0f}", ha="center", va="center", color="white" if value < 60 else "black",
                  fontsize=8)
    ticks = range(matrix.shape[0])
    axis.set_xticks(list(ticks), [str(t + 1) for t in ticks])
    axis.set_yticks(list(ticks), [str(t + 1) for t in ticks])
    axis.set(xlabel="test set of task", ylabel="after training task",
             title=f"{results['method']}: average {100 * results['average_accuracy']:.1f}%")
    figure.colorbar(image, ax=axis, label="accuracy (%)")
    return _finish(figure, path)


def plot_average_accuracy(results_by_method, path):
    """Average accuracy over the tasks seen so far, after each task, one line per method."""
    figure, axis = plt.subplots(figsize=(6, 4))
    for method, results in results_by_method.items():
        values = 100 * np.asarray(results["average_accuracy_per_task"])
        axis.plot(range(1, len(values) + 1), values, marker="o", label=method)
    any_results = next(iter(results_by_method.values()))
    axis.set(xlabel="tasks trained", ylabel="average accuracy on seen tasks (%)", ylim=(0, 100),
             title=f"{any_results['benchmark']} ({any_results['scenario'].replace('_', '-')})")
    axis.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axis.legend(fontsize=7, ncol=2)
    return _finish(figure, path)


def plot_samples_per_class(table, path, dataset):
    """Test accuracy against training images per class (log x axis), mean and spread over seeds, one line per head."""
    figure, axis = plt.subplots(figsize=(6, 4))
    for head, by_n in table.items():
        numeric = [n for n in by_n if n != "all"]
        xs = [int(n) for n in numeric]
        means = np.array([100 * by_n[n][0] for n in numeric])
        spreads = np.array([100 * by_n[n][1] for n in numeric])
        line = axis.plot(xs, means, marker="o", label=head, linestyle="--" if head.startswith("pixels") else "-")
        axis.fill_between(xs, means - spreads, means + spreads, alpha=0.15, color=line[0].get_color())
        if "all" in by_n:
            axis.axhline(100 * by_n["all"][0], color=line[0].get_color(), linestyle=":", linewidth=1)
    if any(n != "all" for by_n in table.values() for n in by_n):  # Only "all": the dotted lines alone, no log axis.
        axis.set_xscale("log")
    axis.set(xlabel="training images per class (dotted: all)", ylabel="test accuracy (%)",
             title=f"{dataset}: accuracy against samples per class")
    axis.legend(fontsize=8)
    return _finish(figure, path)


def plot_recall_curves(table, path, dataset):
    """Recall@K against K (log2 x axis), one line per embedding."""
    figure, axis = plt.subplots(figsize=(5.5, 4))
    for method, values in table.items():
        ks = sorted(int(key.split("@")[1]) for key in values)
        axis.plot(ks, [100 * values[f"recall@{k}"][0] for k in ks], marker="o", label=method)
    axis.set_xscale("log", base=2)
    axis.set(xlabel="K", ylabel="Recall@K (%)", title=f"{dataset}: Recall@K on unseen classes")
    axis.legend(fontsize=8)
    return _finish(figure, path)


def plot_enrolment(table, path, dataset):
    """Accuracy against images enrolled per new class: NNGK enrolment at each exported k, and softmax."""
    figure, axis = plt.subplots(figsize=(5.5, 4))
    variants = [key.split("@", 1)[1] for key in table if key.startswith("accuracy@")]
    curves = [(f"accuracy@{variant}", f"enrolment, {variant}") for variant in variants]
    curves.append((f"softmax_accuracy@{variants[0]}", "softmax on frozen embeddings"))
    for key, label in curves:
        shots = sorted(table[key], key=int)
        axis.errorbar([int(n) for n in shots], [100 * table[key][n][0] for n in shots],
                      yerr=[100 * table[key][n][1] for n in shots], marker="o", capsize=3, label=label)
    axis.set_xscale("log")
    axis.set(xlabel="images enrolled per new class", ylabel="test accuracy, all classes (%)",
             title=f"{dataset}: on-device enrolment")
    axis.legend(fontsize=8)
    return _finish(figure, path)


def plot_attack_curves(curves, path):
    """Attack success rate against the queries spent, one line per run (`{name: [(queries, success rate)]}`)."""
    figure, axis = plt.subplots(figsize=(5, 3.5))
    for name, curve in curves.items():
        if curve:
            axis.plot([q for q, _ in curve], [100 * s for _, s in curve], marker="o", label=name)
    axis.set(xlabel="queries", ylabel="attack success (%)", title="SimBA black-box attack", ylim=(0, 100))
    axis.legend(fontsize=8)
    return _finish(figure, path)


def plot_trials(trials, path):
    """Validation accuracy of each tuner trial in the order they ran, best so far as a line."""
    ordered = sorted(trials, key=lambda row: row["trial_id"])
    scores = [100 * row["score"] for row in ordered]
    figure, axis = plt.subplots(figsize=(5.5, 3.5))
    axis.plot(range(1, len(scores) + 1), scores, "o", label="trial")
    axis.plot(range(1, len(scores) + 1), np.maximum.accumulate(scores), "-", label="best so far")
    axis.set(xlabel="trial", ylabel="validation accuracy (%)", title="hyperparameter search")
    axis.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axis.legend()
    return _finish(figure, path)
