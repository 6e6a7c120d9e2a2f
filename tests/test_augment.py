import numpy as np
import pytest
import torch

from mnistlab import MnistlabError
from mnistlab.data.augment import PIXEL_FIELDS, TTA_VIEWS, Augment, tta_views

BG = -0.1307 / 0.3081


def _batch(n=16):
    x = torch.full((n, 1, 28, 28), BG)
    x[:, :, 8:20, 12:16] = 2.0  # a bar of ink
    return x


def test_identity_when_all_strengths_are_zero():
    x = _batch()
    torch.testing.assert_close(Augment()(x, seed=0, background=BG), x, atol=1e-5, rtol=0)


def test_seeded_and_different_per_image():
    aug = Augment(degrees=15, scale=0.1, translate=0.1, elastic=2.0)
    x = _batch()
    a, b = aug(x, seed=7, background=BG), aug(x, seed=7, background=BG)
    assert torch.equal(a, b)
    assert not torch.equal(a, aug(x, seed=8, background=BG))
    assert not torch.allclose(a[0], a[1])  # each image gets its own draw


def test_background_stays_background_and_ink_is_kept():
    x = _batch()
    out = Augment(degrees=10, translate=0.1)(x, seed=1, background=BG)
    corners = out[:, :, :2, :2]
    torch.testing.assert_close(corners, torch.full_like(corners, BG), atol=1e-5, rtol=0)
    ink_before = (x > 0).float().sum((1, 2, 3))
    ink_after = (out > 0).float().sum((1, 2, 3))
    assert ((ink_after - ink_before).abs() / ink_before).max() < 0.5


def test_translation_moves_the_centre_of_mass():
    x = _batch(64)
    out = Augment(translate=0.15)(x, seed=3, background=BG)
    cols = torch.arange(28.0)
    com = lambda t: ((t - BG).clamp(min=0).sum((1, 2)) * cols).sum(-1) / (t - BG).clamp(min=0).sum((1, 2, 3))  # noqa: E731
    shift = (com(out) - com(x)).abs()
    assert shift.max() > 2.0 and shift.max() < 0.15 * 28 + 1


def _digit_like(n=3):
    img = torch.zeros(n, 28, 28, dtype=torch.uint8)
    img[:, 6:22, 10:18] = 255  # a block of ink, symmetric left to right
    img[1, 6:9, 4:24] = 200  # and a bar across the top of one image
    return img


def views_of(img: torch.Tensor, name: str) -> list[torch.Tensor]:
    views = tta_views(img.numpy(), name)  # numpy in and out, as the inference interface uses them
    assert all(v.dtype == np.uint8 and v.shape == img.shape for v in views)
    return [torch.from_numpy(v) for v in views]


def test_tta_none_is_the_image_itself():
    img = _digit_like()
    views = views_of(img, "none")
    assert len(views) == 1 and torch.equal(views[0], img)


def test_tta_shift_moves_the_ink_by_whole_pixels():
    img = _digit_like()
    views = views_of(img, "shift")
    assert len(views) == len(TTA_VIEWS["shift"]) and torch.equal(views[0], img)
    right = torch.zeros_like(img)
    right[:, :, 1:] = img[:, :, :-1]
    down = torch.zeros_like(img)
    down[:, 1:] = img[:, :-1]
    assert torch.equal(views[1], right)  # (1, 0): one pixel to the right, exactly
    assert torch.equal(views[3], down)  # (0, 1): one pixel down


def test_tta_rotate_and_zoom_are_mirror_images_and_scale_the_ink():
    img = _digit_like()[:1]  # left-right symmetric
    _, plus, minus = views_of(img, "rotate")
    assert not torch.equal(plus, img) and plus.dtype == torch.uint8
    torch.testing.assert_close(plus.flip(-1).float(), minus.float(), atol=1, rtol=0)  # +6 degrees mirrors -6
    _, smaller, larger = views_of(img, "zoom")
    ink = lambda t: t.float().sum()  # noqa: E731
    assert ink(smaller) < ink(img) < ink(larger)


def test_unknown_tta_is_refused():
    with pytest.raises(MnistlabError, match="unknown test-time augmentation .mirror."):
        tta_views(_digit_like().numpy(), "mirror")


def test_flip_mirrors_crop_shifts_whole_pixels_erase_blanks_a_rectangle():
    x = torch.from_numpy(np.random.default_rng(0).random((64, 1, 28, 28), dtype=np.float32))
    flipped = Augment(flip=1.0)(x, seed=1)
    torch.testing.assert_close(flipped, x.flip(-1), atol=1e-5, rtol=0)  # one grid_sample: float rounding only
    shifted = Augment(crop=2)(x, seed=1)
    for img, out in zip(x, shifted):  # each image moved by whole pixels, at most 2 each way
        inner = out[0, 2:-2, 2:-2]
        assert any(torch.allclose(inner, img[0, 2 - dy:26 - dy, 2 - dx:26 - dx], atol=1e-5)
                   for dy in range(-2, 3) for dx in range(-2, 3))
    erased = Augment(erase=1.0)(x, seed=1, background=-5.0)
    share = (erased == -5.0).float().mean(dim=(1, 2, 3))
    assert ((share >= 0.015) & (share <= 0.40)).all()  # one rectangle of 2-33% of each image
    half = Augment(flip=0.5)(x, seed=3)
    mirrored = [torch.allclose(o, i.flip(-1), atol=1e-5) for o, i in zip(half, x)]
    assert 16 < sum(mirrored) < 48


def test_the_new_draws_come_after_the_digits_recipes_draws():
    x = torch.from_numpy(np.random.default_rng(1).random((32, 1, 28, 28), dtype=np.float32))
    digits = Augment(degrees=10, scale=0.1, translate=0.1)(x, seed=7)
    clothes = Augment(degrees=10, scale=0.1, translate=0.1, flip=0.5)(x, seed=7)
    same = [torch.equal(a, b) for a, b in zip(digits, clothes)]
    assert 0 < sum(same) < 32  # the unflipped images got exactly the digits' rotation, zoom and shift


def test_only_clothes_are_flipped():
    from mnistlab.data.mnist import DATASETS
    from mnistlab.training.config import DATASET_PRESETS, PRESETS, from_preset

    for dataset in DATASETS:
        for preset in PRESETS:
            if PRESETS[preset].get("outlier_exposure") and dataset != "mnist":  # its non-digits: letters, clothes
                with pytest.raises(MnistlabError, match="made for mnist's digits"):
                    from_preset(preset, dataset=dataset)
                continue
            augment = from_preset(preset, dataset=dataset).augment
            mirrored = bool(augment.get("flip"))
            assert mirrored == (dataset == "fashion-mnist" and preset in ("accurate", "best")), (dataset, preset)
    assert from_preset("fast", dataset="kmnist").model_config == PRESETS["fast"]["model_config"]
    assert from_preset("fast", dataset="fashion-mnist").model_config == DATASET_PRESETS["fashion-mnist"]["fast"][
        "model_config"]
    with pytest.raises(MnistlabError, match="crop is a whole number"):
        Augment(crop=1.5)


def test_tta_flip_mirrors_exactly():
    img = _digit_like()
    img[:, 20:26, 2:6] = 90  # ink at the left only
    same, mirrored = views_of(img, "flip")
    assert torch.equal(same, img) and torch.equal(mirrored, img.flip(-1)) and not torch.equal(mirrored, img)


# ---- pixel-level augmentation (issue 21): in ink units, 0 background and 1 full ink

def _ink_units(x):  # the bar batch in normalised units -> 0-1
    return (x - BG) / (INK - BG)


INK = (1 - 0.1307) / 0.3081


def _aug(x, **fields):
    return Augment(**fields)(x, seed=5, background=BG, ink=INK)


def test_pixel_steps_are_off_by_default_and_leave_earlier_draws_alone():
    x = _batch()
    assert not Augment().pixels and Augment(noise=0.1).pixels
    torch.testing.assert_close(Augment(degrees=10)(x, seed=4, background=BG, ink=INK),
                               Augment(degrees=10)(x, seed=4, background=BG), rtol=0, atol=0)
    # the pixel steps draw after the warp: the warp's own images are unchanged where the steps skip them
    warped = Augment(degrees=10, translate=0.1)(x, seed=4, background=BG, ink=INK)
    both = Augment(degrees=10, translate=0.1, invert=1.0, pixel_share=0.5)(x, seed=4, background=BG, ink=INK)
    same = [torch.equal(a, b) for a, b in zip(warped, both)]
    assert 0 < sum(same) < len(x)


def test_pixel_steps_are_seeded_and_differ_per_image():
    aug = Augment(lines=0.5, occlude=0.5, stroke=0.7, blur=1.0, level=0.5, gradient=0.5, contrast=0.8, noise=0.3,
                  invert=0.3)
    x = _batch()
    a, b = aug(x, seed=9, background=BG, ink=INK), aug(x, seed=9, background=BG, ink=INK)
    assert torch.equal(a, b) and not torch.equal(a, aug(x, seed=10, background=BG, ink=INK))
    assert not torch.allclose(a[0], a[1])
    u = _ink_units(a)
    assert u.min() >= -1e-5 and u.max() <= 1 + 1e-5  # still pixels: nothing below background or above full ink


def test_invert_maps_background_to_full_ink_and_ink_to_background():
    x = _batch()
    out = _ink_units(_aug(x, invert=1.0))
    torch.testing.assert_close(out, 1 - _ink_units(x).clamp(0, 1), atol=1e-5, rtol=0)
    half = _ink_units(_aug(_batch(64), invert=0.5))[:, 0, 0, 0]  # a corner: background unless inverted
    assert 16 < int((half > 0.99).sum()) < 48


def test_stroke_thickens_and_thins_the_ink():
    x = _batch(64)
    ink = _ink_units(x).sum((1, 2, 3))
    out = _ink_units(_aug(x, stroke=1.0)).sum((1, 2, 3))
    assert (out > ink * 1.2).any() and (out < ink * 0.8).any()  # some strokes thicker, some thinner
    assert (out <= _ink_units(torch.nn.functional.max_pool2d(x, 3, 1, 1)).sum((1, 2, 3)) + 1e-3).all()


def test_blur_spreads_the_ink_and_keeps_its_mass():
    x = _batch()
    out = _ink_units(_aug(x, blur=2.0))
    mass_in, mass_out = _ink_units(x).sum((1, 2, 3)), out.sum((1, 2, 3))
    torch.testing.assert_close(mass_out, mass_in, rtol=1e-3, atol=0)  # the bar lies well inside the image
    assert ((out > 0.01).sum((1, 2, 3)) > (_ink_units(x) > 0.01).sum((1, 2, 3))).any()
    assert (out.amax((1, 2, 3)) < 1).any()


def test_level_and_contrast_raise_the_background_and_keep_ink_above_it():
    x = _batch(64)
    out = _ink_units(_aug(x, level=0.6, contrast=0.8))
    ground, ink = out[:, 0, 0, 0], out[:, 0, 10, 13]
    assert ground.max() > 0.3 and ground.min() >= 0 and (ground <= 0.6 + 1e-5).all()
    assert (ink > ground).all() and (ink - ground).min() < 0.5  # contrast cut, polarity kept
    ramp = _ink_units(_aug(x, gradient=0.8))
    assert (ramp[:, 0, 0, 0] - ramp[:, 0, 27, 27]).abs().max() > 0.2  # the background is uneven


def test_noise_lines_and_occlusion_add_what_they_say():
    x = torch.full((64, 1, 28, 28), BG)  # blank images
    noisy = _ink_units(_aug(x, noise=0.5))
    assert noisy.max() <= 0.5 + 1e-5 and (noisy > 0.05).float().mean() > 0.1
    lined = _ink_units(_aug(x, lines=1.0))
    drawn = (lined > 0.4).sum((1, 2, 3))
    assert (drawn >= 1).all() and drawn.float().median() >= 15  # every image got a segment, most long ones
    blocked = _ink_units(_aug(x, occlude=1.0))
    share = (blocked != 0).float().mean((1, 2, 3))
    assert (share <= 0.26).all() and (share > 0.01).float().mean() > 0.9  # a block of 2-25% (a few are black)


def test_pixel_share_keeps_the_rest_clean():
    x = _batch(64)
    out = _aug(x, noise=0.5, pixel_share=0.25)
    clean = [torch.equal(a, b) for a, b in zip(out, x)]
    assert 32 < sum(clean) < 64


def test_pixel_fields_are_checked():
    with pytest.raises(MnistlabError, match="--augment invert must lie between 0 and 1"):
        Augment(invert=1.5)
    with pytest.raises(MnistlabError, match="--augment blur must lie between 0 and 3"):
        Augment(blur=-1)


def test_the_robust_recipes_validate():
    from mnistlab.training.config import PRESETS, from_preset

    for preset in ("robust", "robust-best"):
        cfg = from_preset(preset)
        assert Augment(**cfg.augment).pixels and cfg.val_size == 5000  # a validation split for the temperature
        assert from_preset(preset, calibrate="held-out").calibrate == "held-out"
        assert not Augment(**from_preset(preset.replace("robust", "fast") if preset == "robust" else "best").augment
                           ).pixels
    assert from_preset("robust").model_config == PRESETS["fast"]["model_config"]  # the fast preset's size
    with pytest.raises(MnistlabError, match="give --val-size"):
        from_preset("robust", val_size=0, calibrate="held-out")
    with pytest.raises(MnistlabError, match="--calibrate must be one of"):
        from_preset("robust", calibrate="test")


# ---- the kinds of MNIST-C's test corruptions, written anew (augment.MNIST_C_KIN)

NEW_KINDS = ("specks", "outline", "invert_region", "scratch")


@pytest.mark.parametrize("kind", NEW_KINDS)
def test_each_new_kind_changes_images_when_on_and_is_seeded(kind):
    x = _batch(32)
    assert kind in PIXEL_FIELDS and not Augment(**{kind: 0.0}).pixels and Augment(**{kind: 0.5}).pixels
    torch.testing.assert_close(Augment(**{kind: 0.0})(x, seed=2, background=BG, ink=INK), x, rtol=0, atol=1e-5)
    aug = Augment(**{kind: 1.0})
    a, b = aug(x, seed=2, background=BG, ink=INK), aug(x, seed=2, background=BG, ink=INK)
    assert torch.equal(a, b) and not torch.equal(a, aug(x, seed=3, background=BG, ink=INK))
    changed = [not torch.allclose(o, i, atol=1e-5) for o, i in zip(a, x)]
    assert sum(changed) >= 24  # nearly every image (a few specks may land on nothing they change)
    u = _ink_units(a)
    assert u.min() >= -1e-5 and u.max() <= 1 + 1e-5
    half = Augment(**{kind: 1.0}, pixel_share=0.5)(x, seed=2, background=BG, ink=INK)
    assert 4 < sum(torch.equal(o, i) for o, i in zip(half, x)) < 28  # pixel_share leaves the rest clean


def test_the_new_kinds_name_real_test_corruptions():
    from mnistlab.data.augment import MNIST_C_KIN
    from mnistlab.data.corruptions import TEST

    assert set(MNIST_C_KIN) == set(NEW_KINDS) and all(n in TEST for names in MNIST_C_KIN.values() for n in names)
    with pytest.raises(MnistlabError, match="--augment scratch must lie between 0 and 1"):
        Augment(scratch=1.5)


def test_outline_of_a_filled_square_is_its_border():
    x = torch.full((32, 1, 28, 28), BG)
    x[:, :, 8:20, 8:20] = INK
    u = _ink_units(_aug(x, outline=1.0))
    assert u[:, :, 10:18, 10:18].abs().max() < 1e-5  # hollow: nothing left inside
    assert (u[:, 0, 7:9, 10:18].amin(-1).amax(-1) > 0.99).all()  # full ink along the top edge ...
    assert (u[:, 0, 10:18, 19:21].amin(-2).amax(-1) > 0.99).all()  # ... and the right one
    assert u[:, :, :6].abs().max() < 1e-5 and u[:, :, 22:].abs().max() < 1e-5  # and nothing away from it


def test_invert_region_flips_polarity_inside_the_region_only():
    blank = torch.full((64, 1, 28, 28), BG)
    region = _ink_units(_aug(blank, invert_region=1.0)) > 0.5  # on a blank image, the region is what turned
    share = region.float().mean((1, 2, 3))
    assert (share > 0.05).all() and (share < 0.95).all()
    x = _batch(64)
    x[:, :, 2:5, 2:26] = 0.3  # a grey band as well
    u, out = _ink_units(x), _ink_units(_aug(x, invert_region=1.0))  # the same draws: the same regions
    torch.testing.assert_close(out, torch.where(region, 1 - u, u), rtol=0, atol=1e-5)
    rectangles = [(r.any(0).sum() * r.any(1).sum() == r.sum()).item() for r in region[:, 0]]
    assert 8 < sum(rectangles) < 56  # about half rectangles, the rest half-planes


def test_specks_are_full_contrast_on_a_small_share_of_pixels():
    x = torch.full((64, 1, 28, 28), BG + 0.5 * (INK - BG))  # a grey page: salt and pepper both show
    out = _ink_units(_aug(x, specks=1.0))
    hit = (out - 0.5).abs() > 1e-4
    assert torch.all((out[hit] < 1e-5) | (out[hit] > 1 - 1e-5))  # 0 or full ink, nothing between
    share = hit.float().mean((1, 2, 3))
    assert share.max() <= 0.22 and 0.03 < share.mean() < 0.1 and (share > 0).float().mean() > 0.8  # 1-12% drawn
    salt = (out > 0.99).float().sum((1, 2, 3)) / hit.float().sum((1, 2, 3)).clamp(min=1)
    assert salt.min() < 0.3 and salt.max() > 0.7  # the salt's part drawn per image


def test_scratch_crosses_the_whole_image():
    blank = torch.full((64, 1, 28, 28), BG)
    u = _ink_units(_aug(blank, scratch=1.0))
    drawn = (u > 0.05)[:, 0]  # a faint grey line between two pixel rows leaves 0.2 in each
    assert (drawn.sum((1, 2)) >= 28).all() and (u.sum((1, 2, 3)) >= 28 * 0.4 - 1).all()  # the image's width at least
    edges = torch.stack([drawn[:, 0].any(1), drawn[:, -1].any(1), drawn[:, :, 0].any(1), drawn[:, :, -1].any(1)])
    assert (edges.sum(0) >= 2).all()  # it enters and leaves at the border
    width = (u > 0.5).sum((1, 2, 3)).float() / (u > 0.05).sum((1, 2, 3)).clamp(min=1)
    assert u.max() <= 1 + 1e-5 and width.max() <= 1  # thin, anti-aliased strokes
    greys = u.amax((1, 2, 3))
    assert (greys > 0.99).sum() > 16 and (greys < 0.95).sum() > 8  # full ink and partial
