"""Per-class errors: best and worst classes, most-confused pairs, confusion matrix, across runs."""

import common
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from lab.errors import LabError
from lab.records import confused_pairs, confusion_order


def heat_map(
    confusion: np.ndarray, names: list[str], order: np.ndarray, share: bool, diagonal: bool
):
    """Plotly heat map of the confusion matrix in the given class order."""
    z = confusion.astype(float)
    if share:
        z = 100 * z / np.maximum(z.sum(1, keepdims=True), 1)
    if not diagonal:
        np.fill_diagonal(z, np.nan)
    z = z[np.ix_(order, order)]
    labels = [f"{i}: {names[i]}" for i in order]
    figure = go.Figure(
        go.Heatmap(
            z=z,
            x=labels,
            y=labels,
            colorscale="Viridis",
            hoverongaps=False,
            colorbar={"title": "% of row" if share else "count"},
            hovertemplate="true %{y}<br>predicted %{x}<br>%{z:.1f}<extra></extra>",
        )
    )
    many = len(order) > 40  # 200 labels do not fit: hover and zoom name the cells
    size = min(1000, max(650, 4 * len(order) + 250))
    figure.update_layout(height=size, xaxis_title="predicted", yaxis_title="true")
    figure.update_xaxes(showticklabels=not many, constrain="domain")
    figure.update_yaxes(showticklabels=not many, autorange="reversed", scaleanchor="x")
    return figure


def examples(
    split, predictions: pd.DataFrame, true: int, pred: int, count: int = 4
) -> tuple[list, list]:
    """Test images of `true` taken for `pred`, then test images that really are `pred`."""
    wrong = predictions[(predictions["label"] == true) & (predictions["pred"] == pred)]
    really = np.flatnonzero(np.asarray(split.labels) == pred)[:count]
    return [split.images[i] for i in wrong["index"][:count]], [split.images[i] for i in really]


st.title("Per-class errors")
table = common.runs_table()
if table.empty:
    common.empty_root(common.runs_root())
    st.stop()
finished = table[table["status"] == "finished"]
if finished.empty:
    st.info("Per-class results appear when a run finishes.")
    st.stop()

selection = common.compare_selection(finished)
runs = list(finished["run"])
run = st.selectbox(
    "Run", runs, index=runs.index(selection[0]) if selection else 0, key="classes_run"
)
row = finished.set_index("run").loc[run]
try:
    record = common.run_record(row["path"])
except ValueError as error:
    st.error(f"{run}: {error}")
    st.stop()
per_class, confusion = record["per_class"], record["confusion"]
if per_class is None or confusion is None:
    st.warning(f"{run}: per_class.csv or confusion.npy is missing")
    st.stop()
names = list(per_class["name"])

count = st.slider("Classes in each list", 3, 30, 10, key="classes_count")
best, worst = st.columns(2)
ranked = per_class.sort_values("top1", ascending=False)[["label", "wnid", "name", "top1", "count"]]
best.subheader("Best classes")
best.dataframe(ranked.head(count), hide_index=True, key="classes_best")
worst.subheader("Worst classes")
worst.dataframe(ranked.tail(count)[::-1], hide_index=True, key="classes_worst")

st.subheader("Most-confused pairs")
pairs = confused_pairs(confusion, names, count)
st.dataframe(
    pairs,
    hide_index=True,
    key="classes_pairs",
    column_config={"% of true": st.column_config.NumberColumn(format="%.1f")},
)
if len(pairs) and record["predictions"] is not None:
    top = min(10, len(pairs))
    shown = st.slider("Pairs with example images", 0, top, min(3, top), key="classes_examples")
    try:
        split = common.run_split(common.run_config(row["path"]))
    except (LabError, OSError) as error:  # a DataError is a LabError
        st.warning(f"No example images: {error}")
        shown = 0
    for pair in pairs.head(shown).to_dict("records"):
        true, pred = pair["true name"], pair["predicted name"]
        wrong, really = examples(split, record["predictions"], pair["true"], pair["predicted"])
        st.markdown(f"**{true}** taken for **{pred}** ({pair['count']} times)")
        columns = st.columns(8)
        for column, image in zip(columns, wrong, strict=False):
            column.image(common.upscale(image, 2), caption=f"a {true}")
        for column, image in zip(columns[4:], really, strict=False):
            column.image(common.upscale(image, 2), caption=f"a real {pred}")

st.subheader("Confusion matrix (test)")
left, middle, right = st.columns(3)
order_by = left.radio(
    "Order classes by", ["accuracy", "confusion", "label"], horizontal=True, key="classes_order"
)
share = middle.toggle("Share of the true class (%)", value=True, key="classes_share")
diagonal = right.toggle("Show the diagonal", value=False, key="classes_diagonal")
order = {
    "accuracy": np.argsort(-per_class["top1"].to_numpy(), kind="stable"),
    "confusion": confusion_order(confusion) if len(names) > 2 else np.arange(len(names)),
    "label": np.arange(len(names)),
}[order_by]
st.plotly_chart(heat_map(confusion, names, order, share, diagonal), key="classes_heatmap")

st.subheader("One class across runs")
target = st.selectbox("Class", names, index=int(ranked["label"].iloc[-1]), key="classes_target")
wnid = per_class.loc[names.index(target), "wnid"]
others = finished[finished["run"].isin(selection or runs)]
rows = []
for other in others.itertuples():
    try:
        theirs = common.run_record(other.path)
    except ValueError:
        continue
    if theirs["per_class"] is None or wnid not in set(theirs["per_class"]["wnid"]):
        continue
    their = theirs["per_class"].set_index("wnid").loc[wnid]
    matrix = theirs["confusion"][int(their["label"])].astype(float)
    matrix[int(their["label"])] = -1
    rows.append(
        {
            "run": other.run,
            "model": other.model,
            "top1": their["top1"],
            "count": their["count"],
            "most often taken for": theirs["per_class"]["name"].iloc[int(matrix.argmax())],
            "times": int(max(matrix.max(), 0)),
        }
    )
st.caption("Runs picked on the overview page, or every finished run when none are picked")
st.dataframe(pd.DataFrame(rows), hide_index=True, key="classes_across")
