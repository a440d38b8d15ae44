"""Deprecated location: use :mod:`dermbench.models.backbone`. Kept for one release so that plugins written
against the old layout keep working; importing it warns."""
import warnings as _warnings

from dermbench.models.backbone import *  # noqa: F401,F403
from dermbench.models import backbone as _new

_warnings.warn("dermbench.backbone moved to dermbench.models.backbone; the old name goes away in the next release",
               DeprecationWarning, stacklevel=2)
globals().update({k: v for k, v in vars(_new).items() if not k.startswith("__")})
