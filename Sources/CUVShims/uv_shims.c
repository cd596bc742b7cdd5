// The libuv shims are inline casts in include/CUVShims.h; SwiftPM needs a source file for a C target.
#include "CUVShims.h"
