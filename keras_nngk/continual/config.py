"""`ContinualConfig`: the settings of one continual run, the same fields for every method (same budget for all)."""

import dataclasses

from keras_nngk.continual import methods
from keras_nngk.continual.benchmarks import BENCHMARKS, SCENARIOS
from keras_nngk.utils.checks import check_positive_int

DROP_RULES = ("best_predicted", "redundant", "random")
ADD_RULES = ("worst_predicted", "own_mean", "random")
FEATURES = ("pooled", "embedding", "pixels")


@dataclasses.dataclass
class ContinualConfig:
    """Settings of one continual run; every method reads the same fields (same budget for all).

    A method may be a preset of another (e.g. `nngk_balanced` is Algorithm 1 with every repair on): its
    `preset` fields replace the ones left at their defaults here (`resolved()`); results store the resolved config.
    """

    benchmark: str = "split_fashion_mnist"
    scenario: str = "class_incremental"
    method: str = "nngk_add_drop"
    backbone: str = "small_conv"
    embedding_dim: int = 64
    epochs: int = 1  # n_t: training epochs per task.
    finetune_epochs: int = 1  # n_f: Algorithm 1's fine-tuning epochs after the add/drop (center methods).
    batch_size: int = 128
    learning_rate: float = 1e-3
    num_neighbours: int = 32
    sigma: float = 0.5
    budget: int = 2000  # Maximum number of stored centers; every method stores at most the same number of bytes.
    drop_per_task: int = 100  # n_d (nngk_add_drop, nngk_random).
    add_per_task: int = 0  # n_a; 0: budget // number of tasks + n_d.
    add_rounds: int = 4  # Greedy rounds of "worst predicted" adds.
    redistribute: bool = True  # Eq. 13 on drops.
    compensate_adds: bool = False  # Eq. 13 with the opposite sign on adds.
    drop_rule: str = "best_predicted"  # Which centers go: best_predicted (the review) | redundant | random.
    add_rule: str = "worst_predicted"  # Which samples come: worst_predicted (the review) | own_mean | random.
    class_quota: bool = False  # Each class seen keeps an equal share of the budget.
    min_centers_per_class: int = 0  # Drops never leave a class with fewer centers.
    ewc_lambda: float = 100.0
    ewc_samples: int = 256
    si_c: float = 0.1
    si_xi: float = 1e-3
    distill_weight: float = 10.0  # Nearest-neighbour methods: feature distillation on the current task (0: off).
    drift_compensation: bool = True  # Move old centers with the drift of nearby current embeddings.
    freeze_batchnorm: bool = True  # Nearest-neighbour methods keep the first task's BatchNorm statistics.
    freeze_backbone_after: int = 0  # Stop training the backbone after this many tasks (0: never).
    embedding_normalized: bool = True  # L2-normalised embeddings (the backbone's default).
    features: str = "pooled"  # Statistics methods: what the statistics describe: pooled | embedding | pixels.
    random_features: int = 0  # Statistics methods: width of a seeded random ReLU expansion (0: none; -1: the
    # widest whose statistics fit the byte budget of `budget` centers).
    shrinkage: float = 0.01  # Statistics methods: covariance shrinkage towards a multiple of the identity.
    pseudo_per_class: int = 100  # feature_replay: pseudo-features of each class per epoch, and centers per class.
    replay_freeze: str = "trunk"  # feature_replay: what stops training after the first task: trunk | all.
    max_train_per_task: int = 0  # 0: all.
    seed: int = 0
    data_dir: str = ""

    @classmethod
    def field_names(cls):
        return tuple(field.name for field in dataclasses.fields(cls))

    def validate(self):
        if self.method not in methods.METHODS:
            raise ValueError(f"Unknown method {self.method!r}; valid: {', '.join(methods.METHODS)}. "
                             f"Received: method={self.method!r}")
        for name, valid in (("benchmark", BENCHMARKS), ("scenario", SCENARIOS)):
            if getattr(self, name) not in valid:
                raise ValueError(f"Unknown {name} {getattr(self, name)!r}; valid: {', '.join(valid)}. "
                                 f"Received: {name}={getattr(self, name)!r}")
        for name, valid in (("drop_rule", DROP_RULES), ("add_rule", ADD_RULES)):
            value = getattr(self, name)
            if value not in valid:
                raise ValueError(f"Unknown {name} {value!r}; valid: {', '.join(valid)}. Received: {name}={value!r}")
        if self.replay_freeze not in ("trunk", "all"):
            raise ValueError(f"Unknown replay_freeze {self.replay_freeze!r}; valid: trunk, all. Received: "
                             f"replay_freeze={self.replay_freeze!r}")
        sources = self.features.split("+")
        if not sources or any(source not in FEATURES for source in sources) or len(set(sources)) != len(sources):
            raise ValueError(f"`features` must join distinct names from {', '.join(FEATURES)} with '+'. "
                             f"Received: features={self.features!r}")
        for name in ("embedding_dim", "epochs", "batch_size", "num_neighbours", "budget", "add_rounds",
                     "ewc_samples", "pseudo_per_class"):
            check_positive_int(name, getattr(self, name))
        for name in ("finetune_epochs", "drop_per_task", "freeze_backbone_after", "add_per_task", "max_train_per_task",
                     "min_centers_per_class"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"`{name}` must be a non-negative integer. Received: {name}={value!r}")
        value = self.random_features
        if isinstance(value, bool) or not isinstance(value, int) or value < -1:
            raise ValueError(f"`random_features` must be a non-negative integer, or -1 for the widest that fits the "
                             f"budget. Received: random_features={value!r}")
        if "pixels" in sources and self.random_features == 0:
            raise ValueError("features with 'pixels' need a random expansion: set --random_features to a width, or "
                             "-1 for the widest that fits the budget. Received: random_features=0")
        for name in ("learning_rate", "sigma"):
            if not getattr(self, name) > 0:
                raise ValueError(f"`{name}` must be positive. Received: {name}={getattr(self, name)!r}")
        if not 0.0 <= self.shrinkage <= 1.0:
            raise ValueError(f"`shrinkage` must be in [0, 1]. Received: shrinkage={self.shrinkage!r}")
        if self.freeze_backbone_after and not methods.get(self.method).uses_centers:
            raise ValueError("--freeze_backbone_after applies to the nearest-neighbour methods only. "
                             f"Received: method={self.method!r}")
        for name in ("ewc_lambda", "si_c", "si_xi", "distill_weight"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"`{name}` must be non-negative. Received: {name}={getattr(self, name)!r}")
        return self

    def resolved(self):
        """This config with the method's preset applied to the fields left at their defaults."""
        preset = methods.get(self.validate().method).preset
        defaults = {field.name: field.default for field in dataclasses.fields(self)}
        changes = {name: value for name, value in preset.items() if getattr(self, name) == defaults[name]}
        return dataclasses.replace(self, **changes).validate()

    def to_dict(self):
        return dataclasses.asdict(self)
