/* The benchmarks' probe: one small static program, so that what is measured is the supervisor,
 * not the probe. Every timestamp is CLOCK_MONOTONIC in nanoseconds, comparable with Python's
 * time.clock_gettime_ns(time.CLOCK_MONOTONIC) in the benchmark process.
 *
 *   probe signals        print "ready"; then one line "SIGNO NS" per SIGTERM/SIGUSR1 received
 *                        (sigwaitinfo: no handler, no interpreter between the kernel and the
 *                        timestamp); SIGUSR2 exits 0.
 *   probe stamp          print "S NS" and exit 0 (start-up: the child's first instruction).
 *   probe exec-stamp ARG...  print "E NS", then execvp ARG... (start-up: the supervisor's exec).
 *   probe exit-on-stdin  print "ready", read one byte from stdin, print "X NS", _exit(0).
 *   probe ignore-term    ignore SIGTERM, print "ready", sleep until killed.
 *   probe orphans N      as a container's job: make N orphans (their parent exits), release them
 *                        all at once, and time how long their zombies stay unreaped (see below).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void say(const char *fmt, long long a, long long b) {
    char line[96];
    int n = snprintf(line, sizeof line, fmt, a, b);
    if (write(1, line, (size_t)n) != n) _exit(3);
}

static int signals(void) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGUSR2);
    sigprocmask(SIG_BLOCK, &set, NULL);
    say("ready %lld %lld\n", getpid(), 0);
    for (;;) {
        int signo = sigwaitinfo(&set, NULL);
        int64_t t = now_ns();
        if (signo < 0) {
            if (errno == EINTR) continue;
            return 2;
        }
        if (signo == SIGUSR2) return 0;
        say("%lld %lld\n", signo, t);
    }
}

/* Count zombies in /proc (this PID namespace's, under --mount-proc). */
static int zombies(void) {
    DIR *proc = opendir("/proc");
    struct dirent *d;
    int count = 0;
    char path[300], buf[256];
    if (!proc) return -1;
    while ((d = readdir(proc)) != NULL) {
        if (d->d_name[0] < '0' || d->d_name[0] > '9') continue;
        snprintf(path, sizeof path, "/proc/%s/stat", d->d_name);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = 0;
        char *close_paren = strrchr(buf, ')');
        if (close_paren && close_paren[1] == ' ' && close_paren[2] == 'Z') count++;
    }
    closedir(proc);
    return count;
}

/* The job: an intermediate process forks N children blocked on a pipe, then exits, so the N
 * become orphans of PID 1 (the supervisor under test). Closing the pipe releases them all at
 * once; each records its exit time. The job then scans /proc until no zombie is left and prints
 *   N LAST_EXIT_NS ZERO_LOWER_NS ZERO_UPPER_NS MAX_ZOMBIES SCANS
 * where the zero bounds are the end of the last scan that still saw a zombie and the end of the
 * first that saw none. */
static int orphans(int n) {
    int release[2], results[2];
    if (pipe(release) || pipe(results)) return 2;
    pid_t mid = fork();
    if (mid < 0) return 2;
    if (mid == 0) {
        close(release[1]);
        close(results[0]);
        for (int i = 0; i < n; i++) {
            pid_t c = fork();
            if (c < 0) { perror("fork"); _exit(4); }
            if (c == 0) {
                char b;
                while (read(release[0], &b, 1) < 0 && errno == EINTR) {}
                int64_t t = now_ns();
                if (write(results[1], &t, sizeof t) != sizeof t) _exit(5);
                _exit(0);
            }
        }
        _exit(0);
    }
    close(release[0]);
    close(results[1]);
    int status;
    waitpid(mid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) return 4;
    close(release[1]);  /* every orphan sees EOF now */
    int64_t last = 0, t;
    long got = 0;
    ssize_t r;
    while ((r = read(results[0], &t, sizeof t)) == sizeof t) {
        got++;
        if (t > last) last = t;
    }
    int64_t lower = now_ns(), upper;
    int max_z = 0, scans = 0;
    for (;;) {
        int z = zombies();
        upper = now_ns();
        scans++;
        if (z > max_z) max_z = z;
        if (z == 0) break;
        lower = upper;
        if (upper - last > 30LL * 1000000000) return 6;  /* never reaped: report a failure */
    }
    printf("%ld %lld %lld %lld %d %d\n", got, (long long)last, (long long)lower,
           (long long)upper, max_z, scans);
    return got == n ? 0 : 7;
}

int main(int argc, char **argv) {
    if (argc < 2) return 64;
    const char *mode = argv[1];
    if (!strcmp(mode, "stamp")) {
        say("S %lld %lld\n", now_ns(), 0);
        return 0;
    }
    if (!strcmp(mode, "exec-stamp") && argc > 2) {
        say("E %lld %lld\n", now_ns(), 0);
        execvp(argv[2], argv + 2);
        perror(argv[2]);
        return 127;
    }
    if (!strcmp(mode, "signals")) return signals();
    if (!strcmp(mode, "exit-on-stdin")) {
        char b;
        say("ready %lld %lld\n", getpid(), 0);
        while (read(0, &b, 1) < 0 && errno == EINTR) {}
        say("X %lld %lld\n", now_ns(), 0);
        _exit(0);
    }
    if (!strcmp(mode, "ignore-term")) {
        signal(SIGTERM, SIG_IGN);
        say("ready %lld %lld\n", getpid(), 0);
        for (;;) pause();
    }
    if (!strcmp(mode, "orphans") && argc > 2) return orphans(atoi(argv[2]));
    return 64;
}
