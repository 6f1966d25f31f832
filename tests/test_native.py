"""The compiled core loads and identifies itself."""
import layerstore._native as native


def test_native_module_reports_version():
    assert native.ffi.string(native.lib.ls_native_version()) == b"layerstore-native 1"
