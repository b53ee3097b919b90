"""Diagnosis (not a product step): how much of the watershed-ESD sigma gap do phase islands explain?

    python bench/island_diagnosis.py MODEL_DIR [THREADS]

For alpha 0.15 / 0.35 / 0.6: sigma of ln(ESD) per phase of the recipe's truth and of one generated 128^3
volume (seed 0), each as is and with every face-connected island under 20 voxels reassigned to the nearest
other phase (scipy.ndimage label + distance transform). Numbers quoted in docs/default-model.md.
"""
import sys, warnings, numpy as np, torch
sys.path.insert(0, '.')
from scipy import ndimage
from slicegan_core import load_model
from slicegan_core.metrics.features import feature_sizes
torch.set_num_threads(int(sys.argv[2]) if len(sys.argv) > 2 else 1)

def without_islands(v, below=20):
    small = np.zeros(v.shape, bool)
    for ph in range(3):
        lab, _ = ndimage.label(v == ph)
        sizes = np.bincount(lab.ravel()); sizes[0] = 1 << 40
        small |= sizes[lab] < below
    _, idx = ndimage.distance_transform_edt(small, return_indices=True)
    return v[tuple(idx)]

def sig(v):
    out = []
    for ph in range(3):
        d = feature_sizes(v, phases=[ph])[ph].diameters
        out.append(np.log(d).std())
    return np.round(out, 3)

m = load_model(sys.argv[1])
for alpha in (0.15, 0.35, 0.6):
    t = np.load(f"runs/default_data/synthetic_sigma{alpha:g}.npy")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        v = m.generate({"alpha": alpha}, seed=0, shape=(128,) * 3)
    print(alpha, "truth", sig(t), "truth cleaned", sig(without_islands(t)), "gen", sig(v), "gen cleaned", sig(without_islands(v)), flush=True)
