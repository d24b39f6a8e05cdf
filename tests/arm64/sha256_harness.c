/* Test harness (hosted, not purgatory code): runs the purgatory's sha256 check on files.
 * usage: sha256_harness HEXDIGEST FILE... ; sets one region per file, the expected digest from
 * HEXDIGEST (64 hex digits, or "-" for all regions empty), then prints
 * "verify=<purgatory_verify_sha256()> sha256=<digest of the files' concatenation>". */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sha256.h"

struct sha256_region { uint64_t start; uint64_t len; };
extern struct sha256_region purgatory_sha256_regions[16];
extern uint8_t purgatory_sha256_digest[32];
int purgatory_verify_sha256(void);

static uint8_t *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf;
	long n;

	if (!f || fseek(f, 0, SEEK_END) || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET))
		exit(2);
	buf = malloc(n ? (size_t)n : 1);
	if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n)
		exit(2);
	fclose(f);
	*len = (size_t)n;
	return buf;
}

int main(int argc, char **argv)
{
	struct sha256_ctx ctx;
	uint8_t digest[32];
	int i;

	if (argc < 2 || argc > 18)
		return 2;
	sha256_init(&ctx);
	for (i = 2; i < argc; i++) {
		size_t len;
		uint8_t *buf = slurp(argv[i], &len);
		if (strcmp(argv[1], "-") != 0) {
			purgatory_sha256_regions[i - 2].start = (uint64_t)(uintptr_t)buf;
			purgatory_sha256_regions[i - 2].len = len;
		}
		sha256_update(&ctx, buf, len);
	}
	for (i = 0; strcmp(argv[1], "-") != 0 && i < 32; i++)
		sscanf(argv[1] + 2 * i, "%2hhx", &purgatory_sha256_digest[i]);
	sha256_final(&ctx, digest);
	printf("verify=%d sha256=", purgatory_verify_sha256());
	for (i = 0; i < 32; i++)
		printf("%02x", digest[i]);
	printf("\n");
	return 0;
}
