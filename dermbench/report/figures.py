"""Leaderboard figures (matplotlib, Agg), written as SVG that is bit-identical from run to run.

- :func:`heatmap_svg`: models × tasks, one metric (the paper's Fig. 5d).
- :func:`bars_svg`: one bar per (task, model) with 95% CI whiskers, for one task group.
- :func:`fairness_svg`: per-subgroup metric with CI whiskers, one marker series per model (Fig. 6a).
- :func:`label_efficiency_svg`: metric against training fraction with CI bands, one panel per task (Fig. 6c).
- :func:`reader_accuracy_svg`: model accuracy against training fraction over the readers' violins (Fig. 6c).
- :func:`reader_paired_svg`: each reader's accuracy without and with AI, joined (Fig. 6d).
- :func:`embedding_svg`: 2-D embedding maps (t-SNE), one panel per colouring.

Every figure has a title and labelled axes; values are drawn ×100, labelled "(%)" for proportions
and "(×100)" for CIDEr, which is not a proportion (:func:`axis_label`).

Every function takes plain data (values are fractions, shown in percent), sorts nothing itself
(callers pass sorted keys) and returns the SVG bytes. Rendering is most of a leaderboard's time
(`dermbench leaderboard` and `dermbench paper` draw the same figures), so every figure function is
:func:`memoized_svg`: its bytes are kept in the cache folder under a key of its data and its code.
Reproducibility: a fixed ``svg.hashsalt`` (the ids of clip paths and glyphs), no date and a fixed
creator in the metadata, the DejaVu Sans font shipped with matplotlib drawn as paths, and no global
pyplot state (each figure is a ``matplotlib.figure.Figure`` rendered inside an ``rc_context``).
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import io
import math
import struct
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

Interval = tuple[float, float, float]  # value, ci_low, ci_high (fractions; NaN = missing)

RC = {
    "svg.hashsalt": "dermbench",
    "svg.fonttype": "path",
    "font.family": "DejaVu Sans",
    "font.size": 8.0,
    "axes.titlesize": 9.0,
    "axes.labelsize": 8.0,
    "legend.fontsize": 7.0,
    "xtick.labelsize": 7.0,
    "ytick.labelsize": 7.0,
    "path.simplify": False,
    "savefig.bbox": "standard",
}
# tab10, fixed so that a model keeps its colour across figures (models are passed sorted)
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
MISSING_COLOUR = "#dddddd"


def _ok(v: Optional[float]) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100)


def axis_label(metric_title: str) -> str:
    """The axis label of a metric drawn ×100: CIDEr is a consensus score (0–10), not a proportion."""
    return f"{metric_title} (×100)" if metric_title == "CIDEr" else f"{metric_title} (%)"


def _render(fig, title: str) -> bytes:
    buf = io.BytesIO()
    # bbox_inches='tight' grows the canvas to every artist (a legend outside the axes, long rotated
    # labels), so nothing is clipped; it depends on the drawing only, so the bytes stay reproducible.
    fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": "dermbench", "Title": title},
                bbox_inches="tight", pad_inches=0.05)
    return buf.getvalue()


# --- the figure memo ----------------------------------------------------------------------------
# A figure's SVG bytes depend only on the figure function's arguments, its code (the module that
# defines it and this one, which holds the shared settings) and matplotlib: that is the memo's key.
# `dermbench leaderboard` and `dermbench paper` (which builds the leaderboard again inside the paper
# folder) then draw each figure once, and a rebuilt leaderboard draws only what changed.
MEMO_VERSION = "1"


class _Unkeyable(Exception):
    """An argument the memo cannot encode exactly: the figure is drawn without the memo."""


def _feed(h, obj: Any) -> None:
    """Feed an exact, type-tagged encoding of ``obj`` into the hash ``h`` (raises _Unkeyable otherwise)."""
    import numpy as np

    if obj is None or isinstance(obj, bool):
        h.update(b"c" + repr(obj).encode())
    elif isinstance(obj, int):
        h.update(b"i" + str(obj).encode() + b";")
    elif isinstance(obj, float):
        h.update(b"f" + struct.pack("<d", obj))
    elif isinstance(obj, str):
        data = obj.encode("utf-8", "surrogatepass")
        h.update(b"s" + str(len(data)).encode() + b":" + data)
    elif isinstance(obj, bytes):
        h.update(b"b" + str(len(obj)).encode() + b":" + obj)
    elif isinstance(obj, np.generic):
        _feed(h, obj.item())
    elif isinstance(obj, np.ndarray):
        if obj.dtype.kind == "O":
            h.update(b"O" + repr(obj.shape).encode())
            for item in obj.ravel().tolist():
                _feed(h, item)
        else:
            h.update(b"a" + obj.dtype.str.encode() + repr(obj.shape).encode())
            h.update(np.ascontiguousarray(obj).tobytes())
    elif isinstance(obj, (list, tuple)):
        h.update((b"l" if isinstance(obj, list) else b"t") + str(len(obj)).encode() + b"[")
        for item in obj:
            _feed(h, item)
        h.update(b"]")
    elif isinstance(obj, Mapping):
        items = []
        for k, v in obj.items():  # insertion order can matter to a figure (legend order): kept
            kh = hashlib.sha256()
            _feed(kh, k)
            vh = hashlib.sha256()
            _feed(vh, v)
            items.append(kh.digest() + vh.digest())
        h.update(b"m" + str(len(items)).encode() + b"{" + b"".join(items) + b"}")
    elif isinstance(obj, (set, frozenset)):
        digests = []
        for item in obj:
            ih = hashlib.sha256()
            _feed(ih, item)
            digests.append(ih.digest())
        h.update(b"S" + b"".join(sorted(digests)))
    elif type(obj).__name__ == "DataFrame" and type(obj).__module__.startswith("pandas"):
        h.update(b"D")
        _feed(h, [str(c) for c in obj.columns])
        _feed(h, obj.index.to_numpy())
        for c in obj.columns:
            _feed(h, obj[c].to_numpy())
    elif type(obj).__name__ == "Series" and type(obj).__module__.startswith("pandas"):
        h.update(b"R")
        _feed(h, str(obj.name))
        _feed(h, obj.index.to_numpy())
        _feed(h, obj.to_numpy())
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        h.update(b"d" + type(obj).__qualname__.encode())
        _feed(h, {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)})
    else:
        raise _Unkeyable(type(obj).__name__)


@functools.lru_cache(maxsize=None)
def _code_digest(module_file: str) -> bytes:
    """The code a figure depends on: its module's source, this module's source, matplotlib's version."""
    import matplotlib

    h = hashlib.sha256(MEMO_VERSION.encode() + matplotlib.__version__.encode())
    for path in sorted({module_file, __file__}):
        h.update(Path(path).read_bytes())
    return h.digest()


def memo_key(render: Callable, args: tuple, kwargs: dict) -> Optional[str]:
    """The memo key of ``render(*args, **kwargs)``, or None when an argument cannot be encoded exactly."""
    h = hashlib.sha256(_code_digest(inspect.getsourcefile(render) or __file__))
    h.update(f"{render.__module__}.{render.__qualname__}".encode())
    try:
        _feed(h, list(args))
        _feed(h, dict(sorted(kwargs.items())))
    except _Unkeyable:
        return None
    return h.hexdigest()


def memo_folder() -> Path:
    from dermbench.config import cache_dir

    return cache_dir() / "figures"


def memoized_svg(render: Callable[..., bytes]) -> Callable[..., bytes]:
    """Decorator for a figure function returning SVG bytes: the bytes come from the cache folder's figure
    memo when this function, with this code, was called with equal arguments before; else it draws and
    keeps them (atomically; a cache folder that cannot be written only loses the speed-up)."""

    @functools.wraps(render)
    def memoized(*args, **kwargs) -> bytes:
        key = memo_key(render, args, kwargs)
        if key is None:
            return render(*args, **kwargs)
        path = memo_folder() / key[:2] / f"{key}.svg"
        try:
            return path.read_bytes()
        except OSError:
            pass
        svg = render(*args, **kwargs)
        try:
            from dermbench.io import atomic_write_bytes

            atomic_write_bytes(path, svg)
        except OSError:
            pass
        return svg

    memoized.uncached = render  # the drawing itself, for tests and benchmarks
    return memoized


def _with_rc(draw):
    """Run ``draw()`` (which builds and renders a figure) with the fixed settings, whatever the caller's rcParams."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    with matplotlib.rc_context(RC):
        return draw()


@memoized_svg
def heatmap_svg(title: str, models: Sequence[str], columns: Sequence[str], column_titles: Sequence[str],
                values: Mapping[tuple[str, str], float], metric_title: str) -> bytes:
    """Models (rows) × tasks (columns); missing cells grey with '—'."""
    import numpy as np

    def draw():
        data = np.array([[values.get((m, c), math.nan) for c in columns] for m in models], dtype=float)
        fig = _figure(1.2 + 0.75 * max(len(columns), 2), 1.2 + 0.38 * max(len(models), 1))
        ax = fig.add_subplot(1, 1, 1)
        ax.set_facecolor(MISSING_COLOUR)
        masked = np.ma.masked_invalid(100 * data)
        image = ax.imshow(masked, cmap="viridis", vmin=np.nanmin(100 * data) if np.isfinite(data).any() else 0,
                          vmax=np.nanmax(100 * data) if np.isfinite(data).any() else 100, aspect="auto")
        finite = data[np.isfinite(data)]
        mid = 100 * (finite.min() + finite.max()) / 2 if finite.size else 50
        for i in range(len(models)):
            for j in range(len(columns)):
                v = data[i, j]
                text = "—" if not np.isfinite(v) else f"{100 * v:.1f}"
                ax.text(j, i, text, ha="center", va="center", fontsize=6.5,
                        color="black" if not np.isfinite(v) or 100 * v > mid else "white")
        ax.set_xticks(range(len(columns)), labels=list(column_titles), rotation=45, ha="right")
        ax.set_yticks(range(len(models)), labels=list(models))
        ax.set_xlabel("task")
        ax.set_ylabel("model")
        ax.set_title(title)
        fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02).set_label(axis_label(metric_title))
        fig.tight_layout()
        return _render(fig, title)

    return _with_rc(draw)


def _finish_categorical(fig, ax, title: str, metric_title: str, n_columns: int, legend: bool, x_label: str) -> bytes:
    """The common frame of the bar and fairness plots: limits, labels, legend outside, light y grid."""
    ax.set_xlim(-0.6, n_columns - 0.4)
    ax.set_xlabel(x_label)
    ax.set_ylabel(axis_label(metric_title))
    ax.set_title(title)
    if legend and ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    ax.grid(axis="y", linewidth=0.3, color="#cccccc")
    ax.set_axisbelow(True)
    fig.tight_layout()
    return _render(fig, title)


@memoized_svg
def bars_svg(title: str, models: Sequence[str], columns: Sequence[str], column_titles: Sequence[str],
             cells: Mapping[tuple[str, str], Interval], metric_title: str) -> bytes:
    """Grouped bars (x: tasks, one bar per model) with 95% CI whiskers; a missing result is marked 'n/a'."""

    def draw():
        # at least 3.6 in wide: a one-task group (federated, caption) otherwise leaves no room for the labels
        fig = _figure(max(3.6, 1.6 + 0.28 * max(len(columns), 1) * max(len(models), 1) + 0.4 * len(columns)), 3.0)
        ax = fig.add_subplot(1, 1, 1)
        width = 0.8 / max(len(models), 1)
        lows = [100 * c[0] for c in cells.values() if _ok(c[0])] + [100 * c[1] for c in cells.values() if _ok(c[1])]
        floor = max(0.0, 10 * math.floor(min(lows) / 10) - 10) if lows else 0.0
        labelled: set[str] = set()
        for i, m in enumerate(models):
            for j, col in enumerate(columns):
                x = j - 0.4 + width * (i + 0.5)
                v, lo, hi = cells.get((m, col), (math.nan, math.nan, math.nan))
                if not _ok(v):
                    ax.text(x, floor + 1, "n/a", rotation=90, ha="center", va="bottom", fontsize=5.5, color="#555555")
                    continue
                ax.bar(x, 100 * v - floor, width=width * 0.92, bottom=floor, color=colour(i),
                       label=None if m in labelled else m)
                labelled.add(m)
                if _ok(lo) and _ok(hi):
                    ax.errorbar(x, 100 * v, yerr=[[100 * (v - lo)], [100 * (hi - v)]], fmt="none", ecolor="black",
                                elinewidth=0.7, capsize=1.5)
        ax.set_xticks(range(len(columns)), labels=list(column_titles), rotation=30, ha="right")
        ax.set_ylim(bottom=floor)
        return _finish_categorical(fig, ax, title, metric_title, len(columns), legend=bool(labelled), x_label="task")

    return _with_rc(draw)


@memoized_svg
def fairness_svg(title: str, models: Sequence[str], subgroups: Sequence[str], subgroup_titles: Sequence[str],
                 cells: Mapping[tuple[str, str], Interval], metric_title: str) -> bytes:
    """x: subgroups; one marker series per model with 95% CI whiskers; a missing subgroup value is marked 'n/a'."""

    def draw():
        fig = _figure(2.2 + 0.55 * max(len(subgroups), 1) + 0.1 * len(models), 3.0)
        ax = fig.add_subplot(1, 1, 1)
        offset = 0.6 / max(len(models), 1)
        for i, m in enumerate(models):
            xs, ys, lo_err, hi_err = [], [], [], []
            for j, s in enumerate(subgroups):
                v, lo, hi = cells.get((m, s), (math.nan, math.nan, math.nan))
                x = j - 0.3 + offset * (i + 0.5)
                if not _ok(v):
                    ax.text(x, 0.02, "n/a", rotation=90, ha="center", va="bottom", fontsize=5.5, color="#555555",
                            transform=ax.get_xaxis_transform())
                    continue
                xs.append(x)
                ys.append(100 * v)
                lo_err.append(100 * (v - lo) if _ok(lo) else 0.0)
                hi_err.append(100 * (hi - v) if _ok(hi) else 0.0)
            if xs:
                ax.errorbar(xs, ys, yerr=[lo_err, hi_err], fmt="o", markersize=3.5, color=colour(i), ecolor=colour(i),
                            elinewidth=0.8, capsize=2.0, label=m)
        ax.set_xticks(range(len(subgroups)), labels=list(subgroup_titles))
        return _finish_categorical(fig, ax, title, metric_title, len(subgroups), legend=bool(models), x_label="subgroup")

    return _with_rc(draw)


@memoized_svg
def label_efficiency_svg(title: str, panels: Sequence[tuple[str, Sequence[float], Mapping[str, Mapping[float, Interval]]]],
                         models: Sequence[str], metric_title: str) -> bytes:
    """One panel per task: ``(panel title, fractions, {model: {fraction: (value, low, high)}})``;
    mean over repeats with its 95% bootstrap band."""

    def draw():
        n = max(len(panels), 1)
        cols = min(n, 4)
        rows = math.ceil(n / cols)
        fig = _figure(1.2 + 2.3 * cols, 0.6 + 2.1 * rows)
        for k, (panel_title, fractions, series) in enumerate(panels):
            ax = fig.add_subplot(rows, cols, k + 1)
            for i, m in enumerate(models):
                points = [(f, *series[m][f]) for f in fractions if m in series and f in series[m] and _ok(series[m][f][0])]
                if not points:
                    continue
                xs = [100 * p[0] for p in points]
                ax.plot(xs, [100 * p[1] for p in points], marker="o", markersize=2.5, linewidth=1.0, color=colour(i),
                        label=m)
                band = [p for p in points if _ok(p[2]) and _ok(p[3])]
                if band:
                    ax.fill_between([100 * p[0] for p in band], [100 * p[2] for p in band], [100 * p[3] for p in band],
                                    color=colour(i), alpha=0.18, linewidth=0)
            ax.set_title(panel_title)
            ax.set_xticks([100 * f for f in fractions], labels=[f"{100 * f:g}" for f in fractions])
            ax.set_xlabel("training images (%)")
            if k % cols == 0:
                ax.set_ylabel(axis_label(metric_title))
            ax.grid(linewidth=0.3, color="#cccccc")
        figure_legend(fig, order=list(models))
        fig.suptitle(title, x=0.02, ha="left")
        fig.tight_layout(rect=(0, 0, 1, 0.93))
        return _render(fig, title)

    return _with_rc(draw)


@memoized_svg
def reader_accuracy_svg(title: str, curves: Mapping[str, Mapping[float, float]], violins: Mapping[str, Sequence[float]],
                        points: Mapping[str, float]) -> bytes:
    """Fig. 6c: each model's accuracy against training fraction (``curves``: model -> fraction -> accuracy),
    beside violins of the readers' accuracies per round (``violins``: round -> accuracies) and the compared
    model's accuracy on the study images (``points``: model -> accuracy) as a dashed line across."""
    import numpy as np

    def draw():
        fractions = sorted({f for c in curves.values() for f in c})
        n_f = len(fractions)
        fig = _figure(2.2 + 0.5 * n_f + 0.8 * len(violins), 3.2)
        ax = fig.add_subplot(1, 1, 1)
        models = sorted(curves)
        for i, m in enumerate(models):
            xs = [k for k, f in enumerate(fractions) if f in curves[m]]
            ax.plot(xs, [100 * curves[m][fractions[k]] for k in xs], marker="o", markersize=3, linewidth=1.0,
                    color=colour(i), label=f"{m} (training fraction)")
        positions = [n_f + 0.6 + 1.4 * k for k in range(len(violins))]
        for pos, (name, values) in zip(positions, violins.items()):
            values = 100 * np.asarray(values, dtype=float)
            if values.size > 1 and np.ptp(values) > 0:
                body = ax.violinplot([values], positions=[pos], widths=0.7, showmedians=True)
                for b in body["bodies"]:
                    b.set_facecolor("#9ecae1" if name == "without-ai" else "#a1d99b")
                    b.set_alpha(0.8)
            ax.scatter(np.full(values.size, pos), values, s=5, color="#333333", zorder=3)
        for j, (m, acc) in enumerate(sorted(points.items())):
            ax.axhline(100 * acc, linestyle="--", linewidth=0.8, color="#d62728",
                       label=f"{m} on the study images ({100 * acc:.1f}%)")
        ticks = list(range(n_f)) + positions
        labels = [f"{100 * f:g}%" for f in fractions] + [f"readers\n{name.replace('-ai', ' AI').replace('-', ' ')}" for name in violins]
        ax.set_xticks(ticks, labels=labels)
        ax.set_xlim(-0.6, (positions[-1] if positions else n_f - 1) + 0.8)
        ax.set_xlabel("training images used by the model · readers")
        ax.set_ylabel(axis_label("Accuracy"))
        ax.set_title(title)
        ax.grid(axis="y", linewidth=0.3, color="#cccccc")
        ax.set_axisbelow(True)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
        fig.tight_layout()
        return _render(fig, title)

    return _with_rc(draw)


@memoized_svg
def reader_paired_svg(title: str, readers: Sequence[str], groups: Sequence[str], without: Sequence[float],
                      with_ai: Sequence[float]) -> bytes:
    """Fig. 6d: one line per reader from their accuracy without AI to their accuracy with AI, coloured by
    experience group (in the order given)."""

    def draw():
        fig = _figure(4.2, 3.2)
        ax = fig.add_subplot(1, 1, 1)
        order = list(dict.fromkeys(groups))
        seen: set[str] = set()
        for r, g, a, b in zip(readers, groups, without, with_ai):
            c = colour(order.index(g))
            ax.plot([0, 1], [100 * a, 100 * b], marker="o", markersize=3, linewidth=0.8, color=c, alpha=0.85,
                    label=None if g in seen else g)
            seen.add(g)
        ax.set_xticks([0, 1], labels=["without AI", "with AI"])
        ax.set_xlim(-0.3, 1.3)
        ax.set_xlabel("round")
        ax.set_ylabel(axis_label("Accuracy"))
        ax.set_title(title)
        ax.grid(axis="y", linewidth=0.3, color="#cccccc")
        if seen:
            ax.legend(title="experience", loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
        fig.tight_layout()
        return _render(fig, title)

    return _with_rc(draw)


@memoized_svg
def embedding_svg(title: str, coords, panels: Sequence[tuple[str, Sequence[str]]]) -> bytes:
    """2-D maps of the same points (``coords`` [N, 2]), one panel per colouring: ``(panel title, label per
    point)``; each panel's legend lists its labels in sorted order."""
    import numpy as np

    def draw():
        fig = _figure(3.6 * max(len(panels), 1) + 0.6, 3.6)
        xy = np.asarray(coords, dtype=float)
        for k, (panel_title, labels) in enumerate(panels):
            ax = fig.add_subplot(1, len(panels), k + 1)
            names = sorted(set(labels))
            labels = np.asarray(labels, dtype=object)
            for i, name in enumerate(names):
                sel = labels == name
                ax.scatter(xy[sel, 0], xy[sel, 1], s=7, color=colour(i), label=f"{name} ({int(sel.sum())})",
                           linewidths=0)
            ax.set_title(panel_title)
            ax.set_xlabel("t-SNE 1")
            ax.set_ylabel("t-SNE 2")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.08), frameon=False, ncols=2, fontsize=6)
        fig.suptitle(title, x=0.02, ha="left")
        fig.tight_layout()
        return _render(fig, title)

    return _with_rc(draw)


def figure_legend(fig, order=None) -> None:
    """One legend for a figure of panels: each label once (panels repeat the same models), in ``order``."""
    handles, labels = [], []
    for ax in fig.axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    if not handles:
        return
    idx = sorted(range(len(labels)), key=lambda i: order.index(labels[i])) if order else range(len(labels))
    fig.legend([handles[i] for i in idx], [labels[i] for i in idx], loc="upper right", frameon=False,
               ncols=min(len(labels), 5))
