"""The synthetic appearance/motion benchmark: procedurally rendered clips with known factors.

Each clip shows one saturated coloured shape over a grey textured background.

- **Appearance task** (``label``, like K400): the object's (shape, colour),
  ``len(SHAPES) * len(COLOURS)`` classes. One frame suffices.
- **Motion task** (``motion_label``, like SSv2): what happens over time
  (:data:`MOTIONS`). The classes come in time-reversed pairs (left/right,
  up/down, clockwise/counterclockwise, closer/away, camera pan left/right,
  enters-and-stops/starts-and-leaves: an order of events) and every trajectory is symmetric about the middle frame,
  so the *set* of frames of a clip has the same distribution for both members of
  a pair: a single frame, or frames without their order, tell nothing about the
  pair; only temporal order does. The middle frame is identical in distribution
  for all classes. Motion is sampled independently of appearance.

Each clip is a pure function of ``(seed, split, index)``: generation is
resumable (existing files are kept) and parallel. Rendering is vectorised numpy
over ``[T, H, W]``; videos are h264/yuv420p mp4 written with PyAV.

A long-video split concatenates several actions of one object, with still
gaps between them, and records their time segments for localization.

**Pretraining text** comes in two regimes (:class:`CaptionConfig`), after the
paper's corpus (Sec. 2.1, Table 1: 36M clips with high-quality captions, 582M
with noisy text from ASR, metadata, mined image captions or VLMs):

- ``mixed`` (default): a small clean part whose captions state appearance and
  motion, and a large noisy part written like web/ASR text -- it names the
  object, its colour and the scene among irrelevant words, and states the
  motion rarely and sometimes wrongly. Stage 1 learns motion mostly from the
  videos' few clean captions; stage 2, which reads no text, can learn it from
  all videos (the premise of the paper's second stage).
- ``clean``: every clip has a clean caption, so the text supervises the motion
  task fully and stage 2 has little left to teach.

``pretrain.jsonl`` holds the configured regime, ``pretrain_clean.jsonl`` the
clean captions of the same videos. Probe and test labels and captions are
always clean.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from open_videoprism.atomic import write_bytes, write_json, write_jsonl

SHAPES: tuple[str, ...] = ("triangle", "square", "star", "cross")
COLOURS: dict[str, tuple[int, int, int]] = {
    # Saturated, far apart in chroma so they survive yuv420p subsampling.
    "red": (230, 30, 30),
    "green": (30, 200, 50),
    "blue": (40, 70, 235),
    "yellow": (245, 215, 20),
}
TEXTURES: tuple[str, ...] = ("striped", "checkered", "dotted")

# (name, caption phrase, short answer for "what happens?")
MOTIONS: tuple[tuple[str, str, str], ...] = (
    ("slide_left", "slides to the left", "left"),
    ("slide_right", "slides to the right", "right"),
    ("slide_up", "slides up", "up"),
    ("slide_down", "slides down", "down"),
    ("rotate_cw", "rotates clockwise", "clockwise"),
    ("rotate_ccw", "rotates counterclockwise", "counterclockwise"),
    ("approach", "comes closer", "closer"),
    ("recede", "moves away", "away"),
    ("pan_left", "stays while the camera pans to the left", "pan left"),
    ("pan_right", "stays while the camera pans to the right", "pan right"),
    ("enter", "enters the scene and stops", "enters"),
    ("leave", "starts moving and leaves the scene", "leaves"),
)
SPEEDS: dict[str, float] = {"slowly": 1.0, "quickly": 2.0}

SPLITS: tuple[str, ...] = ("pretrain", "probe_train", "test")
SPLIT_FRACTIONS: dict[str, float] = {"pretrain": 0.5, "probe_train": 0.25, "test": 0.25}
LONG_SPLIT = "long"


def appearance_classes() -> list[str]:
    """Class names of the appearance task, index = ``label``: ``"red triangle"``, ..."""
    return [f"{c} {s}" for s in SHAPES for c in COLOURS]


def motion_classes() -> list[str]:
    """Class names of the motion task, index = ``motion_label``: ``"slides to the left"``, ..."""
    return [phrase for _, phrase, _ in MOTIONS]


@dataclass
class SynthConfig:
    """Geometry and timing of the rendered clips (sizes in pixels scale with ``size``)."""

    num_frames: int = 16
    size: int = 72
    fps: float = 8.0
    object_radius: float = 0.25         # circumradius, fraction of the frame side (18 px at 72)
    slide_speed: float = 0.02           # fraction of the frame side per frame, at speed 1 ("slowly")
    rotate_speed: float = 4.0           # degrees per frame at speed 1
    pan_speed: float = 0.02
    scale_range: float = 0.35           # approach/recede: scale 1 -/+ this at the ends (x speed)
    long_segments: tuple[int, int] = (3, 4)      # actions per long video
    long_action_frames: tuple[int, int] = (12, 20)
    long_gap_frames: tuple[int, int] = (6, 12)
    crf: int = 18

    def __post_init__(self) -> None:
        if self.size % 2 or self.size < 16:
            raise ValueError(f"size must be even and >= 16, got {self.size}")
        if self.num_frames < 2:
            raise ValueError(f"num_frames must be >= 2, got {self.num_frames}")


CAPTION_REGIMES: tuple[str, ...] = ("mixed", "clean")


@dataclass
class CaptionConfig:
    """Which pretraining clips get a clean caption and how noisy the rest of the text is.

    The defaults follow the paper's corpus (Table 1): ``clean_fraction`` 36.1M manually
    captioned clips of 618M in all (0.058). Of the 582M noisy clips, 78.5M (13.5%) have
    VLM/LLM captions that can describe an action, the rest ASR, titles or mined image
    captions that describe speech, objects and scenes; so about one noisy text in ten
    says what moves how (``noisy_motion_rate``). ASR and titles describe what is said or
    meant rather than seen, and mined captions come from a similar image, so we take a
    third of those statements to be wrong (``noisy_wrong_rate``): an assumption, not a
    figure of the paper. Counts are exact: ``round(fraction * n)`` clips, chosen by a
    seeded permutation.
    """

    regime: str = "mixed"
    clean_fraction: float = 0.06
    noisy_motion_rate: float = 0.1
    noisy_wrong_rate: float = 0.3

    def __post_init__(self) -> None:
        if self.regime not in CAPTION_REGIMES:
            raise ValueError(f"caption regime must be one of {', '.join(CAPTION_REGIMES)}, got {self.regime!r}")
        for name in ("clean_fraction", "noisy_motion_rate", "noisy_wrong_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")


@dataclass
class ClipSpec:
    """The factors of one clip (what is rendered and what the captions say)."""

    shape: str
    colour: str
    texture: str
    motion: str
    speed: str
    center: tuple[float, float]          # object position at the middle frame, in [0, 1]
    angle: float                         # degrees at the middle frame
    side: str                            # enter/leave: the edge it comes from / goes to
    bg_phase: tuple[float, float]
    bg_gray: tuple[float, float]         # (dark, light) grey levels of the texture
    bg_period: float                     # texture period, fraction of the side

    @property
    def label(self) -> int:
        return SHAPES.index(self.shape) * len(COLOURS) + list(COLOURS).index(self.colour)

    @property
    def motion_label(self) -> int:
        return [m[0] for m in MOTIONS].index(self.motion)

    def factors(self) -> dict[str, Any]:
        return {
            "shape": self.shape, "colour": self.colour, "texture": self.texture,
            "motion": self.motion, "speed": self.speed,
            "center": [round(v, 4) for v in self.center], "angle": round(self.angle, 2),
            "side": self.side,
        }


def _rng(seed: int, *keys: Any) -> np.random.Generator:
    """A generator that depends only on the seed and the keys (stable across processes)."""
    digest = hashlib.sha256(repr((seed,) + keys).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def sample_spec(rng: np.random.Generator, motion: str | None = None) -> ClipSpec:
    """Draw independent appearance and motion factors."""
    dark = float(rng.uniform(70, 110))
    return ClipSpec(
        shape=SHAPES[rng.integers(len(SHAPES))],
        colour=list(COLOURS)[rng.integers(len(COLOURS))],
        texture=TEXTURES[rng.integers(len(TEXTURES))],
        motion=motion or MOTIONS[rng.integers(len(MOTIONS))][0],
        speed=list(SPEEDS)[rng.integers(len(SPEEDS))],
        center=(float(rng.uniform(0.3, 0.7)), float(rng.uniform(0.3, 0.7))),
        # Near-upright at the middle frame: a fixed orientation keeps the
        # shape readable from one frame (rotation classes turn around it).
        angle=float(rng.uniform(-10, 10)),
        side=("left", "right", "top", "bottom")[rng.integers(4)],
        bg_phase=(float(rng.uniform(0, 1)), float(rng.uniform(0, 1))),
        bg_gray=(dark, dark + float(rng.uniform(50, 80))),
        bg_period=float(rng.uniform(0.16, 0.24)),
    )


# -- geometry ----------------------------------------------------------------
def _shape_vertices(shape: str) -> np.ndarray:
    """Polar vertices ``[K, 2]`` (angle rad, radius as a fraction of the circumradius).

    All shapes are star-shaped around their centre, so the boundary is a radius
    function r(theta) and rasterising is a vectorised comparison.
    """
    # Image rows grow downwards, so angle -pi/2 points up.
    if shape == "triangle":
        a = np.arange(3) * 2 * np.pi / 3 - np.pi / 2
        return np.stack([a, np.ones(3)], 1)
    if shape == "square":  # corners at 45 degrees: edges axis-aligned, not a diamond
        a = np.arange(4) * np.pi / 2 + np.pi / 4
        return np.stack([a, np.ones(4)], 1)
    if shape == "star":
        a = np.arange(10) * np.pi / 5 - np.pi / 2
        return np.stack([a, np.where(np.arange(10) % 2 == 0, 1.0, 0.5)], 1)
    if shape == "cross":
        w = 0.38  # arm half-width
        pts = [(w, 1), (w, w), (1, w), (1, -w), (w, -w), (w, -1), (-w, -1), (-w, -w), (-1, -w), (-1, w), (-w, w), (-w, 1)]
        xy = np.array(pts) * 0.9
        return np.stack([np.arctan2(xy[:, 1], xy[:, 0]), np.hypot(xy[:, 0], xy[:, 1])], 1)
    raise ValueError(f"unknown shape {shape!r}")


def _radius(theta: np.ndarray, verts: np.ndarray) -> np.ndarray:
    """Boundary radius of the polygon with polar ``verts`` along directions ``theta``."""
    order = np.argsort(np.mod(verts[:, 0], 2 * np.pi))
    a = np.mod(verts[order, 0], 2 * np.pi)
    r = verts[order, 1]
    th = np.mod(theta, 2 * np.pi)
    k = np.searchsorted(a, th, side="right") - 1          # segment from vertex k to k+1 (mod K)
    k = np.mod(k, len(a))
    k1 = np.mod(k + 1, len(a))
    p0 = np.stack([r[k] * np.cos(a[k]), r[k] * np.sin(a[k])], -1)
    p1 = np.stack([r[k1] * np.cos(a[k1]), r[k1] * np.sin(a[k1])], -1)
    d = np.stack([np.cos(th), np.sin(th)], -1)
    e = p1 - p0
    num = p0[..., 0] * p1[..., 1] - p0[..., 1] * p1[..., 0]
    den = d[..., 0] * e[..., 1] - d[..., 1] * e[..., 0]
    return num / np.where(np.abs(den) < 1e-9, 1e-9, den)


def _trajectory(spec: ClipSpec, cfg: SynthConfig, t: np.ndarray) -> dict[str, np.ndarray]:
    """Per-frame parameters; ``t`` is time relative to the middle frame (symmetric)."""
    v = SPEEDS[spec.speed]
    n = len(t)
    cx = np.full(n, spec.center[0])
    cy = np.full(n, spec.center[1])
    angle = np.full(n, spec.angle)
    scale = np.ones(n)
    alpha = np.ones(n)
    bgx = np.zeros(n)
    bgy = np.zeros(n)
    half = max(abs(t[0]), abs(t[-1]), 1e-9)
    m = spec.motion
    s = cfg.slide_speed * v * t
    if m == "slide_left":
        cx = cx - s
    elif m == "slide_right":
        cx = cx + s
    elif m == "slide_up":
        cy = cy - s
    elif m == "slide_down":
        cy = cy + s
    elif m == "rotate_cw":  # image y points down: increasing screen angle is clockwise
        angle = angle + cfg.rotate_speed * v * t
    elif m == "rotate_ccw":
        angle = angle - cfg.rotate_speed * v * t
    elif m in ("approach", "recede"):
        k = (cfg.scale_range * v / 2) * t / half
        scale = np.exp(k if m == "approach" else -k)
    elif m in ("pan_left", "pan_right"):
        # A camera panning left sees the whole scene move right.
        p = cfg.pan_speed * v * t * (1 if m == "pan_left" else -1)
        cx = cx + p
        bgx = bgx + p
    elif m in ("enter", "leave"):
        # Enter: from beyond `side` to the centre by the middle frame, then
        # still; leave is its time reversal (same set of frames).
        tt = t if m == "leave" else -t
        frac = np.clip(tt / half, 0, 1)                     # 0 until the middle, then 0 -> 1
        far = 0.5 + cfg.object_radius * 1.6 + 0.5           # beyond the edge from any centre
        sign = -1.0 if spec.side in ("left", "top") else 1.0
        shift = sign * frac * far
        if spec.side in ("left", "right"):
            cx = cx + shift
        else:
            cy = cy + shift
    else:
        raise ValueError(f"unknown motion {m!r}")
    return {"cx": cx, "cy": cy, "angle": angle, "scale": scale, "alpha": alpha, "bgx": bgx, "bgy": bgy}


def _background(spec: ClipSpec, size: int, bgx: np.ndarray, bgy: np.ndarray) -> np.ndarray:
    """Grey texture ``[T, H, W]`` in [0, 255], shifted by (bgx, bgy) per frame."""
    g = (np.arange(size) + 0.5) / size
    x = g[None, None, :] - bgx[:, None, None] + spec.bg_phase[0]
    y = g[None, :, None] - bgy[:, None, None] + spec.bg_phase[1]
    p = spec.bg_period
    if spec.texture == "striped":  # diagonal, so pans in any direction are visible
        v = 0.5 + 0.5 * np.sin(2 * np.pi * (x + y) / p)
        v = np.clip((v - 0.5) * 3 + 0.5, 0, 1)
    elif spec.texture == "checkered":
        v = ((np.floor(x / (p / 2)) + np.floor(y / (p / 2))) % 2).astype(np.float64)
    elif spec.texture == "dotted":
        dx = (x % (p / 1.5)) / (p / 1.5) - 0.5
        dy = (y % (p / 1.5)) / (p / 1.5) - 0.5
        v = np.clip((0.3 - np.hypot(dx, dy)) * size * p / 1.5 + 0.5, 0, 1)
    else:
        raise ValueError(f"unknown texture {spec.texture!r}")
    dark, light = spec.bg_gray
    return dark + (light - dark) * np.broadcast_to(v, (len(bgx), size, size))


def render_frames(spec: ClipSpec, cfg: SynthConfig, num_frames: int | None = None) -> np.ndarray:
    """Render uint8 ``[T, H, W, 3]`` for ``spec`` (vectorised over frames and pixels)."""
    n = num_frames or cfg.num_frames
    size = cfg.size
    t = np.arange(n) - (n - 1) / 2
    tr = _trajectory(spec, cfg, t)
    bg = _background(spec, size, tr["bgx"], tr["bgy"])
    g = np.arange(size) + 0.5
    dx = g[None, None, :] - tr["cx"][:, None, None] * size
    dy = g[None, :, None] - tr["cy"][:, None, None] * size
    dist = np.hypot(dx, dy)
    theta = np.arctan2(dy, dx) - np.deg2rad(tr["angle"])[:, None, None]
    radius = _radius(theta, _shape_vertices(spec.shape)) * (cfg.object_radius * size) * tr["scale"][:, None, None]
    # One-pixel soft edge: antialiasing keeps the codec from ringing on hard steps.
    cover = np.clip(radius - dist + 0.5, 0.0, 1.0) * tr["alpha"][:, None, None]
    colour = np.asarray(COLOURS[spec.colour], dtype=np.float64)
    out = bg[..., None] * (1 - cover[..., None]) + colour * cover[..., None]
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


# -- captions and QA -----------------------------------------------------------
def _motion_phrase(spec: ClipSpec) -> str:
    phrase = dict((m[0], m[1]) for m in MOTIONS)[spec.motion]
    if spec.motion.startswith(("slide", "rotate", "approach", "recede")):
        phrase = f"{phrase} {spec.speed}"
    elif spec.motion == "enter":
        phrase = f"enters from the {spec.side} and stops"
    elif spec.motion == "leave":
        phrase = f"starts moving and leaves to the {spec.side}"
    return phrase


def captions_for(spec: ClipSpec) -> list[str]:
    """Several paraphrases; the first is the canonical caption."""
    obj = f"{spec.colour} {spec.shape}"
    mp = _motion_phrase(spec)
    bg = f"{spec.texture} background"
    return [
        f"a {obj} {mp} over a {bg}",
        f"on a {bg}, a {obj} {mp}",
        f"a video of a {obj} that {mp}",
    ]


# Words of ASR transcripts and video titles that say nothing about the clip. None of them is
# a motion word, so a noisy text states a motion only where one is put in on purpose.
FILLERS: tuple[str, ...] = (
    "so", "um", "okay", "you know", "like and subscribe", "check this out", "today we have", "really nice",
    "my favorite", "part 2", "hd", "wow", "look at this", "haha", "new video", "thanks for watching",
    "episode 4", "clip", "lol", "i think", "this one is", "over here", "guys",
)
MOTION_WORDS: tuple[str, ...] = (
    "slide", "slides", "rotate", "rotates", "clockwise", "counterclockwise", "closer", "away", "pans", "camera",
    "enters", "leaves", "moving", "left", "right", "up", "down", "slowly", "quickly", "stops", "stays",
)


def noisy_text(spec: ClipSpec, rng: np.random.Generator, motion: str | None) -> str:
    """Web/ASR-like text for ``spec``: the object and maybe the scene among filler words,
    plus ``motion`` (a :data:`MOTIONS` name, right or wrong) when given."""
    roll = rng.random()
    if roll < 0.7:
        obj = f"{spec.colour} {spec.shape}"
    elif roll < 0.85:
        obj = f"something {spec.colour}"
    else:
        obj = f"a {spec.shape}"
    pieces = [obj]
    if rng.random() < 0.5:
        pieces.append(f"{spec.texture} {('background', 'wallpaper', 'paper')[rng.integers(3)]}")
    if motion is not None:
        pieces.append(_motion_phrase(ClipSpec(**{**spec.__dict__, "motion": motion})))
    fillers = [FILLERS[i] for i in rng.choice(len(FILLERS), size=int(rng.integers(2, 5)), replace=False)]
    if rng.random() < 0.3:  # a title with tags
        return " | ".join([fillers[0], *pieces, *fillers[1:2]])
    words = pieces + fillers
    order = rng.permutation(len(words))
    return " ".join(words[i] for i in order)


def assign_texts(records: list[dict[str, Any]], seed: int, cfg: CaptionConfig) -> list[dict[str, Any]]:
    """Pretraining records with their text in ``cfg.regime`` (clean records are returned as they are).

    Each record gets ``text``: ``{"source": "clean" | "noisy", "motion": "stated" | "wrong" | "none"}``,
    so the regime can be checked by counting.
    """
    if cfg.regime == "clean":
        return [{**r, "text": {"source": "clean", "motion": "stated"}} for r in records]
    n = len(records)
    rng = _rng(seed, "text", n)
    order = rng.permutation(n)
    n_clean = int(round(cfg.clean_fraction * n))
    noisy = order[n_clean:]
    n_mention = int(round(cfg.noisy_motion_rate * len(noisy)))
    n_wrong = int(round(cfg.noisy_wrong_rate * n_mention))
    mention = {int(i): ("wrong" if k < n_wrong else "stated") for k, i in enumerate(noisy[:n_mention])}
    out = [dict(r) for r in records]
    for i in noisy.tolist():
        r = out[i]
        spec_rng = _rng(seed, "noisy", r["path"])
        spec = sample_spec(_rng(seed, r["split"], int(Path(r["path"]).stem)))  # the clip's own factors
        kind = mention.get(i, "none")
        motion = None
        if kind == "stated":
            motion = spec.motion
        elif kind == "wrong":
            others = [m[0] for m in MOTIONS if m[0] != spec.motion]
            motion = others[int(spec_rng.integers(len(others)))]
        text = noisy_text(spec, spec_rng, motion)
        r.update(caption=text, captions=[text], text={"source": "noisy", "motion": kind})
    for i in order[:n_clean].tolist():
        out[i]["text"] = {"source": "clean", "motion": "stated"}
    return out


def qa_for(spec: ClipSpec) -> list[dict[str, str]]:
    """Question/answer pairs derived from the factors."""
    answer = dict((m[0], m[2]) for m in MOTIONS)[spec.motion]
    qa = [
        {"question": "what color is the object?", "answer": spec.colour},
        {"question": "what shape is the object?", "answer": spec.shape},
        {"question": "what is the background?", "answer": spec.texture},
        {"question": "what happens in the video?", "answer": answer},
    ]
    if spec.motion.startswith("slide"):
        qa.append({"question": "which way does the object move?", "answer": answer})
    if spec.motion.startswith(("slide", "rotate", "approach", "recede", "pan")):
        qa.append({"question": "how fast is the motion?", "answer": "slow" if spec.speed == "slowly" else "fast"})
    return qa


def clip_record(spec: ClipSpec, path: str, split: str) -> dict[str, Any]:
    caps = captions_for(spec)
    return {
        "path": path, "caption": caps[0], "captions": caps, "label": spec.label,
        "motion_label": spec.motion_label, "factors": spec.factors(), "qa": qa_for(spec), "split": split,
    }


# -- long videos ---------------------------------------------------------------
def render_long(seed: int, index: int, cfg: SynthConfig) -> tuple[np.ndarray, dict[str, Any]]:
    """A long video: one object performing several actions separated by still gaps.

    Returns the frames and the manifest record (``segments`` in seconds,
    ``label`` the appearance class, each segment's ``label`` its motion class).
    """
    rng = _rng(seed, LONG_SPLIT, index)
    base = sample_spec(rng)
    k = int(rng.integers(cfg.long_segments[0], cfg.long_segments[1] + 1))
    motions = [MOTIONS[i][0] for i in rng.choice(len(MOTIONS), size=k, replace=False)]
    parts: list[np.ndarray] = []
    segments: list[dict[str, Any]] = []
    frame = 0

    def still(n: int) -> np.ndarray:
        s = ClipSpec(**{**base.__dict__, "motion": "slide_left", "speed": "slowly"})
        one = render_frames(s, cfg, num_frames=1)
        return np.repeat(one, n, axis=0)

    for motion in motions:
        gap = int(rng.integers(cfg.long_gap_frames[0], cfg.long_gap_frames[1] + 1))
        parts.append(still(gap))
        frame += gap
        n = int(rng.integers(cfg.long_action_frames[0], cfg.long_action_frames[1] + 1))
        spec = ClipSpec(**{**base.__dict__, "motion": motion, "speed": list(SPEEDS)[rng.integers(len(SPEEDS))]})
        parts.append(render_frames(spec, cfg, num_frames=n))
        segments.append({
            "start": round(frame / cfg.fps, 4), "end": round((frame + n) / cfg.fps, 4),
            "label": spec.motion_label, "caption": captions_for(spec)[0],
        })
        frame += n
    tail = int(rng.integers(cfg.long_gap_frames[0], cfg.long_gap_frames[1] + 1))
    parts.append(still(tail))
    frames = np.concatenate(parts)
    caption = f"a {base.colour} {base.shape} over a {base.texture} background " + ", then ".join(
        dict((m[0], m[1]) for m in MOTIONS)[m] for m in motions
    )
    record = {
        "path": f"videos/{LONG_SPLIT}/{index:06d}.mp4", "caption": caption, "captions": [caption],
        "label": base.label, "num_frames": int(len(frames)), "fps": cfg.fps,
        "duration": round(len(frames) / cfg.fps, 4), "segments": segments,
        "factors": {"shape": base.shape, "colour": base.colour, "texture": base.texture, "motions": motions},
        "split": LONG_SPLIT,
    }
    return frames, record


# -- generation ---------------------------------------------------------------
def split_sizes(total: int, pretrain: int | None = None) -> dict[str, int]:
    """Clips per split: pretrain 1/2, probe_train 1/4, test 1/4 of ``total`` (each >= 1);
    with ``pretrain`` given, that many pretraining clips and ``total`` split evenly between
    probe_train and test."""
    if pretrain is not None:
        return {"pretrain": max(1, pretrain), "probe_train": max(1, total // 2), "test": max(1, total - total // 2)}
    sizes = {s: max(1, int(round(total * f))) for s, f in SPLIT_FRACTIONS.items()}
    sizes["pretrain"] = max(1, total - sizes["probe_train"] - sizes["test"])
    return sizes


def make_clip(seed: int, split: str, index: int, cfg: SynthConfig) -> tuple[np.ndarray, dict[str, Any]]:
    """Frames and manifest record of clip ``index`` of ``split`` (a pure function of its arguments)."""
    rng = _rng(seed, split, index)
    spec = sample_spec(rng)
    return render_frames(spec, cfg), clip_record(spec, f"videos/{split}/{index:06d}.mp4", split)


@dataclass
class _Job:
    out: str
    seed: int
    split: str
    index: int
    cfg: SynthConfig = field(default_factory=SynthConfig)
    overwrite: bool = False


def _run_job(job: _Job) -> dict[str, Any]:
    from open_videoprism.data.encode import write_video

    frames: np.ndarray | None
    if job.split == LONG_SPLIT:
        frames, record = render_long(job.seed, job.index, job.cfg)
        path = Path(job.out) / record["path"]
    else:
        # The record is a cheap function of the seed: resuming renders only
        # the videos that are missing (files only appear complete, by rename).
        spec = sample_spec(_rng(job.seed, job.split, job.index))
        record = clip_record(spec, f"videos/{job.split}/{job.index:06d}.mp4", job.split)
        path = Path(job.out) / record["path"]
        frames = None if (path.is_file() and not job.overwrite) else render_frames(spec, job.cfg)
    if frames is not None and (job.overwrite or not path.is_file()):
        write_video(path, frames, job.cfg.fps, crf=job.cfg.crf)
    return record


def train_tokenizer(captions: list[str], out: str | os.PathLike, vocab_size: int = 200) -> Path:
    """Train a small SentencePiece BPE model on canonicalised captions (ids: pad 0, eos 1, unk 2, no bos).

    The special ids follow the released c4_en vocabulary, so the library's
    :class:`~open_videoprism.tokenizer.Tokenizer` treats it like the real one.
    ``hard_vocab_limit=False`` lets the vocabulary come out smaller when the
    captions have fewer distinct pieces. BPE rather than unigram: on a few
    dozen distinct words the unigram trainer prunes to ~70 sub-word pieces
    ("tri an g le"), while BPE keeps every caption word whole.
    """
    import io

    import sentencepiece as spm

    from open_videoprism.tokenizer import canonicalize_text

    out = Path(out)
    text = [canonicalize_text(c) for c in captions]  # repeats kept: BPE merges by frequency
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(text), model_writer=model, vocab_size=vocab_size, model_type="bpe",
        hard_vocab_limit=False, pad_id=0, eos_id=1, unk_id=2, bos_id=-1, num_threads=1,
        character_coverage=1.0, minloglevel=2,
    )
    return write_bytes(out, model.getvalue())


def generate(
    out_dir: str | os.PathLike,
    clips: int = 200,
    *,
    seed: int = 0,
    long_videos: int | None = None,
    cfg: SynthConfig | None = None,
    workers: int = 1,
    overwrite: bool = False,
    vocab_size: int = 320,
    progress: bool = True,
    captions: CaptionConfig | None = None,
    pretrain_clips: int | None = None,
) -> dict[str, Any]:
    """Write the benchmark into ``out_dir``; returns a summary (counts per split, paths).

    Layout: ``videos/<split>/NNNNNN.mp4``, ``pretrain.jsonl`` (text in the ``captions``
    regime), ``pretrain_clean.jsonl`` (the same videos with clean captions),
    ``probe_train.jsonl`` (split 80/20 into ``probe_fit.jsonl`` and ``probe_val.jsonl`` for
    choosing evaluation settings without the test set), ``test.jsonl``, ``long.jsonl``,
    ``qa.jsonl``, ``classes.json``, ``tokenizer.model``, ``synth.json`` (the generation settings). Paths in manifests are relative to
    ``out_dir``. Re-running with the same settings keeps the videos already written.
    """
    from open_videoprism.progress import progress_bar

    cfg = cfg or SynthConfig()
    captions = captions or CaptionConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = {"clips": clips, "seed": seed, "long_videos": long_videos, "config": {
        k: list(v) if isinstance(v, tuple) else v for k, v in cfg.__dict__.items()},
        "captions": dict(captions.__dict__), "vocab_size": vocab_size, "pretrain_clips": pretrain_clips}
    prev = out / "synth.json"
    if prev.is_file() and not overwrite:
        old = json.loads(prev.read_text())
        if old != settings:
            # Different settings would mix videos of two configurations.
            overwrite = True
    write_json(prev, settings)
    sizes = split_sizes(clips, pretrain_clips)
    n_long = max(2, clips // 25) if long_videos is None else long_videos
    jobs = [_Job(str(out), seed, s, i, cfg, overwrite) for s in SPLITS for i in range(sizes[s])]
    jobs += [_Job(str(out), seed, LONG_SPLIT, i, cfg, overwrite) for i in range(n_long)]
    records: list[dict[str, Any]]
    bar = progress_bar(total=len(jobs), desc="synth", unit="video", enabled=progress)
    if workers > 1:
        import multiprocessing as mp

        # fork where available: spawned workers would re-import torch (~2 s each);
        # the workers only use numpy and PyAV, which are fork-safe.
        method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
        with mp.get_context(method).Pool(workers) as pool:
            records = []
            for r in pool.imap(_run_job, jobs, chunksize=8):
                records.append(r)
                bar.update()
    else:
        records = []
        for j in jobs:
            records.append(_run_job(j))
            bar.update()
    bar.close()
    by_split: dict[str, list[dict[str, Any]]] = {s: [] for s in (*SPLITS, LONG_SPLIT)}
    for r in records:
        by_split[r["split"]].append(r)
    clean_pretrain = by_split["pretrain"]
    by_split["pretrain"] = assign_texts(clean_pretrain, seed, captions)
    manifests = {s: str(write_jsonl(out / f"{s}.jsonl", rs)) for s, rs in by_split.items()}
    manifests["pretrain_clean"] = str(write_jsonl(out / "pretrain_clean.jsonl", clean_pretrain))
    probe = by_split["probe_train"]
    val = set(_rng(seed, "probe_val").permutation(len(probe))[: max(1, len(probe) // 5)].tolist())
    manifests["probe_fit"] = str(write_jsonl(out / "probe_fit.jsonl", [r for i, r in enumerate(probe) if i not in val]))
    manifests["probe_val"] = str(write_jsonl(out / "probe_val.jsonl", [r for i, r in enumerate(probe) if i in val]))
    qa = [{"path": r["path"], "split": r["split"], **q} for s in SPLITS for r in by_split[s] for q in r["qa"]]
    write_jsonl(out / "qa.jsonl", qa)
    write_json(out / "classes.json", {
        "label": appearance_classes(), "motion_label": motion_classes(),
        "shape": list(SHAPES), "colour": list(COLOURS), "texture": list(TEXTURES),
        "prompts": {"label": "a video of a {}.", "motion_label": "a video of an object that {}."},
    })
    # One vocabulary for both regimes, the test captions' phrasing and the QA pairs.
    texts = [c for r in by_split["pretrain"] + clean_pretrain for c in r["captions"]]
    texts += [f"{q['question']} {q['answer']}" for r in clean_pretrain for q in r["qa"]]
    tok = train_tokenizer(texts, out / "tokenizer.model", vocab_size=vocab_size)
    return {"out": str(out), "sizes": {s: len(rs) for s, rs in by_split.items()},
            "manifests": manifests, "tokenizer": str(tok)}
