"""``cacl serve INDEX_DIR``: person search in the browser, over an index that grows."""

from __future__ import annotations

import argparse
import logging
import os
import time

log = logging.getLogger(__name__)

TOKEN_ENV = "CACL_SERVE_TOKEN"
# the most rows of room made at start-up by default (512 MB of vectors at 1280 dimensions)
HEADROOM = 100_000


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="search an index in the browser and add images to it (needs cacl[serve])",
        description=(
            "Serve a web page and a JSON API over an index folder written by 'cacl index build': "
            "search by an indexed image or an uploaded crop, filter by camera, add images (each "
            "add is durable once answered). Listens on 127.0.0.1 by default; any other address "
            f"needs a token (--token, or the {TOKEN_ENV} environment variable, which keeps it out "
            "of the process list), which every request must then carry."
        ),
    )
    parser.add_argument("index", help="an index folder written by 'cacl index build'")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument(
        "--token", default=None, help=f"access token (default: ${TOKEN_ENV}; none on loopback)"
    )
    parser.add_argument(
        "--people",
        default=None,
        metavar="FILE",
        help="personal tokens, one 'NAME TOKEN' per line: each lets its person in, and the "
        "labels marked with it are that person's",
    )
    parser.add_argument(
        "--checkpoint", default=None, help="embed crops with this model instead of the index's"
    )
    parser.add_argument(
        "--transit",
        default=None,
        metavar="FILE",
        help="a transit-time model (a run's transit.json) for searches by appearance and time "
        "(st=1); default: transit.json beside the index's checkpoint, when the indexed images "
        "have times (tracklets.csv or times.csv in the gallery root)",
    )
    parser.add_argument(
        "--st-candidates",
        type=int,
        default=100,
        help="nearest images by appearance that st=1 re-orders by time (default 100: on the "
        "synthetic site as good as all of them)",
    )
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:1, ...")
    parser.add_argument(
        "--cam-regex",
        default=None,
        help="regular expression whose first group is the camera in a file name "
        "(default: the index's, else _c(\\d+))",
    )
    parser.add_argument(
        "--read-only", action="store_true", help="no adds (and no lock on the index folder)"
    )
    parser.add_argument(
        "--max-upload-mb", type=float, default=8.0, help="largest request body (default 8 MB)"
    )
    parser.add_argument(
        "--search-threads",
        type=int,
        default=0,
        help="searches answered at once; more wait in order (default 0: one per CPU core)",
    )
    parser.add_argument(
        "--headroom",
        type=int,
        default=None,
        metavar="ROWS",
        help="make room for this many added images at start-up, so that adds do not stall "
        f"searches to grow the index (default: as many as it holds, at most {HEADROOM:,}; "
        "0: none)",
    )
    parser.add_argument(
        "--no-access-log", action="store_true", help="do not log every request (faster)"
    )
    parser.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    from cacl.cli import CommandError

    try:
        import uvicorn

        from cacl.serve.app import create_app
    except ImportError as exc:
        raise CommandError(
            f"cacl serve needs the serve extra: pip install 'cacl[serve]' ({exc})"
        ) from exc
    from cacl.inference import query_extractor
    from cacl.inference.live import LiveIndex
    from cacl.serve.embedder import Embedder
    from cacl.serve.security import check_bind, is_loopback, read_people
    from cacl.serve.settings import LOOPBACK_HOSTS, ServeSettings

    token = args.token if args.token is not None else os.environ.get(TOKEN_ENV) or None
    people = read_people(args.people) if args.people else None
    check_bind(args.host, token, people)
    if not 0 <= args.port <= 65535:
        raise CommandError(f"--port must be between 0 and 65535, got {args.port}")
    if args.search_threads < 0:
        raise CommandError(f"--search-threads must be 0 or more, got {args.search_threads}")
    if args.max_upload_mb <= 0:
        raise CommandError(f"--max-upload-mb must be positive, got {args.max_upload_mb}")
    settings = ServeSettings(
        token=token,
        people=people,
        # on loopback without a token, only loopback Host names (no DNS rebinding)
        allowed_hosts=(
            LOOPBACK_HOSTS if is_loopback(args.host) and token is None and not people else None
        ),
        max_upload_bytes=int(args.max_upload_mb * (1 << 20)),
        search_threads=args.search_threads,
    )
    if args.headroom is not None and args.headroom < 0:
        raise CommandError(f"--headroom must be 0 or more, got {args.headroom}")
    live = LiveIndex.open(args.index, writable=not args.read_only, cam_regex=args.cam_regex)
    try:
        rows = min(len(live), HEADROOM) if args.headroom is None else args.headroom
        if live.writable and rows:
            start = time.perf_counter()
            if live.reserve(rows):
                print(f"room for {rows} added images made in {time.perf_counter() - start:.1f} s")
        extractor = query_extractor(live.index, args.checkpoint, args.device)
        from cacl.labels.store import index_tracklets

        names = [hit.name for hit in live.names(0, len(live))]
        tracklets = index_tracklets(names, live.index.info.get("root"))
        if tracklets:
            print(f"labels cover whole tracklets ({len(set(tracklets.values()))} tracklets)")
        timing = _timing(args, live, names)
        app = create_app(live, Embedder(extractor), settings, tracklets=tracklets, timing=timing)
        host = f"[{args.host}]" if ":" in args.host else args.host
        print(
            f"serving {len(live)} images ({live.index.kind}) at http://{host}:{args.port}/ "
            f"{'with a token' if token else 'without a token'}"
            f"{f', {len(people)} personal tokens' if people else ''}; Ctrl+C stops",
            flush=True,
        )
        uvicorn.run(
            app,
            host=args.host,
            port=args.port,
            access_log=not args.no_access_log,
            log_level="info",
            workers=1,  # one process: the index lives in its memory
        )
    finally:
        live.close()
    return 0


def _timing(args, live, names):
    """The :class:`~cacl.serve.timing.TimeRanking` of ``--transit`` (or the checkpoint's run),
    ``None`` when the images have no times or there is no model; said on the console."""
    from pathlib import Path

    from cacl.cli import CommandError
    from cacl.serve.timing import TimeRanking, index_times
    from cacl.temporal.transit import TRANSIT_FILE, TransitModel

    if args.st_candidates < 1:
        raise CommandError(f"--st-candidates must be at least 1, got {args.st_candidates}")
    path = args.transit
    if path is None:
        checkpoint = live.index.info.get("checkpoint")
        candidate = Path(checkpoint).parent / TRANSIT_FILE if checkpoint else None
        path = candidate if candidate is not None and candidate.is_file() else None
    times = index_times(names, live.index.info.get("root"))
    if path is None or not times:
        if args.transit:
            raise CommandError(
                f"--transit {args.transit}: the indexed images have no times (give a times.csv "
                "or tracklets.csv in the gallery root)"
            )
        return None
    model = TransitModel.load(path)
    print(
        f"ranking by appearance and time offered (st=1): {len(times)} of {len(names)} images "
        f"have times, transit model {path}"
    )
    return TimeRanking(model, times, args.st_candidates)
