"""Getting the images: download a source, check and split it into a prepared dataset, read it back."""

from catdog.data.download import (
    PETIMAGES_URL,
    check_kaggle_credentials,
    download,
    http_download,
    kaggle_credentials,
)
from catdog.data.balance import class_weights, is_imbalanced, objective
from catdog.data.identity import dataset_name, resolve_name
from catdog.data.images import ImageCheck, check_image
from catdog.data.prepare import prepare
from catdog.data.prepared import PreparedDataset, classes, is_prepared, load_manifest, read_summary
from catdog.data.resolve import latest_prepared, prepared_dir, resolve_data

__all__ = [
    "PETIMAGES_URL",
    "ImageCheck",
    "PreparedDataset",
    "check_image",
    "check_kaggle_credentials",
    "class_weights",
    "classes",
    "dataset_name",
    "download",
    "http_download",
    "is_imbalanced",
    "is_prepared",
    "kaggle_credentials",
    "latest_prepared",
    "load_manifest",
    "objective",
    "prepare",
    "prepared_dir",
    "read_summary",
    "resolve_data",
    "resolve_name",
]
