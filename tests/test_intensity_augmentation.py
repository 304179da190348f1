"""Intensity augmentation of global-local samples: parameters shared by both views, background kept, and the
contrast randomization doing what it says (contrast inverted by a decreasing curve, GIN changing the contrast)."""
import numpy as np
import pytest
import torch

from mapseg_nnunet.data.global_local import GlobalLocalDataLoader
from mapseg_nnunet.data.intensity_augmentation import (IntensityAugmentation, RandomConvolutionTransform,
                                                       RandomIntensityRemapTransform, nnunet_intensity_transforms,
                                                       transform_views)
from mapseg_nnunet.data.sample_geometry import NO_AUGMENTATION


def views():
    """A global view (8^3 foreground cube of three tissue values in a 16^3 zero background) and a local patch
    holding the same three values."""
    g = torch.zeros(1, 16, 16, 16)
    g[0, 4:12, 4:12, 4:12] = 0.2
    g[0, 4:12, 4:8, 4:12] = 0.5
    g[0, 4:12, 10:12, 4:12] = 0.9
    local = torch.zeros(1, 12, 12, 12)
    local[0, :6] = 0.2
    local[0, 6:9] = 0.5
    local[0, 9:11] = 0.9  # local[0, 11] stays background
    return local, g


def test_remap_is_shared_between_views_keeps_background_and_can_invert_contrast():
    torch.manual_seed(0), np.random.seed(0)
    local, g = views()
    out_local, out_g = transform_views([RandomIntensityRemapTransform(invert_probability=1.0)], [local, g])
    assert torch.all(out_g[g == 0] == 0) and torch.all(out_local[local == 0] == 0)
    tissue = [float(out_g[g == v][0]) for v in (0.2, 0.5, 0.9)]
    assert all(torch.all(out_g[g == v] == t) for v, t in zip((0.2, 0.5, 0.9), tissue))
    assert tissue[0] > tissue[1] > tissue[2]  # decreasing curve: the contrast is inverted
    for v, t in zip((0.2, 0.5, 0.9), tissue):  # the local patch gets the same curve
        assert torch.allclose(out_local[local == v], torch.tensor(t))
    out_g, = transform_views([RandomIntensityRemapTransform(invert_probability=0.0)], [g])
    assert float(out_g[g == 0.2][0]) < float(out_g[g == 0.5][0]) < float(out_g[g == 0.9][0])


def test_lookup_table_reaches_every_tissue_ordering_shared_between_views_and_keeps_background():
    torch.manual_seed(0), np.random.seed(0)
    local, g = views()
    augmentation = IntensityAugmentation(lookup_table_probability=1.0)
    assert augmentation.active and not augmentation.needs_labels  # label-free: unlabeled views may use it
    orderings = set()
    for _ in range(100):
        out_local, out_g = transform_views(augmentation.transforms(), [local, g])
        assert torch.all(out_g[g == 0] == 0) and torch.all(out_local[local == 0] == 0)
        tissue = [float(out_g[g == v][0]) for v in (0.2, 0.5, 0.9)]
        for v, t in zip((0.2, 0.5, 0.9), tissue):  # one value per tissue, the same in the local patch
            assert torch.allclose(out_g[g == v], torch.tensor(t)) and torch.allclose(out_local[local == v],
                                                                                      torch.tensor(t))
        orderings.add(tuple(np.argsort(tissue)))
    assert len(orderings) == 6  # every order of the three tissues, no labels needed


def test_random_convolution_changes_contrast_within_the_input_range_and_keeps_background():
    torch.manual_seed(1), np.random.seed(1)
    local, g = views()
    transform = RandomConvolutionTransform(kernel_sizes=(1,), blend=(1.0, 1.0))  # pointwise net: one value per tissue
    out_local, out_g = transform_views([transform], [local, g])
    assert torch.all(out_g[g == 0] == 0) and torch.all(out_local[local == 0] == 0)
    foreground = out_g[g > 0]
    assert foreground.min() >= 0.2 - 1e-5 and foreground.max() <= 0.9 + 1e-5  # rescaled to the input's range
    tissue = [out_g[g == v] for v in (0.2, 0.5, 0.9)]
    assert all(torch.allclose(t, t[0]) for t in tissue)
    for v, t in zip((0.2, 0.5, 0.9), tissue):
        assert torch.allclose(out_local[local == v], t[0], atol=1e-5)
    assert not torch.allclose(torch.stack([t[0] for t in tissue]), torch.tensor([0.2, 0.5, 0.9]), atol=1e-3)


def test_nnunet_intensity_transforms_are_nnunets_own():
    names = [(type(t.transform).__name__, t.apply_probability) for t in nnunet_intensity_transforms()]
    assert names == [("GaussianNoiseTransform", 0.1), ("GaussianBlurTransform", 0.2),
                     ("MultiplicativeBrightnessTransform", 0.15), ("ContrastTransform", 0.15),
                     ("SimulateLowResolutionTransform", 0.25), ("GammaTransform", 0.1), ("GammaTransform", 0.3)]
    with pytest.raises(ValueError, match="remap_probability"):
        IntensityAugmentation(remap_probability=1.5)


def rank_correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(np.corrcoef(np.argsort(np.argsort(a.numpy())), np.argsort(np.argsort(b.numpy())))[0, 1])


class _Case:
    def __init__(self):
        self.identifiers = ["c0"]

    def load_case(self, key):
        image = np.zeros((1, 20, 20, 20), dtype=np.float32)
        image[0, 2:18, 2:18, 2:18] = np.random.default_rng(0).uniform(0.1, 1, (16, 16, 16))
        seg = np.where(image > 0, (image > 0.5).astype(np.int16), -1).astype(np.int16)
        return image, seg, None, None


def test_loader_augments_source_views_and_adds_student_views_to_targets():
    np.random.seed(0), torch.manual_seed(0)
    clean = GlobalLocalDataLoader([("s", _Case())], 2, (12, 12, 12), None, NO_AUGMENTATION,
                                  with_labels=True).generate_train_batch()
    np.random.seed(0), torch.manual_seed(0)
    inverted = IntensityAugmentation(remap_probability=1.0, remap_invert_probability=1.0)
    source = GlobalLocalDataLoader([("s", _Case())], 2, (12, 12, 12), None, NO_AUGMENTATION, with_labels=True,
                                   intensity_augmentation=inverted).generate_train_batch()
    assert torch.equal(source["target"], clean["target"]) and "student_data" not in source
    fg = clean["data"] > 0
    assert torch.equal(source["data"] > 0, fg)
    for i in range(2):  # a decreasing curve per sample
        assert rank_correlation(source["data"][i][fg[i]], clean["data"][i][fg[i]]) < -0.99
    np.random.seed(0), torch.manual_seed(0)
    target = GlobalLocalDataLoader([("t", _Case())], 2, (12, 12, 12), None, NO_AUGMENTATION, with_labels=False,
                                   student_intensity_augmentation=inverted).generate_train_batch()
    assert torch.equal(target["data"], clean["data"]) and torch.equal(target["global"], clean["global"])
    for i in range(2):
        assert rank_correlation(target["student_data"][i][fg[i]], clean["data"][i][fg[i]]) < -0.99
    assert torch.all(target["student_global"][clean["global"] == 0] == 0)


class _TwoTissueCase(_Case):
    def load_case(self, key):
        image, seg, _, _ = super().load_case(key)
        return image, np.where(seg >= 0, seg + 1, -1).astype(np.int16), None, None  # tissues 1 and 2, background -1


def test_loader_renders_source_classes_on_their_own_and_refuses_unlabeled_views():
    """Class-wise intensities in the labeled loader: the two classes of the case come out in either order over
    draws (one curve over the whole image keeps or reverses the order for every voxel at once), the labels and
    the background stay; unlabeled loaders (targets, student views) refuse the setting, naming it."""
    class_wise = IntensityAugmentation(class_wise_probability=1.0, class_wise_clusters=1,
                                       class_wise_gaussian_probability=0.0)
    np.random.seed(0), torch.manual_seed(0)
    clean = GlobalLocalDataLoader([("s", _TwoTissueCase())], 2, (12, 12, 12), None, NO_AUGMENTATION,
                                  with_labels=True).generate_train_batch()
    np.random.seed(0), torch.manual_seed(0)
    loader = GlobalLocalDataLoader([("s", _TwoTissueCase())], 2, (12, 12, 12), None, NO_AUGMENTATION,
                                   with_labels=True, intensity_augmentation=class_wise)
    orders = set()
    for _ in range(12):
        batch = loader.generate_train_batch()
        for x, y in zip(batch["data"], batch["target"]):
            low, high = x[y == 1], x[y == 2]  # tissue 1 is the darker one in the case
            if low.numel() and high.numel():
                orders.add(bool(low.mean() < high.mean()))
            assert torch.all(x[y < 0] == 0)  # background (-1, outside the non-zero mask) untouched
    assert orders == {True, False}
    np.random.seed(0), torch.manual_seed(0)
    first = GlobalLocalDataLoader([("s", _TwoTissueCase())], 2, (12, 12, 12), None, NO_AUGMENTATION,
                                  with_labels=True, intensity_augmentation=class_wise).generate_train_batch()
    assert torch.equal(first["target"], clean["target"])  # the same samples, re-rendered
    assert not torch.equal(first["data"], clean["data"]) and torch.equal(first["data"] > 0, clean["data"] > 0)
    for kwargs in ({"intensity_augmentation": class_wise, "with_labels": False},
                   {"student_intensity_augmentation": class_wise, "with_labels": True}):
        with pytest.raises(ValueError, match="class_wise_probability"):
            GlobalLocalDataLoader([("t", _Case())], 2, (12, 12, 12), None, NO_AUGMENTATION, **kwargs)
