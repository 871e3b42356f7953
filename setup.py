"""Builds the optional C driver of the exact LR parser; everything else is in pyproject.toml.
Without a C compiler the package still installs and uses the pure-Python driver."""
from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "grammar_rae.grammar._native",
            ["grammar_rae/grammar/_native.c"],
            extra_compile_args=["-O3"],
            optional=True,
        )
    ]
)
