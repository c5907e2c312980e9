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
