"""Continual-learning metrics: average accuracy and forgetting of an accuracy matrix, and the comparison table."""

import numpy as np


def accuracy_matrix_summary(matrix):
    """`(average accuracy after the last task, forgetting)` of an accuracy matrix `R[t, s]`.

    Forgetting (Chaudhry et al. 2018): for each task but the last, the best accuracy
    it ever had minus its final accuracy, averaged.
    """
    matrix = np.asarray(matrix, np.float64)
    last = len(matrix) - 1
    average = float(np.mean(matrix[last, :last + 1]))
    if last == 0:
        return average, 0.0
    forgetting = float(np.mean([matrix[:last, s].max() - matrix[last, s] for s in range(last)]))
    return average, forgetting


def format_table(summary):
    """A Markdown table of `{method: {average_accuracy, forgetting, stored_bytes}}`; entries holding lists (one value
    per seed) are shown as mean +- std (stored bytes only when they differ between seeds)."""
    def cell(values, scale, digits, suffix="", constant_spread=True):
        values = np.atleast_1d(np.asarray(values, np.float64)) * scale
        text = f"{values.mean():,.{digits}f}{suffix}"
        varies = constant_spread or np.ptp(values) > 0
        return text + (f" ± {values.std():,.{digits}f}" if len(values) > 1 and varies else "")

    lines = ["| method | average accuracy | forgetting | stored bytes |", "|---|---|---|---|"]
    for method, row in summary.items():
        lines.append(f"| {method} | {cell(row['average_accuracy'], 100, 1, '%')} | "
                     f"{cell(row['forgetting'], 100, 1)} | {cell(row['stored_bytes'], 1, 0, constant_spread=False)} |")
    return "\n".join(lines)
