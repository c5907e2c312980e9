"""The review's experiments as functions, each writing a JSON of results and a plot.

- `samples_per_class`: accuracy against training images per class, every head on the same budget;
- `retrieval`: Recall@K (and MAP@R) on classes unseen in training;
- `robustness`: a black-box attack (SimBA or the Square Attack) on finished runs, e.g. a biased network and its
  plain counterpart;
- `enrolment`: new classes learned on the device from n images each, in an enrollable TFLite export.
"""

from keras_nngk.experiments.common import mean_spread
from keras_nngk.experiments.enrolment import EnrolmentConfig, enrolment, format_enrolment_table
from keras_nngk.experiments.retrieval import format_retrieval_table, retrieval
from keras_nngk.experiments.robustness import attack_run, format_robustness_table, robustness
from keras_nngk.experiments.samples_per_class import (
                                                      HEADS,
                                                      FewShotConfig,
                                                      format_samples_table,
                                                      pixel_knn_accuracy,
                                                      samples_per_class,
                                                      summarise,
)

__all__ = ["EnrolmentConfig", "enrolment", "format_enrolment_table",
           "mean_spread", "retrieval", "format_retrieval_table", "robustness", "attack_run",
           "format_robustness_table", "samples_per_class", "FewShotConfig", "HEADS", "format_samples_table",
           "pixel_knn_accuracy", "summarise"]
