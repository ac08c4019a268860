"""flexfix.integration.releases: the classifier, the index parser, reading one member of an archive, the CLI's
refusals, and the recorded tables (data/vllm_releases-cpu.json, data/vllm_release_patch_checks-cpu.json) with
README's copy.

Nothing here touches the network, except the opt-in ``releases`` test (``FLEXFIX_RELEASE_CHECKS=1``), which
downloads and installs the wheels again and compares with what was recorded.
"""

from __future__ import annotations

import http.server
import io
import json
import os
import tarfile
import threading
import urllib.error
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.version import Version

from flexfix.integration.releases import classify, cli, index, patch_checks, survey, transport

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
RELEASES_FILE = DATA / "vllm_releases-cpu.json"
CHECKS_FILE = DATA / "vllm_release_patch_checks-cpu.json"
CHECKED_VERSIONS = ["0.19.1", "0.20.0", "0.20.1", "0.20.2", "0.21.0"]

# --- small sources in the shape of the real ones ---------------------------------------------------------------------

BACKEND = """
class FlexAttentionBackend(AttentionBackend):
    accept_output_buffer: bool = True
{extra}

class FlexAttentionMetadataBuilder(AttentionMetadataBuilder[FlexAttentionMetadata]):
    _cudagraph_support: ClassVar[AttentionCGSupport] = AttentionCGSupport.ALWAYS

    def build(self):
        kv_indices = copy_to_persistent(self.persistent_kv_indices, kv_indices)
"""

AS_STRIDED = """
def copy_to_persistent(dst, src):
    try:
        dst = dst.as_strided(src.shape, src.stride())
    except RuntimeError as e:
        raise RuntimeError(
            f"Fail to re-stride a persistent tensor of shape {dst.shape} "
            f"for a tensor of shape {src.shape}"
        ) from e
    dst.copy_(src)
    return dst
"""

SLICED_TUPLE = """
def copy_to_persistent(dst, src):
    sliced = dst[tuple(slice(0, s) for s in src.shape)]
    sliced.copy_(src)
    return sliced
"""

SLICED_2D = """
def copy_to_persistent(dst, src):
    G, K = src.shape
    dst[:G, :K].copy_(src)
    return dst[:G, :K]
"""

PLAIN_COPY = """
def copy_to_persistent(dst, src):
    dst.copy_(src)
    return dst
"""

BI_TRUE = '''
    @classmethod
    def supports_batch_invariance(cls) -> bool:
        """Yes."""
        return True
'''
BI_FALSE = """
    @classmethod
    def supports_batch_invariance(cls) -> bool:
        return False
"""
BI_COMPUTED = """
    @classmethod
    def supports_batch_invariance(cls) -> bool:
        return envs.SOMETHING and True
"""


def source(copy: str = "", bi: str = "") -> bytes:
    return (copy + BACKEND.format(extra=bi)).encode()


# --- the classifier ------------------------------------------------------------------------------------------------


def test_as_strided_copy_is_affected():
    row = classify.classify_source(source(AS_STRIDED))
    assert row["copy_class"] == "as_strided"
    assert classify.verdict(row["copy_class"]) == "affected"
    assert row["copy_sha256"] and row["file_sha256"]
    assert row["copy_calls"] == 1
    assert (row["bi_override"], row["bi_returns"]) == (False, None)
    assert row["cudagraph_support"] == "AttentionCGSupport.ALWAYS"


@pytest.mark.parametrize("copy", [SLICED_TUPLE, SLICED_2D], ids=["tuple-of-slices", "dst[:G, :K]"])
def test_sliced_copy_is_fixed(copy):
    row = classify.classify_source(source(copy, BI_TRUE))
    assert row["copy_class"] == "sliced"
    assert classify.verdict(row["copy_class"]) == "fixed"
    assert (row["bi_override"], row["bi_returns"]) == (True, True)


def test_copy_without_slice_or_as_strided_is_unknown():
    row = classify.classify_source(source(PLAIN_COPY))
    assert row["copy_class"] == "unknown"
    assert classify.verdict(row["copy_class"]) == "unknown"
    assert "neither" in row["reason"]


def test_no_copy_function_means_no_persistent_buffers():
    row = classify.classify_source(source())
    assert row["copy_class"] == "no_persistent_buffers"
    assert classify.verdict(row["copy_class"]) == "not affected"
    assert row["copy_sha256"] is None
    assert row["has_backend_class"]


def test_a_nested_copy_function_is_not_the_module_level_one():
    nested = "def helper():\n" + "\n".join("    " + line for line in AS_STRIDED.splitlines()) + "\n"
    assert classify.classify_source(source(nested))["copy_class"] == "no_persistent_buffers"


def test_missing_file_means_no_persistent_buffers():
    row = classify.classify_source(None)
    assert row["copy_class"] == "no_persistent_buffers"
    assert row["file_sha256"] is None
    assert classify.MEMBER in row["reason"]


@pytest.mark.parametrize(
    "bi, expected",
    [(BI_TRUE, (True, True)), (BI_FALSE, (True, False)), (BI_COMPUTED, (True, None)), ("", (False, None))],
)
def test_batch_invariance_override(bi, expected):
    row = classify.classify_source(source(SLICED_TUPLE, bi))
    assert (row["bi_override"], row["bi_returns"]) == expected


def test_syntax_error_is_unknown_with_the_line():
    row = classify.classify_source(b"def copy_to_persistent(dst, src):\n    return dst[\n")
    assert row["copy_class"] == "unknown"
    assert "SyntaxError" in row["reason"] and "line" in row["reason"]


def test_undecodable_source_is_unknown():
    row = classify.classify_source(b"\xff\xfe def")
    assert row["copy_class"] == "unknown"
    assert "UnicodeDecodeError" in row["reason"]


def test_copy_hash_covers_the_function_only():
    a = classify.classify_source(source(AS_STRIDED))
    b = classify.classify_source(b"import torch\n\n" + source(AS_STRIDED, BI_TRUE))
    c = classify.classify_source(source(AS_STRIDED.replace("Fail", "Failed")))
    assert a["copy_sha256"] == b["copy_sha256"]
    assert a["file_sha256"] != b["file_sha256"]
    assert a["copy_sha256"] != c["copy_sha256"]


# --- the simple index ----------------------------------------------------------------------------------------------

FILES = "https://files.pythonhosted.org/packages/ab/cd"


def entry(filename: str, sha256: str | None = None, url: str | None = None, **extra) -> dict:
    """One ``files`` entry of a PEP 691 project page."""
    hashes = {"sha256": sha256} if sha256 else {}
    return {"filename": filename, "url": url or f"{FILES}/{filename}", "hashes": hashes, **extra}


INDEX_JSON = {
    "meta": {"api-version": "1.1"},
    "name": "vllm",
    "files": [
        entry("vllm-0.19.1.tar.gz", "aa11"),
        entry("vllm-0.19.1-cp38-abi3-manylinux_2_31_x86_64.whl", "bb22"),
        entry("vllm-0.20.1-cp38-abi3-manylinux_2_35_x86_64.whl", "cc33"),
        entry("vllm-0.20.1-1-cp38-abi3-manylinux_2_35_x86_64.whl", "dd44"),
        entry("vllm-0.20.1-1-cp38-abi3-manylinux_2_35_aarch64.whl"),
        entry("vllm-0.20.1.tar.gz", "ee55"),
        entry("vllm-0.21.0rc1.tar.gz"),
        entry("vllm-0.21.0.dev3-cp38-abi3-manylinux_2_35_x86_64.whl"),
        entry("vllm-0.21.0.tar.gz", "ff66", url="../../packages/ef/vllm-0.21.0.tar.gz", yanked="broken"),
        entry("vllm-0.8.5.post1.tar.gz"),
        entry("vllm-0.22.0-cp38-abi3-manylinux_2_28_aarch64.whl"),
        entry("notes.txt"),
        entry("vllm-latest.tar.gz"),
    ],
}


def parsed_index():
    return index.parse_simple_index(INDEX_JSON, "https://pypi.org/simple/vllm/")


def test_index_parsing_reads_names_urls_hashes_and_build_tags():
    by_name = {f.filename: f for f in parsed_index()}
    assert "notes.txt" not in by_name and "vllm-latest.tar.gz" not in by_name
    tagged = by_name["vllm-0.20.1-1-cp38-abi3-manylinux_2_35_x86_64.whl"]
    assert tagged.version == Version("0.20.1") and tagged.build_tag == (1, "") and tagged.kind == "wheel"
    assert tagged.sha256 == "dd44" and tagged.url.endswith(tagged.filename)
    assert tagged.is_x86_64_wheel
    assert not by_name["vllm-0.20.1-1-cp38-abi3-manylinux_2_35_aarch64.whl"].is_x86_64_wheel
    relative = by_name["vllm-0.21.0.tar.gz"]
    assert relative.url == "https://pypi.org/packages/ef/vllm-0.21.0.tar.gz"
    assert relative.yanked and relative.kind == "sdist"


def test_final_releases_only_from_min_with_reasons():
    found, left_out = index.final_releases(parsed_index(), Version("0.15.0"))
    assert list(found) == [Version(v) for v in ("0.19.1", "0.20.1", "0.21.0", "0.22.0")]
    assert "pre-release" in left_out["0.21.0rc1"] and "pre-release" in left_out["0.21.0.dev3"]
    assert "older than --min 0.15.0" in left_out["0.8.5.post1"]
    found_post, _ = index.final_releases(parsed_index(), Version("0.8.0"))
    assert Version("0.8.5.post1") in found_post  # a post-release is a final release


def test_source_candidates_prefer_the_wheel_pip_picks_then_the_sdist():
    found, _ = index.final_releases(parsed_index(), Version("0.15.0"))
    names = [f.filename for f in index.source_candidates(found[Version("0.20.1")])]
    assert names == ["vllm-0.20.1-1-cp38-abi3-manylinux_2_35_x86_64.whl", "vllm-0.20.1.tar.gz"]
    assert [f.kind for f in index.source_candidates(found[Version("0.20.1")], "sdist")] == ["sdist"]
    assert [f.kind for f in index.source_candidates(found[Version("0.21.0")])] == ["sdist"]


def test_a_release_without_a_readable_archive_is_left_out_with_the_reason():
    found, left_out = index.final_releases(parsed_index(), Version("0.15.0"))
    readable = index.readable_releases(found, "auto", left_out)
    assert Version("0.22.0") not in readable
    assert "no manylinux x86_64 wheel and no .tar.gz sdist" in left_out["0.22.0"] and "aarch64" in left_out["0.22.0"]
    wheel_left_out: dict[str, str] = {}
    assert Version("0.21.0") not in index.readable_releases(found, "wheel", wheel_left_out)
    assert wheel_left_out["0.21.0"].startswith("no wheel on the index")


# --- reading one member --------------------------------------------------------------------------------------------

MEMBER_TEXT = source(AS_STRIDED)


def make_sdist(path: Path, with_member: bool = True) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        entries = {"vllm-0.20.0/PKG-INFO": b"Name: vllm\n", f"vllm-0.20.0/tests/{classify.MEMBER}": b"# a test copy\n"}
        if with_member:
            entries[f"vllm-0.20.0/{classify.MEMBER}"] = MEMBER_TEXT
        entries["vllm-0.20.0/setup.py"] = b"# after the member\n"
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def test_sdist_member_is_extracted(tmp_path):
    url = make_sdist(tmp_path / "vllm-0.20.0.tar.gz").as_uri()
    assert transport.member_from_sdist(url) == MEMBER_TEXT


def test_sdist_without_the_member_gives_none(tmp_path):
    url = make_sdist(tmp_path / "vllm-0.20.0.tar.gz", with_member=False).as_uri()
    assert transport.member_from_sdist(url) is None


def test_a_broken_sdist_is_a_clear_error(tmp_path):
    broken = tmp_path / "vllm-0.20.0.tar.gz"
    broken.write_bytes(b"not gzip at all")
    with pytest.raises(index.ReleaseError, match="not a readable .tar.gz"):
        transport.member_from_sdist(broken.as_uri())


def wheel_bytes(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as wheel:
        for name, data in files.items():
            wheel.writestr(name, data)
    return buffer.getvalue()


class ArchiveServer(http.server.ThreadingHTTPServer):
    """Serves ``files`` (path -> bytes) on 127.0.0.1, with byte ranges when ``ranges`` is true, and records every
    range it answered."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), ArchiveHandler)
        self.files: dict[str, bytes] = {}
        self.content_type = "application/octet-stream"
        self.ranges_honoured = True
        self.accept_ranges: str | None = "bytes"
        self.served: list[tuple[int, int]] = []

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"


class ArchiveHandler(http.server.BaseHTTPRequestHandler):
    server: ArchiveServer

    def log_message(self, *args) -> None:
        pass

    def do_HEAD(self) -> None:
        self.answer(body=False)

    def do_GET(self) -> None:
        self.answer(body=True)

    def answer(self, body: bool) -> None:
        data = self.server.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        wanted = self.headers.get("Range")
        if wanted and self.server.ranges_honoured:
            start, _, end = wanted.removeprefix("bytes=").partition("-")
            start, end = int(start), min(int(end or len(data) - 1), len(data) - 1)
            self.server.served.append((start, end))
            data, status = data[start : end + 1], 206
        else:
            status = 200
        self.send_response(status)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(self.server.files[self.path])}")
        if self.server.accept_ranges:
            self.send_header("Accept-Ranges", self.server.accept_ranges)
        self.send_header("Content-Type", self.server.content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)


@pytest.fixture
def archives():
    """A local HTTP server (loopback only) for archives and index pages."""
    server = ArchiveServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_wheel_member_is_read_with_a_few_ranges(archives):
    padding = {f"vllm/blob{i}.bin": os.urandom(200_000) for i in range(10)}  # ~2 MB the reader must not fetch
    data = wheel_bytes({**padding, classify.MEMBER: MEMBER_TEXT, "vllm-0.20.0.dist-info/RECORD": b""})
    archives.files["/vllm.whl"] = data
    assert transport.member_from_wheel(archives.url("/vllm.whl")) == MEMBER_TEXT
    fetched = sum(end - start + 1 for start, end in archives.served)
    assert archives.served and fetched < len(data) / 2


def test_wheel_without_the_member_gives_none(archives):
    archives.files["/vllm.whl"] = wheel_bytes({"vllm/__init__.py": b""})
    assert transport.member_from_wheel(archives.url("/vllm.whl")) is None


@pytest.mark.parametrize("accept_ranges", [None, "none"], ids=["ignores ranges", "says it has none"])
def test_a_server_without_ranges_is_reported(archives, accept_ranges):
    archives.files["/vllm.whl"] = wheel_bytes({classify.MEMBER: MEMBER_TEXT})
    archives.ranges_honoured, archives.accept_ranges = False, accept_ranges
    with pytest.raises(transport.RangeUnsupported, match="range"):
        transport.member_from_wheel(archives.url("/vllm.whl"))


def test_a_missing_wheel_is_a_clear_error_naming_the_url(archives):
    url = archives.url("/gone.whl")
    with pytest.raises(index.ReleaseError, match=f"cannot fetch {url}"):
        transport.member_from_wheel(url)


def test_the_index_is_read_as_json(archives):
    archives.files["/simple/vllm/"] = json.dumps(INDEX_JSON).encode()
    archives.content_type = "application/vnd.pypi.simple.v1+json"
    page = index.fetch_index(archives.url("/simple/vllm/"))
    assert len(index.parse_simple_index(page, archives.url("/simple/vllm/"))) == 11
    archives.content_type = "text/html"
    with pytest.raises(index.ReleaseError, match="did not answer in JSON"):
        index.fetch_index(archives.url("/simple/vllm/"))


def test_member_cache_is_used_and_remembers_absence(tmp_path, monkeypatch):
    calls = []

    def reader(url, member):
        calls.append(url)
        return None if "absent" in url else MEMBER_TEXT

    monkeypatch.setitem(transport.READERS, "wheel", reader)
    present = index.DistFile("vllm-0.20.0-x.whl", "https://e/present", None, Version("0.20.0"), "wheel")
    absent = index.DistFile("vllm-0.19.1-x.whl", "https://e/absent", None, Version("0.19.1"), "wheel")
    assert transport.cached_member(present, tmp_path) == (MEMBER_TEXT, False)
    assert transport.cached_member(present, tmp_path) == (MEMBER_TEXT, True)
    assert transport.cached_member(absent, tmp_path) == (None, False)
    assert transport.cached_member(absent, tmp_path) == (None, True)
    assert calls == ["https://e/present", "https://e/absent"]


# --- network errors and the command line ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error, text",
    [
        (urllib.error.URLError("[Errno -2] Name or service not known"), "Name or service not known"),
        (urllib.error.HTTPError("https://pypi.org/simple/vllm/", 503, "Service Unavailable", {}, None), "HTTP 503"),
        (TimeoutError("timed out"), "timed out"),
    ],
)
def test_network_error_is_a_clear_error_naming_the_url(monkeypatch, capsys, tmp_path, error, text):
    def failing_urlopen(*args, **kwargs):
        raise error

    monkeypatch.setattr(index.urllib.request, "urlopen", failing_urlopen)
    with pytest.raises(index.ReleaseError, match=f"cannot fetch {index.INDEX_URL}: .*{text}"):
        index.fetch_index()
    assert cli.main(["--out", str(tmp_path), "--cache", str(tmp_path / "cache")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot fetch {index.INDEX_URL}") and text in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "argv, named",
    [
        (["--min", "abc"], "'abc'"),
        (["survey", "--min", "1.x"], "'1.x'"),
        (["check-patch", "--versions", "0.20.0,zz"], "'zz'"),
        (["check-patch", "--versions", ","], "','"),
        (["--source", "egg"], "'egg'"),
    ],
)
def test_bad_arguments_are_refused_by_name(capsys, argv, named):
    with pytest.raises(SystemExit) as stopped:
        cli.main(argv)
    assert stopped.value.code == 2
    assert named in capsys.readouterr().err


def test_no_command_means_survey():
    args = cli.parse_args(["--min", "0.20.0"])
    assert args.command == "survey" and args.min == Version("0.20.0") and args.run is survey.run_survey
    assert cli.parse_args(["check-patch", "--versions", "0.20.0, 0.21.0"]).versions == [
        Version("0.20.0"),
        Version("0.21.0"),
    ]


def fake_row(version, *_args):
    return {"version": str(version), "copy_class": "as_strided", "verdict": "affected", "source_file": "f.whl"}


@pytest.fixture
def offline_index(monkeypatch):
    monkeypatch.setattr(survey, "fetch_index", lambda url, timeout=None: INDEX_JSON)


def read_records(path: Path) -> tuple[list[dict], dict]:
    payload = json.loads(path.read_text())
    return payload["records"], payload["provenance"]


def test_survey_writes_the_final_file_and_removes_the_partial(tmp_path, offline_index, monkeypatch):
    monkeypatch.setattr(survey, "examine_release", fake_row)
    assert cli.main(["--out", str(tmp_path), "--cache", str(tmp_path / "cache")]) == 0
    records, prov = read_records(tmp_path / "vllm_releases-cpu.json")
    assert [r["version"] for r in records] == ["0.19.1", "0.20.1", "0.21.0"]
    assert prov["parameters"]["complete"] is True and prov["device_kind"] == "cpu"
    assert prov["parameters"]["versions_examined"] == ["0.19.1", "0.20.1", "0.21.0"]
    assert set(prov["parameters"]["skipped"]) == {"0.21.0rc1", "0.21.0.dev3", "0.22.0"}
    assert not (tmp_path / "vllm_releases-cpu.partial.json").exists()


def test_interrupted_survey_keeps_what_finished_and_exits_130(tmp_path, offline_index, monkeypatch, capsys):
    def interrupted_at_third(version, *args):
        if version == Version("0.21.0"):
            raise KeyboardInterrupt
        return fake_row(version)

    monkeypatch.setattr(survey, "examine_release", interrupted_at_third)
    assert cli.main(["--out", str(tmp_path), "--cache", str(tmp_path / "cache")]) == 130
    assert "interrupted by SIGINT: kept 2 rows" in capsys.readouterr().err
    records, prov = read_records(tmp_path / "vllm_releases-cpu.partial.json")
    assert [r["version"] for r in records] == ["0.19.1", "0.20.1"] and prov["parameters"]["complete"] is False
    assert not (tmp_path / "vllm_releases-cpu.json").exists()


def test_a_narrower_run_does_not_replace_a_complete_file(tmp_path, offline_index, monkeypatch, capsys):
    monkeypatch.setattr(survey, "examine_release", fake_row)
    assert cli.main(["--out", str(tmp_path), "--cache", str(tmp_path / "cache")]) == 0
    assert cli.main(["--out", str(tmp_path), "--cache", str(tmp_path / "cache"), "--min", "0.20.0"]) == 1
    assert "holds 0.19.1, which this run did not examine: not replaced" in capsys.readouterr().err
    assert len(read_records(tmp_path / "vllm_releases-cpu.json")[0]) == 3
    assert len(read_records(tmp_path / "vllm_releases-cpu.partial.json")[0]) == 2


# --- the expectation checks of check-patch -------------------------------------------------------------------------


def probed(kind: str, **changes) -> dict:
    """A probe result as check-patch records it, for a release of class ``kind`` that behaves as promised."""
    patched = kind == "as_strided"
    row = {
        "version": "0.20.0",
        "ast_class": kind,
        "errors": {},
        "import_error": None,
        "vllm_seen": "0.20.0",
        "imported_from_release": True,
        "release_class": kind,
        "apply": patched,
        "apply_output": [] if patched else ["flexfix: nothing to patch"],
        "copy_after": {"strides": [8, 1], "values_equal": True},
        "bi_after": True,
        "revert": patched,
        "revert_restored_copy": True,
        "revert_restored_bi": True,
        "plugin_log": ["flexfix: one line"],
        "plugin_patched": patched,
    }
    return {**row, **changes}


def test_expectations_hold_for_a_well_behaved_release():
    assert patch_checks.expectation_gaps(probed("as_strided")) == []
    assert patch_checks.expectation_gaps(probed("sliced")) == []
    assert patch_checks.expectation_gaps(probed("no_persistent_buffers")) == []


@pytest.mark.parametrize(
    "release_class, changes, gap",
    [
        ("as_strided", {"copy_after": {"strides": [3, 1], "values_equal": True}}, "expected strides [8, 1]"),
        ("as_strided", {"apply": False}, "apply is False"),
        ("as_strided", {"bi_after": False}, "bi_after is False"),
        ("as_strided", {"revert_restored_copy": False}, "revert_restored_copy"),
        ("sliced", {"apply": True}, "apply() returned True"),
        ("sliced", {"plugin_log": []}, "said 0 lines"),
        ("sliced", {"plugin_patched": True}, "the plugin patched"),
        ("no_persistent_buffers", {"errors": {"plugin_register": "ValueError: x"}}, "plugin_register raised"),
        ("no_persistent_buffers", {"release_class": "as_strided"}, "but the source reads"),
        ("as_strided", {"vllm_seen": "0.20.1"}, "not 0.20.0"),
        ("as_strided", {"imported_from_release": False}, "not from the release's folder"),
        ("as_strided", {"import_error": "ImportError: libcudart"}, "could not be imported"),
    ],
)
def test_expectation_gaps_are_named(release_class, changes, gap):
    assert any(gap in g for g in patch_checks.expectation_gaps(probed(release_class, **changes)))


# --- the recorded tables -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def survey_table():
    records, prov = read_records(RELEASES_FILE)
    return {r["version"]: r for r in records}, prov


@pytest.fixture(scope="module")
def checks_table():
    records, prov = read_records(CHECKS_FILE)
    return {r["version"]: r for r in records}, prov


def test_recorded_survey_has_every_final_release_from_0_15_0(survey_table):
    table, prov = survey_table
    params = prov["parameters"]
    assert prov["device_kind"] == "cpu" and params["complete"] is True and params["index_url"] == index.INDEX_URL
    assert params["min_version"] == "0.15.0" and params["versions_examined"] == list(table)
    assert list(table) == sorted(table, key=Version) and list(table)[0] == "0.15.0"
    assert params["skipped"] == {}  # nothing in range was left out
    for row in table.values():
        assert row["verdict"] == classify.verdict(row["copy_class"])
        assert row["source_url"].startswith("https://files.pythonhosted.org/") and row["source_url"].endswith(
            row["source_file"]
        )


def test_recorded_survey_affected_releases(survey_table):
    table, _ = survey_table
    affected = [v for v, r in table.items() if r["verdict"] == "affected"]
    assert affected == ["0.20.0", "0.20.1", "0.20.2"]
    assert {table[v]["copy_class"] for v in affected} == {"as_strided"}
    assert len({table[v]["copy_sha256"] for v in affected}) == 1  # one function, byte for byte
    assert not any(table[v]["bi_override"] for v in affected)


def test_recorded_survey_fixed_and_unaffected_releases(survey_table):
    table, _ = survey_table
    assert table["0.21.0"]["copy_class"] == "sliced" and table["0.21.0"]["verdict"] == "fixed"
    assert (table["0.21.0"]["bi_override"], table["0.21.0"]["bi_returns"]) == (True, True)
    assert table["0.19.1"]["copy_class"] == "no_persistent_buffers" and table["0.19.1"]["verdict"] == "not affected"
    assert table["0.19.1"]["cudagraph_support"] is None  # the base builder's default, no full CUDA graphs
    newer = [r for v, r in table.items() if Version(v) >= Version("0.21.0")]
    older = [r for v, r in table.items() if Version(v) < Version("0.20.0")]
    assert {r["verdict"] for r in newer} == {"fixed"} and {r["verdict"] for r in older} == {"not affected"}


def test_recorded_0_20_0_is_the_installed_vllm_file(survey_table):
    try:
        installed = metadata.distribution("vllm")
    except metadata.PackageNotFoundError:
        pytest.skip("vLLM is not installed")
    if installed.version != "0.20.0":
        pytest.skip(f"vLLM {installed.version} is installed, not 0.20.0")
    path = Path(installed.locate_file(classify.MEMBER))
    assert classify.classify_source(path.read_bytes())["file_sha256"] == survey_table[0]["0.20.0"]["file_sha256"]


def test_recorded_patch_checks(checks_table, survey_table):
    table, prov = checks_table
    assert list(table) == CHECKED_VERSIONS == prov["parameters"]["versions"]
    assert prov["device_kind"] == "cpu" and prov["parameters"]["complete"] is True
    for version, row in table.items():
        assert row["import_error"] is None and row["vllm_seen"] == version and row["imported_from_release"]
        assert row["release_class"] == row["ast_class"] == survey_table[0][version]["copy_class"]
        assert row["gaps"] == [] and row["errors"] == {}
        assert not row["plugin_raised"] and len(row["plugin_stderr"]) == 1
        assert row["status_before"]["release_class"] == row["release_class"]
    for version in ("0.20.0", "0.20.1", "0.20.2"):
        row = table[version]
        assert row["release_class"] == "as_strided" and row["apply"] is True
        assert row["copy_before"]["strides"] == [3, 1] and not row["copy_before"]["destination_corner_equal"]
        assert row["copy_after"]["strides"] == [8, 1] and row["copy_after"]["values_equal"]
        assert (row["bi_before"], row["bi_after"], row["bi_reverted"]) == (False, True, False)
        assert row["revert"] and row["revert_restored_copy"] and row["revert_restored_bi"]
        assert row["plugin_patched"] and "patched vLLM's FlexAttention backend" in row["plugin_stderr"][0]
    for version, kind in (("0.19.1", "no_persistent_buffers"), ("0.21.0", "sliced")):
        row = table[version]
        assert row["release_class"] == kind and row["apply"] is False and not row["plugin_patched"]
        assert len(row["apply_output"]) == 1 and f"vLLM {version}" in row["plugin_stderr"][0]
    assert table["0.19.1"]["bi_method_present"] is False and table["0.19.1"]["copy_after"] is None
    assert table["0.21.0"]["copy_before"]["strides"] == [8, 1] and table["0.21.0"]["bi_before"] is True


def test_readme_table_is_the_recorded_one():
    records, _ = read_records(RELEASES_FILE)
    readme = (ROOT / "README.md").read_text()
    assert "## Which vLLM releases are affected" in readme
    assert classify.markdown_table(records) in readme


def test_data_readme_lists_both_files():
    text = (DATA / "README.md").read_text()
    assert "| `vllm_releases-cpu.json` |" in text and "| `vllm_release_patch_checks-cpu.json` |" in text


# --- opt-in: the real thing ----------------------------------------------------------------------------------------


@pytest.mark.releases
@pytest.mark.skipif(os.environ.get("FLEXFIX_RELEASE_CHECKS") != "1", reason="set FLEXFIX_RELEASE_CHECKS=1 (network)")
@pytest.mark.timeout(3600)
def test_check_patch_again_against_the_real_wheels(tmp_path, checks_table):
    """Download (or reuse from build/), install and probe the recorded versions again; same outcomes."""
    argv = [
        "check-patch",
        "--versions",
        ",".join(CHECKED_VERSIONS),
        "--out",
        str(tmp_path),
        "--work",
        str(ROOT / "build"),
    ]
    assert cli.main(argv) == 0
    fresh, _ = read_records(tmp_path / "vllm_release_patch_checks-cpu.json")
    recorded = checks_table[0]
    keys = ("release_class", "apply", "bi_after", "copy_after", "revert", "plugin_patched", "gaps")
    for row in fresh:
        assert {k: row[k] for k in keys} == {k: recorded[row["version"]][k] for k in keys}


@pytest.mark.releases
@pytest.mark.skipif(os.environ.get("FLEXFIX_RELEASE_CHECKS") != "1", reason="set FLEXFIX_RELEASE_CHECKS=1 (network)")
def test_survey_again_from_pypi(tmp_path, survey_table):
    """Read PyPI again (cache in tmp_path): every recorded release classifies the same."""
    assert cli.main(["--out", str(tmp_path), "--cache", str(tmp_path / "cache")]) == 0
    fresh = {r["version"]: r for r in read_records(tmp_path / "vllm_releases-cpu.json")[0]}
    for version, row in survey_table[0].items():
        assert (fresh[version]["copy_class"], fresh[version]["file_sha256"]) == (row["copy_class"], row["file_sha256"])
