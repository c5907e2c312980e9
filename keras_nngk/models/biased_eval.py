"""Evaluation of a biased network: accuracy and skip rate against the gate threshold, and latency.

Robustness to black-box attacks is an experiment of its own (`keras_nngk.experiments.robustness`).
"""

import os

import numpy as np
import tensorflow as tf

from keras_nngk import metrics
from keras_nngk.models import biased as models_biased
from keras_nngk.plots import save_figure
from keras_nngk.utils import pipelines

MAX_ACCURACY_COST = 0.005  # The threshold chosen is the one that costs at most half a point of accuracy,
CONFIDENCE_Z = 1.645  # with 95% (one-sided) confidence from the held-out estimate.
SWEEP_SKIP_RATES = np.linspace(0.0, 1.0, 21)  # The test-set trade-off curve: thresholds at these skip rates.


def test_arrays(dataset):
    """`(images, labels)` of a dataset of `(image, label)` pairs, as NumPy arrays."""
    images, labels = [], []
    for image, label in pipelines.without_autotune_thread(dataset.batch(1024)).as_numpy_iterator():
        images.append(image)
        labels.append(label)
    return np.concatenate(images), np.concatenate(labels)


def choose_threshold(scores, correct_early, correct_full, max_cost=MAX_ACCURACY_COST, confidence=CONFIDENCE_Z):
    """The exit threshold that lets the most samples skip f2 at an accuracy cost of at most `max_cost`.

    A sample exits when its score is at least the threshold and is then right when
    `correct_early` (clf(z1)) is; the others get the full network's answer
    (`correct_full`). Candidates are the scores themselves, so samples with equal
    scores exit together. Meant for held-out data, never the test set.

    The cost measured on held-out samples is an estimate: a threshold is allowed
    when the cost plus `confidence` standard errors (of the mean paired
    difference between the full and the early-exit answers) stays within
    `max_cost`, so that the cost also holds on new data (one-sided 95% with the
    default 1.645; 0 trusts the held-out estimate as it is).

    Returns:
        `(threshold, skip_rate, accuracy)`; the threshold is `inf` when no sample
        can exit within the cost.
    """
    scores = np.asarray(scores, np.float64)
    order = np.argsort(-scores, kind="stable")
    ranked = scores[order]
    early = np.asarray(correct_early, np.float64)[order]
    full = np.asarray(correct_full, np.float64)[order]
    count = len(ranked)
    if count == 0:
        raise ValueError("Choosing an exit threshold needs at least one held-out sample.")
    # Accuracy when the j highest-scoring samples exit, j = 0..count.
    accuracy = (np.concatenate([[0.0], np.cumsum(early)]) + full.sum() - np.concatenate([[0.0], np.cumsum(full)]))
    accuracy /= count
    # Per-sample cost of exiting the top j: d_i = full_i - early_i for them, 0 for the rest (d_i^2 = |d_i|).
    difference = full - early
    mean_cost = np.concatenate([[0.0], np.cumsum(difference)]) / count
    variance = np.maximum(np.concatenate([[0.0], np.cumsum(np.abs(difference))]) / count - mean_cost ** 2, 0.0)
    upper_cost = mean_cost + confidence * np.sqrt(variance / count)
    boundary = np.ones(count + 1, bool)
    boundary[1:count] = ranked[:-1] > ranked[1:]  # Ties exit together: only cut between distinct scores.
    allowed = boundary & (upper_cost <= max_cost + 1e-12)
    allowed[0] = True
    exits = int(np.flatnonzero(allowed).max())
    threshold = float("inf") if exits == 0 else float(ranked[exits - 1])
    return threshold, exits / count, float(accuracy[exits])


def choose_exit(biased, images, labels):
    """Per exit rule, the threshold chosen on held-out `(images, labels)` with what it gives there.

    Returns `{rule: {"threshold" (None: nothing may exit), "validation_skip_rate", "validation_accuracy",
    "validation_accuracy_full", "validation_auroc", "validation_exit_accuracy"}}`; `best_exit_rule` picks the rule.
    """
    full = pipelines.predict(biased.inference_model, images, batch_size=1024).argmax(1) == labels
    choices = {}
    for rule in models_biased.EXIT_RULES:
        scores, early = biased.exit_scores(images, rule)
        right = early.argmax(1) == labels
        threshold, skip, accuracy = choose_threshold(scores, right, full)
        choices[rule] = {"threshold": threshold if np.isfinite(threshold) else None, "validation_skip_rate": skip,
                         "validation_accuracy": accuracy, "validation_accuracy_full": float(full.mean()),
                         # How well the score ranks the exit's right answers above its wrong ones (0.5: chance).
                         "validation_auroc": metrics.auroc(scores, right), "validation_exit_accuracy": float(
                             right.mean())}
    return choices


def best_exit_rule(choices):
    """The rule that lets the most held-out samples exit (the first listed on ties)."""
    return max(models_biased.EXIT_RULES, key=lambda name: choices[name]["validation_skip_rate"])


def _batches_seconds(function, images, batch_size):
    """Seconds per batch of `function` over `images` in batches (median of 5 passes over them all)."""
    batches = [tf.constant(images[start:start + batch_size]) for start in range(0, len(images), batch_size)]
    return metrics.median_seconds(lambda: [function(batch) for batch in batches]) / len(batches)


def evaluate_biased(biased, data, output_dir, threshold_data=None, batch_size=256, latency_images=2048):
    """Results of a biased (or plain) network on the test set; also writes `early_exit.png`.

    For each exit rule, the threshold is chosen on `threshold_data = (images, labels)`
    (held out of training) when given; the test set only reports what that
    threshold gives. Latencies are per batch of `batch_size` over the first
    `latency_images` test images: the full network, the plain path (f2 o f1, the
    network without lookup) and early exit at the chosen rule and threshold,
    measured in turns.
    """
    images, labels = test_arrays(data.test)
    full = tf.function(lambda x: biased.inference_model(x, training=False))
    timed = images[:latency_images]
    results = {"latency_full_ms": 1e3 * _batches_seconds(lambda x: full(x).numpy(), timed, batch_size)}
    if biased.lookup is None:
        _plot(results, output_dir)
        return results

    def predict(x):
        return pipelines.predict(biased.inference_model, x, batch_size=1024)

    conv_only = tf.function(lambda x: biased.classifier(biased.f2(biased.f1(x, training=False), training=False)))
    full_probabilities = predict(images)
    full_accuracy = float(np.mean(full_probabilities.argmax(1) == labels))
    rules = {}
    choices = choose_exit(biased, *threshold_data) if threshold_data is not None else None
    for rule in models_biased.EXIT_RULES:
        scores, early = biased.exit_scores(images, rule)
        row = {}
        if threshold_data is not None:
            row.update(choices[rule])
            threshold = row["threshold"] if row["threshold"] is not None else float("inf")
            skip = scores >= threshold
            row.update({"skip_rate": float(skip.mean()), "accuracy": float(np.mean(
                np.where(skip, early.argmax(1), full_probabilities.argmax(1)) == labels))})
        # The whole trade-off on the test set, for the plot (thresholds at evenly spaced skip rates; not for choosing).
        cuts = [float("inf")] + [float(np.quantile(scores, 1.0 - rate)) for rate in SWEEP_SKIP_RATES[1:]]
        row["sweep"] = [{"threshold": t if np.isfinite(t) else None, "skip_rate": float(np.mean(scores >= t)),
                         "accuracy": float(np.mean(np.where(scores >= t, early.argmax(1),
                                                            full_probabilities.argmax(1)) == labels))} for t in cuts]
        rules[rule] = row
    results.update({"test_accuracy_full": full_accuracy, "exit_rules": rules,
                    "lookup_keys": int(np.sum(biased.lookup.center_mask.numpy()))})
    if threshold_data is not None:
        rule = best_exit_rule(choices)
        chosen = rules[rule]
        results.update({"exit_rule": rule, "chosen_threshold": chosen["threshold"], "skip_rate": chosen["skip_rate"],
                        "accuracy_at_threshold": chosen["accuracy"]})
        threshold = chosen["threshold"] if chosen["threshold"] is not None else 2.0  # None: nothing exits.
        step = tf.function(lambda x: biased._early_exit_step(x, tf.constant(threshold, tf.float32), rule))  # pylint: disable=protected-access
        latencies = {}
        for _ in range(2):  # In turns: the machine's load drifts.
            for name, function in (("plain", lambda x: conv_only(x).numpy()), ("full", lambda x: full(x).numpy()),
                                   ("early_exit", lambda x: step(x)[0].numpy())):
                latencies.setdefault(name, []).append(1e3 * _batches_seconds(function, timed, batch_size))
        results.update({"latency_conv_path_ms": float(np.median(latencies["plain"])),
                        "latency_full_ms": float(np.median(latencies["full"])),
                        "latency_at_threshold_ms": float(np.median(latencies["early_exit"]))})
        results["early_exit_vs_plain"] = results["latency_at_threshold_ms"] / results["latency_conv_path_ms"]
        if not biased.lookup.prototypes_per_class:
            results["faiss_hnsw_lookup"] = _latency_with_faiss_lookup(biased, images, batch_size, threshold, rule)
    else:
        results["latency_conv_path_ms"] = 1e3 * _batches_seconds(lambda x: conv_only(x).numpy(), timed, batch_size)
    gates = pipelines.predict(biased.gate_model, images, batch_size=1024).ravel()
    results.update({"gate_mean": float(gates.mean()), "gate_median": float(np.median(gates))})
    _plot(results, output_dir)
    return results


def _latency_with_faiss_lookup(biased, images, batch_size, threshold, rule="gate"):
    """The same latencies with the lookup searched by a faiss HNSW index instead of the exact in-graph search.

    The exact search over every stored key costs more than f2 on a CPU, which hides what early exit saves; an
    approximate index is how the lookup is meant to run (section 3 of the review). The layer goes back to the
    exact search afterwards.
    """
    try:
        biased.lookup.set_search("faiss-hnsw")
    except ImportError:
        return None
    try:
        batch = tf.constant(images[:batch_size])
        full = tf.function(lambda x: biased.inference_model(x, training=False))
        biased._early_exit = None  # pylint: disable=protected-access  (retrace with the new search)
        exit_early = lambda: biased.predict_early_exit(images[:batch_size], threshold, batch_size, rule)  # noqa: E731
        return {"latency_full_ms": 1e3 * metrics.median_seconds(lambda: full(batch).numpy()),
                "latency_at_threshold_ms": 1e3 * metrics.median_seconds(exit_early),
                "skip_rate_on_batch": float(exit_early()[1].mean())}
    finally:
        biased.lookup.set_search("exact")
        biased._early_exit = None  # pylint: disable=protected-access


def _plot(results, output_dir):
    if "exit_rules" not in results:  # The plain network has no lookup path.
        return
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
    figure, axes = plt.subplots(1, 2, figsize=(9.5, 3.6))
    for index, (rule, row) in enumerate(results["exit_rules"].items()):
        sweep = row["sweep"]
        axes[0].plot([100 * point["skip_rate"] for point in sweep], [100 * point["accuracy"] for point in sweep],
                     marker=".", color=f"C{index}", label=f"exit on {rule}")
        if "skip_rate" in row:
            axes[0].plot(100 * row["skip_rate"], 100 * row["accuracy"], marker="*", markersize=14, color=f"C{index}",
                         linestyle="none", label=f"{rule}: threshold from validation")
    floor = 100 * (results["test_accuracy_full"] - MAX_ACCURACY_COST)
    axes[0].axhline(floor, color="grey", linestyle=":", label="full network - 0.5 pt")
    axes[0].set(xlabel="test images that skip f2 (%)", ylabel="test accuracy (%)", title="early exit trade-off")
    axes[0].set_ylim(bottom=max(floor - 10, 0))
    axes[0].legend(fontsize=7)
    bars = [("plain", "latency_conv_path_ms"), ("biased, full", "latency_full_ms"),
            ("biased, early exit", "latency_at_threshold_ms")]
    bars = [(name, results[key]) for name, key in bars if key in results]
    axes[1].bar([name for name, _ in bars], [value for _, value in bars], color=["C2", "C1", "C0"][:len(bars)])
    axes[1].set(ylabel="ms per batch of 256", title="latency (Keras)")
    figure.tight_layout()
    save_figure(figure, os.path.join(output_dir, "early_exit.png"))
    plt.close(figure)
