"""Tiny ImageNet lab dashboard: `streamlit run dashboard/app.py [-- --runs-root PATH]`."""

import argparse
import os
import sys

import streamlit as st


def default_runs_root() -> str:
    """--runs-root after `--`, else $LAB_RUNS_ROOT, else "runs"."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--runs-root")
    args, _ = parser.parse_known_args(sys.argv[1:])
    return args.runs_root or os.environ.get("LAB_RUNS_ROOT") or "runs"


st.set_page_config(page_title="Tiny ImageNet lab", layout="wide")
st.session_state.setdefault("runs_root", default_runs_root())
st.sidebar.text_input("Runs root", key="runs_root", help="Folder holding one folder per run")

page = st.navigation(
    [
        st.Page("pages_overview.py", title="Overview", default=True),
        st.Page("pages_curves.py", title="Curves", url_path="curves"),
        st.Page("pages_classes.py", title="Per-class errors", url_path="classes"),
        st.Page("pages_saliency.py", title="Saliency", url_path="saliency"),
        st.Page("pages_image.py", title="Your image", url_path="image"),
        st.Page("pages_data.py", title="Data", url_path="data"),
    ]
)
page.run()
