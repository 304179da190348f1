"""Installs ``mapseg_nnunet``: the MAPSeg library plus its nnU-Net trainers, planners and dataset
converters, which live in top-level folders of the repository and are installed as
``mapseg_nnunet.trainers``, ``mapseg_nnunet.planners`` and ``mapseg_nnunet.dataset_conversion`` (so no
generic top-level module such as ``trainers`` lands in site-packages)."""
import re
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "mapseg_nnunet" / "__init__.py").read_text()).group(1)
MAPPED_FOLDERS = ("trainers", "planners", "dataset_conversion")

library_packages = sorted(
    ".".join(p.parent.relative_to(HERE).parts)
    for p in (HERE / "mapseg_nnunet").rglob("__init__.py")
)
packages = library_packages + [f"mapseg_nnunet.{folder}" for folder in MAPPED_FOLDERS]

setup(
    name="mapseg-nnunet",
    version=VERSION,
    description="MAPSeg (masked autoencoding and pseudo-labeling, CVPR 2024) as an nnU-Net v2 plugin for "
                "unsupervised domain adaptation of 3D segmentation",
    long_description=(HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # the nnUNet_extTrainer shim folder is deliberately not a package
    # ... nor is the Flower app bundle folder (a pyproject.toml that `flwr run` packs)
    package_data={"mapseg_nnunet": ["nnunet_ext/*.py", "federated/app/pyproject.toml"]},
    packages=packages,
    package_dir={"mapseg_nnunet": "mapseg_nnunet",
                 **{f"mapseg_nnunet.{folder}": folder for folder in MAPPED_FOLDERS}},
    install_requires=[
        # nnUNet_extTrainer (external trainers) exists from 2.8.0 on; the predictor hook is checked against 2.8.x
        "nnunetv2>=2.8.0,<2.9",
        "torch>=2.1.2,!=2.9.*",
        "batchgenerators>=0.25.1",
        "batchgeneratorsv2>=0.3.2",
        "dynamic-network-architectures>=0.4.4,<0.5",
        "acvl-utils>=0.2.6,<0.3",
        "SimpleITK>=2.2.1",
        "nibabel",
        "numpy>=1.24",
        "tqdm",
        # ships the MNI ICBM152 2009a templates the demo cohort is built from; 0.14 needs packaging>=26, which
        # Flower 1.42 excludes (0.13's template files are byte-identical)
        "nilearn>=0.10,<0.14",
        # nnunetv2's preprocessing imports distutils, which Python >= 3.12 only has through setuptools
        "setuptools",
    ],
    extras_require={
        # Fed-MAPSeg: Flower's Message API and its Ray simulation engine (Python >= 3.11)
        "federated": ["flwr[simulation]==1.42.*"],
        "test": ["pytest>=7", "flwr[simulation]==1.42.*"],
    },
    entry_points={
        "console_scripts": [
            "mapseg_nnunet=mapseg_nnunet.cli.main:main",
            "mapseg_plan_and_preprocess=mapseg_nnunet.cli.plan_and_preprocess:plan_and_preprocess_entry",
            "mapseg_register_targets=mapseg_nnunet.cli.register_targets:register_targets_entry",
            "mapseg_receive_source_model=mapseg_nnunet.cli.receive_source_model:receive_source_model_entry",
            "mapseg_federated_simulation=mapseg_nnunet.cli.federated_simulation:simulation_entry",
            "mapseg_plans_variant=mapseg_nnunet.cli.plans_variant:plans_variant_entry",
        ]
    },
)
