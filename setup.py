"""The one compiled part of assay: a strict parser of flat JSON-lines blocks (assay/io/_jsonl.c).

Optional: where no C compiler is found the build goes on without it, and assay reads JSON lines
with pyarrow alone (slower, same results). Everything else is declared in pyproject.toml.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "assay.io._jsonl",
            sources=["assay/io/_jsonl.c"],
            extra_compile_args=["-O3", "-std=c11", "-D_GNU_SOURCE"],
            optional=True,
        )
    ]
)
