"""Overview: every run's numbers beside the study's, filters, and the runs to compare."""

import common
import pandas as pd
import streamlit as st

from lab import records

METRICS = (*common.ACCURACIES, "best_val_top1", "gap_test_top1", "images_per_s")
COLUMNS = {
    "run": st.column_config.TextColumn("run"),
    "model": st.column_config.TextColumn("model"),
    "preset": st.column_config.TextColumn("preset"),
    "status": st.column_config.TextColumn("status"),
    "progress": st.column_config.ProgressColumn("epochs", min_value=0.0, max_value=1.0),
    **{m: st.column_config.NumberColumn(m, format="%.2f") for m in common.ACCURACIES[::2]},
    "study_train_top1": st.column_config.NumberColumn("study train", format="%.2f"),
    "study_val_top1": st.column_config.NumberColumn("study val", format="%.2f"),
    "study_test_top1": st.column_config.NumberColumn("study test", format="%.2f"),
    "gap_test_top1": st.column_config.NumberColumn(
        "test - study", format="%+.2f", help="test top-1 minus the study's test top-1"
    ),
    **{m: st.column_config.NumberColumn(m, format="%.2f") for m in common.ACCURACIES[1::2]},
    "best_val_top1": st.column_config.NumberColumn("best val_top1", format="%.2f"),
    "params": st.column_config.NumberColumn("params", format="compact"),
    "macs": st.column_config.NumberColumn("MACs", format="compact"),
    "wall_time_s": st.column_config.NumberColumn("wall time (s)", format="%.0f"),
    "images_per_s": st.column_config.NumberColumn("train img/s", format="%.0f"),
}


@st.fragment(run_every=5)
def watch_running(table: pd.DataFrame, version: tuple) -> None:
    """Progress of running runs; reruns the page when any summary.json changes."""
    if common.root_stamp(common.runs_root()) != version:
        st.rerun()
    for row in table.itertuples():
        done, total = common.whole(row.epochs_done), common.whole(row.epochs)
        st.progress(done / total if total else 0.0, text=f"{row.run}: epoch {done} of {total}")


st.title("Runs")
root = common.runs_root()
table = common.runs_table(root)
if table.empty:
    common.empty_root(root)
    st.stop()

running = table[table["status"] == "running"]
if len(running):
    st.subheader(f"Running ({len(running)})")
    watch_running(running, common.root_stamp(root))

left, middle, right = st.columns(3)
statuses = sorted(table["status"].dropna().unique())
status = left.multiselect("Status", statuses, default=statuses, key="overview_status")
models = sorted(table["model"].dropna().unique())
model = middle.multiselect("Model", models, default=models, key="overview_model")
metric = right.selectbox("Metric", METRICS, index=METRICS.index("val_top1"), key="overview_metric")
left, middle, right = st.columns(3)
threshold = left.number_input(
    f"Minimum {metric}", value=None, placeholder="no minimum", key="overview_threshold"
)
sort = middle.selectbox("Sort by", ["run", *METRICS], index=0, key="overview_sort")
descending = right.toggle("Descending", value=False, key="overview_descending")

shown = table[table["status"].isin(status) & (table["model"].isin(model) | table["model"].isna())]
if threshold is not None:
    shown = shown[shown[metric] >= threshold]
shown = shown.sort_values(sort, ascending=not descending, na_position="last")
st.caption(f"{len(shown)} of {len(table)} runs; accuracies in percent, test = official val set")
st.dataframe(
    shown, column_order=list(COLUMNS), column_config=COLUMNS, hide_index=True, key="overview_table"
)

problems = table[table["status"].isin(["failed", "broken"])]
if len(problems):
    st.subheader("Failed or broken runs")
    st.dataframe(
        problems[["run", "status", "error"]],
        hide_index=True,
        key="overview_problems",
        width="stretch",
    )

seeds = records.seed_table(records.seed_groups(table))
if len(seeds):
    st.subheader("Runs that differ only by seed")
    st.caption("Mean ± standard deviation over the seeds, in percent")
    st.dataframe(seeds, hide_index=True, key="overview_seeds")

st.subheader("Compare")
# the picker's own state is dropped when another page is shown: keep the choice apart
options = list(table["run"])
picked = st.multiselect(
    "Runs to compare on the other pages",
    options,
    default=common.compare_selection(table),
    key="overview_compare",
)
st.session_state["compare"] = picked
if len(picked) > 1:
    config = table.set_index("run").loc[picked].filter(like="cfg_")
    differs = [c for c in config if config[c].astype(str).nunique() > 1]
    st.caption("Config values that differ between the picked runs")
    # as text: a run's column mixes names and numbers, which a table column cannot hold
    st.dataframe(config[differs].T.astype(str), key="overview_config_diff")
