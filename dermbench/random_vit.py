"""Deprecated location: use :mod:`dermbench.models.random_vit`. Kept for one release so that plugins written
against the old layout keep working; importing it warns."""
import warnings as _warnings

from dermbench.models.random_vit import *  # noqa: F401,F403
from dermbench.models import random_vit as _new

_warnings.warn("dermbench.random_vit moved to dermbench.models.random_vit; the old name goes away in the next release",
               DeprecationWarning, stacklevel=2)
globals().update({k: v for k, v in vars(_new).items() if not k.startswith("__")})
