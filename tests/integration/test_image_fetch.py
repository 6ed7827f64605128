"""Fetching the first frame over real HTTPS on loopback: the connection goes to the address that
was checked, the certificate must match the host name, and redirects are refused."""

import datetime
import io
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from PIL import Image

from videogen_runner import storage
from videogen_runner.errors import InputUnavailable, InvalidRequest
from videogen_runner.request import Output

HOST = "images.example.test"


def certificate(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(HOST)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                         serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    return tmp_path / "cert.pem", tmp_path / "key.pem"


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - the standard library's name
        if self.path == "/moved.png":
            self.send_response(302)
            self.send_header("Location", "https://169.254.169.254/latest/meta-data")
            self.end_headers()
            return
        if self.path != "/frame.png" or self.headers["Host"].split(":")[0] != HOST:
            self.send_response(404)
            self.end_headers()
            return
        body = io.BytesIO()
        Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(body, format="PNG")
        self.send_response(200)
        self.send_header("Content-Length", str(len(body.getvalue())))
        self.end_headers()
        self.wfile.write(body.getvalue())

    def log_message(self, *args):
        pass


@pytest.fixture
def https_server(tmp_path, monkeypatch):
    cert, key = certificate(tmp_path)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    # The host "resolves" to the loopback server (a real check would refuse loopback: that is the
    # point of check_image_url, tested elsewhere); the fetch must then use exactly that address.
    monkeypatch.setattr(storage, "check_image_url", lambda url: "127.0.0.1")
    yield server.server_address[1], cert
    server.shutdown()
    server.server_close()


def trust(monkeypatch, cert):
    default = ssl.create_default_context
    monkeypatch.setattr(storage.ssl, "create_default_context", lambda: default(cafile=str(cert)))


def test_fetches_from_the_checked_address_with_the_hosts_certificate(https_server, monkeypatch):
    port, cert = https_server
    trust(monkeypatch, cert)
    image = storage.fetch_image(f"https://{HOST}:{port}/frame.png", Output())
    assert image.size == (8, 8) and image.getpixel((0, 0)) == (200, 200, 200)


def test_an_untrusted_certificate_is_refused(https_server):
    port, _ = https_server
    with pytest.raises(InputUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
        storage.fetch_image(f"https://{HOST}:{port}/frame.png", Output())


def test_redirects_and_missing_files(https_server, monkeypatch):
    port, cert = https_server
    trust(monkeypatch, cert)
    with pytest.raises(InvalidRequest, match="redirects are not followed"):
        storage.fetch_image(f"https://{HOST}:{port}/moved.png", Output())
    with pytest.raises(InputUnavailable, match="HTTP 404"):
        storage.fetch_image(f"https://{HOST}:{port}/missing.png", Output())
