import pytest

from videogen_runner.errors import InvalidRequest
from videogen_runner.storage import check_image_url


@pytest.mark.parametrize("url", [
    "https://169.254.169.254/latest/meta-data", "https://127.0.0.1/a.png", "https://[::1]/a.png",
    "https://[fe80::1]/a.png", "https://0.0.0.0/a.png", "http://example.com/a.png", "file:///etc/passwd",
    "s3://bucket-only", "s3:///key-only",
])
def test_forbidden_image_urls(url):
    with pytest.raises(InvalidRequest, match="image:"):
        check_image_url(url)


def test_allowed_image_urls_and_the_address_to_connect_to():
    assert check_image_url("s3://inputs/a/b.png") is None
    assert check_image_url("https://10.0.0.8/a.png") == "10.0.0.8"  # the fetch connects to what was checked
