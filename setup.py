"""What setup.cfg cannot say: the repo's top-level ``occluders/`` folder ships inside the wheel as the package
data folder ``occgen/occluders/``, where ``occgen.occlude.occluders`` finds the default library once installed.

Each data folder is listed as a (namespace) package so that setuptools copies it without warnings. All package
data is declared here (setup.py's ``package_data`` replaces setup.cfg's): the occluders and fromnet's training
recipes (``fromnet/train/configs/*.toml``).
"""

from setuptools import find_namespace_packages, find_packages, setup

OCCLUDERS = ["occgen.occluders"] + [f"occgen.occluders.{p}" for p in find_namespace_packages("occluders")]

setup(
    packages=find_packages(include=["occgen*", "fromnet*"]) + OCCLUDERS,
    package_dir={"occgen.occluders": "occluders"},
    package_data={"fromnet.train": ["configs/*.toml"], **{p: ["*"] for p in OCCLUDERS}},
)
