#define _GNU_SOURCE  // accept4
// Sockets made and inspected in C: see CSystemShims.h for why each exists. libc only.
#include "CSystemShims.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

int pc_sockaddr_make(const char *ip, int port, struct sockaddr_storage *out) {
    memset(out, 0, sizeof(*out));
    struct sockaddr_in *v4 = (struct sockaddr_in *)out;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)out;
    if (inet_pton(AF_INET, ip, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        return 0;
    }
    if (inet_pton(AF_INET6, ip, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        return 0;
    }
    return -EINVAL;
}

int pc_sockaddr_format(const struct sockaddr *addr, char *buf, size_t len) {
    char ip[INET6_ADDRSTRLEN];
    if (addr->sa_family == AF_INET) {
        const struct sockaddr_in *v4 = (const struct sockaddr_in *)addr;
        if (!inet_ntop(AF_INET, &v4->sin_addr, ip, sizeof ip)) return -1;
        snprintf(buf, len, "%s:%u", ip, ntohs(v4->sin_port));
        return 0;
    }
    if (addr->sa_family == AF_INET6) {
        const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)addr;
        if (!inet_ntop(AF_INET6, &v6->sin6_addr, ip, sizeof ip)) return -1;
        snprintf(buf, len, "[%s]:%u", ip, ntohs(v6->sin6_port));
        return 0;
    }
    if (addr->sa_family == AF_UNIX) {
        const struct sockaddr_un *un = (const struct sockaddr_un *)addr;
        snprintf(buf, len, "unix:%.*s", (int)sizeof un->sun_path, un->sun_path);
        return 0;
    }
    return -1;
}

int pc_listen_socket(const char *ip, int port, int backlog, int reuseport, int *bound_port) {
    struct sockaddr_storage ss;
    int rc = pc_sockaddr_make(ip, port, &ss);
    if (rc != 0) return rc;
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0) goto fail;
    if (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) goto fail;
    if (ss.ss_family == AF_INET6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) != 0) goto fail;
    socklen_t sl = ss.ss_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
    if (bind(fd, (struct sockaddr *)&ss, sl) != 0) goto fail;
    if (listen(fd, backlog) != 0) goto fail;
    if (bound_port) {
        struct sockaddr_storage got;
        socklen_t gl = sizeof got;
        if (getsockname(fd, (struct sockaddr *)&got, &gl) != 0) goto fail;
        *bound_port = got.ss_family == AF_INET ? ntohs(((struct sockaddr_in *)&got)->sin_port)
                                               : ntohs(((struct sockaddr_in6 *)&got)->sin6_port);
    }
    return fd;
fail:
    rc = -errno;
    close(fd);
    return rc;
}

int pc_listen_unix(const char *path, int backlog) {
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof sa.sun_path) return -ENAMETOOLONG;
    strcpy(sa.sun_path, path);
    struct stat st;
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) return -EEXIST;
        // A socket file: in use if something accepts on it, stale (left by a crash) otherwise.
        int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (probe < 0) return -errno;
        int live = connect(probe, (struct sockaddr *)&sa, sizeof sa) == 0;
        close(probe);
        if (live) return -EADDRINUSE;
        unlink(path);
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, backlog) != 0) {
        int rc = -errno;
        close(fd);
        return rc;
    }
    return fd;
}

int pc_adopt_listening_socket(int fd, int allow_unix, struct sockaddr_storage *bound) {
    struct stat st;
    if (fstat(fd, &st) != 0) return -errno;
    if (!S_ISSOCK(st.st_mode)) return -ENOTSOCK;
    int value = 0;
    socklen_t vl = sizeof value;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &value, &vl) != 0) return -errno;
    if (value != SOCK_STREAM) return -ESOCKTNOSUPPORT;
    vl = sizeof value;
    if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &value, &vl) != 0) return -errno;
    if (value != AF_INET && value != AF_INET6 && !(allow_unix && value == AF_UNIX)) return -EAFNOSUPPORT;
    vl = sizeof value;
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &value, &vl) != 0) return -errno;
    if (!value) return -EINVAL;
    socklen_t bl = sizeof *bound;
    memset(bound, 0, sizeof *bound);
    if (getsockname(fd, (struct sockaddr *)bound, &bl) != 0) return -errno;
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) return -errno;
    return pc_set_cloexec(fd);
}

int pc_unix_dgram_socket(void) {
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    return fd < 0 ? -errno : fd;
}

// Fills `sa` for a Unix socket `address` (a path, or `@name` in the abstract namespace, where no trailing NUL
// counts) and its length; -ENAMETOOLONG when it is empty or does not fit.
static int unix_address(const char *address, struct sockaddr_un *sa, socklen_t *length) {
    memset(sa, 0, sizeof *sa);
    sa->sun_family = AF_UNIX;
    size_t n = strlen(address);
    if (n == 0 || n >= sizeof sa->sun_path) return -ENAMETOOLONG;
    memcpy(sa->sun_path, address, n);
    if (address[0] == '@') sa->sun_path[0] = '\0';
    *length = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + (address[0] == '@' ? 0 : 1));
    return 0;
}

int pc_unix_dgram_send(int fd, const char *address, const void *message, size_t length) {
    struct sockaddr_un sa;
    socklen_t sl;
    int bad = unix_address(address, &sa, &sl);
    if (bad) return bad;
    ssize_t rc;
    do {
        rc = sendto(fd, message, length, MSG_DONTWAIT | MSG_NOSIGNAL, (struct sockaddr *)&sa, sl);
    } while (rc < 0 && errno == EINTR);
    return rc < 0 ? -errno : 0;
}

int pc_unix_dgram_connect(int fd, const char *path) {
    struct sockaddr_un sa;
    socklen_t sl;
    int bad = unix_address(path, &sa, &sl);
    if (bad) return bad;
    int rc;
    do {
        rc = connect(fd, (struct sockaddr *)&sa, sl);
    } while (rc != 0 && errno == EINTR);
    return rc != 0 ? -errno : 0;
}

int pc_send_nonblocking(int fd, const void *message, size_t length) {
    ssize_t rc;
    do {
        rc = send(fd, message, length, MSG_DONTWAIT | MSG_NOSIGNAL);
    } while (rc < 0 && errno == EINTR);
    return rc < 0 ? -errno : 0;
}

int pc_accept(int listen_fd, struct sockaddr_storage *peer) {
    socklen_t length = sizeof(struct sockaddr_storage);
    int fd = accept4(listen_fd, (struct sockaddr *)peer, peer ? &length : NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    return fd >= 0 ? fd : -errno;
}

int pc_unix_peer(int fd, char *path, size_t path_length, int *pid, unsigned *uid, unsigned *gid) {
    struct ucred credentials;
    socklen_t cl = sizeof credentials;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &credentials, &cl) != 0) return -errno;
    *pid = credentials.pid;
    *uid = credentials.uid;
    *gid = credentials.gid;
    struct sockaddr_un sa;
    socklen_t sl = sizeof sa;
    memset(&sa, 0, sizeof sa);
    if (path_length == 0) return 0;
    path[0] = '\0';
    if (getsockname(fd, (struct sockaddr *)&sa, &sl) != 0) return -errno;
    size_t n = sl > offsetof(struct sockaddr_un, sun_path) ? strnlen(sa.sun_path, sizeof sa.sun_path) : 0;
    if (sa.sun_path[0] == '\0') n = 0;  // unnamed or abstract: no path to report
    if (n >= path_length) n = path_length - 1;
    memcpy(path, sa.sun_path, n);
    path[n] = '\0';
    return 0;
}

int pc_socket_file_identity(const char *path, unsigned long long *device, unsigned long long *inode) {
    struct stat st;
    if (lstat(path, &st) != 0) return -errno;
    if (!S_ISSOCK(st.st_mode)) return -ENOTSOCK;
    *device = (unsigned long long)st.st_dev;
    *inode = (unsigned long long)st.st_ino;
    return 0;
}

int pc_remove_socket_file(const char *path, unsigned long long device, unsigned long long inode) {
    unsigned long long d, i;
    int rc = pc_socket_file_identity(path, &d, &i);
    if (rc != 0) return rc;
    if (d != device || i != inode) return -ESTALE;
    return unlink(path) == 0 ? 0 : -errno;
}
