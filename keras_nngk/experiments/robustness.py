"""Robustness of trained networks to a query-limited black-box attack (SimBA or Square), run on finished runs.

`robustness(runs, workdir)` attacks the saved model of each run (e.g. a biased
network and its plain counterpart) on the same test images with the same query
budget, and writes `robustness.json` and `attack.png` (success rate against the
queries spent, one curve per run).
"""

import os

import numpy as np

from keras_nngk import attacks, plots
from keras_nngk import data as data_lib
from keras_nngk.models.biased_eval import test_arrays
from keras_nngk.utils.checks import check_positive_int
from keras_nngk.utils.files import write_json_atomically

ATTACKS = {"simba": attacks.simba, "square": attacks.square_attack}


def attack_run(workdir, num_images=100, max_queries=500, seed=None, attack="simba"):
    """`attack` ("simba" or "square") on the saved model of a finished run: `{"success_rate", "mean_queries",
    "num_attacked", "curve"}`.

    The images are `num_images` test images drawn with `seed` (default: the run's
    seed), the same for every run of the same data set and seed.
    """
    from keras_nngk.training import run as run_lib  # pylint: disable=g-import-not-at-top
    config, model, _ = run_lib.load_run(workdir)
    seed = config.seed if seed is None else seed
    data = data_lib.load(config.dataset, **config.data_options())
    images, labels = test_arrays(data.test)
    chosen = np.random.default_rng(seed).choice(len(labels), min(num_images, len(labels)), replace=False)
    return ATTACKS[attack](lambda x: model(x, training=False).numpy(), images[chosen], labels[chosen],
                           max_queries=max_queries, seed=seed)


def robustness(runs, workdir, num_images=100, max_queries=500, seed=None, attack="simba"):
    """Attacks each finished run in `runs` (folders) alike; returns and writes `{run name: attack results}`."""
    if not runs:
        raise ValueError("Name at least one finished run folder to attack. Received: runs=[]")
    if attack not in ATTACKS:
        raise ValueError(f"Unknown attack {attack!r}; valid: {', '.join(ATTACKS)}. Received: attack={attack!r}")
    check_positive_int("num_images", num_images)
    check_positive_int("max_queries", max_queries)
    results = {"num_images": num_images, "max_queries": max_queries, "attack": attack, "runs": {}}
    for run in runs:
        results["runs"][os.path.basename(os.path.normpath(run))] = attack_run(run, num_images, max_queries, seed,
                                                                              attack)
    os.makedirs(workdir, exist_ok=True)
    write_json_atomically(os.path.join(workdir, "robustness.json"), results)
    plots.plot_attack_curves({name: result["curve"] for name, result in results["runs"].items()},
                             os.path.join(workdir, "attack.png"))
    return results


def format_robustness_table(results):
    name = {"simba": "SimBA", "square": "Square Attack"}[results.get("attack", "simba")]
    lines = [f"| run | {name} success ({results['max_queries']} queries) | mean queries to succeed |", "|---|---|---|"]
    for name, result in results["runs"].items():
        lines.append(f"| {name} | {100 * result['success_rate']:.1f}% of {result['num_attacked']} | "
                     f"{result['mean_queries']:.0f} |")
    return "\n".join(lines)
