"""Your image: upload pictures, see a run's top-5 and its Captum maps, beside a second run's."""

import common
import numpy as np
import streamlit as st

from lab.errors import LabError
from lab.explain import METHODS, overlay
from lab.predict import decode


def show(run: str, path: str, image: np.ndarray, methods: list[str], key: str) -> None:
    """One row: the picture as the model sees it, the run's top-5 and a map per method."""
    try:
        top, maps = common.picture_maps(path, common.checkpoint_version(path), image, methods)
    except (LabError, OSError) as error:  # a damaged checkpoint or a missing data cache
        st.error(f"{run}: cannot use this run: {error}")
        return
    st.markdown(f"**{run}**: explaining *{top['name'].iloc[0]}*")
    caption = "64x64, as the model sees it"
    columns = common.picture_row(image, caption, top, f"image_top5_{key}_{run}", len(methods))
    for column, method in zip(columns, methods, strict=True):
        column.image(common.upscale(overlay(image, maps[method])), caption=method)


st.title("Your image")
table, usable = common.checkpoint_runs("Your pictures need")

names = list(usable.index)
selection = [r for r in common.compare_selection(table) if r in usable.index]
left, right = st.columns(2)
run = left.selectbox(
    "Run", names, index=names.index(selection[0]) if selection else 0, key="image_run"
)
others = [name for name in names if name != run]
other = right.selectbox("Second run", ["(none)", *others], key="image_other")
methods = st.multiselect(
    "Methods", METHODS, default=["saliency", "integrated_gradients", "gradcam"], key="image_methods"
)
uploads = st.file_uploader(
    "Pictures: JPEG or PNG, any size (the centre square is resized to 64x64)",
    type=["jpg", "jpeg", "png"],
    accept_multiple_files=True,
    key="image_uploads",
)
if not uploads:
    st.info("Upload one or more pictures to see what the run makes of them.")
    st.stop()

for number, upload in enumerate(uploads):
    st.subheader(upload.name)
    try:
        image = decode(upload.getvalue(), upload.name)
    except LabError as error:  # not a picture, or a damaged one
        st.error(str(error))
        continue
    for name in [run] if other == "(none)" else [run, other]:
        show(name, usable.loc[name, "path"], image, methods, str(number))
st.caption(
    "Maps show magnitude (brighter = more influence on the top class's logit); class names "
    "are the run's own classes: a picture of anything else still gets the nearest of them."
)
