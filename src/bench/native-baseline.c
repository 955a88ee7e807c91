/*
 * Native baseline for `bun run bench`: the same output-channel traffic as the
 * agent (17-byte little-endian header + payload over a Unix stream socket),
 * written the simplest fast way C allows, so the agent's figures have a
 * yardstick measured on the same machine in the same run.
 *
 *   native-baseline send <socket> flood <frames> <size>
 *   native-baseline send <socket> live <frames/s> <seconds> <size>
 *   native-baseline recv <socket> <frames> <size> <warm-up frames> [live]
 *   native-baseline listen <socket>        (start-up: listen, accept one client, exit when it hangs up)
 *
 * The sender is the server (like the agent's `output serve`): it listens,
 * prints "LISTENING", accepts one client and streams. Flood batches whole
 * frames into 64 KiB writes; live writes one frame per tick, paced against
 * one anchor with clock_nanosleep(TIMER_ABSTIME). Each frame is stamped with
 * CLOCK_REALTIME ns and carries its sequence number in payload bytes 0..3.
 *
 * The receiver connects (retrying while the server is not there yet), reads
 * into a 64 KiB buffer, validates every header (magic, type, length <= 4096)
 * and every OpusFrame's size and sequence number, and in live mode records
 * the one-way latency of every frame (read time minus header timestamp).
 *
 * Both print one line "RESULT {json}" at the end: frames, bytes, the timing
 * window, and CPU seconds (getrusage) spent in that window. Socket buffers
 * are set to 128 KiB each way, like the agent's default preset.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAGIC 0x4A4B4F55u
#define HEADER 17
#define MAX_PAYLOAD 4096
#define BATCH (64 * 1024)
#define SOCKET_BUFFER (128 * 1024)

static void die(const char *what) {
  fprintf(stderr, "native-baseline: %s: %s\n", what, strerror(errno));
  exit(1);
}

static void fail(const char *what) {
  fprintf(stderr, "native-baseline: %s\n", what);
  exit(1);
}

static int64_t realtime_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_REALTIME, &t);
  return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static int64_t monotonic_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static double cpu_seconds(void) {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_utime.tv_usec / 1e6 + u.ru_stime.tv_sec + u.ru_stime.tv_usec / 1e6;
}

/* The window's CPU split, faults and switches, as the agent's drivers report them. */
static struct rusage usage_at(void) {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return u;
}

static void print_usage(struct rusage a, struct rusage b) {
  double user = (b.ru_utime.tv_sec - a.ru_utime.tv_sec) + (b.ru_utime.tv_usec - a.ru_utime.tv_usec) / 1e6;
  double sys = (b.ru_stime.tv_sec - a.ru_stime.tv_sec) + (b.ru_stime.tv_usec - a.ru_stime.tv_usec) / 1e6;
  printf("\"usage\":{\"userSeconds\":%.6f,\"systemSeconds\":%.6f,\"minorFaults\":%ld,\"voluntarySwitches\":%ld,"
         "\"involuntarySwitches\":%ld},",
         user, sys, b.ru_minflt - a.ru_minflt, b.ru_nvcsw - a.ru_nvcsw, b.ru_nivcsw - a.ru_nivcsw);
}

/* Peak RSS of this image: VmHWM (getrusage's ru_maxrss survives exec, so it can report the parent's). */
static long max_rss_kib(void) {
  char line[256];
  long kib = 0;
  FILE *f = fopen("/proc/self/status", "r");
  if (!f) return 0;
  while (fgets(line, sizeof line, f)) {
    if (sscanf(line, "VmHWM: %ld", &kib) == 1) break;
  }
  fclose(f);
  return kib;
}

static void put_u32(uint8_t *p, uint32_t v) {
  p[0] = v; p[1] = v >> 8; p[2] = v >> 16; p[3] = v >> 24;
}

static uint32_t get_u32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put_i64(uint8_t *p, int64_t v) {
  uint64_t u = (uint64_t)v;
  for (int i = 0; i < 8; i++) p[i] = (uint8_t)(u >> (8 * i));
}

static int64_t get_i64(const uint8_t *p) {
  uint64_t u = 0;
  for (int i = 0; i < 8; i++) u |= (uint64_t)p[i] << (8 * i);
  return (int64_t)u;
}

/* Header + payload of frame `seq` at p; the payload is filler after the sequence number. */
static void encode(uint8_t *p, uint32_t seq, uint32_t size) {
  put_u32(p, MAGIC);
  p[4] = 0;
  put_u32(p + 5, size);
  put_i64(p + 9, realtime_ns());
  if (size >= 4) put_u32(p + HEADER, seq);
}

static void set_buffers(int fd) {
  int size = SOCKET_BUFFER;
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
}

static struct sockaddr_un address(const char *path) {
  struct sockaddr_un a;
  memset(&a, 0, sizeof a);
  a.sun_family = AF_UNIX;
  if (strlen(path) >= sizeof a.sun_path) fail("socket path too long");
  strcpy(a.sun_path, path);
  return a;
}

static int listen_and_accept(const char *path, int announce) {
  struct sockaddr_un a = address(path);
  int server = socket(AF_UNIX, SOCK_STREAM, 0);
  if (server < 0) die("socket");
  if (bind(server, (struct sockaddr *)&a, sizeof a) < 0) die("bind");
  if (listen(server, 1) < 0) die("listen");
  if (announce) {
    printf("LISTENING\n");
    fflush(stdout);
  }
  int client = accept(server, NULL, NULL);
  if (client < 0) die("accept");
  close(server);
  unlink(path);
  set_buffers(client);
  return client;
}

static void write_all(int fd, const uint8_t *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      die("write");
    }
    p += w;
    n -= (size_t)w;
  }
}

static int send_flood(const char *path, long frames, uint32_t size) {
  static uint8_t batch[BATCH];
  uint32_t message = HEADER + size;
  long per_batch = BATCH / message;
  int fd = listen_and_accept(path, 1);
  struct rusage u0 = usage_at();
  double cpu0 = cpu_seconds();
  int64_t t0 = monotonic_ns();
  long writes = 0;
  memset(batch, 0xA5, sizeof batch);
  for (long seq = 0; seq < frames;) {
    long n = frames - seq < per_batch ? frames - seq : per_batch;
    for (long i = 0; i < n; i++) encode(batch + i * message, (uint32_t)(seq + i), size);
    write_all(fd, batch, (size_t)(n * message));
    seq += n;
    writes++;
  }
  int64_t t1 = monotonic_ns();
  double cpu1 = cpu_seconds();
  struct rusage u1 = usage_at();
  shutdown(fd, SHUT_WR);
  char sink[256];
  while (read(fd, sink, sizeof sink) > 0) {} /* wait for the receiver to finish and close */
  close(fd);
  printf("RESULT {");
  print_usage(u0, u1);
  printf("\"side\":\"send\",\"frames\":%ld,\"bytes\":%ld,\"writes\":%ld,\"windowMs\":%.3f,"
         "\"cpuSeconds\":%.6f,\"windowFrames\":%ld,\"maxRssKiB\":%ld}\n",
         frames, frames * (long)message, writes, (t1 - t0) / 1e6, cpu1 - cpu0, frames, max_rss_kib());
  return 0;
}

static int send_live(const char *path, long rate, double seconds, uint32_t size) {
  uint8_t frame[HEADER + MAX_PAYLOAD];
  long frames = (long)(rate * seconds + 0.5);
  int64_t period = 1000000000 / rate;
  int fd = listen_and_accept(path, 1);
  memset(frame, 0xA5, sizeof frame);
  double cpu_start = 0;
  struct rusage u0 = usage_at();
  int64_t window_start = 0;
  struct timespec anchor;
  clock_gettime(CLOCK_MONOTONIC, &anchor);
  int64_t anchor_ns = (int64_t)anchor.tv_sec * 1000000000 + anchor.tv_nsec;
  for (long seq = 0; seq < frames; seq++) {
    int64_t due = anchor_ns + seq * period;
    struct timespec t = {.tv_sec = due / 1000000000, .tv_nsec = due % 1000000000};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &t, NULL) == EINTR) {}
    /* The first second is warm-up: CPU is counted from frame `rate` on. */
    if (seq == rate || (seq == 0 && frames <= rate)) {
      cpu_start = cpu_seconds();
      u0 = usage_at();
      window_start = monotonic_ns();
    }
    encode(frame, (uint32_t)seq, size);
    write_all(fd, frame, HEADER + size);
  }
  int64_t window_end = monotonic_ns();
  double cpu_end = cpu_seconds();
  struct rusage u1 = usage_at();
  shutdown(fd, SHUT_WR);
  char sink[256];
  while (read(fd, sink, sizeof sink) > 0) {}
  close(fd);
  printf("RESULT {");
  print_usage(u0, u1);
  printf("\"side\":\"send\",\"frames\":%ld,\"bytes\":%ld,\"windowMs\":%.3f,\"cpuSeconds\":%.6f,"
         "\"windowFrames\":%ld,\"maxRssKiB\":%ld}\n",
         frames, frames * (long)(HEADER + size), (window_end - window_start) / 1e6, cpu_end - cpu_start,
         frames > rate ? frames - rate : frames, max_rss_kib());
  return 0;
}

static int connect_retry(const char *path) {
  struct sockaddr_un a = address(path);
  for (int attempt = 0; attempt < 10000; attempt++) {
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0) die("socket");
    set_buffers(fd);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0) return fd;
    if (errno != ENOENT && errno != ECONNREFUSED) die("connect");
    close(fd);
    usleep(1000);
  }
  fail("connect: gave up after 10 s");
  return -1;
}

static int compare_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* Nearest rank, as the bench reports percentiles everywhere. */
static double percentile(const double *sorted, long n, int percent) {
  long rank = (percent * n + 99) / 100;
  if (rank < 1) rank = 1;
  return sorted[rank - 1];
}

static int recv_frames(const char *path, long frames, uint32_t size, long warmup, int live) {
  static uint8_t buffer[BATCH + HEADER + MAX_PAYLOAD];
  double *latency = live ? calloc((size_t)frames, sizeof(double)) : NULL;
  if (live && !latency) fail("out of memory");
  int fd = connect_retry(path);
  size_t held = 0;
  long received = 0, bytes = 0, reads = 0;
  int64_t first = 0, last = 0;
  double cpu_start = 0, cpu_end = 0;
  struct rusage u0 = usage_at(), u1;
  long window_frames = -1; /* frames received before the timing window opened */
  while (received < frames) {
    ssize_t r = read(fd, buffer + held, BATCH);
    if (r < 0) {
      if (errno == EINTR) continue;
      die("read");
    }
    if (r == 0) break;
    int64_t now_real = live ? realtime_ns() : 0;
    int64_t now = monotonic_ns();
    reads++;
    /* The window opens at the first read once `warmup` frames are in (flood: the first read). */
    if (window_frames < 0 && received >= warmup) {
      window_frames = received;
      first = now;
      cpu_start = cpu_seconds();
      u0 = usage_at();
    }
    bytes += r;
    size_t end = held + (size_t)r, at = 0;
    while (end - at >= HEADER) {
      const uint8_t *h = buffer + at;
      if (get_u32(h) != MAGIC) fail("bad magic");
      if (h[4] > 4) fail("unknown type");
      uint32_t length = get_u32(h + 5);
      if (length > MAX_PAYLOAD) fail("frame too large");
      if (end - at < HEADER + length) break;
      if (h[4] == 0) {
        if (length != size) fail("unexpected frame size");
        if (size >= 4 && get_u32(h + HEADER) != (uint32_t)received) fail("frame out of sequence");
        if (live) latency[received] = (now_real - get_i64(h + 9)) / 1e6;
        received++;
      }
      at += HEADER + length;
    }
    held = end - at;
    if (held > 0) memmove(buffer, buffer + at, held);
    last = now;
  }
  cpu_end = cpu_seconds();
  u1 = usage_at();
  close(fd);
  /* Percentiles over the frames after warm-up (like the CPU window); the max also over all frames. */
  double p50 = 0, p99 = 0, max = 0, max_all = 0;
  long from = warmup < received ? warmup : 0, counted = received - from;
  if (live && received > 0) {
    for (long i = 0; i < received; i++) if (latency[i] > max_all) max_all = latency[i];
    qsort(latency + from, (size_t)counted, sizeof(double), compare_double);
    p50 = percentile(latency + from, counted, 50);
    p99 = percentile(latency + from, counted, 99);
    max = latency[received - 1];
  }
  printf("RESULT {");
  print_usage(u0, u1);
  printf("\"side\":\"recv\",\"frames\":%ld,\"bytes\":%ld,\"reads\":%ld,\"windowMs\":%.3f,"
         "\"cpuSeconds\":%.6f,\"windowFrames\":%ld,\"latencyMs\":{\"p50\":%.4f,\"p99\":%.4f,\"max\":%.4f,\"maxAll\":%.4f,\"frames\":%ld},"
         "\"maxRssKiB\":%ld}\n",
         received, bytes, reads, (last - first) / 1e6, cpu_end - cpu_start, received - (window_frames < 0 ? 0 : window_frames), p50, p99, max, max_all, counted,
         max_rss_kib());
  free(latency);
  return received == frames ? 0 : 1;
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (argc >= 3 && strcmp(argv[1], "listen") == 0) {
    /* Wait for the prober to hang up: closing first can fail its connect with ECONNRESET. */
    int fd = listen_and_accept(argv[2], 0);
    char sink[64];
    while (read(fd, sink, sizeof sink) > 0) {}
    close(fd);
    return 0;
  }
  if (argc >= 6 && strcmp(argv[1], "send") == 0 && strcmp(argv[3], "flood") == 0) {
    return send_flood(argv[2], atol(argv[4]), (uint32_t)atol(argv[5]));
  }
  if (argc >= 7 && strcmp(argv[1], "send") == 0 && strcmp(argv[3], "live") == 0) {
    return send_live(argv[2], atol(argv[4]), atof(argv[5]), (uint32_t)atol(argv[6]));
  }
  if (argc >= 6 && strcmp(argv[1], "recv") == 0) {
    return recv_frames(argv[2], atol(argv[3]), (uint32_t)atol(argv[4]), atol(argv[5]),
                       argc >= 7 && strcmp(argv[6], "live") == 0);
  }
  fprintf(stderr,
          "usage: native-baseline send <socket> flood <frames> <size>\n"
          "       native-baseline send <socket> live <frames/s> <seconds> <size>\n"
          "       native-baseline recv <socket> <frames> <size> <warm-up frames> [live]\n"
          "       native-baseline listen <socket>\n");
  return 2;
}
