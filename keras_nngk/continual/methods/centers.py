"""Nearest-neighbour methods over stored centers: Algorithm 1 of the review, its ablations and its repaired form.

- "nngk_add_drop": Algorithm 1. For each task D_e: train `epochs` epochs (the task's own
  samples act as refreshed, leave-one-out centers besides the stored set C, since a new task
  starts with no center of its classes); freeze; pick `drop_per_task` centers of C by
  `drop_rule` (the review: best-predicted, leave-one-out) and drop them with the influence
  rule of eq. 13; add samples of D_e by `add_rule` (the review: worst-predicted by C, in
  `add_rounds` greedy rounds), optionally compensating by eq. 13; then fine-tune
  `finetune_epochs` epochs against C alone. C never exceeds `budget`; no raw image is kept
  after its task. The repairs (`class_quota`, `min_centers_per_class`, "redundant" drops,
  "own_mean" adds; see `keras_nngk.continual.selection`) are options of this method.
- "nngk_balanced": Algorithm 1 with every repair on.
- "nngk_add": the same with n_d = 0 (add only, until the budget is full).
- "nngk_random": the same budget, random adds and drops, no redistribution (ablation);
  "nngk_random_redistribute": random adds and drops with eq. 13 (the other half of it).
- "nngk" / "impostor": the head trained on each task in turn, centers = the current task only.

Stored centers are embeddings of a network that keeps training, and a new task's loss pushes
its samples away from them: without care the whole embedding moves and every old center
goes stale (measured: old tasks fall to 0%). Three measures against it, on by default and
switchable: feature distillation on the current task's images towards the network as it was
before the task (`distill_weight`), BatchNorm statistics kept from the first task
(`freeze_batchnorm`), and drift compensation of the old centers from the current task's
embeddings before/after training (`drift_compensation`, SDC of Yu et al. 2020). None of
them stores an image.
"""

import math

import numpy as np
import tf_keras as keras

from keras_nngk import layers, surgery
from keras_nngk import search as search_lib
from keras_nngk.continual import selection
from keras_nngk.continual.methods import base, register


class CenterMethod(base.Method):
    """A nearest-neighbour head whose centers are embeddings of training samples (by sample id)."""

    uses_centers = True
    keeps_store = False  # True: a stored set C survives the task (Algorithm 1); False: the current task only.

    def capacity(self, task_sizes):
        """Center slots: one whole task (its samples are centers while it trains), plus the stored set C."""
        return max(task_sizes) + (self.config.budget if self.keeps_store else 0)

    def make_head(self, task_sizes):
        config = self.config
        return layers.NNGKClassifier(self.trainer.num_classes, num_neighbours=config.num_neighbours,
                                     sigma=config.sigma, sample_weights=False, capacity=self.capacity(task_sizes),
                                     name="nngk_head")

    def setup(self):
        self.head = self.trainer.head
        self.center_log = []
        if self.config.distill_weight:
            self.trainer.teacher = keras.models.clone_model(self.trainer.backbone)

    # -- pieces -------------------------------------------------------------------------------------------
    def center_ids(self):
        return self.head.center_sample_ids.numpy()[self.head.center_mask.numpy()]

    def center_classes(self):
        """The class (argmax of the soft label) of each stored center, in `center_ids()` order."""
        return self.head.center_labels.numpy()[self.head.center_mask.numpy()].argmax(axis=1)

    def refresh_current(self, images, ids):
        """Re-embeds the current task's stored centers (their images are still available)."""
        present = np.isin(ids, self.center_ids())
        if present.any():
            self.trainer.recalibrate(images)
            self.trainer.sync.move(images[present], ids[present], recalibrate=False)

    def head_predict(self, embeddings, sample_ids=None):
        return self.trainer.head_predict(embeddings, sample_ids)

    def train_task(self, index, task, ids, tasks, description):
        config, trainer = self.config, self.trainer
        images, labels = task.x_train, task.y_train.astype(np.int64)
        if not self.keeps_store:
            old = self.center_ids()
            if len(old):
                self.head.drop_centers(old, redistribute=False)
        # The task's own samples are centers while it trains (Algorithm 1 would start a new task without any).
        trainer.recalibrate(images)
        before = trainer.embed(images)
        self.head.add_centers(before, labels, ids)
        trainer.run_epochs(config.epochs, images, labels, ids, description,
                           refresh=lambda: self.refresh_current(images, ids))
        trainer.recalibrate(images)
        embeddings = trainer.embed(images)
        if config.drift_compensation:
            self.compensate_drift(before, embeddings, exclude=ids)
        if not self.keeps_store:
            self.head.move_centers(ids, embeddings)
            return
        self.head.drop_centers(ids, redistribute=False)  # Back to the stored set C; the model is frozen here.
        self.update_store(task, embeddings, labels, ids)
        if config.finetune_epochs:
            trainer.run_epochs(config.finetune_epochs, images, labels, ids, description + " (fine-tune)",
                               refresh=lambda: self.refresh_current(images, ids))
            trainer.recalibrate(images)
            after = trainer.embed(images)
            if config.drift_compensation:
                self.compensate_drift(embeddings, after, exclude=ids)
            self.refresh_current(images, ids)

    def update_store(self, task, embeddings, labels, ids):
        """Algorithm 1's drop and add, after the task's training."""

    def compensate_drift(self, before, after, exclude):
        """Moves the stored centers of earlier tasks by the drift of the current task's embeddings around them.

        Semantic drift compensation (Yu et al., CVPR 2020) with the head's Gaussian
        kernel: each old center moves by the kernel-weighted mean of `after - before`
        over its k nearest current samples (by their `before` embeddings). Needs no
        stored image: only the current task's images, embedded before and after training.
        """
        ids = self.center_ids()
        old = ids[~np.isin(ids, exclude)]
        if len(old) == 0:
            return
        slots = self.head._slots_of(old)  # pylint: disable=protected-access
        centers = self.head.centers.numpy()[slots]
        index = search_lib.ExactSearch()
        index.add(before, np.arange(len(before)))
        k = min(self.config.num_neighbours, len(before))
        distances, neighbours = index.search(centers, k)
        weights = surgery.kernel_coefficients(distances, float(self.head.sigma.numpy()))
        moved = centers + np.einsum("nk,nkd->nd", weights, (after - before)[neighbours])
        if self.config.embedding_normalized:
            moved /= np.maximum(np.linalg.norm(moved, axis=1, keepdims=True), 1e-12)
        self.head.move_centers(old, moved)

    def stored_bytes(self, tasks_seen):
        return self.trainer.center_bytes(self.head.num_centers)

    def results(self):
        return {"num_centers": self.head.num_centers, "center_log": self.center_log,
                "sigma": float(self.head.sigma.numpy())}


@register("nngk_add_drop")
class AddDrop(CenterMethod):
    """Algorithm 1 (see the module docstring); the selection rules come from the config."""

    keeps_store = True
    random_selection_redistributes = True  # nngk_random turns eq. 13 off on both drops and adds.

    def update_store(self, task, embeddings, labels, ids):
        config = self.config
        stored = self.head.num_centers
        if config.class_quota:
            quotas = selection.class_quotas(config.budget, np.union1d(self.center_classes(), task.classes))
            drop_counts = {c: max(0, int(np.sum(self.center_classes() == c)) - q) for c, q in quotas.items()}
            dropped = self.select_drops(sum(drop_counts.values()), per_class=drop_counts)
        else:
            drops = self.drop_count()
            adds = config.add_per_task or config.budget // self.trainer.num_tasks + drops
            if self.name == "nngk_add":
                adds = min(adds, config.budget - stored)
            dropped = self.select_drops(min(stored, max(drops, stored + adds - config.budget)))
        if len(dropped):
            self.head.drop_centers(dropped, redistribute=config.redistribute and self.random_selection_redistributes)
        if config.class_quota:
            for c in task.classes:
                mine = np.flatnonzero(labels == c)
                self.add_samples(embeddings[mine], labels[mine], ids[mine],
                                 min(quotas[int(c)], config.budget - self.head.num_centers))
        else:
            self.add_samples(embeddings, labels, ids, min(adds, config.budget - self.head.num_centers))
        self.center_log.append({"dropped": int(len(dropped)),
                                "added": int(self.head.num_centers - stored + len(dropped)),
                                "num_centers": self.head.num_centers})

    def drop_count(self):
        return self.config.drop_per_task

    def select_drops(self, count, per_class=None):
        """Sample ids of `count` centers of C to drop by `drop_rule` (with `per_class`: that many of each class)."""
        ids = self.center_ids()
        count = min(count, len(ids))
        if count == 0:
            return ids[:0]
        rule, floor = self.config.drop_rule, self.config.min_centers_per_class
        if rule == "random" and per_class is None and floor == 0:
            return self.rng.choice(ids, size=count, replace=False)  # The review's ablation, as it always drew.
        classes = self.center_classes()
        if rule == "redundant":
            if per_class is not None:
                chosen = [np.flatnonzero(classes == c)[selection.redundant_drops(
                    self.stored_centers()[classes == c], classes[classes == c], n)]  # n keeps the quota.
                    for c, n in per_class.items() if n]
                return ids[np.concatenate(chosen)] if chosen else ids[:0]
            return ids[selection.redundant_drops(self.stored_centers(), classes, count, floor)]
        if rule == "random":
            order = self.rng.permutation(len(ids))
        else:  # best_predicted: the leave-one-out probability of its own soft label, highest first.
            labels = self.head.center_labels.numpy()[self.head.center_mask.numpy()]
            score = np.sum(labels * self.head_predict(self.stored_centers(), ids), axis=1)
            order = np.argsort(-score, kind="stable")
        if per_class is not None:
            chosen = [order[classes[order] == c][:n] for c, n in per_class.items() if n]
            return ids[np.concatenate(chosen)] if chosen else ids[:0]
        return ids[selection.ordered_with_floor(order, classes, count, floor)]

    def stored_centers(self):
        return self.head.centers.numpy()[self.head.center_mask.numpy()]

    def add_samples(self, embeddings, labels, ids, count):
        """Adds `count` samples by `add_rule`; worst-predicted ones in greedy rounds (random picks while C is
        empty); with "own_mean", only samples whose nearest class mean is their own class are candidates."""
        config = self.config
        remaining = np.arange(len(ids))
        if config.add_rule == "own_mean" and self.head.num_centers:
            means, mean_classes = self.class_means(embeddings, labels)
            remaining = remaining[selection.own_mean_admitted(embeddings, labels, means, mean_classes)]
        per_round = max(1, math.ceil(count / config.add_rounds))
        added = 0
        while added < count and len(remaining):
            take = min(per_round, count - added, len(remaining))
            if config.add_rule == "random" or self.head.num_centers == 0:
                chosen = self.rng.choice(len(remaining), size=take, replace=False)
            else:
                probabilities = self.head_predict(embeddings[remaining])
                loss = -np.log(probabilities[np.arange(len(remaining)), labels[remaining]] + 1e-12)
                tie_break = self.rng.permutation(len(remaining))
                chosen = np.lexsort((tie_break, -loss))[:take]  # Highest loss first, ties in random order.
            picked = remaining[chosen]
            self.head.add_centers(embeddings[picked], labels[picked], ids[picked],
                                  compensate=config.compensate_adds and self.random_selection_redistributes)
            remaining = np.delete(remaining, chosen)
            added += take

    def class_means(self, embeddings, labels):
        """Means of each stored class (over its centers) and of each class of the current samples."""
        centers, classes = self.stored_centers(), self.center_classes()
        means, names = [], []
        for c in np.union1d(classes, labels):
            members = np.concatenate([centers[classes == c], embeddings[labels == c]])
            means.append(members.mean(axis=0))
            names.append(c)
        return np.array(means), np.array(names)


@register("nngk_balanced")
class Balanced(AddDrop):
    """Algorithm 1 with every repair: class quotas, redundancy drops with a floor, adds only of samples nearest to
    their own class mean (each can be turned off by its flag on nngk_add_drop, and measured alone)."""

    preset = {"class_quota": True, "drop_rule": "redundant", "min_centers_per_class": 10, "add_rule": "own_mean"}


@register("nngk_add")
class AddOnly(AddDrop):
    """Algorithm 1 without drops: adds until the budget is full."""

    def drop_count(self):
        return 0


@register("nngk_random")
class RandomSelection(AddDrop):
    """Random adds and drops, no redistribution (eq. 13 off on drops and adds): the review's ablation."""

    preset = {"drop_rule": "random", "add_rule": "random"}
    random_selection_redistributes = False


@register("nngk_random_redistribute")
class RandomRedistribute(AddDrop):
    """Random adds and drops with eq. 13: the selection rule's half of the `nngk_random` ablation."""

    preset = {"drop_rule": "random", "add_rule": "random"}


@register("nngk")
class CurrentTask(CenterMethod):
    """The NNGK head trained on each task in turn; its centers are the current task only."""


@register("impostor")
class Impostor(CenterMethod):
    """Tied impostor head (eq. 8-9) trained on each task in turn; centers = the current task only."""

    def make_head(self, task_sizes):
        config = self.config
        return layers.ImpostorClassifier(self.trainer.num_classes, num_neighbours=config.num_neighbours,
                                         sigma=config.sigma, tie="tied", capacity=max(task_sizes),
                                         name="impostor_head")
