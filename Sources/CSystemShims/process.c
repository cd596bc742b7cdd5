// Descriptors, process start, thread names and the heap: see CSystemShims.h for why each exists. libc only.
#define _GNU_SOURCE  // pipe2, pthread_setname_np, environ
#include "CSystemShims.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <unistd.h>

int pc_dup_fd(int fd, int inheritable) {
    int copy = fcntl(fd, inheritable ? F_DUPFD : F_DUPFD_CLOEXEC, 3);
    return copy < 0 ? -errno : copy;
}

int pc_set_cloexec(int fd) {
    int flags = fcntl(fd, F_GETFD);
    if (flags < 0 || fcntl(fd, F_SETFD, flags | FD_CLOEXEC) != 0) return -errno;
    return 0;
}

int pc_pipe_cloexec(int fds[2]) { return pipe2(fds, O_CLOEXEC) == 0 ? 0 : -errno; }

int pc_spawn(const char *path, char *const argv[], char *const envp[], int *pid) {
    posix_spawnattr_t attr;
    int rc = posix_spawnattr_init(&attr);
    if (rc != 0) return -rc;
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    pid_t child = 0;
    rc = posix_spawn(&child, path, NULL, &attr, argv, envp);
    posix_spawnattr_destroy(&attr);
    if (rc != 0) return -rc;
    *pid = (int)child;
    return 0;
}

char *const *pc_environ(void) { return environ; }

int pc_thread_set_name(pthread_t thread, const char *name) { return pthread_setname_np(thread, name); }

void pc_malloc_trim(void) { (void)malloc_trim(0); }
