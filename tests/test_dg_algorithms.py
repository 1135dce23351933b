"""DG algorithms (classifiers/dg/algorithms): registry, losses fall on synthetic domains, degenerate batches.

Tiny CNN on 32-pixel synthetic single-cell images of three labs (each lab its own stain colours).
"""
import numpy as np
import pytest
import torch

from aecfe.errors import InputError
from classifiers.dg.algorithms import (ALGORITHM_NAMES, ALGORITHMS, CRT, FewShot, FewShotFinetune, build_algorithm,
                                       get_algorithm)
from classifiers.dg.data import synthetic_dataset
from classifiers.dg.hparams import ALGORITHM_DEFAULTS, get_hparams


TINY = {"backbone": "tiny", "lr": 3e-3}
NO_TOP = {"include_top": False}


@pytest.fixture(scope="module")
def domains():
    """Three domain minibatches (x, y) of 8 images each and the class count."""
    data = synthetic_dataset(8, size=32, seed=0)
    batches = []
    for d in range(3):
        index = np.flatnonzero(data.domain_ids == d)
        batches.append((torch.stack([data.image(i) for i in index]), torch.as_tensor(data.targets[index])))
    return batches, len(data.classes)


def build(name, num_classes, **hparams):
    torch.manual_seed(0)
    extra = NO_TOP if name.startswith("FewShot") else {}
    return build_algorithm(name, num_classes, 3, {**TINY, **extra, **hparams})


def centroids_from_current_features(algorithm, batches):
    with torch.no_grad():
        sums = torch.zeros_like(algorithm.centroids)
        sizes = torch.zeros(algorithm.centroids.shape[:2])
        for d, (x, y) in enumerate(batches):
            features = algorithm.featurizer.eval()(x)
            sums.index_put_((torch.full_like(y, d), y), features, accumulate=True)
            sizes.index_put_((torch.full_like(y, d), y), torch.ones(len(y)), accumulate=True)
    algorithm.update_centroids(sums, sizes)


def counts_of(batches, num_classes):
    counts = torch.zeros(len(batches), num_classes)
    for d, (_, y) in enumerate(batches):
        counts[d] += torch.bincount(y, minlength=num_classes).float()
    return counts


LOSS_KEY = {"DANN": "class_loss", "SelfReg": "class_loss", "SADA": "contrastive"}
SETTINGS = {"BoDA": {"boda_start_step": 0}, "SADA": {"stage1_steps": 1000}}


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_loss_falls_over_a_few_steps(name, domains):
    batches, num_classes = domains
    algorithm = build(name, num_classes, **SETTINGS.get(name, {}))
    if name == "BoDA":
        algorithm.set_counts(counts_of(batches, num_classes))
        centroids_from_current_features(algorithm, batches)
    torch.manual_seed(1)
    key = LOSS_KEY.get(name, "loss")
    losses = []
    for _ in range(16):
        logged = algorithm.update(batches)
        if key in logged:
            losses.append(logged[key])
    assert np.isfinite(losses).all()
    assert np.mean(losses[-3:]) < np.mean(losses[:3]), losses
    assert algorithm.predict(batches[0][0]).shape == (8, num_classes)


def test_sada_stage_two_trains_the_classifier(domains):
    batches, num_classes = domains
    algorithm = build("SADA", num_classes, stage1_steps=2)
    classifier_before = algorithm.classifier.weight.clone()
    torch.manual_seed(0)
    stage1 = [algorithm.update(batches) for _ in range(2)]
    assert "contrastive" in stage1[0] and torch.equal(algorithm.classifier.weight, classifier_before)
    losses = [algorithm.update(batches)["loss"] for _ in range(12)]
    assert np.mean(losses[-3:]) < np.mean(losses[:3])
    assert algorithm.swad_start_step == 2


def test_registry_round_trip_and_hparams_errors():
    assert set(ALGORITHMS) == {"ERM", "Oracle", "DANN", "CORAL", "Mixup", "SelfReg", "BoDA", "CRT", "SADA",
                               "FewShot", "FewShotFinetune"}
    assert set(ALGORITHMS) == set(ALGORITHM_DEFAULTS)
    # the one ordered list of the programs: every registered algorithm but the few-shot second stage, once
    assert len(set(ALGORITHM_NAMES)) == len(ALGORITHM_NAMES)
    assert set(ALGORITHM_NAMES) == set(ALGORITHMS) - {"FewShotFinetune"} and ALGORITHM_NAMES[0] == "ERM"
    for name, cls in ALGORITHMS.items():
        assert get_algorithm(name) is cls and cls.__name__ == name
    algorithm = build_algorithm("Mixup", 4, 2, {**TINY, "mixup_alpha": 0.4})
    assert isinstance(algorithm, ALGORITHMS["Mixup"]) and algorithm.hparams["mixup_alpha"] == 0.4
    assert get_hparams("SADA")["la_weight"] == 0.1 and get_hparams("DANN")["beta1"] == 0.5
    with pytest.raises(InputError, match="unknown algorithm"):
        get_algorithm("IRM")
    with pytest.raises(InputError, match="unknown hyper-parameter"):
        build_algorithm("ERM", 4, 2, {**TINY, "mixup_alpha": 0.4})


def test_minibatches_with_explicit_domains_equal_positional_ones(domains):
    batches, num_classes = domains
    results = []
    for with_domain in (False, True):
        algorithm = build("DANN", num_classes)
        algorithm.update(batches)  # generator step
        given = [(x, y, d) for d, (x, y) in enumerate(batches)] if with_domain else batches
        results.append(algorithm.update(given)["disc_loss"])  # discriminator step
    assert results[0] == pytest.approx(results[1])


def test_dann_alternates_generator_and_discriminator_steps(domains):
    batches, num_classes = domains
    algorithm = build("DANN", num_classes)
    first, second = algorithm.update(batches), algorithm.update(batches)
    assert "gen_loss" in first and set(second) == {"disc_loss"}
    betas = [group["betas"] for opt in algorithm.optimizers for group in opt.param_groups]
    assert betas == [(0.5, 0.9), (0.5, 0.9)]


def all_grads_finite(algorithm):
    grads = [p.grad for p in algorithm.parameters() if p.grad is not None]
    return bool(grads) and all(torch.isfinite(g).all() for g in grads)


def test_boda_is_finite_with_missing_pairs_and_a_single_sample_domain(domains):
    batches, num_classes = domains
    x, y = batches[2]
    odd = [batches[0], (batches[1][0][:3], batches[1][1][:3]), (x[:1], y[:1])]  # domain 2: one sample
    algorithm = build("BoDA", num_classes, boda_start_step=0)
    counts = counts_of(odd, num_classes)
    assert (counts == 0).any()  # absent domain-class pairs
    algorithm.set_counts(counts)
    assert torch.isinf(algorithm.counts[counts == 0]).all()
    centroids_from_current_features(algorithm, odd)
    for _ in range(3):
        logged = algorithm.update(odd)
        assert all(np.isfinite(v) for v in logged.values()) and "boda" in logged
        assert all_grads_finite(algorithm)


def test_boda_centroids_first_copy_then_ema():
    algorithm = build("BoDA", 2)
    algorithm.set_counts(torch.ones(3, 2))
    ones, sizes = torch.ones_like(algorithm.centroids), torch.ones(3, 2)
    algorithm.update_centroids(ones * 5, sizes)
    assert torch.allclose(algorithm.centroids, ones * 5)
    sizes[0, 0] = 0  # no sample of this pair in the pass: kept
    algorithm.update_centroids(ones * 10, sizes)
    assert torch.allclose(algorithm.centroids[1:], ones[1:] * 9)  # 0.8 * 10 + 0.2 * 5
    assert torch.allclose(algorithm.centroids[0, 0], ones[0, 0] * 5)


def test_sada_is_finite_with_single_sample_domains_and_fewer_images_than_clusters(domains):
    batches, num_classes = domains
    tiny_batch = [(x[:1], y[:1]) for x, y in batches[:2]]  # 2 images, k = 3 clusters
    for contrastive in ("disc", "supcon"):
        algorithm = build("SADA", num_classes, contrastive=contrastive)
        logged = algorithm.update(tiny_batch)
        assert all(np.isfinite(v) for v in logged.values()) and all_grads_finite(algorithm)


def test_crt_retrains_only_a_new_classifier_on_a_frozen_featurizer(domains):
    batches, num_classes = domains
    stage1 = build("BoDA", num_classes)
    crt = CRT.from_algorithm(stage1)
    assert crt.hparams["class_balanced"] and not any(p.requires_grad for p in crt.featurizer.parameters())
    before = {k: v.clone() for k, v in crt.featurizer.state_dict().items()}
    for _ in range(3):
        crt.update(batches)
    assert all(torch.equal(before[k], v) for k, v in crt.featurizer.state_dict().items())
    assert all(torch.equal(before[k], v) for k, v in stage1.featurizer.state_dict().items())


def test_few_shot_finetuning_copies_weights_and_head_only_freezes_the_encoder(domains):
    batches, num_classes = domains
    source = build("FewShot", num_classes, domain_balanced=False)
    assert not source.featurizer.normalize  # the workflow feeds Reinhard-normalised [0, 1] images as they are
    source.update(batches)
    source.eval()
    for trainable in ("all", "head"):
        tuned = FewShotFinetune.from_algorithm(source, {"trainable": trainable})
        assert isinstance(tuned, FewShotFinetune) and tuned.hparams["lr"] == 7e-5
        tuned.eval()
        assert torch.allclose(tuned.predict(batches[0][0]), source.predict(batches[0][0]))
        encoder = {k: v.clone() for k, v in tuned.featurizer.state_dict().items()}
        tuned.train()
        for _ in range(2):
            tuned.update(batches)
        unchanged = all(torch.equal(encoder[k], v) for k, v in tuned.featurizer.state_dict().items())
        assert unchanged == (trainable == "head")
    assert isinstance(FewShot.from_algorithm(source), FewShot)
