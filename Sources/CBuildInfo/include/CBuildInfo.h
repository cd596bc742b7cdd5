// Facts fixed when the binary is built. No libraries: libc only.
#ifndef CBUILD_INFO_H
#define CBUILD_INFO_H

// The git commit the binary was built from ("unknown" for a plain `swift build`): scripts/package sets
// PORTCULLIS_GIT_COMMIT in the environment, and Package.swift passes it to this target only as a define.
const char *pc_build_git_commit(void);

#endif
