"""scikit-learn's bundled 8×8 digits (1,797 images, 10 classes): tiny, offline, for fast tests."""

from __future__ import annotations

import numpy as np

from miascale.data.base import Dataset, stratified_split, validate


def load() -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # pixel values are 0..16; scale to 0..255 uint8 images so image backbones treat them like photos
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    y = bunch.target.astype(np.int64)
    tr, te = stratified_split(y, 0.2, seed=0)
    return validate(
        Dataset(
            name="digits",
            modality="image",
            x_train=images[tr],
            y_train=y[tr],
            x_test=images[te],
            y_test=y[te],
            class_names=tuple(str(i) for i in range(10)),
            source="sklearn.datasets.load_digits",
        )
    )
