"""``RUN_DIR/report.html``: one self-contained page about a training run.

Everything comes from the run folder: ``results.json`` (history of clusters, losses and
evaluations; the key numbers), ``config.yaml`` (the resolved config) and the best checkpoint,
which is evaluated once more on the dataset's query / gallery to draw the CMC curve and a grid of
ranked results (:mod:`cacl.report.visrank`). Figures are PNGs embedded as base64 ``data:`` URIs;
the page has inline CSS and no script, so it can be mailed or archived as one file. Whatever
cannot be drawn (no checkpoint, dataset not found, no evaluation yet) is replaced by a note.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cacl.checkpoints import run_dir as rd
from cacl.checkpoints.io import BEST
from cacl.data.types import ReidDataset
from cacl.errors import CaclError
from cacl.files import chmod_like_new_file
from cacl.report.visrank import Ranking, choose_queries, render_rows, top_matches

log = logging.getLogger(__name__)

REPORT_FILE = "report.html"
LOSS_KEYS = ("L_I", "L_C_inter", "L_C_intra", "L_cam", "total")

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1100px; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; } td.text, th.text { text-align: left; }
img { max-width: 100%; display: block; margin: 0.5em 0; }
.notes { background: #fff6d6; border: 1px solid #e6c55a; padding: 0.5em 1em; }
.small { color: #666; font-size: 0.85em; }
.wide { overflow-x: auto; }
pre { background: #f6f6f6; padding: 0.8em; font-size: 0.85em; overflow-x: auto; }
"""


class ReportError(CaclError):
    """The folder is not a run folder (neither results.json nor config.yaml)."""


def make_report(
    run_dir: str | os.PathLike,
    *,
    dataset: ReidDataset | None = None,
    data: str | None = None,
    root: str | None = None,
    device: Any = None,
    queries: int = 8,
    top: int = 10,
    seed: int = 0,
    batch_size: int = 128,
    workers: int | None = None,
    progress: bool = True,
    ranking: Ranking | None = None,
) -> Path:
    """Write ``run_dir/report.html`` (atomically) and return its path.

    ``dataset`` (already loaded) or ``data`` / ``root`` (a dataset name and folder) replace the
    dataset recorded in the run; the best checkpoint is evaluated on ``device`` (default: CUDA
    when available) for the CMC curve and a grid of ``queries`` random queries, with
    ``workers`` loader processes (default: the run's ``data.workers``). ``ranking``: the best
    checkpoint's ranking when the caller has it already (``cacl train`` passes its evaluation of
    the best epoch): nothing is evaluated again.
    """
    run_dir = Path(run_dir)
    results_path, config_path = run_dir / rd.RESULTS_FILE, run_dir / rd.CONFIG_FILE
    if not results_path.is_file() and not config_path.is_file():
        raise ReportError(f"{run_dir} is not a run folder: no {rd.RESULTS_FILE}, no config.yaml")
    notes: list[str] = []
    results: dict[str, Any] = {}
    if results_path.is_file():
        try:
            results = json.loads(results_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ReportError(f"cannot read {results_path}: {exc}") from exc
    else:
        notes.append(f"no {rd.RESULTS_FILE} yet: no epoch has finished")
    config_text = config_path.read_text(encoding="utf-8") if config_path.is_file() else None
    if config_text is None:
        notes.append("no config.yaml in the run folder")
    extract = dict(batch_size=batch_size, workers=workers, progress=progress)
    if results and no_test_split(results) and data is None and root is None:
        notes.append(
            "this run's data has no query / gallery split, so no epoch was evaluated and best.pt "
            "is the last epoch; the clusters and losses below are what the run has. Evaluate on "
            "a labelled set with `cacl eval RUN --data NAME --root FOLDER` (or `cacl report RUN "
            "--data NAME --root FOLDER`)"
        )
        checkpoint = {"path": str(run_dir / BEST), "epoch": results.get("best_epoch")}
        checkpoint["how"] = "not evaluated (no test split)"
    elif ranking is None:
        ranking, checkpoint = _rank_best(
            run_dir, results, dataset, data, root, device, notes, extract
        )
    else:
        checkpoint = {"path": str(run_dir / BEST), "epoch": results.get("best_epoch")}
        checkpoint["how"] = "as evaluated in training"
    grid = None
    if ranking is not None:
        chosen = choose_queries(ranking.query_ap, "random", queries, seed)
        grid = render_rows(top_matches(ranking, chosen, top), ranking.query, ranking.gallery)
    page = render_page(run_dir, results, config_text, ranking, checkpoint, grid, notes)
    path = run_dir / REPORT_FILE
    _write_atomic(page, path)
    return path


def no_test_split(results: dict[str, Any]) -> bool:
    """Whether a run never evaluated: no mAP before training and none at any epoch."""
    history = results.get("history") or []
    initial = results.get("initial_mAP")
    return (initial is None or initial != initial) and not any(h.get("eval") for h in history)


def write_report_quietly(run_dir: str | os.PathLike, **kwargs: Any) -> Path | None:
    """:func:`make_report`, but any failure is only logged as a warning (for ``cacl train``).

    Under torchrun only rank 0 (``RANK``) writes the report; the other ranks return ``None``.
    """
    if os.environ.get("RANK", "0") != "0":
        return None
    try:
        path = make_report(run_dir, **kwargs)
    except Exception as exc:  # a finished run must never fail because of its report
        log.warning(
            "could not write the run report in %s: %s: %s", run_dir, type(exc).__name__, exc
        )
        return None
    log.info("run report: %s", path)
    return path


def _rank_best(
    run_dir: Path,
    results: dict[str, Any],
    dataset: ReidDataset | None,
    data: str | None,
    root: str | None,
    device: Any,
    notes: list[str],
    extract: dict[str, Any],
) -> tuple[Ranking | None, dict[str, Any]]:
    """Evaluate the best checkpoint again; on failure add a note and return ``None``."""
    from cacl.checkpoints.network import load_network
    from cacl.distributed import resolve_device
    from cacl.report.visrank import compute_ranking

    try:
        device = resolve_device("auto") if device is None else device
        net, cfg, meta = load_network(run_dir, device)
    except CaclError as exc:
        notes.append(f"no CMC curve or ranked results: {exc}")
        return None, {}
    checkpoint = {"path": meta.get("_path"), "epoch": meta.get("epoch"), "how": "evaluated again"}
    if Path(checkpoint["path"]).name != BEST:
        notes.append(f"no {BEST}: the CMC curve and ranked results show {checkpoint['path']}")
    try:
        if dataset is None:
            dataset = _load_dataset(cfg, results, data, root)
        if not dataset.has_test_split:
            raise CaclError(f"{dataset.name} has no query / gallery split")
        d = cfg.data
        if extract["workers"] is None:
            extract["workers"] = d.workers
        ranking = compute_ranking(
            net, dataset, height=d.height, width=d.width, device=device, **extract
        )
    except (CaclError, OSError) as exc:
        notes.append(f"no CMC curve or ranked results (dataset not available): {exc}")
        return None, checkpoint
    return ranking, checkpoint


def _load_dataset(cfg: Any, results: dict[str, Any], data: str | None, root: str | None):
    """The dataset given on the command line, else the folder the run used, else the config's."""
    from cacl.data.default import resolve_dataset
    from cacl.data.readers import load_dataset

    if data or root:
        return resolve_dataset(**cfg.data.dataset_options(data, root))
    recorded = results.get("dataset") or {}
    if recorded.get("root") and Path(recorded["root"]).is_dir():
        return load_dataset(recorded["name"], recorded["root"], verify=cfg.data.verify)
    return resolve_dataset(**cfg.data.dataset_options())


# ---------------------------------------------------------------------------- the page


def render_page(
    run_dir: Path,
    results: dict[str, Any],
    config_text: str | None,
    ranking: Ranking | None,
    checkpoint: dict[str, Any],
    grid: Any,
    notes: Sequence[str],
) -> str:
    """The HTML text of the report (see the module docstring)."""
    from cacl.report import plots

    history = results.get("history") or []
    notes = list(notes)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>cacl report: {_esc(run_dir.name)}</title><style>{CSS}</style></head><body>",
        f"<h1>cacl run report: {_esc(run_dir.name)}</h1>",
        f'<p class="small">{_esc(run_dir.resolve())} &middot; written '
        f"{time.strftime('%Y-%m-%d %H:%M:%S')}</p>",
    ]
    body: list[str] = ["<h2>Key numbers</h2>", _summary_table(results, ranking, checkpoint)]

    body.append("<h2>Test-set accuracy per epoch</h2>")
    best = results.get("best_epoch")
    body.append(_figure(plots.metrics_per_epoch(history, results.get("initial"), best), "mAP"))
    if not any(h.get("eval") for h in history) and not (results and no_test_split(results)):
        notes.append("no evaluated epoch yet: mAP / rank-1 per epoch are missing")

    body.append("<h2>Per-epoch values</h2>")
    body.append(_epoch_table(history, results.get("initial")) if history else "<p>no epoch</p>")
    body.append("<h2>Loss terms</h2>")
    body.append(_figure(plots.losses_per_epoch(history), "loss terms per epoch"))
    body.append("<h2>Pseudo labels</h2>")
    body.append(_figure(plots.clusters_per_epoch(history), "clusters and outliers per epoch"))
    if history:
        body.append(_figure(plots.cluster_sizes(history[-1]), "cluster sizes of the last epoch"))
    nmi = plots.nmi_ari_per_epoch(history)
    if nmi is not None:
        body.append(_figure(nmi, "NMI and ARI per epoch"))
    elif history:
        body.append("<p>NMI / ARI: unknown (the training images carry no identities).</p>")
    cams = plots.camera_per_epoch(history)
    if cams is not None:
        body.append(_figure(cams, "camera statistics per epoch"))

    transit = run_dir / "transit.json"
    if transit.is_file():
        from cacl.errors import CaclError
        from cacl.temporal.transit import TransitModel

        body.append("<h2>Transit times between cameras</h2>")
        try:
            picture = plots.transit_curves(TransitModel.load(transit))
            body.append(_figure(picture, "transit times"))
            body.append(
                '<p class="small">From the last epoch\'s pseudo labels; <code>cacl eval RUN '
                "--st</code> ranks by appearance and time with it.</p>"
            )
        except CaclError as exc:
            body.append(f"<p>{_esc(exc)}</p>")

    body.append("<h2>CMC curve of the best model</h2>")
    if ranking is not None:
        r = ranking.result
        title = f"CMC, {_checkpoint_name(checkpoint)}: mAP {r.mAP:.4f}"
        body.append(_figure(plots.cmc_curve(r.cmc, title), "CMC curve"))
        body.append(
            f'<p class="small" id="recomputed">{_esc(_checkpoint_name(checkpoint))} '
            f"{checkpoint['how']}: mAP {r.mAP:.4f}, rank-1 {r.rank(1):.4f}; {len(ranking.query)} queries "
            f"({r.num_valid_queries} with a true match), {len(ranking.gallery)} gallery images, "
            "Market-1501 protocol.</p>"
        )
        body.append("<h2>Ranked results (random queries)</h2>")
        body.append(
            '<p class="small">Each row: the query (gray), then its top matches by distance; '
            "green border: same identity (true match), red: another identity. Gallery images "
            "of the query's identity under its own camera are not ranked. "
            "<code>cacl visrank RUN_DIR --which worst</code> draws more.</p>"
        )
        body.append(_figure(_pil_png(grid), "ranked results"))
    else:
        body.append("<p>not available (see the notes above).</p>")

    body.append("<h2>Resolved config</h2>")
    body.append(f"<pre>{_esc(config_text)}</pre>" if config_text else "<p>no config.yaml</p>")
    if notes:
        items = "".join(f"<li>{_esc(n)}</li>" for n in notes)
        parts.append(f'<div class="notes" id="notes"><b>Missing</b><ul>{items}</ul></div>')
    parts += body
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _summary_table(
    results: dict[str, Any], ranking: Ranking | None, checkpoint: dict[str, Any]
) -> str:
    data = results.get("dataset") or {}
    wall = results.get("wall_seconds")
    rows = [
        ("initial_mAP", "mAP before training", results.get("initial_mAP")),
        ("initial_rank1", "rank-1 before training", (results.get("initial") or {}).get("rank1")),
        ("mAP", "mAP (best epoch)", results.get("mAP")),
        ("mINP", "mINP", results.get("mINP")),
        ("rank1", "rank-1", results.get("rank1")),
        ("rank5", "rank-5", results.get("rank5")),
        ("rank10", "rank-10", results.get("rank10")),
        ("best_epoch", "best epoch", results.get("best_epoch")),
        ("epochs_done", "epochs done", results.get("epochs_done")),
        ("wall_seconds", "wall time", _duration(wall) if wall is not None else None),
        ("device", "device", _device(results)),
        ("dataset", "dataset", f"{data.get('name')} ({data.get('root')})" if data else None),
    ]
    if ranking is not None:
        rows.append(("checkpoint", "model shown below", _checkpoint_name(checkpoint)))
    cells = "".join(
        f'<tr><th class="text">{_esc(label)}</th><td class="text" data-key="{key}">'
        f"{_esc(_fmt(value))}</td></tr>"
        for key, label, value in rows
    )
    return f'<table id="summary">{cells}</table>'


def _epoch_table(history: Sequence[dict[str, Any]], initial: dict[str, Any] | None) -> str:
    cluster_keys = [
        ("clusters", "clusters"),
        ("outliers", "outliers"),
        ("clusters_before_refine", "clusters before refine"),
        ("outliers_before_refine", "outliers before refine"),
        ("size_max", "largest"),
        ("nmi", "NMI"),
        ("ari", "ARI"),
        ("multi_camera_clusters", "2+ camera clusters"),
        ("cameras_per_cluster", "cameras / cluster"),
        ("own_camera_share", "own-camera 10-NN"),
    ]
    loss_keys = [k for k in LOSS_KEYS if any(k in (h.get("loss") or {}) for h in history)]
    eval_keys = [("mAP", "mAP"), ("rank1", "rank-1"), ("rank5", "rank-5")]
    head = ["epoch", *(label for _, label in cluster_keys), *loss_keys]
    head += [label for _, label in eval_keys] + ["train s"]
    lines = [
        '<div class="wide"><table id="epochs"><tr>'
        + "".join(f"<th>{_esc(h)}</th>" for h in head)
        + "</tr>"
    ]
    if initial:
        blank = len(cluster_keys) + len(loss_keys)
        cells = "".join(f'<td data-key="{k}">{_fmt(initial.get(k))}</td>' for k, _ in eval_keys)
        lines.append(
            f'<tr data-epoch="0"><td>0</td><td colspan="{blank}" class="text">before training'
            f"</td>{cells}<td></td></tr>"
        )
    for h in history:
        cluster, loss, ev = h.get("cluster") or {}, h.get("loss") or {}, h.get("eval") or {}
        cells = [f"<td>{h.get('epoch')}</td>"]
        cells += [f'<td data-key="{k}">{_fmt(cluster.get(k))}</td>' for k, _ in cluster_keys]
        cells += [f'<td data-key="{k}">{_fmt(loss.get(k))}</td>' for k in loss_keys]
        cells += [f'<td data-key="{k}">{_fmt(ev.get(k))}</td>' for k, _ in eval_keys]
        cells.append(f'<td data-key="train_seconds">{_fmt(h.get("train_seconds"), 1)}</td>')
        lines.append(f'<tr data-epoch="{h.get("epoch")}">' + "".join(cells) + "</tr>")
    lines.append("</table></div>")
    return "\n".join(lines)


def _figure(png: bytes | None, what: str) -> str:
    if png is None:
        return f"<p>{_esc(what)}: nothing to draw yet.</p>"
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{_esc(what)}" src="data:image/png;base64,{data}">'


def _pil_png(image: Any) -> bytes | None:
    if image is None:
        return None
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if value == value else "-"
    return str(value)


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _duration(seconds: float) -> str:
    minutes, sec = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    text = f"{hours} h {minutes} min {sec} s" if hours else f"{minutes} min {sec} s"
    return f"{text} ({seconds:.1f} s)"


def _device(results: dict[str, Any]) -> str | None:
    device = results.get("device")
    world = results.get("world_size")
    return f"{device} x {world}" if device and world and world > 1 else device


def _checkpoint_name(checkpoint: dict[str, Any]) -> str:
    name = Path(checkpoint.get("path") or "?").name
    return f"{name} (epoch {checkpoint['epoch']})" if checkpoint.get("epoch") else name


def _write_atomic(text: str, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        chmod_like_new_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
