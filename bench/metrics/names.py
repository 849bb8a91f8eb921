"""Metric names exactly as they appear in the ``metric`` column of the tidy table."""

SHARPNESS = "sharpness"  # mean Laplacian variance of generated samples at temperature 1
SHARPNESS_STD = "sharpness_std"  # std over images of the same per-image values
SHARPNESS_T05 = "sharpness_t05"  # sharpness at the second temperature (eval.second_temperature)
SHARPNESS_GAP = "sharpness_gap"  # |sharpness - sharpness of the real test images|
ARTEFACT_CORNER = "artefact_corner"  # Laplacian energy in the image corners (black in real digits)
RECON_MSE = "recon_mse"  # per pixel
RECON_SSE = "recon_sse"  # per image
RECON_MSE_MEAN_IMAGE = "recon_mse_mean_image"  # real rows: test images vs the mean training image
RECON_MSE_CLASS_MEAN = "recon_mse_class_mean_image"  # real rows: vs the mean training image of the class
BITS_PER_DIM = "bits_per_dim"
CLASSIFIER_ACCURACY = "classifier_accuracy"  # test accuracy of the LeNet feature extractor
FD_LENET = "fd_lenet"
KID_LENET = "kid_lenet"
PRECISION = "precision"
RECALL = "recall"
PROBE_ACCURACY = "probe_accuracy"
# Class separation of the test codes beside the probe (C5): silhouette by label, k-NN vote of training codes
LATENT_SILHOUETTE = "latent_silhouette"
KNN_ACCURACY = "knn_accuracy"
# The LeNet's confidence on samples (C4, "more accurate images"): mean max-softmax, share above a threshold
SAMPLE_CONFIDENCE = "sample_confidence"
CONFIDENT_FRACTION = "confident_fraction"
CONFIDENCE_METRICS = (SAMPLE_CONFIDENCE, CONFIDENT_FRACTION)
# The same four at the second temperature (Fig. 7c: are samples from N(0, 0.5) "more accurate"?)
FEATURE_METRICS_T05 = tuple(f"{m}_t05" for m in (FD_LENET, KID_LENET, PRECISION, RECALL))
CONFIDENCE_METRICS_T05 = tuple(f"{m}_t05" for m in CONFIDENCE_METRICS)
N_SAMPLES = "n_samples"  # bookkeeping rows: how many images each metric saw
N_TEST = "n_test"
N_BPD = "n_bpd"
# The runner's rows beside the evaluation (bench.runner): how long, how many epochs, the last losses
TRAIN_SECONDS = "train_seconds"
EPOCHS_TRAINED = "epochs_trained"  # a run trained until converged
CONVERGED_EPOCH = "converged_epoch"  # the first epoch at which the convergence rule held (NaN: it did not)
EVAL_SECONDS = "eval_seconds"
EVAL_MODEL_SECONDS = "eval_model_seconds"
FINAL_PREFIX = "final_"  # final_<part>: each loss part, mean over the last epoch
VAL_LOSS = "loss"  # split val: the training loss on the held-out validation images
FINAL_LOSS = FINAL_PREFIX + VAL_LOSS
DIAG_PREFIX = "diag_"  # a model's own diagnostics (models/contract.py), one row per name

SAMPLE_METRICS = (SHARPNESS, SHARPNESS_STD, SHARPNESS_T05, SHARPNESS_GAP, ARTEFACT_CORNER, FD_LENET, KID_LENET,
                  PRECISION, RECALL, *CONFIDENCE_METRICS, *FEATURE_METRICS_T05, *CONFIDENCE_METRICS_T05)
MODEL_METRICS = (
    *SAMPLE_METRICS, RECON_MSE, RECON_SSE, BITS_PER_DIM, CLASSIFIER_ACCURACY, PROBE_ACCURACY,
    LATENT_SILHOUETTE, KNN_ACCURACY, N_SAMPLES, N_TEST, N_BPD,
)
REAL_METRICS = (SHARPNESS, SHARPNESS_STD, ARTEFACT_CORNER, FD_LENET, KID_LENET, PRECISION, RECALL, *CONFIDENCE_METRICS,
                CLASSIFIER_ACCURACY, RECON_MSE_MEAN_IMAGE, RECON_MSE_CLASS_MEAN, N_SAMPLES, N_TEST)
