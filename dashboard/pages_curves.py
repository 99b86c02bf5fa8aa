"""Curves: loss and accuracy against epoch or wall time, train and val, runs overlaid."""

import common
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.colors import qualitative

PANELS = {
    "Loss": (("train_loss", "train"), ("val_loss", "val")),
    "Top-1 accuracy (%)": (("train_top1", "train"), ("val_top1", "val")),
    "Top-5 accuracy (%)": (("val_top5", "val"),),
}


def smooth(values: pd.Series, weight: float) -> pd.Series:
    """Exponential moving average, debiased like TensorBoard's (weight 0 = the raw curve)."""
    return values.ewm(alpha=1 - weight, adjust=True).mean() if weight > 0 else values


st.title("Training curves")
table = common.runs_table()
if table.empty:
    common.empty_root(common.runs_root())
    st.stop()

usable = table[table["status"] != "broken"]
# finished runs first, then running ones: the failed rarely have curves worth a look
order = {"finished": 0, "running": 1}
ranked = usable.sort_values("status", key=lambda s: s.map(order).fillna(2), kind="stable")
default = common.compare_selection(usable) or list(ranked["run"][:3])
picked = st.multiselect("Runs", list(usable["run"]), default=default, key="curves_runs")
left, middle, right = st.columns(3)
x_axis = left.radio("x axis", ["epoch", "wall time (s)"], horizontal=True, key="curves_x")
weight = middle.slider("Smoothing", 0.0, 0.95, 0.0, 0.05, key="curves_smoothing")
log_y = right.toggle("Log y axis", value=False, key="curves_log")

curves = {}
for run in picked:
    path = usable.set_index("run").loc[run, "path"]
    try:
        metrics = common.run_record(path)["metrics"]
    except ValueError as error:
        st.warning(f"{run}: {error}")
        continue
    if metrics is None or metrics.empty:
        st.info(f"{run}: no finished epoch yet")
        continue
    metrics = metrics.sort_values("epoch")
    metrics["wall time (s)"] = metrics["epoch_time_s"].cumsum()
    curves[run] = metrics

if not curves:
    st.info("Pick runs with at least one finished epoch.")
    st.stop()

colours = dict(zip(curves, qualitative.Plotly * 10, strict=False))
for title, series in PANELS.items():
    figure = go.Figure()
    for run, metrics in curves.items():
        for column, split in series:
            if column not in metrics:
                continue
            style = {"color": colours[run], "dash": "solid" if split == "train" else "dash"}
            name = f"{run} {split}"
            if weight > 0:  # the raw curve stays visible, faint, beneath the smoothed one
                figure.add_scatter(
                    x=metrics[x_axis],
                    y=metrics[column],
                    name=f"{name} (raw)",
                    line=style,
                    opacity=0.3,
                    showlegend=False,
                    hovertemplate="%{y:.3f} raw",
                )
            figure.add_scatter(
                x=metrics[x_axis],
                y=smooth(metrics[column], weight),
                name=name,
                line=style,
                mode="lines+markers",
                hovertemplate="%{y:.3f}",
            )
    figure.update_layout(
        title=title,
        xaxis_title=x_axis,
        hovermode="x unified",
        height=420,
        yaxis_type="log" if log_y else "linear",
        legend={"font": {"size": 11}},
    )
    if x_axis == "epoch":
        figure.update_xaxes(dtick=1)
    st.plotly_chart(figure, key=f"curves_{title}")

st.subheader("Final and best")
columns = ["run", "model", "epochs_done", "val_top1", "best_val_top1", "best_epoch", "test_top1"]
st.dataframe(
    table[table["run"].isin(curves)].reindex(columns=columns), hide_index=True, key="curves_table"
)
