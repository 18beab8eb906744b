"""PostgreSQL store URLs (store/urls.py): what libpq gets, what messages show.

Pure: no server. What reaches a real server is tested in tests/test_pg_cli.py.
"""

from __future__ import annotations

import pytest

from tether.errors import UsageError
from tether.store.urls import libpq_target, parse_url, without_password


@pytest.mark.parametrize("url", [
    "postgresql://postgres:SEK/RET3@127.0.0.1/test?schema=a",
    "postgresql://postgres:SEK?RET4@127.0.0.1/test",
    "postgresql://postgres:SEK#RET5@127.0.0.1/test",
])
def test_a_password_with_a_reserved_character_is_refused_and_never_shown(url: str) -> None:
    """libpq reads the user part only up to the first / ? or #: such a URL cannot connect,
    and the message that says so must not print what follows the colon."""
    with pytest.raises(UsageError, match="percent-encode") as err:
        parse_url(url)
    assert "SEK" not in str(err.value) and "RET" not in str(err.value)
    assert "SEK" not in without_password(url) and "RET" not in without_password(url)


@pytest.mark.parametrize("url", [
    "postgresql://postgres:SEK@RET6@127.0.0.1/test?schema=a",
    "postgresql://post@gres:SEKRET7@127.0.0.1/test",
])
def test_an_unencoded_at_sign_before_the_host_is_refused_and_never_shown(url: str) -> None:
    """libpq ends the user part at the first '@': the rest of the password was taken for
    the host, and the failed connection's message printed it ("failed to resolve host
    'RET6@127.0.0.1'")."""
    with pytest.raises(UsageError, match="%40") as err:
        parse_url(url)
    assert "SEK" not in str(err.value) and "RET" not in str(err.value)
    assert "SEK" not in without_password(url) and "RET" not in without_password(url)


def test_an_empty_host_keeps_its_double_slash() -> None:
    """``postgresql:///db``: the host comes from PGHOST or the local socket, as for psql."""
    conninfo, schema, shown = parse_url("postgresql:///test?schema=a")
    assert (conninfo, schema, shown) == ("postgresql:///test", "a", "postgresql:///test?schema=a")
    conninfo, _, _ = parse_url("postgresql:///test?host=/var/run/postgresql&user=postgres")
    assert conninfo.startswith("postgresql:///test?host=")
    assert libpq_target(conninfo)[0].startswith("postgresql:///test?")


def test_a_malformed_host_is_a_usage_error_without_the_password() -> None:
    with pytest.raises(UsageError, match="not a valid URL") as err:
        parse_url("postgresql://u:hunter2@[::1/test")
    assert "hunter2" not in str(err.value)


def test_ssl_key_passwords_are_hidden_like_passwords() -> None:
    conninfo, _, shown = parse_url("postgresql://u:pw@h/db?sslpassword=S3CRET&schema=x")
    assert "S3CRET" not in shown and "pw" not in shown
    assert "sslpassword=S3CRET" in conninfo  # libpq still gets it
    assert "S3CRET" not in without_password("postgresql://h/db?sslpassword=S3CRET&schema=x")


def test_options_with_spaces_and_pluses_reach_libpq_as_written() -> None:
    """libpq percent-decodes the query and reads '+' as '+', not as a space."""
    conninfo, _, _ = parse_url("postgresql://h/db?options=-c%20a%3Db&application_name=x+y")
    assert "options=-c%20a%3Db" in conninfo and "application_name=x%2By" in conninfo
