#ifndef PORTCULLIS_CFUZZDRIVER_H
#define PORTCULLIS_CFUZZDRIVER_H

#include <stddef.h>
#include <stdint.h>

/// libFuzzer's driver entry point (compiler-rt, FuzzerInterface.h): parses libFuzzer's flags from
/// argc/argv and runs `callback` on every input. Linked in by `-sanitize=fuzzer`.
int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));

#endif
