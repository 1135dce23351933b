"""Installs aecfe: the packages aecfe, detectors, extractors, classifiers and the console scripts."""
from pathlib import Path

from setuptools import find_packages, setup

# torch and torchvision are pinned together: unpinned, pip resolves a newer torch with gigabytes
# of CUDA wheels. xgboost-cpu (5.6 MB wheel, ~19 MB installed) is preferred over xgboost
# (132 MB wheel plus nvidia-nccl-cu12, ~0.9 GB venv); measured in the README.
INSTALL_REQUIRES = [
    "torch==2.13.0",
    "torchvision==0.28.0",
    "numpy>=1.24",
    "scipy>=1.10",
    "scikit-learn>=1.6",  # classifiers/heads.py: sklearn.utils.validation.validate_data (new in 1.6)
    "xgboost-cpu>=2.0",
    "skops>=0.10",  # classifiers/heads.py: scikit-learn heads saved without pickle (trusted-type list)
    "umap-learn>=0.5",
    "h5py>=3.12",
    "pandas>=2.0",
    "matplotlib>=3.7",
    "pillow>=10.0",
    "pycocotools>=2.0.7",
    "tqdm>=4.60",
    "pyyaml>=6.0",
    "tabulate>=0.9",
]

# Every command-line program aecfe/cli/NAME.py (with main(argv=None) -> int) is installed as aecfe-NAME
# (underscores as dashes), through aecfe.cli.run_program (one clear line and exit 2 on the package's own
# errors); scripts/NAME.py runs the same program from a checkout.
CONSOLE_SCRIPTS = [f"aecfe-{path.stem.replace('_', '-')}=aecfe.cli._entry:{path.stem}"
                   for path in sorted(Path(__file__).parent.joinpath("aecfe", "cli").glob("[!_]*.py"))]

setup(
    name="aecfe",
    version="0.1.0",
    description="Cross-domain white blood cell classification: Mask R-CNN RoI features, "
    "a domain-aligned autoencoder (AE-CFE), scikit-learn heads and deep DG baselines.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["aecfe", "aecfe.*", "detectors", "detectors.*",
                                    "extractors", "extractors.*", "classifiers", "classifiers.*"]),
    package_data={"aecfe": ["taxonomies/*.yaml"]},
    install_requires=INSTALL_REQUIRES,
    extras_require={"test": ["pytest>=7", "hypothesis>=6", "anndata>=0.10"], "anndata": ["anndata>=0.10"]},
    entry_points={"console_scripts": CONSOLE_SCRIPTS},
)
