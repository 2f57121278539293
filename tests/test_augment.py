"""Cutout and test-time augmentation (stages/augment.py)."""

import numpy as np

from classic_cnns.evaluation.tta import predict, tta_views
from classic_cnns.params import load_params
from classic_cnns.training.augment import epoch_data, shift
from tests.projects import ROOT


def alexnet(**changes):
    return load_params(ROOT / "params.yaml").model("alexnet").replace(**changes)


def test_cutout_blanks_one_clipped_square_per_image_and_nothing_else():
    x = np.random.default_rng(0).integers(1, 255, (300, 32, 32, 3), dtype=np.uint8)
    cfg = alexnet(augment_crop_padding=4, augment_flip=True, augment_cutout=8)
    cut, order = epoch_data(x, np.arange(300), cfg, 7, 2)
    plain, order_plain = epoch_data(x, np.arange(300), cfg.replace(augment_cutout=0), 7, 2)
    np.testing.assert_array_equal(order, order_plain)  # cutout draws after the crops and flips
    fill = np.round(plain.reshape(-1, 3).mean(axis=0))
    changed = (cut != plain).any(axis=-1)
    areas = changed.sum(axis=(1, 2))
    assert areas.max() == 64 and areas.min() >= 16  # 8x8, clipped at most to its centre quadrant
    for img in range(300):
        rows, cols = np.nonzero(changed[img])
        # one axis-aligned rectangle, filled with the mean pixel
        assert changed[img, rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].all()
        np.testing.assert_array_equal(cut[img][changed[img]], np.broadcast_to(fill, (len(rows), 3)))
    again, _ = epoch_data(x, np.arange(300), cfg, 7, 2)
    np.testing.assert_array_equal(cut, again)


def test_test_views_follow_the_training_augmentation():
    assert tta_views(alexnet(), False) == [(0, 0, False)]
    views = tta_views(alexnet(augment_crop_padding=4, augment_flip=True), True)
    assert len(views) == 10 and len(set(views)) == 10  # AlexNet's: centre + 4 corners, each mirrored
    assert {(dy, dx) for dy, dx, _ in views} == {(0, 0), (-2, -2), (-2, 2), (2, -2), (2, 2)}
    assert len(tta_views(alexnet(augment_crop_padding=2, augment_flip=False), True)) == 5
    assert tta_views(alexnet(augment_crop_padding=0, augment_flip=True), True) == [(0, 0, False), (0, 0, True)]


class RecordingModel:
    """Stands in for a Keras model: 'probabilities' that depend on the pixels it is shown."""

    def __init__(self):
        self.seen = []

    def predict(self, x, batch_size, verbose, callbacks=()):
        self.seen.append(x.copy())
        left, right = x[:, :, :16].mean(axis=(1, 2, 3)), x[:, :, 16:].mean(axis=(1, 2, 3))
        return np.stack([left, right], axis=1) / (left + right)[:, None]


def test_predict_averages_the_views():
    x = np.random.default_rng(1).integers(0, 255, (6, 32, 32, 3)).astype(np.float32)
    views = tta_views(alexnet(augment_crop_padding=4, augment_flip=True), True)
    model = RecordingModel()
    probs = predict(model, x, views, batch_size=4)
    assert len(model.seen) == 10
    np.testing.assert_array_equal(model.seen[0], x)  # the centre view is the image itself
    np.testing.assert_array_equal(model.seen[1], x[:, :, ::-1])
    np.testing.assert_array_equal(model.seen[2], shift(x, 2, 0, 0))  # up-left corner: 2 px of zero padding
    assert (model.seen[2][:, :2] == 0).all() and (model.seen[2][:, 2:, 2:] == x[:, :-2, :-2]).all()
    expected = np.mean([RecordingModel().predict(v, 4, 0) for v in model.seen], axis=0)
    np.testing.assert_allclose(probs, expected, rtol=1e-6)
    reused = RecordingModel()  # the centre view's probabilities, already computed, are not predicted again
    np.testing.assert_array_equal(predict(reused, x, views, 4, centre=RecordingModel().predict(x, 4, 0)), probs)
    assert len(reused.seen) == 9 and not any(np.array_equal(v, x) for v in reused.seen)
    single = RecordingModel()
    np.testing.assert_array_equal(predict(single, x, [(0, 0, False)], 4), RecordingModel().predict(x, 4, 0))
    assert len(single.seen) == 1
    np.testing.assert_array_equal(predict(single, x, [(0, 0, False)], 4, centre=probs), probs)
    assert len(single.seen) == 1
