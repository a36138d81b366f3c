"""Drawing the embedded benchmark's images: the two domains' palettes and statistics, the street scene,
and the photometric pipeline. :func:`render` draws one image from a seeded ``numpy`` Generator; the
public API (sizes, splits, caching, the Dataset) is :mod:`proda.data.synthetic`, whose
``proda.config.SYNTHETIC_VERSION`` must be bumped whenever anything here changes what is drawn.
"""

from __future__ import annotations

import numpy as np


(ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, LIGHT, SIGN, VEG, TERRAIN, SKY,
 PERSON, RIDER, CAR, TRUCK, BUS, TRAIN, MOTO, BIKE) = range(19)


# --- the two domains ------------------------------------------------------------------------------
# palette: class or part → (candidate mean RGB colours, per-channel jitter std), 0..255; an instance
# picks a candidate at random and adds jitter. Parts (glass, tyre, skin, mark, lamp) take the label of
# their object. v4: each frequent class draws from one hue family (building: reddish browns, its windows a
# darker shade of the façade; cars: red, white, silver) and no part wears another frequent class's colour
# (v3's sky-blue glass made sky→building a top confusion); the target shifts and mutes the source's colours
# (frequent classes keep their hue), while rare classes move towards a neighbour (wall towards building's
# browns, motorcycle into bicycle's colours) — the confusions fall on rare and similar classes.
_SOURCE_PALETTE = {
    ROAD: ([(62, 62, 70)], 8), SIDEWALK: ([(196, 180, 162), (178, 172, 166)], 10),
    BUILDING: ([(188, 108, 78), (142, 92, 66), (204, 152, 112)], 14),
    WALL: ([(212, 204, 176), (164, 164, 154)], 12), FENCE: ([(150, 110, 70), (115, 135, 120)], 14),
    POLE: ([(110, 110, 125)], 14), LIGHT: ([(40, 40, 45)], 8),
    SIGN: ([(240, 210, 20), (230, 40, 40), (30, 80, 220)], 14),
    VEG: ([(40, 150, 40), (70, 170, 30)], 14), TERRAIN: ([(165, 185, 60), (150, 160, 72)], 12),
    SKY: ([(80, 150, 240), (120, 175, 240)], 12),
    PERSON: ([(220, 40, 40), (40, 40, 200), (240, 240, 240), (30, 30, 30), (50, 160, 60), (240, 160, 30)], 18),
    RIDER: ([(220, 40, 40), (40, 40, 200), (240, 240, 240), (30, 30, 30), (240, 160, 30)], 18),
    CAR: ([(200, 24, 24), (232, 232, 232), (132, 132, 142)], 12),
    TRUCK: ([(220, 120, 20), (200, 200, 210), (40, 80, 190)], 14), BUS: ([(240, 190, 10), (210, 30, 30)], 12),
    TRAIN: ([(30, 110, 200), (200, 200, 200)], 12), MOTO: ([(200, 30, 30), (20, 20, 20), (30, 60, 180)], 14),
    BIKE: ([(20, 20, 20), (200, 30, 30), (40, 40, 200)], 14), "glass": ([(44, 54, 74)], 8),
    "tyre": ([(20, 20, 20)], 5), "skin": ([(230, 180, 140)], 15), "mark": ([(240, 240, 240)], 5),
    "lamp": ([(250, 60, 30), (250, 220, 40), (40, 250, 80)], 5),
}
_TARGET_PALETTE = {  # frequent classes keep their source hue (shifted, muted); rare ones move towards a neighbour
    ROAD: ([(74, 73, 82)], 9), SIDEWALK: ([(180, 168, 154), (164, 160, 156)], 11),
    BUILDING: ([(176, 112, 88), (136, 94, 74), (192, 150, 118)], 15),
    WALL: ([(196, 160, 126), (150, 138, 128)], 13), FENCE: ([(128, 104, 80), (112, 124, 114)], 15),
    POLE: ([(100, 100, 106)], 12), LIGHT: ([(38, 40, 38)], 8),
    SIGN: ([(225, 200, 70), (195, 65, 55), (55, 90, 185), (225, 225, 225)], 16),
    VEG: ([(52, 138, 48), (78, 152, 44)], 14), TERRAIN: ([(145, 158, 80), (138, 144, 82)], 13),
    SKY: ([(98, 156, 232), (132, 176, 232)], 12),
    PERSON: ([(165, 55, 50), (55, 60, 150), (215, 215, 210), (40, 40, 45), (70, 130, 75), (200, 150, 70)], 16),
    RIDER: ([(165, 55, 50), (55, 60, 150), (215, 215, 210), (40, 40, 45), (200, 150, 70)], 16),
    CAR: ([(185, 42, 38), (222, 222, 222), (128, 128, 136)], 13),
    TRUCK: ([(205, 122, 45), (195, 195, 200), (60, 95, 165)], 14), BUS: ([(225, 182, 30), (195, 45, 40)], 12),
    TRAIN: ([(55, 110, 180), (195, 195, 190)], 12), MOTO: ([(35, 35, 35), (170, 50, 45), (60, 65, 150)], 14),
    BIKE: ([(35, 35, 35), (170, 50, 45), (60, 65, 150)], 14), "glass": ([(48, 56, 72)], 10),
    "tyre": ([(25, 25, 25)], 5), "skin": ([(200, 160, 130)], 18), "mark": ([(215, 215, 210)], 8),
    "lamp": ([(230, 80, 50), (230, 200, 70), (70, 220, 100)], 8),
}
# Expected number of each object kind per image (Poisson): the domains' class frequencies differ.
_SOURCE_COUNTS = dict(car=5.0, truck=1.2, bus=0.7, train=0.3, person=2.0, rider_bike=0.3, rider_moto=0.5,
                      bicycle=0.3, motorcycle=0.6, pole=3.0, sign_pole=1.0, tree=1.2, wall=1.6, fence=0.5,
                      terrain=0.8)
_TARGET_COUNTS = dict(car=4.0, truck=0.35, bus=0.3, train=0.25, person=6.0, rider_bike=1.2, rider_moto=0.3,
                      bicycle=2.0, motorcycle=0.3, pole=4.0, sign_pole=1.5, tree=2.5, wall=0.8, fence=1.2,
                      terrain=1.5)
# facade: probabilities of a façade chunk being building / vegetation / open; texture: amplitude (0..1).
# photo: per-image ranges (uniform) of the photometric pipeline; "rendered" keeps it almost neutral. tint: a
# per-channel gain of the whole domain (v5: the target is warmer and, by exposure and gamma, darker and
# hazier than v4's — a shift of every image's statistics, as between rendered and real street scenes, that a
# model sees only by seeing target images: v4's warm-up gained 0.2 over source-only, v5's gains 1–2.7).
_DOMAINS = {
    "source": dict(palette=_SOURCE_PALETTE, counts=_SOURCE_COUNTS, facade=(0.75, 0.15, 0.10), texture=0.015,
                   photo=dict(haze=(0, 0), saturation=(1.0, 1.0), cast=0.0, tint=(1.0, 1.0, 1.0), exposure=(0.92, 1.08),
                              gamma=(1.0, 1.0), vignetting=(0, 0), blur=(0, 0), noise=(1.5, 1.5))),
    "target": dict(palette=_TARGET_PALETTE, counts=_TARGET_COUNTS, facade=(0.55, 0.35, 0.10), texture=0.07,
                   photo=dict(haze=(0.05, 0.22), saturation=(0.65, 1.0), cast=0.08, tint=(1.02, 1.0, 0.96),
                              exposure=(0.75, 1.05), gamma=(0.95, 1.12), vignetting=(0.1, 0.3), blur=(0.5, 0.9),
                              noise=(3, 8))),
}
for _pal in (_SOURCE_PALETTE, _TARGET_PALETTE):  # candidate lists → (k, 3) float32 arrays, once
    _pal.update({k: (np.array(c, np.float32), std) for k, (c, std) in _pal.items()})
_TEXTURE_GAIN = np.ones(256, np.float32)  # per label, × the domain's texture amplitude
_TEXTURE_GAIN[[VEG, TERRAIN]] = 2.5
_TEXTURE_GAIN[[SKY, BUILDING, SIDEWALK]] = 1.5


# --- drawing --------------------------------------------------------------------------------------
class _Canvas:
    """Label (H, W) uint8, instance (H, W) int32 into a colour table, depth (H, W) float32 (for haze).

    ``paint`` records only a palette key per instance; :meth:`colors` draws all colours at once.
    """

    def __init__(self, rng: np.random.Generator, h: int, w: int, palette: dict):
        self.rng, self.h, self.w, self.palette = rng, h, w, palette
        self.label = np.full((h, w), SKY, np.uint8)
        self.inst = np.zeros((h, w), np.int32)
        self.depth = np.full((h, w), 1e3, np.float32)
        self.entries = [(SKY, 1.0, -1)]  # (palette key, brightness factor, entry whose draw it shares or -1)

    def paint(self, sl, mask, label: int, color, depth, factor: float = 1.0, share: int = -1, sub=None) -> int:
        """Paint ``mask`` (broadcast over the window ``sl``) with ``label``; one colour from palette key
        ``color`` — or, with ``sub`` (an index map broadcast like ``mask``), colour ``color[sub]``
        per pixel (one paint for many instances). Returns the first new colour's index."""
        base = len(self.entries)
        self.entries += [(k, factor, share) for k in (color if sub is not None else [color])]
        lab = self.label[sl]
        mask = mask if mask.shape == lab.shape else np.broadcast_to(mask, lab.shape)
        lab[mask] = label
        self.inst[sl][mask] = base if sub is None else base + np.broadcast_to(sub, lab.shape)[mask]
        self.depth[sl][mask] = depth if np.isscalar(depth) else np.broadcast_to(depth, lab.shape)[mask]
        return base

    def colors(self) -> np.ndarray:
        """(K, 3) float32 RGB 0..255: per entry a palette candidate picked at random, plus jitter."""
        k = len(self.entries)
        pick, noise = self.rng.random(k), self.rng.standard_normal((k, 3), dtype=np.float32)
        keys, factor, share = zip(*self.entries)
        j = np.where(np.array(share) >= 0, share, np.arange(k))  # an entry sharing another's draw uses its index
        means = np.stack([self.palette[key][0][int(p * len(self.palette[key][0]))] for key, p in zip(keys, pick[j])])
        std = np.array([self.palette[key][1] for key in keys], np.float32)[:, None]
        return np.clip(np.array(factor, np.float32)[:, None] * (means + std * noise[j]), 0, 255)


def _sprite(cv: _Canvas, cam: dict, X: float, Z: float, w: float, h: float, parts, lift: float = 0.0) -> None:
    """Draw an upright object of w × h metres centred at lateral ``X``, depth ``Z``, bottom ``lift`` m up.

    ``parts(x, e)`` gets metric coordinates of the object box's pixel grid — ``x`` (1, bw) across
    0..w, ``e`` (bh, 1) elevation 0..h — and returns ``[(mask, label, colour key), …]`` in paint order.
    """
    s = cam["f"] / Z  # pixels per metre at this depth
    x0, y1 = cam["vx"] + (X - w / 2) * s, cam["h0"] + (cam["hc"] - lift) * s
    c0, c1 = max(int(np.floor(x0)), 0), min(int(np.ceil(x0 + w * s)), cv.w)
    r0, r1 = max(int(np.floor(y1 - h * s)), 0), min(int(np.ceil(y1)), cv.h)
    if c1 <= c0 or r1 <= r0 or h * s < 1.5:
        return
    x = ((np.arange(c0, c1, dtype=np.float32) + 0.5 - x0) / s)[None, :]  # (1, bw) metres
    e = ((y1 - np.arange(r0, r1, dtype=np.float32) - 0.5) / s)[:, None]  # (bh, 1) metres above the bottom
    inside = (x >= 0) & (x <= w) & (e >= 0) & (e <= h)  # (bh, bw)
    for mask, label, color in parts(x, e):
        cv.paint((slice(r0, r1), slice(c0, c1)), mask & inside, label, color, Z)


def _circle(x, e, cx, ce, r):
    return (x - cx) ** 2 + (e - ce) ** 2 <= r * r


def _car(side: bool, w: float, h: float):
    def parts(x, e):
        c, up = w / 2, e - 0.9  # up: height above the bonnet line
        if side:
            cabin = (up > 0) & (x > 0.28 * w + 0.6 * up) & (x < 0.8 * w - 0.9 * up)
            glass = cabin & (e < h - 0.1) & (x > 0.3 * w + 0.6 * up + 0.1) & (x < 0.78 * w - 0.9 * up - 0.1)
            wheels = _circle(x, e, 0.8, 0.33, 0.33) | _circle(x, e, w - 0.8, 0.33, 0.33)
            return [(((e >= 0.25) & (up <= 0)) | cabin, CAR, CAR), (glass, CAR, "glass"), (wheels, CAR, "tyre")]
        cabin = (up > 0) & (np.abs(x - c) < 0.42 * w - 0.5 * up)  # seen from behind
        glass = cabin & (e > 0.98) & (e < h - 0.08) & (np.abs(x - c) < 0.36 * w - 0.5 * up)
        wheels, lamps = (e < 0.32) & (np.abs(x - c) > c - 0.35), (e > 0.65) & (e < 0.8) & (np.abs(x - c) > c - 0.3)
        return [(((e >= 0.2) & (up <= 0)) | cabin, CAR, CAR), (glass, CAR, "glass"), (wheels, CAR, "tyre"),
                (lamps, CAR, "lamp")]
    return parts


def _big_vehicle(kind: int, side: bool, w: float, h: float):
    """Truck (cab + cargo box), bus (window band) or train/tram (window row, pantograph)."""
    def parts(x, e):
        c, top = w / 2, (h - 0.6 if kind == TRAIN else h)  # a train's pantograph stands above ``top``
        if not side:  # seen from behind / the front
            glass = (e > 0.62 * top) & (e < 0.9 * top) & (np.abs(x - c) < 0.4 * w) & (kind != TRUCK)
            out = [((e >= 0.35) & (e <= top), kind, kind), (glass, kind, "glass"),
                   ((e < 0.5) & (np.abs(x - c) > c - 0.4), kind, "tyre")]
            pole_x = c
        elif kind == TRUCK:
            body = ((x > w - 2.0) & (e >= 0.4) & (e <= 2.8)) | ((x < w - 2.1) & (e >= 0.9)) | ((e >= 0.4) & (e < 0.9))
            glass = (x > w - 1.2) & (x < w - 0.1) & (e > 1.8) & (e < 2.6)
            wheels = _circle(x, e, 1.0, .45, .45) | _circle(x, e, 2.2, .45, .45) | _circle(x, e, w - 1.0, .45, .45)
            return [(body, TRUCK, TRUCK), (glass, TRUCK, "glass"), (wheels, TRUCK, "tyre")]
        else:
            pitch = 2.2 if kind == TRAIN else 1.5
            glass = (e > 0.55 * top) & (e < 0.85 * top) & ((x % pitch) > 0.25) & (x > 0.3) & (x < w - 0.3)
            axles = _circle(x, e, 2.0, 0.5, 0.5) | _circle(x, e, w - 2.5, 0.5, 0.5)
            wheels = axles if kind == BUS else (e < 0.6) & (e > 0.3)  # a train: its underframe
            out = [((e >= (0.6 if kind == TRAIN else 0.35)) & (e <= top), kind, kind), (glass, kind, "glass"),
                   (wheels, kind, "tyre")]
            pole_x = w / 3
        if kind == TRAIN:
            out.append(((e > top) & (np.abs(x - pole_x) < 0.08 + 0.45 * (e - top)), TRAIN, "tyre"))
        return out
    return parts


def _person(label: int, w: float, h: float, stride: float, hip: float | None = None):
    """A pedestrian (feet ``2·stride`` apart), or a rider's upper body with the hip at ``hip`` m."""
    def parts(x, e):
        c, legs_top = w / 2, (0.85 if hip is None else hip)
        torso = (e > legs_top) & (e < h - 0.22) & (np.abs(x - c) < 0.2)
        if hip is None:
            legs = (e <= legs_top) & (np.abs(np.abs(x - c) - stride * (legs_top - e) / legs_top) < 0.09)
        else:  # thighs forward and down to the pedals
            legs = (e <= legs_top) & (e > legs_top - 0.55) & (np.abs(x - c - 0.35 * (legs_top - e)) < 0.09)
        return [(torso, label, label), (legs, label, label), (_circle(x, e, c, h - 0.12, 0.12), label, "skin")]
    return parts


def _two_wheeler(kind: int, w: float):
    def parts(x, e):
        r = 0.33
        wheels = _circle(x, e, r, r, r) | _circle(x, e, w - r, r, r)
        if kind == MOTO:
            tank = (x - w / 2) ** 2 / 0.36 + (e - 0.62) ** 2 / 0.0625 <= 1  # an ellipse, and the handlebar:
            body = tank | ((e > 0.8) & (e < 1.05) & (np.abs(x - w + 0.45) < 0.06))
            return [(body, MOTO, MOTO), (wheels, MOTO, "tyre")]
        rims = wheels & ~(_circle(x, e, r, r, r - 0.12) | _circle(x, e, w - r, r, r - 0.12))
        frame = ((np.abs(e - r - 0.25) < 0.07) & (x > r) & (x < w - r)) | (
            (np.abs(x - w + r + 0.1) < 0.07) & (e > r) & (e < 1.0))
        return [(rims | frame, BIKE, BIKE)]
    return parts


def _post(label: int, w: float, h: float, shape: int = 0):
    """A filled rectangle (0), disc (1) or triangle (2): poles, tree trunks and crowns, signs, lights."""
    def parts(x, e):
        c = w / 2
        m = [np.ones_like(x * e, dtype=bool), _circle(x, e, c, h / 2, c), np.abs(x - c) <= c * e / h][shape]
        lamps = [(_circle(x, e, c, h * (.2 + .3 * k), .3 * w), LIGHT, "lamp" if k == 1 else LIGHT) for k in range(3)]
        return [(m, label, label)] + (lamps if label == LIGHT else [])  # a light: three lamps, one lit
    return parts


def _vertical_plane(cam: dict, yy, xx, X: float):
    """Per-column depth Z (1, W) and per-pixel elevation (H, W) of the vertical plane at lateral ``X``."""
    dx = xx - cam["vx"]
    Z = np.where(dx * X > 0, X * cam["f"] / np.where(dx == 0, 1, dx), 1e6)  # 1e6: columns on the other side
    return Z, cam["hc"] - (yy - cam["h0"]) * Z / cam["f"]


def _scene(rng: np.random.Generator, h: int, w: int, dom: dict) -> _Canvas:
    cv = _Canvas(rng, h, w, dom["palette"])
    cam = dict(f=1.8 * h, hc=1.6, h0=h * rng.uniform(0.33, 0.45), vx=w * rng.uniform(0.3, 0.7))
    yy = np.arange(h, dtype=np.float32)[:, None] + 0.5  # (H, 1) pixel centres
    xx = np.arange(w, dtype=np.float32)[None, :] + 0.5  # (1, W)
    full = (slice(None), slice(None))

    # distant skyline: blocks of buildings / trees standing on the horizon
    block = np.searchsorted(np.cumsum(rng.uniform(0.04, 0.15, 20) * w), xx[0])  # (W,)
    tall, kinds = rng.uniform(0.02, 0.12, 21)[block] * h, np.where(rng.random(21) < 0.7, BUILDING, VEG)[block]
    for k in (BUILDING, VEG):
        cv.paint(full, (yy < cam["h0"] + 1) & (yy > cam["h0"] - tall) & (kinds == k), k, k, 300.0)

    # ground plane: lateral X and depth Z of every pixel below the horizon
    dy = np.maximum(yy - cam["h0"], 1e-3)
    Zg, Xg = cam["hc"] * cam["f"] / dy, (xx - cam["vx"]) * cam["hc"] / dy  # (H, 1), (H, W)
    below = yy > cam["h0"]
    rl, rr, sl, sr = rng.uniform(3, 7), rng.uniform(3, 7), rng.uniform(2, 5), rng.uniform(2, 5)
    verge = TERRAIN if rng.random() < 0.5 else SIDEWALK
    cv.paint(full, below, verge, verge, Zg)
    cv.paint(full, below & (Xg > -rl - sl) & (Xg < rr + sr), SIDEWALK, SIDEWALK, Zg)
    for _ in range(rng.poisson(dom["counts"]["terrain"])):  # grass patches on the sidewalks / verge
        side = 1 - 2 * int(rng.integers(2))
        xa, z0 = (rl if side < 0 else rr) + rng.uniform(0, 2), rng.uniform(3, 40)
        m = below & (np.abs(Xg) > xa) & (Xg * side > 0) & (Zg > z0) & (Zg < z0 + rng.uniform(4, 20))
        cv.paint(full, m, TERRAIN, TERRAIN, Zg)
    on_road = below & (Xg > -rl) & (Xg < rr)
    cv.paint(full, on_road, ROAD, ROAD, Zg)
    cv.paint(full, on_road & (np.abs(Xg - rng.uniform(-rl + 2, rr - 2)) < 0.15) & (Zg % 6 < 3), ROAD, "mark", Zg)
    if rng.random() < 0.3:  # zebra crossing
        z0 = rng.uniform(5, 25)
        cv.paint(full, on_road & (Zg > z0) & (Zg < z0 + 3) & (Xg % 1.0 < 0.5), ROAD, "mark", Zg)

    # façades on both sides: chunks along the street of building / vegetation / open space
    for side, x_side in ((-1, rl + sl), (1, rr + sr)):
        Z, e = _vertical_plane(cam, yy, xx, side * (x_side + rng.uniform(0, 3)))
        chunk = np.minimum(np.searchsorted(np.cumsum(rng.uniform(6, 25, 16)), Z[0]), 15)  # (W,)
        kind = rng.choice(3, 16, p=dom["facade"])[chunk]  # 0 building, 1 vegetation, 2 open
        top = rng.uniform(6, 28, 16)[chunk] + np.where(kind == 1, 1.2 * np.sin(Z[0] * 1.3 + rng.uniform(0, 6)), 0)
        on = (e >= 0) & (e <= top) & (Z < 1e5)
        for k, label in ((0, BUILDING), (1, VEG)):  # one colour per chunk
            cv.paint(full, on & (kind == k), label, [label] * 16, Z, sub=chunk)
        win = on & (kind == 0) & (Z % rng.uniform(2.5, 4) < 1.2) & (e % 3.2 > 1.2) & (e % 3.2 < 2.4) & (e > 2.5)
        cv.paint(full, win, BUILDING, BUILDING, Z, factor=0.6)  # windows: a darker shade of the façade family
        for label, name in ((WALL, "wall"), (FENCE, "fence")):  # on the sidewalk's outer edge
            for _ in range(rng.poisson(dom["counts"][name] / 2)):
                Z, e = _vertical_plane(cam, yy, xx, side * (x_side - 0.2))
                z0, tall = rng.uniform(3, 40), rng.uniform(0.8, 2.5)
                m = (e >= 0) & (e <= tall) & (Z > z0) & (Z < z0 + rng.uniform(4, 25))
                ref = cv.paint(full, m, label, label, Z)
                if label == FENCE:  # a lattice: rails and posts in the fence colour, the holes darker
                    cv.paint(full, m & (Z % 0.8 > 0.25) & (e % 0.6 > 0.2), FENCE, FENCE, Z, factor=0.55, share=ref)

    # objects: (Z, X, w, h, parts, lift), drawn far to near (painter's algorithm)
    cnt, objs = {k: rng.poisson(v) for k, v in dom["counts"].items()}, []
    lane = lambda: rng.uniform(-rl + 1.2, rr - 1.2)  # noqa: E731 - lateral position on the road
    walk = lambda: rng.uniform(-1, 1) + (-rl - sl / 2 if rng.random() < 0.5 else rr + sr / 2)  # noqa: E731 - sidewalk
    depth = lambda lo, hi: float(np.exp(rng.uniform(np.log(lo), np.log(hi))))  # noqa: E731 - log-uniform
    kerb = lambda d: -rl - d if rng.random() < 0.5 else rr + d  # noqa: E731
    for _ in range(cnt["car"]):
        side = rng.random() < 0.3
        wd, ht = (rng.uniform(3.8, 4.6) if side else rng.uniform(1.7, 1.95)), rng.uniform(1.4, 1.6)
        objs.append((depth(5.0, 50.0), lane(), wd, ht, _car(side, wd, ht), 0.0))
    for kind, length in ((TRUCK, 7.5), (BUS, 11.0), (TRAIN, 22.0)):
        for _ in range(cnt[{TRUCK: "truck", BUS: "bus", TRAIN: "train"}[kind]]):
            side = rng.random() < 0.4
            wd, ht = (length * rng.uniform(0.8, 1.2) if side else 2.5), (4.2 if kind == TRAIN else 3.4)
            objs.append((depth(7.0, 60.0), lane(), wd, ht, _big_vehicle(kind, side, wd, ht), 0.0))
    for _ in range(cnt["person"]):
        X, ht = (walk() if rng.random() < 0.8 else lane()), rng.uniform(1.55, 1.9)
        objs.append((depth(4.0, 30.0), X, 0.6, ht, _person(PERSON, 0.6, ht, rng.uniform(0, 0.2)), 0.0))
    for kind, n in ((BIKE, cnt["rider_bike"]), (MOTO, cnt["rider_moto"])):
        for _ in range(n):  # a rider on a bicycle (by the kerb) or a motorcycle (in a lane)
            Z, X = depth(4.0, 35.0), (lane() if kind == MOTO else kerb(-0.8))
            objs.append((Z + 0.01, X, 1.8, 1.05, _two_wheeler(kind, 1.8), 0.0))
            objs.append((Z, X, 0.8, 1.45, _person(RIDER, 0.8, 1.45, 0.0, hip=0.65), 0.3))  # seat at 0.95 m
    for kind, n in ((BIKE, cnt["bicycle"]), (MOTO, cnt["motorcycle"])):  # parked on the sidewalk
        objs += [(depth(4.0, 30.0), walk(), 1.8, 1.1, _two_wheeler(kind, 1.8), 0.0) for _ in range(n)]
    for _ in range(cnt["tree"]):
        Z, X, r = depth(5.0, 50.0), walk(), rng.uniform(1.2, 2.2)
        objs += [(Z, X, 0.35, 3.0, _post(VEG, 0.35, 3.0), 0.0),  # trunk and crown
                 (Z - 0.01, X, 2 * r, 2.2 * r, _post(VEG, 2 * r, 2.2 * r, 1), 2.2)]
    for kind in ("pole", "sign_pole"):
        for _ in range(cnt[kind]):
            Z, X = depth(4.0, 45.0), kerb(0.4)
            tall = rng.uniform(3.5, 6.5) if kind == "pole" else rng.uniform(2.3, 3.2)
            objs.append((Z + 0.02, X, 0.25, tall, _post(POLE, 0.25, tall), 0.0))
            top = rng.random() if kind == "pole" else 0.0
            if top < 0.4:  # a sign at eye level or above (up close the view shows little more than ~4 m)
                sz = rng.uniform(0.6, 0.9)
                lift = tall - sz if kind == "sign_pole" else rng.uniform(2.0, tall - sz)
                objs.append((Z, X, sz, sz, _post(SIGN, sz, sz, int(rng.integers(3))), lift))
            elif top < 0.85:
                objs.append((Z, X, 0.45, 1.1, _post(LIGHT, 0.45, 1.1), rng.uniform(2.3, tall - 1.1)))
    for Z, X, wd, ht, parts, lift in sorted(objs, key=lambda o: -o[0]):
        _sprite(cv, cam, X, Z, wd, ht, parts, lift)
    return cv


# --- photometry -----------------------------------------------------------------------------------
def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    """(H, W) float32 unit-variance value noise: a (H/cell, W/cell) Gaussian grid, bilinearly upsampled."""
    g = rng.standard_normal((h // cell + 2, w // cell + 2), dtype=np.float32)
    y, x = (np.arange(h) + 0.5) / cell, (np.arange(w) + 0.5) / cell
    y0, x0 = y.astype(int), x.astype(int)
    fy, fx = (y - y0)[:, None].astype(np.float32), (x - x0)[None, :].astype(np.float32)
    top = g[y0][:, x0] * (1 - fx) + g[y0][:, x0 + 1] * fx
    return top * (1 - fy) + (g[y0 + 1][:, x0] * (1 - fx) + g[y0 + 1][:, x0 + 1] * fx) * fy


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable 5-tap Gaussian blur of a (H, W, 3) image, edges replicated."""
    k = np.exp(-0.5 * (np.arange(-2, 3) / sigma) ** 2).astype(np.float32)
    k /= k.sum()
    h, w = img.shape[:2]
    p = np.pad(img, ((2, 2), (0, 0), (0, 0)), mode="edge")
    p = np.pad(sum(k[i] * p[i:i + h] for i in range(5)), ((0, 0), (2, 2), (0, 0)), mode="edge")
    return sum(k[i] * p[:, i:i + w] for i in range(5))


def render(rng: np.random.Generator, h: int, w: int, domain: str) -> tuple[np.ndarray, np.ndarray]:
    """One image: ((3, H, W) uint8, (H, W) uint8 labels)."""
    dom, ph = _DOMAINS[domain], _DOMAINS[domain]["photo"]
    cv = _scene(rng, h, w, dom)
    img = cv.colors()[cv.inst] / np.float32(255)  # (H, W, 3) flat colours
    rows = np.linspace(0.8, 1.1, h, dtype=np.float32)[:, None, None]
    img = np.where((cv.label == SKY)[:, :, None], img * rows, img)  # sky brightens towards the horizon
    tex = 0.6 * _smooth_noise(rng, h, w, 8) + 0.4 * _smooth_noise(rng, h, w, 2)  # (H, W)
    img *= (1 + dom["texture"] * _TEXTURE_GAIN[cv.label] * tex)[:, :, None]
    if ph["haze"][1] > 0:  # towards a grey-white horizon with depth
        haze = (1 - np.exp(-cv.depth / np.float32(rng.uniform(40, 120))))[:, :, None]
        haze *= np.float32(rng.uniform(*ph["haze"]))
        img = img * (1 - haze) + haze * np.float32(rng.uniform(0.6, 0.85))
    gray = img.mean(-1, keepdims=True)
    img = gray + np.float32(rng.uniform(*ph["saturation"])) * (img - gray)
    cast = np.array(ph["tint"]) * (1 + rng.uniform(-ph["cast"], ph["cast"], 3))  # the domain's tint, a per-image cast
    img = np.clip(img * (cast * rng.uniform(*ph["exposure"])).astype(np.float32), 0, 1)
    img **= np.float32(rng.uniform(*ph["gamma"]))
    if ph["vignetting"][1] > 0:
        r2 = np.linspace(-1, 1, h, dtype=np.float32)[:, None] ** 2 + np.linspace(-1, 1, w, dtype=np.float32) ** 2
        img *= (1 - np.float32(rng.uniform(*ph["vignetting"])) * r2 / 2)[:, :, None]
    if ph["blur"][1] > 0:
        img = _blur(img, rng.uniform(*ph["blur"]))
    img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(rng.uniform(*ph["noise"]) / 255)
    return np.ascontiguousarray(np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8).transpose(2, 0, 1)), cv.label
