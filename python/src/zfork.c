/* dragon._zfork: the fork a node's zygote (dragon/_zygote.py) makes a
 * member with. One clone3(CLONE_PARENT): the member is born the agent's
 * child, as an exec'd member is, and its pid is known at once. Without it
 * the zygote forks twice (a middle process that forks the member and exits,
 * so that the agent, a child subreaper, inherits it) and waits for the
 * middle to say the pid: two forks of a large interpreter per member.
 *
 * glibc has no fork with flags, so this does what its fork does that a
 * member relies on: the new thread's tid is written where glibc keeps it
 * (CLONE_CHILD_SETTID at the address the kernel was given for it,
 * PR_GET_TID_ADDRESS), which the owner field of robust and recursive
 * mutexes uses, and the robust-mutex list is registered again (the kernel
 * does not carry it over). It does not run pthread_atfork handlers: it is
 * refused unless the caller is the process's only thread, which holds no
 * lock of glibc's while it is here. Python's own before/after-fork work
 * (PyOS_BeforeFork and friends, os.register_at_fork hooks) runs as for
 * os.fork. Any precondition not met raises OSError(ENOTSUP): the caller
 * forks twice instead.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef PR_GET_TID_ADDRESS
#define PR_GET_TID_ADDRESS 40
#endif

/* Threads of this process, from /proc/self/stat (field 20); -1 if unknown. */
static long thread_count(void) {
    char buf[1024];
    int fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return -1;
    buf[n] = '\0';
    const char* p = strrchr(buf, ')'); /* the command name may hold spaces */
    if (p == NULL) return -1;
    /* After ") ": state (3), ppid (4), ... num_threads (20). */
    int field = 2;
    for (++p; *p != '\0'; ++p) {
        if (*p == ' ' && ++field == 20) return strtol(p + 1, NULL, 10);
    }
    return -1;
}

static PyObject* refuse(const char* why) {
    PyObject* exc = PyObject_CallFunction(PyExc_OSError, "is", ENOTSUP, why);
    if (exc != NULL) {
        PyErr_SetObject(PyExc_OSError, exc);
        Py_DECREF(exc);
    }
    return NULL;
}

static PyObject* fork_to_parent(PyObject* self, PyObject* noargs) {
    (void)self;
    (void)noargs;
#ifndef SYS_clone3
    return refuse("clone3 is not known to this build");
#else
    if (thread_count() != 1) return refuse("not the only thread");
    pid_t* tid_at = NULL;
    if (prctl(PR_GET_TID_ADDRESS, &tid_at, 0, 0, 0) != 0 || tid_at == NULL ||
        *tid_at != (pid_t)syscall(SYS_gettid))
        return refuse("the thread's tid address is unknown");
    void* robust = NULL;
    size_t robust_len = 0;
    if (syscall(SYS_get_robust_list, 0, &robust, &robust_len) != 0) return refuse("no robust list");

    struct clone_args args;
    memset(&args, 0, sizeof args);
    args.flags = CLONE_PARENT | CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID;
    args.child_tid = (uint64_t)(uintptr_t)tid_at;
    /* No exit_signal: with CLONE_PARENT the child's is the caller's (SIGCHLD,
     * to the agent), and clone3 refuses one. */

    PyOS_BeforeFork();
    long pid = syscall(SYS_clone3, &args, sizeof args);
    int err = errno;
#if defined(__x86_64__)
    if (pid < 0 && err == ENOSYS) {
        /* clone3 filtered (container seccomp profiles answer ENOSYS so that
         * glibc falls back): the older call, x86-64's argument order
         * (flags, stack, parent_tid, child_tid, tls). */
        pid = syscall(SYS_clone, (unsigned long)args.flags, 0UL, NULL, tid_at, 0UL);
        err = errno;
    }
#endif
    if (pid == 0) {
        (void)syscall(SYS_set_robust_list, robust, robust_len);
        PyOS_AfterFork_Child();
        return PyLong_FromLong(0);
    }
    PyOS_AfterFork_Parent();
    if (pid < 0) {
        errno = err;
        if (err == ENOSYS || err == EINVAL || err == EPERM) {
            char why[96];
            snprintf(why, sizeof why, "clone(CLONE_PARENT) refused: %s", strerror(err));
            return refuse(why);
        }
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyLong_FromLong(pid);
#endif
}

static PyObject* die_with_parent(PyObject* self, PyObject* arg) {
    (void)self;
    long sig = PyLong_AsLong(arg);
    if (sig == -1 && PyErr_Occurred()) return NULL;
    if (prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0) return PyErr_SetFromErrno(PyExc_OSError);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"die_with_parent", die_with_parent, METH_O,
     "die_with_parent(sig): PR_SET_PDEATHSIG (the signal this process gets when its parent ends)."},
    {"fork_to_parent", fork_to_parent, METH_NOARGS,
     "fork_to_parent() -> pid: forks this (single-threaded) process so that the child's parent is this "
     "process's parent; 0 in the child. OSError(ENOTSUP) when it cannot (fork twice instead)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "dragon._zfork", "The fork of a node's fast-start interpreter (dragon._zygote).", -1,
    methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__zfork(void) { return PyModule_Create(&module); }
