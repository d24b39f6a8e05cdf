/* /init of the test initramfs (hosted, static aarch64; not purgatory code): reports what a capture
 * kernel sees, then powers the machine off so QEMU exits. */
#include <fcntl.h>
#include <stdio.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <unistd.h>

static void print_hex_file(const char *label, const char *path)
{
	unsigned char buf[64];
	int fd = open(path, O_RDONLY);
	ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf)) : -1;

	printf("%s=", label);
	for (ssize_t i = 0; i < n; i++)
		printf("%02x", buf[i]);
	printf("\n");
	if (fd >= 0)
		close(fd);
}

int main(void)
{
	struct stat st;

	mount("devtmpfs", "/dev", "devtmpfs", 0, NULL);
	mount("proc", "/proc", "proc", 0, NULL);
	mount("sysfs", "/sys", "sysfs", 0, NULL);      /* /proc/device-tree links into it */
	int fd = open("/dev/console", O_WRONLY);
	if (fd >= 0) {
		dup2(fd, 1);
		dup2(fd, 2);
	}
	setvbuf(stdout, NULL, _IONBF, 0);
	if (stat("/proc/vmcore", &st) == 0)
		printf("KEXECFW-INIT vmcore=present size=%lld\n", (long long)st.st_size);
	else
		printf("KEXECFW-INIT vmcore=absent\n");
	print_hex_file("KEXECFW-INIT elfcorehdr", "/proc/device-tree/chosen/linux,elfcorehdr");
	print_hex_file("KEXECFW-INIT usable", "/proc/device-tree/chosen/linux,usable-memory-range");
	sync();
	reboot(RB_POWER_OFF);
	return 0;
}
