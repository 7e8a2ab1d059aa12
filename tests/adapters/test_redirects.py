"""Where the Hub reader follows a redirect: the Hub's own origin or a public https origin (check_redirect)."""

from __future__ import annotations

import pytest

from model_cache.adapters.hub_reader import check_redirect
from model_cache.contract import errors

pytestmark = pytest.mark.unit

HUB = "https://huggingface.co"


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        pytest.param("http://cdn-lfs.huggingface.co/repos/x", "only https", id="plain http"),
        pytest.param("file:///etc/passwd", "only https", id="file scheme"),
        pytest.param("https://169.254.169.254/latest/meta-data/", "non-public", id="instance metadata"),
        pytest.param("https://127.0.0.1:8443/x", "non-public", id="loopback"),
        pytest.param("https://[::1]/x", "non-public", id="loopback v6"),
        pytest.param("https://10.0.12.7/x", "non-public", id="private 10/8"),
        pytest.param("https://192.168.1.20/x", "non-public", id="private 192.168/16"),
        pytest.param("https://[fd00::1]/x", "non-public", id="unique local v6"),
        pytest.param("https://localhost/x", "non-public", id="localhost by name"),
    ],
)
def test_a_redirect_off_the_hub_to_a_non_public_or_plain_origin_is_refused(target: str, reason: str) -> None:
    """GIVEN the real Hub's https endpoint  WHEN it redirects to plain http, another scheme, or an address that is
    loopback, link-local, private  THEN the reader refuses with a TransferError that says why."""
    with pytest.raises(errors.TransferError, match=reason):
        check_redirect(HUB, target)


@pytest.mark.parametrize(
    ("hub", "target"),
    [
        pytest.param(HUB, "https://huggingface.co/api/resolve-cache/x", id="the hub's own origin"),
        pytest.param(HUB, "https://18.160.10.20/repos/x", id="a public https address"),
        pytest.param("http://127.0.0.1:5000", "http://127.0.0.1:5001/cdn-lfs/x", id="the offline harness's CDN"),
    ],
)
def test_the_hubs_origin_public_https_and_the_offline_harness_are_followed(hub: str, target: str) -> None:
    """GIVEN a redirect to the Hub's own origin, to a public https address, or (with the Hub double on loopback
    http) to its CDN listener  THEN it is followed."""
    check_redirect(hub, target)
