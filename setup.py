"""Build glue: the cffi extension ``layerstore._native`` is defined in csrc/build_native.py."""
from setuptools import setup

setup(cffi_modules=["csrc/build_native.py:ffibuilder"])
