"""DermSynth: the embedded synthetic benchmark, in the official layouts of all 20 tasks."""
from dermbench.data.synth.layouts import VERSION, ensure_dermsynth, expected_counts, generate, is_dermsynth

__all__ = ["VERSION", "ensure_dermsynth", "expected_counts", "generate", "is_dermsynth"]
