/* A rank for launch benchmarks: writes one byte to the FIFO named by argv[1]
   ("I am running"), then sleeps argv[2] seconds. */
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char** argv) {
    if (argc > 1 && argv[1][0] != '\0') {
        int fd = open(argv[1], O_WRONLY);
        if (fd >= 0) {
            if (write(fd, "x", 1) != 1) return 1;
            close(fd);
        }
    }
    sleep(argc > 2 ? (unsigned)atoi(argv[2]) : 0);
    return 0;
}
