"""download(): HTTP against a local server (whole, cut-off, 404), Kaggle credential checks, no key leaks."""

from __future__ import annotations

import importlib
import json
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner

from catdog.cli import main
from catdog.data import check_kaggle_credentials, download, kaggle_credentials, prepare
from catdog.errors import CatdogError
from catdog.log import VERBOSE_ENV
from tests.imagegen import make_layout, zip_dir

# catdog.data re-exports the function download(), which shadows the submodule's attribute name.
download_mod = importlib.import_module("catdog.data.download")

KEY = "f00dfacecafe5ecret0123456789abcd"  # recognisable, so any leak is easy to spot
ZIP_NAME = "kagglecatsanddogs_5340.zip"


class _Handler(BaseHTTPRequestHandler):
    """Serves server.routes: path -> (body, cut); cut sends the full Content-Length but half the body."""

    def do_GET(self) -> None:
        route = self.server.routes.get(self.path)
        if route is None:
            self.send_error(404)
            return
        body, cut = route
        self.send_response(200)
        self.send_header("Content-Type", "application/zip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if cut else body)

    def log_message(self, *args) -> None:  # keep test output clean
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.routes = {}
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def petimages_zip(tmp_path) -> bytes:
    src = make_layout(tmp_path / "served", "petimages", 6)
    return zip_dir(src, tmp_path / "served.zip").read_bytes()


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """An empty HOME with no Kaggle credentials anywhere, and no proxy for 127.0.0.1."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var in (
        "KAGGLE_CONFIG_DIR",
        "KAGGLE_USERNAME",
        "KAGGLE_KEY",
        "KAGGLE_API_TOKEN",
        "XDG_CONFIG_HOME",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    return home


def serve(monkeypatch, server, path: str, body: bytes, cut: bool = False) -> str:
    server.routes[path] = (body, cut)
    url = f"http://127.0.0.1:{server.server_port}{path}"
    monkeypatch.setenv("CATDOG_PETIMAGES_URL", url)
    return url


def write_kaggle_json(directory: Path, mode: int, content: str | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "kaggle.json"
    path.write_text(
        content if content is not None else json.dumps({"username": "whiskers", "key": KEY})
    )
    path.chmod(mode)
    return path


# ---------------------------------------------------------------- HTTP


def test_petimages_download_then_prepare(tmp_path, monkeypatch, server, petimages_zip, home, logs):
    serve(monkeypatch, server, f"/{ZIP_NAME}", petimages_zip)
    path = download(source="petimages", dest=tmp_path / "data")

    assert path == tmp_path / "data" / ZIP_NAME
    assert path.read_bytes() == petimages_zip
    assert sorted(p.name for p in path.parent.iterdir()) == [ZIP_NAME]
    assert "downloaded 100% (" in logs.text
    assert sum(sum(c.values()) for c in prepare(path, tmp_path / "prepared").counts.values()) == 12

    server.routes.clear()  # a second call must not touch the network
    assert download(source="petimages", dest=tmp_path / "data") == path
    assert "already downloaded" in logs.text


def test_auto_source_without_credentials_uses_petimages(
    tmp_path, monkeypatch, server, petimages_zip, home, logs
):
    serve(monkeypatch, server, f"/{ZIP_NAME}", petimages_zip)
    assert download(dest=tmp_path / "data") == tmp_path / "data" / ZIP_NAME
    assert (
        "no Kaggle credentials" in logs.text
        and "using Microsoft's PetImages download instead" in logs.text
    )


def test_cut_off_download_leaves_nothing(tmp_path, monkeypatch, server, petimages_zip, home):
    serve(monkeypatch, server, f"/{ZIP_NAME}", petimages_zip, cut=True)
    with pytest.raises(CatdogError, match="DATA=path/to/zip-or-folder"):
        download(source="petimages", dest=tmp_path / "data")
    assert list((tmp_path / "data").iterdir()) == []


def test_http_404(tmp_path, monkeypatch, server, home):
    url = serve(monkeypatch, server, "/elsewhere.zip", b"")
    monkeypatch.setenv("CATDOG_PETIMAGES_URL", url.replace("elsewhere", "missing"))
    with pytest.raises(CatdogError, match="HTTP 404") as excinfo:
        download(source="petimages", dest=tmp_path / "data")
    assert "\n" not in str(excinfo.value)
    assert list((tmp_path / "data").iterdir()) == []


def test_not_a_zip_is_rejected(tmp_path, monkeypatch, server, home):
    serve(monkeypatch, server, f"/{ZIP_NAME}", b"<html>sign in first</html>")
    with pytest.raises(CatdogError, match="not a valid zip"):
        download(source="petimages", dest=tmp_path / "data")
    assert list((tmp_path / "data").iterdir()) == []


def test_unknown_source(tmp_path):
    with pytest.raises(CatdogError, match="kaggle, petimages"):
        download(source="dropbox", dest=tmp_path)


# ---------------------------------------------------------------- Kaggle credentials


def test_kaggle_without_credentials(tmp_path, home):
    assert kaggle_credentials() is None
    with pytest.raises(CatdogError, match=r"kaggle\.json"):
        download(source="kaggle", dest=tmp_path / "data")
    assert not (tmp_path / "data").exists()


def test_kaggle_json_readable_by_others(tmp_path, home, monkeypatch, logs):
    path = write_kaggle_json(home / ".kaggle", 0o644)
    with pytest.raises(CatdogError, match=f"chmod 600 {path}") as excinfo:
        check_kaggle_credentials()
    assert kaggle_credentials() is None
    # Auto mode falls back to PetImages and says why; the unused key shows up nowhere.
    monkeypatch.setattr(download_mod, "http_download", lambda url, path: path)
    download(dest=tmp_path / "data")
    assert "readable by other users, so using Microsoft's PetImages" in logs.text
    assert KEY not in str(excinfo.value) and KEY not in logs.text


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"username": "whiskers"}), 'lacks "username" or "key"'),
    ],
)
def test_kaggle_json_broken(home, content, message):
    write_kaggle_json(home / ".kaggle", 0o600, content)
    with pytest.raises(CatdogError, match=message):
        check_kaggle_credentials()


def test_kaggle_config_dir_is_honoured(tmp_path, home, monkeypatch):
    write_kaggle_json(tmp_path / "elsewhere", 0o600)
    assert kaggle_credentials() is None
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "elsewhere"))
    assert kaggle_credentials() == ("whiskers", KEY)
    check_kaggle_credentials()


def test_env_credentials(home, monkeypatch):
    monkeypatch.setenv("KAGGLE_USERNAME", "whiskers")
    monkeypatch.setenv("KAGGLE_KEY", KEY)
    assert kaggle_credentials() == ("whiskers", KEY)
    check_kaggle_credentials()


def test_kaggle_access_token_is_accepted(tmp_path, home, monkeypatch, logs):
    monkeypatch.setenv("KAGGLE_API_TOKEN", KEY)
    assert kaggle_credentials() is None  # not a username/key pair...
    check_kaggle_credentials()  # ...but kaggle 2.x signs in with it
    monkeypatch.setattr(
        download_mod,
        "_kaggle_api",
        lambda: FakeKaggleApi(error=RuntimeError(f"token {KEY} expired")),
    )
    with pytest.raises(CatdogError) as excinfo:
        download(dest=tmp_path / "data")
    assert "found Kaggle credentials (KAGGLE_API_TOKEN)" in logs.text
    assert KEY not in str(excinfo.value) and KEY not in logs.text


class FakeKaggleApi:
    """Stands in for an authenticated KaggleApi: delivers `zip_bytes`, or raises `error`."""

    def __init__(self, zip_bytes: bytes | None = None, error: Exception | None = None):
        self.zip_bytes, self.error = zip_bytes, error

    def dataset_download_files(self, dataset, path, unzip, quiet):
        if self.error:
            raise self.error
        (Path(path) / f"{dataset.split('/')[-1]}.zip").write_bytes(self.zip_bytes)


def test_kaggle_download_moves_zip_into_dest(tmp_path, home, monkeypatch, petimages_zip, logs):
    monkeypatch.setenv("KAGGLE_USERNAME", "whiskers")
    monkeypatch.setenv("KAGGLE_KEY", KEY)
    monkeypatch.setattr(download_mod, "_kaggle_api", lambda: FakeKaggleApi(petimages_zip))
    path = download(dest=tmp_path / "data")
    assert path == tmp_path / "data" / "dogs-vs-cats.zip" and zipfile.is_zipfile(path)
    assert [p.name for p in (tmp_path / "data").iterdir()] == [
        "dogs-vs-cats.zip"
    ]  # temp folder gone
    assert "found Kaggle credentials" in logs.text and KEY not in logs.text


def horses_zebras_zip(tmp_path: Path) -> bytes:
    """A Kaggle-style dataset of two other classes, <wrapper>/<split>/<class>/*, as a zip."""
    from tests.imagegen import write_jpeg

    src = tmp_path / "horses-src"
    for s, split in enumerate(("train", "test")):
        for c, animal in enumerate(("horses", "zebras")):
            for i in range(4 if split == "train" else 2):
                write_jpeg(src / "horse2zebra" / split / animal / f"{i}.jpg", 100 * s + 10 * c + i)
    return zip_dir(src, tmp_path / "horses.zip").read_bytes()


def test_any_kaggle_dataset_downloads_and_prepares(tmp_path, home, monkeypatch, logs):
    monkeypatch.setenv("KAGGLE_USERNAME", "whiskers")
    monkeypatch.setenv("KAGGLE_KEY", KEY)
    asked = []

    class Api(FakeKaggleApi):
        def dataset_download_files(self, dataset, path, unzip, quiet):
            asked.append(dataset)
            super().dataset_download_files(dataset, path, unzip, quiet)

    monkeypatch.setattr(download_mod, "_kaggle_api", lambda: Api(horses_zebras_zip(tmp_path)))
    result = CliRunner().invoke(
        main,
        ["data", "download", "--dataset", "someone/horse2zebra", "--dest", str(tmp_path / "data")],
    )
    assert result.exit_code == 0, (result.output, result.exception)
    path = Path(result.stdout.strip())
    assert asked == ["someone/horse2zebra"] and path == tmp_path / "data" / "horse2zebra.zip"
    prepared = json.loads(
        CliRunner()
        .invoke(main, ["data", "prepare", str(path), "--dest", str(tmp_path / "prepared")])
        .stdout
    )
    assert prepared["layout"] == "split_folders" and prepared["classes"] == ["horses", "zebras"]
    assert prepared["counts"]["test"] == {"horses": 2, "zebras": 2}


def test_another_kaggle_dataset_needs_credentials_not_petimages(tmp_path, home):
    with pytest.raises(CatdogError, match=r"no Kaggle credentials"):
        download(dataset="someone/horse2zebra", dest=tmp_path / "data")
    with pytest.raises(CatdogError, match=r"drop --source petimages"):
        download(source="petimages", dataset="someone/horse2zebra", dest=tmp_path / "data")
    with pytest.raises(CatdogError, match=r"not a Kaggle dataset slug; pass owner/name"):
        download(dataset="horse2zebra", dest=tmp_path / "data")
    assert not (tmp_path / "data").exists()


def test_kaggle_failure_never_shows_the_key(tmp_path, home, monkeypatch, logs):
    monkeypatch.setenv("KAGGLE_USERNAME", "whiskers")
    monkeypatch.setenv("KAGGLE_KEY", KEY)
    leaky = RuntimeError(f"401 Unauthorized: Basic auth whiskers:{KEY} rejected")
    monkeypatch.setattr(download_mod, "_kaggle_api", lambda: FakeKaggleApi(error=leaky))
    with pytest.raises(
        CatdogError, match="could not download the Kaggle dataset salader/dogs-vs-cats"
    ) as excinfo:
        download(source="kaggle", dest=tmp_path / "data")
    assert KEY not in str(excinfo.value) and KEY not in logs.text
    assert "401 Unauthorized" in str(excinfo.value)
    assert list((tmp_path / "data").iterdir()) == []


CANARY = "canary-5f3e9c7a1d4b8e20"  # a fake key; finding it anywhere is a leak


@pytest.mark.parametrize("outcome", ["fails", "succeeds"])
def test_kaggle_key_canary_in_no_output_and_no_file(
    tmp_path, home, monkeypatch, petimages_zip, logs, capfd, outcome
):
    monkeypatch.setenv("KAGGLE_USERNAME", "whiskers")
    monkeypatch.setenv("KAGGLE_KEY", CANARY)
    monkeypatch.setenv(VERBOSE_ENV, "1")  # debug lines too
    dumps = []

    class CanaryKaggleApi:
        """A client at its worst: dumps its request, key included, where it downloads, and quotes it on failure."""

        def dataset_download_files(self, dataset, path, unzip, quiet):
            dumps.append(Path(path) / "request.log")
            dumps[-1].write_text(
                f"GET /api/v1/datasets/download/{dataset}\nAuthorization: Basic whiskers:{CANARY}\n"
            )
            if outcome == "fails":
                raise RuntimeError(f"401 Unauthorized: whiskers:{CANARY} rejected")
            (Path(path) / "dogs-vs-cats.zip").write_bytes(petimages_zip)

    monkeypatch.setattr(download_mod, "_kaggle_api", CanaryKaggleApi)
    data = tmp_path / "data"
    results = [
        CliRunner().invoke(main, ["data", "download", "--source", "kaggle", "--dest", str(data)])
    ]
    if outcome == "succeeds":
        assert results[0].exit_code == 0, (results[0].output, results[0].exception)
        zip_path = results[0].stdout.strip()
        results.append(
            CliRunner().invoke(
                main, ["data", "prepare", zip_path, "--dest", str(data / "prepared")]
            )
        )
        assert results[1].exit_code == 0 and (data / "prepared" / "manifest.csv").is_file()
    else:
        assert (
            results[0].exit_code == 2
            and "401 Unauthorized: whiskers:*** rejected" in results[0].stderr
        )

    assert dumps, "the fake client never ran, so this test would prove nothing"
    captured = capfd.readouterr()
    for text in [*(r.stdout + r.stderr for r in results), captured.out, captured.err, logs.text]:
        assert CANARY not in text
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(written) > (1 if outcome == "fails" else 10)
    for path in written:  # the client's request.log included
        assert CANARY.encode() not in path.read_bytes(), f"the Kaggle key leaked into {path}"
