"""The interface every continual method implements; the defaults are plain sequential training of a softmax head."""

import numpy as np

from keras_nngk import layers
from keras_nngk.utils import pipelines


class Method:
    """One continual-learning method, driven by `ContinualTrainer` task after task.

    The trainer builds the backbone, `make_head()`'s head and the models around them,
    then for each task calls `begin_task`, `train_task` and `end_task`, evaluates
    `predict`, and records `stored_bytes`. Inside the compiled training step it adds
    `penalty()` to the loss and calls `after_update`; `extend_batch` may add replayed
    examples to each batch.

    Attributes:
        name: the registered name (set by `register`).
        uses_centers: the head stores centers (nearest-neighbour family): the trainer then
            keeps the first task's BatchNorm statistics, distils features and allows
            `--freeze_backbone_after`.
        preset: config fields this method sets when left at their defaults.
    """

    name = None
    uses_centers = False
    preset = {}

    def __init__(self, trainer):
        self.trainer = trainer
        self.config = trainer.config
        self.rng = trainer.rng

    # -- model ------------------------------------------------------------------------------------------
    def make_head(self, task_sizes):
        """The classification head on the backbone's embeddings."""
        del task_sizes
        return layers.DenseClassifier(self.trainer.num_classes, name="dense_head")

    def setup(self):
        """After the models exist (e.g. anchors of a regulariser)."""

    def inference_model(self):
        """`image -> class probabilities` used for evaluation and saved as model.keras."""
        return self.trainer.inference_model

    # -- training step ------------------------------------------------------------------------------------
    def penalty(self):
        """A loss term added inside the training step (a tensor), or None."""
        return None

    def after_update(self, gradients, before):
        """Called in the training step after the optimizer update, with the values before it (if `keeps_before`)."""
        del gradients, before  # A body besides the docstring: AutoGraph converts this method.

    keeps_before = False

    def extend_batch(self, images, labels, sample_ids):
        """The batch the step trains on (replay adds stored examples here)."""
        return images, labels, sample_ids

    # -- tasks --------------------------------------------------------------------------------------------
    def begin_task(self, index, tasks):
        """Before training task `index`."""

    def train_task(self, index, task, ids, tasks, description):
        """Trains on task `index` (default: `epochs` epochs on its data, then BatchNorm recalibration)."""
        del index, tasks
        images, labels = task.x_train, task.y_train.astype(np.int64)
        self.trainer.run_epochs(self.config.epochs, images, labels, ids, description)
        self.trainer.recalibrate(self.recalibration_images(images))

    def recalibration_images(self, images):
        return images

    def end_task(self, index, task):
        """After training task `index`, before it is evaluated."""

    def predict(self, images):
        return pipelines.predict(self.inference_model(), images, batch_size=512)

    # -- accounting ---------------------------------------------------------------------------------------
    def stored_bytes(self, tasks_seen):
        """Bytes kept between tasks besides the network itself."""
        del tasks_seen
        return 0

    def results(self):
        """Method-specific entries of results.json."""
        return {}
