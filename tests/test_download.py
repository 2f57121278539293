import hashlib
import http.server
import json
import socket
import threading
import time
from dataclasses import replace

import numpy as np
import pytest

from classic_cnns.data import download as dl
from classic_cnns.data.datasets import REGISTRY, read_raw
from classic_cnns.errors import DiskFull
from tests.projects import stage
from tests.tiny_data import write_spec


@pytest.fixture
def spec(tmp_path, fixture_data, monkeypatch):
    mirror, sums = fixture_data
    monkeypatch.setenv(dl.SPEC_OVERRIDE_ENV, str(write_spec(tmp_path / "spec.json", sums)))
    monkeypatch.setattr(dl, "BACKOFF_S", 0.01)
    return mirror, sums


def test_official_files_come_from_an_http_mirror_with_checksums(spec, serve, tmp_path, monkeypatch):
    mirror, sums = spec
    monkeypatch.setenv("DATA_MIRROR", serve(mirror))  # files sit under mnist/ there
    out = tmp_path / "raw" / "mnist"
    provenance = dl.download(REGISTRY["mnist"], "official", out)
    assert provenance["official"] is True
    assert provenance["files"] == sums["mnist"]
    for name, sha in sums["mnist"].items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == sha
    assert json.loads((out / "provenance.json").read_text()) == provenance
    assert sorted(p.name for p in out.parent.iterdir()) == ["mnist"]  # no temp folders left


def test_a_local_folder_works_as_the_mirror(spec, tmp_path, monkeypatch):
    mirror, sums = spec
    monkeypatch.setenv("DATA_MIRROR", str(mirror / "cifar10"))  # flat layout
    out = tmp_path / "raw" / "cifar10"
    assert dl.download(REGISTRY["cifar10"], "official", out)["files"] == sums["cifar10"]


def test_checksum_mismatch_names_file_url_and_both_checksums_and_leaves_nothing(spec, serve, tmp_path, monkeypatch):
    mirror, sums = spec
    bad = tmp_path / "bad"
    (bad / "mnist").mkdir(parents=True)
    for name in sums["mnist"]:
        (bad / "mnist" / name).write_bytes((mirror / "mnist" / name).read_bytes())
    tampered = bad / "mnist" / "t10k-labels-idx1-ubyte.gz"
    tampered.write_bytes(tampered.read_bytes() + b"x")
    url = serve(bad)
    monkeypatch.setenv("DATA_MIRROR", url)
    out = tmp_path / "raw" / "mnist"
    with pytest.raises(dl.DownloadError) as err:
        dl.download(REGISTRY["mnist"], "official", out)
    message = str(err.value)
    assert "t10k-labels-idx1-ubyte.gz" in message
    assert f"{url}mnist/t10k-labels-idx1-ubyte.gz" in message
    assert sums["mnist"]["t10k-labels-idx1-ubyte.gz"] in message
    assert hashlib.sha256(tampered.read_bytes()).hexdigest() in message
    assert not out.exists()
    assert list(out.parent.iterdir()) == []  # no partial files or temp folders


def test_unreachable_sources_are_all_named(spec, tmp_path, monkeypatch):
    monkeypatch.setenv("DATA_MIRROR", "http://127.0.0.1:9/mirror/")  # the discard port: refused
    with pytest.raises(dl.DownloadError) as err:
        dl.download(REGISTRY["cifar10"], "official", tmp_path / "raw" / "cifar10")
    message = str(err.value)
    assert "http://127.0.0.1:9/mirror/cifar-10-python.tar.gz" in message
    assert "http://127.0.0.1:9/mirror/cifar10/cifar-10-python.tar.gz" in message
    assert "3 attempts" in message  # refused connections are retried
    assert "DATA_MIRROR" in message  # and the fix is named


def test_missing_file_in_a_folder_mirror_falls_through_to_the_next_url(spec, serve, tmp_path, monkeypatch):
    mirror, sums = spec
    monkeypatch.setenv("DATA_MIRROR", str(tmp_path / "empty"))
    monkeypatch.setenv(dl.SPEC_OVERRIDE_ENV, str(write_spec(tmp_path / "s.json", sums, [serve(mirror / "mnist")])))
    assert dl.download(REGISTRY["mnist"], "official", tmp_path / "raw" / "mnist")["official"]


def test_local_npz_copy_is_recorded_as_non_official(tmp_path, serve):
    rng = np.random.default_rng(0)
    copy = tmp_path / "copy" / "stand-in.npz"
    copy.parent.mkdir()
    np.savez(
        copy,
        x_train=rng.integers(0, 255, (20, 32, 32, 3), dtype=np.uint8),
        y_train=np.arange(20) % 10,
        x_test=rng.integers(0, 255, (10, 32, 32, 3), dtype=np.uint8),
        y_test=np.arange(10) % 10,
    )
    sha = hashlib.sha256(copy.read_bytes()).hexdigest()
    for source in (str(copy), serve(copy.parent) + "stand-in.npz"):
        out = tmp_path / "raw" / source[-20:].replace("/", "_") / "cifar10"
        provenance = dl.download(REGISTRY["cifar10"], source, out)
        assert provenance == {
            "dataset": "cifar10",
            "title": "CIFAR-10 (non-official local copy)",
            "official": False,
            "source": source,
            "files": {"stand-in.npz": sha},  # the copy's own name, as dvc.lock and the README name it
        }
        assert (out / "stand-in.npz").read_bytes() == copy.read_bytes()
        assert read_raw(replace(REGISTRY["cifar10"], layout="npz"), out)[0].shape == (20, 32, 32, 3)


def test_a_local_copy_without_the_keras_keys_is_refused(tmp_path):
    copy = tmp_path / "wrong.npz"
    np.savez(copy, images=np.zeros((2, 32, 32, 3), np.uint8))
    out = tmp_path / "raw" / "cifar10"
    with pytest.raises(dl.DownloadError, match="lacks x_train, y_train, x_test, y_test"):
        dl.download(REGISTRY["cifar10"], str(copy), out)
    assert not out.exists()


def test_a_text_file_given_as_npz_is_named_as_such(tmp_path):
    copy = tmp_path / "notes.npz"
    copy.write_text("x_train,y_train\n1,2\n")
    out = tmp_path / "raw" / "cifar10"
    with pytest.raises(dl.DownloadError) as err:
        dl.download(REGISTRY["cifar10"], str(copy), out)
    assert "not an .npz" in str(err.value) and "b'x_train,y_train" in str(err.value)
    assert "pickle" not in str(err.value)
    assert not out.exists()


def test_the_stage_exits_non_zero_with_the_reason(project, monkeypatch):
    monkeypatch.setenv("DATA_MIRROR", "http://127.0.0.1:9/")
    result = stage("download", "mnist", cwd=project, check=False)
    assert result.returncode == 2
    assert "error: mnist: could not get train-images-idx3-ubyte.gz" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (project / "data" / "raw" / "mnist").exists()


class Flaky(http.server.BaseHTTPRequestHandler):
    """Serves one file, misbehaving as the server's `script` says, one step per request:
    "drop" (sends half, then closes the connection), "stall" (says nothing for 2 s), "503", "ok"."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        srv = self.server
        step = srv.script.pop(0) if srv.script else "ok"
        srv.ranges.append(self.headers.get("Range"))
        if step == "stall":
            time.sleep(2)
            return
        if step == "503":
            self.send_error(503)
            return
        start = 0
        if srv.ranges_allowed and self.headers.get("Range", "").startswith("bytes="):
            start = int(self.headers["Range"][6:].rstrip("-"))
        body = srv.payload[start:]
        srv.partial.append(bool(start))
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(srv.payload) - 1}/{len(srv.payload)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if step == "drop":
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)


@pytest.fixture
def flaky():
    servers = []

    def start(payload: bytes, script: list[str], ranges_allowed: bool = True):
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
        server.payload, server.script, server.ranges_allowed = payload, list(script), ranges_allowed
        server.ranges, server.partial = [], []
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server, f"http://127.0.0.1:{server.server_address[1]}/file.bin"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


@pytest.mark.parametrize(
    "script, ranges_allowed, resumed",
    [
        (["drop", "ok"], True, True),  # continued with HTTP Range where the server allows it
        (["drop", "ok"], False, False),  # else fetched again from the start
        (["stall", "ok"], True, False),
        (["503", "503", "ok"], True, False),
    ],
)
def test_transient_failures_are_retried(flaky, tmp_path, monkeypatch, script, ranges_allowed, resumed):
    monkeypatch.setattr(dl, "BACKOFF_S", 0.01)
    monkeypatch.setenv(dl.TIMEOUT_ENV, "0.5")
    server, url = flaky(PAYLOAD, script, ranges_allowed)
    dest = tmp_path / "file.bin"
    assert dl.fetch_checked([url], dest, hashlib.sha256(PAYLOAD).hexdigest()) == (
        url,
        hashlib.sha256(PAYLOAD).hexdigest(),
    )
    assert dest.read_bytes() == PAYLOAD
    assert len(server.ranges) == len(script)
    assert server.partial[-1] == resumed  # sent only the missing half
    if script[0] == "drop":
        assert server.ranges[-1] == f"bytes={len(PAYLOAD) // 2}-"  # the retry asked for the rest


def test_a_connection_dropped_every_time_names_the_url_and_the_attempts_and_leaves_nothing(
    flaky, tmp_path, monkeypatch
):
    monkeypatch.setattr(dl, "BACKOFF_S", 0.01)
    monkeypatch.setenv(dl.ATTEMPTS_ENV, "4")
    server, url = flaky(PAYLOAD, ["drop"] * 4, ranges_allowed=False)
    with pytest.raises(dl.DownloadError) as err:
        dl.fetch_checked([url], tmp_path / "file.bin", None)
    message = str(err.value)
    assert url in message and "4 attempts" in message and "\n" not in message
    assert "IncompleteRead" in message or "connection closed" in message
    assert len(server.ranges) == 4
    assert list(tmp_path.iterdir()) == []


def test_bad_retry_settings_are_named(monkeypatch, tmp_path):
    monkeypatch.setenv(dl.ATTEMPTS_ENV, "three")
    with pytest.raises(dl.DownloadError, match="DATA_DOWNLOAD_ATTEMPTS='three' must be a positive int"):
        dl.fetch_checked(["http://127.0.0.1:9/x"], tmp_path / "x", None)


def test_a_full_disk_is_named_with_the_folder_and_the_bytes_needed(flaky, small_disk, monkeypatch):
    server, url = flaky(PAYLOAD, ["ok"])
    with pytest.raises(DiskFull) as err:
        dl.fetch_checked([url], small_disk / "file.bin", None)
    message = str(err.value)
    assert message.startswith("disk full") and str(small_disk) in message and "needs 1.0 MB" in message
    assert list(small_disk.iterdir()) == []
    assert len(server.ranges) == 1  # not retried: another try cannot help


def test_a_killed_downloads_temporary_folder_is_removed_by_the_next_one(spec, tmp_path, monkeypatch):
    mirror, sums = spec
    monkeypatch.setenv("DATA_MIRROR", str(mirror))
    raw = tmp_path / "raw"
    (raw / ".mnist-k1ll3d").mkdir(parents=True)  # what kill -9 during a download leaves
    (raw / ".mnist-k1ll3d" / "train-images-idx3-ubyte.gz").write_bytes(b"half")
    dl.download(REGISTRY["mnist"], "official", raw / "mnist")
    assert sorted(p.name for p in raw.iterdir()) == ["mnist"]
