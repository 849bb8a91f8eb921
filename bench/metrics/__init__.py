"""Pure metric functions (tensors in, floats out; no file I/O, no model building).

Implements: Laplacian-variance sharpness (WAE reference code; PIE paper Table 1), its
artefact check (Laplacian energy in the image corners),
bits/dim of dequantised images (Theis et al. 2016), the Fréchet distance
(Heusel et al. 2017), KID (Bińkowski et al. 2018), k-NN precision/recall
(Kynkäänniemi et al. 2019), a linear probe (Alain & Bengio 2017), the silhouette
(Rousseeuw 1987) and k-NN accuracy of latent codes, and a classifier's confidence on samples. The names of the
metrics as written to the table are the constants of :mod:`bench.metrics.names`.
"""

from bench.metrics.artefact import CORNER, corner_artefact, corner_laplacian_energy
from bench.metrics.classification import accuracy, linear_probe_accuracy
from bench.metrics.confidence import sample_confidence
from bench.metrics.frechet import feature_stats, frechet_distance, frechet_distance_from_stats
from bench.metrics.kid import kernel_distance, polynomial_mmd2
from bench.metrics.likelihood import bits_per_dim
from bench.metrics.names import (
    ARTEFACT_CORNER,
    BITS_PER_DIM,
    CLASSIFIER_ACCURACY,
    CONFIDENCE_METRICS,
    CONFIDENCE_METRICS_T05,
    CONFIDENT_FRACTION,
    FD_LENET,
    FEATURE_METRICS_T05,
    KID_LENET,
    KNN_ACCURACY,
    LATENT_SILHOUETTE,
    MODEL_METRICS,
    N_BPD,
    N_SAMPLES,
    N_TEST,
    PRECISION,
    PROBE_ACCURACY,
    REAL_METRICS,
    RECALL,
    RECON_MSE,
    RECON_MSE_CLASS_MEAN,
    RECON_MSE_MEAN_IMAGE,
    RECON_SSE,
    SAMPLE_CONFIDENCE,
    SAMPLE_METRICS,
    SHARPNESS,
    SHARPNESS_GAP,
    SHARPNESS_STD,
    SHARPNESS_T05,
)
from bench.metrics.precision_recall import knn_radii, precision_recall
from bench.metrics.reconstruction import reconstruction_errors
from bench.metrics.separation import knn_accuracy, latent_silhouette
from bench.metrics.sharpness import LAPLACE_KERNEL, laplacian_response, laplacian_variance, sharpness, sharpness_stats

__all__ = [
    "ARTEFACT_CORNER", "CORNER", "corner_artefact", "corner_laplacian_energy",
    "BITS_PER_DIM", "CLASSIFIER_ACCURACY", "FD_LENET", "KID_LENET", "LAPLACE_KERNEL", "MODEL_METRICS", "N_BPD",
    "N_SAMPLES", "N_TEST", "PRECISION", "PROBE_ACCURACY", "REAL_METRICS", "RECALL", "RECON_MSE", "RECON_SSE",
    "RECON_MSE_CLASS_MEAN", "RECON_MSE_MEAN_IMAGE",
    "FEATURE_METRICS_T05", "SAMPLE_METRICS", "SHARPNESS", "SHARPNESS_GAP", "SHARPNESS_STD", "SHARPNESS_T05",
    "accuracy", "bits_per_dim", "feature_stats", "frechet_distance", "frechet_distance_from_stats",
    "kernel_distance", "knn_radii", "laplacian_response", "laplacian_variance", "linear_probe_accuracy",
    "polynomial_mmd2", "precision_recall", "reconstruction_errors", "sharpness", "sharpness_stats",
    "CONFIDENCE_METRICS", "CONFIDENCE_METRICS_T05", "CONFIDENT_FRACTION", "KNN_ACCURACY", "LATENT_SILHOUETTE",
    "SAMPLE_CONFIDENCE", "knn_accuracy", "latent_silhouette", "sample_confidence",
]
