/* The purgatory's integrity check, shared by every architecture.
 *
 * kexecfw writes the physical ranges of every other segment into
 * purgatory_sha256_regions and the sha256 of their contents (in that order) into
 * purgatory_sha256_digest when it links the purgatory. Both stay zero with
 * --skip-sha256. The purgatory runs with identity-mapped (or no) translation, so a
 * region's start is used as a pointer as is. */
#include "sha256.h"

#define PURGATORY_SHA256_REGIONS 16             /* KEXEC_SEGMENT_MAX, include/uapi/linux/kexec.h */

struct sha256_region {
	uint64_t start;
	uint64_t len;
};

/* In .data, not .bss: the linker must find them in the image it patches. */
struct sha256_region purgatory_sha256_regions[PURGATORY_SHA256_REGIONS]
	__attribute__((section(".data"), aligned(8))) = { { 0, 0 } };
uint8_t purgatory_sha256_digest[SHA256_DIGEST_SIZE] __attribute__((section(".data"))) = { 0 };

int purgatory_verify_sha256(void);

int purgatory_verify_sha256(void)
{
	struct sha256_ctx ctx;
	uint8_t digest[SHA256_DIGEST_SIZE];
	uint8_t differ = 0;
	int i, any = 0;

	sha256_init(&ctx);
	for (i = 0; i < PURGATORY_SHA256_REGIONS; i++) {
		const struct sha256_region *r = &purgatory_sha256_regions[i];
		if (!r->len)
			continue;
		any = 1;
		sha256_update(&ctx, (const uint8_t *)(uintptr_t)r->start, (size_t)r->len);
	}
	if (!any)
		return 0;       /* --skip-sha256: nothing to check */
	sha256_final(&ctx, digest);
	for (i = 0; i < SHA256_DIGEST_SIZE; i++)
		differ |= digest[i] ^ purgatory_sha256_digest[i];
	return differ ? 1 : 0;
}
