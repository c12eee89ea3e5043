"""Numpy rendering of one synthetic image: background, person, occluder, then the camera.

The person is drawn in *body coordinates*: ``v`` runs from 0 at the top of the head to 1 at the
soles, ``u`` is the horizontal offset from the body axis, both in units of the person's height, so
proportions and patterns do not depend on the framing. Every pixel is tested against simple shapes
(ellipses, trapezoids, bands) and painted in back-to-front order. Colours are turned into what the
camera records (colour cast and gamma, :meth:`Camera.tone`) before painting; lighting, haze, blur
and noise are then applied to the whole image (:func:`apply_camera`).

Example::

    >>> import numpy as np
    >>> from cacl.data.synth.camera import sample_cameras
    >>> from cacl.data.synth.identity import sample_identity
    >>> from cacl.data.synth.pose import sample_pose, sample_track
    >>> rng = np.random.default_rng(0)
    >>> person, cam = sample_identity(rng), sample_cameras(rng, 2)[0]
    >>> pose = sample_pose(rng, sample_track(rng), person.height)
    >>> render_image(rng, cam, person, pose).shape
    (128, 64, 3)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cacl.data.synth.camera import Camera, apply_camera
from cacl.data.synth.config import IMAGE_HEIGHT, IMAGE_WIDTH
from cacl.data.synth.identity import HAIR, PALETTE, SKIN, Garment, Identity
from cacl.data.synth.pose import BACK, FRONT, SIDE, Pose

_Y = (np.arange(IMAGE_HEIGHT, dtype=np.float32) + 0.5)[:, None]
_X = (np.arange(IMAGE_WIDTH, dtype=np.float32) + 0.5)[None, :]


def _clip01(x: np.ndarray) -> np.ndarray:
    """``x`` limited to [0, 1] (in place; cheaper than ``np.clip`` on small arrays)."""
    np.minimum(x, 1.0, out=x)
    np.maximum(x, 0.0, out=x)
    return x


def _soft_step(x: np.ndarray, width: float) -> np.ndarray:
    """0 below ``-width/2``, 1 above ``width/2``, linear in between (anti-aliased edges)."""
    return _clip01(0.5 + x / width)


def _stripes(coord: np.ndarray, freq: float, duty: float, px: float) -> np.ndarray:
    """Anti-aliased stripes along ``coord``: 1 on a fraction ``duty`` of every period."""
    s = np.cos((2.0 * math.pi * freq) * coord)
    return _soft_step(s - math.cos(math.pi * duty), 2.0 * math.pi * freq * px)


def pattern(g: Garment, pu: np.ndarray, pv: np.ndarray, rel: np.ndarray, px: float) -> np.ndarray:
    """How much of colour ``b`` a garment shows at body coordinates ``(pu, pv)``.

    ``rel`` is the vertical position within the garment (0 top, 1 bottom), ``px`` the size of a
    pixel in body units (for anti-aliasing).
    """
    if g.pattern == "stripes":
        a = math.radians(g.angle)
        return _stripes(pv * math.cos(a) + pu * math.sin(a), g.freq, g.duty, px)
    if g.pattern == "checks":
        a = math.radians(g.angle)
        c, s = math.cos(a), math.sin(a)
        t1 = _stripes(pv * c + pu * s, g.freq, 0.5, px)
        t2 = _stripes(pu * c - pv * s, g.freq, 0.5, px)
        return t1 + t2 - 2.0 * t1 * t2
    if g.pattern == "dots":
        fx = pu * g.freq
        fy = pv * g.freq
        fx = fx - np.floor(fx) - 0.5
        fy = fy - np.floor(fy) - 0.5
        r = np.sqrt(fx * fx + fy * fy) / g.freq
        return _soft_step(g.duty / g.freq - r, px)
    if g.pattern == "split":
        if g.angle == 90.0:
            return np.broadcast_to(_soft_step(pu, px), np.broadcast(pu, pv).shape)
        return _soft_step(rel - g.duty, px * 4)
    if g.pattern == "band":
        return _soft_step(g.duty / 2 - np.abs(rel - g.freq), px * 4)
    if g.pattern == "yoke":
        return _soft_step(g.duty - rel, px * 4)
    return np.zeros(np.broadcast(pu, pv).shape, dtype=np.float32)


def _bilinear_noise(rng: np.random.Generator, scale: float) -> np.ndarray:
    """Smooth random texture in [0, 1]: a coarse random grid, bilinearly upsampled."""
    gh = int(IMAGE_HEIGHT / scale) + 2
    gw = int(IMAGE_WIDTH / scale) + 2
    grid = rng.random((gh, gw), dtype=np.float32)
    fy = _Y[:, 0] / scale
    fx = _X[0] / scale
    iy, ix = fy.astype(int), fx.astype(int)
    wy = (fy - iy.astype(np.float32))[:, None]
    wx = (fx - ix.astype(np.float32))[None, :]
    top = grid[iy][:, ix] * (1 - wx) + grid[iy][:, ix + 1] * wx
    bot = grid[iy + 1][:, ix] * (1 - wx) + grid[iy + 1][:, ix + 1] * wx
    return top * (1 - wy) + bot * wy


def render_background(rng: np.random.Generator, cam: Camera) -> np.ndarray:
    """The scene behind the person in this camera's style, with a random offset per image.

    A wall colour above the horizon and a floor colour below it, with a texture in the third
    colour (seams, tiles, clutter, ground markings or a railing) mixed in.
    """
    c0, c1, c2 = cam.tone(cam.bg_colors)
    horizon = (cam.horizon + rng.uniform(-0.06, 0.06)) * IMAGE_HEIGHT
    below = (_Y > horizon).astype(np.float32)  # (H, 1)
    scale = cam.bg_scale
    ox, oy = (float(o) for o in rng.uniform(0, 4 * scale, size=2))
    style = cam.background
    base = c0 + below[..., None] * (c1 - c0)  # (H, 1, 3)
    if style == 0:  # wall with seams
        w = 0.35 * _stripes(_X + ox, 1.0 / (2 * scale), 0.08, 1.0) * (1 - below)
    elif style == 1:  # tiles
        w = np.maximum(
            _stripes(_X + ox, 1.0 / scale, 0.12, 1.0), _stripes(_Y + oy, 1.0 / scale, 0.12, 1.0)
        ) * (1 - below)
    elif style == 2:  # foliage / clutter
        w = _bilinear_noise(rng, scale) * (1 - below)
    elif style == 3:  # open space: a gradient, markings on the ground
        w = (_Y / IMAGE_HEIGHT) * (1 - below) + 0.5 * below * _stripes(
            _Y + oy, 1.0 / (1.5 * scale), 0.15, 1.0
        )
        w = np.broadcast_to(w, (IMAGE_HEIGHT, IMAGE_WIDTH))
    else:  # railing
        w = _stripes(_X + ox, 1.0 / scale, 0.25, 1.0) * (1 - below)
    return np.ascontiguousarray(base + w[..., None] * (c2 - base), dtype=np.float32)


class _Painter:
    """Paints layers as material labels (one channel) and colours them all at once at the end.

    Each layer is a mask with a colour, or two colours mixed by a pattern map ``t``; later layers
    cover earlier ones.
    """

    def __init__(self, shape: tuple[int, int]) -> None:
        self.label = np.zeros(shape, dtype=np.uint8)
        self.t = np.zeros(shape, dtype=np.float32)
        self.color_a: list[np.ndarray] = [np.zeros(3, dtype=np.float32)]
        self.color_b: list[np.ndarray] = [np.zeros(3, dtype=np.float32)]

    def paint(
        self,
        mask: np.ndarray,
        color: np.ndarray,
        color_b: np.ndarray | None = None,
        t: np.ndarray | None = None,
    ) -> None:
        self.label[mask] = len(self.color_a)
        self.color_a.append(color)
        self.color_b.append(color if color_b is None else color_b)
        if t is None:
            self.t[mask] = 0.0
        else:
            self.t[mask] = np.broadcast_to(t, mask.shape)[mask]

    def garment(self, mask: np.ndarray, g: Garment, colors: np.ndarray, t: np.ndarray) -> None:
        self.paint(mask, colors[g.color_a], colors[g.color_b], t)

    def compose(self, canvas: np.ndarray, shade: np.ndarray, cam: Camera) -> np.ndarray:
        """Write the layers as ``cam`` records them, darkened by ``shade``, over ``canvas``.

        Returns the mask of painted pixels.
        """
        mask = self.label > 0
        a = np.take(cam.tone(self.color_a), self.label, axis=0)
        b = np.take(cam.tone(self.color_b), self.label, axis=0)
        person = (a + self.t[..., None] * (b - a)) * shade[..., None]
        np.copyto(canvas, person, where=mask[..., None])
        return mask


@dataclass
class _Body:
    """One person in one image, in body coordinates, with the painter the parts are drawn by."""

    person: Identity
    pose: Pose
    u: np.ndarray  # (1, W) horizontal offset from the body axis (mirrored when flipped)
    v: np.ndarray  # (H, 1) 0 at the top of the head, 1 at the soles
    ub: np.ndarray  # u in body width (narrower in side view)
    px: float  # one pixel in body units
    colors: np.ndarray
    skin: np.ndarray
    pen: _Painter

    @property
    def side(self) -> bool:
        return self.pose.view == SIDE

    @property
    def hr(self) -> float:  # head radius
        return self.person.head

    @property
    def vs(self) -> float:  # shoulders
        return 2 * self.person.head + 0.02

    @property
    def vh(self) -> float:  # hips
        return self.vs + self.person.torso


_ANKLES = 0.965  # v of the ankles (shoes below)


def render_person(
    rng: np.random.Generator, canvas: np.ndarray, person: Identity, pose: Pose, cam: Camera
) -> np.ndarray:
    """Paint ``person`` as ``cam`` records it onto ``canvas`` (in place); return the mask.

    Only the columns that the person can reach are computed (a crop of ``canvas``). The parts are
    painted back to front: legs, torso, backpack, arms, bag, head.
    """
    reach = 0.3 * pose.size
    x0 = min(max(int(np.floor(pose.xc - reach)), 0), IMAGE_WIDTH - 1)
    x1 = min(max(int(np.ceil(pose.xc + reach)), x0 + 1), IMAGE_WIDTH)
    canvas = canvas[:, x0:x1]
    px = 1.0 / pose.size
    u = (_X[:, x0:x1] - pose.xc) * px  # (1, W)
    if pose.flip:
        u = -u
    colors = PALETTE * rng.uniform(0.93, 1.07, size=(len(PALETTE), 1)).astype(np.float32)
    skin = SKIN[person.skin] * float(rng.uniform(0.95, 1.05))
    body = _Body(
        person=person,
        pose=pose,
        u=u,
        v=(_Y - pose.top) * px,  # (H, 1)
        ub=u / 0.7 if pose.view == SIDE else u,
        px=px,
        colors=colors,
        skin=skin,
        pen=_Painter((IMAGE_HEIGHT, x1 - x0)),
    )
    _paint_legs(body)
    torso, t_upper = _paint_torso(body)
    _paint_backpack(body, torso)
    _paint_arms(body, t_upper)
    _paint_bag(body, torso)
    _paint_head(body)
    # Round-body shading: darker towards the silhouette's sides.
    shade = 1.0 - 0.35 * np.minimum((body.ub / (person.shoulder * 1.4)) ** 2, 1.0)
    return body.pen.compose(canvas, shade ** np.float32(1.0 / cam.gamma), cam)


def _paint_legs(b: _Body) -> None:
    """Legs, lower garment (trousers, shorts or skirt), shoes."""
    person, pose, v, ub, vh, pen = b.person, b.pose, b.v, b.ub, b.vh, b.pen
    hw = person.hip
    dv = np.maximum(v - vh, 0.0)
    legs = np.zeros(pen.label.shape, dtype=bool)
    for s in (-1.0, 1.0):
        centre = s * pose.stride * 1.6 * dv if b.side else s * (hw * 0.5 + pose.stride * dv)
        legs |= (np.abs(ub - centre) < person.leg) & (v >= vh) & (v <= 1.0)
    legs |= (np.abs(ub) < hw * 0.95) & (v >= vh) & (v < vh + 0.05)  # pelvis
    lower = person.lower
    rel_l = (v - vh) / (1.0 - vh)
    t_lower = pattern(lower, ub, v - vh, rel_l, b.px)
    pen.paint(legs, b.skin)
    if lower.extent == 2.0:  # skirt
        cover = legs & (v < vh + 0.05)
        flare = hw + 0.07 * _clip01((v - vh) / 0.24)
        cover |= (np.abs(ub) < flare) & (v >= vh) & (v < vh + 0.24)
    else:
        cover = legs & (v < (_ANKLES if lower.extent == 1.0 else vh + 0.17))
    pen.garment(cover, lower, b.colors, t_lower)
    shoes = legs & (v > _ANKLES)
    if b.side:
        shoes |= (v > _ANKLES) & (v <= 1.0) & (ub > -person.leg) & (ub < person.leg * 2.6)
    pen.paint(shoes, b.colors[person.shoes])


def _paint_torso(b: _Body) -> tuple[np.ndarray, np.ndarray]:
    """Torso (with a coat hanging below the hips), a backpack seen from the side, the belt;
    returns the torso mask and the upper garment's pattern map."""
    person, v, ub, vs, vh, pen = b.person, b.v, b.ub, b.vs, b.vh, b.pen
    sw, hw = person.shoulder, person.hip
    upper = person.upper
    taper = _clip01((v - vs) / (vh - vs))
    half = sw + (hw - sw) * taper
    half = half * _clip01(0.55 + (v - vs) / 0.035 * 0.45)  # round shoulders
    half = np.where(v > vh, hw + 0.02, half)
    torso = (np.abs(ub) < half) & (v >= vs) & (v < vh + person.coat)
    rel_u = (v - vs) / (vh - vs)
    t_upper = pattern(upper, ub, v - vs, rel_u, b.px)
    if b.side and person.backpack >= 0:
        pack = (ub > sw * 0.8) & (ub < sw * 0.8 + 0.09) & (v > vs + 0.02) & (v < vs + 0.22)
        pen.paint(pack, b.colors[person.backpack] * 0.9)
    pen.garment(torso, upper, b.colors, t_upper)
    if person.belt and person.coat == 0.0:
        pen.paint(torso & (v > vh - 0.018), b.colors[0])
    return torso, t_upper


def _paint_backpack(b: _Body, torso: np.ndarray) -> None:
    """A backpack seen from behind, or its straps from the front."""
    person, view, v, ub, vs, vh = b.person, b.pose.view, b.v, b.ub, b.vs, b.vh
    sw = person.shoulder
    if person.backpack >= 0 and view == BACK:
        pack = (np.abs(ub) < sw * 0.78) & (v > vs + 0.03) & (v < vs + 0.24)
        b.pen.paint(pack, b.colors[person.backpack])
        flap = pack & (v > vs + 0.03) & (v < vs + 0.09)
        b.pen.paint(flap, b.colors[person.backpack] * 0.7)
    elif person.backpack >= 0 and view == FRONT:
        straps = (np.abs(np.abs(ub) - sw * 0.55) < 0.014) & torso & (v < vh - 0.04)
        b.pen.paint(straps, b.colors[person.backpack] * 0.8)


def _paint_arms(b: _Body, t_upper: np.ndarray) -> None:
    """Arms: the upper garment down to the sleeve end, skin below."""
    person, pose, v, ub, vs = b.person, b.pose, b.v, b.ub, b.vs
    upper, sw = person.upper, person.shoulder
    arm_len = person.torso + 0.1
    da = np.maximum(v - vs, 0.0)
    arm_range = (v >= vs + 0.005) & (v < vs + arm_len)
    sleeve_end = vs + 0.02 + (arm_len - 0.07) * upper.extent
    for s in (1.0,) if b.side else (-1.0, 1.0):
        if b.side:
            centre = pose.swing * da
        else:
            centre = s * (sw + person.arm * 0.7) + s * abs(pose.swing) * 0.25 * da
        arm = (np.abs(ub - centre) < person.arm) & arm_range
        sleeve = arm & (v < sleeve_end)
        b.pen.paint(arm, b.skin)
        b.pen.garment(sleeve, upper, b.colors, t_upper)


def _paint_bag(b: _Body, torso: np.ndarray) -> None:
    """Shoulder bag: the bag at one hip, its strap across the body."""
    person, v, ub = b.person, b.v, b.ub
    if person.bag < 0:
        return
    bs, hw, vh = person.bag_side, person.hip, b.vh
    bag = (bs * ub > hw - 0.01) & (bs * ub < hw + 0.09) & (v > vh - 0.06) & (v < vh + 0.1)
    if b.pose.view != SIDE:
        line = ub * bs * 0.9 - (v - b.vs) * 0.75 + 0.07
        strap = (np.abs(line) < 0.012) & torso
        b.pen.paint(strap, b.colors[person.bag] * 0.8)
    b.pen.paint(bag, b.colors[person.bag])


def _paint_head(b: _Body) -> None:
    """Neck, head, hair (long hair behind the shoulders), hat."""
    person, view, u, v, hr, vs, pen = b.person, b.pose.view, b.u, b.v, b.hr, b.vs, b.pen
    hair = HAIR[person.hair]
    head = ((u / (0.85 * hr)) ** 2 + ((v - hr) / hr) ** 2) < 1.0
    neck = (np.abs(u) < hr * 0.45) & (v >= 1.8 * hr) & (v < vs + 0.01)
    if person.long_hair and view != BACK:
        back_hair = (np.abs(u) < hr * 1.0) & (v > hr) & (v < vs + 0.07)
        pen.paint(back_hair, hair)
    pen.paint(neck, b.skin)
    if view == BACK:
        pen.paint(head, hair)
        if person.long_hair:
            pen.paint((np.abs(u) < hr * 0.95) & (v >= hr) & (v < vs + 0.1), hair)
    else:
        pen.paint(head, b.skin)
        cap = head & (v < hr * (0.75 if view == FRONT else 0.9))
        if b.side:
            cap |= head & (u > hr * 0.1)
        pen.paint(cap, hair)
    if person.hat >= 0:
        if person.hat_kind == 0:  # cap with a brim
            crown = head & (v < hr * 0.85)
            brim = (np.abs(v - hr * 0.8) < 0.01) & (np.abs(u) < hr * 1.15)
            hat = crown | brim
        else:  # beanie, a bit taller than the head
            hat = (((u / (0.95 * hr)) ** 2 + ((v - hr * 0.75) / hr) ** 2) < 1.0) & (v < hr * 0.85)
        pen.paint(hat, b.colors[person.hat])


def render_occluder(rng: np.random.Generator, canvas: np.ndarray, cam: Camera) -> None:
    """Hide part of the image behind a bench / car (bottom), a passer-by (side) or a pole."""
    color = cam.tone(rng.uniform(0.05, 0.9, size=3))
    kind = int(rng.integers(3))
    if kind == 0:
        top = IMAGE_HEIGHT * rng.uniform(0.6, 0.85)
        mask = _Y > top
        mask = mask & (np.abs(_X - rng.uniform(0, IMAGE_WIDTH)) < rng.uniform(20, 64))
        lines = _stripes(_Y, 1.0 / rng.uniform(4, 10), 0.2, 1.0)[..., None]
        texture = color * (1 - 0.4 * lines)
        canvas[:] = np.where(mask[..., None], texture, canvas)
        return
    if kind == 1:
        width = rng.uniform(8, 22)
        edge = _X < width if rng.random() < 0.5 else _X > IMAGE_WIDTH - width
        mask = edge & (_Y > IMAGE_HEIGHT * rng.uniform(0.0, 0.4))
    else:
        mask = np.abs(_X - rng.uniform(4, IMAGE_WIDTH - 4)) < rng.uniform(1.5, 3.5)
        mask = mask & (_Y > -1)
    canvas[mask] = color


def render_image(
    rng: np.random.Generator, cam: Camera, person: Identity | None, pose: Pose
) -> np.ndarray:
    """One ``(128, 64, 3)`` ``uint8`` image; ``person=None`` gives background only."""
    canvas = render_background(rng, cam)
    if person is not None:
        render_person(rng, canvas, person, pose, cam)
    if pose.occlude:
        render_occluder(rng, canvas, cam)
    return apply_camera(rng, canvas, cam, pose.light)
