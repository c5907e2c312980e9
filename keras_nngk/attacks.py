"""Query-limited black-box attacks, batched, in NumPy: SimBA with the pixel basis (Guo et al. 2019) and the Square
Attack (Andriushchenko et al. 2020), a random search over square L-infinity patches. Both take `predict` (images ->
probabilities) and return the same dict, so two networks can be compared under the same budget with both."""

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
    return _summary(success_at, max_queries)


def _summary(success_at, max_queries):
    """The result dict from the query at which each attacked image was fooled (-1: never)."""
    succeeded = success_at >= 0
    budgets = sorted({int(b) for b in np.linspace(1, max_queries, 11)})
    curve = [(budget, float(np.mean(succeeded & (success_at <= budget)))) for budget in budgets]
    return {"success_rate": float(succeeded.mean()),
            "mean_queries": float(success_at[succeeded].mean()) if succeeded.any() else 0.0,
            "num_attacked": int(len(success_at)), "curve": curve}


def _margin(probabilities, labels):
    """`p_y - max_{k != y} p_k`: negative once the image is misclassified."""
    rows = np.arange(len(labels))
    true = probabilities[rows, labels]
    others = probabilities.copy()
    others[rows, labels] = -np.inf
    return true - others.max(axis=1)


def square_attack(predict, images, labels, epsilon=0.2, max_queries=500, p_init=0.05, seed=0):
    """Attacks `predict` by random search over square patches within an L-infinity ball of radius `epsilon`.

    Square Attack (Andriushchenko et al., ECCV 2020), score-based: start from vertical
    stripes of `+-epsilon`; each query redraws one random square (the same sign over its
    pixels, one sign per channel) and keeps it if the margin `p_y - max_{k != y} p_k`
    drops. The square's side shrinks with the queries spent (`p_init` of the pixels at
    first, halved at 2, 10, 40, 100, 200, 400, 800, 1200 and 1600 per 2,000 queries).
    Unlike SimBA, every perturbation is a whole patch at the ball's corner. Images
    misclassified from the start are left out; the clean query counts as the first.

    Returns:
        the same dict as `simba`.
    """
    rng = np.random.default_rng(seed)
    images = np.asarray(images, np.float32)
    labels = np.asarray(labels)
    if images.ndim != 4:
        raise ValueError(f"square_attack expects images (n, height, width, channels). Received: shape={images.shape}")
    correct = predict(images).argmax(1) == labels
    images, labels = images[correct], labels[correct]
    count, height, width, channels = images.shape
    if count == 0:
        return _summary(np.zeros(0, np.int64), max_queries)
    perturbed = np.clip(images + epsilon * rng.choice([-1.0, 1.0], size=(count, 1, width, channels)), 0.0, 1.0)
    margin = _margin(predict(perturbed), labels)
    queries = np.full(count, 2, dtype=np.int64)
    success_at = np.where(margin < 0, 2, -1).astype(np.int64)
    halvings = np.array([2, 10, 40, 100, 200, 400, 800, 1200, 1600]) * max_queries / 2000
    while True:
        active = np.flatnonzero((success_at < 0) & (queries < max_queries))
        if active.size == 0:
            break
        spent = queries[active[0]] - 2  # Every active image has spent the same number of queries.
        fraction = p_init / 2 ** int(np.sum(spent >= halvings))
        side = int(np.clip(round(np.sqrt(fraction * height * width)), 1, min(height, width) - 1 or 1))
        candidate = perturbed[active].copy()
        for row, index in enumerate(active):
            top, left = rng.integers(0, height - side + 1), rng.integers(0, width - side + 1)
            signs = epsilon * rng.choice([-1.0, 1.0], size=channels)
            window = images[index, top:top + side, left:left + side]
            candidate[row, top:top + side, left:left + side] = np.clip(window + signs, 0.0, 1.0)
        new_margin = _margin(predict(candidate), labels[active])
        queries[active] += 1
        better = new_margin < margin[active]
        perturbed[active[better]] = candidate[better]
        margin[active[better]] = new_margin[better]
        fooled = active[better & (new_margin < 0)]
        success_at[fooled] = queries[fooled]
    return _summary(success_at, max_queries)
