"""The public sink plugin API: everything a plugin imports, from one place.

Plugins, built-in or third-party, import only this package and ``canarywatch.model``; what they
need from elsewhere (``DeliveryError``, ``Secret``, the JSON output shape) is re-exported here.
Inside: ``api`` (the ``Sink`` ABC, its optional capabilities, ``SinkMemory``), ``http``
(classifying HTTP outcomes), ``text`` (escaping, truncation, the weight bar) and ``loader``
(plugin discovery, option validation, building the sinks of a configuration).
"""

from canarywatch.errors import DeliveryError
from canarywatch.formats.jsonout import dumps, event_to_json, format_time, notification_to_json
from canarywatch.model import DeliveryReason
from canarywatch.secrets import Secret
from canarywatch.sinks.api import (
    API_VERSION,
    BoundLogger,
    InMemorySinkMemory,
    OptionProblem,
    Payload,
    Sink,
    SinkLoadError,
    SinkMemory,
    idempotency_key,
)
from canarywatch.sinks.http import (
    RETRY_AFTER_CAP_S,
    HttpAnswer,
    classify_exception,
    classify_http,
    encode_json,
    parse_retry_after,
    redact_urls,
    send_json,
)
from canarywatch.sinks.loader import (
    NAMESPACE,
    PluginInfo,
    SinkRegistry,
    build_sink,
    discover_sinks,
    inspect_abstract,
    load_sink_class,
    validate_sink_options,
)
from canarywatch.sinks.text import VERDICTS, clean_text, is_verdict, reveal_secret, weight_bar

__all__ = [
    "API_VERSION",
    "NAMESPACE",
    "RETRY_AFTER_CAP_S",
    "VERDICTS",
    "BoundLogger",
    "DeliveryError",
    "DeliveryReason",
    "HttpAnswer",
    "InMemorySinkMemory",
    "OptionProblem",
    "Payload",
    "PluginInfo",
    "Secret",
    "Sink",
    "SinkLoadError",
    "SinkMemory",
    "SinkRegistry",
    "build_sink",
    "classify_exception",
    "classify_http",
    "clean_text",
    "discover_sinks",
    "dumps",
    "encode_json",
    "event_to_json",
    "format_time",
    "idempotency_key",
    "inspect_abstract",
    "is_verdict",
    "load_sink_class",
    "notification_to_json",
    "parse_retry_after",
    "redact_urls",
    "reveal_secret",
    "send_json",
    "validate_sink_options",
    "weight_bar",
]
