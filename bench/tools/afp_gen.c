/*
 * afp_gen: a minimal native frame generator for the phy benchmarks (bench/phy_vs_testpmd.py).
 *
 * Sends fixed-size Ethernet frames (dst 02:00:00:00:00:02, src 02:00:00:00:00:01, ethertype
 * 0x88b5, local experimental) on one interface through an AF_PACKET socket with
 * PACKET_QDISC_BYPASS, one sendmmsg(2) per burst. With --rate 0 it sends as fast as the kernel
 * takes frames; with --rate PPS it paces bursts against CLOCK_MONOTONIC (burst k leaves at
 * t0 + k * burst / PPS: a spin for gaps under 200 us, clock_nanosleep above).
 *
 *   afp_gen IFACE SECONDS [RATE_PPS=0] [BURST=64] [SIZE=64]
 *
 * Prints one JSON line on exit (also on SIGINT/SIGTERM):
 *   {"sent": N, "secs": S, "pps": P, "short": K, "errors": E, "last_errno": X}
 * where "short" counts sendmmsg calls that took fewer frames than offered and "errors" calls
 * that failed outright. Build: cc -O2 -o afp_gen afp_gen.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stop;

static void on_signal(int sig) { (void)sig; stop = 1; }

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void sleep_until(double when) {
    struct timespec t;
    t.tv_sec = (time_t)when;
    t.tv_nsec = (long)((when - (double)t.tv_sec) * 1e9);
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &t, NULL) == EINTR && !stop) {
    }
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s IFACE SECONDS [RATE_PPS=0] [BURST=64] [SIZE=64]\n", argv[0]);
        return 2;
    }
    const char *ifname = argv[1];
    double secs = atof(argv[2]);
    double rate = argc > 3 ? atof(argv[3]) : 0.0;
    int burst = argc > 4 ? atoi(argv[4]) : 64;
    int size = argc > 5 ? atoi(argv[5]) : 64;
    if (burst < 1 || burst > 1024 || size < 60 || size > 1514 || secs <= 0 || rate < 0) {
        fprintf(stderr, "afp_gen: bad arguments\n");
        return 2;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    int fd = socket(AF_PACKET, SOCK_RAW, 0); /* protocol 0: send only, never receives */
    if (fd < 0) {
        perror("afp_gen: socket");
        return 1;
    }
    int one = 1;
    if (setsockopt(fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof one) < 0) {
        perror("afp_gen: PACKET_QDISC_BYPASS");
        return 1;
    }
    struct sockaddr_ll sll;
    memset(&sll, 0, sizeof sll);
    sll.sll_family = AF_PACKET;
    sll.sll_ifindex = (int)if_nametoindex(ifname);
    if (sll.sll_ifindex == 0) {
        fprintf(stderr, "afp_gen: no interface %s\n", ifname);
        return 1;
    }
    if (bind(fd, (struct sockaddr *)&sll, sizeof sll) < 0) {
        perror("afp_gen: bind");
        return 1;
    }

    unsigned char *frames = calloc((size_t)burst, 2048);
    struct mmsghdr *msgs = calloc((size_t)burst, sizeof *msgs);
    struct iovec *iov = calloc((size_t)burst, sizeof *iov);
    if (!frames || !msgs || !iov) {
        fprintf(stderr, "afp_gen: out of memory\n");
        return 1;
    }
    for (int i = 0; i < burst; i++) {
        unsigned char *p = frames + (size_t)i * 2048;
        static const unsigned char hdr[14] = {2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x88, 0xb5};
        memcpy(p, hdr, sizeof hdr);
        p[14] = (unsigned char)i; /* a little payload variety; irrelevant to the forwarders */
        iov[i].iov_base = p;
        iov[i].iov_len = (size_t)size;
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }

    long long sent = 0, shortcalls = 0, errors = 0;
    int last_errno = 0;
    double t0 = now(), t = t0, end = t0 + secs;
    long long bursts = 0;
    while (!stop && t < end) {
        if (rate > 0) {
            double due = t0 + (double)(bursts * burst) / rate;
            if (due > end)
                break;
            if (due - t > 200e-6)
                sleep_until(due - 50e-6);
            while ((t = now()) < due) {
            }
        }
        int r = sendmmsg(fd, msgs, (unsigned)burst, 0);
        if (r < 0) {
            errors++;
            last_errno = errno;
        } else {
            sent += r;
            if (r < burst)
                shortcalls++;
        }
        bursts++;
        if (rate > 0 || (bursts & 15) == 0)
            t = now();
    }
    t = now();
    printf("{\"sent\": %lld, \"secs\": %.6f, \"pps\": %.0f, \"short\": %lld, \"errors\": %lld, "
           "\"last_errno\": %d}\n",
           sent, t - t0, (double)sent / (t - t0), shortcalls, errors, last_errno);
    fflush(stdout);
    close(fd);
    return 0;
}
