"""Microstructure metrics of label images and volumes: pure functions, array in, dict/dataclass out.

Every function takes ``labels`` (an (H, W) image or (D, H, W) volume of integer phase values), an explicit
``phases`` (default: every value present) and, where lengths appear, ``voxel_size`` in micrometres
(lengths come back in micrometres; pass 1.0 to get voxels). Results are keyed by the phase value.

========================================  =========================================================
:func:`phase_fractions`                   volume (area) fraction of each phase
:func:`two_point_correlation`             S2(r), FFT, periodic or zero-padded; radial and per axis
:func:`chord_lengths`                     run lengths along each axis; border-cut chords counted
:func:`label_features`                    connected regions split by a distance watershed
:func:`feature_sizes`                     equivalent diameters (ESD 3D / ECD 2D) of the features
:func:`fit_lognormal`                     mu, sigma of ln(size) with a seeded bootstrap interval
:func:`size_spread`                       the field's ESD width: minimum feature size, then sigma and IQR sigma
:func:`compare_size_spread`               that width of generated vs truth, measured alike, with a verdict
:func:`interface_areas`                   area between every pair of phases (voxel faces)
:func:`specific_surface_area`             interface area per unit volume (faces or marching cubes)
:func:`tortuosity`                        TauFactor tortuosity factor (slow, on demand)
:func:`island_density`                    small single-phase islands (speckle) per million voxels
:func:`slice_island_density`              small 2D islands over every slice of a volume (critic's view)
:func:`tiled_island_density`              small 2D islands of an image counted in tiles of a given size
:func:`intensity_histogram`               grayscale / colour histograms
:func:`otsu_two_point_correlation`        S2 of the Otsu-thresholded bright phase
:func:`phase_statistics`                  all size statistics at once (used by evaluate)
:func:`log_bin_edges`                     log-spaced histogram bins between the discrete sizes a grid gives
:func:`log_ticks`                         1-2-5 ticks for a log axis, each labelled in full
========================================  =========================================================
"""
from .chords import ChordLengths, chord_lengths
from .correlation import TwoPointCorrelation, two_point_correlation
from .features import FeatureSizes, feature_sizes, label_features
from .fractions import phase_fractions
from .islands import island_density, slice_island_density, tiled_island_density
from .histogram import log_bin_edges, log_ticks
from .grayscale import IntensityHistogram, ThresholdCorrelation, intensity_histogram, otsu_two_point_correlation
from .lognormal import LogNormalFit, fit_lognormal
from .spread import DEFAULT_MIN_VOXELS, SizeSpread, SpreadComparison, compare_size_spread, size_spread
from .summary import PhaseStatistics, phase_statistics
from .surface import interface_areas, specific_surface_area
from .tortuosity import Tortuosity, tortuosity

__all__ = [
    "phase_fractions",
    "TwoPointCorrelation", "two_point_correlation",
    "ChordLengths", "chord_lengths",
    "FeatureSizes", "feature_sizes", "label_features",
    "LogNormalFit", "fit_lognormal",
    "DEFAULT_MIN_VOXELS", "SizeSpread", "SpreadComparison", "size_spread", "compare_size_spread",
    "interface_areas", "specific_surface_area",
    "Tortuosity", "tortuosity",
    "island_density", "slice_island_density", "tiled_island_density",
    "IntensityHistogram", "ThresholdCorrelation", "intensity_histogram", "otsu_two_point_correlation",
    "PhaseStatistics", "phase_statistics",
    "log_bin_edges", "log_ticks",
]
