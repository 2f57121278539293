"""Fetching a dataset's files: official URLs (mirror first), pinned checksums, retries, atomic.

Where the bytes come from never changes the result: every official file must match its pinned
sha256 (classic_cnns/data/datasets.py). Order tried: $DATA_MIRROR (a folder or an http(s) URL holding
the same file names, directly or under a <dataset>/ subfolder), then the official URLs. A download
goes to a temporary folder that is moved into place only when every file checks out, so a failure
leaves nothing behind. A local copy (an .npz path or URL) is fetched the same way; its sha256 is
recorded and the dataset is marked non-official.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import urllib.parse
from pathlib import Path

import urllib3
from urllib3.exceptions import MaxRetryError
from urllib3.util import Retry

from classic_cnns.data.datasets import Dataset
from classic_cnns.errors import DiskFull, UserError, check_free_space, is_disk_full
from classic_cnns.outputs import sha256

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


TRANSIENT_STATUS = (408, 429, 500, 502, 503, 504)  # answers worth another try
POOL = urllib3.PoolManager()


def _retry() -> Retry:
    """Another try for a refused or dropped connection, a timeout or a transient answer, up to
    $DATA_DOWNLOAD_ATTEMPTS tries in all, waiting BACKOFF_S, then twice as long after each failure."""
    return Retry(
        total=attempts() - 1,
        status_forcelist=TRANSIENT_STATUS,
        backoff_factor=BACKOFF_S,
        respect_retry_after_header=False,
    )


def _copy(stream, dest: Path, append: bool, size: int | None, label: str) -> int:
    """Stream into dest (appending to what it holds, or from the start); the bytes it holds now.
    Shows progress on a terminal."""
    if size is not None:
        check_free_space(
            dest.parent, size - (dest.stat().st_size if append else 0), f"downloading {dest.name} ({size:,} bytes)"
        )
    show = sys.stderr.isatty()
    with dest.open("ab" if append else "wb") as out:
        while chunk := stream.read1(1 << 20) if hasattr(stream, "read1") else stream.read(1 << 20):
            out.write(chunk)
            if show:
                total = f"/{size / 1e6:.1f}" if size else ""
                print(f"\r  {label}: {out.tell() / 1e6:.1f}{total} MB", end="", file=sys.stderr, flush=True)
        done = out.tell()
    if show:
        print(file=sys.stderr)
    return done


def _fetch_http(url: str, dest: Path) -> int:
    """Download url into dest with urllib3's retries; a connection dropped mid-file is another
    try that asks for the missing bytes (HTTP Range) where the server allows, else the whole file.
    Returns the number of tries it took; a failure carries it as `.tries`."""
    retry, timeout = _retry(), urllib3.Timeout(connect=timeout_s(), read=timeout_s())
    while True:
        offset = dest.stat().st_size if dest.exists() else 0
        try:
            response = POOL.request(
                "GET",
                url,
                headers={"Range": f"bytes={offset}-"} if offset else {},
                preload_content=False,
                retries=retry,
                timeout=timeout,
            )
            retry = response.retries or retry
            if response.status >= 400:
                raise DownloadError(f"HTTP {response.status} {response.reason}")
            content_range = response.headers.get("Content-Range", "")
            resumed = response.status == 206 and content_range.startswith(f"bytes {offset}-")
            total = content_range.rpartition("/")[2] if resumed else response.headers.get("Content-Length")
            size = int(total) if total and total.isdigit() else None
            with response:
                done = _copy(response, dest, resumed, size, dest.name)
            if size is not None and done != size:
                raise Dropped(f"connection closed after {done:,} of {size:,} bytes")
            return len(retry.history) + 1
        except MaxRetryError as exc:  # urllib3's tries are spent
            raise _tried(DownloadError(f"{type(exc.reason).__name__}: {exc.reason}"), attempts()) from None
        except (urllib3.exceptions.HTTPError, Dropped, OSError) as exc:
            if isinstance(exc, OSError) and is_disk_full(exc):
                raise
            try:
                retry = retry.increment("GET", url, error=_as_read_error(exc))
            except MaxRetryError:
                raise _tried(DownloadError(f"{type(exc).__name__}: {exc}"), attempts()) from None
            except (urllib3.exceptions.HTTPError, Dropped, OSError):
                raise _tried(DownloadError(f"{type(exc).__name__}: {exc}"), len(retry.history) + 1) from None
            retry.sleep()
        except DownloadError as exc:
            raise _tried(exc, len(retry.history) + 1) from None


def _as_read_error(exc: Exception) -> Exception:
    """A dropped body as the read error urllib3's Retry counts."""
    return exc if isinstance(exc, urllib3.exceptions.HTTPError) else urllib3.exceptions.ProtocolError(str(exc), exc)


def _tried(exc: DownloadError, tries: int) -> DownloadError:
    exc.tries = tries
    return exc


def fetch_to(url: str, dest: Path) -> tuple[str, int]:
    """Fetch url (http(s), file:// or a local path) into dest: (sha256 of the file, tries it took)."""
    if "://" not in url or url.startswith("file://"):
        path = Path(urllib.parse.urlparse(url).path if "://" in url else url)
        if not path.is_file():
            raise _tried(DownloadError(f"FileNotFoundError: no such file: {path}"), 1)
        with path.open("rb") as stream:
            _copy(stream, dest, False, path.stat().st_size, dest.name)
        return sha256(dest), 1
    if urllib.parse.urlparse(url).scheme not in ("http", "https"):
        raise _tried(DownloadError(f"unsupported URL scheme in {url} (use http, https, file or a path)"), 1)
    tries = _fetch_http(url, dest)
    return sha256(dest), tries


def fetch_checked(urls: list[str], dest: Path, expected_sha256: str | None) -> tuple[str, str]:
    """Try each URL in turn until one gives the expected bytes (each with its retries).

    Returns (url, sha256). Raises DownloadError naming every URL tried and why it failed, or
    DiskFull; either way dest is removed.
    """
    failures = []
    attempts()  # a bad setting is named before anything is fetched
    for url in urls:
        dest.unlink(missing_ok=True)
        try:
            sha, tries = fetch_to(url, dest)
        except DiskFull:
            dest.unlink(missing_ok=True)
            raise
        except OSError as exc:
            dest.unlink(missing_ok=True)
            if is_disk_full(exc):
                raise DiskFull(dest.parent, what=f"downloading {dest.name}") from exc
            raise
        except DownloadError as exc:
            dest.unlink(missing_ok=True)
            tries = getattr(exc, "tries", 1)
            failures.append(f"{url} ({exc}; {tries} attempt{'s' * (tries > 1)})")
            continue
        if expected_sha256 and sha != expected_sha256:
            dest.unlink(missing_ok=True)
            failures.append(f"{url} (checksum mismatch for {dest.name}: expected sha256 {expected_sha256}, got {sha})")
            continue
        return url, sha
    raise DownloadError(
        f"could not get {dest.name}; tried: {'; '.join(failures)}. Check the network, or set "
        "DATA_MIRROR to a folder or http(s) URL holding the official files, or point "
        "data.<dataset>.source at a local .npz copy."
    )


def check_npz(path: Path, source: str) -> None:
    import zipfile

    import numpy as np

    if not zipfile.is_zipfile(path):  # np.load would call any other file "pickled data"
        with path.open("rb") as fh:
            head = fh.read(16)
        raise DownloadError(
            f"{source}: not an .npz (a zip archive of arrays, as numpy.savez writes): it starts "
            f"with {head!r}; save the arrays with numpy.savez(path, x_train=..., y_train=..., "
            "x_test=..., y_test=...)"
        )
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in NPZ_KEYS if k not in npz.files]
            if missing:
                raise DownloadError(
                    f"{source}: the .npz lacks {', '.join(missing)}; it needs "
                    f"{', '.join(NPZ_KEYS)} as keras.datasets.<name>.load_data() gives"
                )
            for split in ("train", "test"):
                x, y = npz[f"x_{split}"], npz[f"y_{split}"]
                if len(x) != len(y) or x.ndim not in (3, 4):
                    raise DownloadError(
                        f"{source}: x_{split} {x.shape} and y_{split} {y.shape} do not "
                        "form images (N,H,W[,C]) with one label each"
                    )
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
            filename = Path(urllib.parse.urlsplit(source).path).name or f"{ds.name}.npz"  # the copy keeps its own name
            _, files[filename] = fetch_checked([fetch_from or source], tmp / filename, None)
            check_npz(tmp / filename, source)
            print(f"{ds.name}: local copy {source} sha256 {files[filename]}")
            title = f"{ds.title} (non-official local copy)"
        provenance = {
            "dataset": ds.name,
            "title": title,
            "official": source == "official",
            "source": source,
            "files": files,
        }
        (tmp / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
        tmp.chmod(0o755)  # mkdtemp makes it private; the output is an ordinary folder
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
        return provenance
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
