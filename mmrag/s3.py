"""`mmrag sync s3://bucket/prefix`: the objects under a prefix of an S3-compatible bucket, as files for the sync.

boto3 finds the endpoint, credentials and region the usual way: `AWS_ENDPOINT_URL` (an S3-compatible server such as
MinIO, Ceph or moto), `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`, `AWS_DEFAULT_REGION`, or a profile. An object's
path in the source is its key without the prefix; keys ending in `/` (folder markers) are left out. Every selected
object is downloaded into a temporary folder to be sniffed and hashed (S3's ETag is not a SHA-256), so a sync reads
the whole prefix each time: fine for manuals, not for a data lake.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from mmrag.files import LocalFile, Selection, Skipped, take, wanted_by

_S3_URL = re.compile(r"^s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:/(.*))?\Z")


class S3Error(Exception):
    """The bucket cannot be listed or read; the message is one line that names it."""


def is_s3_url(text: str) -> bool:
    return text.startswith("s3://")


def parse(url: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix` -> ("bucket", "some/prefix/"); the prefix is empty or ends with '/'."""
    match = _S3_URL.match(url)
    if match is None:
        raise S3Error(f"{url!r} is not an S3 URL: write s3://BUCKET or s3://BUCKET/PREFIX")
    prefix = (match.group(2) or "").strip("/")
    return match.group(1), f"{prefix}/" if prefix else ""


def default_source_name(url: str) -> str:
    """The prefix's last folder, else the bucket's name: what `--source` defaults to."""
    bucket, prefix = parse(url)
    return prefix.rstrip("/").rsplit("/", 1)[-1] or bucket


def select(url: str, workdir: Path, include: Sequence[str] = (), exclude: Sequence[str] = ()) -> Selection:
    """Download the selected objects under the URL's prefix into `workdir`, hashed; those skipped with why."""
    try:
        import boto3
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:
        raise S3Error("syncing an S3 bucket needs boto3: pip install 'mmrag[s3]' (or boto3)") from None

    bucket, prefix = parse(url)
    selected = wanted_by(include, exclude)
    files: list[LocalFile] = []
    skipped: list[Skipped] = []
    try:
        s3 = boto3.client("s3")
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                rel = obj["Key"][len(prefix) :]
                if not rel or rel.endswith("/") or not selected(rel):
                    continue
                local = (workdir / rel).resolve()
                if not local.is_relative_to(workdir.resolve()):  # a key with '..' (hidden names are left out anyway)
                    skipped.append(Skipped(rel, "its key leaves the prefix"))
                    continue
                local.parent.mkdir(parents=True, exist_ok=True)
                s3.download_file(bucket, obj["Key"], str(local))
                got = take(rel, local)
                (files if isinstance(got, LocalFile) else skipped).append(got)  # type: ignore[arg-type]
    except (BotoCoreError, ClientError) as e:
        raise S3Error(f"{url}: {e}") from None
    return Selection(sorted(files, key=lambda f: f.path), sorted(skipped, key=lambda s: s.path))
