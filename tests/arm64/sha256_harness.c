/* Test harness (hosted, not purgatory code): runs the purgatory's sha256 check on files.
 * usage: sha256_harness MODE [HEXDIGEST FILE]... ; one region per file: the file's bytes followed by
 * 4099 zero bytes of fill (memsz), with HEXDIGEST (64 hex digits) as the expected digest of the file.
 * MODE "intact" leaves the fill zero, "dirty-fill" sets one byte of the last region's fill; with
 * MODE "-" and no files every region stays empty. Prints "verify=<purgatory_verify_sha256()>". */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FILL 4099

struct sha256_region { uint64_t start; uint64_t bufsz; uint64_t memsz; uint8_t digest[32]; };
extern struct sha256_region purgatory_sha256_regions[16];
int purgatory_verify_sha256(void);

static uint8_t *slurp_with_fill(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf;
	long n;

	if (!f || fseek(f, 0, SEEK_END) || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET))
		exit(2);
	buf = calloc((size_t)n + FILL, 1);
	if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n)
		exit(2);
	fclose(f);
	*len = (size_t)n;
	return buf;
}

int main(int argc, char **argv)
{
	uint8_t *buf = NULL;
	size_t len = 0;
	int i, r;

	if (argc < 2 || argc % 2 != 0 || argc > 34)
		return 2;
	for (r = 0, i = 2; i < argc; r++, i += 2) {
		struct sha256_region *region = &purgatory_sha256_regions[r];
		int j;

		buf = slurp_with_fill(argv[i + 1], &len);
		region->start = (uint64_t)(uintptr_t)buf;
		region->bufsz = len;
		region->memsz = len + FILL;
		for (j = 0; j < 32; j++)
			sscanf(argv[i] + 2 * j, "%2hhx", &region->digest[j]);
	}
	if (strcmp(argv[1], "dirty-fill") == 0 && buf)
		buf[len + FILL / 2] = 1;
	printf("verify=%d\n", purgatory_verify_sha256());
	return 0;
}
