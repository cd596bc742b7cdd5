#include "CBuildInfo.h"

// Package.swift defines PORTCULLIS_GIT_COMMIT as a bare token (hex digits, checked there), stringified here so
// that no quoting has to survive the build system.
#ifndef PORTCULLIS_GIT_COMMIT
#define PORTCULLIS_GIT_COMMIT unknown
#endif
#define PC_STRINGIFY_(x) #x
#define PC_STRINGIFY(x) PC_STRINGIFY_(x)

const char *pc_build_git_commit(void) { return PC_STRINGIFY(PORTCULLIS_GIT_COMMIT); }
