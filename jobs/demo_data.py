"""Synthetic street-and-sky scenes for the demo lake and the tests.

Each image is drawn from its own seed (``seed``, index), so any slice of the
data set comes out the same whatever the number of workers. A scene has one
main object (the true label) and maybe a few small ones, under conditions:
time of day, weather, camera, and, rarely, the hidden edge case. Which edge
case is the demo's ``kind`` (EDGE_KINDS); each is a different way a
production model fails, and each looks different to an embedding:

- ``glare`` (the default): sun glare; the simulated model is often wrong on it,
  and often *confidently* wrong, so low-confidence review alone misses much of it.
- ``unseen_class``: a horse, an object the model was never trained on; it calls
  it something else, with middling confidence.
- ``new_camera``: a new camera (cam-08) with a magenta cast, a noisier sensor
  and dark corners.
- ``snow``: a weather the model never saw: snow on the ground, flakes, a pale sky.
- ``small_occluded``: the main object tiny and half hidden behind a post.

Only the edge images draw extra random numbers, so for ``glare`` the data set is
exactly what it was before the other kinds existed.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

CLASSES = ("car", "truck", "person", "bicycle", "dog", "plane")
EDGE_KINDS = ("glare", "unseen_class", "new_camera", "snow", "small_occluded")
UNSEEN_CLASS = "horse"  # never in CLASSES: the simulated model has no such output
NEW_CAMERA = "cam-08"
CLASS_P = (0.32, 0.14, 0.22, 0.12, 0.1, 0.1)
TIMES = ("day", "dusk", "night")
TIME_P = (0.6, 0.25, 0.15)
WEATHERS = ("clear", "rain", "fog")
WEATHER_P = (0.7, 0.15, 0.15)
SIZES = ("small", "medium", "large")
SIZE_P = (0.25, 0.5, 0.25)
SIZE_SCALE = {"small": 0.22, "medium": 0.4, "large": 0.62, "tiny": 0.11}
CAMERAS = tuple(f"cam-{i:02d}" for i in range(1, 8))  # cam-07 is the new camera with a colour cast
CAMERA_P = (0.17, 0.17, 0.16, 0.16, 0.15, 0.15, 0.04)
REGIONS = ("eu-west", "us-east", "ap-south")
START = datetime(2026, 10, 1, tzinfo=UTC)
DAYS = 14

SKY = {
    "day": ((110, 170, 235), (190, 220, 250)),
    "dusk": ((70, 60, 120), (250, 150, 80)),
    "night": ((8, 10, 30), (30, 35, 60)),
}
GROUND = {"day": (95, 100, 95), "dusk": (70, 60, 60), "night": (20, 20, 25)}


@dataclass
class Scene:
    index: int
    true_label: str
    size: str
    time_of_day: str
    weather: str
    glare: bool
    camera: str
    region: str
    ts: datetime
    boxes: list[tuple[str, tuple[float, float, float, float]]] = field(default_factory=list)
    edge_kind: str | None = None  # one of EDGE_KINDS when the scene is the lake's edge case
    occluded: bool = False

    @property
    def is_edge_case(self) -> bool:
        return self.glare or self.edge_kind is not None


def scene_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, index])


def sample_scene(rng: np.random.Generator, index: int, width: int, height: int, edge_case_rate: float,
                 kind: str = "glare") -> Scene:
    """A scene's content and conditions; with probability ``edge_case_rate`` it is the
    edge case ``kind`` (one of EDGE_KINDS)."""
    if kind not in EDGE_KINDS:
        raise ValueError(f"unknown edge-case kind {kind!r}; choose one of: {', '.join(EDGE_KINDS)}")
    label = str(rng.choice(CLASSES, p=CLASS_P))
    time_of_day = str(rng.choice(TIMES, p=TIME_P))
    hours = {"day": (8, 17), "dusk": (17, 19), "night": (20, 29)}[time_of_day]
    day = int(rng.integers(DAYS))
    ts = START + timedelta(days=day, hours=float(rng.uniform(*hours)))
    scene = Scene(
        index=index,
        true_label=label,
        size=str(rng.choice(SIZES, p=SIZE_P)),
        time_of_day=time_of_day,
        weather=str(rng.choice(WEATHERS, p=WEATHER_P)),
        glare=bool(rng.random() < edge_case_rate),  # the edge-case draw, whatever the kind
        camera=str(rng.choice(CAMERAS, p=CAMERA_P)),
        region=str(rng.choice(REGIONS)),
        ts=ts,
    )
    scene.boxes.append((label, _place(rng, label, SIZE_SCALE[scene.size], width, height)))
    for _ in range(int(rng.integers(0, 3))):
        other = str(rng.choice(CLASSES, p=CLASS_P))
        scene.boxes.append((other, _place(rng, other, 0.15, width, height)))
    if scene.glare:
        scene.edge_kind = kind
        scene.glare = kind == "glare"
        _make_edge_case(scene, rng, kind, width, height)
    return scene


def _make_edge_case(scene: Scene, rng: np.random.Generator, kind: str, width: int, height: int) -> None:
    """Turn a sampled scene into the edge case ``kind`` (glare is drawn later, from ``scene.glare``)."""
    if kind == "unseen_class":
        scene.true_label = UNSEEN_CLASS
        scene.boxes[0] = (UNSEEN_CLASS, _place(rng, UNSEEN_CLASS, SIZE_SCALE[scene.size], width, height))
    elif kind == "new_camera":
        scene.camera = NEW_CAMERA
    elif kind == "snow":
        scene.weather = "snow"
    elif kind == "small_occluded":
        scene.size, scene.occluded = "tiny", True
        scene.boxes[0] = (scene.true_label, _place(rng, scene.true_label, SIZE_SCALE["tiny"], width, height))


def _place(rng, label: str, scale: float, width: int, height: int) -> tuple[float, float, float, float]:
    aspect = {"car": 2.0, "truck": 2.4, "person": 0.45, "bicycle": 1.5, "dog": 1.4, "plane": 2.6, UNSEEN_CLASS: 1.1}[
        label
    ]
    w = scale * width * float(rng.uniform(0.85, 1.15))
    h = min(w / aspect, 0.8 * height)
    x1 = float(rng.uniform(0, width - w))
    horizon = 0.45 * height
    if label == "plane":
        y1 = float(rng.uniform(0.02 * height, max(0.03 * height, horizon - h)))
    else:
        low = max(0.0, min(horizon - 0.3 * h, height - h))
        y1 = float(rng.uniform(low, height - h))
    return (round(x1, 1), round(y1, 1), round(x1 + w, 1), round(y1 + h, 1))


def draw_scene(scene: Scene, rng: np.random.Generator, width: int, height: int) -> Image.Image:
    top, bottom = SKY[scene.time_of_day]
    if scene.weather == "snow":  # a pale, overcast sky
        top = tuple(0.4 * np.array(top) + 0.6 * np.array((205, 210, 220)) * _dim(scene))
    horizon = int(0.45 * height)
    t = np.linspace(0, 1, horizon)[:, None]
    sky = (np.array(top) * (1 - t) + np.array(bottom) * t)[:, None, :].repeat(width, axis=1)
    ground = np.empty((height - horizon, width, 3))
    ground[:] = GROUND[scene.time_of_day] if scene.weather != "snow" else np.array((225, 228, 238)) * _dim(scene)
    pixels = np.concatenate([sky, ground]).astype(np.float32)
    pixels += rng.normal(0, 4, pixels.shape)  # sensor noise: no two backgrounds alike
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for label, box in scene.boxes:
        _draw_object(draw, rng, label, box, scene.time_of_day)
    if scene.occluded:
        _draw_occluder(draw, rng, scene.boxes[0][1], height, scene.time_of_day)
    pixels = np.asarray(image).astype(np.float32)
    pixels = _apply_conditions(pixels, scene, rng, width, height)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    if scene.weather == "fog":
        image = image.filter(ImageFilter.GaussianBlur(1.5))
    return image


def _dim(scene: Scene) -> float:
    return {"day": 1.0, "dusk": 0.7, "night": 0.25}[scene.time_of_day]


def _draw_occluder(draw: ImageDraw.ImageDraw, rng, box, height: int, time_of_day: str) -> None:
    """A post or a wall in front of the object, hiding about half of it."""
    x1, y1, x2, _ = box
    w = x2 - x1
    dim = 0.45 if time_of_day == "night" else 1.0
    grey = tuple(int(c * dim) for c in rng.integers(60, 160, 1).repeat(3))
    left = x1 + w * float(rng.uniform(0.1, 0.4))
    draw.rectangle((left, min(y1, 0.3 * height), left + 0.55 * w, height), fill=grey)


def _draw_object(draw: ImageDraw.ImageDraw, rng, label: str, box, time_of_day: str) -> None:
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    dim = 0.45 if time_of_day == "night" else 1.0
    color = tuple(int(c * dim) for c in rng.integers(40, 255, 3))
    dark = tuple(int(c * dim) for c in (25, 25, 25))
    if label in ("car", "truck"):
        body_top = y1 + 0.35 * h if label == "car" else y1
        draw.rounded_rectangle((x1, body_top, x2, y2 - 0.2 * h), radius=max(1, h * 0.1), fill=color)
        if label == "car":
            draw.rectangle((x1 + 0.25 * w, y1, x2 - 0.25 * w, body_top), fill=color)
        wheels = 2 if label == "car" else 3
        r = 0.18 * h
        for k in range(wheels):
            cx = x1 + w * (k + 0.5) / wheels
            draw.ellipse((cx - r, y2 - 2 * r, cx + r, y2), fill=dark)
        if time_of_day == "night":
            draw.ellipse((x2 - 0.08 * w, y2 - 0.45 * h, x2, y2 - 0.3 * h), fill=(255, 250, 200))
    elif label == "person":
        r = min(0.35 * w, 0.15 * h)
        draw.ellipse(
            (x1 + w / 2 - r, y1, x1 + w / 2 + r, y1 + 2 * r), fill=tuple(int(c * dim) for c in (230, 190, 160))
        )
        draw.rectangle((x1 + 0.15 * w, y1 + 2 * r, x2 - 0.15 * w, y1 + 0.65 * h), fill=color)
        draw.rectangle((x1 + 0.2 * w, y1 + 0.65 * h, x2 - 0.2 * w, y2), fill=dark)
    elif label == "bicycle":
        r = 0.35 * h
        for cx in (x1 + r, x2 - r):
            draw.ellipse((cx - r, y2 - 2 * r, cx + r, y2), outline=color, width=max(1, int(h * 0.06)))
        draw.line((x1 + r, y2 - r, x1 + w / 2, y1 + 0.3 * h, x2 - r, y2 - r), fill=color, width=max(1, int(h * 0.06)))
    elif label == "dog":
        brown = tuple(int(c * dim) for c in (120, 80, 40))
        draw.ellipse((x1, y1 + 0.3 * h, x2 - 0.2 * w, y2 - 0.2 * h), fill=brown)
        draw.ellipse((x2 - 0.35 * w, y1, x2, y1 + 0.5 * h), fill=brown)
        for lx in (x1 + 0.15 * w, x2 - 0.4 * w):
            draw.rectangle((lx, y2 - 0.3 * h, lx + 0.08 * w, y2), fill=brown)
    elif label == UNSEEN_CLASS:  # a horse: long legs, a neck, a tail
        coat = tuple(int(c * dim) for c in rng.choice([(90, 55, 30), (40, 30, 25), (200, 195, 185), (150, 100, 60)]))
        draw.ellipse((x1 + 0.1 * w, y1 + 0.25 * h, x2 - 0.2 * w, y1 + 0.6 * h), fill=coat)
        draw.polygon([(x2 - 0.3 * w, y1 + 0.35 * h), (x2 - 0.15 * w, y1), (x2, y1 + 0.08 * h),
                      (x2 - 0.12 * w, y1 + 0.45 * h)], fill=coat)
        for lx in (x1 + 0.15 * w, x1 + 0.3 * w, x2 - 0.4 * w, x2 - 0.3 * w):
            draw.rectangle((lx, y1 + 0.5 * h, lx + 0.06 * w, y2), fill=coat)
        draw.line((x1 + 0.12 * w, y1 + 0.3 * h, x1, y1 + 0.65 * h), fill=dark, width=max(1, int(0.04 * w)))
    else:  # plane
        gray = tuple(int(c * dim) for c in (225, 225, 230))
        draw.ellipse((x1, y1 + 0.35 * h, x2, y1 + 0.65 * h), fill=gray)
        draw.polygon(
            [(x1 + 0.4 * w, y1 + 0.5 * h), (x1 + 0.6 * w, y1), (x1 + 0.7 * w, y1 + 0.5 * h), (x1 + 0.6 * w, y2)],
            fill=gray,
        )
        draw.polygon([(x1, y1 + 0.5 * h), (x1 + 0.08 * w, y1 + 0.1 * h), (x1 + 0.15 * w, y1 + 0.5 * h)], fill=gray)


def _apply_conditions(pixels: np.ndarray, scene: Scene, rng, width: int, height: int) -> np.ndarray:
    if scene.weather == "fog":
        pixels = pixels * 0.45 + 170 * 0.55
    elif scene.weather == "rain":
        pixels = pixels * 0.8
        for _ in range(int(width * height / 400)):
            x, y = rng.integers(0, width), rng.integers(0, height - 12)
            pixels[y : y + 10, x] = pixels[y : y + 10, x] * 0.4 + 200 * 0.6
    if scene.camera == "cam-07":
        pixels = pixels * np.array([0.8, 1.1, 0.85]) + rng.normal(0, 10, pixels.shape)
    if scene.camera == NEW_CAMERA:  # another sensor: magenta cast, more noise, dark corners
        yy, xx = np.mgrid[0:height, 0:width]
        vignette = 1 - 0.45 * (np.hypot((xx - width / 2) / width, (yy - height / 2) / height) / 0.71) ** 2
        pixels = pixels * np.array([1.1, 0.82, 1.08]) * vignette[..., None] + rng.normal(0, 16, pixels.shape)
    if scene.weather == "snow":  # flakes, and a cold tint
        for _ in range(int(width * height / 150)):
            x, y = rng.integers(0, width - 1), rng.integers(0, height - 1)
            pixels[y : y + 2, x : x + 2] = 245
        pixels = pixels * np.array([0.95, 0.98, 1.05])
    if scene.glare:
        # Sun glare: a blown-out disc, a streak, and ghost rings across the frame.
        yy, xx = np.mgrid[0:height, 0:width]
        sx, sy = rng.uniform(0.2, 0.8) * width, rng.uniform(0.05, 0.35) * height
        dist = np.hypot(xx - sx, yy - sy)
        radius = rng.uniform(0.25, 0.4) * width
        disc = np.clip(1 - dist / radius, 0, 1) ** 1.5
        streak = np.exp(-(((yy - sy) / (0.02 * height)) ** 2)) * 0.6
        bloom = np.clip(disc + streak, 0, 1)[..., None]
        pixels = pixels * (1 - 0.85 * bloom) + np.array([255, 245, 215]) * 0.85 * bloom
        pixels = pixels * 0.7 + 80  # washed-out contrast over the whole frame
        for k in (0.6, 1.0, 1.4):
            gx, gy = width - sx * k, height - sy * k
            r = 0.06 * width * k
            ring = np.exp(-((np.hypot(xx - gx, yy - gy) - r) ** 2) / (0.01 * width) ** 2)[..., None]
            pixels = pixels + ring * np.array([120, 60, 160])
    return pixels


def encode_jpeg(image: Image.Image, quality: int = 88) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def simulate_prediction(scene: Scene, rng: np.random.Generator) -> dict:
    """What a production model with known weak spots would have said about the scene."""
    version = "v1" if (scene.ts - START).days < 10 else "v2"
    hardness = (
        {"day": 0.0, "dusk": 0.1, "night": 0.25}[scene.time_of_day]
        + {"clear": 0.0, "rain": 0.15, "fog": 0.25, "snow": 0.4}[scene.weather]
        + {"small": 0.2, "medium": 0.05, "large": 0.0, "tiny": 0.45}[scene.size]
        + (0.15 if scene.camera == "cam-07" else 0.0)
        + (0.3 if scene.camera == NEW_CAMERA else 0.0)
    ) * (0.85 if version == "v2" else 1.0)
    if scene.glare:
        correct = rng.random() < 0.35
        confident = rng.random() < 0.6  # often confidently wrong: low-confidence review misses these
    elif scene.true_label == UNSEEN_CLASS:
        correct = False  # no such output: always some other class
        confident = rng.random() < 0.5
    else:
        correct = rng.random() < float(np.clip(0.97 - 0.6 * hardness, 0.4, 0.97))
        confident = rng.random() < 0.15
    if correct:
        label = scene.true_label
        confidence = float(np.clip(rng.normal(0.93 - 0.5 * hardness, 0.06), 0.3, 0.999))
    else:
        label = str(rng.choice([c for c in CLASSES if c != scene.true_label]))
        if scene.true_label == UNSEEN_CLASS:  # fairly sure, less than on what it knows
            confidence = float(rng.uniform(0.55, 0.9) if confident else rng.uniform(0.25, 0.6))
        else:
            confidence = float(rng.uniform(0.8, 0.98) if confident else rng.uniform(0.2, 0.6))
    rest = rng.dirichlet(np.ones(len(CLASSES) - 1)) * (1 - confidence)
    others = iter(rest)
    scores = {c: round(confidence if c == label else float(next(others)), 4) for c in CLASSES}
    detections = []
    for k, (obj_label, box) in enumerate(scene.boxes):
        jitter = rng.normal(0, 2, 4)
        x1, y1, x2, y2 = (float(v) for v in np.array(box) + jitter)
        detections.append(
            {
                "box": [round(min(x1, x2), 1), round(min(y1, y2), 1), round(max(x1, x2), 1), round(max(y1, y2), 1)],
                "label": label if k == 0 else obj_label,
                "score": round(confidence if k == 0 else float(rng.uniform(0.3, 0.95)), 4),
            }
        )
    return {
        "model_version": version,
        "ts": scene.ts.isoformat().replace("+00:00", "Z"),
        "label": label,
        "confidence": round(confidence, 4),
        "scores": scores,
        "detections": detections,
        "camera": scene.camera,
        "region": scene.region,
        "customer_flag": bool(rng.random() < (0.3 if not correct else 0.01)),
    }
