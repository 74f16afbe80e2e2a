import numpy as np
import pytest

from ssd_edge.runtime.boxes import decode
from ssd_edge.training.matching import MatchingError, assign, match


def planted_collision():
    """Two objects whose best default box is the same one.

    Prior 0 is the best for both objects; prior 1 fits object B almost as well and prior 2
    fits object A a little less. Greedy argmax gives prior 0 to both (B overwrites A) and A
    ends up with nothing above the 0.5 IoU threshold; the exact assignment does not.
    """
    priors = np.array(
        [
            [0.50, 0.50, 0.20, 0.20],  # the contested box
            [0.53, 0.50, 0.20, 0.20],  # good for B
            [0.44, 0.50, 0.16, 0.30],  # fair for A only
        ],
        np.float32,
    )
    gt = np.array([[0.39, 0.39, 0.61, 0.61], [0.41, 0.40, 0.62, 0.60]], np.float32)  # A, B
    return gt, priors


def test_greedy_matching_collides_in_the_planted_case():
    gt, priors = planted_collision()
    assigned = assign(gt, priors, "greedy_iou", iou_threshold=0.99)
    assert set(assigned[assigned >= 0]) == {1}  # object 0 lost its only default box


@pytest.mark.parametrize("matcher", ["hungarian", "hungarian_iou"])
def test_hungarian_gives_every_object_its_own_default_box(matcher):
    gt, priors = planted_collision()
    assigned = assign(gt, priors, matcher, iou_threshold=0.99)
    assert sorted(assigned[assigned >= 0]) == [0, 1]
    assert len(set(assigned[assigned >= 0])) == 2


def test_threshold_step_adds_every_good_default_box():
    priors = np.array([[0.5, 0.5, 0.4, 0.4], [0.52, 0.5, 0.4, 0.4], [0.1, 0.1, 0.1, 0.1]], np.float32)
    gt = np.array([[0.3, 0.3, 0.7, 0.7]], np.float32)
    assert assign(gt, priors, "hungarian").tolist() == [0, -1, -1]
    assert assign(gt, priors, "hungarian_iou").tolist() == [0, 0, -1]


def test_targets_decode_back_to_the_ground_truth():
    rng = np.random.default_rng(0)
    priors = np.concatenate([rng.uniform(0.1, 0.9, (200, 2)), rng.uniform(0.05, 0.4, (200, 2))], 1).astype(np.float32)
    gt = np.array([[0.1, 0.2, 0.4, 0.6], [0.5, 0.5, 0.9, 0.8]], np.float32)
    target_locs, target_labels = match(gt, np.array([3, 1]), priors)
    assert set(target_labels) == {0, 1, 3}
    for label, box in ((3, gt[0]), (1, gt[1])):
        positives = target_labels == label
        decoded = decode(target_locs[positives], priors[positives])
        np.testing.assert_allclose(decoded, np.tile(box, (positives.sum(), 1)), atol=1e-5)
    assert np.all(target_locs[target_labels == 0] == 0)


def test_no_objects_is_all_background():
    priors = np.array([[0.5, 0.5, 0.2, 0.2]] * 5, np.float32)
    target_locs, target_labels = match(np.zeros((0, 4)), np.zeros((0,)), priors)
    assert target_labels.tolist() == [0] * 5 and not target_locs.any()


@pytest.mark.parametrize("box", [[0.5, 0.1, 0.5, 0.4], [0.1, 0.6, 0.3, 0.2]])
def test_degenerate_ground_truth_is_a_clear_error(box):
    priors = np.array([[0.5, 0.5, 0.2, 0.2]], np.float32)
    with pytest.raises(MatchingError, match=r"ground-truth box 0 .* x2 <= x1 or y2 <= y1"):
        match(np.array([box]), np.array([1]), priors)


def test_unknown_matcher():
    with pytest.raises(ValueError, match="unknown matcher"):
        assign(np.zeros((1, 4)), np.zeros((1, 4)), "bipartite")
