"""Data: a grid of sample images per class from a run's decoded cache."""

import common
import numpy as np
import streamlit as st

from lab.data import SCORED_SPLITS
from lab.errors import LabError

st.title("Data")
table = common.runs_table()
usable = table[table["status"] != "broken"] if len(table) else table
if usable.empty:
    st.info("The data page shows the images a run trained on: it needs one run record.")
    common.empty_root(common.runs_root())
    st.stop()

left, middle, right = st.columns(3)
runs = list(usable["run"])
run = left.selectbox("Data of run", runs, key="data_run")
split_name = middle.radio("Split", SCORED_SPLITS, horizontal=True, key="data_split")
per_class = right.slider("Images per class", 2, 16, 8, key="data_per_class")
try:
    config = common.run_config(usable.set_index("run").loc[run, "path"])
    split = common.run_split(config, split_name)
except (LabError, OSError) as error:  # a DataError is a LabError
    st.error(f"Cannot read the data of {run}: {error}")
    st.stop()

labels = np.asarray(split.labels)
st.caption(
    f"{split_name}: {len(labels)} images, {len(split.names)} classes "
    f"(source {config.data or 'default'}, cache {config.cache_dir or 'default'})"
)
classes = st.multiselect(
    "Classes",
    range(len(split.names)),
    default=list(range(min(8, len(split.names)))),
    format_func=lambda i: f"{split.wnids[i]} {split.names[i]}",
    key="data_classes",
)
seed = st.number_input("Sample seed", 0, 10_000, 0, key="data_seed")
rng = np.random.default_rng(seed)
for label in classes:
    members = np.flatnonzero(labels == label)
    picked = np.sort(rng.choice(members, min(per_class, len(members)), replace=False))
    if not len(picked):
        st.caption(f"{split.names[label]}: no images in {split_name}")
        continue
    row = np.concatenate([split.images[i] for i in picked], axis=1)
    st.image(common.upscale(row, 2), caption=f"{split.wnids[label]} {split.names[label]}")
