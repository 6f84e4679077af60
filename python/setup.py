"""pyramid_forksafe: the fork lifecycle of pre-fork servers as Pyramid events.

Installs offline: `pip install ./python` needs only setuptools (Debian:
python3-setuptools) and Pyramid (python3-pyramid).  There is deliberately no
pyproject.toml: with one, pip would build in an isolated environment and
fetch setuptools from PyPI.
"""
import os
import re

from setuptools import find_packages, setup

HERE = os.path.abspath(os.path.dirname(__file__))

with open(os.path.join(HERE, "pyramid_forksafe", "__init__.py")) as f:
    VERSION = re.search(r'^__VERSION__ = "([^"]+)"', f.read(), re.M).group(1)

with open(os.path.join(HERE, "README.md")) as f:
    README = f.read()

setup(
    name="pyramid_forksafe",
    version=VERSION,
    description="Pyramid events for every fork lifecycle event of pre-fork servers (forksafe)",
    long_description=README,
    long_description_content_type="text/markdown",
    keywords="web pyramid fork uwsgi gunicorn",
    classifiers=[
        "Framework :: Pyramid",
        "Intended Audience :: Developers",
        "Programming Language :: Python :: 3",
    ],
    python_requires=">=3.7",
    packages=find_packages(exclude=("tests",)),
    install_requires=["pyramid", "zope.interface"],
    zip_safe=False,
)
