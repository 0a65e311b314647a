"""The access stores on their own: keys, rights, counters exact across processes, budgets, identity."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import jwt
import pytest

from ragsvc.access import audit
from ragsvc.access.admission import OverLimit, admit, metered, settle
from ragsvc.access.counters import MINUTE, Draw, RedisCounters, SqliteCounters
from ragsvc.access.db import AccessDB
from ragsvc.access.identity import Unauthorized, auth_required, identify
from ragsvc.access.keys import create_key, list_keys, revoke_key, verify
from ragsvc.access.limits import Limits, set_limits
from ragsvc.access.prices import Price, set_price
from ragsvc.access.principals import (
    create_group,
    create_user,
    delete_user,
    get_user,
    grant,
    grants_of,
)
from ragsvc.access.usage import Payer, usage_report
from tests.byte_scan import find_canary


@pytest.fixture
def db(tmp_path: Path) -> AccessDB:
    opened = AccessDB(tmp_path / "access.db")
    yield opened
    opened.close()


def test_a_key_is_random_shown_once_and_stored_only_as_its_hash(db: AccessDB, tmp_path: Path):
    create_user(db, "alice")
    made = create_key(db, "alice", "laptop", expires_in=3600)
    prefix, key_id, secret = made.secret.split("_", 2)
    assert prefix == "rsk" and len(secret) == 43  # 256 bits, URL-safe base64
    assert verify(db, made.secret).id == key_id == made.key.id
    assert find_canary(tmp_path, secret) == []  # neither the secret nor anything that contains it
    assert "secret" not in made.key.model_dump() and list_keys(db, "alice")[0].name == "laptop"
    assert list_keys(db, "alice")[0].last_used_at is not None


def test_revoked_expired_malformed_and_wrong_keys_are_refused_and_change_nothing(db: AccessDB):
    create_user(db, "alice")
    revoked = create_key(db, "alice", "old")
    revoke_key(db, revoked.key.id)
    expired = create_key(db, "alice", "short", expires_in=0.01)
    time.sleep(0.05)
    good = create_key(db, "alice", "good")
    wrong = good.secret[:-4] + ("AAAA" if not good.secret.endswith("AAAA") else "BBBB")
    before = [k.model_dump() for k in list_keys(db)]
    for presented in (revoked.secret, expired.secret, wrong, "rsk_zz", "", "Bearer x", good.secret + "x"):
        assert verify(db, presented) is None
    assert [k.model_dump() for k in list_keys(db)] == before


def test_rights_come_from_the_user_and_their_groups_highest_wins(db: AccessDB):
    create_group(db, "staff")
    create_user(db, "bob", groups=["staff"])
    grant(db, "group", "staff", "*", "read")
    grant(db, "group", "staff", "handbook", "write")
    grant(db, "user", "bob", "handbook", "read")
    grant(db, "user", "bob", "private", "admin")
    assert grants_of(db, get_user(db, "bob")) == {"*": "read", "handbook": "write", "private": "admin"}
    create_user(db, "root", admin=True)
    assert grants_of(db, get_user(db, "root")) == {"*": "admin"}


def _hammer(path: str, redis_url: str | None, tries: int, granted: multiprocessing.Queue) -> None:
    db = AccessDB(Path(path))
    if redis_url:
        import redis

        counters = RedisCounters(redis.Redis.from_url(redis_url), "test")
    else:
        counters = SqliteCounters(db)
    draw = Draw("rpm|user=alice|", MINUTE, 1, limit=37)
    granted.put(sum(counters.take([draw]) is None for _ in range(tries)))


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_counters_are_exact_over_two_processes(backend: str, tmp_path: Path, request: pytest.FixtureRequest):
    redis_url = request.getfixturevalue("redis_server") if backend == "redis" else None
    now = time.time()
    if now % MINUTE > MINUTE - 10:  # both processes must count in one minute window
        time.sleep(MINUTE - now % MINUTE + 0.1)
    AccessDB(tmp_path / "access.db").close()
    context = multiprocessing.get_context("spawn")
    granted = context.Queue()
    workers = [
        context.Process(target=_hammer, args=(str(tmp_path / "access.db"), redis_url, 40, granted))
        for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert granted.get(timeout=5) + granted.get(timeout=5) == 37


def test_rpm_tpm_and_daily_credits_each_refuse_with_the_wait(db: AccessDB):
    create_group(db, "ap-a")
    create_user(db, "ann", groups=["ap-a"])
    set_limits(db, "group", "ap-a", Limits(rpm=2, tpm=1000, daily_credits=0.05))
    set_price(db, "big", Price(input=1e-4, output=3e-4))
    counters = SqliteCounters(db)
    payer = Payer("ann", ("ap-a",), key_id="k1")

    first = admit(db, counters, payer, collection="kb", model="small", input_tokens=100, output_tokens=50)
    assert first.headers["X-RateLimit-Remaining-Requests"] == "1"
    settle(db, counters, first, input_tokens=80, output_tokens=20)
    with pytest.raises(OverLimit) as tokens:
        admit(db, counters, payer, collection="kb", model="small", input_tokens=900, output_tokens=100)
    assert tokens.value.code == "rate_limited" and "tokens per minute" in tokens.value.message
    assert 1 <= tokens.value.retry_after <= 60 and tokens.value.headers["Retry-After"]
    admit(db, counters, payer, collection="kb", model="small", input_tokens=10)
    with pytest.raises(OverLimit) as requests:
        admit(db, counters, payer, collection="kb", model="small", input_tokens=10)
    assert "requests per minute" in requests.value.message

    create_user(db, "cat", groups=["ap-a"])
    cat = Payer("cat", ("ap-a",))
    spent = admit(db, counters, cat, collection="kb", model="big", input_tokens=100, output_tokens=100)
    assert spent.remaining_credits == pytest.approx(0.05 - 0.04)
    with pytest.raises(OverLimit) as budget:
        admit(db, counters, cat, collection="kb", model="big", input_tokens=100, output_tokens=100)
    assert budget.value.code == "budget_exhausted" and budget.value.retry_after > 60
    settle(db, counters, spent, input_tokens=100, output_tokens=10)  # it wrote less: the estimate is returned

    report = usage_report(db, ["user", "model"])
    assert [(r.user, r.model, r.requests) for r in report] == [
        ("ann", "small", 1),
        ("cat", "big", 1),
    ]
    assert report[1].credits == pytest.approx(100 * 1e-4 + 10 * 3e-4)


def test_a_deleted_user_leaves_no_key_usage_or_counter(db: AccessDB, tmp_path: Path):
    create_group(db, "g")
    create_user(db, "zed-canary-user", groups=["g"])
    key = create_key(db, "zed-canary-user", "k")
    payer = Payer("zed-canary-user", ("g",), key.key.id)
    admission = admit(db, SqliteCounters(db), payer, collection="kb", model="m", input_tokens=5)
    settle(db, SqliteCounters(db), admission, input_tokens=5, output_tokens=1)
    delete_user(db, "zed-canary-user")
    assert verify(db, key.secret) is None
    assert find_canary(tmp_path, "zed-canary-user") == []
    assert find_canary(tmp_path, key.key.id) == []


SECRET = "owui-shared-secret-for-tests-0123456789"


def signed(email: str, secret: str = SECRET, **claims: object) -> str:
    now = int(time.time())
    body = {
        "sub": "u1",
        "email": email,
        "name": "N",
        "role": "user",
        "iss": "open-webui",
        "iat": now,
        "exp": now + 300,
    } | claims
    return jwt.encode(body, secret, algorithm="HS256")


def test_identity_from_a_key_in_any_client_header_never_from_the_url(db: AccessDB):
    create_user(db, "alice")
    secret = create_key(db, "alice", "k").secret
    for headers in ({"authorization": f"Bearer {secret}"}, {"x-api-key": secret}, {"api-key": secret}):
        assert identify(db, headers, {}).user.name == "alice"
    with pytest.raises(Unauthorized):
        identify(db, {}, {})
    with pytest.raises(Unauthorized, match="URL"):
        identify(db, {"authorization": f"Bearer {secret}"}, {"api_key": secret})


def test_open_webui_users_are_trusted_only_when_signed_and_forwarded_by_a_marked_key(db: AccessDB):
    create_user(db, "owui")
    create_user(db, "ann@example.org")
    create_group(db, "chat")
    forwarding = create_key(db, "owui", "open-webui", forwards_identity=True).secret
    plain = create_key(db, "owui", "plain").secret
    bearer = {"authorization": f"Bearer {forwarding}"}

    who = identify(
        db, bearer | {"x-openwebui-user-jwt": signed("Ann@example.org")}, {}, openwebui_secret=SECRET
    )
    assert who.user.name == "ann@example.org" and who.forwarded_by == "owui"
    # plain headers name nobody: the key's own user it is
    spoofed = bearer | {"x-openwebui-user-email": "ann@example.org", "x-openwebui-user-id": "u1"}
    assert identify(db, spoofed, {}, openwebui_secret=SECRET).user.name == "owui"
    for bad in (
        signed("ann@example.org", secret="another-secret-another-secret-000"),
        signed("ann@example.org", exp=int(time.time()) - 10),
        signed("ann@example.org", iss="someone-else"),
        signed("nobody@example.org"),
    ):
        with pytest.raises(Unauthorized):
            identify(db, bearer | {"x-openwebui-user-jwt": bad}, {}, openwebui_secret=SECRET)
    with pytest.raises(Unauthorized):  # a key not marked to forward identities
        identify(
            db,
            {"authorization": f"Bearer {plain}", "x-openwebui-user-jwt": signed("ann@example.org")},
            {},
            openwebui_secret=SECRET,
        )
    with pytest.raises(Unauthorized):  # no secret configured: the header cannot be checked
        identify(db, bearer | {"x-openwebui-user-jwt": signed("ann@example.org")}, {})
    made = identify(
        db,
        bearer | {"x-openwebui-user-jwt": signed("new@example.org")},
        {},
        openwebui_secret=SECRET,
        openwebui_group="chat",
    )
    assert made.user.name == "new@example.org" and made.user.groups == ["chat"]


def test_auth_is_on_beyond_loopback_whatever_the_setting():
    assert not auth_required("auto", "127.0.0.1") and not auth_required("auto", "::1")
    assert auth_required("on", "127.0.0.1")
    for host in ("0.0.0.0", "::", "192.0.2.7", ""):
        assert auth_required("auto", host) and auth_required("off", host)


def test_the_audit_log_keeps_who_what_when_and_the_outcome(db: AccessDB):
    audit.record(db, "user:root", "keys.create", "user:alice", "ok")
    audit.record(db, "key:abc", "POST /collections/{name}/search", "collection:x", "denied")
    assert [(e.actor, e.outcome) for e in audit.entries(db)] == [("key:abc", "denied"), ("user:root", "ok")]


def test_a_metered_call_is_refused_before_the_model_runs_and_charged_what_it_reported(db: AccessDB):
    create_group(db, "ap-u")
    create_user(db, "ann", groups=["ap-u"])
    set_limits(db, "group", "ap-u", Limits(daily_credits=1.0))
    set_price(db, "m", Price(input=1e-3, output=2e-3))
    counters = SqliteCounters(db)
    payer = Payer("ann", ("ap-u",))
    with metered(
        db, counters, payer, collection="kb", model="m", input_tokens=100, output_tokens=200
    ) as meter:
        meter.input_tokens, meter.output_tokens = 90, 10  # the LLM's reported usage
    assert meter.charged_pico / 1e12 == pytest.approx(0.09 + 0.02)
    assert meter.remaining_credits == pytest.approx(1.0 - 0.11)
    called = []
    with pytest.raises(OverLimit):
        with metered(db, counters, payer, collection="kb", model="m", input_tokens=100, output_tokens=500):
            called.append("the model")  # 0.1 + 1.0 credits: over the 0.89 left
    assert called == []
    with pytest.raises(RuntimeError):
        with metered(db, counters, payer, collection="kb", model="m", input_tokens=10, output_tokens=10):
            raise RuntimeError("the LLM is down")
    assert usage_report(db, [])[0].credits == pytest.approx(0.11)
