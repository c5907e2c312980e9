"""A query-limited black-box attack: SimBA with the pixel basis (Guo et al. 2019), batched, in NumPy."""

import numpy as np


def simba(predict, images, labels, epsilon=0.2, max_queries=500, seed=0):
    """Attacks `predict` (images -> probabilities) one random pixel at a time.

    For each image, pixels are visited in a random order; each step adds `+epsilon`
    to the pixel (clipped to [0, 1]) and keeps the change if the true class'
    probability drops, else tries `-epsilon`. The attack on an image stops when it
    is misclassified or its queries run out. Images misclassified from the start
    are left out.

    Returns:
        dict with `success_rate`, `mean_queries` (of successful attacks), `num_attacked`,
        and `curve`: `[(queries, success rate)]` as the budget grows.
    """
    rng = np.random.default_rng(seed)
    images = np.asarray(images, np.float32).copy()
    labels = np.asarray(labels)
    probabilities = predict(images)
    correct = probabilities.argmax(1) == labels
    images, labels, probabilities = images[correct], labels[correct], probabilities[correct]
    count = len(labels)
    if count == 0:
        return {"success_rate": 0.0, "mean_queries": 0.0, "num_attacked": 0, "curve": []}
    rows = np.arange(count)
    flat = images.reshape(count, -1)
    order = np.stack([rng.permutation(flat.shape[1]) for _ in range(count)])
    true_probability = probabilities[rows, labels]
    queries = np.ones(count, dtype=np.int64)
    success_at = np.full(count, -1, dtype=np.int64)
    step = 0
    while step < flat.shape[1]:
        active = np.flatnonzero((success_at < 0) & (queries < max_queries))
        if active.size == 0:
            break
        pixel = order[active, step]
        improved = np.zeros(active.size, dtype=bool)
        for sign in (1.0, -1.0):
            trying = active[~improved]
            if trying.size == 0 or sign < 0 and np.all(queries[trying] >= max_queries):
                break
            candidate = flat[trying].copy()
            columns = pixel[~improved]
            candidate[np.arange(trying.size), columns] = np.clip(
                candidate[np.arange(trying.size), columns] + sign * epsilon, 0.0, 1.0)
            candidate_probabilities = predict(candidate.reshape((-1,) + images.shape[1:]))
            queries[trying] += 1
            better = candidate_probabilities[np.arange(trying.size), labels[trying]] < true_probability[trying]
            accepted = trying[better]
            flat[accepted] = candidate[better]
            true_probability[accepted] = candidate_probabilities[better, labels[accepted]]
            fooled = candidate_probabilities[better].argmax(1) != labels[accepted]
            success_at[accepted[fooled]] = queries[accepted[fooled]]
            improved[np.flatnonzero(~improved)[better]] = True
        step += 1
    succeeded = success_at >= 0
    budgets = sorted({int(b) for b in np.linspace(1, max_queries, 11)})
    curve = [(budget, float(np.mean(succeeded & (success_at <= budget)))) for budget in budgets]
    return {"success_rate": float(succeeded.mean()),
            "mean_queries": float(success_at[succeeded].mean()) if succeeded.any() else 0.0,
            "num_attacked": int(count), "curve": curve}
