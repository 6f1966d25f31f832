#include "version.h"

const char *ls_native_version(void) { return "layerstore-native 1"; }
