"""The run report: one self-contained page whose counts equal the tables', checked in a real headless Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from audio_factory import write_constant, write_noise, write_tone

from mgr_batch.cli import main

pytestmark = pytest.mark.usefixtures("ray_cluster")

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def tagged(tmp_path_factory, tiny_model) -> Path:
    """Songs of 3 to 40 s, two broken files and a silent one, tagged with ``--report`` and ``--embeddings``
    (stored vectors, for the catalog map)."""
    root = tmp_path_factory.mktemp("report")
    src, out = root / "in", root / "out"
    for i, seconds in enumerate((3.0, 4.0, 6.5, 9.0, 40.0)):
        write_tone(src / "a" / f"tone{i}.wav", seconds=seconds, freq=200.0 + 90 * i)
    write_noise(src / "b" / "noise.flac", seconds=12.0)
    (src / "b" / "broken1.mp3").write_bytes(b"no audio here")
    (src / "b" / "broken2.wav").write_bytes(b"RIFF nope")
    write_constant(src / "b" / "silent.wav", seconds=2.0, value=0.0)
    argv = ["tag", str(src), "-o", str(out), "--model", tiny_model, "--songs-per-task", "2", "--report", "--embeddings"]
    assert main(argv) == 0
    return out


class Counts(HTMLParser):
    """The ``data-count`` cells, image sources and link targets of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: dict[str, int] = {}
        self.images: list[str] = []
        self.links: list[str] = []
        self.scripts = 0
        self._key: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "td" and "data-count" in a:
            self._key = a["data-count"]
        if tag == "img":
            self.images.append(a.get("src", ""))
        if tag in ("script", "link", "iframe") or (tag == "a" and "href" in a):
            self.scripts += tag == "script"
            self.links.append(a.get("href") or a.get("src") or tag)

    def handle_data(self, data):
        if self._key is not None:
            self.counts[self._key] = int(data)
            self._key = None


def parse(html: str) -> Counts:
    p = Counts()
    p.feed(html)
    return p


def expected_counts(out: Path) -> dict[str, int]:
    songs, errors = pd.read_parquet(out / "songs"), pd.read_parquet(out / "errors")
    counts = {"songs": len(songs), "errors": len(errors)}
    counts |= {f"error:{k}": int(v) for k, v in errors["error_type"].value_counts().items()}
    counts |= {f"genre:{k}": int(v) for k, v in songs["genre"].value_counts().items()}
    return counts


def test_the_page_is_self_contained_and_its_counts_are_the_tables(tagged):
    html = (tagged / "report" / "index.html").read_text()
    page = parse(html)
    want = expected_counts(tagged)
    assert {k: v for k, v in page.counts.items() if v or k in want} == want
    assert want["songs"] == 6 and want["errors"] == 3 and len({k for k in want if k.startswith("error:")}) == 2
    assert page.links == [] and page.scripts == 0 and "http://" not in html and "https://" not in html
    assert len(page.images) >= 6 and all(src.startswith("data:image/png;base64,") for src in page.images)
    for heading in (
        "Files by status",
        "Errors by type",
        "Genres",
        "Catalog map",
        "Durations",
        "Clip genres over time",
        "Model",
        "Run",
    ):
        assert f"<h2>{heading}" in html
    assert "broken1.mp3" in html and "silent.wav" in html  # example paths per error type
    assert "no `uncertain` flag" in html
    assert 'alt="Catalog map: 6 of 6 songs, stored vectors by PCA"' in html
    md = (tagged / "report" / "report.md").read_text()
    figures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(figures) == len(page.images) and all((tagged / "report" / f).is_file() for f in figures)


def test_the_share_of_uncertain_songs_where_the_table_has_it(tagged, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(tagged, out)
    flagged = 0
    for part in sorted((out / "songs").glob("*.parquet")):
        t = pq.read_table(part)
        flags = pa.array([(i % 2) == 0 for i in range(t.num_rows)])
        flagged += sum(flags.to_pylist())
        pq.write_table(t.set_column(t.schema.get_field_index("uncertain"), "uncertain", flags), part)
    assert main(["report", str(out), "--songs-per-genre", "2", "--timelines", "1"]) == 0
    html = (out / "report" / "index.html").read_text()
    assert "share uncertain" in html
    assert f"{flagged / 6:.1%} of the tagged songs" in html
    assert "songs the model flags uncertain drawn as ×" in html  # on the catalog map


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip("no Chromium: install Debian's chromium package (.ci/run does)")


def test_the_page_in_a_headless_browser(tagged, tmp_path):
    chromium = _chromium()
    page = (tagged / "report" / "index.html").read_text()
    # The test's own probe (the page has no script): after load, write what the browser made of each image.
    probe = (
        "<script>window.addEventListener('load',()=>{document.body.setAttribute('data-widths',"
        "Array.from(document.images).map(i=>i.complete?i.naturalWidth:0).join(','));"
        "document.body.setAttribute('data-height',document.documentElement.scrollHeight)})</script>"
    )
    probed = tmp_path / "probed.html"
    probed.write_text(page.replace("</body>", probe + "</body>"))
    flags = [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000"]
    dom = subprocess.run(
        [chromium, *flags, "--dump-dom", probed.as_uri()], capture_output=True, text=True, timeout=120
    ).stdout
    widths = re.search(r'data-widths="([^"]*)"', dom)
    assert widths, "the page did not load in Chromium"
    widths = [int(w) for w in widths.group(1).split(",")]
    assert len(widths) == len(parse(page).images) and all(w > 0 for w in widths)
    assert int(re.search(r'data-height="(\d+)"', dom).group(1)) > 2000  # rendered, figures laid out
    shown = {k: v for k, v in parse(dom).counts.items()}
    want = expected_counts(tagged)
    assert {k: v for k, v in shown.items() if v or k in want} == want
    shot = tmp_path / "report.png"
    subprocess.run(
        [
            chromium,
            *flags,
            "--window-size=1200,3000",
            f"--screenshot={shot}",
            (tagged / "report" / "index.html").as_uri(),
        ],
        capture_output=True,
        timeout=120,
    )
    assert shot.is_file() and shot.stat().st_size > 20_000
    if os.environ.get("MGR_BATCH_REPORT_SCREENSHOT"):  # where to keep it, to look at by eye
        shutil.copy(shot, os.environ["MGR_BATCH_REPORT_SCREENSHOT"])


def test_report_of_an_evaluate_output(tmp_path, tiny_model):
    data = tmp_path / "data"
    for i in range(2):
        write_tone(data / "blues" / f"blues.{i:05d}.wav", seconds=3.5, freq=200.0 + 40 * i)
        write_noise(data / "rock" / f"rock.{i:05d}.wav", seconds=3.5, seed=i)
    out = tmp_path / "eval"
    assert main(["evaluate", str(data), "-o", str(out), "--model", tiny_model]) == 0
    assert main(["report", str(out)]) == 0
    html = (out / "report" / "index.html").read_text()
    assert "<h2>Evaluation" in html and "Confusion matrix" in html and "Reliability diagram" in html
    assert parse(html).counts["songs"] == 4


def test_report_on_s3_and_bad_arguments(tmp_path, tiny_model, s3_server, s3_bucket, capsys):
    src = tmp_path / "in"
    for i in range(3):
        write_tone(src / f"t{i}.wav", seconds=3.0 + i, freq=300.0 + 20 * i)
    out = f"{s3_bucket}/tags"
    tag = ["tag", str(src), "-o", out, "--model", tiny_model, "--songs-per-task", "1", *s3_server.cli_options()]
    assert main([*tag, "--compact", "--report"]) == 0
    assert len(s3_server.fs.glob(f"{out}/songs/*.parquet")) == 1  # compacted at the end of the run
    assert s3_server.fs.exists(f"{out}/report/index.html")
    assert main(tag) == 0  # a rerun skips every compacted song
    assert json.loads(s3_server.fs.cat_file(f"{out}/run.json"))["n_skipped"] == 3
    assert main(["report", out, *s3_server.cli_options()]) == 0
    html = s3_server.fs.cat_file(f"{out}/report/index.html").decode()
    assert parse(html).counts["songs"] == 3
    assert s3_server.fs.exists(f"{out}/report/report.md") and s3_server.fs.exists(f"{out}/report/genres.png")
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "holds no songs/ or errors/" in capsys.readouterr().err
