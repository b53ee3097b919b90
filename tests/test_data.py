"""Tests for slicegan_core.data: loading, validation and on-the-fly patch sampling."""
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from slicegan_core.data import (IMAGE_TYPES, DatasetSpec, TrainingData, load_image, load_training_data,
                                mirrored_line, mirrored_positions, value_counts)

FIXTURES = Path(__file__).parent / "data"


def labels_2d(shape=(32, 32), values=(0, 1, 2), seed=0):
    rng = np.random.default_rng(seed)
    return np.asarray(values, dtype=np.uint8)[rng.integers(0, len(values), size=shape)]


def save_npy(folder, name, array):
    path = folder / name
    np.save(path, array)
    return str(path)


def load_one(folder, array, image_type="n-phase", patch_size=8, name="a.npy", **kwargs):
    return load_training_data([DatasetSpec((save_npy(folder, name, array),), {})],
                              image_type=image_type, patch_size=patch_size, **kwargs)


# ----------------------------------------------------------------------------- load_image round trips

@pytest.mark.parametrize("extension", [".png", ".tif", ".tiff", ".npy", ".PNG"])
def test_lossless_formats_round_trip_grey(tmp_path, extension):
    image = labels_2d((12, 20), values=(0, 128, 255))
    path = tmp_path / f"grey{extension}"
    if extension.lower() == ".png":
        Image.fromarray(image).save(path, format="PNG")
    elif extension == ".npy":
        np.save(path, image)
    else:
        tifffile.imwrite(path, image)
    loaded = load_image(path)
    assert loaded.dtype == np.uint8
    np.testing.assert_array_equal(loaded, image)


def test_png_rgb_and_rgba_drop_alpha(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, size=(10, 14, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    rgba = np.concatenate([rgb, np.full((10, 14, 1), 7, np.uint8)], axis=-1)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(load_image(tmp_path / "rgb.png"), rgb)
    np.testing.assert_array_equal(load_image(tmp_path / "rgba.png"), rgb)


def test_png_16_bit_keeps_values(tmp_path):
    image = (np.arange(12 * 16, dtype=np.uint16).reshape(12, 16) * 300)
    Image.fromarray(image).save(tmp_path / "deep.png")
    np.testing.assert_array_equal(load_image(tmp_path / "deep.png"), image)


@pytest.mark.parametrize("extension", [".jpg", ".jpeg"])
def test_jpeg_round_trip_is_close(tmp_path, extension):
    image = np.tile(np.linspace(0, 255, 32).astype(np.uint8), (16, 1))  # smooth: JPEG keeps it well
    Image.fromarray(image).save(tmp_path / f"a{extension}", quality=95)
    loaded = load_image(tmp_path / f"a{extension}")
    assert loaded.shape == (16, 32)
    assert np.abs(loaded.astype(int) - image).max() <= 8


def test_tif_single_page_squeezes_and_stack_stays_3d(tmp_path):
    page = labels_2d((9, 11))
    tifffile.imwrite(tmp_path / "page.tif", page[None])
    stack = np.stack([labels_2d((9, 11), seed=s) for s in range(4)])
    tifffile.imwrite(tmp_path / "stack.tif", stack, photometric="minisblack")
    np.testing.assert_array_equal(load_image(tmp_path / "page.tif"), page)
    np.testing.assert_array_equal(load_image(tmp_path / "stack.tif"), stack)


def test_load_image_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_image(tmp_path / "missing.png")
    (tmp_path / "a.bmp").write_bytes(b"BM")
    with pytest.raises(ValueError, match=r"unsupported extension '\.bmp'.*\.png"):
        load_image(tmp_path / "a.bmp")
    (tmp_path / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match="broken.png' could not be read"):
        load_image(tmp_path / "broken.png")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="objects.npy' holds Python objects, which SliceGAN Studio never loads"):
        load_image(tmp_path / "objects.npy")
    np.save(tmp_path / "two_channels.npy", np.zeros((48, 48, 48, 2), np.uint8))
    with pytest.raises(ValueError, match=r"shape \(48, 48, 48, 2\), two values per pixel"):
        load_image(tmp_path / "two_channels.npy")
    np.save(tmp_path / "five_d.npy", np.zeros((1, 2, 3, 4, 5), np.uint8))
    with pytest.raises(ValueError, match=r"has 5 dimensions \(shape \(1, 2, 3, 4, 5\)\)"):
        load_image(tmp_path / "five_d.npy")


def test_a_declared_size_beyond_memory_is_refused_before_reading(tmp_path, monkeypatch):
    import slicegan_core.data as data_module
    np.save(tmp_path / "stack.npy", np.zeros((64, 64, 64), np.uint16))
    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((64, 64, 64), np.uint8), compression="zlib")
    monkeypatch.setattr(data_module, "available_memory_bytes", lambda: 100_000)
    with pytest.raises(ValueError, match=r"declares a 64 x 64 x 64 uint16 array that needs 0.0 GiB to load"):
        load_image(tmp_path / "stack.npy")
    with pytest.raises(ValueError, match=r"stack.tif' declares a 64 x 64 x 64 uint8 array"):
        load_image(tmp_path / "stack.tif")
    monkeypatch.setattr(data_module, "available_memory_bytes", lambda: 10**9)
    assert load_image(tmp_path / "stack.npy").shape == (64, 64, 64)


def test_value_counts_matches_bincount():
    values = np.random.default_rng(0).integers(0, 7, size=(33, 40, 50)).astype(np.uint8)
    counts = value_counts(values, 3)
    np.testing.assert_array_equal(counts[:7], np.bincount(values.ravel()))
    assert counts.size == 256 and counts[7:].sum() == 0


# ----------------------------------------------------------------------------- sampling

def test_one_hot_matches_source_phases(tmp_path):
    image = labels_2d((8, 8), values=(0, 128, 255))  # image == patch, so the patch is the image
    data = load_one(tmp_path, image, patch_size=8)
    assert data.phase_values == (0, 128, 255) and data.n_channels == 3
    batch = data.sample(np.array([0, 0]), axis=1, rng=np.random.default_rng(0))
    assert batch.dtype == torch.float32 and batch.shape == (2, 3, 8, 8)
    assert torch.all(batch.sum(dim=1) == 1)
    assert set(torch.unique(batch).tolist()) == {0.0, 1.0}
    expected = np.searchsorted(data.phase_values, image)
    np.testing.assert_array_equal(batch.argmax(dim=1)[0].numpy(), expected)
    np.testing.assert_array_equal(batch.argmax(dim=1)[1].numpy(), expected)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_stack_patches_come_from_slices_perpendicular_to_axis(tmp_path, axis):
    shape = (12, 16, 20)
    coordinate = np.indices(shape)[axis]  # voxel value encodes its position along `axis`
    data = load_one(tmp_path, (coordinate * 10).astype(np.uint8), image_type="grayscale", patch_size=8)
    for sample_axis in range(3):
        batch = data.sample(np.zeros(400, dtype=int), sample_axis, np.random.default_rng(sample_axis))
        values = np.rint(batch.numpy()[:, 0] * 255 / 10).astype(int)
        constant = (values.min(axis=(1, 2)) == values.max(axis=(1, 2)))
        if sample_axis == axis:
            assert constant.all()  # each patch lies in one slice at a fixed position along `axis`
            assert set(values[:, 0, 0]) == set(range(shape[axis]))  # every slice can be drawn
        else:
            assert not constant.any()


def test_three_views_use_view_of_axis(tmp_path):
    views = [labels_2d((8, 8), values=(10 + 90 * k, 20 + 90 * k), seed=k) for k in range(3)]
    paths = tuple(save_npy(tmp_path, f"view{k}.npy", v) for k, v in enumerate(views))
    data = load_training_data([DatasetSpec(paths, {})], image_type="grayscale", patch_size=8)
    assert data.isotropic is False
    for axis in range(3):
        batch = data.sample(np.array([0]), axis, np.random.default_rng(0))
        np.testing.assert_allclose(batch[0, 0].numpy(), views[axis] / 255.0, atol=1e-6)


def test_single_2d_image_serves_every_axis(tmp_path):
    image = labels_2d((8, 8))
    data = load_one(tmp_path, image, patch_size=8)
    assert data.isotropic is True
    batches = [data.sample(np.array([0]), axis, np.random.default_rng(axis)) for axis in range(3)]
    assert torch.equal(batches[0], batches[1]) and torch.equal(batches[0], batches[2])


def test_sampling_is_deterministic_given_the_rng(tmp_path):
    data = load_one(tmp_path, labels_2d((64, 64)), patch_size=16)
    index = np.array([0, 0, 0, 0])
    first = data.sample(index, 0, np.random.default_rng(42))
    assert torch.equal(first, data.sample(index, 0, np.random.default_rng(42)))
    assert not torch.equal(first, data.sample(index, 0, np.random.default_rng(43)))


def test_augment_turns_each_patch_by_one_of_the_8_symmetries_of_the_square(tmp_path):
    image = np.arange(64, dtype=np.uint8).reshape(8, 8)          # every pixel distinct: each turn is visible
    data = load_one(tmp_path, image, image_type="grayscale", patch_size=8)
    symmetries = [np.rot90(image, k)[:, ::-1] if flip else np.rot90(image, k) for k in range(4) for flip in (0, 1)]
    index = np.zeros(200, dtype=int)
    plain = data.sample(index, 0, np.random.default_rng(5))
    turned = data.sample(index, 0, np.random.default_rng(5), augment=True)
    assert all(np.array_equal(np.rint(p[0].numpy() * 255), image) for p in plain)
    seen = {next(k for k, s in enumerate(symmetries) if np.array_equal(np.rint(p[0].numpy() * 255), s))
            for p in turned}
    assert seen == set(range(8))                                  # all 8, and nothing else
    # An anisotropic set (three views) keeps its directions.
    views = [labels_2d((8, 8), values=(10 + 90 * k, 20 + 90 * k), seed=k) for k in range(3)]
    paths = tuple(save_npy(tmp_path, f"view{k}.npy", v) for k, v in enumerate(views))
    anisotropic = load_training_data([DatasetSpec(paths, {})], image_type="grayscale", patch_size=8)
    batch = anisotropic.sample(np.array([0]), 1, np.random.default_rng(0), augment=True)
    np.testing.assert_allclose(batch[0, 0].numpy(), views[1] / 255.0, atol=1e-6)


def test_mirrored_edges_show_every_pixel_about_equally_often(tmp_path):
    # Over every position along an axis, "inside" patches cover a pixel at the edge once and one in the middle
    # `size` times; mirrored edges cover each size or size + 1 times.
    extent, size = 40, 16
    positions = mirrored_positions(extent, size)
    assert positions == extent - size + 1 + 2 * (size // 2)
    coverage = np.zeros(extent, int)
    for k in range(positions):
        np.add.at(coverage, mirrored_line(extent, size, (k + 0.5) / positions), 1)
    assert set(coverage.tolist()) == {size, size + 1}
    assert mirrored_line(extent, size, 0.0).tolist() == [7, 6, 5, 4, 3, 2, 1, 0, 0, 1, 2, 3, 4, 5, 6, 7]
    assert mirrored_line(extent, size, 0.9999).tolist() == list(range(32, 40)) + list(range(39, 31, -1))
    # Through sample: an image of distinct pixels, how often the corner pixel is seen against the centre's
    # (inside: in 1 of the positions against 8 x 8; mirrored: 9 x 9 against 8 x 8, i.e. 1.27).
    image = np.arange(256, dtype=np.uint8).reshape(16, 16)
    data = load_one(tmp_path, image, image_type="grayscale", patch_size=8)
    for edges, low, high in (("inside", 0.0, 0.05), ("mirror", 1.1, 1.45)):
        batch = data.sample(np.zeros(3000, int), 0, np.random.default_rng(1), edges=edges)
        counts = np.bincount(np.rint(batch.numpy().ravel() * 255).astype(int), minlength=256)
        assert low <= counts[0] / counts[8 * 16 + 8] <= high, (edges, counts[0], counts[8 * 16 + 8])
    with pytest.raises(ValueError, match='edges must be "inside" or "mirror"'):
        data.sample(np.array([0]), 0, np.random.default_rng(0), edges="wrap")
    from slicegan_core.config import TrainConfig
    with pytest.raises(ValueError, match="patch_edges"):
        TrainConfig(patch_edges="wrap")


def test_sample_picks_the_requested_datasets(tmp_path):
    a = save_npy(tmp_path, "a.npy", np.where(labels_2d((8, 8), (0, 1)) > 0, 200, 10).astype(np.uint8))
    b = save_npy(tmp_path, "b.npy", np.where(labels_2d((8, 8), (0, 1)) > 0, 100, 50).astype(np.uint8))
    data = load_training_data([DatasetSpec(a, {"alpha": 0.1}), DatasetSpec(b, {"alpha": 0.9})],
                              image_type="grayscale", patch_size=8)
    batch = data.sample(np.array([1, 0, 1]), 2, np.random.default_rng(0))
    levels = [set(np.rint(p.numpy().ravel() * 255).astype(int)) for p in batch[:, 0]]
    assert levels == [{50, 100}, {10, 200}, {50, 100}]


def test_sample_with_planes_gives_each_patch_its_two_neighbouring_slices(tmp_path):
    # slice z of the stack is phase z % 3 everywhere, so each plane's phase says which slice it came from
    stack = np.broadcast_to((np.arange(12) % 3).astype(np.uint8)[:, None, None], (12, 12, 12)).copy()
    data = load_one(tmp_path, stack, patch_size=8)
    batch = data.sample(np.zeros(50, int), 0, np.random.default_rng(0), augment=True, edges="mirror", planes=3)
    assert batch.shape == (50, 9, 8, 8)
    phases = batch.reshape(50, 3, 3, 8, 8).argmax(dim=2)            # (patch, plane, P, P)
    first = phases[:, 0, 0, 0]
    for plane in range(3):                                            # consecutive slices, in order, whole planes
        assert torch.equal(phases[:, plane], ((first + plane) % 3)[:, None, None].expand(-1, 8, 8))
    assert len(set(first.tolist())) == 3                              # positions vary
    # along another axis each plane is a cut across the slices: the same pattern, moved by one
    across = data.sample(np.zeros(5, int), 2, np.random.default_rng(1), planes=3).reshape(5, 3, 3, 8, 8)
    assert torch.equal(across[:, 0], across[:, 1]) and torch.equal(across[:, 1], across[:, 2])
    with pytest.raises(ValueError, match="3D stacks only"):
        load_one(tmp_path, labels_2d((16, 16)), patch_size=8, name="flat.npy").sample(
            np.array([0]), 0, np.random.default_rng(0), planes=3)
    with pytest.raises(ValueError, match="planes must be 1"):
        data.sample(np.array([0]), 0, np.random.default_rng(0), planes=2)


def test_sample_rejects_bad_arguments(tmp_path):
    data = load_one(tmp_path, labels_2d((16, 16)), patch_size=8)
    with pytest.raises(ValueError, match="axis must be 0, 1 or 2"):
        data.sample(np.array([0]), 3, np.random.default_rng(0))
    with pytest.raises(ValueError, match="1 datasets; use indices 0..0"):
        data.sample(np.array([1]), 0, np.random.default_rng(0))
    with pytest.raises(TypeError, match="numpy.random.Generator"):
        data.sample(np.array([0]), 0, 123)


def test_colour_samples_rgb_intensities(tmp_path):
    rgb = np.random.default_rng(2).integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    data = load_training_data([DatasetSpec(str(tmp_path / "c.png"), {})], image_type="colour",
                              patch_size=8)
    assert data.n_channels == 3 and data.phase_values == ()
    batch = data.sample(np.array([0]), 0, np.random.default_rng(0))
    assert batch.shape == (1, 3, 8, 8) and batch.is_contiguous()
    np.testing.assert_allclose(batch[0].permute(1, 2, 0).numpy(), rgb / 255.0, atol=1e-6)


# ----------------------------------------------------------------------------- memory and conversion

def test_sources_are_compact_uint8(tmp_path):
    volume = np.random.default_rng(0).integers(0, 3, size=(16, 20, 24)).astype(np.int64) * 7
    data = load_one(tmp_path, volume, patch_size=8)
    (stored,), = data.sources
    assert stored.dtype == np.uint8 and stored.shape == volume.shape
    np.testing.assert_array_equal(stored, volume // 7)  # phase INDEX, not the label value
    assert data.nbytes == volume.size  # one byte per voxel, no preallocated patches
    assert not stored.flags.writeable

    grey = load_one(tmp_path, np.random.default_rng(1).random((16, 16)), "grayscale", name="g.npy")
    assert grey.sources[0][0].dtype == np.uint8 and grey.nbytes == 16 * 16


def test_grayscale_rescaling_policy(tmp_path):
    unit = np.linspace(0, 1, 64, dtype=np.float64).reshape(8, 8)
    data = load_one(tmp_path, unit, "grayscale", name="unit.npy")
    np.testing.assert_array_equal(data.sources[0][0], np.rint(unit * 255).astype(np.uint8))

    # outside [0, 1] / 16-bit: one joint min..max over those files, so datasets keep their contrast
    low = save_npy(tmp_path, "low.npy", np.tile(np.array([0, 1000], np.uint16), (8, 4)))
    high = save_npy(tmp_path, "high.npy", np.tile(np.array([0, 2000], np.uint16), (8, 4)))
    data = load_training_data([DatasetSpec(low, {}), DatasetSpec(high, {})], "grayscale", 8)
    assert set(np.unique(data.sources[0][0])) == {0, 128}
    assert set(np.unique(data.sources[1][0])) == {0, 255}

    small_ints = load_one(tmp_path, np.tile(np.array([3, 90], np.int32), (8, 4)), "grayscale",
                          name="ints.npy")
    assert set(np.unique(small_ints.sources[0][0])) == {3, 90}


def test_grey_rgb_file_reads_as_labels(tmp_path):
    labels = labels_2d((8, 8), values=(0, 255))
    Image.fromarray(np.stack([labels] * 3, axis=-1)).save(tmp_path / "grey_rgb.png")
    data = load_training_data([DatasetSpec(str(tmp_path / "grey_rgb.png"), {})], patch_size=8)
    assert data.phase_values == (0, 255)


def test_colour_coded_labels_become_phases(tmp_path):
    colours = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], np.uint8)
    index = labels_2d((8, 8))
    Image.fromarray(colours[index]).save(tmp_path / "seg.png")
    data = load_training_data([DatasetSpec(str(tmp_path / "seg.png"), {})], patch_size=8)
    assert data.phase_values == (0x0000FF, 0x00FF00, 0xFF0000)
    batch = data.sample(np.array([0]), 0, np.random.default_rng(0))
    np.testing.assert_array_equal(batch[0].argmax(dim=0).numpy(), 2 - index)


def test_attributes_phase_fractions_and_describe(tmp_path):
    a = save_npy(tmp_path, "a.npy", np.repeat(np.array([[0, 0, 0, 1]], np.uint8), 8, axis=0).repeat(2, 1))
    b = save_npy(tmp_path, "b.npy", np.repeat(np.array([[0, 1, 1, 1]], np.uint8), 8, axis=0).repeat(2, 1))
    data = load_training_data([DatasetSpec((a,), {"beta": 2, "alpha": 0.25}),
                               DatasetSpec((b,), {"alpha": 0.75, "beta": 3.0})], patch_size=8)
    assert len(data) == 2 and data.attribute_names == ("alpha", "beta")
    assert data.attrs.dtype == np.float32
    np.testing.assert_array_equal(data.attrs, [[0.25, 2.0], [0.75, 3.0]])
    assert data.phase_fractions() == [{0: 0.75, 1: 0.25}, {0: 0.25, 1: 0.75}]
    summary = json.loads(json.dumps(data.describe()))
    assert summary["image_type"] == "n-phase" and summary["phase_values"] == [0, 1]
    assert summary["datasets"][1] == {"paths": ["b.npy"], "kind": "image", "shapes": [[8, 8]],
                                      "attrs": {"alpha": 0.75, "beta": 3.0},
                                      "phase_fractions": {"0": 0.25, "1": 0.75}}


def test_real_composite_micrograph_loads_as_three_phases():
    spec = DatasetSpec((str(FIXTURES / "composite_3phase_256.npy"),), {"alpha": 0.5})
    data = load_training_data([spec], "n-phase", patch_size=64)
    assert isinstance(data, TrainingData)
    assert data.phase_values == (0, 1, 2) and data.n_channels == 3
    fractions = data.phase_fractions()[0]
    assert fractions[0] == pytest.approx(0.562, abs=1e-3)
    assert fractions[1] == pytest.approx(0.269, abs=1e-3)
    assert fractions[2] == pytest.approx(0.169, abs=1e-3)
    batch = data.sample(np.zeros(4, dtype=int), 0, np.random.default_rng(0))
    assert batch.shape == (4, 3, 64, 64) and torch.all(batch.sum(dim=1) == 1)


# ----------------------------------------------------------------------------- validation messages

def test_unknown_image_type_lists_valid_ones(tmp_path):
    with pytest.raises(ValueError, match="'rgb' is not known; choose one of 'n-phase', 'grayscale', 'colour'"):
        load_one(tmp_path, labels_2d(), image_type="rgb")
    assert IMAGE_TYPES == ("n-phase", "grayscale", "colour")


def test_too_small_for_patch_size(tmp_path):
    with pytest.raises(ValueError, match=r"'small.npy' is 40 x 50 pixels, smaller than the patch size "
                                         r"64; choose a patch size of at most 40 or a bigger image"):
        load_one(tmp_path, labels_2d((40, 50)), patch_size=64, name="small.npy")
    with pytest.raises(ValueError, match=r"'thin.npy' is 70 x 70 x 20 voxels"):
        load_one(tmp_path, labels_2d((70, 70, 20)), patch_size=64, name="thin.npy")


def test_wrong_number_of_dimensions(tmp_path):
    with pytest.raises(ValueError, match=r"four.npy' has 4 dimensions.*give a 2D image"):
        load_one(tmp_path, labels_2d((2, 9, 9, 9)), name="four.npy")
    with pytest.raises(ValueError, match=r"'line.npy' has 1 dimension \(shape"):
        load_one(tmp_path, labels_2d((30,)), name="line.npy")
    flat = save_npy(tmp_path, "flat.npy", labels_2d((9, 9)))
    stack = save_npy(tmp_path, "stack.npy", labels_2d((9, 9, 9)))
    with pytest.raises(ValueError, match=r"gives three views, but 'stack.npy' has shape \(9, 9, 9\)"):
        load_training_data([DatasetSpec((flat, flat, stack), {})], patch_size=8)
    with pytest.raises(ValueError, match="has 2 paths; give one path"):
        load_training_data([DatasetSpec((flat, flat), {})], patch_size=8)


def test_nan_empty_and_constant_data(tmp_path):
    with_nan = np.random.default_rng(0).random((16, 16))
    with_nan[3, 4] = np.nan
    with pytest.raises(ValueError, match="'nan.npy' contains NaN"):
        load_one(tmp_path, with_nan, "grayscale", name="nan.npy")
    with pytest.raises(ValueError, match="'empty.npy' is empty"):
        load_one(tmp_path, np.zeros((0, 16), np.uint8), name="empty.npy")
    with pytest.raises(ValueError, match=r"'flat.npy' has only one value \(7\)"):
        load_one(tmp_path, np.full((16, 16), 7, np.uint8), name="flat.npy")
    with pytest.raises(ValueError, match="has only one value"):
        load_one(tmp_path, np.full((16, 16), 0.5), "grayscale", name="flat_grey.npy")


def test_n_phase_with_many_values_suggests_grayscale(tmp_path):
    grey = np.arange(256, dtype=np.uint8).reshape(16, 16)
    with pytest.raises(ValueError, match="'grey.npy' has 256 distinct values.*looks like a grayscale image; "
                                         "choose image type 'grayscale' or segment it"):
        load_one(tmp_path, grey, name="grey.npy")
    load_one(tmp_path, grey, "grayscale", name="grey.npy")  # the suggested fix works


def test_n_phase_colour_photo_suggests_colour(tmp_path):
    photo = np.random.default_rng(0).integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="looks like a colour image; choose image type 'colour'"):
        load_one(tmp_path, photo, name="photo.npy")


def test_n_phase_non_integer_labels(tmp_path):
    with pytest.raises(ValueError, match="non-integer values such as 0.5"):
        load_one(tmp_path, labels_2d().astype(np.float32) / 2, name="halves.npy")


def test_colour_and_grayscale_type_mismatch(tmp_path):
    photo = np.random.default_rng(0).integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="'photo.npy' is a colour image; choose image type 'colour'"):
        load_one(tmp_path, photo, "grayscale", name="photo.npy")
    with pytest.raises(ValueError, match="'grey.npy' has no colour channels"):
        load_one(tmp_path, labels_2d(), "colour", name="grey.npy")


def test_phase_values_must_agree(tmp_path):
    a = save_npy(tmp_path, "a.npy", labels_2d(values=(0, 1, 2)))
    b = save_npy(tmp_path, "b.npy", labels_2d(values=(0, 128, 255)))
    with pytest.raises(ValueError, match=r"'a.npy' has \[0, 1, 2\] but 'b.npy' has \[0, 128, 255\]"):
        load_training_data([DatasetSpec(a, {}), DatasetSpec(b, {})], patch_size=8)


def test_attributes_must_match_and_be_finite(tmp_path):
    a = save_npy(tmp_path, "a.npy", labels_2d())
    b = save_npy(tmp_path, "b.npy", labels_2d(seed=1))
    with pytest.raises(ValueError, match="dataset 'b.npy' is missing attribute 'alpha'"):
        load_training_data([DatasetSpec(a, {"alpha": 0.3}), DatasetSpec(b, {"beta": 1.0, })], patch_size=8)
    with pytest.raises(ValueError, match="dataset 'a.npy' is missing attribute 'beta' that dataset 'b.npy'"):
        load_training_data([DatasetSpec(a, {"alpha": 0.3}),
                            DatasetSpec(b, {"alpha": 0.6, "beta": 1.0})], patch_size=8)
    with pytest.raises(ValueError, match="Attribute 'alpha' of dataset 'b.npy' is nan; give a finite"):
        load_training_data([DatasetSpec(a, {"alpha": 0.3}), DatasetSpec(b, {"alpha": float("nan")})],
                           patch_size=8)
