"""Stage `download`: fetch one dataset's files into data/raw/<dataset>/, checked and atomic.

    python -m stages.download mnist

params.yaml `data.<dataset>`: `official` (the published files, pinned sha256, $DATA_MIRROR tried
first) or a local copy (an .npz path relative to the project, or an http(s) URL). A dropped
connection, a timeout or a 5xx answer is retried ($DATA_DOWNLOAD_ATTEMPTS tries per URL, default 3;
$DATA_DOWNLOAD_TIMEOUT seconds, default 30), continuing where it stopped if the server allows.
"""

from __future__ import annotations

import sys
from pathlib import Path

from classic_cnns.data import datasets
from classic_cnns.data.download import download
from classic_cnns.data.prepared import local_source
from classic_cnns.errors import UserError, run_stage
from classic_cnns.params import load_or_exit, stage_args
from classic_cnns.paths import RAW


def main(argv: list[str]) -> int:
    params = load_or_exit()
    name = stage_args("download", argv, dataset=params.data).dataset
    source = params.data[name]
    if "://" not in source.source and Path(source.source).is_absolute():
        print(
            f"error: params.yaml: 'data.{name}.source' is the absolute path {source.source}; params.yaml and "
            f"dvc.lock are committed, so link or copy the file under data/external/ (git-ignored) and name it "
            f"relative to the project, e.g. data/external/{Path(source.source).name}",
            file=sys.stderr,
        )
        return 2
    try:
        download(datasets.get(name, source), source.source, RAW / name, fetch_from=local_source(source.source))
    except UserError as exc:
        print(f"error: {name}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(run_stage(main))
