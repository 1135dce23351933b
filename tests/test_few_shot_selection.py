"""The one few-shot selection (aecfe.splits.few_shot_selection) shared by aecfe-adapt, the embedding-head few-shot
rows and the deep few-shot fine-tuning on crops."""
import numpy as np
import pytest

from aecfe.errors import InputError
from aecfe.splits import few_shot_selection


def test_k_groups_per_class_independent_of_the_order():
    labels = np.array(["a"] * 6 + ["b"] * 3 + ["c"])
    keys = np.array([f"img{i}" for i in range(10)])
    chosen = few_shot_selection(labels, 2, seed=0, keys=keys)
    assert [int((labels[chosen] == c).sum()) for c in "abc"] == [2, 2, 1]  # at most k, all of a rarer class
    order = np.random.default_rng(3).permutation(10)  # the same data shuffled: the same images are chosen
    again = few_shot_selection(labels[order], 2, seed=0, keys=keys[order])
    assert sorted(keys[order][again]) == sorted(keys[chosen])
    seeds = {tuple(few_shot_selection(labels, 2, seed=s, keys=keys)) for s in range(6)}
    assert len(seeds) > 1  # the seed changes the choice


def test_a_group_is_chosen_whole_and_candidates_restrict():
    labels = np.array(["a", "a", "a", "b", "b"])
    keys = np.array(["g0", "g0", "g1", "g2", "g3"])  # two cells of one image
    chosen = few_shot_selection(labels, 1, seed=0, keys=keys)
    a = chosen[labels[chosen] == "a"]
    assert len(set(keys[a])) == 1 and (len(a) == 2) == (keys[a][0] == "g0")
    within = few_shot_selection(labels, 5, seed=0, keys=keys, candidates=[2, 3])
    assert within.tolist() == [2, 3]
    with pytest.raises(InputError):
        few_shot_selection(labels, 0)


def test_the_deep_few_shot_on_crops_draws_the_same_cells():
    from classifiers.dg.data import few_shot_indices

    labels = np.array([0, 0, 1, 1, 1, 2, 0, 1])
    keys = np.array([f"sha{i}" for i in range(8)])
    target = np.arange(2, 8)
    assert np.array_equal(few_shot_indices(labels, 2, 4, candidates=target, keys=keys),
                          few_shot_selection(labels, 2, 4, keys=keys, candidates=target))


def test_whole_images_carry_their_content_keys_into_the_few_shot_selection(tmp_path):
    """load_image_domains keys each image by its file's SHA-1 (a store's cell_groups): the deep few-shot on whole
    images then picks the same images as the heads on the store's cells, in any order."""
    from aecfe.dg_baselines import load_image_domains, scan_synthetic_domains
    from aecfe.io import sha1_file
    from classifiers.dg.crops import shot_keys
    from classifiers.dg.data import few_shot_indices

    records = scan_synthetic_domains(tmp_path, 12, 32)
    data, labels, domains = load_image_domains(records, "canonical", 0)
    assert data.keys.tolist() == [sha1_file(path) for path in data.images]
    target = np.flatnonzero(domains == domains[-1])
    chosen = few_shot_indices(data.targets, 2, 0, candidates=target, keys=shot_keys(data))
    assert np.array_equal(chosen, few_shot_selection(labels, 2, 0, keys=data.keys, candidates=target))
    order = np.random.default_rng(0).permutation(len(data))
    shuffled = data.subset(order)
    assert shuffled.keys.tolist() == data.keys[order].tolist()
    again = few_shot_indices(shuffled.targets, 2, 0, candidates=np.flatnonzero(domains[order] == domains[-1]),
                             keys=shot_keys(shuffled))
    assert sorted(shuffled.keys[again]) == sorted(data.keys[chosen])
