"""One configuration object for a training run, with presets per data set.

    config = Config.for_dataset("fashion_mnist", head="dense", epochs=3)

Resolution order: the defaults below, then the data set's preset, then explicit
overrides (command-line flags or a config file).
"""

import dataclasses
import difflib
import json
import typing
from typing import Optional

from keras_nngk import backbones, data, models
from keras_nngk import search as search_lib

TASKS = ("classification", "retrieval")
STRATEGIES = ("default", "mirrored", "multi_worker")
LOOPS = ("fit", "custom")
# "training": centers written from the training steps, full refreshes at the start and end only (`CenterRefresh`);
# "auto": "training" where the head can take it (NNGK, tied impostors; not under multi_worker), else "embed".
REFRESH_MODES = ("auto", "embed", "training")
MODELS = ("classifier", "biased", "plain")


@dataclasses.dataclass
class Config:
    """Hyperparameters and choices of one run (see `trainers/fit.py --help`)."""

    dataset: str = data.DEFAULT
    model: str = "classifier"
    projection_dim: int = 16
    lookup_prototypes: int = 32  # Biased network: k-means prototypes per class in the lookup (0: every training key).
    exit_loss_weight: float = 1.0  # Biased network: weight of the early-exit answer's own cross-entropy.
    threshold_split: float = 0.1  # Biased/plain: training fraction held out to choose the early-exit threshold.
    task: str = "classification"
    head: str = "nngk"
    backbone: str = "small_conv"
    weights: Optional[str] = None
    embedding_dim: int = 64
    pooling: str = "avg"  # small_conv: "avg" (global average pooling) or "flatten" (the spatial feature map).
    augment: str = "auto"  # Training batches: "auto" (the data set's default), "none", or e.g. "shift,flip".
    l2_normalize: bool = True
    # Retrieval: compare the "pooled" features under the embedding, the feature "map" under the pooling (the
    # small aligned sets' preset), or the "embedding"s.
    retrieval_features: str = "pooled"
    image_size: Optional[int] = None
    examples_per_class: Optional[int] = None
    validation_split: float = 0.0  # > 0: evaluate on this held-out fraction of the training set, not the test set.
    train_classes: Optional[str] = None  # Retrieval: comma-separated classes to train on (default: the first half).
    test_classes: Optional[str] = None  # Retrieval: comma-separated held-out classes (default: the rest).
    data_dir: Optional[str] = None
    epochs: int = 5
    batch_size: int = 128
    learning_rate: float = 1e-3
    num_neighbours: int = 32
    sigma: float = 1.0
    learn_sigma: bool = True
    sample_weights: bool = True
    auxiliary_softmax: float = 0.0  # nngk/impostor: weight of a softmax classifier's loss trained beside the head.
    refresh_every: int = 1
    refresh_mode: str = "auto"  # One of REFRESH_MODES; `resolved_refresh_mode()` says which applies.
    # > 0: training steps rank each sample's cached nearest centers only (`CenterRefresh`); 0: every center.
    candidates: int = 0
    candidates_every: int = 1  # Rebuild those lists every this many epochs (and after every full refresh).
    search: str = "auto"
    knn_neighbours: int = 5
    recalibrate_batchnorm: bool = True
    eval_every: int = 1  # Held-out metrics every this many epochs (history.json, TensorBoard); 0: never.
    tie: str = "loose"
    tie_weight: float = 1e-3
    pq_bytes: int = 0
    pq_bits: int = 8
    pq_rotation: bool = True
    qat: bool = False
    prune: float = 0.0
    strategy: str = "default"
    loop: str = "fit"
    seed: int = 0

    @classmethod
    def for_dataset(cls, dataset=data.DEFAULT, **overrides):
        """Defaults, then `PRESETS[dataset]`, then `overrides` (None values are ignored)."""
        values = {"dataset": dataset, **PRESETS.get(dataset, {})}
        values.update({key: value for key, value in overrides.items() if value is not None})
        unknown = sorted(set(values) - {field.name for field in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"Unknown config fields {unknown}; valid: {', '.join(cls.field_names())}.")
        config = cls(**values)
        config.validate()
        return config

    def _can_write_training_centers(self):
        return self.model == "classifier" and (self.head == "nngk" or (self.head == "impostor" and self.tie == "tied"))

    def resolved_refresh_mode(self):
        """"embed" or "training": `refresh_mode`, with "auto" resolved for this head and strategy."""
        if self.refresh_mode != "auto":
            return self.refresh_mode
        return "training" if self._can_write_training_centers() and self.strategy != "multi_worker" else "embed"

    @classmethod
    def field_names(cls):
        return tuple(field.name for field in dataclasses.fields(cls))

    def check_types(self):
        """Raises a ValueError for a field whose value is not of the field's type (e.g. `"sigma": "abc"`)."""
        hints = typing.get_type_hints(type(self))
        for field in dataclasses.fields(self):
            kind, value = hints[field.name], getattr(self, field.name)
            optional = typing.get_origin(kind) is typing.Union
            if optional:
                kind = next(arg for arg in typing.get_args(kind) if arg is not type(None))
                if value is None:
                    continue
            valid = {bool: (bool,), int: (int,), float: (int, float), str: (str,)}[kind]
            if not isinstance(value, valid) or (kind is not bool and isinstance(value, bool)):
                expected = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[kind]
                raise ValueError(f"`{field.name}` must be {expected}{' or null' if optional else ''}. "
                                 f"Received: {field.name}={value!r}")
        return self

    def validate(self):
        """Raises a ValueError naming the field, the valid choices and the value received."""
        self.check_types()
        choices = {"dataset": data.NAMES, "task": TASKS, "head": models.HEADS, "backbone": tuple(backbones.BACKBONES),
                   "strategy": STRATEGIES, "loop": LOOPS, "model": MODELS, "refresh_mode": REFRESH_MODES}
        for name, valid in choices.items():
            value = getattr(self, name)
            if value not in valid:
                raise ValueError(f"Unknown {name} {value!r}; valid: {', '.join(valid)}. Received: {name}={value!r}")
        if self.model != "classifier" and (self.backbone not in ("small_conv", "squeezenet")
                                           or self.task != "classification"):
            raise ValueError(f"--model={self.model} is built on the small conv or the SqueezeNet trunk for "
                             f"classification; use --backbone=small_conv or squeezenet and drop --task. Received: "
                             f"backbone={self.backbone!r}, task={self.task!r}")
        for name in ("projection_dim", "embedding_dim", "epochs", "batch_size", "num_neighbours", "refresh_every",
                     "knn_neighbours", "candidates_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")
        if isinstance(self.eval_every, bool) or not isinstance(self.eval_every, int) or self.eval_every < 0:
            raise ValueError(f"`eval_every` must be 0 (never) or a positive integer. Received: "
                             f"eval_every={self.eval_every!r}")
        from keras_nngk.layers import impostor_classifier  # pylint: disable=g-import-not-at-top
        if self.tie not in impostor_classifier.TIES:
            raise ValueError(f"Unknown tie {self.tie!r}; valid: {', '.join(impostor_classifier.TIES)}. "
                             f"Received: tie={self.tie!r}")
        if self.refresh_mode == "training" and not self._can_write_training_centers():
            raise ValueError("--refresh_mode=training writes the centers of an nngk head or of tied impostors from "
                             f"the training steps; use --refresh_mode=embed. Received: model={self.model!r}, "
                             f"head={self.head!r}, tie={self.tie!r}")
        if isinstance(self.candidates, bool) or not isinstance(self.candidates, int) or self.candidates < 0:
            raise ValueError(f"`candidates` must be 0 (search every center) or a positive integer. "
                             f"Received: candidates={self.candidates!r}")
        if self.candidates and not self._can_write_training_centers():
            raise ValueError("--candidates serves heads whose centers follow the network (nngk, tied impostors); "
                             f"use --candidates=0. Received: model={self.model!r}, head={self.head!r}, "
                             f"tie={self.tie!r}")
        if self.candidates and self.candidates <= self.num_neighbours:
            raise ValueError(f"--candidates must exceed --num_neighbours={self.num_neighbours}: each step keeps the "
                             f"nearest {self.num_neighbours} of them. Received: candidates={self.candidates}")
        if self.refresh_mode == "training" and self.strategy == "multi_worker":
            raise ValueError("--refresh_mode=training writes centers on one machine (strategy default or mirrored); "
                             "use --refresh_mode=embed with --strategy=multi_worker.")
        if self.head == "impostor" and self.tie == "loose" and self.strategy != "default":
            raise ValueError("Loose impostor centers train with sparse row updates on one device: use "
                             "--strategy=default, or --tie=tied/fixed.")
        if isinstance(self.pq_bytes, bool) or not isinstance(self.pq_bytes, int) or self.pq_bytes < 0:
            raise ValueError(f"`pq_bytes` must be 0 (no compression) or a positive integer. "
                             f"Received: pq_bytes={self.pq_bytes!r}")
        if self.pq_bits not in (4, 8):
            raise ValueError(f"`pq_bits` must be 4 or 8. Received: pq_bits={self.pq_bits!r}")
        if self.pq_bytes and self.embedding_dim % (self.pq_bytes * 8 // self.pq_bits):
            # pq_bytes * 8 / pq_bits sub-vectors must split the embedding.
            divisors = [m * self.pq_bits // 8 for m in range(1, self.embedding_dim + 1)
                        if self.embedding_dim % m == 0 and (m * self.pq_bits) % 8 == 0]
            raise ValueError(f"`pq_bytes` must divide embedding_dim={self.embedding_dim}; valid: {divisors} "
                             f"(pq_bits={self.pq_bits}). Received: pq_bytes={self.pq_bytes}")
        if self.pq_bytes and self.head not in ("nngk", "impostor"):
            raise ValueError(f"--pq_bytes compresses the centers of an nngk or impostor head. Received: "
                             f"head={self.head!r}")
        self.class_split()
        data.augment.parse(self.augment)
        if self.retrieval_features not in backbones.RETRIEVAL_FEATURES:
            raise ValueError(f"Unknown retrieval_features {self.retrieval_features!r}; valid: "
                             f"{', '.join(backbones.RETRIEVAL_FEATURES)}. "
                             f"Received: retrieval_features={self.retrieval_features!r}")
        backbones.check_pooling(self.backbone, self.pooling)
        if isinstance(self.lookup_prototypes, bool) or not isinstance(self.lookup_prototypes, int) or \
                self.lookup_prototypes < 0:
            raise ValueError(f"`lookup_prototypes` must be 0 (every training key) or a positive integer. "
                             f"Received: lookup_prototypes={self.lookup_prototypes!r}")
        if not self.auxiliary_softmax >= 0.0:
            raise ValueError(f"`auxiliary_softmax` must be >= 0. "
                             f"Received: auxiliary_softmax={self.auxiliary_softmax!r}")
        if self.auxiliary_softmax and (self.model != "classifier" or self.head not in ("nngk", "impostor")):
            raise ValueError("--auxiliary_softmax trains a softmax term beside an nngk or impostor head; use "
                             f"--auxiliary_softmax=0 with model={self.model!r}, head={self.head!r}.")
        if not self.exit_loss_weight >= 0.0:
            raise ValueError(f"`exit_loss_weight` must be >= 0. Received: exit_loss_weight={self.exit_loss_weight!r}")
        if not 0.0 <= self.threshold_split < 1.0:
            raise ValueError("`threshold_split` must be in [0, 1). "
                             f"Received: threshold_split={self.threshold_split!r}")
        if not 0.0 <= self.validation_split < 1.0:
            raise ValueError("`validation_split` must be in [0, 1). "
                             f"Received: validation_split={self.validation_split!r}")
        for name in ("learning_rate", "sigma"):
            if not getattr(self, name) > 0:
                raise ValueError(f"`{name}` must be positive. Received: {name}={getattr(self, name)!r}")
        search_lib.get(self.search)
        if self.qat or self.prune:
            from keras_nngk.training import compression  # pylint: disable=g-import-not-at-top
            if self.backbone not in compression.FLAT_BACKBONES:
                raise ValueError("--qat and --prune work on the flat backbones "
                                 f"{', '.join(compression.FLAT_BACKBONES)}. Received: backbone={self.backbone!r}")
            if self.qat and self.prune:
                raise ValueError("Choose --qat or --prune, not both (pruning-preserving QAT is not supported).")
            if self.prune and not 0.0 < self.prune < 1.0:
                raise ValueError(f"`prune` must be a sparsity in (0, 1). Received: prune={self.prune!r}")
            if self.prune and self.loop != "fit":
                raise ValueError("--prune needs --loop=fit (tfmot's pruning step callback runs per batch).")
        return self

    def class_split(self):
        """`(train_classes, test_classes)` as lists of ints for a retrieval run with an explicit split, else None."""
        if self.train_classes is None and self.test_classes is None:
            return None
        if self.train_classes is None or self.test_classes is None or self.task != "retrieval":
            raise ValueError("--train_classes and --test_classes go together, with --task=retrieval. Received: "
                             f"train_classes={self.train_classes!r}, test_classes={self.test_classes!r}, "
                             f"task={self.task!r}")
        split = []
        for name in ("train_classes", "test_classes"):
            text = getattr(self, name)
            try:
                split.append([int(part) for part in text.split(",") if part.strip()])
            except ValueError:
                raise ValueError(f"`{name}` must be comma-separated class ids such as 0,1,2. Received: "
                                 f"{name}={text!r}") from None
        return tuple(split)

    def data_options(self):
        """The keyword arguments of `keras_nngk.data.load` that this config sets."""
        return {"task": self.task, "data_dir": self.data_dir, "image_size": self.image_size,
                "examples_per_class": self.examples_per_class, "seed": self.seed,
                "validation_split": self.validation_split, "class_split": self.class_split(), "augment": self.augment}

    def to_dict(self):
        return dataclasses.asdict(self)

    def to_json(self):
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values, source="the config"):
        """A validated config from a dict; unknown keys (a misspelt field) are refused, not ignored."""
        if not isinstance(values, dict):
            raise ValueError(f"{source} must be a JSON object of config fields. Received: {type(values).__name__}")
        unknown = sorted(set(values) - set(cls.field_names()))
        if unknown:
            suggestions = {key: difflib.get_close_matches(key, cls.field_names(), n=1) for key in unknown}
            hints = ", ".join(f"{key!r}" + (f" (did you mean {match[0]!r}?)" if match else "")
                              for key, match in suggestions.items())
            raise ValueError(f"Unknown field {hints} in {source}; valid fields: {', '.join(cls.field_names())}.")
        return cls(**values).validate()

    @classmethod
    def from_file(cls, path):
        try:
            with open(path) as handle:
                values = json.load(handle)
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"Cannot read config file {path!r}: {error}") from None
        if isinstance(values, dict):  # Written before a field existed: the value it was trained with.
            values = {**{key: value for key, value in LEGACY_VALUES.items() if key not in values}, **values}
        try:
            return cls.from_dict(values, source=path)
        except ValueError as error:
            message = str(error)
            raise ValueError(message if path in message else f"{path}: {message}") from None

    def differences(self, other):
        """`{field: (self value, other value)}` for the fields that differ."""
        mine, theirs = self.to_dict(), other.to_dict()
        return {key: (mine[key], theirs[key]) for key in mine if mine[key] != theirs[key]}


# Fields added after runs were saved, with the value those runs behaved as: a saved config.json without the field
# (an older run being resumed, evaluated or exported) reads it, not today's default.
LEGACY_VALUES = {"lookup_prototypes": 0, "exit_loss_weight": 0.0, "threshold_split": 0.0,
                 "retrieval_features": "embedding"}

_FINE_GRAINED = {"task": "retrieval", "backbone": "resnet50", "embedding_dim": 512, "image_size": 224,
                 "batch_size": 64, "epochs": 50, "learning_rate": 1e-4, "refresh_every": 2}

# The small grayscale sets hold aligned images (centred digits, clothes), on which where a feature sits tells classes
# apart: their retrieval reads the feature map itself, not its global average (README "Embedding quality": +1.8 to
# +6.3 R@1 for NNGK on five unseen-class splits of Fashion-MNIST, MNIST-5k and digits, raw pixels beaten on all).
_ALIGNED = {"retrieval_features": "map"}

PRESETS = {
    "mnist5k": {"epochs": 5, **_ALIGNED},
    "digits": {"epochs": 20, "batch_size": 64, **_ALIGNED},
    "fashion_mnist": {"epochs": 10, **_ALIGNED},
    "mnist": {"epochs": 5, **_ALIGNED},
    "cifar10": {"epochs": 30},
    "cifar100": {"epochs": 30, "embedding_dim": 128},
    "cars196": dict(_FINE_GRAINED),
    "caltech_birds2011": dict(_FINE_GRAINED),
}
