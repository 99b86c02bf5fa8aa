"""Every dashboard page, headless (AppTest), on real run records, an empty root and broken runs."""

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image
from streamlit import config
from streamlit.testing.v1 import AppTest

APP = Path(__file__).resolve().parents[1] / "dashboard" / "app.py"
PAGES = (
    "pages_curves.py",
    "pages_classes.py",
    "pages_saliency.py",
    "pages_image.py",
    "pages_data.py",
)
TIMEOUT = 120  # the first run of a page imports torch and captum


@pytest.fixture(autouse=True)
def loopback():
    """server.address as the project's .streamlit/config.toml sets it, wherever pytest runs."""
    before = config.get_option("server.address")
    config.set_option("server.address", "127.0.0.1")
    yield
    config.set_option("server.address", before)


def app(root: Path, monkeypatch) -> AppTest:
    """The dashboard pointed at a runs root through $LAB_RUNS_ROOT, after its first run."""
    monkeypatch.setenv("LAB_RUNS_ROOT", str(root))
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    assert not at.exception, at.exception
    return at


def page(at: AppTest, name: str) -> AppTest:
    """Switch to a page, run it and require that it raised nothing."""
    at.switch_page(name).run()
    assert not at.exception, (name, [e.value for e in at.exception])
    return at


def text(at: AppTest) -> str:
    """Every markdown, caption, info, warning and error text on the page."""
    kinds = ("markdown", "caption", "info", "warning", "error", "title", "subheader")
    return "\n".join(str(e.value) for kind in kinds for e in at.get(kind))


def test_every_page_runs_on_real_runs(dashboard_runs, monkeypatch):
    at = app(dashboard_runs, monkeypatch)
    assert len(at.dataframe[0].value) == 7
    assert len(page(at, "pages_curves.py").get("plotly_chart")) == 3
    at = page(at, "pages_classes.py")
    assert len(at.get("plotly_chart")) == 1
    assert at.get("image"), "no example images of confused classes"
    at = page(at, "pages_saliency.py")
    assert len(at.get("image")) >= 4  # the image and three maps
    at = page(at, "pages_data.py")
    assert len(at.get("image")) == 4  # one row of samples a class
    page(at, "pages_overview.py")


def test_overview_holds_the_summary_numbers(dashboard_runs, monkeypatch):
    at = app(dashboard_runs, monkeypatch)
    table = at.dataframe[0].value.set_index("run")
    for run in ("base-2ep", "squeeze-1ep"):
        summary = json.loads((dashboard_runs / run / "summary.json").read_text())
        for key in ("train_top1", "val_top1", "test_top1", "test_top5", "params", "macs"):
            assert table.loc[run, key] == pytest.approx(summary[key])
    assert table.loc["base-2ep", "study_test_top1"] == 43.04
    gap = table.loc["base-2ep", "test_top1"] - 43.04
    assert table.loc["base-2ep", "gap_test_top1"] == pytest.approx(gap)
    assert table.loc["failed", "status"] == "failed"
    assert table.loc["broken", "status"] == "broken"
    problems = at.dataframe[1].value.set_index("run")
    assert "missing.zip" in problems.loc["failed", "error"]
    assert "summary.json" in problems.loc["broken", "error"]


def test_overview_filters_change_the_table(dashboard_runs, monkeypatch):
    at = app(dashboard_runs, monkeypatch)
    at.multiselect(key="overview_status").set_value(["finished"]).run()
    assert set(at.dataframe[0].value["run"]) == {"base-2ep", "last-two", "squeeze-1ep"}
    at.multiselect(key="overview_model").set_value(["squeezenet"]).run()
    assert list(at.dataframe[0].value["run"]) == ["squeeze-1ep"]
    at.multiselect(key="overview_model").set_value(["baseline", "squeezenet"]).run()
    at.selectbox(key="overview_metric").set_value("test_top1").run()
    best = at.dataframe[0].value["test_top1"].max()
    at.number_input(key="overview_threshold").set_value(best + 0.01).run()
    assert at.dataframe[0].value.empty
    at.number_input(key="overview_threshold").set_value(best).run()
    assert at.dataframe[0].value["test_top1"].min() == best
    at.number_input(key="overview_threshold").set_value(None).run()
    at.selectbox(key="overview_sort").set_value("test_top1").run()
    at.toggle(key="overview_descending").set_value(True).run()
    values = list(at.dataframe[0].value["test_top1"])
    assert values == sorted(values, reverse=True)


def test_compare_selection_reaches_the_other_pages(dashboard_runs, monkeypatch):
    at = app(dashboard_runs, monkeypatch)
    at.multiselect(key="overview_compare").set_value(["squeeze-1ep", "base-2ep"]).run()
    diff = at.dataframe[-1].value
    assert "cfg_model" in diff.index and "cfg_epochs" in diff.index
    at = page(at, "pages_curves.py")
    assert at.multiselect(key="curves_runs").value == ["squeeze-1ep", "base-2ep"]
    traces = at.get("plotly_chart")[0].proto.spec
    assert "squeeze-1ep train" in traces and "base-2ep val" in traces
    at = page(at, "pages_classes.py")
    assert at.selectbox(key="classes_run").value == "squeeze-1ep"


def test_curves_widgets_change_the_charts(dashboard_runs, monkeypatch):
    at = page(app(dashboard_runs, monkeypatch), "pages_curves.py")
    before = at.get("plotly_chart")[0].proto.spec
    at.slider(key="curves_smoothing").set_value(0.5).run()
    smoothed = at.get("plotly_chart")[0].proto.spec
    assert "(raw)" in smoothed and "(raw)" not in before
    at.toggle(key="curves_log").set_value(True).run()
    assert '"type":"log"' in at.get("plotly_chart")[0].proto.spec.replace(" ", "")
    at.radio(key="curves_x").set_value("wall time (s)").run()
    assert "wall time (s)" in at.get("plotly_chart")[0].proto.spec


def test_classes_page_orders_and_compares(dashboard_runs, monkeypatch):
    at = page(app(dashboard_runs, monkeypatch), "pages_classes.py")
    heat = at.get("plotly_chart")[0].proto.spec
    at.radio(key="classes_order").set_value("label").run()
    assert at.get("plotly_chart")[0].proto.spec != heat
    at.selectbox(key="classes_target").set_value("thing0").run()
    assert set(at.dataframe[-1].value["run"]) == {"base-2ep", "squeeze-1ep"}
    at.selectbox(key="classes_target").set_value("thing3").run()
    assert set(at.dataframe[-1].value["run"]) == {"base-2ep", "squeeze-1ep", "last-two"}


def test_saliency_widgets_change_the_maps(dashboard_runs, monkeypatch):
    at = page(app(dashboard_runs, monkeypatch), "pages_saliency.py")
    maps = len(at.get("image"))
    at.multiselect(key="saliency_methods").set_value(
        list(at.multiselect(key="saliency_methods").options)
    ).run()
    assert not at.exception
    assert len(at.get("image")) == maps + 2  # five methods instead of three
    at.radio(key="saliency_mode").set_value("misclassified").run()
    assert not at.exception
    assert at.selectbox(key="saliency_other").options == ["(none)", "running", "squeeze-1ep"]
    at.selectbox(key="saliency_other").set_value("squeeze-1ep").run()
    assert not at.exception
    assert "squeeze-1ep" in text(at)
    assert len(at.get("image")) == 2 * (maps + 2)
    at.radio(key="saliency_target").set_value("true class").run()
    assert not at.exception


def test_empty_root_says_what_to_run(tmp_path, monkeypatch):
    at = app(tmp_path, monkeypatch)
    assert "lab sweep --preset quick" in text(at)
    for name in PAGES:
        assert "lab sweep --preset quick" in text(page(at, name))


def test_runs_root_can_be_changed_in_the_sidebar(dashboard_runs, tmp_path, monkeypatch):
    at = app(tmp_path / "nothing-here", monkeypatch)
    assert "lab sweep" in text(at)
    at.sidebar.text_input(key="runs_root").set_value(str(dashboard_runs)).run()
    assert len(at.dataframe[0].value) == 7


def test_a_class_subset_run_shows_its_own_classes(dashboard_runs, monkeypatch):
    at = page(app(dashboard_runs, monkeypatch), "pages_saliency.py")
    at.selectbox(key="saliency_run").set_value("last-two").run()
    assert at.selectbox(key="saliency_class").options == ["thing2", "thing3"]
    assert at.selectbox(key="saliency_other").options == ["(none)"]
    at = page(at, "pages_data.py")
    at.selectbox(key="data_run").set_value("last-two").run()
    assert [i.proto.imgs[0].caption for i in at.get("image")] == [
        "n09000002 thing2",
        "n09000003 thing3",
    ]


def test_running_runs_show_their_progress(dashboard_runs, monkeypatch):
    bars = [p.proto.text for p in app(dashboard_runs, monkeypatch).get("progress")]
    assert bars == ["running: epoch 1 of 3", "starting: epoch 0 of 2"]


def test_your_image_page_offers_the_runs_and_asks_for_pictures(dashboard_runs, monkeypatch):
    at = page(app(dashboard_runs, monkeypatch), "pages_image.py")
    runs_with_a_checkpoint = ["base-2ep", "last-two", "running", "squeeze-1ep"]
    assert at.selectbox(key="image_run").options == runs_with_a_checkpoint
    at.selectbox(key="image_other").set_value("squeeze-1ep").run()
    assert not at.exception
    assert "Upload one or more pictures" in text(at)


def test_damaged_runs_are_named_and_the_pages_go_on(dashboard_runs, tmp_path, monkeypatch):
    root = tmp_path / "root"
    for name in ("good", "bad-metrics", "bad-checkpoint", "bad-predictions"):
        shutil.copytree(dashboard_runs / "base-2ep", root / name)
    metrics = (root / "bad-metrics" / "metrics.csv").read_text()
    (root / "bad-metrics" / "metrics.csv").write_text(metrics[: len(metrics) // 2])
    checkpoint = (root / "bad-checkpoint" / "checkpoint.pt").read_bytes()
    (root / "bad-checkpoint" / "checkpoint.pt").write_bytes(checkpoint[:1000])
    predictions = root / "bad-predictions" / "predictions.csv"
    predictions.write_text(predictions.read_text()[:300] + "\x00garbage,,\n")

    at = app(root, monkeypatch)
    problems = at.dataframe[1].value.set_index("run")
    assert list(problems.index) == ["bad-metrics"]
    assert str(root / "bad-metrics" / "metrics.csv") in problems.loc["bad-metrics", "error"]
    for name in PAGES:
        page(at, name)
    at = page(at, "pages_saliency.py")
    at.selectbox(key="saliency_run").set_value("bad-checkpoint").run()
    assert not at.exception
    assert f"{root / 'bad-checkpoint' / 'checkpoint.pt'}: damaged checkpoint" in text(at)
    at = page(at, "pages_classes.py")
    at.selectbox(key="classes_run").set_value("bad-predictions").run()
    assert not at.exception
    assert str(predictions) in text(at)
    at.selectbox(key="classes_run").set_value("good").run()
    assert not at.exception and len(at.get("plotly_chart")) == 1


def listening(port: int) -> set[str]:
    """The local addresses of the sockets listening on a TCP port (Linux's /proc/net)."""
    addresses = set()
    for name, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        for line in Path(f"/proc/net/{name}").read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                # the kernel prints each 32-bit word in host (little-endian) order
                raw = bytes.fromhex(address)
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
                addresses.add(socket.inet_ntop(family, words))
    return addresses


def test_the_dashboard_starts_quietly_on_this_machine_only(tmp_path):
    # started from the project's root as the README says: .streamlit/config.toml alone keeps it
    # off the network (no usage statistics, no lookup of an external IP, no warnings either)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "streamlit", "run", "dashboard/app.py"]
    command += ["--server.port", str(port), "--", "--runs-root", str(tmp_path)]
    log = tmp_path / "server.log"
    env = {**os.environ, "DISPLAY": ""}  # headless: no browser to open
    with open(log, "w") as out:
        process = subprocess.Popen(
            command, cwd=APP.parents[1], stdout=out, stderr=subprocess.STDOUT, env=env
        )
    try:
        deadline = time.time() + 60
        while "URL:" not in log.read_text() and process.poll() is None:
            assert time.time() < deadline, log.read_text()
            time.sleep(0.5)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=5) as reply:
            assert reply.read() == b"ok"
        assert listening(port) == {"127.0.0.1"}
    finally:
        process.terminate()
        process.wait(10)
    printed = log.read_text()
    assert f"URL: http://localhost:{port}" in printed
    for unwanted in ("usage statistics", "external IP", "WARNING", "Warning"):
        assert unwanted not in printed, printed


def test_started_on_every_interface_it_serves_nothing(dashboard_runs, monkeypatch):
    # Streamlit's default address (none given: every interface) outside the project's root
    config.set_option("server.address", None)
    at = app(dashboard_runs, monkeypatch)
    assert "--server.address 127.0.0.1" in text(at)
    assert not at.sidebar.text_input and not at.dataframe


def test_foreign_folders_are_named_and_every_page_goes_on(dashboard_runs, tmp_path, monkeypatch):
    # folders sorted before the good run: a foreign one (config {} beside a running summary),
    # mistyped config and summary fields, and an older run missing fields (it is fine)
    root = tmp_path / "root"
    for name in ("a-mistyped-config", "a-mistyped-summary", "a-missing-fields", "good"):
        shutil.copytree(dashboard_runs / "base-2ep", root / name)
    foreign = root / "a-foreign"
    foreign.mkdir()
    (foreign / "config.json").write_text("{}")
    (foreign / "summary.json").write_text('{"status": "running", "epochs": 3}')

    def edit(name: str, file: str, drop: tuple[str, ...] = (), **fields) -> None:
        record = json.loads((root / name / file).read_text()) | fields
        (root / name / file).write_text(json.dumps({k: record[k] for k in record if k not in drop}))

    edit("a-mistyped-config", "config.json", classes="ten")
    edit("a-mistyped-summary", "summary.json", val_top1="high", model=5)
    edit("a-missing-fields", "config.json", drop=("classes", "first_class"))
    edit("a-missing-fields", "summary.json", drop=("test_top1", "params", "macs"))

    at = app(root, monkeypatch)
    problems = at.dataframe[1].value.set_index("run")["error"].to_dict()
    assert problems == {
        "a-foreign": f"{foreign / 'config.json'}: no model (not a lab run's config)",
        "a-mistyped-config": f"{root / 'a-mistyped-config' / 'config.json'}: "
        "classes must be of type int, not 'ten'",
        "a-mistyped-summary": f"{root / 'a-mistyped-summary' / 'summary.json'}: "
        "val_top1 is 'high', not a number",
    }
    assert at.multiselect(key="overview_model").options == ["baseline"]
    at.selectbox(key="overview_sort").set_value("val_top1").run()
    assert not at.exception
    usable = ["a-missing-fields", "good"]
    assert page(at, "pages_curves.py").multiselect(key="curves_runs").options == usable
    assert page(at, "pages_classes.py").selectbox(key="classes_run").options == usable
    assert page(at, "pages_saliency.py").selectbox(key="saliency_run").options == usable
    assert page(at, "pages_image.py").selectbox(key="image_run").options == usable
    at = page(at, "pages_data.py")
    assert at.selectbox(key="data_run").options == usable
    assert len(at.get("image")) == 4  # the older run: all classes, as its defaults say


def png(image: Image.Image) -> bytes:
    """An image as the bytes of a PNG file."""
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def test_your_image_page_explains_uploads_and_names_a_bad_one(dashboard_runs, monkeypatch):
    at = page(app(dashboard_runs, monkeypatch), "pages_image.py")
    picture = png(Image.new("L", (200, 150), 90))  # another size and mode than the data's
    at.file_uploader(key="image_uploads").set_value(
        [("my picture.png", picture, "image/png"), ("notes.png", b"hello", "image/png")]
    ).run()
    assert not at.exception
    assert [h.value for h in at.subheader] == ["my picture.png", "notes.png"]
    assert [e.value for e in at.error] == ["notes.png: not a JPEG or PNG image"]
    assert len(at.get("image")) == 4  # the picture at 64x64 and the three default maps
    top = at.dataframe[0].value
    assert list(top.columns) == ["name", "probability"] and len(top) == 4  # 4 classes: top-4
    assert list(top["probability"]) == sorted(top["probability"], reverse=True)
    assert f"**base-2ep**: explaining *{top['name'].iloc[0]}*" in text(at)
    at.selectbox(key="image_other").set_value("squeeze-1ep").run()
    assert not at.exception
    assert len(at.get("image")) == 8 and "**squeeze-1ep**: explaining" in text(at)
