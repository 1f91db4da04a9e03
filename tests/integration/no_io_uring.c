/* sg_no_io_uring CMD [ARG...]: runs CMD where io_uring_setup(2) fails with
 * EPERM, as under the default seccomp profiles of Docker and containerd.
 *
 * The integration tests run strangler through it (SG_TEST_IO_URING=blocked,
 * tests/integration/harness.py) so that the whole suite also covers the
 * workers' plain system calls, reached the way production reaches them:
 * `io_uring: auto` and a kernel that refuses. A seccomp filter is inherited
 * across execve and cannot be removed, so CMD and everything it starts stay
 * under it. */
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s CMD [ARG...]\n", argv[0]);
        return 2;
    }
    /* io_uring_setup has the same number on every architecture that has
     * it; refusing the setup is enough, as nothing else works without a
     * ring. */
    struct sock_filter prog[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog fprog = { .len = sizeof prog / sizeof prog[0], .filter = prog };
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &fprog) != 0) {
        fprintf(stderr, "%s: seccomp: %s\n", argv[0], strerror(errno));
        return 2;
    }
    execvp(argv[1], argv + 1);
    fprintf(stderr, "%s: %s: %s\n", argv[0], argv[1], strerror(errno));
    return 127;
}
