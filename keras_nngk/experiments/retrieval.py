"""Recall@K on unseen classes: train on half of the classes, retrieve among the other half.

`retrieval(...)` reports Recall@K for the learned embeddings of each head, the
untrained network and raw pixels, over seeds.
"""

import json
import os

import numpy as np
import tf_keras as keras

from keras_nngk import backbones, metrics, plots
from keras_nngk import data as data_lib
from keras_nngk.experiments.common import mean_spread
from keras_nngk.utils import pipelines
from keras_nngk.utils.files import write_json_atomically


def retrieval(dataset, heads, seeds, workdir, epochs=None, overrides=None, verbose=1):
    """Recall@1/2/4/8 on the unseen half of the classes: trained heads (via `fit`), untrained network, raw pixels.

    Each trained run is a normal `trainers.fit` run with `task="retrieval"` in
    `workdir/<head>-seed<seed>` (and resumes from there). Writes `retrieval.json`
    and `retrieval.png`.
    """
    from keras_nngk.training import run as run_lib  # pylint: disable=g-import-not-at-top
    from keras_nngk.training.config import Config  # pylint: disable=g-import-not-at-top
    os.makedirs(workdir, exist_ok=True)
    rows = []
    base = Config.for_dataset(dataset, **dict(overrides or {}, task="retrieval"))
    data = data_lib.load(dataset, task="retrieval", data_dir=base.data_dir, image_size=base.image_size,
                         class_split=base.class_split())
    test_images = run_lib.image_batches(data.test)
    test_labels = run_lib.labels_of(data.test)
    if dataset in data_lib.datasets.ARRAY_SETS:  # Raw pixels as the floor (the fine-grained sets are too large).
        pixels = np.concatenate([batch.reshape(len(batch), -1) for batch in test_images.as_numpy_iterator()])
        rows.append({"method": "raw pixels", "seed": None,
                     **{f"recall@{k}": v for k, v in metrics.recall_at_k(pixels, test_labels).items()}})
    for seed in seeds:
        settings = dict(overrides or {}, task="retrieval", seed=seed)
        if epochs:
            settings["epochs"] = epochs
        config = Config.for_dataset(dataset, **settings)
        keras.utils.set_random_seed(seed)
        untrained = backbones.get(config.backbone, input_shape=data.image_shape, embedding_dim=config.embedding_dim,
                                  l2_normalize=config.l2_normalize, weights=config.weights, pooling=config.pooling)
        untrained = backbones.retrieval_network(untrained, config.retrieval_features)  # The same features.
        recalls = metrics.recall_at_k(pipelines.predict(untrained, test_images), test_labels)
        rows.append({"method": "untrained network", "seed": seed, **{f"recall@{k}": v for k, v in recalls.items()}})
        for head in heads:
            run = run_lib.fit(Config.for_dataset(dataset, **settings, head=head),
                              os.path.join(workdir, f"{head}-seed{seed}"), verbose=verbose)
            rows.append({"method": head, "seed": seed,
                         **{key: value for key, value in run.items() if key.startswith("recall@")}})
    path = os.path.join(workdir, "retrieval.json")
    results_split = [list(map(int, classes)) for classes in base.class_split()] if base.class_split() else None
    if os.path.exists(path):  # Another call on this workdir (e.g. one head at a time): keep its other rows.
        with open(path) as handle:
            previous = json.load(handle)
        if previous.get("dataset") == dataset and previous.get("class_split") == results_split:
            done = {(row["method"], row["seed"]) for row in rows}
            rows = [row for row in previous["runs"] if (row["method"], row["seed"]) not in done] + rows
    groups = {}
    for row in rows:
        for key, value in row.items():
            if key.startswith("recall@"):
                groups.setdefault(row["method"], {}).setdefault(key, []).append(value)
    table = mean_spread(groups)
    results = {"dataset": dataset, "class_split": results_split, "runs": rows, "table": table}
    write_json_atomically(path, results)
    plots.plot_recall_curves(table, os.path.join(workdir, "retrieval.png"), dataset)
    return results


def format_retrieval_table(table):
    keys = ["recall@1", "recall@2", "recall@4", "recall@8"]
    lines = ["| embedding | " + " | ".join(k.replace("recall", "R") for k in keys) + " |", "|---" * 5 + "|"]
    for method, values in table.items():
        lines.append(f"| {method} | " + " | ".join(
            f"{100 * values[k][0]:.1f}" + (f" ± {100 * values[k][1]:.1f}" if values[k][2] > 1 else "")
            for k in keys) + " |")
    return "\n".join(lines)
