import numpy as np

from keras_nngk import attacks


def test_simba_fools_a_threshold_classifier_with_few_queries():
    # Class 1 when the mean pixel exceeds 0.5: an image at mean 0.52 flips after ~2 pixels of -0.2 (of 16 pixels).
    def predict(images):
        mean = images.reshape(len(images), -1).mean(1)
        p1 = 1 / (1 + np.exp(-50 * (mean - 0.5)))
        return np.stack([1 - p1, p1], axis=1)

    images = np.full((3, 4, 4, 1), 0.52, np.float32)
    result = attacks.simba(predict, images, np.array([1, 1, 0]), epsilon=0.2, max_queries=50)
    assert result["num_attacked"] == 2  # The third image is misclassified from the start.
    assert result["success_rate"] == 1.0
    # Each step tries +0.2 (rejected: raises p1) then -0.2 (accepted): 2 queries a step, 1 initial query; two steps
    # lower the mean by 0.025 to 0.495 < 0.5.
    assert result["mean_queries"] == 5.0
    assert result["curve"][-1][1] == 1.0


def test_simba_respects_the_query_budget():
    def predict(images):  # Unfoolable: always class 0 with certainty.
        return np.tile([[1.0, 0.0]], (len(images), 1))

    result = attacks.simba(predict, np.zeros((2, 3, 3, 1), np.float32), np.array([0, 0]), max_queries=7)
    assert result["success_rate"] == 0.0 and result["num_attacked"] == 2


def _unfoolable(images):
    return np.tile([[1.0, 0.0]], (len(images), 1))


def _flips_under_any_change(clean):
    def predict(images):  # Class 0 for the clean image exactly, class 1 for anything else.
        changed = np.any(images.reshape(len(images), -1) != clean.reshape(1, -1), axis=1)
        return np.stack([~changed, changed], axis=1).astype(np.float32)
    return predict


def test_square_attack_never_succeeds_on_a_model_whose_answer_never_changes():
    result = attacks.square_attack(_unfoolable, np.full((3, 6, 6, 1), 0.5, np.float32), np.zeros(3, int),
                                   max_queries=40)
    assert result["success_rate"] == 0.0 and result["num_attacked"] == 3 and result["mean_queries"] == 0.0


def test_both_attacks_succeed_at_the_first_query_on_a_model_that_flips_under_any_noise():
    clean = np.full((1, 6, 6, 1), 0.5, np.float32)  # Mid-grey: no perturbation is clipped away.
    for attack in (attacks.square_attack, attacks.simba):
        result = attack(_flips_under_any_change(clean[0]), clean, np.zeros(1, int), max_queries=20)
        assert result["success_rate"] == 1.0 and result["num_attacked"] == 1
        assert result["mean_queries"] == 2.0, attack.__name__  # The clean query, then the first perturbed one.


def test_square_attack_stays_in_the_ball_and_lowers_the_margin():
    # Class 1 when the mean pixel exceeds 0.5: images at 0.53 flip when enough of the area moves by -0.1.
    def predict(images):
        mean = images.reshape(len(images), -1).mean(1)
        p1 = 1 / (1 + np.exp(-50 * (mean - 0.5)))
        return np.stack([1 - p1, p1], axis=1)

    seen = []

    def recording(images):
        seen.append(images.copy())
        return predict(images)

    images = np.full((4, 8, 8, 1), 0.53, np.float32)
    result = attacks.square_attack(recording, images, np.ones(4, int), epsilon=0.1, max_queries=300)
    assert result["success_rate"] == 1.0 and result["num_attacked"] == 4
    for batch in seen[1:]:  # Every queried image lies within epsilon of the clean one and within [0, 1].
        assert np.all(np.abs(batch - 0.53) <= 0.1 + 1e-6) and batch.min() >= 0 and batch.max() <= 1
    assert 2 < result["mean_queries"] <= 300
    assert result["curve"][-1] == (300, 1.0)
