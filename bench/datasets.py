"""The datasets the harness knows: one table, everything dataset-specific in one place.

A dataset is chosen by ``data.dataset`` (``--dataset NAME`` or ``--set data.dataset=NAME``).
Each entry names its four IDX files with two ways to verify them: the md5 of the ``.gz`` file
as torchvision lists it (fast; the files torchvision downloads) and the sha256 of the
decompressed contents (for copies recompressed elsewhere, e.g. Debian's Fashion-MNIST), so a
file passes if either matches. ``bench.data`` reads this table; nothing else names a dataset.
"""

from __future__ import annotations

from dataclasses import dataclass

TRAIN_IMAGES = "train-images-idx3-ubyte.gz"
TRAIN_LABELS = "train-labels-idx1-ubyte.gz"
TEST_IMAGES = "t10k-images-idx3-ubyte.gz"
TEST_LABELS = "t10k-labels-idx1-ubyte.gz"


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset of 28 × 28 grey images in the IDX format (LeCun et al. 1998)."""

    name: str  # the value of data.dataset, the tidy table's `dataset` column
    title: str  # for tables and figure captions
    item: str  # what one image shows ("digit", "garment"): axis labels, legends
    gz_md5: dict[str, str]  # file name -> md5 of the .gz file (torchvision's `resources` list)
    content_sha256: dict[str, str]  # file name -> sha256 of the decompressed file
    class_names: tuple[str, ...]
    mean: float  # pixel mean / std in [0, 1] over the training images: the classifier's input normalisation
    std: float
    min_classifier_accuracy: float  # the harness's LeNet reaches at least this on the test images (tested)
    torchvision_class: str  # torchvision.datasets.<name> downloads the files into ROOT/<name>/raw
    root_env: str  # environment variable naming the folder of the files
    default_root: str  # else this folder
    image_shape: tuple[int, int, int] = (1, 28, 28)
    n_train: int = 60000  # the standard train / test split
    n_test: int = 10000

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def files(self) -> tuple[str, ...]:
        return (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)


DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        name="mnist", title="MNIST", item="digit",
        gz_md5={
            TRAIN_IMAGES: "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            TRAIN_LABELS: "d53e105ee54ea40749a09fcbcd1e9432",
            TEST_IMAGES: "9fb629c4189551a2d022fa330f9573f3",
            TEST_LABELS: "ec29112dd5afa0611ce80d1b7f02629c",
        },
        content_sha256={
            TRAIN_IMAGES: "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            TRAIN_LABELS: "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            TEST_IMAGES: "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            TEST_LABELS: "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
        class_names=tuple(str(k) for k in range(10)),
        mean=0.1307, std=0.3081,
        min_classifier_accuracy=0.99,
        torchvision_class="MNIST", root_env="MNIST_ROOT", default_root="./data",
    ),
    "fashion-mnist": DatasetSpec(  # Xiao, Rasul & Vollgraf 2017
        name="fashion-mnist", title="Fashion-MNIST", item="garment",
        gz_md5={
            TRAIN_IMAGES: "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            TRAIN_LABELS: "25c81989df183df01b3e8a0aad5dffbe",
            TEST_IMAGES: "bef4ecab320f06d8554ea6380940ec79",
            TEST_LABELS: "bb300cfdad3c16e7a12a480ee83cd310",
        },
        content_sha256={
            TRAIN_IMAGES: "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            TRAIN_LABELS: "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            TEST_IMAGES: "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            TEST_LABELS: "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
        class_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                     "Ankle boot"),
        mean=0.2860, std=0.3530,
        min_classifier_accuracy=0.90,
        torchvision_class="FashionMNIST", root_env="FASHION_MNIST_ROOT", default_root="./data/fashion-mnist",
    ),
}


def get_dataset(name: str) -> DatasetSpec:
    from bench.errors import UserError

    if name not in DATASETS:
        raise UserError(f"unknown dataset '{name}'; valid: {', '.join(DATASETS)}")
    return DATASETS[name]
