r"""Trains a network with an NNGK (or baseline) head and writes the run to a workdir.

    python -m trainers.fit                                   # embedded MNIST-5k, no download, ~30 s
    python -m trainers.fit --dataset=fashion_mnist --head=nngk --epochs=10
    python -m trainers.fit --dataset=cars196 --backbone=resnet50 --task=retrieval --weights=/path/to/notop.h5

Rerunning on the same --workdir resumes from its last checkpoint.
"""

import datetime
import json
import os

from absl import flags

from trainers import common

common.define_config_flags()
flags.adopt_module_key_flags(common)  # --help lists the config flags too.
flags.DEFINE_string("workdir", None, "output folder (default saved_models/<dataset>-<head>-<time>)")
flags.DEFINE_boolean("allow_config_change", False, "resume a workdir whose config differs from this one")
flags.DEFINE_integer("verbose", 1, "1: progress bars, 0: quiet")
flags.DEFINE_boolean("json", False, "print the metrics as one JSON document instead of a summary")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    from keras_nngk import training  # pylint: disable=g-import-not-at-top  (TensorFlow loads after flag parsing)
    workdir = FLAGS.workdir

    def resume_hint():
        return (f"rerun with --workdir={workdir} to resume from its last checkpoint." if workdir
                else "nothing was written.")

    with common.user_errors(resume_hint):
        config = common.config_from_flags()
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        workdir = workdir or os.path.join("saved_models", f"{config.dataset}-{config.head}-{stamp}")
        results = training.fit(config, workdir, allow_config_change=FLAGS.allow_config_change, verbose=FLAGS.verbose)
    summary = {key: value for key, value in results.items() if key != "history"}
    if FLAGS.json:
        print(json.dumps(summary, indent=2, sort_keys=True))
        return
    print(human_summary(summary, workdir))


def human_summary(results, workdir):
    """A few lines a person reads at the end of a run: what was trained, how well, where it is, what next."""
    lines = [f"{results['dataset']} / {results['backbone']} / {results['head']} head: "
             f"{results['epochs']} epoch{'s' if results['epochs'] != 1 else ''} in {results['train_seconds']:.0f} s"
             + (f" (resumed at epoch {results['initial_epoch']})" if results.get("initial_epoch") else "")]
    evaluated_on = f"on {results['num_test']:,} {results.get('evaluated_on', 'test')} images"
    if "test_accuracy" in results:
        line = f"  accuracy {100 * results['test_accuracy']:.2f}% {evaluated_on}"
        if "knn_accuracy" in results:
            line += f" (kNN over the embeddings: {100 * results['knn_accuracy']:.2f}%)"
        lines.append(line)
    recalls = sorted((int(key.split("@")[1]), value) for key, value in results.items() if key.startswith("recall@"))
    if recalls:
        lines.append(f"  Recall@K on unseen classes {evaluated_on}: "
                     + ", ".join(f"R@{k} {100 * value:.2f}%" for k, value in recalls)
                     + (f"; MAP@R {100 * results['map@r']:.2f}%" if "map@r" in results else ""))
    if "test_accuracy_pq" in results:
        lines.append(f"  accuracy with compressed centers {100 * results['test_accuracy_pq']:.2f}%")
    lines += [f"Run written to {workdir} (metrics.json, training.png, model.keras, saved_model/)",
              f"Next: python -m trainers.evaluate --model={workdir}  |  python -m trainers.export --model={workdir}"]
    return "\n".join(lines)


def run():
    """The console command (see pyproject.toml)."""
    common.run(main)


if __name__ == "__main__":
    run()
