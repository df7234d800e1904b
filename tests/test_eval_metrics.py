"""Metric functions against hand-computed cases and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest

from audioclip_search.evaluation import metrics

sklearn_metrics = pytest.importorskip("sklearn.metrics")


def ranked(scores_in_rank_order: int) -> np.ndarray:
    """Distinct descending scores for results already in rank order."""
    return np.linspace(1.0, 0.0, scores_in_rank_order)


# ------------------------------------------------------------------------------------------------
# retrieval: hand-computed


def test_single_query_hand_computed():
    # Ranking: relevant, not, relevant, not, not (n_rel = 2).
    scores = ranked(5)[None, :]
    relevant = np.array([[1, 0, 1, 0, 0]], dtype=bool)
    m = metrics.retrieval_metrics(scores, relevant, ks=(1, 2, 3, 5))
    s = m.summary()
    assert s["P@1"] == pytest.approx(1.0)
    assert s["R@1"] == pytest.approx(0.5)
    assert s["P@2"] == pytest.approx(0.5)
    assert s["P@3"] == pytest.approx(2 / 3)
    assert s["R@3"] == pytest.approx(1.0)
    assert s["P@5"] == pytest.approx(0.4)
    assert s["mAP"] == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert s["MRR"] == pytest.approx(1.0)


def test_two_queries_means_and_reciprocal_rank():
    scores = np.tile(ranked(4), (2, 1))
    relevant = np.array([[0, 0, 1, 0],    # first hit at rank 3: AP = 1/3, RR = 1/3
                         [0, 1, 0, 1]],   # hits at 2 and 4: AP = (1/2 + 2/4) / 2 = 1/2, RR = 1/2
                        dtype=bool)
    s = metrics.retrieval_metrics(scores, relevant, ks=(1, 10)).summary()
    assert s["mAP"] == pytest.approx((1 / 3 + 1 / 2) / 2)
    assert s["MRR"] == pytest.approx((1 / 3 + 1 / 2) / 2)
    assert s["P@1"] == 0.0 and s["R@1"] == 0.0
    # k past the end of the list: P@10 still divides by 10, R@10 is complete recall.
    assert s["P@10"] == pytest.approx((1 / 10 + 2 / 10) / 2)
    assert s["R@10"] == pytest.approx(1.0)


def test_ranking_uses_scores_not_input_order():
    scores = np.array([[0.1, 0.9, 0.5]])
    relevant = np.array([[True, False, False]])  # the relevant result ranks last
    s = metrics.retrieval_metrics(scores, relevant).summary()
    assert s["P@1"] == 0.0
    assert s["MRR"] == pytest.approx(1 / 3)
    assert s["mAP"] == pytest.approx(1 / 3)


def test_ties_keep_result_order():
    scores = np.array([[0.5, 0.5, 0.5]])
    first = metrics.retrieval_metrics(scores, np.array([[True, False, False]])).summary()
    last = metrics.retrieval_metrics(scores, np.array([[False, False, True]])).summary()
    assert first["MRR"] == 1.0
    assert last["MRR"] == pytest.approx(1 / 3)


def test_excluded_results_are_removed_and_empty_queries_skipped():
    # audio->audio with 3 clips: labels A, A, B. Clip 2 (B) has no other B: skipped.
    labels = np.array([0, 0, 1])
    scores = np.array([[1.0, 0.2, 0.8],
                       [0.2, 1.0, 0.9],
                       [0.8, 0.9, 1.0]])
    relevant = labels[:, None] == labels[None, :]
    exclude = np.eye(3, dtype=bool)
    m = metrics.retrieval_metrics(scores, relevant, exclude)
    assert m.n_queries == 2 and m.n_skipped == 1
    assert m.valid.tolist() == [True, True, False]
    # Query 0 ranks (self removed) 2 (B, 0.8) then 1 (A, 0.2): first hit at rank 2.
    # Query 1 ranks 2 (0.9) then 0 (0.2): first hit at rank 2.
    s = m.summary()
    assert s["P@1"] == 0.0
    assert s["MRR"] == pytest.approx(0.5)
    assert s["mAP"] == pytest.approx(0.5)
    assert s["R@5"] == pytest.approx(1.0)


def test_average_precision_single_query():
    ap = metrics.average_precision(np.array([0.9, 0.8, 0.7]), np.array([0, 1, 1]))
    assert ap == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert np.isnan(metrics.average_precision(np.array([0.9, 0.8]), np.array([0, 0])))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_average_precision_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    q, r = 25, 60
    scores = rng.normal(size=(q, r))
    relevant = rng.random((q, r)) < 0.2
    relevant[:, 0] = True  # every query has something relevant
    m = metrics.retrieval_metrics(scores, relevant)
    expected = [sklearn_metrics.average_precision_score(relevant[i], scores[i]) for i in range(q)]
    np.testing.assert_allclose(m.ap, expected, rtol=1e-12)
    assert m.summary()["mAP"] == pytest.approx(np.mean(expected))
    for i in range(q):
        assert metrics.average_precision(scores[i], relevant[i]) == pytest.approx(expected[i])


def test_interpolated_pr_curve_hand_computed():
    # rel = [1, 0, 1], n_rel = 2: precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1.
    curve = metrics.interpolated_pr_curve(np.array([[True, False, True]]), np.array([2]))
    levels = metrics.PR_RECALL_LEVELS
    expected = np.where(levels <= 0.5 + 1e-12, 1.0, 2 / 3)
    np.testing.assert_allclose(curve, expected)


def test_pr_curve_in_retrieval_metrics():
    scores = ranked(3)[None, :]
    m = metrics.retrieval_metrics(scores, np.array([[False, True, False]]))
    np.testing.assert_allclose(m.pr_curve, np.full(11, 0.5))


# ------------------------------------------------------------------------------------------------
# classification


def test_topk_hits_single_and_multi_label():
    scores = np.array([[0.1, 0.7, 0.2],
                       [0.5, 0.3, 0.2],
                       [0.2, 0.3, 0.5]])
    assert metrics.topk_hits(scores, [1, 1, 2], 1).tolist() == [True, False, True]
    assert metrics.topk_hits(scores, [[1], [1], [2]], 2).tolist() == [True, True, True]
    assert metrics.topk_hits(scores, [[0, 1], [1, 2], [0]], 1).tolist() == [True, False, False]
    assert metrics.topk_hits(scores, [0, 2, 0], 5).tolist() == [True, True, True]  # k > classes


def test_confusion_and_per_class_accuracy():
    true = [0, 0, 1, 2, 2, 2]
    pred = [0, 1, 1, 2, 0, 2]
    cm = metrics.confusion_matrix(true, pred, 4)
    assert cm.tolist() == [[1, 1, 0, 0], [0, 1, 0, 0], [1, 0, 2, 0], [0, 0, 0, 0]]
    correct = np.array(true) == np.array(pred)
    acc, count = metrics.per_class_accuracy([[t] for t in true], correct, 4)
    np.testing.assert_allclose(acc[:3], [0.5, 1.0, 2 / 3])
    assert np.isnan(acc[3])
    assert count.tolist() == [2, 1, 3, 0]


def test_class_average_precision_matches_sklearn():
    rng = np.random.default_rng(3)
    n, c = 40, 5
    scores = rng.normal(size=(n, c))
    targets = [[int(t)] for t in rng.integers(0, c - 1, size=n)]  # class 4 never occurs
    onehot = np.zeros((n, c), dtype=bool)
    for i, t in enumerate(targets):
        onehot[i, t] = True
    expected = np.mean([sklearn_metrics.average_precision_score(onehot[:, k], scores[:, k]) for k in range(c - 1)])
    assert metrics.class_average_precision(scores, targets, c) == pytest.approx(expected)
