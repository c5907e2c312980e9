"""Continual-learning methods behind one registry: a new method is one class and one `@register("name")`.

Each method is a `base.Method`: it makes the head, may add a loss term or replayed examples
to the training step, trains each task (by default: `epochs` epochs on the task's data) and
says what it stores between tasks. The trainer (`keras_nngk.continual.trainer`) knows no
method by name.
"""

REGISTRY = {}


def register(name):
    """Class decorator: makes the method available as `ContinualConfig(method=name)` and `--method=name`."""
    def decorate(cls):
        if name in REGISTRY:
            raise ValueError(f"A continual method named {name!r} is already registered ({REGISTRY[name].__name__}).")
        REGISTRY[name] = cls
        cls.name = name
        return cls
    return decorate


def get(name):
    if name not in REGISTRY:
        raise ValueError(f"Unknown method {name!r}; valid: {', '.join(REGISTRY)}. Received: method={name!r}")
    return REGISTRY[name]


# Registration order is the order of `--method=all` and of the tables.
from keras_nngk.continual.methods import (  # noqa: E402,F401,I001
    centers, feature_replay, regularisation, softmax, statistics)

METHODS = tuple(REGISTRY)
