"""Fetching a dataset's files: official URLs (mirror first), pinned checksums, retries, atomic.

Where the bytes come from never changes the result: every official file must match its pinned
sha256 (classic_cnns/data/datasets.py). Order tried: $DATA_MIRROR (a folder or an http(s) URL holding
the same file names, directly or under a <dataset>/ subfolder), then the official URLs. A download
goes to a temporary folder that is moved into place only when every file checks out, so a failure
leaves nothing behind. A local copy (an .npz path or URL) is fetched the same way; its sha256 is
recorded and the dataset is marked non-official.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from classic_cnns.data.datasets import Dataset
from classic_cnns.errors import DiskFull, UserError, check_free_space, is_disk_full

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")

ATTEMPTS_ENV = "DATA_DOWNLOAD_ATTEMPTS"  # tries per URL for a transient failure (default 3)
TIMEOUT_ENV = "DATA_DOWNLOAD_TIMEOUT"  # seconds without data before a try is abandoned (default 30)
BACKOFF_S = 1.0  # wait after the first failed try, doubled after each one

# For tests only: a JSON file whose entries replace OFFICIAL's (urls, files) per dataset,
# so tiny fixture files served on 127.0.0.1 run through the same download code.
SPEC_OVERRIDE_ENV = "CLASSIC_CNN_DATASET_SPEC"


class DownloadError(UserError):
    pass


class Dropped(DownloadError):
    """The server closed the connection before sending the whole file (worth another try)."""


def _setting(env: str, default: float, kind: type) -> float:
    raw = os.environ.get(env, "").strip()
    try:
        value = kind(raw) if raw else default
    except ValueError:
        value = 0
    if value <= 0:
        raise DownloadError(f"{env}={raw!r} must be a positive {kind.__name__}; unset it for the default ({default})")
    return value


def attempts() -> int:
    return _setting(ATTEMPTS_ENV, 3, int)


def timeout_s() -> float:
    return _setting(TIMEOUT_ENV, 30.0, float)


def official_files(ds: Dataset) -> tuple[list[str], dict[str, str]]:
    """(base URLs, file -> sha256) of the dataset's official files; tests may override them."""
    spec = {"urls": list(ds.urls), "files": dict(ds.files)}
    override = os.environ.get(SPEC_OVERRIDE_ENV)
    if override:
        spec.update(json.loads(Path(override).read_text()).get(ds.name, {}))
    return spec["urls"], spec["files"]


def candidate_urls(name: str, filename: str, bases: list[str]) -> list[str]:
    """Mirror first (flat, then <dataset>/ subfolder), then each official base URL."""
    urls = []
    mirror = os.environ.get("DATA_MIRROR", "").strip()
    if mirror:
        for sub in ("", f"{name}/"):
            if "://" in mirror:
                urls.append(urllib.parse.urljoin(mirror.rstrip("/") + "/", sub + filename))
            else:
                urls.append(str(Path(mirror).expanduser() / sub / filename))
    urls += [base.rstrip("/") + "/" + filename for base in bases]
    return urls


def _is_transient(exc: Exception) -> bool:
    """Worth another try: a dropped connection, a timeout, a 5xx, 408 or 429 answer."""
    if isinstance(exc, urllib.error.HTTPError):
        return exc.code in (408, 429) or exc.code >= 500
    return isinstance(exc, (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException, Dropped))


def _open(url: str, offset: int):
    """(readable stream, total size or None, first byte it sends) for an http(s)/file URL or a
    local path; an http(s) download asks for the bytes from `offset` on (HTTP Range) and gets
    them where the server allows, else the whole file."""
    if "://" not in url:
        path = Path(url)
        if not path.is_file():
            raise FileNotFoundError(f"no such file: {path}")
        return path.open("rb"), path.stat().st_size, 0
    if urllib.parse.urlparse(url).scheme not in ("http", "https", "file"):
        raise DownloadError(f"unsupported URL scheme in {url} (use http, https, file or a path)")
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    response = urllib.request.urlopen(request, timeout=timeout_s())  # noqa: S310 (scheme checked above)
    content_range = response.headers.get("Content-Range", "")
    if offset and getattr(response, "status", 200) == 206 and content_range.startswith(f"bytes {offset}-"):
        total = content_range.rpartition("/")[2]
        return response, int(total) if total.isdigit() else None, offset
    size = response.headers.get("Content-Length")
    return response, int(size) if size else None, 0


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_to(url: str, dest: Path, label: str) -> str:
    """Stream url into dest, continuing a partial dest where the server allows; return the sha256
    of the whole file. Shows progress on a terminal."""
    stream, size, start = _open(url, dest.stat().st_size if dest.exists() else 0)
    if size is not None:
        check_free_space(dest.parent, size - start, f"downloading {dest.name} ({size:,} bytes)")
    show = sys.stderr.isatty()
    done = start
    with stream, dest.open("ab" if start else "wb") as out:
        while chunk := stream.read(1 << 20):
            out.write(chunk)
            done += len(chunk)
            if show:
                total = f"/{size / 1e6:.1f}" if size else ""
                print(f"\r  {label}: {done / 1e6:.1f}{total} MB", end="", file=sys.stderr, flush=True)
    if show:
        print(file=sys.stderr)
    if size is not None and done != size:
        raise Dropped(f"connection closed after {done:,} of {size:,} bytes")
    return sha256_of(dest)


def fetch_checked(urls: list[str], dest: Path, expected_sha256: str | None) -> tuple[str, str]:
    """Try each URL in turn until one gives the expected bytes, retrying a transient failure with
    backoff (resuming a partial file with HTTP Range where the server allows).

    Returns (url, sha256). Raises DownloadError naming every URL tried and why it failed, or
    DiskFull; either way dest is removed.
    """
    failures, tries = [], attempts()
    for url in urls:
        dest.unlink(missing_ok=True)
        delay = BACKOFF_S
        for attempt in range(1, tries + 1):
            try:
                sha = fetch_to(url, dest, dest.name)
            except Exception as exc:  # noqa: BLE001 - every failure is reported below
                if isinstance(exc, DiskFull) or is_disk_full(exc):
                    dest.unlink(missing_ok=True)
                    raise exc if isinstance(exc, DiskFull) else DiskFull(dest.parent, what=f"downloading {dest.name}") from exc
                reason = f"{type(exc).__name__}: {exc}"
                if attempt < tries and _is_transient(exc):
                    time.sleep(delay)
                    delay *= 2
                    continue
                dest.unlink(missing_ok=True)
                failures.append(f"{url} ({reason}; {attempt} attempt{'s' * (attempt > 1)})")
                break
            if expected_sha256 and sha != expected_sha256:
                dest.unlink(missing_ok=True)
                failures.append(f"{url} (checksum mismatch for {dest.name}: expected sha256 "
                                f"{expected_sha256}, got {sha})")
                break
            return url, sha
    raise DownloadError(f"could not get {dest.name}; tried: {'; '.join(failures)}. Check the network, or set "
                        "DATA_MIRROR to a folder or http(s) URL holding the official files, or point "
                        "data.<dataset>.source at a local .npz copy.")


def check_npz(path: Path, source: str) -> None:
    import zipfile

    import numpy as np

    if not zipfile.is_zipfile(path):  # np.load would call any other file "pickled data"
        with path.open("rb") as fh:
            head = fh.read(16)
        raise DownloadError(f"{source}: not an .npz (a zip archive of arrays, as numpy.savez writes): it starts "
                            f"with {head!r}; save the arrays with numpy.savez(path, x_train=..., y_train=..., "
                            "x_test=..., y_test=...)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in NPZ_KEYS if k not in npz.files]
            if missing:
                raise DownloadError(f"{source}: the .npz lacks {', '.join(missing)}; it needs "
                                    f"{', '.join(NPZ_KEYS)} as keras.datasets.<name>.load_data() gives")
            for split in ("train", "test"):
                x, y = npz[f"x_{split}"], npz[f"y_{split}"]
                if len(x) != len(y) or x.ndim not in (3, 4):
                    raise DownloadError(f"{source}: x_{split} {x.shape} and y_{split} {y.shape} do not "
                                        "form images (N,H,W[,C]) with one label each")
    except (OSError, ValueError) as exc:
        raise DownloadError(f"{source}: not a readable .npz ({exc})") from None


def download(ds: Dataset, source: str, out_dir: Path, fetch_from: str | None = None) -> dict:
    """Fetch dataset `ds` into out_dir atomically; return its provenance record. `source` is as
    params.yaml names it (and provenance records it); a local copy is read from `fetch_from`."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.parent.glob(f".{ds.name}-*"):  # left by a killed download
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{ds.name}-", dir=out_dir.parent))
    try:
        files = {}
        if source == "official":
            bases, pinned = official_files(ds)
            for filename, sha in pinned.items():
                url, files[filename] = fetch_checked(candidate_urls(ds.name, filename, bases), tmp / filename, sha)
                print(f"{ds.name}: {filename} from {url} (sha256 ok)")
            title = f"{ds.title} (official files)"
        else:
            filename = f"{ds.name}.npz"
            _, files[filename] = fetch_checked([fetch_from or source], tmp / filename, None)
            check_npz(tmp / filename, source)
            print(f"{ds.name}: local copy {source} sha256 {files[filename]}")
            title = f"{ds.title} (non-official local copy)"
        provenance = {"dataset": ds.name, "title": title, "official": source == "official",
                      "source": source, "files": files}
        (tmp / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
        tmp.chmod(0o755)  # mkdtemp makes it private; the output is an ordinary folder
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
        return provenance
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
