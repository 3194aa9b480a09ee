"""Connection settings: URLs split, checked and masked."""

from __future__ import annotations

import pytest

from utils.settings import check_url, mask_url, split_urls


def test_passwords_are_masked_in_urls():
    assert mask_url("amqp://bob:pw@host:5672/%2F") == "amqp://bob:***@host:5672/%2F"
    assert mask_url("amqp://host/") == "amqp://host/"


def test_urls_split_on_commas_and_are_checked():
    assert split_urls(("amqp://a/,amqp://b/",)) == ("amqp://a/", "amqp://b/")
    with pytest.raises(ValueError, match="not an AMQP URL"):
        check_url("http://x/")
