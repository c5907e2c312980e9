"""What the experiments share: summaries over seeds."""

import numpy as np


def mean_spread(groups):
    """`{row: {column: [values]}}` -> `{row: {column: [mean, std, count]}}` (over seeds)."""
    return {row: {column: [float(np.mean(v)), float(np.std(v)), len(v)] for column, v in columns.items()}
            for row, columns in groups.items()}
