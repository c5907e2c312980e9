"""Candidate lists (keras_nngk.search.candidates) against NumPy, and the NNGK head's training step over them."""

import numpy as np
import pytest
import tensorflow as tf

import keras_nngk as kn
from keras_nngk.search import candidates
from tests import reference

NUM_CLASSES = 3


def numpy_lists(centers, mask, m):
    """Each stored slot's m nearest other stored slots by a stable argsort; -1 rows for empty slots."""
    distances = reference.squared_distances(centers, centers)
    distances[:, ~mask] = np.inf
    np.fill_diagonal(distances, np.inf)
    lists = np.argsort(distances, axis=1, kind="stable")[:, :m]
    lists = np.where(np.take_along_axis(distances, lists, 1) < np.inf, lists, -1)
    lists[~mask] = -1
    return lists


def test_lists_match_numpy_with_empty_slots(rng):
    centers = rng.normal(size=(50, 6)).astype(np.float32)
    mask = np.ones(50, bool)
    mask[[3, 17, 40]] = False
    got = candidates.build_candidate_lists(centers, mask, 9, batch_size=16)  # Several batches.
    np.testing.assert_array_equal(got, numpy_lists(centers, mask, 9))


def test_lists_leave_the_slot_out_among_equal_centers_and_pad_short_rows():
    centers = np.zeros((4, 2), np.float32)  # Every distance ties: the slot itself may rank anywhere.
    lists = candidates.build_candidate_lists(centers, np.ones(4, bool), 5)
    for slot, row in enumerate(lists):
        assert slot not in row
        assert sorted(row[:3].tolist()) == sorted(set(range(4)) - {slot})
        assert row[3:].tolist() == [-1, -1]


def test_candidate_search_ranks_only_the_listed_centers(rng):
    centers = rng.normal(size=(30, 4)).astype(np.float32)
    mask = np.ones(30, bool)
    mask[5] = False
    queries = rng.normal(size=(6, 4)).astype(np.float32)
    lists = np.stack([rng.choice(30, 8, replace=False) for _ in range(6)]).astype(np.int32)
    lists[0, :2] = -1
    lists[1, 0] = 5  # An empty slot is never returned.
    got = candidates.candidate_search(queries, centers, mask, lists, 4).numpy()
    for query, row, found in zip(queries, lists, got):
        listed = row[(row >= 0) & mask[np.maximum(row, 0)]]
        _, order = reference.nearest_neighbours(query[None], centers[listed], 4)
        np.testing.assert_array_equal(found, listed[order[0]])


def test_training_step_over_candidates_matches_eq7_on_the_listed_centers(rng):
    centers = rng.normal(size=(40, 5)).astype(np.float32)
    labels = rng.integers(0, NUM_CLASSES, 40)
    head = kn.layers.NNGKClassifier(NUM_CLASSES, num_neighbours=4, sigma=0.7, sample_weights=False)
    head.assign_centers(centers, labels)
    head.set_candidate_lists(6)
    lists = numpy_lists(centers, np.ones(40, bool), 6)
    ids = np.array([0, 7, 12, 39], np.int32)
    queries = centers[ids] + rng.normal(scale=0.5, size=(4, 5)).astype(np.float32)  # Moved since the lists.
    got = head([queries, ids], training=True).numpy()
    one_hot = reference.one_hot(labels, NUM_CLASSES)
    for row, (query, sample) in enumerate(zip(queries, ids)):
        listed = lists[sample]
        expected = reference.nngk_classifier(query[None], centers[listed], one_hot[listed], 4, 0.7)
        np.testing.assert_allclose(got[row], expected[0], atol=1e-5)
    # Inference, and training without lists, search every center (leave-one-out): eq. 7 over all of them.
    everywhere = reference.nngk_classifier(queries, centers, one_hot, 4, 0.7, query_sample_ids=ids,
                                           center_sample_ids=np.arange(40))
    np.testing.assert_allclose(head([queries, ids], training=False).numpy(), everywhere, atol=1e-5)
    head.set_candidate_lists(0)
    np.testing.assert_allclose(head([queries, ids], training=True).numpy(), everywhere, atol=1e-5)


def test_a_sample_without_a_center_searches_every_center(rng):
    centers = rng.normal(size=(20, 3)).astype(np.float32)
    labels = rng.integers(0, NUM_CLASSES, 20)
    head = kn.layers.NNGKClassifier(NUM_CLASSES, num_neighbours=3, sample_weights=False)
    head.assign_centers(centers, labels, sample_ids=np.arange(100, 120))
    head.set_candidate_lists(4)
    queries = rng.normal(size=(2, 3)).astype(np.float32)
    ids = np.array([105, 7], np.int32)  # 7 owns no center: the whole batch searches everything.
    expected = reference.nngk_classifier(queries, centers, reference.one_hot(labels, NUM_CLASSES), 3, 1.0,
                                         query_sample_ids=ids, center_sample_ids=np.arange(100, 120))
    np.testing.assert_allclose(head([queries, ids], training=True).numpy(), expected, atol=1e-5)


def test_recall_is_one_on_fresh_lists_and_falls_when_centers_move(rng):
    centers = rng.normal(size=(200, 4)).astype(np.float32)
    head = kn.layers.NNGKClassifier(NUM_CLASSES, num_neighbours=5)
    head.assign_centers(centers, rng.integers(0, NUM_CLASSES, 200))
    assert head.candidate_recall() is None
    head.set_candidate_lists(8)
    assert head.candidate_recall() == 1.0
    head.centers.assign(rng.normal(size=(200, 4)).astype(np.float32))  # Every center moved: lists are stale.
    stale = head.candidate_recall(num_queries=50)
    assert stale < 0.5
    slots = np.arange(50)
    truth = reference.nearest_neighbours(head.centers.numpy()[slots], head.centers.numpy(), 5, slots,
                                         np.arange(200))[1]
    found = candidates.candidate_search(tf.gather(head.centers, slots), head.centers, head.center_mask,
                                        tf.gather(head._candidates.lists, slots), 5).numpy()
    expected = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(truth, found)])
    assert candidates.candidate_recall(head.centers, head.center_mask, head._candidates.lists, slots, 5) == (
        pytest.approx(expected))
    head.rebuild_candidate_lists()
    assert head.candidate_recall() == 1.0


def test_bad_candidate_counts_say_what_to_pass(rng):
    head = kn.layers.NNGKClassifier(NUM_CLASSES, num_neighbours=5)
    with pytest.raises(ValueError, match="has no centers"):
        head.set_candidate_lists(10)
    head.assign_centers(rng.normal(size=(20, 2)).astype(np.float32), rng.integers(0, NUM_CLASSES, 20))
    with pytest.raises(ValueError, match="must exceed num_neighbours=5"):
        head.set_candidate_lists(5)
    with pytest.raises(ValueError, match="integer >= 0"):
        head.set_candidate_lists(-1)
    with pytest.raises(ValueError, match="must exceed --num_neighbours=32"):
        kn.training.Config(candidates=16).validate()
    with pytest.raises(ValueError, match="nngk, tied impostors"):
        kn.training.Config(head="dense", candidates=64).validate()
