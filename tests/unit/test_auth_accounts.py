"""Sign-up rules and password hashing (auth_svc.accounts), without I/O."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher

from auth_svc import accounts
from auth_svc.accounts import Passwords
from paymesh_runtime.errors import InvalidArgument
from paymesh_runtime.identity import Role

# Cheap Argon2id parameters: these tests check behaviour, not cost.
FAST = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
PASSWORD = "correct horse"


def _sign_up(
    email: str = "Ann@Example.com", password: str = PASSWORD, role: Role | None = Role.CUSTOMER
) -> accounts.SignUp:
    return accounts.sign_up(email, password, " Ann ", role, allowed=accounts.SIGNUP_ROLES)


def test_the_email_is_trimmed_and_lower_cased() -> None:
    assert _sign_up(email="  Ann.Lee@Example.COM ").email == "ann.lee@example.com"


def test_the_display_name_is_trimmed() -> None:
    assert _sign_up().display_name == "Ann"


@pytest.mark.parametrize("email", ["", "   ", "no-at-sign", "a@b", "two@@example.com", "sp ace@example.com"])
def test_a_malformed_email_is_a_validation_error(email: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        _sign_up(email=email)
    assert (raised.value.reason, raised.value.field) == ("VALIDATION_FAILED", "email")


@pytest.mark.parametrize(
    ("email", "password"),
    [
        ("ann@example.com", "nine char"),
        ("ann@example.com", ""),
        ("longer.name@example.com", "longer.name@example.com"),
        ("longer.name@example.com", "  Longer.Name@Example.com "),
    ],
)
def test_a_short_password_or_the_email_as_password_is_weak(email: str, password: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        _sign_up(email=email, password=password)
    assert (raised.value.reason, raised.value.field) == ("WEAK_PASSWORD", "password")


def test_ten_characters_are_enough() -> None:
    assert _sign_up(password="x" * 10).password == "x" * 10


def test_a_huge_password_is_refused_before_it_is_hashed() -> None:
    with pytest.raises(InvalidArgument) as raised:
        _sign_up(password="x" * 1025)
    assert raised.value.reason == "VALIDATION_FAILED"


@pytest.mark.parametrize("role", [None, Role.ADMIN])
def test_the_public_sign_up_grants_customer_or_merchant_only(role: Role | None) -> None:
    with pytest.raises(InvalidArgument) as raised:
        _sign_up(role=role)
    assert raised.value.field == "account_type"


def test_merchants_may_sign_up() -> None:
    assert _sign_up(role=Role.MERCHANT).role is Role.MERCHANT


def test_the_password_never_appears_in_a_sign_ups_repr() -> None:
    assert "correct horse" not in repr(_sign_up())


def test_a_display_name_over_100_characters_is_refused() -> None:
    with pytest.raises(InvalidArgument):
        accounts.sign_up("a@example.com", "x" * 12, "n" * 101, Role.CUSTOMER, allowed=accounts.SIGNUP_ROLES)


def test_a_hash_is_argon2id_and_verifies_only_its_password() -> None:
    passwords = Passwords(FAST)
    stored = passwords.hash("correct horse")
    assert stored.startswith("$argon2id$")
    assert "correct horse" not in stored
    assert passwords.verify(stored, "correct horse")
    assert not passwords.verify(stored, "wrong horse!")


def test_an_unknown_account_never_verifies_even_with_the_dummy_password() -> None:
    passwords = Passwords(FAST)
    assert not passwords.verify(None, "paymesh-dummy-password")
    assert not passwords.verify(None, "anything at all")


def test_a_garbage_hash_does_not_verify() -> None:
    assert not Passwords(FAST).verify("not-a-hash", "correct horse")


def test_hashes_made_with_weaker_parameters_need_a_rehash() -> None:
    weak = Passwords(FAST).hash("correct horse")
    assert Passwords(PasswordHasher(time_cost=2, memory_cost=2048, parallelism=1)).needs_rehash(weak)
    assert not Passwords(FAST).needs_rehash(weak)
