"""Check a weights file against a backbone before a long run: format, keys, shapes, architecture settings.

:func:`check_weights` reads the file the way a run does (format by content, the backbone's own
converter) and compares the result with the architecture, built on ``torch.device('meta')`` (names
and shapes only, nothing allocated or initialised), so a 2.5 GB download is checked in the time it
takes to read it. :func:`where_weights` lists, per model, the file names and sources of the release
and what is found on this machine.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from dermbench.models.weights import (WeightsError, detect_format, env_variable, expected_files, find_local_weights,
                                      hub_files, load_state_dict_file, recording_load_targets, weights_folder)


@dataclass
class WeightsReport:
    model: str
    path: str
    size_bytes: int
    sha256: str
    format: str
    container: str  # where the tensors sit in the file ('top level' or the nesting keys)
    converter: str
    file_tensors: int
    converted_tensors: int
    model_tensors: int
    missing: list[str] = field(default_factory=list)  # model keys the file does not provide
    unexpected: list[str] = field(default_factory=list)  # converted keys the model does not have
    shape_mismatches: list[tuple[str, tuple, tuple]] = field(default_factory=list)  # (key, file, model)
    settings: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (in the file, in the model)
    dtypes: dict[str, int] = field(default_factory=dict)
    error: str = ""  # the converter refused the file

    @property
    def ok(self) -> bool:
        return not (self.error or self.missing or self.unexpected or self.shape_mismatches)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}

    def to_text(self) -> str:
        def listed(keys: list, limit: int = 12) -> str:
            if not keys:
                return "none"
            shown = ", ".join(map(str, keys[:limit]))
            return f"{len(keys)}: {shown}" + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")

        lines = [
            f"model       {self.model}",
            f"file        {self.path} ({self.size_bytes / 1e6:.1f} MB)",
            f"sha256      {self.sha256}",
            f"format      {self.format} (read from the content; suffix {Path(self.path).suffix or '(none)'!r})",
            f"container   {self.container}; dtypes {', '.join(f'{k} x{v}' for k, v in sorted(self.dtypes.items()))}",
            f"converter   {self.converter or '(none: keys used as they are)'}",
        ]
        if self.error:
            lines.append(f"conversion  FAILED: {self.error}")
        else:
            mapped = self.model_tensors - len(self.missing)
            lines += [
                f"tensors     {self.file_tensors} in the file -> {self.converted_tensors} after conversion; "
                f"{mapped}/{self.model_tensors} model tensors provided",
                f"missing     {listed(self.missing)}",
                f"unexpected  {listed(self.unexpected)}",
                "shapes      " + ("all match" if not self.shape_mismatches else listed(
                    [f"{k} file {tuple(a)} vs model {tuple(b)}" for k, a, b in self.shape_mismatches])),
            ]
        for i, (name, (in_file, in_model)) in enumerate(self.settings.items()):
            lines.append(f"{'settings' if i == 0 else '':<11} {name}: file {in_file}; model {in_model}")
        verdict = (f"OK: loads strictly into {self.model}" if self.ok else
                   f"DOES NOT LOAD into {self.model}: is this the {self.model} release file?")
        lines.append(f"result      {verdict}")
        return "\n".join(lines)


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Every tensor of a (possibly nested) checkpoint, by dotted path."""
    import torch

    out: dict[str, Any] = {}
    if isinstance(obj, torch.Tensor):
        out[prefix] = obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def _container(obj: Any) -> str:
    import torch

    if not isinstance(obj, dict):
        return type(obj).__name__
    if all(isinstance(v, torch.Tensor) for v in obj.values()):
        return f"top level: {len(obj)} tensors"
    nested = {k: len(_flatten(v)) for k, v in obj.items() if isinstance(v, dict)}
    others = [k for k, v in obj.items() if not isinstance(v, (dict, torch.Tensor))]
    parts = [f"{k!r} -> {n} tensors" for k, n in nested.items()]
    loose = sum(isinstance(v, torch.Tensor) for v in obj.values())
    if loose:
        parts.append(f"{loose} top-level tensors")
    if others:
        parts.append(f"other entries {others[:6]}")
    return "; ".join(parts)


_POS_KEYS = ("pos_embed", "position_embeddings", "absolute_pos_embed")
_LAYER_SCALE = re.compile(r"(ls1\.gamma|gamma_1|layer_scale1\.lambda1)$")
_BLOCK_INDEX = re.compile(r"(?:^|\.)(?:blocks|layer)\.(?:\d+\.)?(\d+)\.(?:norm1|attn|attention)")


def architecture_settings(shapes: dict[str, tuple]) -> dict[str, str]:
    """What a state dict says about its ViT: position grid, registers, LayerScale, depth, width."""
    out: dict[str, str] = {}
    pos = next(((k, s) for k, s in shapes.items() if k.split(".")[-1] in _POS_KEYS), None)
    registers = next((s for k, s in shapes.items() if k.split(".")[-1] in ("register_tokens", "reg_token")), None)
    n_reg = int(registers[1]) if registers else 0
    cls = next((s for k, s in shapes.items() if k.split(".")[-1] == "cls_token"), None)
    if pos is None:
        out["position embedding"] = "none"
    else:
        s = pos[1]
        if len(s) == 4:  # SAM layout [1, H, W, C]
            out["position embedding"] = f"{s[1]}x{s[2]} grid"
        else:
            n = int(s[-2])
            for prefix in (0, 1, 1 + n_reg):
                g = round((n - prefix) ** 0.5)
                if g * g == n - prefix:
                    out["position embedding"] = f"{g}x{g} grid" + (f" + {prefix} prefix" if prefix else "")
                    break
            else:
                out["position embedding"] = f"{n} positions"
    out["registers"] = str(n_reg)
    out["layer scale"] = "yes" if any(_LAYER_SCALE.search(k) for k in shapes) else "no"
    blocks = {int(m.group(1)) for k in shapes if (m := _BLOCK_INDEX.search(k))}
    out["transformer blocks"] = str(max(blocks) + 1) if blocks else "n/a"
    if cls is not None:
        out["width"] = str(int(cls[-1]))
    return out


def architecture_module(key: str, **options: Any):
    """(the module a release file loads into, its converter, the backbone's metadata), built on the
    meta device."""
    import torch

    from dermbench.models import registry

    with recording_load_targets(dry=True) as log, torch.device("meta"):
        registry.build(key, weights="random", **options)
    if not log:
        raise WeightsError(f"model {key!r} takes no weights file (it has no released weights)")
    target = log[0]
    return target.module, target.convert, target.meta


def check_weights(key: str, path: Path, **options: Any) -> WeightsReport:
    """Read ``path`` as a run would and compare it with ``key``'s architecture (see the module docstring)."""
    from dermbench.io import sha256_file

    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(f"{path}: no such file")
    fmt = detect_format(path)
    module, convert, _meta = architecture_module(key, **options)
    raw = load_state_dict_file(path, mmap=True)
    file_tensors = _flatten(raw)
    model_shapes = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    report = WeightsReport(
        model=key, path=str(path), size_bytes=path.stat().st_size, sha256=sha256_file(path), format=fmt,
        container=_container(raw), converter=getattr(convert, "__name__", "") if convert else "",
        file_tensors=len(file_tensors), converted_tensors=0, model_tensors=len(model_shapes),
        dtypes=dict(Counter(str(t.dtype).replace("torch.", "") for t in file_tensors.values())),
    )
    try:
        converted = convert(raw) if convert is not None else raw
    except Exception as exc:  # the converter's own message says what it expected
        report.error = f"{type(exc).__name__}: {exc.args[0] if exc.args else exc}"
        converted = None
    file_settings = architecture_settings({k: tuple(v.shape) for k, v in file_tensors.items()})
    model_settings = architecture_settings(model_shapes)
    report.settings = {name: (file_settings.get(name, "n/a"), model_settings.get(name, "n/a"))
                       for name in model_settings}
    if converted is not None:
        converted_shapes = {k: tuple(v.shape) for k, v in converted.items() if hasattr(v, "shape")}
        report.converted_tensors = len(converted_shapes)
        report.missing = sorted(set(model_shapes) - set(converted_shapes))
        report.unexpected = sorted(set(converted_shapes) - set(model_shapes))
        report.shape_mismatches = [(k, converted_shapes[k], model_shapes[k]) for k in sorted(model_shapes)
                                   if k in converted_shapes and converted_shapes[k] != model_shapes[k]]
        after = architecture_settings(converted_shapes)
        if after.get("position embedding") != file_settings.get("position embedding"):
            grid_file, grid_model = report.settings["position embedding"]
            report.settings["position embedding"] = (f"{grid_file} (converted to {after['position embedding']})", grid_model)
    return report


def where_weights(keys: Optional[list[str]] = None) -> list[dict[str, Any]]:
    """Per model: the release's file names, its sources, where dermbench looks, and what it finds."""
    from dermbench.models import registry

    rows = []
    for key in keys or registry.available():
        meta = registry.get(key).meta
        if not meta.weights_filename and not meta.hub_id:
            continue  # random-vit, or a plugin without a release file
        try:
            found, how = find_local_weights(meta)
            problem = ""
        except WeightsError as exc:
            found, how, problem = None, "", str(exc)
        rows.append({
            "model": key,
            "files": expected_files(meta),
            "source": meta.weights_source,
            "hub": [f"{repo}:{name}" for repo, name in hub_files(meta)],
            "folder": str(weights_folder(meta)),
            "env": env_variable(meta),
            "found": str(found) if found else "",
            "found_via": how,
            "problem": problem,
        })
    return rows
