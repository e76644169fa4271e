"""Fetch a dataset: any Kaggle dataset with the user's credentials, and by default the Dogs-vs-Cats
photos, from Kaggle when credentials are set up, else Microsoft's PetImages zip.

Downloads land in a temporary name and are renamed only once complete and verified, so a file
under its final name is always whole. Credentials are checked before anything is fetched, and
the Kaggle key never appears in a log line or an error message.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from urllib.parse import urlparse

import requests

from catdog.errors import CatdogError
from catdog.log import get_logger

log = get_logger(__name__)

PETIMAGES_URL = (
    "https://download.microsoft.com/download/3/E/1/3E1C3F21-ECDB-4869-8368-6DEBA77B919F/kagglecatsanddogs_5340.zip"
)
SOURCES = ("kaggle", "petimages")
DEFAULT_DATASET = "salader/dogs-vs-cats"  # Dogs-vs-Cats, catdog's first and best-tested dataset
_TIMEOUT = (15, 60)  # seconds to connect, seconds of silence while reading
_PROGRESS_SECONDS = 2.0
_LOCAL_COPY_HINT = "pass DATA=path/to/zip-or-folder to use a local copy instead"
_GET_TOKEN = "create a token under API at https://www.kaggle.com/settings"
# Sign-ins kaggle 2.x accepts besides a key, all in ~/.kaggle; the last is written by `kaggle auth login`.
_TOKEN_FILES = ("access_token", "access_token.txt", "credentials.json")


# ---------------------------------------------------------------- Kaggle credentials


def _config_dir() -> Path:
    """Where the kaggle package looks for kaggle.json (same precedence as kaggle 1.7+)."""
    if os.environ.get("KAGGLE_CONFIG_DIR"):
        return Path(os.environ["KAGGLE_CONFIG_DIR"])
    legacy = Path.home() / ".kaggle"
    if sys.platform.startswith("linux") and not legacy.exists():
        return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "kaggle"
    return legacy


def _token_source() -> str | None:
    """Where a Kaggle access token or OAuth login is, if any: kaggle 2.x accepts these instead of a key."""
    if os.environ.get("KAGGLE_API_TOKEN"):
        return "KAGGLE_API_TOKEN"
    for name in _TOKEN_FILES:
        path = Path.home() / ".kaggle" / name
        if path.is_file() and path.stat().st_size:
            return str(path)
    return None


def _no_credentials() -> str:
    path = _config_dir() / "kaggle.json" if os.environ.get("KAGGLE_CONFIG_DIR") else "~/.kaggle/kaggle.json"
    return (
        f"no Kaggle credentials ({path} or KAGGLE_USERNAME/KAGGLE_KEY); {_GET_TOKEN},"
        f" save it as {path} and run `chmod 600 {path}`"
    )


def _legacy_credentials() -> tuple[tuple[str, str] | None, str | None]:
    """((username, key), None) when usable, else (None, why not as one sentence)."""
    username, key = os.environ.get("KAGGLE_USERNAME"), os.environ.get("KAGGLE_KEY")
    if username and key:
        return (username, key), None
    path = _config_dir() / "kaggle.json"
    if not path.is_file():
        return None, _no_credentials()
    if os.name != "nt" and path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        return None, f"Kaggle credentials file {path} is readable by other users; run `chmod 600 {path}` and try again"
    try:
        text = path.read_text()
    except OSError as exc:
        return None, f"Kaggle credentials file {path} cannot be read ({exc.strerror}); check its owner and permissions"
    try:
        config = json.loads(text)
    except json.JSONDecodeError:
        # No exception text: it could quote the file, key included.
        return None, f"Kaggle credentials file {path} is not valid JSON; {_GET_TOKEN} to get a fresh one"
    if not isinstance(config, dict) or not config.get("username") or not config.get("key"):
        return None, f'Kaggle credentials file {path} lacks "username" or "key"; {_GET_TOKEN} to get a fresh one'
    return (str(config["username"]), str(config["key"])), None


def kaggle_credentials() -> tuple[str, str] | None:
    """(username, key) from KAGGLE_USERNAME/KAGGLE_KEY or a private kaggle.json, or None."""
    return _legacy_credentials()[0]


def _kaggle_auth_problem() -> str | None:
    if _token_source():
        return None
    return _legacy_credentials()[1]


def check_kaggle_credentials() -> None:
    """Raise CatdogError saying how to fix it unless the kaggle package will be able to authenticate."""
    problem = _kaggle_auth_problem()
    if problem:
        raise CatdogError(problem)


def _kaggle_api():
    """An authenticated KaggleApi; imported only here because `import kaggle` already tries to log in."""
    try:
        from kaggle.api.kaggle_api_extended import KaggleApi
    except ImportError:
        raise CatdogError("the kaggle package is not installed; run `pip install kaggle`") from None
    api = KaggleApi()
    try:
        api.authenticate()
    except SystemExit:  # kaggle calls exit(1) when it finds no credentials
        raise CatdogError(
            f"the kaggle package found no usable credentials; {_GET_TOKEN} and save it as kaggle.json"
        ) from None
    return api


def _scrub(text: str) -> str:
    secrets = [os.environ.get("KAGGLE_API_TOKEN"), (kaggle_credentials() or ("", ""))[1]]
    for secret in filter(None, secrets):
        text = text.replace(secret, "***")
    return text


def _download_kaggle(dataset: str, dest: Path) -> Path:
    final = dest / f"{dataset.rstrip('/').split('/')[-1]}.zip"
    if zipfile.is_zipfile(final):
        log.info("%s is already downloaded; delete it to download again", final)
        return final
    check_kaggle_credentials()
    dest.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".kaggle-", dir=dest))
    try:
        try:
            _kaggle_api().dataset_download_files(dataset, path=str(tmp), unzip=False, quiet=False)
        except CatdogError:
            raise
        except (Exception, SystemExit) as exc:
            # The kaggle client's messages can echo request details; never let the key through.
            first_line = (str(exc).strip().splitlines() or [""])[0][:200]
            reason = _scrub(f"{type(exc).__name__}: {first_line}")
            raise CatdogError(
                f"could not download the Kaggle dataset {dataset} ({reason}); check the dataset name and"
                f" that you accepted its terms on kaggle.com, or {_LOCAL_COPY_HINT}"
            ) from None
        zips = sorted(tmp.glob("*.zip"))
        if len(zips) != 1 or not zipfile.is_zipfile(zips[0]):
            raise CatdogError(f"Kaggle did not deliver one valid zip for {dataset}; try again or {_LOCAL_COPY_HINT}")
        os.replace(zips[0], final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("downloaded Kaggle dataset %s to %s", dataset, final)
    return final


# ---------------------------------------------------------------- plain HTTP


def _network_reason(exc: requests.RequestException) -> str:
    if isinstance(exc, requests.Timeout):
        return "the server stopped answering"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return "the connection broke off mid-transfer"
    if isinstance(exc, requests.ConnectionError):
        return "could not connect"
    return type(exc).__name__


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f}"


def http_download(url: str, path: Path, *, chunk_size: int = 1 << 20) -> Path:
    """Stream URL to PATH via PATH.part, verifying length (and zip integrity for .zip names)."""
    path = Path(path)
    is_zip = path.suffix.lower() == ".zip"
    if path.is_file():
        if not is_zip or zipfile.is_zipfile(path):
            log.info("%s is already downloaded; delete it to download again", path)
            return path
        log.info("%s is not a valid zip; downloading it again", path)
    part = path.with_name(path.name + ".part")
    path.parent.mkdir(parents=True, exist_ok=True)
    done = False
    try:
        with requests.get(url, stream=True, timeout=_TIMEOUT) as response:
            response.raise_for_status()
            # With a Content-Encoding, Content-Length counts compressed bytes, not what we write.
            length = response.headers.get("Content-Length")
            total = int(length) if length and not response.headers.get("Content-Encoding") else None
            written, started = 0, time.monotonic()
            last_report = started
            with open(part, "wb") as out:
                for chunk in response.iter_content(chunk_size):
                    out.write(chunk)
                    written += len(chunk)
                    now = time.monotonic()
                    if now - last_report >= _PROGRESS_SECONDS or written == total:
                        last_report = now
                        rate = f"{_mb(int(written / max(now - started, 1e-6)))} MB/s"
                        if total:
                            log.info(
                                "downloaded %d%% (%s/%s MB, %s)", 100 * written // total, _mb(written), _mb(total), rate
                            )
                        else:
                            log.info("downloaded %s MB (%s)", _mb(written), rate)
        # urllib3 2 raises on a short body itself; this also covers setups that do not enforce it.
        if total is not None and written != total:
            raise CatdogError(
                f"the download from {url} was cut off after {_mb(written)} of {_mb(total)} MB;"
                f" run it again or {_LOCAL_COPY_HINT}"
            )
        if is_zip and not zipfile.is_zipfile(part):
            raise CatdogError(
                f"the file downloaded from {url} is not a valid zip archive; run it again or {_LOCAL_COPY_HINT}"
            )
        os.replace(part, path)
        done = True
    except requests.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "error"
        reason = exc.response.reason if exc.response is not None else str(exc)
        raise CatdogError(f"could not download {url} (HTTP {status} {reason}); {_LOCAL_COPY_HINT}") from None
    except requests.RequestException as exc:
        raise CatdogError(f"could not download {url} ({_network_reason(exc)}); {_LOCAL_COPY_HINT}") from None
    except OSError as exc:
        raise CatdogError(
            f"could not write {part} ({exc.strerror or exc}); free some disk space or choose another folder"
        ) from None
    finally:
        if not done:
            part.unlink(missing_ok=True)
    return path


# ---------------------------------------------------------------- entry point


def download(source: str | None = None, dataset: str = DEFAULT_DATASET, dest: str | Path = "data") -> Path:
    """Download a dataset into DEST and return the zip's path.

    source: "kaggle" (DATASET, any Kaggle dataset slug owner/name, via the Kaggle API),
    "petimages" (Microsoft's Dogs-vs-Cats zip, URL overridable with CATDOG_PETIMAGES_URL) or None:
    Kaggle when its credentials are usable or another DATASET than the default is asked for.
    """
    dest = Path(dest)
    other = dataset != DEFAULT_DATASET
    if other and source == "petimages":
        raise CatdogError(f"--dataset {dataset} is a Kaggle dataset, and PetImages is a download of its own;"
                          f" drop --source petimages to fetch {dataset} from Kaggle")
    if other and "/" not in dataset.strip("/"):
        raise CatdogError(f"--dataset {dataset!r} is not a Kaggle dataset slug; pass owner/name, as in the"
                          f" dataset's kaggle.com/datasets/owner/name address")
    if source is None:
        problem = _kaggle_auth_problem()
        if problem is None or other:
            source = "kaggle"
            if problem is None:
                log.info("found Kaggle credentials (%s), downloading %s from Kaggle",
                         _token_source() or "API key", dataset)
        else:
            source = "petimages"
            log.info("%s, so using Microsoft's PetImages download instead", problem.split(";", 1)[0])
    if source == "kaggle":
        return _download_kaggle(dataset, dest)
    if source == "petimages":
        url = os.environ.get("CATDOG_PETIMAGES_URL") or PETIMAGES_URL
        return http_download(url, dest / (Path(urlparse(url).path).name or "petimages.zip"))
    raise CatdogError(f"unknown download source {source!r}; use one of {', '.join(SOURCES)}")
