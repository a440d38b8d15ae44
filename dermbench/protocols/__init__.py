"""Protocol registry. Each protocol module is imported only when used.

One module per protocol (retrieval, linear probe, segmentation heads, captioning with its tiny LM,
federated, label efficiency); ``base`` holds the ``Protocol`` interface.

Layer 4. May import: ``dermbench.federated``, ``dermbench.features``, ``dermbench.stats``,
``dermbench.models``, ``dermbench.data``, ``dermbench.io``, ``dermbench.config``.
"""
from __future__ import annotations

import importlib
from typing import Any

from dermbench.names import did_you_mean
from dermbench.protocols.base import Protocol, ProtocolOutput, RunContext

# protocol name -> "module:ClassName"
_PROTOCOLS = {
    "retrieval": "dermbench.protocols.retrieval:Retrieval",
    "linear": "dermbench.protocols.linear_probe:LinearProbe",
    "seg-linear": "dermbench.protocols.segmentation:LinearSegmentation",
    "seg-upernet": "dermbench.protocols.segmentation:UperNetSegmentation",
    "caption": "dermbench.protocols.captioning:Captioning",
    "federated": "dermbench.protocols.federated:Federated",
    "label-efficiency": "dermbench.protocols.label_efficiency:LabelEfficiency",
    "robustness": "dermbench.protocols.robustness:Robustness",
    "transfer": "dermbench.protocols.transfer:Transfer",
}


def names() -> list[str]:
    return list(_PROTOCOLS)


def is_available(name: str) -> bool:
    """False when the protocol's module is not part of this installation."""
    import importlib.util

    return importlib.util.find_spec(_PROTOCOLS[name].split(":")[0]) is not None


def check_name(name: str) -> None:
    """A KeyError naming the valid protocols (and the close one) for an unknown protocol name."""
    if name not in _PROTOCOLS:
        raise KeyError(f"unknown protocol {name!r}{did_you_mean(name, _PROTOCOLS)}. Valid protocols: {', '.join(_PROTOCOLS)}")


def get_protocol(name: str) -> Protocol:
    check_name(name)
    module, cls = _PROTOCOLS[name].split(":")
    return getattr(importlib.import_module(module), cls)()


def validate_overrides(overrides: dict[str, dict[str, Any]]) -> None:
    """Check every ``--set PROTOCOL.SETTING=VALUE`` before any work: the protocol exists, it has the
    setting, the value has the setting's type and lies in its range. Raises KeyError / ValueError."""
    for protocol, settings in overrides.items():
        if protocol not in _PROTOCOLS:
            given = ", ".join(f"--set {protocol}.{setting}" for setting in settings)
            raise KeyError(f"{given}: unknown protocol {protocol!r}{did_you_mean(protocol, _PROTOCOLS)}. "
                           f"Valid protocols: {', '.join(_PROTOCOLS)}")
        if is_available(protocol):
            get_protocol(protocol).resolve_config(settings)


__all__ = ["Protocol", "ProtocolOutput", "RunContext", "check_name", "get_protocol", "is_available", "names", "validate_overrides"]
