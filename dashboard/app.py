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
if not st.get_option("server.address"):
    # Streamlit's default listens on every interface, and the runs-root box reads any folder of
    # this machine: without an address given (the project's .streamlit/config.toml gives
    # 127.0.0.1), serve nothing. The server cannot be moved once started.
    st.error(
        "This dashboard was started without `server.address`, so it listens on every network "
        "interface, with no login. Restart it from the project's root (`make dashboard`) or with "
        "`--server.address 127.0.0.1`; the README says how to serve it to others on purpose, "
        "and what that exposes."
    )
    st.stop()
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
