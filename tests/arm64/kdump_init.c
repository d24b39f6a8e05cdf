/* /init of a test initramfs (hosted, static aarch64; not purgatory code): prints the files of a kexecfw
 * sysroot on the console, base64 encoded, then powers off. Framing, one file at a time:
 *   KEXECFW-FILE <path> <size> <sent>    (sent <= size: trailing zero bytes are not sent)
 *   <base64 lines>
 * and KEXECFW-SNAPSHOT-END at the end. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <unistd.h>

#define MAX_FILE (2 << 20)

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void emit(const char *path, const unsigned char *data, size_t size)
{
	size_t sent = size, i;
	char line[80];
	int n = 0;

	while (sent && data[sent - 1] == 0)
		sent--;
	printf("KEXECFW-FILE %s %zu %zu\n", path, size, sent);
	for (i = 0; i < sent; i += 3) {
		unsigned v = data[i] << 16 | (i + 1 < sent ? data[i + 1] << 8 : 0) | (i + 2 < sent ? data[i + 2] : 0);
		line[n++] = b64[v >> 18 & 63];
		line[n++] = b64[v >> 12 & 63];
		line[n++] = i + 1 < sent ? b64[v >> 6 & 63] : '=';
		line[n++] = i + 2 < sent ? b64[v & 63] : '=';
		if (n >= 76) {
			line[n] = 0;
			puts(line);
			n = 0;
		}
	}
	if (n) {
		line[n] = 0;
		puts(line);
	}
}

static size_t slurp(const char *path, unsigned char *buf, size_t limit)
{
	int fd = open(path, O_RDONLY);
	size_t got = 0;
	ssize_t n;

	if (fd < 0)
		return (size_t)-1;
	while (got < limit && (n = read(fd, buf + got, limit - got)) > 0)
		got += (size_t)n;
	close(fd);
	return got;
}

static void dump(const char *rel, size_t limit)
{
	static unsigned char buf[MAX_FILE];
	char path[256];
	size_t n;

	snprintf(path, sizeof(path), "/%s", rel);
	n = slurp(path, buf, limit < MAX_FILE ? limit : MAX_FILE);
	if (n != (size_t)-1)
		emit(rel, buf, n);
}

int main(void)
{
	static unsigned char text[1 << 16];
	static char kallsyms[4096];
	char rel[128];
	size_t klen = 0;
	int first = 0, last = -1, cpu;
	FILE *f;
	char line[512];

	mount("devtmpfs", "/dev", "devtmpfs", 0, NULL);
	mount("proc", "/proc", "proc", 0, NULL);
	mount("sysfs", "/sys", "sysfs", 0, NULL);
	int fd = open("/dev/console", O_RDWR);
	if (fd >= 0) {
		dup2(fd, 0);
		dup2(fd, 1);
		dup2(fd, 2);
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("KEXECFW-SNAPSHOT-BEGIN\n");
	dump("proc/iomem", MAX_FILE);
	dump("proc/cmdline", MAX_FILE);
	dump("proc/sys/kernel/osrelease", MAX_FILE);
	dump("proc/kcore", 1 << 16);
	dump("sys/kernel/vmcoreinfo", MAX_FILE);
	dump("sys/kernel/kexec_crash_size", MAX_FILE);
	dump("sys/firmware/fdt", MAX_FILE);
	dump("sys/devices/system/cpu/possible", MAX_FILE);
	dump("sys/devices/system/cpu/present", MAX_FILE);
	dump("sys/devices/system/cpu/online", MAX_FILE);
	if (slurp("/sys/devices/system/cpu/possible", text, sizeof(text) - 1) != (size_t)-1)
		sscanf((char *)text, "%d-%d", &first, &last);
	for (cpu = first; cpu <= (last < first ? first : last); cpu++) {
		snprintf(rel, sizeof(rel), "sys/devices/system/cpu/cpu%d/crash_notes", cpu);
		dump(rel, MAX_FILE);
		snprintf(rel, sizeof(rel), "sys/devices/system/cpu/cpu%d/crash_notes_size", cpu);
		dump(rel, MAX_FILE);
	}
	f = fopen("/proc/kallsyms", "r");
	while (f && fgets(line, sizeof(line), f)) {
		size_t len = strlen(line);
		if ((len > 7 && !strcmp(line + len - 7, " _text\n")) || (len > 8 && !strcmp(line + len - 8, " _stext\n"))) {
			if (klen + len < sizeof(kallsyms)) {
				memcpy(kallsyms + klen, line, len);
				klen += len;
			}
		}
	}
	if (f)
		fclose(f);
	emit("proc/kallsyms", (unsigned char *)kallsyms, klen);
	printf("KEXECFW-SNAPSHOT-END\n");
	sync();
	reboot(RB_POWER_OFF);
	return 0;
}
