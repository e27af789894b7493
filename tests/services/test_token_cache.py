"""Validated tokens are remembered briefly: no database round trip per call, revocation at once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from csbs.domain import errors
from csbs.domain.identity import Role
from tests.support.runtime import Env, make_env


@pytest.fixture
def env(tmp_path: Path, db_url: str) -> Iterator[Env]:
    e = make_env(tmp_path, db_url, token_cache_seconds=5)
    yield e
    e.client.close()
    e.runtime.close()


def test_cache_saves_queries_expires_and_forgets_revoked(env: Env) -> None:
    token = env.add_user("mia", "alpha", Role.MEMBER)
    identity = env.services.identity
    statements: list[str] = []
    sa.event.listen(
        env.services.db.engine,
        "before_cursor_execute",
        lambda _c, _cur, stmt, *_a: statements.append(stmt),
    )
    first = identity.validate(token)
    asked = len(statements)
    assert asked >= 1
    assert identity.validate(token) == first
    assert len(statements) == asked  # answered from the cache
    env.clock.advance(6)  # past token_cache_seconds: asked again
    identity.validate(token)
    assert len(statements) > asked
    identity.revoke(token)
    with pytest.raises(errors.Unauthenticated):
        identity.validate(token)
    # Another process revoking: this one notices once its entry is older than the setting.
    other = env.token("mia", "pw-" + "x" * 8, "alpha")
    identity.validate(other)
    with env.services.db.write() as s:
        s.execute(sa.text("UPDATE tokens SET revoked_at = expires_at"))
    identity.validate(other)  # still remembered
    env.clock.advance(6)
    with pytest.raises(errors.Unauthenticated):
        identity.validate(other)


def test_expiry_is_exact_even_when_cached(env: Env) -> None:
    token = env.add_user("mia", "alpha", Role.MEMBER)
    principal = env.services.identity.validate(token)
    env.clock._now = principal.expires_at
    with pytest.raises(errors.Unauthenticated, match="expired"):
        env.services.identity.validate(token)


def test_a_validation_racing_a_revocation_does_not_cache_the_token(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    from csbs.services import identity as identity_module

    token = env.add_user("mia", "alpha", Role.MEMBER)
    identity = env.services.identity
    real = identity_module.q.principal_for_token

    def read_then_revoked(s: object, token_hash: str) -> object:
        principal = real(s, token_hash)  # type: ignore[arg-type]
        monkeypatch.setattr(identity_module.q, "principal_for_token", real)
        identity.revoke(token)  # commits between this read and the caching of its result
        return principal

    monkeypatch.setattr(identity_module.q, "principal_for_token", read_then_revoked)
    identity.validate(token)  # read before the revocation: answered, but not remembered
    with pytest.raises(errors.Unauthenticated):
        identity.validate(token)
