"""Small helpers with no machine-learning content: atomic files, the run-folder lock, safe model loading, checks,
input pipelines."""

from keras_nngk.utils import pipelines
from keras_nngk.utils.checks import check_positive_int
from keras_nngk.utils.files import (
                                    WorkdirLock,
                                    remove_temporaries,
                                    save_model,
                                    write_atomically,
                                    write_folder_atomically,
                                    write_json_atomically,
)
from keras_nngk.utils.model_files import load_model

__all__ = ["WorkdirLock", "check_positive_int", "load_model", "pipelines", "remove_temporaries", "save_model",
           "write_atomically", "write_folder_atomically", "write_json_atomically"]
