"""Which folders go into the distribution (everything else is in pyproject.toml).

The repository keeps ``scenarios/``, ``policies/`` and ``viz/`` at its top level. A build maps them into the
package's own namespace, so a wheel never installs a generic top-level ``viz`` into site-packages:

    viz/        -> intersection_meta/viz              (console script ``intersection-meta-replay``)
    scenarios/  -> intersection_meta/_data/scenarios  (named scenarios, *.yaml)
    policies/   -> intersection_meta/_data/policies   (shipped checkpoints and their index.yaml)

``intersection_meta/resources.py`` finds the data in either layout (installed, or a checkout / editable install).
pyproject.toml's ``[tool.setuptools]`` tables cannot combine package discovery with these mappings, hence setup.py.
"""

from setuptools import find_packages, setup

MAPPED = {
    "intersection_meta.viz": "viz",
    "intersection_meta._data.scenarios": "scenarios",
    "intersection_meta._data.policies": "policies",
}

setup(
    packages=[*find_packages(include=["intersection_meta", "intersection_meta.*"]), *MAPPED],
    package_dir=MAPPED,
    package_data={
        "intersection_meta": ["py.typed"],
        "intersection_meta._data.scenarios": ["*.yaml"],
        "intersection_meta._data.policies": ["*.yaml", "*.pt"],
    },
)
