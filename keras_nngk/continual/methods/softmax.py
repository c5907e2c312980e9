"""Softmax-head baselines: plain sequential training, raw-image replay, and joint training (the upper bound)."""

import numpy as np

from keras_nngk.continual.methods import base, register


@register("finetune")
class Finetune(base.Method):
    """Softmax head, plain sequential training: the lower bound."""


@register("replay")
class Replay(base.Method):
    """Softmax head with a class-balanced memory of raw images (uint8) of the same byte size as the center budget,
    replayed in every batch (as many stored as new examples)."""

    def __init__(self, trainer):
        super().__init__(trainer)
        self.memory = None  # (images uint8, labels)

    def extend_batch(self, images, labels, sample_ids):
        if self.memory is None:
            return images, labels, sample_ids
        pick = self.rng.integers(0, len(self.memory[0]), size=len(images))
        return (np.concatenate([images, self.memory[0][pick].astype(np.float32) / 255.0]),
                np.concatenate([labels, self.memory[1][pick]]), np.concatenate([sample_ids, np.full(len(pick), -1)]))

    def recalibration_images(self, images):
        if self.memory is None:
            return images
        return np.concatenate([images, self.memory[0].astype(np.float32) / 255.0])

    def end_task(self, index, task):
        """Class-balanced memory of raw images (uint8) within the centers' byte budget."""
        per_image = int(np.prod(self.trainer.image_shape)) + 1  # uint8 pixels + a label byte.
        capacity = self.trainer.budget_bytes // per_image
        images = [] if self.memory is None else [self.memory[0]]
        labels = [] if self.memory is None else [self.memory[1]]
        images.append(np.round(task.x_train * 255).astype(np.uint8))
        labels.append(task.y_train)
        images, labels = np.concatenate(images), np.concatenate(labels)
        classes = np.unique(labels)
        per_class = capacity // len(classes)
        keep = np.concatenate([self.rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in classes])
        self.memory = (images[keep], labels[keep])

    def stored_bytes(self, tasks_seen):
        return int(self.memory[0].nbytes + self.memory[1].size)


@register("joint")
class Joint(base.Method):
    """Trains on all tasks seen so far (the upper bound; stores every image)."""

    def train_task(self, index, task, ids, tasks, description):
        images = np.concatenate([t.x_train for t in tasks[:index + 1]])
        labels = np.concatenate([t.y_train for t in tasks[:index + 1]]).astype(np.int64)
        self.trainer.run_epochs(self.config.epochs, images, labels, np.arange(len(images)), description)
        self.trainer.recalibrate(images)

    def stored_bytes(self, tasks_seen):
        return int(sum(np.prod(t.x_train.shape) + len(t.y_train) for t in tasks_seen))
