"""python manage.py create_api_key NAME: the key alone on the last line, usable at once."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from policies.keys import key_hash
from policies.models import ApiKey, Policy

pytestmark = pytest.mark.django_db


def create(*args) -> str:
    out = StringIO()
    call_command("create_api_key", *args, stdout=out, stderr=StringIO())
    return out.getvalue().strip().splitlines()[-1]


def test_prints_the_key_alone_on_the_last_line():
    raw_key = create("billing-service")

    api_key = ApiKey.objects.get(name="billing-service")
    assert raw_key.startswith("aip-")
    assert " " not in raw_key
    assert api_key.key_hash == key_hash(raw_key)
    assert api_key.is_active
    assert api_key.expires_at is None


def test_assigns_a_policy_and_an_expiry():
    policy = Policy.objects.create(name="strict")

    create("temp", "--policy", "strict", "--expires-in-days", "7")

    api_key = ApiKey.objects.get(name="temp")
    assert api_key.policy == policy
    assert api_key.expires_at is not None


@pytest.mark.parametrize("args", [("x", "--policy", "nope"), ("x", "--expires-in-days", "0")])
def test_refuses_bad_arguments(args):
    with pytest.raises(CommandError):
        create(*args)
    assert not ApiKey.objects.exists()
