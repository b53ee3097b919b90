"""Scene building: exact visible voxel faces per phase, plotters, cut and patch pictures."""
import numpy as np
import pytest
import pyvista as pv

from slicegan_core import scene

PHASES = [{"value": 0, "name": "pore", "colour": "#0072B2"}, {"value": 1, "name": "metal", "colour": "#E69F00"},
          {"value": 3, "name": "oxide", "colour": "#009E73"}]
VALUES = [0, 1, 3]


def random_labels(shape=(7, 5, 6), seed=0):
    return np.random.default_rng(seed).choice(VALUES, size=shape).astype(np.uint8)


def reference_faces(volume, shown, crop=None):
    """Face centres of ImageData -> threshold(shown phases) -> extract_surface, per phase (the slow way)."""
    window = scene._check_crop(volume.shape, crop)
    grid = pv.ImageData(dimensions=np.array(volume.shape[::-1]) + 1)
    grid.cell_data["phase"] = volume.ravel()
    inside = np.zeros(volume.shape, np.uint8)
    inside[window] = np.isin(volume[window], shown)
    grid.cell_data["shown"] = inside.ravel()
    surface = grid.threshold((0.5, 1.5), scalars="shown").extract_surface(algorithm="dataset_surface")
    centres = surface.cell_centers().points
    return {v: sorted(map(tuple, np.round(centres[surface.cell_data["phase"] == v], 3))) for v in shown}


@pytest.mark.parametrize("shown, crop", [(VALUES, None), ([0, 3], None), ([1], {2: (1, 4)}),
                                         (VALUES, {0: (2, 2), 1: (0, 3)})])
def test_visible_faces_are_the_threshold_surface(shown, crop):
    volume = random_labels()
    single = scene.phase_surfaces(volume, VALUES, shown=shown, crop=crop, merge=False)
    merged = scene.phase_surfaces(volume, VALUES, shown=shown, crop=crop)
    expected = reference_faces(volume, shown, crop)
    for value in shown:
        got = sorted(map(tuple, np.round(single[value].cell_centers().points, 3))) if single[value].n_cells else []
        assert got == expected[value]
        assert merged[value].n_cells <= single[value].n_cells     # merged runs cover exactly the same faces
        assert (merged[value].area if merged[value].n_cells else 0) == pytest.approx(len(expected[value]))


def test_uniform_block_shows_only_its_box():
    volume = np.zeros((2, 3, 4), np.uint8)
    faces = scene.visible_faces(volume, [0, 1], merge=False)
    assert len(faces[0]) == 2 * (2 * 3 + 2 * 4 + 3 * 4) and len(faces[1]) == 0
    assert len(scene.visible_faces(volume, [0, 1])[0]) == 2 * (2 + 2 + 3)   # one strip per row of each side
    mesh = scene.phase_surfaces(volume, [0], voxel_size_um=0.5)[0]
    assert mesh.bounds == pytest.approx((0, 2.0, 0, 1.5, 0, 1.0))     # x = W, y = H, z = D, in micrometres
    assert mesh.area == pytest.approx(2 * (1.0 * 1.5 + 1.0 * 2.0 + 1.5 * 2.0))


def test_hidden_phase_exposes_the_interface():
    volume = np.zeros((4, 4, 4), np.uint8)
    volume[:, :, 2:] = 1                                   # two slabs meeting at x = 2
    both = scene.visible_faces(volume, [0, 1], merge=False)
    only_zero = scene.visible_faces(volume, [0, 1], shown=[0], merge=False)
    assert len(both[0]) == len(only_zero[0]) - 16          # the 4 x 4 interface appears when phase 1 hides
    assert list(only_zero) == [0]
    assert all(len(f) == 0 for f in scene.visible_faces(volume, [0, 1], shown=[]).values())


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="crop along x"):
        scene.visible_faces(random_labels(), VALUES, crop={2: (3, 9)})
    with pytest.raises(ValueError, match="crop keys"):
        scene.visible_faces(random_labels(), VALUES, crop={3: (0, 1)})
    with pytest.raises(ValueError, match=r"\(D, H, W\) integer label array"):
        scene.visible_faces(np.zeros((4, 4)), VALUES)
    with pytest.raises(ValueError, match="#RRGGBB"):
        scene.hex_to_rgb("orange")


def test_plotter_has_one_coloured_mesh_per_shown_phase_and_an_outline():
    plotter = scene.volume_plotter(random_labels(), PHASES, shown=[0, 3], voxel_size_um=2.0)
    names = set(plotter.renderer.actors)
    assert {"pore", "oxide"} <= names and "metal" not in names
    colour = plotter.renderer.actors["oxide"].prop.color
    assert tuple(round(c * 255) for c in colour)[:3] == (0, 158, 115)
    plain = scene.volume_plotter(random_labels(), PHASES, shown=[0, 3], voxel_size_um=2.0, axes=False)
    assert plain.bounds[1] == pytest.approx(6 * 2.0)       # W = 6 voxels of 2 micrometres (the triad lies beyond)
    plain.close()
    plotter.close()


def test_cut_image_orientation_colours_and_size():
    volume = np.zeros((4, 6, 8), np.uint8)
    volume[1, 0, 7] = 1          # z = 1, y = 0, x = 7
    image = scene.cut_image(volume, PHASES, axis=0, index=1, min_pixels=12)
    assert image.shape == (12, 16, 3)                       # 6 x 8 enlarged by 2
    assert tuple(image[-1, -1]) == (230, 159, 0)            # y = 0 is the bottom row, x = 7 the last column
    assert tuple(image[0, 0]) == (0, 114, 178)
    side = scene.cut_image(volume, PHASES, axis=2, index=7, min_pixels=1)
    assert side.shape == (4, 6, 3) and tuple(side[-2, 0]) == (230, 159, 0)   # rows z (up), columns y
    volume[0, 0, 0] = 9                                     # a value that is not a phase is grey
    assert tuple(scene.cut_image(volume, PHASES, 0, 0, min_pixels=1)[-1, 0]) == (128, 128, 128)
    with pytest.raises(ValueError, match="index must be in"):
        scene.cut_image(volume, PHASES, axis=0, index=4)


def test_patch_image_from_one_hot_and_intensities():
    one_hot = np.zeros((3, 4, 4), np.float32)
    one_hot[2] = 1
    one_hot[:, 0, 0] = [1, 0, 0]
    image = scene.patch_image(one_hot, "n-phase", min_pixels=8)
    assert image.shape == (8, 8, 3) and tuple(image[0, 0]) == (0, 114, 178) and tuple(image[-1, -1]) == (0, 158, 115)
    grey = scene.patch_image(np.full((1, 4, 4), 0.5, np.float32), "grayscale", min_pixels=4)
    assert grey.shape == (4, 4, 3) and set(grey.ravel()) == {128}
    with pytest.raises(ValueError, match="image_type"):
        scene.patch_image(one_hot, "hyperspectral")


def scene_arrays(plotter) -> set[str]:
    """Content hashes of the data arrays in the plotter's vtk.js web export (what the app's 3D view shows)."""
    import base64
    import io
    import json
    import re
    import zipfile

    html = plotter.trame.export_html(None).getvalue()
    packed = re.search(r'const base64Str = "([^"]+)"', html).group(1)
    return set(json.loads(zipfile.ZipFile(io.BytesIO(base64.b64decode(packed))).read("index.json"))["hashes"])


def test_the_axes_triad_sits_outside_the_volume_and_reaches_the_web_export():
    assert scene.triad_length((64, 64, 64)) == 20 and scene.triad_length((32, 48, 64), voxel_size_um=0.5) == 10
    assert scene.triad_length((7, 5, 6)) == 2 and scene.triad_length((128,) * 3, voxel_size_um=0.37) == 10
    volume = random_labels()                                             # W = 6 voxels of 2 um: arrows of 2 um
    plotter = scene.volume_plotter(volume, PHASES, voxel_size_um=2.0)
    actors = plotter.renderer.actors
    for axis, name in enumerate("xyz"):
        low, high = np.reshape(actors[f"axis {name} arrow"].GetBounds(), (3, 2)).T
        assert high[axis] - low[axis] == pytest.approx(2.0)              # the arrow's length, along its axis
        assert low[0] > 6 * 2.0                                          # beyond x = W: no voxel hides it
        assert actors[f"axis {name}"].GetMapper().GetInput().n_cells > 0  # the letter x, y or z
    plain = scene.volume_plotter(volume, PHASES, voxel_size_um=2.0, axes=False)
    assert not [n for n in plain.renderer.actors if n.startswith("axis")]
    assert len(scene_arrays(plotter) - scene_arrays(plain)) >= 6          # arrows and letters are exported geometry
    plotter.close()
    plain.close()
