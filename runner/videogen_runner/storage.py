"""S3 upload of the MP4, and fetching the input image.

Credentials come only from the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, …), as
boto3 reads them; nothing in the request can carry one.
"""

import http.client
import logging
import random
import socket
import ssl
import time
from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from urllib.parse import urlparse

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from PIL import Image

from videogen_runner.addresses import why_not_public
from videogen_runner.errors import InputUnavailable, InvalidRequest, UploadFailed
from videogen_runner.request import Output

log = logging.getLogger(__name__)
MAX_IMAGE_BYTES = 32 << 20
# Multipart above 64 MiB, in 64 MiB parts: few parts for a typical video, resumable for large ones.
TRANSFER = TransferConfig(multipart_threshold=64 << 20, multipart_chunksize=64 << 20, max_concurrency=4)


def s3_client(output: Output):
    config = Config(
        retries={"max_attempts": 5, "mode": "standard"},  # exponential backoff with jitter
        connect_timeout=10,
        read_timeout=60,
        s3={"addressing_style": "path" if output.endpoint_url else "auto"},
    )
    return boto3.client("s3", endpoint_url=output.endpoint_url, region_name=output.region, config=config)


# Refusals that another try cannot change: give up at once rather than keep a GPU pod waiting.
FINAL_S3_ERRORS = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "NoSuchBucket", "InvalidBucketName"}
MAX_BACKOFF_S = 30.0


def upload(path: Path, output: Output, key: str, metadata: dict[str, str],
           on_retry: Callable[[int, float, Exception], None] = lambda attempt, delay, error: None,
           clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> str:
    """Uploads the MP4 and returns its s3:// URI. A brief S3 outage is waited out within the pod
    (`output.upload_retry_seconds`, exponential backoff with full jitter, on top of boto3's own
    few retries); what is left failing is retryable by the Job."""
    deadline, attempt = clock() + output.upload_retry_seconds, 0
    while True:
        attempt += 1
        try:
            s3_client(output).upload_file(
                str(path),
                output.bucket,
                key,
                ExtraArgs={"ContentType": "video/mp4", "Metadata": metadata},
                Config=TRANSFER,
            )
            return f"s3://{output.bucket}/{key}"
        except (BotoCoreError, ClientError, OSError) as e:
            code = e.response.get("Error", {}).get("Code") if isinstance(e, ClientError) else None
            delay = random.uniform(0, min(MAX_BACKOFF_S, 2.0**attempt))
            if code in FINAL_S3_ERRORS or clock() + delay > deadline:
                raise UploadFailed(f"upload to s3://{output.bucket}/{key} failed after {attempt} "
                                   f"attempt{'s' if attempt > 1 else ''}: {e}") from e
            log.warning("upload to s3://%s/%s failed (%s); attempt %d again in %.1f s",
                        output.bucket, key, e, attempt + 1, delay)
            on_retry(attempt, delay, e)
            sleep(delay)


class _PinnedHTTPS(http.client.HTTPSConnection):
    """HTTPS to the address that was checked, with the certificate verified for the host name:
    a second DNS answer (rebinding) cannot send the request elsewhere."""

    def __init__(self, hostname: str, address: str, port: int, timeout: float):
        super().__init__(hostname, port, timeout=timeout, context=ssl.create_default_context())
        self.address = address

    def connect(self):
        sock = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def check_image_url(url: str) -> str | None:
    """Refuses URLs whose host resolves to any address that is not public (the node, cloud
    metadata, private services); returns the vetted address of an https:// host, the one to
    connect to. The request model has already judged literal addresses and s3:// keys."""
    parsed = urlparse(url)
    if parsed.scheme == "s3":
        if not parsed.netloc or not parsed.path.strip("/"):
            raise InvalidRequest(f"image: {url!r} must be s3://bucket/key")
        return None
    if parsed.scheme != "https" or not parsed.hostname:
        raise InvalidRequest(f"image: {url!r} must be an s3:// or https:// URL")
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(parsed.hostname, parsed.port or 443,
                                                               type=socket.SOCK_STREAM)}
    except socket.gaierror as e:
        raise InputUnavailable(f"image: cannot resolve {parsed.hostname}: {e}") from e
    for address in sorted(addresses):  # one bad answer refuses the host: DNS could hand out either
        if why := why_not_public(address):
            raise InvalidRequest(f"image: {parsed.hostname} resolves to {why}; only public addresses are fetched")
    return sorted(addresses)[0]


def fetch_image(url: str, output: Output) -> Image.Image:
    """Downloads the first frame (s3:// through the same S3 endpoint and credentials)."""
    address = check_image_url(url)
    parsed = urlparse(url)
    try:
        if parsed.scheme == "s3":
            body = s3_client(output).get_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"))["Body"]
            data = body.read(MAX_IMAGE_BYTES + 1)
        else:
            connection = _PinnedHTTPS(parsed.hostname, address, parsed.port or 443, timeout=30)
            try:
                connection.request("GET", parsed.path + (f"?{parsed.query}" if parsed.query else "") or "/")
                response = connection.getresponse()
                if 300 <= response.status < 400:
                    raise InvalidRequest(f"image: {url} redirects to {response.getheader('Location')}; "
                                         "redirects are not followed")
                if response.status != 200:
                    raise InputUnavailable(f"image: {url} answered HTTP {response.status}")
                data = response.read(MAX_IMAGE_BYTES + 1)
            finally:
                connection.close()
    except (BotoCoreError, ClientError, OSError, http.client.HTTPException) as e:
        raise InputUnavailable(f"image: cannot fetch {url}: {e}") from e
    if len(data) > MAX_IMAGE_BYTES:
        raise InvalidRequest(f"image: {url} is larger than {MAX_IMAGE_BYTES >> 20} MiB")
    try:
        return Image.open(BytesIO(data)).convert("RGB")
    except OSError as e:
        raise InvalidRequest(f"image: {url} is not a readable image: {e}") from e
