"""Class-wise random intensities (the robust teacher's source rendering): sub-clusters from the case, every ordering
of the tissues reachable, background untouched, one contrast for the patch and its global view."""
import itertools

import numpy as np
import torch

from mapseg_nnunet.data.class_intensity import (draw_cluster_intensities, foreground_range, intensity_subclusters,
                                                render_clusters)


def _case(seed=0):
    """A 3-class case (C=1): class 1 bimodal (two tissues under one label), classes 2 and 3 unimodal, background 0."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((24, 24, 24), dtype=np.int16)
    labels[2:22, 2:22, 2:8], labels[2:22, 2:22, 8:15], labels[2:22, 2:22, 15:22] = 1, 2, 3
    image = np.zeros((1, 24, 24, 24), dtype=np.float32)
    image[0][labels == 1] = np.where(rng.random((labels == 1).sum()) < 0.5, -2.0, 2.0)
    image[0][labels == 2] = 0.5
    image[0][labels == 3] = 1.0
    image[0][labels > 0] += rng.normal(0, 0.05, (labels > 0).sum())
    return image, labels


def test_subclusters_split_a_bimodal_class_at_its_gap():
    image, labels = _case()
    clusters, statistics = intensity_subclusters(image, labels, classes=(1, 2, 3), max_clusters=2)
    assert (clusters[labels == 0] == 0).all()
    low, high = clusters[(labels == 1) & (image[0] < 0)], clusters[(labels == 1) & (image[0] > 0)]
    assert len(set(low.tolist())) == 1 and len(set(high.tolist())) == 1 and low[0] != high[0]
    assert set(np.unique(clusters[labels == 1])) <= {1, 2} and set(np.unique(clusters[labels == 3])) <= {5, 6}
    assert np.isclose(statistics[int(low[0])][0], -2.0, atol=0.05)
    again, _ = intensity_subclusters(image, labels, classes=(1, 2, 3), max_clusters=2)
    np.testing.assert_array_equal(clusters, again)  # once per case, deterministic


def test_every_ordering_of_the_classes_is_reachable_and_background_stays():
    image, labels = _case()
    clusters, statistics = intensity_subclusters(image, labels, classes=(1, 2, 3), max_clusters=1)
    view, cmap = torch.from_numpy(image), torch.from_numpy(clusters)
    value_range = foreground_range(view, cmap)
    rng = np.random.default_rng(0)
    orders = set()
    for _ in range(200):
        rendering = draw_cluster_intensities(np.unique(clusters), rng=rng)
        out = render_clusters(view, cmap, rendering, statistics, value_range)
        assert torch.equal(out[0][cmap == 0], view[0][cmap == 0])  # background untouched
        assert float(out[0][cmap > 0].min()) >= float(value_range[0, 0]) - 1e-5
        assert float(out[0][cmap > 0].max()) <= float(value_range[0, 1]) + 1e-5
        means = [float(out[0][cmap == c].mean()) for c in (1, 2, 3)]
        orders.add(tuple(np.argsort(means)))
    assert orders == set(itertools.permutations(range(3)))  # including GM > WM with CSF darkest, and all others


def test_patch_and_global_view_share_one_contrast():
    """Location-scale renderings with the case's statistics and the global view's range give a patch cut from
    the global view the same values as the global view has there."""
    image, labels = _case(1)
    clusters, statistics = intensity_subclusters(image, labels, classes=(1, 2, 3), max_clusters=2)
    view, cmap = torch.from_numpy(image), torch.from_numpy(clusters)
    rendering = draw_cluster_intensities(np.unique(clusters), gaussian_probability=0.0,
                                         rng=np.random.default_rng(3))
    value_range = foreground_range(view, cmap)
    whole = render_clusters(view, cmap, rendering, statistics, value_range)
    crop = (slice(None), slice(4, 16), slice(6, 20), slice(3, 18))
    patch = render_clusters(view[crop], cmap[crop[1:]], rendering, statistics, value_range)
    torch.testing.assert_close(patch, whole[crop], rtol=1e-5, atol=1e-5)


def test_transform_renders_both_views_from_the_global_views_parameters():
    """As a batchgeneratorsv2 transform: parameters from the global view and its labels; each view re-rendered
    with its own labels; labels -1 / 0 keep their voxels; a crop of the global view gets its values."""
    from mapseg_nnunet.data.class_intensity import ClassWiseIntensityTransform
    image, labels = _case(2)
    labels = labels.copy()
    labels[0] = -1  # nnU-Net's outside-the-non-zero-mask label
    view, seg = torch.from_numpy(image), torch.from_numpy(labels)[None]
    transform = ClassWiseIntensityTransform(classes=(1, 2, 3), max_clusters=2, gaussian_probability=0.0)
    np.random.seed(0)
    params = transform.get_parameters(image=view, segmentation=seg)
    whole = transform.apply({"image": view.clone(), "segmentation": seg}, **params)["image"]
    assert torch.equal(whole[0][seg[0] <= 0], view[0][seg[0] <= 0])
    assert not torch.allclose(whole[0][seg[0] > 0], view[0][seg[0] > 0])
    crop = (slice(None), slice(2, 14), slice(5, 21), slice(1, 17))
    patch = transform.apply_to_view(view[crop], seg[crop], **params)
    torch.testing.assert_close(patch, whole[crop], rtol=1e-5, atol=1e-5)
