"""``videoprism index`` / ``search`` / ``serve``: semantic search over a folder of videos."""

from __future__ import annotations

import argparse
import json
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "index",
        help="embed the moments of every video in a folder into a search database",
        description=(
            "Walk FOLDER (recursively, any file name), split each video into moments (fixed windows plus the "
            "whole video), embed them with a video-text model and store paths, size+mtime, times, embeddings "
            "and thumbnails in a SQLite file. Incremental (unchanged files are skipped, changed ones replaced, "
            "deleted ones dropped) and resumable (each video is one transaction). Ends with the line "
            "'indexed: N new, M unchanged, R removed, S skipped' (N counts new and changed files)."
        ),
    )
    p.add_argument("folder", help="folder of videos")
    p.add_argument("--checkpoint", required=True,
                   help="video-text model: hub id (google/videoprism-lvt-base-f16r288), .npz, .safetensors, folder")
    p.add_argument("--db", default="videos.db", help="SQLite database to create or update (default videos.db)")
    p.add_argument("--tokenizer", help="SentencePiece .model for text queries (default: the hub repo's)")
    p.add_argument("--window", type=float, default=4.0, help="moment length in seconds; 0: whole videos only (default 4)")
    p.add_argument("--stride", type=float, default=None, help="seconds between window starts (default: --window)")
    p.add_argument("--frames", type=int, default=None, help="frames per moment (default: the model's)")
    p.add_argument("--size", type=int, default=None, help="frame size (default: the model's)")
    p.add_argument("--batch-size", type=int, default=8, help="moments per forward pass (default 8)")
    p.add_argument("--workers", type=int, default=2, help="decoding processes (default 2; 0: in process)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    p.add_argument("--dtype", choices=("auto", "fp32", "bf16"), default="auto",
                   help="video encoder precision; auto (default): bf16 where native, else fp32 (queries run in fp32)")
    p.set_defaults(func=run_index)

    s = sub.add_parser("search", help="find the moments that match a description (or a video) in a database",
                       description="Print the best moments (score, start-end, path), best first.")
    s.add_argument("db", help="database written by `videoprism index`")
    s.add_argument("query", nargs="?", help="what to look for, e.g. \"a dog catching a frisbee\"")
    s.add_argument("--like", help="search by a video file instead of text")
    s.add_argument("--top-k", type=int, default=10, help="number of moments (default 10)")
    s.add_argument("--json", action="store_true", help="print a JSON list of hits")
    s.add_argument("--tokenizer", help="override the tokenizer recorded in the database")
    s.set_defaults(func=run_search)

    v = sub.add_parser("serve", help="a local web page to search a database and play the moments",
                       description="Serve a search page and a JSON API (/api/search?q=...). Local only by default.")
    v.add_argument("db", help="database written by `videoprism index`")
    v.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    v.add_argument("--port", type=int, default=8765, help="port (default 8765; 0: any free port)")
    v.add_argument("--tokenizer", help="override the tokenizer recorded in the database")
    v.set_defaults(func=run_serve)


def run_index(args: argparse.Namespace) -> int:
    import torch

    from open_videoprism.errors import UserError
    from open_videoprism.search import IndexSettings, index_folder

    if args.window < 0 or (args.stride is not None and args.stride <= 0) or args.batch_size < 1:
        raise UserError("--window must be >= 0, --stride and --batch-size > 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = IndexSettings(checkpoint=args.checkpoint, tokenizer=args.tokenizer, window=args.window,
                             stride=args.stride, frames=args.frames, size=args.size, batch_size=args.batch_size,
                             workers=args.workers, dtype=args.dtype)
    summary = index_folder(args.folder, args.db, settings)
    for err in summary.errors:
        print(f"skipped {err}", file=sys.stderr)
    print(summary.line())
    return 0


def run_search(args: argparse.Namespace) -> int:
    from open_videoprism.search import SearchIndex

    hits = SearchIndex(args.db, tokenizer=args.tokenizer).search(args.query, args.top_k, like=args.like)
    if args.json:
        print(json.dumps([h.to_json() for h in hits], indent=1, ensure_ascii=False))
    else:
        for h in hits:
            span = "whole" if h.whole else f"{h.start:.1f}-{h.end:.1f}s"
            print(f"{h.score:.3f}  {span:>13}  {h.path}")
    return 0


def run_serve(args: argparse.Namespace) -> int:
    from open_videoprism.search import SearchIndex
    from open_videoprism.search.server import make_server

    index = SearchIndex(args.db, tokenizer=args.tokenizer)
    _ = index.model  # load before listening, so the first query is fast and a bad checkpoint fails here
    server = make_server(index, args.host, args.port)
    host, port = server.server_address[:2]
    host = host.decode() if isinstance(host, bytes) else host
    print(f"serving {len(index.ids)} moments of {args.db} on http://{host}:{port}/ (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
