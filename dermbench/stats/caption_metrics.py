"""Caption metrics with bootstrap replicates: pycocoevalcap and rouge-score, as the paper reports them.

BLEU-1/2/4, METEOR, CIDEr and ROUGE-L come from pycocoevalcap after its PTB tokenisation
(Stanford CoreNLP, lower-cased, punctuation removed); ROUGE-1 and ROUGE-2 from Google's
rouge-score (F-measure, Porter stemming) on the raw text. SPICE is left out (it needs a
multi-GB Stanford model download). Each test image has one reference caption.

Point estimates (``value``) are exactly what the libraries return on the full test set.
Replicates are the same statistic recomputed on each bootstrap resample of test images,
without re-running the scorers 1,000 times:

- BLEU-n: corpus BLEU (pycocoevalcap's "closest" reference length, its smoothing constants)
  from the per-image n-gram match and length counts, summed over the resampled images;
- METEOR: corpus METEOR scored by the METEOR jar itself from the per-image sufficient
  statistics summed over the resampled images, as the jar sums them (one short ``EVAL`` line
  per replicate to a single, reused METEOR process), i.e. ``Meteor().compute_score`` on the
  resample without re-aligning any caption;
- CIDEr: mean of the per-image CIDEr scores of the resampled images, with the n-gram document
  frequencies of the full test set (pycocoevalcap's corpus CIDEr *is* the per-image mean;
  only the IDF is held fixed, so that a duplicated image does not change what is rare);
- ROUGE-L (pycocoevalcap), ROUGE-1, ROUGE-2 (rouge-score): mean of per-image F-scores,
  which is also how their corpus value is defined.

The pycocoevalcap metrics need Java (the tokeniser and METEOR are jars). Without ``java`` on
the PATH they are skipped with a warning, :func:`skipped_metrics` names them, and the
ROUGE-1/2 results are still returned.
"""
from __future__ import annotations

import shutil
import threading
import warnings
from typing import Optional, Sequence

import numpy as np
import pandas as pd

PYCOCO_METRICS = ("bleu1", "bleu2", "bleu4", "meteor", "cider", "rougeL")
ROUGE_SCORE_METRICS = ("rouge1", "rouge2")
METRICS = PYCOCO_METRICS + ROUGE_SCORE_METRICS
ROUGE_USE_STEMMER = True
# pycocoevalcap's BLEU constants: 'tiny' keeps a zero match count at zero, 'small' avoids 0/0.
_BLEU_TINY = 1e-15
_BLEU_SMALL = 1e-9


def java_available() -> bool:
    return shutil.which("java") is not None


def skipped_metrics() -> list[str]:
    """Metrics this environment cannot compute (the pycocoevalcap ones when Java is missing)."""
    return [] if java_available() else list(PYCOCO_METRICS)


def evaluate_captions(predictions: pd.DataFrame, boot_idx: np.ndarray) -> dict[str, dict]:
    """``{metric: {"value": float, "replicates": array (B,)}}`` for the captions in ``predictions``.

    ``predictions`` has one row per test image with columns ``reference`` and ``generated``;
    ``boot_idx`` is a [B, n] matrix of row indices (the shared bootstrap resamples).
    """
    references, generated = _caption_columns(predictions)
    idx = np.asarray(boot_idx)
    if idx.ndim != 2 or idx.shape[1] != len(references):
        raise ValueError(f"bootstrap indices have shape {idx.shape}; expected (B, {len(references)}) "
                         f"for {len(references)} captions")
    idx = idx.astype(np.int64)
    out: dict[str, dict] = {}
    if java_available():
        out.update(pycoco_scores(references, generated, idx))
    else:
        warnings.warn(f"java is not on the PATH: caption metrics {', '.join(PYCOCO_METRICS)} need it (pycocoevalcap's "
                      "PTB tokeniser and METEOR are Java programs) and are skipped; install a Java runtime "
                      "(e.g. apt-get install default-jre-headless) to compute them", RuntimeWarning, stacklevel=2)
    out.update(rouge_scores(references, generated, idx))
    return out


def _caption_columns(predictions: pd.DataFrame) -> tuple[list[str], list[str]]:
    missing = [c for c in ("reference", "generated") if c not in predictions.columns]
    if missing:
        raise ValueError(f"caption predictions need columns 'reference' and 'generated'; missing {missing} "
                         f"(columns: {list(predictions.columns)})")
    if len(predictions) == 0:
        raise ValueError("caption predictions are empty: there is nothing to score")
    refs = predictions["reference"]
    if refs.isna().any() or (refs.astype(str).str.strip() == "").any():
        bad = predictions.loc[refs.isna() | (refs.astype(str).str.strip() == ""), "sample_id" if "sample_id" in predictions else "reference"]
        raise ValueError(f"{len(bad)} test caption(s) have no reference text (e.g. {list(bad)[:3]}); every test image needs one")
    # A model may legitimately generate nothing; that scores zero rather than being dropped.
    generated = predictions["generated"].fillna("").astype(str).tolist()
    return refs.astype(str).tolist(), generated


# --- pycocoevalcap -----------------------------------------------------------------------------
_METEOR = None
_METEOR_LOCK = threading.Lock()


def meteor_scorer():
    """The process-wide METEOR scorer: the jar takes ~12 s to load its paraphrase table, so it starts once."""
    global _METEOR
    with _METEOR_LOCK:
        if _METEOR is None:
            from pycocoevalcap.meteor.meteor import Meteor

            _METEOR = Meteor()
        return _METEOR


def ptb_tokenize(references: Sequence[str], generated: Sequence[str]) -> tuple[dict, dict]:
    """pycocoevalcap's PTB tokenisation of both sides in one Java call: (gts, res) keyed by row number."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    n = len(references)
    # Newlines would split one caption into two tokeniser lines and shift every later row.
    flat = lambda s: " ".join(s.split())  # noqa: E731
    raw = {f"r{i}": [{"caption": flat(references[i])}] for i in range(n)}
    raw.update({f"g{i}": [{"caption": flat(generated[i])}] for i in range(n)})
    tokenized = PTBTokenizer().tokenize(raw)
    # The tokeniser pairs output lines with keys positionally; a short answer would misalign silently.
    lost = [k for k in raw if k not in tokenized]
    if lost:
        raise RuntimeError(f"the PTB tokeniser returned no line for {len(lost)} caption(s) (e.g. {lost[:3]}); "
                           "check that java runs and that the captions are plain text")
    gts = {i: tokenized[f"r{i}"] for i in range(n)}
    res = {i: tokenized[f"g{i}"] for i in range(n)}
    return gts, res


def pycoco_scores(references: Sequence[str], generated: Sequence[str], idx: np.ndarray) -> dict[str, dict]:
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    gts, res = ptb_tokenize(references, generated)
    out = bleu_scores(gts, res, idx)
    out["meteor"] = meteor_scores(gts, res, idx)
    cider, cider_per_image = Cider().compute_score(gts, res)
    out["cider"] = {"value": float(cider), "replicates": np.asarray(cider_per_image, np.float64)[idx].mean(axis=1)}
    rouge_l, rouge_l_per_image = Rouge().compute_score(gts, res)
    out["rougeL"] = {"value": float(rouge_l), "replicates": np.asarray(rouge_l_per_image, np.float64)[idx].mean(axis=1)}
    return {k: out[k] for k in PYCOCO_METRICS}


def bleu_statistics(gts: dict, res: dict) -> tuple[list[float], np.ndarray]:
    """Corpus BLEU-1..4 as ``pycocoevalcap.bleu.Bleu(4).compute_score`` returns it, and the per-image
    sufficient statistics [n, 10]: hypothesis length, closest reference length, guesses 1..4, matches 1..4."""
    from pycocoevalcap.bleu.bleu_scorer import BleuScorer

    scorer = BleuScorer(n=4)
    for i in gts:  # the same accumulation as Bleu.compute_score
        scorer += (res[i][0], gts[i])
    corpus, _ = scorer.compute_score(option="closest", verbose=0)
    stats = np.zeros((len(scorer.ctest), 10), dtype=np.float64)
    for row, comps in enumerate(scorer.ctest):
        stats[row, 0] = comps["testlen"]
        stats[row, 1] = min((abs(l - comps["testlen"]), l) for l in comps["reflen"])[1]
        stats[row, 2:6] = comps["guess"]
        stats[row, 6:10] = comps["correct"]
    return [float(v) for v in corpus], stats


def corpus_bleu_from_stats(summed: np.ndarray) -> np.ndarray:
    """BLEU-1..4 [..., 4] from summed statistics [..., 10], with pycocoevalcap's formula and constants."""
    testlen, reflen = summed[..., 0], summed[..., 1]
    guess, correct = summed[..., 2:6], summed[..., 6:10]
    log_prec = np.log((correct + _BLEU_TINY) / (guess + _BLEU_SMALL))
    bleus = np.exp(np.cumsum(log_prec, axis=-1) / np.arange(1, 5))
    ratio = (testlen + _BLEU_TINY) / (reflen + _BLEU_SMALL)
    penalty = np.where(ratio < 1, np.exp(1 - 1 / np.maximum(ratio, _BLEU_TINY)), 1.0)
    return bleus * penalty[..., None]


def bleu_scores(gts: dict, res: dict, idx: np.ndarray) -> dict[str, dict]:
    corpus, stats = bleu_statistics(gts, res)
    reps = corpus_bleu_from_stats(stats[idx].sum(axis=1))  # [B, 4]
    return {f"bleu{n}": {"value": corpus[n - 1], "replicates": reps[:, n - 1]} for n in (1, 2, 4)}


def meteor_scores(gts: dict, res: dict, idx: np.ndarray) -> dict:
    """Corpus METEOR on the full set and on every resample, from per-image statistics computed once.

    pycocoevalcap's ``Meteor.compute_score`` sends one ``SCORE`` line per image (the jar aligns
    hypothesis and reference and answers 23 sufficient statistics), then one ``EVAL`` line with
    all of them; the jar sums the statistics and scores the sum. Here the per-image statistics
    are summed in numpy for each resample and the jar scores each sum (one short ``EVAL`` per
    replicate instead of n alignments), which gives ``Meteor.compute_score`` on the resample.
    """
    meteor = meteor_scorer()
    keys = list(gts)
    # The Meteor object's process and lock are plain attributes; its _stat() is the SCORE call
    # that compute_score itself makes.
    with meteor.lock:
        lines = [meteor._stat(res[k][0], gts[k]) for k in keys]
        value = _meteor_eval(meteor, lines)
        stats = np.array([[float(v) for v in line.split()] for line in lines], dtype=np.float64)
        if stats.shape[1] != METEOR_STATS_LENGTH:
            raise RuntimeError(f"METEOR returned {stats.shape[1]} statistics per image, expected {METEOR_STATS_LENGTH}; "
                               "is this the meteor-1.5.jar shipped with pycocoevalcap?")
        summed = meteor_sum_statistics(stats, idx)
        reps = np.array([_meteor_eval(meteor, [" ".join(repr(float(v)) for v in row)]) for row in summed])
    return {"value": value, "replicates": reps}


METEOR_STATS_LENGTH = 23
# Positions in a METEOR statistics line: lengths 0-1, function words 2-3, then per matcher stage
# (exact, stem, synonym, paraphrase) test/reference content and test/reference function matches, chunks at 20.
_M_TEST_MATCHES = [4, 6, 8, 10, 12, 14, 16, 18]
_M_REF_MATCHES = [5, 7, 9, 11, 13, 15, 17, 19]
_M_CHUNKS = 20


def meteor_sum_statistics(stats: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Sum per-image METEOR statistics [n, 23] over each row of ``idx`` -> [B, 23], as the jar aggregates.

    MeteorStats.addStats adds every field except the chunk count of a segment that matches its
    reference entirely in one chunk (its fragmentation is zero, so it must not add a chunk).
    """
    stats = stats.copy()
    exact = ((stats[:, _M_TEST_MATCHES].sum(axis=1) == stats[:, 0])
             & (stats[:, _M_REF_MATCHES].sum(axis=1) == stats[:, 1]) & (stats[:, _M_CHUNKS] == 1.0))
    stats[exact, _M_CHUNKS] = 0.0
    return stats[idx].sum(axis=1)


def _meteor_eval(meteor, stats_lines: list[str]) -> float:
    """The jar's corpus score for these statistics lines (it first answers one score per line)."""
    proc = meteor.meteor_p
    proc.stdin.write(("EVAL ||| " + " ||| ".join(stats_lines) + "\n").encode())
    proc.stdin.flush()
    for _ in stats_lines:
        proc.stdout.readline()
    line = proc.stdout.readline().strip()
    try:
        return float(line)
    except ValueError:
        err = proc.stderr.read().decode(errors="replace")[-500:] if proc.poll() is not None else ""
        raise RuntimeError(f"the METEOR process answered {line!r} instead of a score; {err or 'is java working?'}") from None


# --- rouge-score ------------------------------------------------------------------------------------
def rouge_scores(references: Sequence[str], generated: Sequence[str], idx: np.ndarray,
                 use_stemmer: Optional[bool] = None) -> dict[str, dict]:
    """ROUGE-1/2 F-measure per image (rouge-score), mean over images for the value and each replicate."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(list(ROUGE_SCORE_METRICS),
                                      use_stemmer=ROUGE_USE_STEMMER if use_stemmer is None else use_stemmer)
    per_image = np.zeros((len(references), len(ROUGE_SCORE_METRICS)), dtype=np.float64)
    for i, (ref, gen) in enumerate(zip(references, generated)):
        scores = scorer.score(ref, gen)  # (target, prediction)
        per_image[i] = [scores[m].fmeasure for m in ROUGE_SCORE_METRICS]
    return {m: {"value": float(per_image[:, j].mean()), "replicates": per_image[idx, j].mean(axis=1)}
            for j, m in enumerate(ROUGE_SCORE_METRICS)}
