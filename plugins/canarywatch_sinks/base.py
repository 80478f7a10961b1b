"""What every built-in sink does when it is made: parse its options once, then set itself up.

``Sink.__init__`` asks each subclass to validate ``options`` with its ``options_model`` and keep
the result; the built-ins do it here, once, so a sink declares its model and writes only what
is its own (``_setup``: a timeout, a lock, a file path).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Generic, TypeVar, cast

import aiohttp
import pydantic

from canarywatch.sinks import BoundLogger, Sink, SinkMemory

OptionsT = TypeVar("OptionsT", bound=pydantic.BaseModel)


class BuiltinSink(Sink, Generic[OptionsT]):
    """A built-in sink whose ``options_model`` is ``OptionsT``: parsed into ``self._options``."""

    def __init__(
        self,
        name: str,
        options: Mapping[str, object],
        *,
        http: aiohttp.ClientSession,
        log: BoundLogger,
        memory: SinkMemory | None = None,
    ) -> None:
        super().__init__(name, options, http=http, log=log, memory=memory)
        model = type(self).options_model
        if model is None:  # pragma: no cover - every built-in declares its model
            raise TypeError(f"{type(self).__name__} declares no options_model")
        self._options = cast(OptionsT, model.model_validate(dict(options)))
        self._setup()

    def _setup(self) -> None:
        """Derive what the sink keeps besides its options; called once, at the end of
        ``__init__``. The default keeps nothing."""
