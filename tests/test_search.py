"""``videoprism index`` / ``search`` / ``serve`` end to end on generated clips.

A folder of synthetic clips with a broken file and names with spaces and non-ASCII
characters is indexed with a small random video-text model (indexing and serving do
not depend on quality; ``test_search_quality`` checks that with a trained model).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest

import open_videoprism as ovp
from open_videoprism.cli.main import main
from open_videoprism.search import Database, SearchIndex, find_videos, top_k, windows

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("VIDEOPRISM_TEST_ARTIFACTS", REPO / "test-artifacts"))
LINE = "indexed: {} new, {} unchanged, {} removed, {} skipped"


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("search")
    assert main(["synth", str(root / "synth"), "--clips", "24", "--workers", "1"]) == 0
    clips = sorted((root / "synth" / "videos").glob("[tp]*/*.mp4"))  # test + probe_train + pretrain clips
    folder = root / "my videos"
    (folder / "été à la plage").mkdir(parents=True)
    names = ["a b.mp4", "été à la plage/vidéo 1.mp4", "日本語 クリップ.mp4", "plain.mp4"]
    for name, src in zip(names, clips):
        shutil.copy(src, folder / name)
    (folder / "broken clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom" + os.urandom(2000))
    (folder / "notes.txt").write_text("not a video")
    model = ovp.create_model("videoprism_lvt_test_tiny")
    ckpt = root / "tiny.safetensors"
    ovp.save_checkpoint(ckpt, model.state_dict(), model.cfg)
    return {"root": root, "folder": folder, "clips": clips, "ckpt": ckpt, "tok": root / "synth" / "tokenizer.model"}


def _index(bench, db, capsys, *extra: str) -> str:
    # fp32: "a video finds itself" below needs the same numbers whatever the batch; bf16 ("auto" on a
    # CPU with native bf16) rounds differently with the batch's shape.
    rc = main(["index", str(bench["folder"]), "--checkpoint", str(bench["ckpt"]), "--db", str(db),
               "--tokenizer", str(bench["tok"]), "--window", "1", "--workers", "1", "--dtype", "fp32", *extra])
    out = capsys.readouterr()
    assert rc == 0, out.err
    return out.out.strip().splitlines()[-1]


def test_windows_cover_the_video():
    assert windows(1.5, 4, 4) == [(0.0, 1.5, True)]
    assert windows(10, 4, 4) == [(0.0, 10, True), (0.0, 4.0, False), (4.0, 8.0, False), (6.0, 10.0, False)]
    assert windows(9, 4, 2)[1:] == [(0.0, 4.0, False), (2.0, 6.0, False), (4.0, 8.0, False), (5.0, 9.0, False)]
    assert windows(10, 0, 0) == [(0.0, 10, True)]


def test_top_k_is_exact():
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((1000, 16)).astype(np.float32)
    q = rng.standard_normal(16).astype(np.float32)
    rows, scores = top_k(emb, q, 5)
    assert list(rows) == list(np.argsort(-(emb @ q))[:5]) and np.all(np.diff(scores) <= 0)
    assert len(top_k(emb[:3], q, 10)[0]) == 3


def test_index_search_reindex(bench, tmp_path, capsys):
    db = tmp_path / "videos.db"
    assert _index(bench, db, capsys) == LINE.format(4, 0, 0, 1)
    assert len(find_videos(bench["folder"])) == 5  # notes.txt is not a video
    d = Database(db)
    counts, files = d.counts(), d.files()
    assert counts["files"] == 4 and counts["moments"] == 4 * 3  # 2-s clips: whole + two 1-s windows
    assert "broken" in [Path(p).stem.split()[0] for p, f in files.items() if f[3]][0]
    assert d.thumbnail(1)[:2] == b"\xff\xd8"  # a JPEG
    d.close()

    # --json: K hits with paths and scores, best first.
    assert main(["search", str(db), "a red square", "--top-k", "5", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert len(hits) == 5 and all(Path(h["path"]).is_file() and h["path"].endswith(".mp4") for h in hits)
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    assert {"path", "start", "end", "score"} <= set(hits[0])

    # --like: a video finds itself first (its whole-video moment), non-ASCII path included.
    target = bench["folder"] / "日本語 クリップ.mp4"
    assert main(["search", str(db), "--like", str(target), "--top-k", "1", "--json"]) == 0
    best = json.loads(capsys.readouterr().out)[0]
    assert best["path"] == str(target.resolve()) and best["whole"] and best["score"] > 0.999

    # Unchanged: nothing embedded again. Then two new files, one changed, one deleted.
    assert _index(bench, db, capsys) == LINE.format(0, 4, 0, 1)
    shutil.copy(bench["clips"][4], bench["folder"] / "new one.mp4")
    shutil.copy(bench["clips"][5], bench["folder"] / "été à la plage" / "nouvelle vidéo.mp4")
    try:
        assert _index(bench, db, capsys) == LINE.format(2, 4, 0, 1)
        shutil.copy(bench["clips"][6], bench["folder"] / "plain.mp4")  # changed content
        (bench["folder"] / "new one.mp4").unlink()
        assert _index(bench, db, capsys) == LINE.format(1, 4, 1, 1)
    finally:
        for p in (bench["folder"] / "new one.mp4", bench["folder"] / "été à la plage" / "nouvelle vidéo.mp4"):
            p.unlink(missing_ok=True)
        shutil.copy(bench["clips"][3], bench["folder"] / "plain.mp4")


def test_bad_input_is_one_error_line(bench, tmp_path, capsys):
    cases = [
        ["search", str(tmp_path / "none.db"), "x"],
        ["index", str(tmp_path / "nofolder"), "--checkpoint", str(bench["ckpt"]), "--db", str(tmp_path / "a.db")],
        ["index", str(bench["folder"]), "--checkpoint", str(tmp_path / "missing.npz"), "--db", str(tmp_path / "b.db")],
    ]
    for argv in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err, err


def test_resumes_after_a_kill(bench, tmp_path):
    """A killed index keeps the videos it finished; the rerun embeds only the rest."""
    db = tmp_path / "killed.db"
    cmd = [sys.executable, "-m", "open_videoprism.cli.main", "index", str(bench["folder"]), "--checkpoint",
           str(bench["ckpt"]), "--db", str(db), "--window", "0.25", "--workers", "0", "--batch-size", "1"]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    done = 0
    while time.time() < deadline and proc.poll() is None:
        if db.exists():
            try:
                done = Database(db).counts()["files"]
            except Exception:  # noqa: BLE001 - the schema may not be there yet
                done = 0
            if done >= 1:
                break
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    done = Database(db).counts()["files"]
    r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    new, unchanged = (int(x.split()[0]) for x in r.stdout.strip().splitlines()[-1][9:].split(", ")[:2])
    assert unchanged == done and new == 4 - done and Database(db).counts()["files"] == 4


@pytest.fixture(scope="module")
def server(bench, tmp_path_factory):
    db = tmp_path_factory.mktemp("serve") / "videos.db"
    r = subprocess.run([sys.executable, "-m", "open_videoprism.cli.main", "index", str(bench["folder"]),
                        "--checkpoint", str(bench["ckpt"]), "--db", str(db), "--tokenizer", str(bench["tok"]),
                        "--window", "1", "--workers", "0"], env=_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    proc = subprocess.Popen([sys.executable, "-m", "open_videoprism.cli.main", "serve", str(db), "--port", "0"],
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert "http://127.0.0.1:" in line, proc.stderr.read() if proc.poll() is not None else line
    url = line.split(" on ")[1].split()[0]
    yield url
    proc.kill()
    proc.wait()


def _get(url: str, headers: dict[str, str] | None = None):
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=30) as r:
        return r.status, dict(r.headers), r.read()


def test_serve_page_api_and_files(server):
    status, _, body = _get(server + "?q=" + quote("a red square") + "&k=4")
    page = body.decode()
    assert status == 200 and "<input type='text' name='q' value='a red square'" in page
    assert page.count("class=\"hit\"") == 4 and ".mp4</a>" in page and "/thumb/" in page
    _, headers, body = _get(server + "api/search?q=" + quote("a blue circle") + "&k=3")
    hits = json.loads(body)["hits"]
    assert len(hits) == 3 and headers["Content-Type"] == "application/json"
    hit = hits[0]
    assert hit["video"].startswith(f"/video/{hit['file_id']}#t=")
    _, headers, thumb = _get(server + hit["thumbnail"].lstrip("/"))
    assert headers["Content-Type"] == "image/jpeg" and thumb[:2] == b"\xff\xd8"
    # Videos: by id only, with byte ranges (the browser seeks to the moment's start).
    status, headers, part = _get(server + f"video/{hit['file_id']}", {"Range": "bytes=0-99"})
    assert status == 206 and len(part) == 100 and headers["Content-Range"].endswith(f"/{os.path.getsize(hit['path'])}")
    assert part == Path(hit["path"]).read_bytes()[:100]
    _, _, like = _get(server + f"api/search?like={hit['moment_id']}&k=1")
    assert json.loads(like)["hits"][0]["moment_id"] == hit["moment_id"]
    for bad in ("video/9999", "video/..%2Fetc%2Fpasswd", "thumb/9999", "etc/passwd"):
        with pytest.raises(urllib.error.HTTPError) as err:
            _get(server + bad)
        assert err.value.code in (400, 404)


def test_page_in_headless_chromium(server, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if chromium is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium); the screenshot is the only thing skipped")
    from PIL import Image

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "search_page.png"
    url = server + "?q=" + quote("a red square moves to the right") + "&k=8"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=3000"]
    dom = subprocess.run([chromium, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=90)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert dom.stdout.count('class="hit"') == 8 and ".mp4</a>" in dom.stdout
    r = subprocess.run([chromium, *flags, f"--screenshot={shot}", "--window-size=1100,620", url],
                       capture_output=True, text=True, timeout=90)
    assert r.returncode == 0 and shot.is_file(), r.stderr[-2000:]
    im = np.asarray(Image.open(shot).convert("RGB"))
    assert im.shape[:2] == (620, 1100)
    assert len(np.unique(im.reshape(-1, 3), axis=0)) > 500  # thumbnails rendered, not a blank page
    print(f"screenshot kept at {shot}")


@pytest.mark.slow
def test_search_quality_matches_eval_retrieval(tmp_path, capsys):
    """Captions of the test clips find their own clip (top-1) at the t2v R@1 `eval retrieval` reports."""
    synth = tmp_path / "synth"
    assert main(["synth", str(synth), "--clips", "40", "--workers", "1"]) == 0
    run = tmp_path / "run"  # a briefly trained video-text model: quality only has to be measurable
    assert main(["pretrain", "--config", str(REPO / "configs" / "stage1-tiny.yaml"), "--data", str(synth / "pretrain.jsonl"),
                 "--out", str(run), "--no-progress", "steps=6", "batch_size=4", "log_every=3", "data.num_workers=0"]) == 0
    assert main(["eval", "retrieval", "--checkpoint", str(run), "--data", str(synth), "--out", str(tmp_path / "ret")]) == 0
    expected = json.loads((tmp_path / "ret" / "metrics.json").read_text())["metrics"]
    db = tmp_path / "test.db"
    assert main(["index", str(synth / "videos" / "test"), "--checkpoint", str(run), "--db", str(db), "--window", "0",
                 "--tokenizer", str(synth / "tokenizer.model"), "--workers", "0"]) == 0
    capsys.readouterr()
    index = SearchIndex(db)
    records = [json.loads(line) for line in (synth / "test.jsonl").read_text().splitlines()]
    found = [index.search(c, 1)[0].path == str((synth / r["path"]).resolve()) for r in records for c in r["captions"]]
    assert len(found) == expected["num_captions"]
    assert 100 * np.mean(found) == pytest.approx(expected["t2v_R@1"], abs=100 / len(found) + 0.01)


def test_embedding_cache_follows_the_database(tmp_path):
    from open_videoprism.search.db import Moment

    db = Database(tmp_path / "v.db", create=True)
    db.put_file("/a.mp4", 1, 1, 2.0, [Moment(0, 2, True, np.ones(4, np.float32) / 2, None)])
    ids, emb = db.cached_embeddings()
    assert (tmp_path / "v.db.vectors.npy").is_file() and emb.shape == (1, 4)
    assert np.array_equal(db.cached_embeddings()[1], emb)  # from the cache
    db.put_file("/b.mp4", 1, 1, 2.0, [Moment(0, 2, True, -np.ones(4, np.float32) / 2, None)])
    ids, emb = db.cached_embeddings()  # stale cache: rebuilt
    assert len(ids) == 2 and emb[1, 0] == -0.5
    db.remove(["/a.mp4"])
    assert len(db.cached_embeddings()[0]) == 1
