"""`dermbench paper`: every table and figure of the paper from a results store, in one folder.

Layout of ``<out>``::

    index.html                    one page showing and linking everything below (relative links; offline)
    leaderboard/                  the leaderboard in every format, its heatmaps (Fig. 5d) and bars, the
                                  interactive leaderboard.html (or, with ``--leaderboard DIR``, links to
                                  the one already built in DIR from these results)
    reader_study/                 reader_study.md/.json/CSVs, Fig. 6c and 6d (and, on DermSynth without
                                  --readings, the simulated reader_study.csv that was analysed)
    embeddings/                   t-SNE maps per model (Extended Data Fig. 5)
    qualitative/                  segmentation grids (Supplementary Fig. 1), captions.md/.csv (Tables 3–4)
    tables/                       backbones, datasets, skin types, sexes (Supplementary Table 1, Extended
                                  Data Tables 4–5) as markdown and CSV

A part that cannot be made from the store (no reader study, no saved masks, a backbone whose weights
are not here) is left out with a note on the index page and in the returned ``notes``, never faked.
"""
from __future__ import annotations

import html
import io
import os
from pathlib import Path
from typing import Any, Optional, Sequence

import pandas as pd

from dermbench.io import atomic_write_bytes


def _csv(df: pd.DataFrame) -> bytes:
    buf = io.StringIO()
    df.to_csv(buf, index=False, float_format="%.6f", lineterminator="\n")
    return buf.getvalue().encode("utf-8")


def _df_html(df: pd.DataFrame) -> str:
    if df.empty:
        return "<p>(no data)</p>"
    return df.to_html(index=False, escape=True, border=0, na_rep="—", float_format=lambda v: f"{v:.3g}")


def _img(path: str, alt: str) -> str:
    return (f'<figure><a href="{html.escape(path)}"><img src="{html.escape(path)}" alt="{html.escape(alt)}" '
            f'loading="lazy"></a><figcaption>{html.escape(alt)}</figcaption></figure>')


def reader_study_part(results_dir: Path, out: Path, readings: Optional[Path], model: Optional[str],
                      notes: list[str]) -> Optional[Any]:
    from dermbench.report import reader_study as RR

    folder = out / "reader_study"
    if readings is None:
        try:
            readings = RR.simulate_for_results(results_dir, folder / "reader_study.csv", model=model)
            notes.append(f"reader study: DermSynth's simulated study ({readings.name}, {len(RR.STUDY_TASKS)} tasks: "
                         f"{', '.join(RR.STUDY_TASKS)}); give the real one with --readings")
        except RR.ReadingsError as exc:
            notes.append(f"reader study left out: {exc}")
            return None
    study = RR.analyse(readings, results_dir, model=model)
    RR.write(study, folder)
    return study


def build_paper(results_dir: Path, out_dir: Path, readings: Optional[Path] = None, model: Optional[str] = None,
                embeddings: bool = True, n_images: int = 4, device: str = "cpu",
                leaderboard: Optional[Path] = None) -> dict[str, Any]:
    """Write the paper folder; returns {"paths", "notes", "reader_study"}. ``device``: where the t-SNE maps'
    backbones compute features the cache lacks. ``leaderboard``: a folder written by ``dermbench
    leaderboard --format all`` from these results as they are now, by this code: the paper links to it
    instead of building its own copy in ``leaderboard/`` (when it does not qualify, the copy is built
    and a note says why)."""
    from dermbench.report import embeddings as E
    from dermbench.report import qualitative as Q
    from dermbench.report import summary_tables as S
    from dermbench.report.html import page
    from dermbench.report.leaderboard import build_leaderboard, load_records, reusable_leaderboard

    results_dir, out = Path(results_dir), Path(out_dir)
    records = load_records(results_dir)
    if not records:
        raise FileNotFoundError(f"no results under {results_dir}; run `dermbench run ...` first")
    notes: list[str] = []
    paths: list[Path] = []

    def put(rel: str, data: bytes) -> str:
        atomic_write_bytes(out / rel, data)
        paths.append(out / rel)
        return rel

    # 1. the leaderboard, all formats (heatmaps, bars, the interactive page): linked when one built from
    # these very results is given, else built here
    lb_files, why_not = reusable_leaderboard(leaderboard, results_dir) if leaderboard is not None else (None, "")
    if lb_files is not None:
        lb_dir = os.path.relpath(Path(leaderboard).resolve(), out.resolve()).replace(os.sep, "/")
        notes.append(f"the leaderboard is the one in {leaderboard} (built from these results by this code), linked as {lb_dir}/")
    else:
        if leaderboard is not None:
            notes.append(f"the leaderboard in {leaderboard} is not used ({why_not}): built again in {out / 'leaderboard'}")
        lb_files = build_leaderboard(results_dir, out / "leaderboard", formats=("md", "csv", "latex", "html"))["paths"]
        paths += lb_files
        lb_dir = "leaderboard"
    lb_figs = sorted(p.name for p in lb_files if p.suffix == ".svg")
    body = ['<p>Every table and figure of the paper from the results in <code>'
            f'{html.escape(str(results_dir))}</code> ({len(records)} results, '
            f'{len({r["model"] for r in records})} models, {len({r["task"] for r in records})} tasks).</p>',
            '<h2 id="leaderboard">Leaderboard</h2>',
            f'<p><a href="{lb_dir}/leaderboard.html">Interactive leaderboard</a> · '
            f'<a href="{lb_dir}/leaderboard.md">markdown</a> · <a href="{lb_dir}/leaderboard.csv">CSV</a> · '
            f'<a href="{lb_dir}/leaderboard.tex">LaTeX</a></p>']
    body += [_img(f"{lb_dir}/{n}", n) for n in lb_figs if n.startswith("fig_heatmap_")]
    body += [_img(f"{lb_dir}/{n}", n) for n in lb_figs if not n.startswith("fig_heatmap_")]

    # 2. the reader study
    study = reader_study_part(results_dir, out, Path(readings) if readings else None, model, notes)
    body.append('<h2 id="reader-study">Reader study</h2>')
    if study is not None:
        from dermbench.report.reader_study import files as study_files

        paths += [out / "reader_study" / n for n, _ in study_files(study)]
        a, m = study.ai_summary, study.mixed_effects
        facts = [f"{study.scored['reader'].nunique()} readers, "
                 f"{study.scored[['dataset', 'image']].drop_duplicates().shape[0]} images; model {study.model}: "
                 f"{100 * study.model_accuracy:.1f}% correct; readers' mean (without AI) "
                 f"{100 * study.model_vs_mean['reader_mean_accuracy']:.1f}%."]
        if a is not None:
            facts.append(f"With AI: {100 * a['mean_with']:.1f}% (change {100 * a['mean_change']:+.1f} points, "
                         f"95% CI [{100 * a['ci_low']:.1f}, {100 * a['ci_high']:.1f}], paired t-test p {a['p_ttest']:.2g}).")
        if m is not None:
            facts.append(f"Mixed-effects logistic (reader and case effects): odds ratio {m['odds_ratio']:.2f} "
                         f"[{m['or_ci_low']:.2f}, {m['or_ci_high']:.2f}], p {m['p']:.2g}.")
        body.append("<p>" + html.escape(" ".join(facts)) + ' <a href="reader_study/reader_study.md">All tables</a> · '
                    '<a href="reader_study/reader_study.json">JSON</a></p>')
        body.append("<h3>By experience</h3>" + _df_html(study.by_experience))
        body += [_img(f"reader_study/{n}", n) for n, _ in study_files(study) if n.endswith(".svg")]
    else:
        body.append("<p>No reader study (see the notes).</p>")

    # 3. embedding maps
    body.append('<h2 id="embeddings">Embedding maps (t-SNE of global features)</h2>')
    if embeddings:
        figs, emb_notes = E.build(results_dir, records, device=device)
        notes += emb_notes
        body += [_img(put(f"embeddings/{n}", svg), n) for n, svg in figs]
        if not figs:
            body.append("<p>No embedding map (see the notes).</p>")
    else:
        notes.append("embedding maps not asked for (--no-embeddings)")

    # 4. qualitative
    body.append('<h2 id="qualitative">Qualitative comparisons</h2>')
    grids, q_notes = Q.segmentation_grids(records, n_images)
    notes += q_notes
    body += [_img(put(f"qualitative/{n}", png), n) for n, png in grids]
    captions = Q.caption_table(records, n_images)
    if not captions.empty:
        put("qualitative/captions.csv", _csv(captions))
        put("qualitative/captions.md", Q.captions_markdown(captions).encode("utf-8"))
        wide = captions.pivot_table(index=["task", "sample_id"], columns="source", values="caption", aggfunc="first")
        wide = wide[["reference", *[c for c in wide.columns if c != "reference"]]].reset_index()
        wide.columns.name = None
        body.append("<h3>Captions</h3>" + _df_html(wide))

    # 5. summary tables
    body.append('<h2 id="tables">Models and datasets</h2>')
    tables = S.build(results_dir, records)
    for key in ("backbones", "datasets", "skin_types", "sexes"):
        df = tables[key]
        put(f"tables/{key}.csv", _csv(df))
        put(f"tables/{key}.md", S.to_markdown(df, S.TITLES[key]).encode("utf-8"))
        body.append(f"<h3>{html.escape(S.TITLES[key])}</h3>" + _df_html(df))
    put("tables/demographics.csv", _csv(tables["demographics"]))

    if notes:
        body.append('<h2 id="notes">Notes</h2><ul>' + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>")
    nav = ('<p><a href="#leaderboard">leaderboard</a> · <a href="#reader-study">reader study</a> · '
           '<a href="#embeddings">embeddings</a> · <a href="#qualitative">qualitative</a> · '
           '<a href="#tables">models and datasets</a></p>')
    put("index.html", page("dermbench: the paper's tables and figures", nav + "\n".join(body)).encode("utf-8"))
    return {"paths": paths, "notes": notes, "reader_study": study, "out": out}


__all__ = ["build_paper"]
