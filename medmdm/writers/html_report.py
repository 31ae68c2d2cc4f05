"""``report.html``: one self-contained page a reviewer opens in any browser, with no server and no network.

The page holds the source image with the map over it, drawn by a small inline script on a canvas: a
slice scroller for a volume (its slices along axis 2, the DICOM slices, numbered from 1 and placed in mm
as the preview and the Secondary Captures number and place them, :mod:`medmdm.writers.display`), an
opacity slider, a colour bar; then the target, the scores in words, the method and every option, the
model, the input, the warnings and the other outputs, all read from the report (``report.json``'s
content, :func:`medmdm.pipeline.report.study_report`).

The image (windowed to 8 bits as the Secondary Captures window it) and the map (8 bits over its range)
are embedded as deflated, base64-encoded arrays that the browser inflates (``DecompressionStream``);
a volume of more than :data:`MAX_VOXELS` voxels is subsampled in-plane. The page reads ``#slice=N``
(from 1) and ``#opacity=A`` from its address, so a link (or a test) can open it on a given view.
"""

from __future__ import annotations

import base64
import html
import json
import math
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medmdm.errors import InputError
from medmdm.io import Study
from medmdm.writers.atomic import atomic_path
from medmdm.writers.checks import saliency_array
from medmdm.writers.display import caption, grey_window, score_sentences
from medmdm.writers.preview import CMAP, HIDE_BELOW

MAX_VOXELS = 2**25  # per embedded array; larger volumes are subsampled in-plane
DEFAULT_OPACITY = 0.45
LUT_SIZE = 256
RESEARCH_NOTICE = "Research only: a model explanation, not a diagnosis."


def write_html_report(
    report: Mapping[str, Any], study: Study, saliency: torch.Tensor | np.ndarray, path: str | Path
) -> Path:
    """Write the self-contained review page of one explained study.

    Parameters
    ----------
    report : mapping
        The study's report (what ``report.json`` holds): ``target``, ``method``, ``model``, ``input``,
        ``warnings``, ``outputs`` are shown when present.
    study : medmdm.io.Study
        The source: its image, affine (plane names, positions, spacing) and DICOM headers (window).
    saliency : torch.Tensor or numpy.ndarray
        ``(*spatial)`` or ``(1, *spatial)`` map on the study's grid, finite.
    path : str or Path
        ``.html`` file; its folder must exist. Written atomically.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    InputError
        A file name not ending in ``.html``, a map of another shape or with non-finite values.
    """
    path = Path(path)
    if path.suffix.lower() != ".html":
        raise InputError(f"{path}: a report page's file name must end with .html")
    values = saliency if isinstance(saliency, torch.Tensor) else torch.as_tensor(np.asarray(saliency))
    data = saliency_array(values, tuple(study.size), f"grid of {study.path}")
    page = _page(report, study, data)
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path


def _page(report: Mapping[str, Any], study: Study, data: np.ndarray) -> str:
    step = max(1, math.ceil(math.sqrt(data.size / MAX_VOXELS)))  # in-plane subsampling of large volumes
    image = study.image.detach().as_tensor()[:, ::step, ::step].to(dtype=torch.float64).cpu().numpy()
    volume = data[::step, ::step]
    volume = volume[..., None] if volume.ndim == 2 else volume  # (X, Y, Z)
    image = image[..., None] if image.ndim == 3 else image  # (C, X, Y, Z)
    affine = np.asarray(study.affine, dtype=np.float64)
    low, high = grey_window(study.headers, image)
    shown = np.clip((image - low) / (high - low), 0, 1) if high > low else image * 0.0
    rgb = shown.shape[0] == 3
    grey = np.round((shown[:3] if rgb else shown[:1]) * 255)
    lo, hi = float(volume.min()), float(volume.max())
    scaled = np.round((volume - lo) / (hi - lo) * 255) if hi > lo else np.zeros_like(volume)
    count = volume.shape[2]
    three_d = data.ndim == 3
    payload = {
        "columns": volume.shape[0],
        "rows": volume.shape[1],
        "slices": count,
        "channels": 3 if rgb else 1,
        # (slices, rows, columns[, channels]) in C order: row j, column i of slice k is voxel (i, j, k)
        "image": _packed(np.moveaxis(grey, 0, -1).transpose(2, 1, 0, 3)),
        "map": _packed(scaled.transpose(2, 1, 0)),
        "spacing": [float(s) * step for s in np.linalg.norm(affine[:3, :2], axis=0)],
        "labels": [caption(study, k) for k in range(count)],
        "start": int(np.unravel_index(int(np.argmax(volume)), volume.shape)[2]) + 1,
        "opacity": DEFAULT_OPACITY,
        "hide_below": HIDE_BELOW,
        "range": [lo, hi],
        "lut": _lut(),
    }
    blob = json.dumps(payload, separators=(",", ":")).replace("</", "<\\/")
    return TEMPLATE.format(
        title=html.escape(_title(report)),
        notice=html.escape(RESEARCH_NOTICE),
        scroller="" if three_d else ' hidden=""',
        sections="\n".join(_sections(report)),
        data=blob,
        script=SCRIPT,
        style=STYLE,
        hide=f"{HIDE_BELOW:.0%}",
    )


def _packed(array: np.ndarray) -> str:
    """A uint8 array, deflated (zlib) and base64-encoded."""
    raw = np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    return base64.b64encode(zlib.compress(raw, 6)).decode("ascii")


def _lut() -> list[list[int]]:
    import matplotlib

    colours = matplotlib.colormaps[CMAP](np.linspace(0, 1, LUT_SIZE))[:, :3]
    return np.round(colours * 255).astype(int).tolist()


def _title(report: Mapping[str, Any]) -> str:
    model = report.get("model", {}).get("name", "")
    method = report.get("method", {}).get("name", "")
    target = report.get("target", {})
    name = target.get("name") or " ".join(
        str(target[k]) for k in ("kind", "index") if target.get(k) is not None
    )
    return "medmdm: " + ", ".join(str(v) for v in (model, method, name) if v)


def _sections(report: Mapping[str, Any]) -> list[str]:
    """The report's parts as HTML sections: target and scores, method, model, input, warnings, outputs."""
    target = dict(report.get("target", {}))
    scores = [target.pop(f"score_{k}", None) for k in ("original", "masked", "remaining", "baseline")]
    name = target.pop("name", "") or "(unnamed)"
    kind, index = target.pop("kind", "class"), target.pop("index", None)
    score = str(target.pop("score", "logit"))
    parts = [f"<p>What the model was asked about: <b>{_text(name)}</b> ({_text(kind)} {_text(index)}).</p>"]
    if all(isinstance(s, int | float) for s in scores):
        original, masked, remaining, baseline = scores
        words = score_sentences(original, masked, remaining, baseline, score)
        parts.append("<ul>" + "".join(f"<li>{_text(w)}</li>" for w in words) + "</ul>")
        parts.append(
            "<p>A map that explains the decision keeps most of the evidence when only its region is kept, "
            "and loses most of it when its region is removed. Colours are relative to this map: the "
            "brightest are the parts the score depended on most.</p>"
        )
    sections = [_section("Target and scores", "".join(parts) + _table(target))]
    method = report.get("method", {})
    sections.append(_section(f"Method: {_text(method.get('name', ''))}", _table(method.get("options", {}))))
    for key, title in (("model", "Model"), ("input", "Input"), ("explanation", "Run")):
        if report.get(key):
            sections.append(_section(title, _table(report[key])))
    if report.get("warnings"):
        items = "".join(f"<li>{_text(w)}</li>" for w in report["warnings"])
        sections.append(_section("Warnings", f"<ul>{items}</ul>"))
    if report.get("outputs"):
        rows = {o.get("path", ""): o.get("kind", "") for o in report["outputs"]}
        sections.append(_section("Outputs", _table(rows)))
    return sections


def _section(title: str, body: str) -> str:
    return f"<section><h2>{title}</h2>{body}</section>"


def _table(values: Mapping[str, Any]) -> str:
    rows = "".join(
        f"<tr><th>{_text(k)}</th><td>{_text(v if isinstance(v, str) else json.dumps(v))}</td></tr>"
        for k, v in values.items()
    )
    return f"<table>{rows}</table>" if rows else ""


def _text(value: Any) -> str:
    return html.escape(str(value))


STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:16px;color:#111;background:#fff;max-width:1100px}
h1{font-size:20px;margin:0 0 4px} h2{font-size:17px;margin:18px 0 6px}
.notice{color:#a00;font-weight:600;margin:0 0 10px}
#viewer{display:flex;gap:16px;align-items:flex-start}
#view{background:#000;image-rendering:pixelated;display:block}
#controls{min-width:260px} #controls label{display:block;margin:8px 0 2px}
#controls input[type=range]{width:100%} #where{font-weight:600}
#bar{width:100%;height:14px;display:block} .ends{display:flex;justify-content:space-between;font-size:13px}
table{border-collapse:collapse;font-size:14px} th,td{border:1px solid #ccc;padding:2px 8px;text-align:left;
vertical-align:top} th{background:#f4f4f4;font-weight:600}
"""

SCRIPT = r"""
const D = JSON.parse(document.getElementById('data').textContent);
const view = document.getElementById('view'), ctx = view.getContext('2d');
const slice = document.getElementById('slice'), opacity = document.getElementById('opacity');
let image = null, map = null;
async function inflate(b64) {
  const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream('deflate'));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}
function draw() {
  if (!image) return;
  const k = Number(slice.value) - 1, a = Number(opacity.value), n = D.rows * D.columns, c = D.channels;
  const out = ctx.createImageData(D.columns, D.rows);
  for (let p = 0; p < n; p++) {
    const q = k * n + p, m = map[q];
    let r, g, b;
    if (c === 3) { r = image[3 * q]; g = image[3 * q + 1]; b = image[3 * q + 2]; }
    else { r = g = b = image[q]; }
    if (m >= D.hide_below * 255) {
      const col = D.lut[m];
      r = (1 - a) * r + a * col[0]; g = (1 - a) * g + a * col[1]; b = (1 - a) * b + a * col[2];
    }
    out.data[4 * p] = r; out.data[4 * p + 1] = g; out.data[4 * p + 2] = b; out.data[4 * p + 3] = 255;
  }
  ctx.putImageData(out, 0, 0);
  document.getElementById('where').textContent = D.labels[k];
  document.getElementById('alpha').textContent = Math.round(a * 100) + '%';
}
function fromHash() {
  const h = new URLSearchParams(location.hash.slice(1));
  if (h.has('slice')) slice.value = h.get('slice');
  if (h.has('opacity')) opacity.value = h.get('opacity');
  draw();
}
function setUp() {
  view.width = D.columns; view.height = D.rows;
  const width = D.columns * D.spacing[0], height = D.rows * D.spacing[1];
  const scale = Math.min(640 / width, 640 / height);
  view.style.width = Math.round(width * scale) + 'px'; view.style.height = Math.round(height * scale) + 'px';
  slice.max = D.slices; slice.value = D.start; opacity.value = D.opacity;
  const bar = document.getElementById('bar'), bctx = bar.getContext('2d');
  D.lut.forEach((col, i) => {
    bctx.fillStyle = `rgb(${col[0]},${col[1]},${col[2]})`; bctx.fillRect(i, 0, 1, 1);
  });
  document.getElementById('low').textContent = D.range[0].toPrecision(3);
  document.getElementById('high').textContent = D.range[1].toPrecision(3);
  slice.oninput = draw; opacity.oninput = draw; window.onhashchange = fromHash;
}
setUp();
Promise.all([inflate(D.image), inflate(D.map)]).then(([i, m]) => {
  image = i; map = m; fromHash(); document.body.dataset.ready = 'yes';
});
"""

TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta http-equiv="Content-Security-Policy"
 content="default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:">
<style>{style}</style></head>
<body>
<h1>{title}</h1>
<p class="notice">{notice}</p>
<div id="viewer">
<canvas id="view"></canvas>
<div id="controls">
<div id="where"></div>
<div{scroller}><label for="slice">Slice</label><input id="slice" type="range" min="1" max="1" step="1"></div>
<label for="opacity">Map opacity <span id="alpha"></span></label>
<input id="opacity" type="range" min="0" max="1" step="0.05">
<label>Saliency (map values below {hide} of the range are not drawn)</label>
<canvas id="bar" width="256" height="1"></canvas>
<div class="ends"><span id="low"></span><span id="high"></span></div>
</div></div>
{sections}
<script type="application/json" id="data">{data}</script>
<script>{script}</script>
</body></html>
"""
