// libc / POSIX shims: no libuv, no OpenSSL. Every one is prefixed `pc_` and says in one line why it exists.
// Errors come back as -errno (libuv's codes are -errno on Unix too, so callers can report them alike).
#ifndef CSYSTEM_SHIMS_H
#define CSYSTEM_SHIMS_H

#include <pthread.h>
#include <stddef.h>
#include <sys/socket.h>

// ---- Sockets (sockets.c) ------------------------------------------------------------------------------------

// SO_REUSEPORT must be set between socket() and bind(), and libuv 1.44 has no TCP flag for it: the listener is
// made here (non-blocking, close-on-exec) and handed to uv_tcp_open. Returns the fd, or -errno. `*bound_port`
// receives the actual port (for port 0).
int pc_listen_socket(const char *ip, int port, int backlog, int reuseport, int *bound_port);
// sockaddr_un plus the stale-socket probe (connect, then unlink) are pointer casts and fixed arrays Swift spells
// badly. A listening Unix stream socket at `path` (non-blocking, close-on-exec); a stale socket file nobody
// accepts on is replaced, a live one gives -EADDRINUSE. Returns the fd or -errno.
int pc_listen_unix(const char *path, int backlog);
// inet_pton into sockaddr_in/sockaddr_in6 inside a sockaddr_storage: layout casts kept out of Swift.
// Returns 0 or -errno.
int pc_sockaddr_make(const char *ip, int port, struct sockaddr_storage *out);
// inet_ntop of a sockaddr by family (layout casts, as above): "ip:port", "[ip6]:port" or "unix:path" into
// buf. Returns 0 or -1.
int pc_sockaddr_format(const struct sockaddr *addr, char *buf, size_t len);
// fcntl is variadic (Swift cannot call it). Checks that an inherited fd is a listening stream socket
// (IPv4/IPv6; with allow_unix also AF_UNIX), makes it non-blocking and close-on-exec, and stores its bound
// address. Returns 0, or -errno of the failed call, or -ENOTSOCK (not a socket), -ESOCKTNOSUPPORT (not
// SOCK_STREAM), -EAFNOSUPPORT (not IP), -EINVAL (not listening).
int pc_adopt_listening_socket(int fd, int allow_unix, struct sockaddr_storage *bound);
// accept4 is a GNU extension Swift's Glibc module does not declare. Accepts one connection, non-blocking and
// close-on-exec; `peer` (may be NULL) receives its address. Returns the fd or -errno.
int pc_accept(int listen_fd, struct sockaddr_storage *peer);
// struct ucred (SO_PEERCRED) is _GNU_SOURCE-only and sockaddr_un a fixed array: an accepted Unix stream socket's
// local path (into path, NUL-terminated; empty when unnamed) and its peer's pid, uid, gid. Returns 0 or -errno.
int pc_unix_peer(int fd, char *path, size_t path_length, int *pid, unsigned *uid, unsigned *gid);
// lstat's struct stat and S_ISSOCK (a macro): the device and inode of the socket file at path. 0 or -errno;
// -ENOTSOCK when something else is there.
int pc_socket_file_identity(const char *path, unsigned long long *device, unsigned long long *inode);
// unlink(path) only when it is still the socket file identified by device and inode (a later process may have
// put its own there). Returns 0 when removed, or -errno / -ESTALE (another file is there now).
int pc_remove_socket_file(const char *path, unsigned long long device, unsigned long long inode);
// sockaddr_un for "/path" or "@abstract" (sd_notify's NOTIFY_SOCKET forms) is awkward from Swift: an unbound,
// non-blocking, close-on-exec AF_UNIX datagram socket, fd or -errno …
int pc_unix_dgram_socket(void);
// … and one datagram to `address`, never blocking (MSG_DONTWAIT | MSG_NOSIGNAL), EINTR retried. 0 or -errno.
int pc_unix_dgram_send(int fd, const char *address, const void *message, size_t length);
// sockaddr_un again (the syslog socket, /dev/log): connects `fd` (from pc_unix_dgram_socket) to the datagram
// socket at `path`, so a missing or dead syslog daemon shows at once. 0 or -errno.
int pc_unix_dgram_connect(int fd, const char *path);
// send(2) on a connected socket with MSG_DONTWAIT | MSG_NOSIGNAL (a full syslog queue must not stall a
// loop), EINTR retried. 0 or -errno.
int pc_send_nonblocking(int fd, const void *message, size_t length);

// ---- Descriptors, processes, threads, heap (process.c) ------------------------------------------------------

// fcntl is variadic: a copy of fd numbered >= 3, with FD_CLOEXEC clear (inheritable) or set. New fd or -errno.
int pc_dup_fd(int fd, int inheritable);
// fcntl is variadic: sets FD_CLOEXEC. Returns 0 or -errno.
int pc_set_cloexec(int fd);
// pipe2 is _GNU_SOURCE-only: a pipe whose both ends are close-on-exec. Returns 0 or -errno.
int pc_pipe_cloexec(int fds[2]);
// posix_spawn with an empty signal mask and default dispositions (SIGPIPE is ignored here and would otherwise
// stay ignored across exec): sigset_t and the spawn attributes are out-parameter C. Only fds without
// FD_CLOEXEC reach the child. Returns 0 or -errno.
int pc_spawn(const char *path, char *const argv[], char *const envp[], int *pid);
// `environ` is a mutable C global (declared only with _GNU_SOURCE) that Swift 6 will not read directly.
char *const *pc_environ(void);
// pthread_setname_np is _GNU_SOURCE-only. Returns 0 or an errno value.
int pc_thread_set_name(pthread_t thread, const char *name);
// malloc_trim is a glibc extension in <malloc.h>, which Swift's Glibc module does not include: returns free
// heap memory of every arena to the kernel.
void pc_malloc_trim(void);

#endif
