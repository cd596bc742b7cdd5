// libuv shims: only <uv.h>. Every one is prefixed `pc_` and says in one line why it exists.
#ifndef CUV_SHIMS_H
#define CUV_SHIMS_H

#include <uv.h>

// Cast: uv_tcp_t, uv_pipe_t, uv_timer_t … begin with uv_handle_t's fields (C "subclassing"); Swift sees unrelated
// structs, and a typed rebind at every call would hide the intent. Inline: used on every read and write.
static inline uv_handle_t *pc_handle(void *handle) { return (uv_handle_t *)handle; }
// Cast: uv_tcp_t and uv_pipe_t begin with uv_stream_t's fields (as above).
static inline uv_stream_t *pc_stream(void *handle) { return (uv_stream_t *)handle; }

#endif
