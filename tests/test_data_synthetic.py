"""The synthetic benchmark: the appearance task is solvable from one frame, the motion task only from order."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from open_videoprism.data import VideoDataConfig, build_loader, read_video
from open_videoprism.data import synthetic as syn

CFG = syn.SynthConfig()


def _spec(motion: str, seed: int = 0) -> syn.ClipSpec:
    return syn.sample_spec(np.random.default_rng(seed), motion)


def test_render_shape_and_colours():
    f = syn.render_frames(_spec("slide_left"), CFG)
    assert f.shape == (16, 72, 72, 3) and f.dtype == np.uint8
    for shape in syn.SHAPES:
        spec = syn.ClipSpec(**{**_spec("rotate_cw", 3).__dict__, "shape": shape})
        mid = syn.render_frames(spec, syn.SynthConfig(num_frames=17))[8].reshape(-1, 3).astype(int)
        colour = np.array(syn.COLOURS[spec.colour])
        inside = np.abs(mid - colour).sum(1) < 10
        # The object covers a good share of the frame (large enough for the codec and a patch-18 ViT).
        assert 0.06 < inside.mean() < 0.3, shape
        # The background is grey: apart from the object and its 1-pixel soft edge, R == G == B.
        grey = (np.abs(mid[:, 0] - mid[:, 1]) <= 1) & (np.abs(mid[:, 1] - mid[:, 2]) <= 1)
        assert (~grey & ~inside).mean() < 0.04 and grey.mean() > 0.6


PAIRS = [("slide_left", "slide_right"), ("slide_up", "slide_down"), ("rotate_cw", "rotate_ccw"),
         ("approach", "recede"), ("pan_left", "pan_right"), ("enter", "leave")]


def test_motion_pairs_are_time_reversals_and_share_the_middle_frame():
    cfg = syn.SynthConfig(num_frames=17)
    assert sorted(m for p in PAIRS for m in p) == sorted(m[0] for m in syn.MOTIONS)
    middles = []
    for a, b in PAIRS:
        fa = syn.render_frames(_spec(a, 5), cfg)
        fb = syn.render_frames(_spec(b, 5), cfg)
        # Same appearance, opposite motion: exactly the same frames in reverse order,
        # so any frame-order-free feature (one frame, a bag of frames) cannot tell them apart.
        np.testing.assert_array_equal(fa[::-1], fb)
        assert np.abs(fa[0].astype(int) - fa[-1].astype(int)).mean() > 1.0   # but they do move
        middles += [fa[8], fb[8]]
    for m in middles[1:]:
        np.testing.assert_array_equal(m, middles[0])   # every motion class: same middle frame


def test_direction_semantics():
    f = syn.render_frames(_spec("slide_right", 1), CFG).astype(float)
    colour = np.array(syn.COLOURS[_spec("slide_right", 1).colour])

    def centroid(frame):
        mask = np.abs(frame - colour).sum(-1) < 30
        ys, xs = np.nonzero(mask)
        return xs.mean(), ys.mean()

    assert centroid(f[-1])[0] > centroid(f[0])[0] + 10        # right = increasing x
    f = syn.render_frames(_spec("slide_up", 1), CFG).astype(float)
    assert centroid(f[-1])[1] < centroid(f[0])[1] - 10        # up = decreasing y (image rows)
    cap = syn.captions_for(_spec("slide_left", 2))[0]
    assert cap.startswith("a ") and "slides to the left" in cap and cap.endswith("background")


def test_classes_and_labels_consistent():
    app, mot = syn.appearance_classes(), syn.motion_classes()
    assert len(app) == len(syn.SHAPES) * len(syn.COLOURS) and len(mot) == len(syn.MOTIONS)
    for s in range(30):
        spec = syn.sample_spec(np.random.default_rng(s))
        assert app[spec.label] == f"{spec.colour} {spec.shape}"
        assert mot[spec.motion_label] == dict((m[0], m[1]) for m in syn.MOTIONS)[spec.motion]


def _features_single(x):
    """Linear-probe input from one frame's pixels: colour histogram + Fourier magnitudes (translation-free)."""
    n = len(x)
    q = 6
    b = np.minimum((x * q).astype(int), q - 1)
    idx = b[..., 0] * q * q + b[..., 1] * q + b[..., 2]
    hist = np.log1p(np.stack([np.bincount(idx[i].ravel(), minlength=q**3) for i in range(n)]).astype(np.float32))
    f = np.abs(np.fft.fft2(x.transpose(0, 3, 1, 2)))
    f = np.concatenate([f[..., :12, :12], f[..., -12:, :12]], -2).reshape(n, -1)
    return np.c_[hist, np.log1p(f)]


def _features_diff(clips):
    """Frame differences, 8x8 average-pooled, all consecutive pairs."""
    d = clips[:, 1:] - clips[:, :-1]
    n, t, h, w, c = d.shape
    return d.reshape(n, t, h // 8, 8, w // 8, 8, c).mean((3, 5)).reshape(n, -1)


def _ridge_acc(f_tr, y_tr, f_te, y_te, lam):
    mu, sd = f_tr.mean(0), f_tr.std(0) + 1e-6
    a, b = (f_tr - mu) / sd, (f_te - mu) / sd
    a, b = np.c_[a, np.ones(len(a))], np.c_[b, np.ones(len(b))]
    w = np.linalg.solve(a.T @ a + lam * np.eye(a.shape[1]), a.T @ np.eye(y_tr.max() + 1)[y_tr])
    return float(((b @ w).argmax(1) == y_te).mean())


def test_linear_probes_separate_appearance_from_motion():
    def data(split, n):
        clips, app, mot = [], [], []
        for i in range(n):
            f, r = syn.make_clip(0, split, i, CFG)
            clips.append(f)
            app.append(r["label"])
            mot.append(r["motion_label"])
        return np.stack(clips).astype(np.float32) / 255, np.array(app), np.array(mot)

    x_tr, a_tr, m_tr = data("probe_train", 400)
    x_te, a_te, m_te = data("test", 200)
    single_tr, single_te = _features_single(x_tr[:, 8]), _features_single(x_te[:, 8])
    app_single = _ridge_acc(single_tr, a_tr, single_te, a_te, 100.0)
    mot_single = _ridge_acc(single_tr, m_tr, single_te, m_te, 100.0)
    mot_diff = _ridge_acc(_features_diff(x_tr), m_tr, _features_diff(x_te), m_te, 1000.0)
    chance_app, chance_mot = 1 / len(syn.appearance_classes()), 1 / len(syn.MOTIONS)
    print(f"appearance from one frame {app_single:.2f} (chance {chance_app:.2f}); motion from one frame "
          f"{mot_single:.2f}, from frame differences {mot_diff:.2f} (chance {chance_mot:.2f})")
    assert app_single > 6 * chance_app            # one frame solves appearance well above chance...
    assert mot_single < 2 * chance_mot            # ...but says nothing about motion
    assert mot_diff > 3 * chance_mot and mot_diff > mot_single + 0.15   # temporal order does


def test_generate_writes_benchmark(tmp_path):
    from open_videoprism.cli.main import main
    from open_videoprism.tokenizer import Tokenizer

    out = tmp_path / "synth"
    assert main(["synth", str(out), "--clips", "12", "--long", "1", "--workers", "1"]) == 0
    for name in ("pretrain.jsonl", "probe_train.jsonl", "test.jsonl", "long.jsonl", "qa.jsonl", "classes.json",
                 "tokenizer.model", "synth.json"):
        assert (out / name).is_file(), name
    rows = {s: [json.loads(line) for line in (out / f"{s}.jsonl").read_text().splitlines()] for s in syn.SPLITS}
    assert [len(rows[s]) for s in syn.SPLITS] == [6, 3, 3]
    r = rows["pretrain"][0]
    assert set(r) >= {"path", "caption", "captions", "label", "motion_label", "factors", "qa"}
    assert not Path(r["path"]).is_absolute() and (out / r["path"]).is_file()
    classes = json.loads((out / "classes.json").read_text())
    assert classes["label"][r["label"]] == f"{r['factors']['colour']} {r['factors']['shape']}"
    assert r["caption"] == r["captions"][0] and r["factors"]["colour"] in r["caption"]
    qa = [json.loads(line) for line in (out / "qa.jsonl").read_text().splitlines()]
    assert {"question": "what color is the object?", "answer": r["factors"]["colour"]} in r["qa"]
    assert any(q["path"] == r["path"] and q["answer"] == r["factors"]["shape"] for q in qa)
    # Long videos: ordered, non-overlapping segments inside the video.
    long = json.loads((out / "long.jsonl").read_text().splitlines()[0])
    segs = long["segments"]
    assert 3 <= len(segs) <= 4 and all(0 <= s["start"] < s["end"] <= long["duration"] for s in segs)
    assert all(a["end"] <= b["start"] for a, b in zip(segs, segs[1:]))
    frames = read_video(out / long["path"])
    assert len(frames) == long["num_frames"]
    # Segment frames move, gap frames stand still.
    s0 = segs[0]
    a, b = int(s0["start"] * 8), int(s0["end"] * 8)
    moving = np.abs(np.diff(frames[a:b].astype(int), axis=0)).mean()
    still = np.abs(np.diff(frames[: a - 1].astype(int), axis=0)).mean()
    assert moving > 3 * still
    # The tokenizer: the library's class, small vocabulary, captions without unknown pieces.
    tok = Tokenizer(out / "tokenizer.model")
    assert tok.vocab_size <= 320 and tok.bos_id < 0
    ids, pads = tok([r["caption"]], 64)
    n = int((pads[0] == 0).sum())
    assert 5 < n < 30 and 2 not in ids[0, :n].tolist()     # 2 = unk
    # The loader reads it; decoded colours survive h264/yuv420p.
    cfg = VideoDataConfig(num_frames=16, image_size=72, sampling="uniform")
    batch = next(iter(build_loader(out / "test.jsonl", cfg, batch_size=3, training=False, tokenizer=tok)))
    assert batch["video"].shape == (3, 16, 3, 72, 72) and batch["text_ids"].shape == (3, 64)
    spec_frames, rec = syn.make_clip(0, "test", 0, syn.SynthConfig())
    decoded = batch["video"][0].permute(0, 2, 3, 1).numpy() * 255
    err = np.abs(decoded - spec_frames.astype(np.float32))
    assert err.mean() < 4.0
    colour = np.array(syn.COLOURS[rec["factors"]["colour"]], dtype=np.float32)
    obj = np.abs(spec_frames.astype(np.float32) - colour).sum(-1) < 5
    assert np.abs(decoded[obj] - colour).mean() < 12          # the object's colour is kept
    # Re-running is deterministic and resumes (nothing rewritten).
    before = {p: p.stat().st_mtime_ns for p in (out / "videos").rglob("*.mp4")}
    assert main(["synth", str(out), "--clips", "12", "--long", "1", "--workers", "1"]) == 0
    assert before == {p: p.stat().st_mtime_ns for p in (out / "videos").rglob("*.mp4")}
    assert [json.loads(line) for line in (out / "pretrain.jsonl").read_text().splitlines()] == rows["pretrain"]


def test_generate_is_deterministic_across_workers(tmp_path):
    a = syn.generate(tmp_path / "a", 8, seed=3, long_videos=0, workers=1, progress=False)
    b = syn.generate(tmp_path / "b", 8, seed=3, long_videos=0, workers=2, progress=False)
    assert a["sizes"] == b["sizes"]
    for s in syn.SPLITS:
        assert (tmp_path / "a" / f"{s}.jsonl").read_text() == (tmp_path / "b" / f"{s}.jsonl").read_text()
    r = json.loads((tmp_path / "a" / "test.jsonl").read_text().splitlines()[0])
    np.testing.assert_array_equal(read_video(tmp_path / "a" / r["path"]), read_video(tmp_path / "b" / r["path"]))
    c = syn.generate(tmp_path / "c", 8, seed=4, long_videos=0, progress=False)
    assert (tmp_path / "c" / "test.jsonl").read_text() != (tmp_path / "a" / "test.jsonl").read_text()
    assert c["sizes"]["long"] == 0


def test_bad_synth_options_are_user_errors(tmp_path):
    from open_videoprism.cli.main import main

    assert main(["synth", str(tmp_path / "x"), "--size", "71"]) == 2
    assert main(["synth", str(tmp_path / "x"), "--clips", "1"]) == 2
    assert main(["synth", "--clips", "3"]) == 2                        # no output folder
    assert main(["synth", str(tmp_path / "x"), "--out", str(tmp_path / "y")]) == 2
    assert main(["synth", "--out", str(tmp_path / "z"), "--clips", "3", "--long", "0", "--workers", "1"]) == 0
    assert (tmp_path / "z" / "test.jsonl").is_file()


# -- pretraining text regimes ---------------------------------------------------
def _pretrain_records(n: int, seed: int = 0) -> list[dict]:
    from open_videoprism.data.synthetic import _rng, clip_record, sample_spec

    return [clip_record(sample_spec(_rng(seed, "pretrain", i)), f"videos/pretrain/{i:06d}.mp4", "pretrain")
            for i in range(n)]


def _states(text: str, phrase: str) -> bool:
    return phrase in text


@pytest.mark.parametrize("cfg", [
    dict(),  # the paper-derived defaults
    dict(clean_fraction=0.25, noisy_motion_rate=0.4, noisy_wrong_rate=0.5),
])
def test_mixed_regime_fractions_and_noise_rates_by_counting(cfg):
    from open_videoprism.data.synthetic import (
        MOTION_WORDS,
        MOTIONS,
        CaptionConfig,
        _motion_phrase,
        _rng,
        assign_texts,
        sample_spec,
    )

    n = 400
    caps = CaptionConfig(**cfg)
    clean = _pretrain_records(n)
    out = assign_texts(clean, 0, caps)
    src = [r["text"]["source"] for r in out]
    assert src.count("clean") == round(caps.clean_fraction * n)
    n_noisy = n - src.count("clean")
    kinds = [r["text"]["motion"] for r in out if r["text"]["source"] == "noisy"]
    n_mention = round(caps.noisy_motion_rate * n_noisy)
    assert kinds.count("stated") + kinds.count("wrong") == n_mention
    assert kinds.count("wrong") == round(caps.noisy_wrong_rate * n_mention)
    phrases = {m[0]: m[1] for m in MOTIONS}
    for r, c in zip(out, clean):
        text = r["caption"]
        assert r["captions"] == [text] or r["text"]["source"] == "clean"
        f = r["factors"]
        if r["text"]["source"] == "clean":
            assert r["captions"] == c["captions"]  # clean captions are the canonical ones
            continue
        # Noisy text names the object (colour or shape) among filler words...
        assert f["colour"] in text or f["shape"] in text
        words = set(text.replace("|", " ").split())
        spec = sample_spec(_rng(0, "pretrain", int(r["path"][-10:-4])))
        own = _motion_phrase(spec)
        if r["text"]["motion"] == "none":  # ...and says nothing about motion unless chosen to
            assert not words & set(MOTION_WORDS), text
        elif r["text"]["motion"] == "stated":
            assert own in text
        else:  # a wrong motion: another class's phrase, not this clip's
            assert own not in text and words & set(MOTION_WORDS)
            assert any(p.split()[0] in words for k, p in phrases.items() if k != f["motion"])


def test_clean_regime_keeps_every_caption_and_rates_are_validated():
    from open_videoprism.data.synthetic import CaptionConfig, assign_texts

    clean = _pretrain_records(50)
    out = assign_texts(clean, 0, CaptionConfig(regime="clean"))
    assert [r["captions"] for r in out] == [r["captions"] for r in clean]
    assert {r["text"]["source"] for r in out} == {"clean"}
    for bad in (dict(regime="noisy"), dict(clean_fraction=1.5), dict(noisy_wrong_rate=-0.1)):
        with pytest.raises(ValueError):
            CaptionConfig(**bad)


def test_synth_writes_both_regimes_and_a_probe_validation_split(tmp_path):
    from open_videoprism.cli.main import main

    out = tmp_path / "d"
    assert main(["synth", str(out), "--clips", "40", "--long", "2", "--clean-fraction", "0.5",
                 "--noisy-motion-rate", "0"]) == 0
    def read(name):
        return [json.loads(line) for line in (out / name).read_text().splitlines()]

    mixed, clean = read("pretrain.jsonl"), read("pretrain_clean.jsonl")
    assert [r["path"] for r in mixed] == [r["path"] for r in clean]  # the same videos
    assert sum(r["text"]["source"] == "clean" for r in mixed) == round(0.5 * len(mixed))
    assert all(r["text"]["motion"] == "none" for r in mixed if r["text"]["source"] == "noisy")
    fit, val, probe = read("probe_fit.jsonl"), read("probe_val.jsonl"), read("probe_train.jsonl")
    assert sorted(r["path"] for r in fit + val) == sorted(r["path"] for r in probe) and len(val) == len(probe) // 5
    assert not {r["path"] for r in fit} & {r["path"] for r in val}
    test = read("test.jsonl")
    assert all(r["caption"].startswith("a ") for r in test)  # evaluation captions stay clean
    assert main(["synth", str(tmp_path / "e"), "--clips", "12", "--noisy-wrong-rate", "2"]) == 2
