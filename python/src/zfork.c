/* dragon._zfork: the loop of a node's zygote (dragon/_zygote.py), in C.
 *
 * serve() reads the agent's spawn requests, makes the checks exec would
 * (directory, cpus), and starts each member with one clone(CLONE_PARENT):
 * the member is born the agent's child, as an exec'd member is, and its
 * pid is the answer at once. Without it the zygote forks twice (a middle
 * process that forks the member and exits, so that the agent, a child
 * subreaper, inherits it) and waits for the middle to say the pid. The loop
 * is in C so that the zygote touches nothing of its Python heap between
 * forks: a page it writes after a fork is one its members no longer share.
 *
 * glibc has no fork with flags, so this does what its fork does that a
 * member relies on: the child's tid is written where glibc keeps it
 * (CLONE_CHILD_SETTID at the address the kernel was given for it,
 * PR_GET_TID_ADDRESS), which the owner field of robust and recursive
 * mutexes uses, and the robust-mutex list is registered again (the kernel
 * does not carry it over). It does not run pthread_atfork handlers nor
 * Python's before-fork hooks: it is refused unless the zygote is the
 * process's only thread, which holds no lock while it is here. The member
 * runs Python's after-fork work (PyOS_AfterFork_Child, os.register_at_fork
 * hooks) as an os.fork child does.
 *
 * A cloned member then sets itself up here, in C, before any of its Python
 * runs (setup_member): process group, stdio, directory, cpus, environment,
 * parent. The same steps in Python (_zygote._become, still the double
 * fork's) ran code and touched objects the zygote shares, and each page
 * they wrote was copied into the member: with setenv's mallocs from the
 * zygote's heap, about 300 kB of a Pool worker's private memory. Python
 * only does what needs its objects: the signal handlers, os.environ's
 * dict, the signal mask.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
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

/* What the clone of a member needs, found once: where glibc keeps this
 * thread's tid, and its robust-mutex list. NULL, or why not. */
struct forker {
    pid_t* tid_at;
    void* robust;
    size_t robust_len;
};

static const char* forker_init(struct forker* f) {
    if (thread_count() != 1) return "not the only thread";
    f->tid_at = NULL;
    if (prctl(PR_GET_TID_ADDRESS, &f->tid_at, 0, 0, 0) != 0 || f->tid_at == NULL ||
        *f->tid_at != (pid_t)syscall(SYS_gettid))
        return "the thread's tid address is unknown";
    if (syscall(SYS_get_robust_list, 0, &f->robust, &f->robust_len) != 0) return "no robust list";
    return NULL;
}

/* clone(CLONE_PARENT): the pid, 0 in the child (its tid and robust list
 * set as glibc's fork would), -1 and errno. */
static long clone_member(const struct forker* f) {
    long pid = -1;
    errno = ENOSYS;
#ifdef SYS_clone3
    struct clone_args args;
    memset(&args, 0, sizeof args);
    args.flags = CLONE_PARENT | CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID;
    args.child_tid = (uint64_t)(uintptr_t)f->tid_at;
    /* No exit_signal: with CLONE_PARENT the child's is the caller's (SIGCHLD,
     * to the agent), and clone3 refuses one. */
    pid = syscall(SYS_clone3, &args, sizeof args);
#endif
#if defined(__x86_64__)
    if (pid < 0 && errno == ENOSYS) {
        /* clone3 filtered (container seccomp profiles answer ENOSYS so that
         * glibc falls back): the older call, x86-64's argument order
         * (flags, stack, parent_tid, child_tid, tls). */
        pid = syscall(SYS_clone, (unsigned long)(CLONE_PARENT | CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID), 0UL,
                      NULL, f->tid_at, 0UL);
    }
#endif
    if (pid == 0) (void)syscall(SYS_set_robust_list, f->robust, f->robust_len);
    return pid;
}

/* ---- the zygote's loop (dragon/_zygote.py has the wire) ------------------------- */

#define MAX_FRAME (64u << 20)
#define MAX_FDS 8

/* Reads exactly n bytes, appending descriptors that come with them to fds
 * (at most MAX_FDS; more are closed). 1 done, 0 end of file before the
 * first byte, -1 error (errno; EPROTO for an end inside). */
static int read_exact(int sock, char* buf, size_t n, int* fds, int* nfds) {
    size_t got = 0;
    while (got < n) {
        struct iovec iov = {buf + got, n - got};
        union {
            struct cmsghdr align;
            char space[CMSG_SPACE(sizeof(int) * MAX_FDS)];
        } ctl;
        struct msghdr mh;
        memset(&mh, 0, sizeof mh);
        mh.msg_iov = &iov;
        mh.msg_iovlen = 1;
        mh.msg_control = ctl.space;
        mh.msg_controllen = sizeof ctl.space;
        ssize_t r = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
        if (r < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        for (struct cmsghdr* c = CMSG_FIRSTHDR(&mh); c != NULL; c = CMSG_NXTHDR(&mh, c)) {
            if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
            size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (size_t i = 0; i < k; ++i) {
                int fd;
                memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
                if (*nfds < MAX_FDS) fds[(*nfds)++] = fd;
                else close(fd);
            }
        }
        if (r == 0) {
            if (got == 0) return 0;
            errno = EPROTO;
            return -1;
        }
        got += (size_t)r;
    }
    return 1;
}

static int answer(int sock, const char* text) {
    size_t n = strlen(text);
    char frame[4 + 512];
    if (n > 512) n = 512;
    for (int i = 0; i < 4; ++i) frame[i] = (char)((n >> (8 * i)) & 0xFFu);
    memcpy(frame + 4, text, n);
    size_t off = 0, len = n + 4;
    while (off < len) {
        ssize_t w = send(sock, frame + off, len - off, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        off += (size_t)w;
    }
    return 0;
}

/* The checks _zygote._parse and _zygote._check make, before a fork: the
 * shape of the request, then what exec would refuse (directory, cpus).
 * "" when it may be forked, else the answer's text (after "err "). */
static void check_request(const char* body, size_t n, int nfds, char* why, size_t room) {
    why[0] = '\0';
    /* fields: spawn, cwd, cpus, mask, argc, argv..., env... */
    const char* f[6];
    size_t fl[6];
    size_t nf = 0, i = 0;
    size_t total = 1;
    for (size_t k = 0; k < n; ++k) total += body[k] == '\0';
    while (nf < 6 && i <= n) {
        const char* e = memchr(body + i, '\0', n - i);
        size_t len = e ? (size_t)(e - (body + i)) : n - i;
        f[nf] = body + i;
        fl[nf++] = len;
        i += len + 1;
    }
    if (total < 6 || fl[0] != 5 || memcmp(f[0], "spawn", 5) != 0) {
        snprintf(why, room, "22 bad request: not a spawn request (%zu fields)", total);
        return;
    }
    long argc = 0;
    for (size_t k = 0; k < fl[4]; ++k) {
        if (f[4][k] < '0' || f[4][k] > '9' || argc > 1000000) {
            snprintf(why, room, "22 bad request: bad number: argc");
            return;
        }
        argc = argc * 10 + (f[4][k] - '0');
    }
    int ones = 0;
    for (size_t k = 0; k < fl[3]; ++k) ones += f[3][k] == '1';
    if (fl[4] == 0 || argc < 3 || 5 + (size_t)argc > total || fl[3] != 3 || ones != nfds) {
        snprintf(why, room, "22 bad request: argc %ld, fds %.3s with %d descriptors", argc, f[3], nfds);
        return;
    }
    /* argv[-2] must be -c: field 5 + argc - 2 */
    size_t want = 5 + (size_t)argc - 2, at = 0;
    for (size_t k = 0; k < want; ++k) at += strnlen(body + at, n - at) + 1;
    if (at + 3 > n || memcmp(body + at, "-c", 3) != 0) {
        snprintf(why, room, "22 bad request: argv does not end with -c code");
        return;
    }
    if (fl[1] > 0) {
        char cwd[4096];
        if (fl[1] >= sizeof cwd) {
            snprintf(why, room, "36 chdir (a %zu-byte path)", fl[1]);
            return;
        }
        memcpy(cwd, f[1], fl[1]);
        cwd[fl[1]] = '\0';
        struct stat st;
        if (stat(cwd, &st) != 0) {
            snprintf(why, room, "%d chdir %.500s", errno == ENOENT ? 2 : errno, cwd);
            return;
        }
        if (!S_ISDIR(st.st_mode)) {
            snprintf(why, room, "20 chdir %.500s", cwd);
            return;
        }
        if (access(cwd, X_OK) != 0) {
            snprintf(why, room, "13 chdir %.500s", cwd);
            return;
        }
    }
    if (fl[2] > 0) {
        cpu_set_t mine;
        CPU_ZERO(&mine);
        if (sched_getaffinity(0, sizeof mine, &mine) != 0) CPU_ZERO(&mine);
        long cpu = -1;
        for (size_t k = 0; k <= fl[2]; ++k) {
            char c = k < fl[2] ? f[2][k] : ',';
            if (c == ',') {
                if (cpu >= 0 && (cpu >= CPU_SETSIZE || !CPU_ISSET((int)cpu, &mine))) {
                    snprintf(why, room, "22 affinity %.*s", (int)fl[2], f[2]);
                    return;
                }
                cpu = -1;
            } else if (c >= '0' && c <= '9' && cpu < 100000) {
                cpu = (cpu < 0 ? 0 : cpu * 10) + (c - '0');
            } else {
                snprintf(why, room, "22 bad request: bad number: cpus");
                return;
            }
        }
    }
}


/* ---- a cloned member's set-up, before its Python runs ----------------------------- */

/* "NAME=" prefixes of the variables that go first in the published
 * environment (_zygote._IDENTITY), NUL-separated; set by serve(). */
static char identity[512];
static size_t identity_len;

static int is_identity(const char* kv, size_t len) {
    for (size_t at = 0; at < identity_len;) {
        size_t n = strlen(identity + at);
        if (n > 0 && n <= len && memcmp(kv, identity + at, n) == 0) return 1;
        at += n + 1;
    }
    return 0;
}

/* The request's fields (its shape was checked before the clone). */
struct request {
    const char* cwd;
    const char* cpus;
    const char* mask;
    long argc;
    const char* argv; /* argc NUL-terminated strings */
    const char* env;  /* the rest: "K=V" to set, "K" to unset */
    const char* end;
};

static void split_request(const char* body, size_t n, struct request* r) {
    const char* p = body + strlen(body) + 1; /* "spawn" */
    r->cwd = p;
    p += strlen(p) + 1;
    r->cpus = p;
    p += strlen(p) + 1;
    r->mask = p;
    p += strlen(p) + 1;
    r->argc = strtol(p, NULL, 10);
    p += strlen(p) + 1;
    r->argv = p;
    for (long i = 0; i < r->argc; ++i) p += strlen(p) + 1;
    r->env = p;
    r->end = body + n;
}

/* Writes the member's own variables over the room the agent left in the
 * zygote's initial environment block (see _zygote._publish_environ, the
 * double fork's version): identity first, then the rest but the target.
 * The zygote cleared the room at its start: only the pages written here
 * become the member's own. */
static void publish_environ(const struct request* r, char* room_at, size_t room) {
    if (room_at == NULL || room == 0) return;
    size_t used = 0;
    for (int pass = 0; pass < 2; ++pass) {
        for (const char* kv = r->env; kv < r->end; kv += strlen(kv) + 1) {
            const char* eq = strchr(kv, '=');
            size_t len = strlen(kv);
            if (eq == NULL || eq == kv) continue;
            if (is_identity(kv, len) != (pass == 0)) continue;
            if (pass == 1 && strncmp(kv, "DRAGON_PY_TARGET", 16) == 0) continue;
            if (used + len + 1 > room) {
                pass = 2;
                break;
            }
            memcpy(room_at + used, kv, len + 1);
            used += len + 1;
        }
    }
    /* The rest was cleared once by the zygote, but for the variable's name. */
    size_t name = sizeof "DRAGON_ZYGOTE_ENV_ROOM=" - 1;
    memset(room_at + used, 0, (used < name ? name + 1 : used + 1) - used);
}

static int same_name(const char* a, const char* b) { /* "K=..." or "K" against "K=..." */
    while (*a != '\0' && *a != '=' && *a == *b) ++a, ++b;
    return (*a == '\0' || *a == '=') && *b == '=';
}

/* libc's environment with the request's changes, in a new array whose
 * strings are the request's own (the body stays for the member's life):
 * setenv would malloc each string and the array from the zygote's heap,
 * writing (and so copying) a page of it per chunk it carves. */
static int set_environ(const struct request* r) {
    extern char** environ;
    size_t have = 0, adds = 0, bytes = 0;
    while (environ != NULL && environ[have] != NULL) ++have;
    for (const char* kv = r->env; kv < r->end; kv += strlen(kv) + 1) ++adds;
    bytes = (have + adds + 1) * sizeof(char*);
    char** env = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (env == MAP_FAILED) return errno;
    size_t n = 0;
    for (size_t i = 0; i < have; ++i) env[n++] = environ[i];
    for (char* kv = (char*)r->env; kv < r->end; kv += strlen(kv) + 1) {
        const char* eq = strchr(kv, '=');
        if (kv[0] == '\0' || eq == kv) continue;
        size_t at = 0;
        while (at < n && !same_name(kv, env[at])) ++at;
        if (eq == NULL) { /* unset */
            if (at < n) env[at] = env[--n];
        } else if (at < n) {
            env[at] = kv;
        } else {
            env[n++] = kv;
        }
    }
    env[n] = NULL;
    environ = env;
    return 0;
}

static int close_from_3(void) {
#ifdef SYS_close_range
    if (syscall(SYS_close_range, 3u, ~0u, 0u) == 0) return 0;
#endif
    long max = sysconf(_SC_OPEN_MAX);
    if (max < 0 || max > (1L << 20)) max = 1L << 20;
    for (long fd = 3; fd < max; ++fd) (void)close((int)fd);
    return 0;
}

/* The member's process group, stdio, directory, cpus, environment and
 * parent, as _zygote._become sets them; 0, or an errno with *step set.
 * Signals stay blocked (Python unblocks them once its handlers are set). */
static int setup_member(const struct request* req, const int* fds, pid_t agent, char* room_at, size_t room,
                        const char** step) {
    const struct request r = *req;
    *step = "setpgid";
    if (setpgid(0, 0) != 0) return errno;
    *step = "stdio";
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null < 0) return errno;
    for (int target = 0, next = 0; target < 3; ++target) {
        int fd = r.mask[target] == '1' ? fds[next++] : null;
        if (dup2(fd, target) < 0) return errno;
    }
    *step = "chdir";
    if (r.cwd[0] != '\0' && chdir(r.cwd) != 0) return errno;
    *step = "affinity";
    if (r.cpus[0] != '\0') {
        cpu_set_t set;
        CPU_ZERO(&set);
        for (const char* c = r.cpus; *c != '\0';) {
            char* after;
            long cpu = strtol(c, &after, 10);
            if (cpu >= 0 && cpu < CPU_SETSIZE) CPU_SET((int)cpu, &set);
            c = *after == ',' ? after + 1 : after + (*after != '\0');
        }
        if (sched_setaffinity(0, sizeof set, &set) != 0) return errno;
    }
    *step = "environment";
    int bad = set_environ(&r);
    if (bad != 0) return bad;
    publish_environ(&r, room_at, room);
    /* Run only as the agent's child (it is, by CLONE_PARENT), and die with it. */
    *step = "parent";
    if (getppid() != agent) return ESRCH;
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0) return errno;
    if (getppid() != agent) return ESRCH;
    *step = "descriptors";
    return close_from_3();
}

/* (True, argv, [(K, V) set], [K unset]): what the member's Python needs of
 * its request (argv, os.environ's changes). */
static PyObject* member_state(const struct request* req) {
    const struct request r = *req;
    PyObject* argv = PyList_New(0);
    PyObject* sets = PyList_New(0);
    PyObject* unsets = PyList_New(0);
    if (argv == NULL || sets == NULL || unsets == NULL) goto fail;
    const char* p = r.argv;
    for (long i = 0; i < r.argc; ++i, p += strlen(p) + 1) {
        PyObject* a = PyUnicode_DecodeFSDefault(p);
        if (a == NULL || PyList_Append(argv, a) != 0) {
            Py_XDECREF(a);
            goto fail;
        }
        Py_DECREF(a);
    }
    for (const char* kv = r.env; kv < r.end; kv += strlen(kv) + 1) {
        const char* eq = strchr(kv, '=');
        if (kv[0] == '\0' || eq == kv) continue;
        PyObject* item = eq == NULL ? PyBytes_FromString(kv)
                                    : Py_BuildValue("(y#y)", kv, (Py_ssize_t)(eq - kv), eq + 1);
        if (item == NULL || PyList_Append(eq == NULL ? unsets : sets, item) != 0) {
            Py_XDECREF(item);
            goto fail;
        }
        Py_DECREF(item);
    }
    return Py_BuildValue("(ONNN)", Py_True, argv, sets, unsets);
fail:
    Py_XDECREF(argv);
    Py_XDECREF(sets);
    Py_XDECREF(unsets);
    return NULL;
}

/* (False, body, fds): a request the kernel would not clone, for Python to fork. */
static PyObject* refused_result(const char* body, size_t n, const int* fds, int nfds) {
    PyObject* list = PyList_New(nfds);
    if (list == NULL) return NULL;
    for (int i = 0; i < nfds; ++i) PyList_SET_ITEM(list, i, PyLong_FromLong(fds[i]));
    return Py_BuildValue("(Oy#N)", Py_False, body, (Py_ssize_t)n, list);
}

/* serve(sock, agent, room_at, room_len, identity) -> (True, argv, sets,
 * unsets) in a member, set up (setup_member); (False, body, fds) in the
 * zygote for a request the kernel refused to clone (the caller forks it
 * otherwise and serves on in Python). Never returns in the zygote otherwise:
 * end of file on the socket is exit 0, a broken one exit 1. A member whose
 * set-up fails says why on its stderr and exits 127, as _become's. */
static PyObject* serve(PyObject* self, PyObject* args) {
    (void)self;
    int sock;
    long agent;
    unsigned long long room_at;
    Py_ssize_t room_len, ident_len;
    const char* ident;
    if (!PyArg_ParseTuple(args, "ilKny#", &sock, &agent, &room_at, &room_len, &ident, &ident_len)) return NULL;
    if (ident_len < 0 || (size_t)ident_len >= sizeof identity) {
        PyErr_SetString(PyExc_ValueError, "identity: too long");
        return NULL;
    }
    memcpy(identity, ident, (size_t)ident_len);
    identity[ident_len] = '\0';
    identity_len = (size_t)ident_len;
    struct forker f;
    const char* no = forker_init(&f);
    if (no != NULL) return refuse(no);
    char* body = NULL;
    size_t cap = 0;
    for (;;) {
        int fds[MAX_FDS];
        int nfds = 0;
        unsigned char head[4];
        int r = read_exact(sock, (char*)head, 4, fds, &nfds);
        if (r == 0) _exit(0);
        size_t n = head[0] | (head[1] << 8u) | (head[2] << 16u) | ((size_t)head[3] << 24u);
        if (r > 0 && n > MAX_FRAME) {
            errno = EMSGSIZE;
            r = -1;
        }
        if (r > 0 && n + 1 > cap) {
            char* nb = realloc(body, n + 1);
            if (nb == NULL) {
                errno = ENOMEM;
                r = -1;
            } else {
                body = nb;
                cap = n + 1;
            }
        }
        if (r > 0 && n > 0) r = read_exact(sock, body, n, fds, &nfds) > 0 ? 1 : -1;
        if (r < 0) {
            dprintf(2, "dragon zygote: reading the agent's socket: %s; exiting\n", strerror(errno));
            _exit(1);
        }
        body[n] = '\0';
        char why[600];
        check_request(body, n, nfds, why, sizeof why);
        if (why[0] != '\0') {
            for (int i = 0; i < nfds; ++i) close(fds[i]);
            char text[620];
            snprintf(text, sizeof text, "err %s", why);
            if (answer(sock, text) != 0) _exit(1);
            continue;
        }
        /* The member starts with every signal blocked (a group stopped right
         * after its start signals members still setting up): its set-up
         * unblocks them once its own handlers are in place. Python's
         * before-fork hooks are not run here: they take locks no other
         * thread can hold (this is the only one), and the member's
         * after-fork hooks reset them all the same. */
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_BLOCK, &all, &old);
        long pid = clone_member(&f);
        int err = errno;
        if (pid == 0) {
            PyOS_AfterFork_Child();
            const char* step = "";
            struct request req;
            split_request(body, n, &req);
            int bad = setup_member(&req, fds, (pid_t)agent, (char*)(uintptr_t)room_at,
                                   room_len > 0 ? (size_t)room_len : 0, &step);
            if (bad != 0) {
                dprintf(2, "dragon: the fast-started process %d could not start (%s): %s [errno %d]\n", (int)getpid(),
                        step, strerror(bad), bad);
                _exit(127);
            }
            /* (body stays: libc's environment points into it) */
            return member_state(&req);
        }
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (pid < 0 && (err == ENOSYS || err == EINVAL || err == EPERM)) {
            dprintf(2, "dragon zygote: one-fork start refused (clone(CLONE_PARENT): %s); forking twice from now on\n",
                    strerror(err));
            PyObject* out = refused_result(body, n, fds, nfds);
            free(body);
            return out;
        }
        for (int i = 0; i < nfds; ++i) close(fds[i]);
        char text[128];
        if (pid < 0) snprintf(text, sizeof text, "err %d fork: %s", err, strerror(err));
        else snprintf(text, sizeof text, "ok %ld", pid);
        if (answer(sock, text) != 0) _exit(1);
    }
}

static PyObject* die_with_parent(PyObject* self, PyObject* arg) {
    (void)self;
    long sig = PyLong_AsLong(arg);
    if (sig == -1 && PyErr_Occurred()) return NULL;
    if (prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0) return PyErr_SetFromErrno(PyExc_OSError);
    Py_RETURN_NONE;
}

static PyObject* unblock_signals(PyObject* self, PyObject* unused) {
    (void)self;
    (void)unused;
    sigset_t none;
    sigemptyset(&none);
    int e = pthread_sigmask(SIG_SETMASK, &none, NULL);
    if (e != 0) {
        errno = e;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    /* A signal that came while blocked is pending in Python now: run its
     * handler (a SIGINT's KeyboardInterrupt) here, as pthread_sigmask does. */
    if (PyErr_CheckSignals() != 0) return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"serve", serve, METH_VARARGS,
     "serve(sock, agent, room_at, room_len, identity) -> (True, argv, sets, unsets) in each member, set up; "
     "(False, body, fds) in the zygote for a request it could not clone. The zygote's loop over the agent's "
     "spawn requests. OSError(ENOTSUP) when this process cannot clone members (not single-threaded, no tid "
     "address)."},
    {"unblock_signals", unblock_signals, METH_NOARGS, "unblock_signals(): an empty signal mask."},
    {"die_with_parent", die_with_parent, METH_O,
     "die_with_parent(sig): PR_SET_PDEATHSIG (the signal this process gets when its parent ends)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "dragon._zfork", "The fork of a node's fast-start interpreter (dragon._zygote).", -1,
    methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__zfork(void) { return PyModule_Create(&module); }
