"""Secrets never show themselves; references resolve or fail naming the key, not the value;
delivery errors never carry URLs or tokens."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path

import pytest

from canarywatch.errors import ConfigError, DeliveryError
from canarywatch.model import DeliveryReason
from canarywatch.secrets import Secret, is_secret_ref, resolve_secret

VALUE = "xoxb-very-secret-value"


def test_secret_hides_its_value_everywhere_but_reveal() -> None:
    secret = Secret(VALUE)
    assert secret.reveal() == VALUE
    for text in (repr(secret), str(secret), f"{secret}", f"{secret!r}", f"{secret:>40}"):
        assert VALUE not in text
    assert repr(secret) == "Secret('***')"
    assert VALUE not in repr([secret, {"k": secret}])


def test_secret_equality_and_hashing_without_leaking() -> None:
    assert Secret(VALUE) == Secret(VALUE)
    assert Secret(VALUE) != Secret("other")
    assert Secret(VALUE) != VALUE  # never equal to the plain string
    assert len({Secret(VALUE), Secret(VALUE), Secret("other")}) == 2


def test_secret_survives_copy_and_pickle() -> None:
    secret = Secret(VALUE)
    assert copy.deepcopy(secret).reveal() == VALUE
    assert pickle.loads(pickle.dumps(secret)).reveal() == VALUE  # noqa: S301 - our own bytes


def test_secret_holds_only_strings() -> None:
    with pytest.raises(TypeError):
        Secret(b"bytes")  # type: ignore[arg-type]


def test_reference_forms() -> None:
    assert is_secret_ref({"env": "X"})
    assert is_secret_ref({"file": "/x"})
    assert is_secret_ref({"value": "x"})
    assert not is_secret_ref({"env": "X", "file": "/x"})
    assert not is_secret_ref({"url": "x"})
    assert not is_secret_ref("plain")


def test_env_reference_resolves() -> None:
    secret = resolve_secret({"env": "TOKEN"}, path="server.token", environ={"TOKEN": VALUE})
    assert secret.reveal() == VALUE


def test_missing_env_names_key_and_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        resolve_secret({"env": "NOPE"}, path="server.token", environ={})
    assert caught.value.path == "server.token"
    assert "'NOPE' is not set" in str(caught.value)


def test_empty_env_is_refused() -> None:
    with pytest.raises(ConfigError, match="is empty"):
        resolve_secret({"env": "T"}, path="p", environ={"T": ""})


def test_file_reference_strips_one_trailing_newline(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(VALUE + "\n\n", encoding="utf-8")
    assert resolve_secret({"file": str(path)}, path="p").reveal() == VALUE + "\n"


def test_unreadable_file_names_the_path_not_a_value(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(ConfigError) as caught:
        resolve_secret({"file": str(missing)}, path="receivers[0].options.token")
    assert caught.value.path == "receivers[0].options.token"
    assert str(missing) in str(caught.value)
    assert "No such file" in str(caught.value)


def test_inline_string_is_refused_with_the_syntax_help() -> None:
    with pytest.raises(ConfigError) as caught:
        resolve_secret(VALUE, path="server.token")
    text = str(caught.value)
    assert VALUE not in text
    assert "{env: VARIABLE}" in text
    assert "{file:" in text


def test_value_form_is_accepted() -> None:
    assert resolve_secret({"value": VALUE}, path="p").reveal() == VALUE


@pytest.mark.parametrize(
    "error",
    [
        DeliveryError(DeliveryReason.HTTP_4XX, retryable=False, status_code=404),
        DeliveryError(DeliveryReason.HTTP_5XX, status_code=503, retry_after_s=2.5),
        DeliveryError(DeliveryReason.CONNECTION),
    ],
)
def test_delivery_error_text_is_reason_and_status_only(error: DeliveryError) -> None:
    text = f"{error} {error!r} {error.args}"
    assert "http" not in text.replace("http_", "")
    assert error.reason.value in text


def test_delivery_error_text_is_fixed() -> None:
    limited = DeliveryError(DeliveryReason.RATE_LIMITED, status_code=429, retry_after_s=3)
    assert limited.retryable
    assert str(limited) == "delivery failed: rate_limited (status 429, retry after 3s, retryable)"
    client = DeliveryError(DeliveryReason.HTTP_4XX, status_code=404)
    assert not client.retryable
    assert str(client) == "delivery failed: http_4xx (status 404, not retryable)"


def test_delivery_error_detail_says_what_happened_without_urls_or_line_breaks() -> None:
    error = DeliveryError(
        DeliveryReason.CONNECTION,
        retryable=False,
        detail="cannot reach https://u:pw@hooks.example/T0/s3cret?token=t0k\nsecond line",
    )
    assert error.detail == "cannot reach https://hooks.example second line"
    assert str(error) == (
        "delivery failed: cannot reach https://hooks.example second line "
        "(reason connection, not retryable)"
    )
    assert "s3cret" not in repr(error)
    assert "t0k" not in repr(error)
    long = DeliveryError(DeliveryReason.CONNECTION, detail="x" * 1000)
    assert long.detail is not None
    assert len(long.detail) == 300


def test_delivery_error_explicit_retryable_wins() -> None:
    assert not DeliveryError(DeliveryReason.TIMEOUT, retryable=False).retryable
    assert DeliveryError(DeliveryReason.TIMEOUT).retryable
