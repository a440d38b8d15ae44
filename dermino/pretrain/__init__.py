"""DermINO hybrid pretraining: self-supervised DINO/iBOT/KoLeo plus supervised, text-initialised prototypes.

Modules: ``config`` (presets), ``augment`` (multi-crop), ``masking`` (iBOT block masks), ``heads``,
``losses``, ``prototypes`` (label merging, text embeddings), ``data``, ``schedules``, ``model``,
``train`` (the loop, DDP/FSDP), ``checkpoint``, ``export``, ``cli``. See docs/pretraining.md.
Importing the package is cheap (no torch).
"""
