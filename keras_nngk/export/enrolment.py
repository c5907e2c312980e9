"""On-device enrolment: an exported NNGK classifier whose center table is state, so an app adds examples and whole
new classes without retraining.

The export is a `tf.Module` (SavedModel, and TFLite with resource variables: the
builtin VAR_HANDLE / READ_VARIABLE / ASSIGN_VARIABLE ops) holding the table

    centers (capacity, d), label_rows (capacity, max_classes), log_weights (capacity,), mask (capacity,)

and a fixed `model_id` (a fingerprint of the network and the export settings), with signatures

    classify(images) -> probabilities (B, max_classes)        class means (default) or eq. 7 over the active centers
    embed(images) -> embeddings (B, d)
    enrol(images, class_ids) -> slots (B,)                    -1: not stored (table full, or id out of range)
    forget(class_id) -> removed                               frees every center whose label is that class
    table() -> centers, label_rows, log_weights, mask, model_id
    load_table(centers, label_rows, log_weights, mask, model_id) -> accepted (1, or 0 for another model's table)

Every op is a TFLite builtin. Enrolment writes each new example into the first
free slot with matrix products and selects (no scatter, no loop), so a batch of
B images costs one embedding pass and a (capacity x B) product. The Python side:
`to_enrollable_tflite` / `to_enrollable_saved_model` write it and
`EnrollableTFLiteModel` runs it with clear errors (full table, unknown class id,
wrong image shape, a table from another model).
"""

import hashlib
import os
import shutil

import numpy as np
import tensorflow as tf

from keras_nngk import kernels
from keras_nngk import search as search_lib
from keras_nngk.export import convert
from keras_nngk.utils import files
from keras_nngk.utils.checks import check_positive_int

SIGNATURES = ("classify", "embed", "enrol", "forget", "table", "load_table")
TABLE_KEYS = ("centers", "label_rows", "log_weights", "mask")
RULES = ("kernel", "class_mean")


def _fingerprint(backbone, head, capacity, max_classes):
    """A stable int32 id of the network's weights and the table's layout: tables move only between equal models
    (the same embeddings; `k` may differ, it does not change what the table means)."""
    digest = hashlib.sha256()
    for weight in backbone.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    digest.update(repr((float(head.sigma.numpy()), capacity, max_classes)).encode())
    return int.from_bytes(digest.digest()[:4], "little") & 0x7FFFFFFF


class EnrollableClassifier(tf.Module):
    """The backbone and an NNGK (or impostor) head's table as a module with enrolment signatures (see the module doc).

    Args:
        backbone: Keras model, images -> embeddings.
        head: a trained `NNGKClassifier` or `ImpostorClassifier` holding its centers.
        capacity: table size (default: the head's centers plus 1,024 free slots).
        max_classes: class ids the table can hold (default: the head's classes); ids from the head's
            `num_classes` up are free for new classes.
        num_neighbours: `k` of the exported classifier (default: the head's). The kernel average over the trained
            `k` (32) is close to a k-NN vote when sigma is wide, so a class enrolled with fewer than about k / 2
            images cannot win; a small k (1-5) lets a few examples count (measured in
            `keras_nngk.experiments.enrolment`).
        rule: "class_mean" (the default: a Gaussian kernel on the distance to each class's mean center, computed
            from the table at every call, so every class counts once however many centers it has; the
            nearest-class-mean rule of prototypical networks) or "kernel" (eq. 7 over the k nearest centers: what
            the trained head computes, and where few enrolled images are outvoted by the trained centers). Measured
            on Fashion-MNIST (README, On-device enrolment): class_mean is the better rule for 1-5 images per new
            class, the two are level at 20, kernel keeps the trained classes 7 points higher.
    """

    def __init__(self, backbone, head, capacity=None, max_classes=None, num_neighbours=None, rule="class_mean"):
        super().__init__(name="enrollable_classifier")
        from keras_nngk import layers  # pylint: disable=g-import-not-at-top
        if not isinstance(head, layers.KernelCenterLayer) or isinstance(head, layers.NeighbourLookup):
            raise ValueError("On-device enrolment needs an NNGK or impostor head (a kernel over labelled centers). "
                             f"Received: {type(head).__name__}")
        active = head.center_mask.numpy()
        count = int(active.sum())
        capacity = count + 1024 if capacity is None else check_positive_int("capacity", capacity)
        max_classes = head.num_classes if max_classes is None else check_positive_int("max_classes", max_classes)
        if capacity < count:
            raise ValueError(f"capacity={capacity} cannot hold the head's {count} centers; pass capacity>={count}.")
        if max_classes < head.num_classes:
            raise ValueError(f"max_classes={max_classes} is below the head's {head.num_classes} classes.")
        self.backbone = backbone
        if rule not in RULES:
            raise ValueError(f"Unknown rule {rule!r}; valid: {', '.join(RULES)}. Received: rule={rule!r}")
        self.capacity, self.max_classes, self.rule = capacity, max_classes, rule
        self.num_neighbours = head.num_neighbours if num_neighbours is None else check_positive_int(
            "num_neighbours", num_neighbours)
        self.image_shape = tuple(int(size) for size in backbone.inputs[0].shape[1:])
        self.embedding_dim = int(head.embedding_dim)
        self.sigma = float(head.sigma.numpy())
        self.model_id = _fingerprint(backbone, head, capacity, max_classes)
        pad = capacity - count
        labels = np.pad(head.center_labels.numpy()[active], ((0, pad), (0, max_classes - head.num_classes)))
        log_weights = getattr(head, "log_weights", None)
        log_weights = np.zeros(count, np.float32) if log_weights is None else log_weights.numpy()[active]
        self.centers = tf.Variable(np.pad(head.centers.numpy()[active], ((0, pad), (0, 0))), name="centers")
        self.label_rows = tf.Variable(labels.astype(np.float32), name="label_rows")
        self.log_weights = tf.Variable(np.pad(log_weights, (0, pad)).astype(np.float32), name="log_weights")
        self.mask = tf.Variable(np.pad(np.ones(count, np.float32), (0, pad)), name="mask")
        image_spec = tf.TensorSpec((None,) + self.image_shape, tf.float32)
        dimension = self.embedding_dim
        self.classify = tf.function(self._classify, input_signature=[image_spec])
        self.embed = tf.function(self._embed, input_signature=[image_spec])
        self.enrol = tf.function(self._enrol, input_signature=[image_spec, tf.TensorSpec((None,), tf.int32)])
        self.forget = tf.function(self._forget, input_signature=[tf.TensorSpec((), tf.int32)])
        self.table = tf.function(self._table, input_signature=[])
        self.load_table = tf.function(self._load_table, input_signature=[
            tf.TensorSpec((capacity, dimension), tf.float32), tf.TensorSpec((capacity, max_classes), tf.float32),
            tf.TensorSpec((capacity,), tf.float32), tf.TensorSpec((capacity,), tf.float32),
            tf.TensorSpec((), tf.int32)])

    def signatures(self):
        return {name: getattr(self, name) for name in SIGNATURES}

    def _embeddings(self, images):
        return tf.cast(self.backbone(images, training=False), tf.float32)

    def _embed(self, images):
        return {"embeddings": self._embeddings(images)}

    def _classify(self, images):
        queries = self._embeddings(images)
        if self.rule == "class_mean":
            return {"probabilities": self._class_mean_probabilities(queries)}
        valid_slots = self.mask > 0.5
        k = min(self.num_neighbours, self.capacity)
        _, ids = search_lib.exact_search(queries, self.centers, k, valid_slots, chunk_size=self.capacity)
        valid = ids >= 0
        ids = tf.where(valid, ids, tf.zeros_like(ids))
        distances = kernels.gathered_squared_distances(queries, tf.gather(self.centers, ids))
        probabilities = kernels.kernel_average(distances, tf.gather(self.label_rows, ids), self.sigma,
                                               tf.gather(self.log_weights, ids), valid)
        has_neighbour = tf.reduce_any(valid, axis=-1, keepdims=True)
        uniform = tf.fill(tf.shape(probabilities), 1.0 / self.max_classes)
        return {"probabilities": tf.where(has_neighbour, probabilities, uniform)}

    def _class_mean_probabilities(self, queries):
        weights = self.label_rows * self.mask[:, tf.newaxis]  # (capacity, C): each active center's class share.
        counts = tf.reduce_sum(weights, axis=0)  # (C,)
        means = tf.matmul(weights, self.centers, transpose_a=True) / tf.maximum(counts, 1e-12)[:, tf.newaxis]
        distances = kernels.squared_distances(queries, means)  # (B, C)
        valid = tf.broadcast_to(counts[tf.newaxis, :] > 0, tf.shape(distances))
        probabilities = kernels.kernel_coefficients(kernels.kernel_logits(distances, self.sigma, None, valid))
        has_class = tf.reduce_any(valid, axis=-1, keepdims=True)
        return tf.where(has_class, probabilities, tf.fill(tf.shape(probabilities), 1.0 / self.max_classes))

    def _enrol(self, images, class_ids):
        embeddings = self._embeddings(images)
        known = tf.logical_and(class_ids >= 0, class_ids < self.max_classes)
        # 1-based rank of each free slot, and of each storable example; example r goes to the r-th free slot.
        free = 1.0 - self.mask
        slot_rank = tf.cumsum(free) * free
        example_rank = tf.cumsum(tf.cast(known, tf.float32)) * tf.cast(known, tf.float32)
        placement = tf.cast(tf.logical_and(tf.equal(slot_rank[:, tf.newaxis], example_rank[tf.newaxis, :]),
                                           slot_rank[:, tf.newaxis] > 0), tf.float32)  # (capacity, B)
        taken = tf.reduce_sum(placement, axis=1)
        keep = (1.0 - taken)[:, tf.newaxis]
        rows = tf.one_hot(tf.where(known, class_ids, tf.zeros_like(class_ids)), self.max_classes)
        self.centers.assign(self.centers * keep + tf.matmul(placement, embeddings))
        self.label_rows.assign(self.label_rows * keep + tf.matmul(placement, rows))
        self.log_weights.assign(self.log_weights * (1.0 - taken))
        self.mask.assign(tf.maximum(self.mask, taken))
        stored = tf.reduce_sum(placement, axis=0) > 0.5
        slots = tf.cast(tf.argmax(placement, axis=0), tf.int32)
        return {"slots": tf.where(stored, slots, -tf.ones_like(slots))}

    def _forget(self, class_id):
        classes = tf.cast(tf.argmax(self.label_rows, axis=1), tf.int32)
        hit = tf.cast(tf.equal(classes, class_id), tf.float32) * self.mask
        self.mask.assign(self.mask - hit)
        return {"removed": tf.cast(tf.reduce_sum(hit), tf.int32)}

    def _table(self):
        return {"centers": tf.identity(self.centers), "label_rows": tf.identity(self.label_rows),
                "log_weights": tf.identity(self.log_weights), "mask": tf.identity(self.mask),
                "model_id": tf.constant(self.model_id, tf.int32)}

    def _load_table(self, centers, label_rows, log_weights, mask, model_id):
        accepted = tf.equal(model_id, self.model_id)
        for variable, value in ((self.centers, centers), (self.label_rows, label_rows),
                                (self.log_weights, log_weights), (self.mask, mask)):
            variable.assign(tf.where(accepted, value, variable))
        return {"accepted": tf.cast(accepted, tf.int32)}


def to_enrollable_saved_model(backbone, head, path, capacity=None, max_classes=None, num_neighbours=None,
                              rule="class_mean"):
    """Writes the enrollable module as a SavedModel with the six signatures; returns the path."""
    module = EnrollableClassifier(backbone, head, capacity, max_classes, num_neighbours, rule)

    def write(temporary):
        tf.saved_model.save(module, temporary, signatures=module.signatures())
    files.write_folder_atomically(path, write)
    return path


def to_enrollable_tflite(backbone, head, path, capacity=None, max_classes=None, num_neighbours=None,
                         rule="class_mean"):
    """Writes a TFLite model with the six signatures and the table as resource variables (builtin ops only)."""
    module = EnrollableClassifier(backbone, head, capacity, max_classes, num_neighbours, rule)
    folder = path + ".saved_model.tmp"
    tf.saved_model.save(module, folder, signatures=module.signatures())
    try:
        converter = tf.lite.TFLiteConverter.from_saved_model(folder, signature_keys=list(SIGNATURES))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        converter.experimental_enable_resource_variables = True
        content = converter.convert()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    flex = [name for name in convert.op_names(content) if name.startswith("Flex") or name == "CUSTOM"]
    if flex:
        raise ValueError(f"The enrollable TFLite model needs non-builtin ops {sorted(set(flex))}.")
    files.write_atomically(path, content)
    return path


class EnrollableTFLiteModel:
    """Runs an enrollable `.tflite` (see `to_enrollable_tflite`) as an app would, with one-line errors.

    Example:

    >>> model = EnrollableTFLiteModel("model_enrollable.tflite")
    >>> model.enrol(five_images_of_a_new_class, class_id=10)
    >>> model.classify(images).argmax(1)
    >>> model.save_table("table.npz")     # and later, in a fresh interpreter: model.restore_table("table.npz")
    """

    def __init__(self, path_or_content, batch_size=64, num_threads=None):
        interpreter_class = convert._interpreter_class()  # pylint: disable=protected-access
        if isinstance(path_or_content, (bytes, bytearray)):
            self.interpreter = interpreter_class(model_content=bytes(path_or_content), num_threads=num_threads)
        else:
            if not os.path.isfile(path_or_content):
                raise ValueError(f"No enrollable TFLite model at {path_or_content!r}; export one with "
                                 "python -m trainers.export --model=<run> --format=enrollable_tflite")
            self.interpreter = interpreter_class(model_path=path_or_content, num_threads=num_threads)
        missing = set(SIGNATURES) - set(self.interpreter.get_signature_list())
        if missing:
            raise ValueError(f"{path_or_content if isinstance(path_or_content, str) else 'The model'} is not an "
                             f"enrollable export (no {', '.join(sorted(missing))} signature); export it with "
                             "--format=enrollable_tflite.")
        self.runners = {name: self.interpreter.get_signature_runner(name) for name in SIGNATURES}
        self.batch_size = batch_size
        table = self.table()
        self.model_id = int(table["model_id"])
        self.capacity, self.embedding_dim = table["centers"].shape
        self.max_classes = table["label_rows"].shape[1]
        details = self.runners["embed"].get_input_details()["images"]
        self.image_shape = tuple(int(size) for size in details["shape_signature"][1:])

    def _images(self, images):
        images = np.asarray(images, np.float32)
        if images.ndim == len(self.image_shape):
            images = images[np.newaxis]
        if images.shape[1:] != self.image_shape:
            raise ValueError(f"Images must have shape (N, {', '.join(map(str, self.image_shape))}) for this model. "
                             f"Received: shape={images.shape}")
        return images

    def _batched(self, name, images, key):
        images = self._images(images)
        outputs = [self.runners[name](images=images[start:start + self.batch_size])[key]
                   for start in range(0, len(images), self.batch_size)]
        return np.concatenate(outputs) if outputs else np.zeros((0,), np.float32)

    def classify(self, images):
        """Class probabilities `(N, max_classes)`."""
        return self._batched("classify", images, "probabilities")

    def embed(self, images):
        return self._batched("embed", images, "embeddings")

    @property
    def num_centers(self):
        return int(self.table()["mask"].sum())

    def enrol(self, images, class_id):
        """Stores the images' embeddings as centers of class `class_id` (an int, or one per image); returns slots."""
        images = self._images(images)
        class_ids = np.broadcast_to(np.asarray(class_id, np.int64), (len(images),))
        bad = class_ids[(class_ids < 0) | (class_ids >= self.max_classes)]
        if bad.size:
            raise ValueError(f"Class id {int(bad[0])} is outside this model's 0..{self.max_classes - 1} "
                             "(max_classes is fixed at export; export again with a larger --max_classes).")
        free = self.capacity - self.num_centers
        if len(images) > free:
            raise ValueError(f"The table is full: {len(images)} images to enrol, {free} free slots of "
                             f"{self.capacity}; forget a class or export with a larger --capacity.")
        slots = [self.runners["enrol"](images=images[start:start + self.batch_size],
                                       class_ids=class_ids[start:start + self.batch_size].astype(np.int32))["slots"]
                 for start in range(0, len(images), self.batch_size)]
        return np.concatenate(slots)

    def forget(self, class_id):
        """Frees every center of `class_id`; returns how many."""
        if not 0 <= int(class_id) < self.max_classes:
            raise ValueError(f"Class id {int(class_id)} is outside this model's 0..{self.max_classes - 1}.")
        return int(self.runners["forget"](class_id=np.array(class_id, np.int32))["removed"])

    def table(self):
        """The table as NumPy arrays (`centers`, `label_rows`, `log_weights`, `mask`, `model_id`)."""
        return {key: np.asarray(value) for key, value in self.runners["table"]().items()}

    def save_table(self, path):
        """Writes the table to an `.npz` file (atomically)."""
        table = self.table()

        def write(staging):
            with open(staging, "xb") as handle:
                np.savez(handle, **table)
        files.write_file_atomically(path, write)
        return path

    def restore_table(self, path):
        """Loads a table saved by `save_table`; refuses one from another model (or another export of it)."""
        try:
            with np.load(path) as stored:
                table = {key: stored[key] for key in TABLE_KEYS + ("model_id",)}
        except (OSError, KeyError, ValueError) as error:
            raise ValueError(f"{path} is not a saved enrolment table ({type(error).__name__}); save one with "
                             "EnrollableTFLiteModel.save_table or trainers.enrol.") from None
        if int(table["model_id"]) != self.model_id or table["centers"].shape != (self.capacity, self.embedding_dim):
            raise ValueError(f"The table in {path} belongs to another model (model id {int(table['model_id'])}, "
                             f"this model's is {self.model_id}); enrol again on this model.")
        accepted = self.runners["load_table"](**{key: table[key].astype(np.float32) for key in TABLE_KEYS},
                                              model_id=np.array(table["model_id"], np.int32))["accepted"]
        if not int(accepted):
            raise ValueError(f"The model refused the table in {path} (model id mismatch).")


def table_path(model_path):
    """Where `trainers.enrol` keeps the enrolled table of a model: `<model>.table.npz` beside it."""
    return os.path.splitext(model_path)[0] + ".table.npz"


def is_enrollable(path):
    """Whether a `.tflite` file has the enrolment signatures."""
    interpreter = convert._interpreter_class()(model_path=path)  # pylint: disable=protected-access
    return set(SIGNATURES) <= set(interpreter.get_signature_list())


def bytes_per_example(embedding_dim, max_classes):
    """Table bytes one enrolled example takes: its center, label row, log-weight and mask entry (float32)."""
    return 4 * (embedding_dim + max_classes + 2)


__all__ = ["EnrollableClassifier", "EnrollableTFLiteModel", "to_enrollable_saved_model", "to_enrollable_tflite",
           "bytes_per_example", "table_path", "is_enrollable"]
