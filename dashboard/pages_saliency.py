"""Saliency: one test image, a run's top-5 and Captum maps, optionally beside a second run."""

import random

import common
import numpy as np
import streamlit as st

from lab.errors import LabError
from lab.explain import METHODS, overlay
from lab.records import mistakes, same_test_split


def show(run: str, path: str, split, index: int, methods: list[str], explain_true: bool) -> None:
    """One row: the image, the run's top-5 predictions and a map per method."""
    version = common.checkpoint_version(path)
    top = common.top5(path, version, index)
    label = int(split.labels[index])
    target = label if explain_true else int(top["label"].iloc[0])
    st.markdown(f"**{run}**: explaining *{split.names[target]}*")
    image = np.asarray(split.images[index])
    caption = f"#{index}: {split.names[label]}"
    columns = common.picture_row(image, caption, top, f"saliency_top5_{run}", len(methods))
    for column, method in zip(columns, methods, strict=True):
        with column, st.spinner(method):
            attr = common.attribution(path, version, index, method, target)
            column.image(common.upscale(overlay(image, attr)), caption=method)


st.title("Saliency")
table, usable = common.checkpoint_runs("Attribution maps need")

names = list(usable.index)
selection = [r for r in common.compare_selection(table) if r in usable.index]
run = st.selectbox(
    "Run", names, index=names.index(selection[0]) if selection else 0, key="saliency_run"
)
path = usable.loc[run, "path"]
try:
    common.run_predictor(path)  # a damaged checkpoint is said here, not in the first map
    split = common.run_split(common.run_config(path))
    record = common.run_record(path)
except (LabError, OSError) as error:  # an unreadable checkpoint, record or data cache
    st.error(f"{run}: cannot explain this run: {error}")
    st.stop()

mode = st.radio(
    "Pick an image", ["by class", "misclassified", "random"], horizontal=True, key="saliency_mode"
)
labels = np.asarray(split.labels)
if mode == "by class":
    left, right = st.columns(2)
    label = left.selectbox(
        "Class", range(len(split.names)), format_func=lambda i: split.names[i], key="saliency_class"
    )
    members = np.flatnonzero(labels == label)
    if not len(members):
        st.info(f"No test image of {split.names[label]}.")
        st.stop()
    nth = right.number_input(
        f"Image of this class (0..{len(members) - 1})", 0, len(members) - 1, 0, key="saliency_nth"
    )
    index = int(members[nth])
elif mode == "misclassified":
    predictions = record["predictions"]
    if predictions is None:
        st.info("This run has no predictions.csv yet (it is written when the run finishes).")
        st.stop()
    wrong = mistakes(predictions).head(500)
    if wrong.empty:
        st.info("No misclassified test image.")
        st.stop()
    rows = {int(r["index"]): r for r in wrong.to_dict("records")}
    index = st.selectbox(
        "Misclassified test image (most confident first)",
        list(rows),
        format_func=lambda i: (
            f"#{i}: {split.names[rows[i]['label']]} taken for {split.names[rows[i]['pred']]} "
            f"({rows[i]['confidence']:.0%})"
        ),
        key="saliency_wrong",
    )
else:
    if st.button("Another random image", key="saliency_another"):
        st.session_state["saliency_seed"] = st.session_state.get("saliency_seed", 0) + 1
    index = random.Random(st.session_state.get("saliency_seed", 0)).randrange(len(labels))

left, right = st.columns(2)
methods = left.multiselect(
    "Methods",
    METHODS,
    default=["saliency", "integrated_gradients", "gradcam"],
    key="saliency_methods",
)
explain_true = (
    right.radio(
        "Explain", ["predicted class", "true class"], horizontal=True, key="saliency_target"
    )
    == "true class"
)

show(run, path, split, index, methods, explain_true)

# runs evaluated on the same test split can be compared image by image
same = same_test_split(usable, run)
other = st.selectbox(
    "Compare with run",
    ["(none)", *same.index],
    key="saliency_other",
    help="Runs trained on the same classes of the same data",
)
if other != "(none)":
    try:
        show(other, same.loc[other, "path"], split, index, methods, explain_true)
    except (LabError, OSError) as error:  # the same guard as for the first run
        st.error(f"{other}: cannot explain this run: {error}")
st.caption(
    "Maps show magnitude (brighter = more influence on the explained class's logit); "
    "Grad-CAM uses the model's last convolution; "
    "occlusion slides an 8x8 patch set to the training mean."
)
