/* /init of a test initramfs (hosted, static aarch64; not purgatory code). A kdump cycle driven from the
 * host over the serial console, with no Python in the guest:
 *
 * first kernel:  prints the files of a kexecfw sysroot, base64 encoded, one file at a time:
 *                  KEXECFW-FILE <path> <size> <sent>    (sent <= size: trailing zero bytes are not sent)
 *                  <base64 lines>
 *                then KEXECFW-SNAPSHOT-END, and reads the host's plan from the console:
 *                  SEG <mem> <memsz> file <path>        a file of this initramfs (/kernel, /next.cpio)
 *                  SEG <mem> <memsz> data <bytes>       followed by base64 lines and a line "."
 *                  LOAD <entry> <flags>
 *                calls kexec_load with it, then crashes the kernel through /proc/sysrq-trigger (a panic
 *                load) or reboots into the loaded kernel (reboot(RB_KEXEC), a normal load).
 * capture kernel (/proc/vmcore exists): prints /proc/vmcore's size, program headers and notes, and the
 *                DT /chosen values kexec passed, then powers off. */
#include <elf.h>
#include <fcntl.h>
#include <linux/kexec.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <termios.h>
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

static int unb64(int c)
{
	const char *p = c ? strchr(b64, c) : NULL;
	return p ? (int)(p - b64) : -1;
}

static size_t decode_line(const char *line, unsigned char *out)
{
	size_t n = 0;
	int acc = 0, bits = 0, v;

	for (; *line && *line != '\n' && *line != '\r'; line++) {
		if ((v = unb64(*line)) < 0)
			continue;       /* '=' padding */
		acc = (acc << 6) | v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[n++] = (unsigned char)(acc >> bits);
		}
	}
	return n;
}

static void hexprop(const char *label, const char *path)
{
	unsigned char buf[64];
	size_t n = slurp(path, buf, sizeof(buf));

	printf("%s=", label);
	for (size_t i = 0; n != (size_t)-1 && i < n; i++)
		printf("%02x", buf[i]);
	printf("\n");
}

static int capture(void)
{
	static unsigned char head[1 << 16];
	struct stat st;
	size_t n = slurp("/proc/vmcore", head, sizeof(head));
	Elf64_Ehdr *eh = (Elf64_Ehdr *)head;

	stat("/proc/vmcore", &st);
	printf("KEXECFW-CAPTURE vmcore-size=%lld\n", (long long)st.st_size);
	for (int i = 0; n != (size_t)-1 && i < eh->e_phnum; i++) {
		Elf64_Phdr *ph = (Elf64_Phdr *)(head + eh->e_phoff + i * sizeof(Elf64_Phdr));
		printf("KEXECFW-PHDR type=%u offset=%#llx vaddr=%#llx paddr=%#llx filesz=%#llx\n", ph->p_type,
		       (unsigned long long)ph->p_offset, (unsigned long long)ph->p_vaddr,
		       (unsigned long long)ph->p_paddr, (unsigned long long)ph->p_filesz);
		for (size_t pos = ph->p_offset; ph->p_type == PT_NOTE && pos + 12 <= ph->p_offset + ph->p_filesz &&
		     pos + 12 <= n;) {
			Elf64_Nhdr *nh = (Elf64_Nhdr *)(head + pos);
			printf("KEXECFW-NOTE name=%.*s type=%u descsz=%u\n", (int)(nh->n_namesz ? nh->n_namesz - 1 : 0),
			       (char *)(nh + 1), nh->n_type, nh->n_descsz);
			pos += 12 + ((nh->n_namesz + 3) & ~3u) + ((nh->n_descsz + 3) & ~3u);
		}
	}
	hexprop("KEXECFW-CHOSEN elfcorehdr", "/proc/device-tree/chosen/linux,elfcorehdr");
	hexprop("KEXECFW-CHOSEN usable", "/proc/device-tree/chosen/linux,usable-memory-range");
	printf("KEXECFW-CAPTURE-END\n");
	sync();
	reboot(RB_POWER_OFF);
	return 0;
}

static unsigned char *read_whole(const char *path, size_t *len)
{
	struct stat st;
	unsigned char *buf;

	if (stat(path, &st) || !(buf = malloc(st.st_size ? st.st_size : 1)))
		return NULL;
	*len = slurp(path, buf, st.st_size);
	return *len == (size_t)st.st_size ? buf : NULL;
}

static void load_and_crash(void)
{
	struct kexec_segment segs[KEXEC_SEGMENT_MAX];
	unsigned long long mem, memsz, entry, flags;
	char line[4096], kind[16], arg[256];
	int nr = 0;
	struct termios raw;

	if (tcgetattr(0, &raw) == 0) {
		cfmakeraw(&raw);
		tcsetattr(0, TCSANOW, &raw);
	}
	printf("KEXECFW-WAITING-PLAN\n");
	while (fgets(line, sizeof(line), stdin)) {
		if (sscanf(line, "SEG %llx %llx %15s %255s", &mem, &memsz, kind, arg) == 4 && nr < KEXEC_SEGMENT_MAX) {
			size_t len = 0;
			unsigned char *buf;
			if (!strcmp(kind, "file")) {
				buf = read_whole(arg, &len);
			} else {
				size_t want = strtoull(arg, NULL, 10);
				buf = malloc(want + 64);
				while (buf && fgets(line, sizeof(line), stdin) && strcmp(line, ".\n"))
					len += decode_line(line, buf + len);
				if (len != want)
					buf = NULL;
			}
			if (!buf) {
				printf("KEXECFW-LOAD-ERROR segment %d (%s %s)\n", nr, kind, arg);
				return;
			}
			segs[nr].buf = buf;
			segs[nr].bufsz = len;
			segs[nr].mem = (void *)(unsigned long)mem;
			segs[nr].memsz = memsz;
			nr++;
		} else if (sscanf(line, "LOAD %llx %llx", &entry, &flags) == 2) {
			long rc = syscall(SYS_kexec_load, (unsigned long)entry, (unsigned long)nr, segs, (unsigned long)flags);
			printf("KEXECFW-LOADED rc=%ld segments=%d\n", rc, nr);
			hexprop("KEXECFW-STATE crash_loaded", "/sys/kernel/kexec_crash_loaded");
			hexprop("KEXECFW-STATE loaded", "/sys/kernel/kexec_loaded");
			sync();
			/* A panic or a kexec stops the UART before it drains the tty buffer: wait until
			   these lines are on the wire, or the host may never see them. */
			fflush(stdout);
			tcdrain(STDOUT_FILENO);
			if (rc == 0 && (flags & KEXEC_ON_CRASH)) {
				int fd = open("/proc/sysrq-trigger", O_WRONLY);
				if (fd >= 0)
					write(fd, "c", 1);
			} else if (rc == 0) {
				printf("KEXECFW-EXEC\n");
				reboot(RB_KEXEC);
			}
			return;
		}
	}
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
	if (access("/proc/vmcore", F_OK) == 0)
		return capture();
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
	if (access("/kernel", F_OK) == 0)
		load_and_crash();
	sync();
	reboot(RB_POWER_OFF);
	return 0;
}
