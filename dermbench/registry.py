"""Deprecated location: use :mod:`dermbench.models.registry`. Kept for one release so that plugins written
against the old layout keep working; importing it warns."""
import warnings as _warnings

from dermbench.models.registry import *  # noqa: F401,F403
from dermbench.models import registry as _new

_warnings.warn("dermbench.registry moved to dermbench.models.registry; the old name goes away in the next release",
               DeprecationWarning, stacklevel=2)
globals().update({k: v for k, v in vars(_new).items() if not k.startswith("__")})
