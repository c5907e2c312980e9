"""Methods that store class statistics instead of centers: streaming LDA on a network frozen after the first task.

- "slda": deep streaming LDA (Hayes and Kanan, CVPRW 2020) with first-session adaptation
  (Panos et al., ICCV 2023): the backbone trains on the first task with the NNGK head over
  that task's centers, exactly like "nngk", and is frozen from then on. Every task, its
  training features update a `layers.GaussianClassifier` (class means, counts, one shared
  covariance): the Gaussian kernel of eq. 7 over class means in the whitened space. Nothing
  but those sums is kept; later tasks need no gradient step.
- "slda_pixels": the same over the pooled features concatenated with a seeded random ReLU
  expansion of the pixels (RanPAC-style, McDonnell et al., NeurIPS 2023), as wide as the
  byte budget allows. The projection is regenerated from the seed and not counted; the
  covariance is. The frozen backbone only saw the first task's classes; the pixel features
  carry what it did not learn to look at.

`features` picks the inputs of the statistics ("pooled": before the embedding layer,
"embedding", "pixels"; joined with "+"), `random_features` the width of the pixels' expansion
(-1: the widest whose statistics fit `budget` centers' bytes), `shrinkage` the covariance
shrinkage.
"""

import tf_keras as keras

from keras_nngk import layers
from keras_nngk.continual.methods import centers, register
from keras_nngk.utils import pipelines


def widest_fitting(budget_bytes, num_classes, base_dim):
    """The widest expansion `m` with `4 (d^2 + C d + C) <= budget_bytes` for `d = base_dim + m` (0 if none fits)."""
    dim = base_dim
    while 4 * ((dim + 1) ** 2 + num_classes * (dim + 2)) <= budget_bytes:
        dim += 1
    return max(dim - base_dim, 0)


@register("slda")
class StreamingLDA(centers.CurrentTask):
    """Streaming LDA over the features of a backbone trained on the first task only (see the module docstring)."""

    uses_centers = False  # Centers only while the first task trains; what is kept between tasks is statistics.
    preset = {"features": "pooled"}

    def setup(self):
        self.head = self.trainer.head
        self.center_log = []
        self.classifier = None
        self.statistics = None
        self.feature_model = None

    def begin_task(self, index, tasks):
        if index == 1:
            self.trainer.freeze_backbone()

    def train_task(self, index, task, ids, tasks, description):
        if index == 0 and "pixels" != self.config.features:
            super().train_task(index, task, ids, tasks, description)
        if self.classifier is None:
            self.build_classifier()
        self.statistics.update(pipelines.predict(self.feature_model, task.x_train, batch_size=512), task.y_train)

    def build_classifier(self):
        """`image -> features -> GaussianClassifier`, with the backbone as trained on the first task."""
        trainer, config = self.trainer, self.config
        image = keras.Input(trainer.image_shape, name="image")
        parts = []
        sources = config.features.split("+")
        backbone = trainer.backbone
        if "pooled" in sources:
            parts.append(keras.Model(backbone.input, backbone.get_layer("embedding").input, name="pooled")(image))
        if "embedding" in sources:
            parts.append(backbone(image))
        if "pixels" in sources:
            base = sum(int(part.shape[-1]) for part in parts)
            width = config.random_features
            if width == -1:
                width = widest_fitting(trainer.budget_bytes, trainer.num_classes, base)
                if width == 0:
                    raise ValueError(f"The byte budget ({trainer.budget_bytes:,} bytes, --budget={config.budget} "
                                     f"centers) leaves no room for pixel features next to {base} others; raise "
                                     f"--budget or set --random_features. Received: budget={config.budget}")
            parts.append(layers.RandomFeatures(width, seed=config.seed, name="random_pixels")(image))
        features = parts[0] if len(parts) == 1 else keras.layers.Concatenate(name="features")(parts)
        self.feature_model = keras.Model(image, features, name="features")
        self.feature_model.trainable = False
        self.statistics = layers.GaussianClassifier(trainer.num_classes, shrinkage=config.shrinkage,
                                                    name="gaussian_head")
        self.classifier = keras.Model(image, self.statistics(self.feature_model(image)), name="classifier")
        if self.statistics.stored_bytes > trainer.budget_bytes:
            raise ValueError(f"Statistics of {self.statistics.dimension} features take "
                             f"{self.statistics.stored_bytes:,} bytes, more than the budget of "
                             f"{trainer.budget_bytes:,} (--budget={config.budget} centers); raise --budget or use "
                             f"fewer features. Received: features={config.features!r}")

    def inference_model(self):
        return self.classifier

    def stored_bytes(self, tasks_seen):
        return self.statistics.stored_bytes

    def results(self):
        return {"feature_dim": self.statistics.dimension, "features": self.config.features}


@register("slda_pixels")
class StreamingLDAPixels(StreamingLDA):
    """Streaming LDA over pooled features plus a random ReLU expansion of the pixels (see the module docstring)."""

    preset = {"features": "pooled+pixels", "random_features": -1}
