"""Every dashboard page, headless (AppTest), on real run records, an empty root and broken runs."""

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

APP = Path(__file__).resolve().parents[1] / "dashboard" / "app.py"
PAGES = ("pages_curves.py", "pages_classes.py", "pages_saliency.py", "pages_data.py")
TIMEOUT = 120  # the first run of a page imports torch and captum


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
