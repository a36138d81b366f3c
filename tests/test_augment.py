"""Weak/strong views: replays are exact, geometry is composed in the order applied, seeds reproduce."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from proda.data.augment import (
    GEOMETRIC_OPS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    StrongParams,
    WeakParams,
    full_to_weak,
    normalize,
    op_matrix,
    photometric,
    strong_view,
    weak_to_strong,
    weak_view,
)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def coord_image(n, h, w):
    """(n, 3, h, w): channel 0 = column index, 1 = row index, 2 = ones (coverage after a warp with fill 0)."""
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    return torch.stack([xs, ys, torch.ones_like(xs)])[None].repeat(n, 1, 1, 1)


def ref_warp(img, name, v):
    """One op written directly in pixel units about the image centre (output → input), bilinear, zero fill."""
    n, _, h, w = img.shape
    c, s = math.cos(math.radians(v)), math.sin(math.radians(v))
    P, t = {
        "rotate": ([[c, -s], [s, c]], (0, 0)),
        "shear_x": ([[1, v], [0, 1]], (0, 0)),
        "shear_y": ([[1, 0], [v, 1]], (0, 0)),
        "translate_x": ([[1, 0], [0, 1]], (v * w, 0)),
        "translate_y": ([[1, 0], [0, 1]], (0, v * h)),
        "scale": ([[1 / v, 0], [0, 1 / v]], (0, 0)),
    }[name]
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5 - h / 2, torch.arange(w) + 0.5 - w / 2, indexing="ij")
    xi = P[0][0] * xs + P[0][1] * ys + t[0]  # input position, pixels from the centre
    yi = P[1][0] * xs + P[1][1] * ys + t[1]
    grid = torch.stack([xi / (w / 2), yi / (h / 2)], -1)[None].expand(n, h, w, 2).float()
    return F.grid_sample(img, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


# ------------------------------------------------------------------------------------------ weak
def test_weak_view_equals_full_to_weak_replay_of_the_images():
    imgs = torch.rand(3, 3, 20, 40, generator=gen(1))
    xw, p = weak_view(imgs, (8, 12), generator=gen(2))
    assert xw.shape == (3, 3, 8, 12)
    assert torch.equal(full_to_weak(imgs, p, (8, 12)), xw)


def test_full_to_weak_crops_pixel_aligned_and_flips():
    img = coord_image(2, 8, 16)
    boxes = torch.tensor([[0.0, 0.25, 0.5, 0.75]] * 2)  # rows 0..3, columns 4..11
    p = WeakParams(boxes, torch.tensor([False, True]))
    out = full_to_weak(img, p, (4, 8))
    crop = img[0, :, 0:4, 4:12]
    assert torch.allclose(out[0], crop, atol=1e-5)
    assert torch.allclose(out[1], crop.flip(-1), atol=1e-5)
    labels = (img[:, 1] * 16 + img[:, 0]).long()  # (N, H, W) int64
    lab_w = full_to_weak(labels, p, (4, 8), mode="nearest")
    assert lab_w.dtype == torch.int64 and torch.equal(lab_w[0], labels[0, 0:4, 4:12])
    assert torch.equal(lab_w[1], labels[1, 0:4, 4:12].flip(-1))
    # resolution-free: the same window on a 2x coarser map
    half = full_to_weak(F.avg_pool2d(img, 2), p, (2, 4))
    assert torch.allclose(half[0], F.avg_pool2d(crop[None], 2)[0], atol=1e-5)


def test_weak_boxes_inside_the_image_with_the_output_aspect():
    H, W, h, w = 32, 64, 16, 24
    _, p = weak_view(torch.rand(200, 3, H, W), (h, w), scale=(0.3, 1.0), generator=gen(3))
    y0, x0, y1, x1 = p.boxes.unbind(1)
    assert (p.boxes >= 0).all() and (p.boxes <= 1 + 1e-6).all() and (y1 > y0).all() and (x1 > x0).all()
    assert torch.allclose((x1 - x0) * W / ((y1 - y0) * H), torch.full_like(x0, w / h), rtol=1e-4)
    assert ((y1 - y0) * (x1 - x0) <= 1.0 + 1e-6).all() and ((y1 - y0) * (x1 - x0) >= 0.3 - 1e-6).all()
    assert 0.3 < p.flip.float().mean() < 0.7


def test_views_are_deterministic_given_the_generator():
    imgs = torch.rand(4, 3, 16, 24, generator=gen(0))
    a, pa = weak_view(imgs, (8, 12), generator=gen(7))
    b, pb = weak_view(imgs, (8, 12), generator=gen(7))
    c, _ = weak_view(imgs, (8, 12), generator=gen(8))
    assert torch.equal(a, b) and torch.equal(pa.boxes, pb.boxes) and not torch.equal(a, c)
    ops = tuple(o for o in ("rotate", "shear_x", "noise", "equalize", "posterize", "solarize"))
    sa, qa = strong_view(a, generator=gen(9), ops=ops)
    sb, qb = strong_view(b, generator=gen(9), ops=ops)
    sc, _ = strong_view(a, generator=gen(10), ops=ops)
    assert torch.equal(sa, sb) and torch.equal(qa.theta, qb.theta) and torch.equal(qa.ops, qb.ops)
    assert not torch.equal(sa, sc)


# ---------------------------------------------------------------------------------------- strong
def test_translate_x_is_a_fraction_of_the_width_not_the_height():
    img = coord_image(1, 8, 32)
    p = StrongParams(op_matrix("translate_x", torch.tensor([0.25]), (8, 32))[:, :2], torch.zeros(1, 4))
    out, valid = weak_to_strong(img, p)
    assert torch.allclose(out[0, 0, :, :24], img[0, 0, :, 8:], atol=1e-4)  # an 8-pixel shift (0.25 · 32)
    assert valid[0, 0, :, :24].all() and not valid[0, 0, :, 24:].any()


@pytest.mark.parametrize("name,v", [("rotate", 90.0), ("rotate", -17.0), ("shear_x", 0.2), ("shear_y", -0.3),
                                    ("translate_x", 0.1), ("translate_y", -0.2), ("scale", 1.25)])
def test_each_op_matches_its_pixel_definition_on_a_non_square_view(name, v):
    img = coord_image(1, 12, 40)
    p = StrongParams(op_matrix(name, torch.tensor([v]), (12, 40))[:, :2], torch.zeros(1, 4))
    out, valid = weak_to_strong(img, p, fill=0.0)
    ref = ref_warp(img, name, v)
    inside = (ref[:, 2:] > 1 - 1e-5) & valid
    assert inside.float().mean() > 0.2
    assert torch.allclose(out[:, :2][inside.expand(-1, 2, -1, -1)], ref[:, :2][inside.expand(-1, 2, -1, -1)], atol=1e-3)


def test_strong_geometry_is_composed_in_the_order_applied():
    n, H, W = 24, 24, 40
    img = coord_image(n, H, W)
    strong, p = strong_view(img, generator=gen(4), ops=("rotate", "shear_x"), apply_p=1.0, flip_p=0.0,
                            cutout=None, fill=0.0)
    both = (p.ops[:, 0] != p.ops[:, 1])
    assert both.sum() >= 4  # rotate → shear and shear → rotate both occur
    for i in range(n):  # the reference, one sample at a time, one op after the other
        seq = [(p.op_names[int(k)], float(v)) for k, v in zip(p.ops[i], p.values[i])]
        ref, rev = img[i:i + 1], img[i:i + 1]
        for name, v in seq:
            ref = ref_warp(ref, name, v)
        for name, v in reversed(seq):
            rev = ref_warp(rev, name, v)
        inside = (ref[0, 2] > 1 - 1e-5) & (strong[i, 2] > 1 - 1e-5)
        assert inside.float().mean() > 0.2
        assert (strong[i, :2] - ref[0, :2]).abs().amax(0)[inside].max() < 1e-3
        if both[i]:  # e.g. Rotate then ShearX is not ShearX then Rotate (official replay bug)
            inside_rev = inside & (rev[0, 2] > 1 - 1e-5)
            assert (strong[i, :2] - rev[0, :2]).abs().amax(0)[inside_rev].max() > 0.1


def test_weak_to_strong_labels_follow_the_strong_image_at_any_resolution():
    n, H, W = 8, 32, 48
    img = coord_image(n, H, W)
    strong, p = strong_view(img, generator=gen(5), ops=GEOMETRIC_OPS, apply_p=0.9, flip_p=0.5, fill=0.0)
    assert (p.ops >= 0).float().mean() > 0.5 and (p.cutout[:, 2] > p.cutout[:, 0]).all()
    labels = (img[:, 1] * W + img[:, 0]).long()  # (N, H, W): the label IS the pixel's index
    lab_s, valid = weak_to_strong(labels, p, mode="nearest", fill=-1)
    full = strong[:, 2] > 1 - 1e-5  # (N, H, W) every bilinear tap inside the weak view
    assert torch.equal(lab_s == -1, ~valid[:, 0])
    assert (valid[:, 0] | ~full | _in_boxes(p.cutout, H, W)).all()  # fully inside → valid unless cut out
    assert not (valid[:, 0] & (strong[:, 2] < 1e-6)).any()  # entirely outside → invalid
    ok = valid[:, 0] & full
    assert ok.float().mean() > 0.3
    assert ((lab_s % W).float() - strong[:, 0]).abs()[ok].max() <= 0.5 + 1e-3
    assert ((lab_s // W).float() - strong[:, 1]).abs()[ok].max() <= 0.5 + 1e-3
    # a 4x coarser map: the replay is resolution-free (normalised coordinates)
    h, w = H // 4, W // 4
    low = coord_image(n, h, w)
    lab4, valid4 = weak_to_strong((low[:, 1] * w + low[:, 0]).long(), p, mode="nearest", fill=-1)
    s4 = F.interpolate(strong, size=(h, w), mode="bilinear", align_corners=False)  # strong at the coarse centres
    full4 = F.max_pool2d(1 - strong[:, 2:], 4, 4)[:, 0] < 1e-5  # whole 4x4 block covered
    ok4 = valid4[:, 0] & full4
    assert ok4.float().mean() > 0.2
    expect_x, expect_y = (s4[:, 0] + 0.5) / 4 - 0.5, (s4[:, 1] + 0.5) / 4 - 0.5  # fine → coarse index
    assert ((lab4 % w).float() - expect_x).abs()[ok4].max() <= 0.5 + 1e-3
    assert ((lab4 // w).float() - expect_y).abs()[ok4].max() <= 0.5 + 1e-3


def _in_boxes(boxes, H, W):
    ys, xs = (torch.arange(H) + 0.5) / H, (torch.arange(W) + 0.5) / W
    iy = (ys >= boxes[:, 0:1]) & (ys < boxes[:, 2:3])
    ix = (xs >= boxes[:, 1:2]) & (xs < boxes[:, 3:4])
    return iy[:, :, None] & ix[:, None, :]


def test_cutout_is_gray_and_masked_only_if_asked():
    views = torch.rand(4, 3, 18, 30, generator=gen(6))
    out, p = strong_view(views, generator=gen(6), ops=("identity",), flip_p=0.0, cutout=1 / 3)
    box = _in_boxes(p.cutout, 18, 30)  # (N, H, W)
    assert box.sum((1, 2)).min() > 0 and box.sum((1, 2)).max() <= 36
    assert torch.all(out.permute(1, 0, 2, 3)[:, box] == 0.5)
    assert torch.allclose(out.permute(1, 0, 2, 3)[:, ~box], views.permute(1, 0, 2, 3)[:, ~box], atol=1e-5)
    _, valid = weak_to_strong(views, p)
    assert torch.equal(valid[:, 0], ~box)
    assert weak_to_strong(views, p, mask_cutout=False)[1].all()


def test_photometric_only_pool_leaves_geometry_untouched():
    views = torch.rand(6, 3, 16, 16, generator=gen(11))
    out, p = strong_view(views, generator=gen(12), ops=("brightness", "contrast", "color", "sharpness",
                                                         "posterize", "solarize", "autocontrast", "equalize",
                                                         "noise"), apply_p=1.0, flip_p=0.0, cutout=None)
    assert torch.allclose(p.theta, torch.eye(3)[:2].expand(6, 2, 3))
    assert (out >= 0).all() and (out <= 1).all() and (p.ops >= 0).all()


def test_flip_in_the_strong_view_is_replayed():
    img = coord_image(2, 8, 12)
    out, p = strong_view(img, generator=gen(0), ops=("identity",), flip_p=1.0, cutout=None, fill=0.0)
    assert torch.allclose(out, img.flip(-1), atol=1e-5)
    assert torch.allclose(weak_to_strong(img, p)[0], img.flip(-1), atol=1e-5)


# ------------------------------------------------------------------------------------ photometric
def test_photometric_ops_by_hand():
    x = torch.tensor([0.0, 0.2, 0.5, 0.8, 1.0]).view(1, 1, 1, 5).repeat(1, 3, 1, 1)
    one = torch.ones(1)
    assert torch.allclose(photometric(x, "brightness", 0.5 * one), x * 0.5)
    assert torch.allclose(photometric(x, "posterize", one)[0, 0, 0], torch.tensor([0, 0, 128, 128, 128]) / 255)
    sol = photometric(x, "solarize", 128 * one)[0, 0, 0] * 255  # 8-bit: 0, 51, 128, 204, 255
    assert torch.allclose(sol, torch.tensor([0.0, 51, 127, 51, 0]), atol=1e-4)
    ac = photometric(x * 0.5 + 0.25, "autocontrast", one)
    assert torch.allclose(ac, x, atol=1e-6)
    assert torch.equal(photometric(x, "identity", one), x)


def test_equalize_matches_pil():
    from PIL import Image, ImageOps

    rng = np.random.default_rng(0)
    arr = (rng.beta(2, 5, size=(20, 24, 3)) * 255).astype(np.uint8)
    ref = np.array(ImageOps.equalize(Image.fromarray(arr)))
    x = torch.from_numpy(arr).permute(2, 0, 1)[None].float() / 255
    out = photometric(x, "equalize", torch.zeros(1))
    assert torch.equal(torch.round(out[0] * 255).to(torch.uint8).permute(1, 2, 0), torch.from_numpy(ref))


def test_normalize_uses_imagenet_statistics():
    x = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1).expand(2, 3, 4, 4)
    assert torch.allclose(normalize(x), torch.zeros(2, 3, 4, 4))
    assert torch.allclose(normalize(x + torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)), torch.ones(2, 3, 4, 4))
